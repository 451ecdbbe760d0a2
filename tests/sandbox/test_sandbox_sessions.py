"""Optional persistent sessions: state kept across turns, killed turns roll back, explicit close, TTL."""

from __future__ import annotations

import time

import pytest

from sandbox import SandboxConfig, WarmJailPool


@pytest.fixture(scope="module")
def spool():
    config = SandboxConfig(jails=1, session_jails=1, timeout_s=1.0, cpu_time_s=1, grace_s=1.0, max_sessions_per_jail=3)
    with WarmJailPool(config) as p:
        yield p


def test_sessions_are_off_by_default(pool):
    with pytest.raises(RuntimeError, match="sessions are off"):
        pool.open_session()


def test_variables_persist_across_turns(spool):
    s = spool.open_session()
    try:
        assert spool.execute("import sympy\nx = sympy.Symbol('x')\nn = 1", session=s).ok
        assert spool.execute("n += 1; print(n, sympy.expand((x + 1)**2))", session=s).stdout == "2 x**2 + 2*x + 1\n"
        r = spool.execute("n += 10; 1/0", session=s)  # an exception keeps what ran before it, like a REPL
        assert r.exit_code == 1 and r.stderr.strip().endswith("ZeroDivisionError: division by zero")
        assert spool.execute("print(n)", session=s).stdout == "12\n"
        assert spool.execute("print(n)").stdout == ""  # stateless snippets never see session state
    finally:
        spool.close_session(s)


@pytest.mark.parametrize("killer", [
    "import time; n = 100; time.sleep(100)",               # wall-clock deadline
    "import os, signal; n = 100; os.kill(os.getpid(), signal.SIGKILL)",  # crash
])
def test_a_killed_turn_rolls_back(spool, killer):
    s = spool.open_session()
    try:
        spool.execute("n = 1", session=s)
        r = spool.execute(killer, session=s)
        assert not r.ok and r.error is None and r.exit_code is None
        assert spool.execute("print(n)", session=s).stdout == "1\n"
    finally:
        spool.close_session(s)


def test_sessions_are_isolated_from_each_other_and_closed_explicitly(spool):
    a, b = spool.open_session(), spool.open_session()
    spool.execute("v = 'a'", session=a)
    spool.execute("v = 'b'", session=b)
    assert spool.execute("print(v)", session=a).stdout == "a\n"
    spool.close_session(a)
    assert "unknown, closed or expired" in spool.execute("print(v)", session=a).error
    assert spool.execute("print(v)", session=b).stdout == "b\n"
    spool.close_session(b)
    assert spool.metrics()["sessions_open"] == 0


def test_capacity_is_bounded(spool):
    sessions = [spool.open_session() for _ in range(3)]
    with pytest.raises(RuntimeError, match="session slots are in use"):
        spool.open_session()
    for s in sessions:
        spool.close_session(s)


def test_idle_sessions_expire():
    config = SandboxConfig(jails=1, session_jails=1, session_ttl_s=0.3, timeout_s=1.0, cpu_time_s=1)
    with WarmJailPool(config) as p:
        old = p.open_session()
        p.execute("x = 1", session=old)
        time.sleep(0.5)
        fresh = p.open_session()  # opening a session sweeps expired ones
        assert "expired" in p.execute("print(x)", session=old).error
        assert p.execute("print(1)", session=fresh).stdout == "1\n"
