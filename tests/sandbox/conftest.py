"""Shared fixtures: real nsjail warm pools (no mocks), one per test module."""

from __future__ import annotations

import os
import time

import pytest

from sandbox import SandboxConfig, WarmJailPool

# Set before any pool starts: the hostile tests check that it never reaches a jail.
HOST_SECRET = ("TORL_SANDBOX_TEST_SECRET", "s3cret-from-the-host")
os.environ[HOST_SECRET[0]] = HOST_SECRET[1]


@pytest.fixture(scope="session")
def host_secret() -> tuple[str, str]:
    return HOST_SECRET


@pytest.fixture(scope="session")
def test_config() -> SandboxConfig:
    """Short limits keep the suite fast: a deadline test costs `timeout_s`."""
    return SandboxConfig(jails=2, timeout_s=3.0, cpu_time_s=1, memory_mb=512, grace_s=2.0)


@pytest.fixture(scope="module")
def pool(test_config):
    with WarmJailPool(test_config) as p:
        yield p


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _settled(pid: int) -> bool:
    """Nothing left behind: PID 1 has at most one child (the process forked ahead for the next
    snippet, which has no children of its own; none yet while PID 1 is still cleaning up after
    the last snippet, which on a loaded CI machine has been seen to take over 10 s), and /tmp is
    empty. A leftover process is reparented to PID 1 or is a grandchild, so it is always seen."""
    try:
        kids = _children(pid)
        return len(kids) <= 1 and all(_children(k) == [] for k in kids) and os.listdir(f"/proc/{pid}/root/tmp") == []
    except FileNotFoundError:  # a child exited between the two reads: not settled yet, look again
        return False


@pytest.fixture
def same_jails(pool):
    """After the test, the same jails (no restart) serve correctly, with nothing left behind.

    Checked from the host: no leftover process under any jail's PID 1, an empty /tmp in every jail.
    """
    before = pool.server_pids()
    assert all(before)
    yield before
    assert pool.server_pids() == before, "a jail was restarted"
    assert [r.stdout for r in pool.execute_batch(["print(6*7)"] * 4)] == ["42\n"] * 4
    # PID 1 replies first, then reaps the finished snippet, wipes /tmp, forks the next process.
    # Generous deadline: on a loaded 2-core CI machine that fork has taken over 2 s; this checks
    # for leftovers, not speed.
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not all(_settled(pid) for pid in before):
        time.sleep(0.01)
    for pid in before:
        assert _settled(pid), f"leftovers in jail {pid}: {_children(pid)}, {os.listdir(f'/proc/{pid}/root/tmp')}"
