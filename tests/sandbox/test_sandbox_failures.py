"""The sandbox's own failures: crashed and hung jails, recycling, refusing to start, config errors."""

from __future__ import annotations

import logging
import os
import signal
import stat
import time

import pytest

from sandbox import ExecutionResult, SandboxConfig, SandboxStartError, WarmJailPool
from sandbox.errors import diagnose
from sandbox.nsjail_config import nsjail_binary

FAST = dict(timeout_s=1.0, cpu_time_s=1, grace_s=0.5)


def test_crashed_jail_fails_its_snippet_only_and_is_restarted():
    with WarmJailPool(SandboxConfig(jails=2, **FAST)) as pool:
        victim = pool.server_pids()[0]
        futures = [pool.submit("import time; time.sleep(0.5); print('done')") for _ in range(2)]
        time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)  # the jail dies under a running snippet
        results = [f.result() for f in futures]
        assert sorted(r.error is None for r in results) == [False, True]
        failed = next(r for r in results if r.error)
        assert "exited" in failed.error and not failed.ok and failed.stdout == ""
        assert next(r for r in results if not r.error).stdout == "done\n"
        assert [r.stdout for r in pool.execute_batch(["print(1)"] * 4)] == ["1\n"] * 4
        assert victim not in pool.server_pids() and all(pool.server_pids())
        assert pool.metrics()["restarts"] == 1


def test_hung_jail_misses_its_deadline_and_is_restarted():
    with WarmJailPool(SandboxConfig(jails=1, **FAST)) as pool:
        victim = pool.server_pids()[0]
        future = pool.submit("print('never')")
        os.kill(victim, signal.SIGSTOP)  # PID 1 stops answering
        result = future.result()
        assert result.timed_out and result.error and "deadline" in result.error
        assert result.duration_s >= FAST["timeout_s"] + FAST["grace_s"]
        assert pool.execute("print(2)").stdout == "2\n"
        assert pool.metrics()["restarts"] == 1


def test_jails_are_recycled_after_max_executions():
    with WarmJailPool(SandboxConfig(jails=1, max_executions_per_jail=3, **FAST)) as pool:
        first = pool.server_pids()
        assert [pool.execute(f"print({i})").stdout for i in range(7)] == [f"{i}\n" for i in range(7)]
        assert pool.server_pids() != first
        assert pool.metrics()["recycles"] == 2 and pool.metrics()["restarts"] == 0


def test_close_fails_queued_snippets_cleanly():
    pool = WarmJailPool(SandboxConfig(jails=1, **FAST))
    futures = [pool.submit("import time; time.sleep(0.3)") for _ in range(5)]
    time.sleep(0.1)
    pool.close()
    results = [f.exception() or f.result() for f in futures]
    assert isinstance(results[0], ExecutionResult)
    assert any(isinstance(r, RuntimeError) and "closed" in str(r) for r in results[1:])
    assert pool.execute("print(1)").error  # never raises, even after close


def test_missing_nsjail_binary_is_named():
    with pytest.raises(SandboxStartError, match="nsjail binary not found.*setup.sh"):
        WarmJailPool(SandboxConfig(jails=1, nsjail_path="/nonexistent/nsjail"))


def test_missing_runtime_is_named():
    with pytest.raises(SandboxStartError, match="runtime /nonexistent/python does not exist.*setup.sh"):
        WarmJailPool(SandboxConfig(jails=1, runtime_python="/nonexistent/python"))


def test_runtime_unreadable_by_the_jail_user_is_refused(tmp_path, test_config):
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    (private / "bin" / "python").symlink_to(test_config.resolved_runtime_python)
    private.chmod(0o700)
    with pytest.raises(SandboxStartError, match=r"uid 65534\) cannot read .*drwx------"):
        WarmJailPool(SandboxConfig(jails=1, runtime_python=str(private / "bin" / "python")))


def test_runtime_without_a_preloaded_module_is_named():
    with pytest.raises(SandboxStartError, match="lacks the module 'not_a_module'"):
        WarmJailPool(SandboxConfig(jails=1, preload=("math", "not_a_module")))


def test_blocked_user_namespaces_are_diagnosed(tmp_path):
    """Docker's default seccomp profile refuses CLONE_NEWUSER: reproduced by running nsjail
    under an outer nsjail whose seccomp policy does the same."""
    real = nsjail_binary(SandboxConfig())
    wrapper = tmp_path / "nsjail-without-userns"
    config = tmp_path / "jail.cfg"  # the outer nsjail closes the memfd the config comes in
    wrapper.write_text(
        "#!/bin/sh\n"
        f'cat "$2" > {config}\n'
        f"exec {real} -Mo -q --chroot / --rw --keep_caps --disable_rlimits --time_limit 0 "
        "--disable_clone_newuser --disable_clone_newnet --disable_clone_newns --disable_clone_newpid "
        "--disable_clone_newipc --disable_clone_newuts --disable_clone_newcgroup "
        "--seccomp_string 'POLICY b { ERRNO(1) { clone { (clone_flags & 0x10000000) != 0 }, unshare } } "
        f"USE b DEFAULT ALLOW' -- {real} --config {config}\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(SandboxStartError, match="user namespaces are blocked.*seccomp=unconfined"):
        WarmJailPool(SandboxConfig(jails=1, nsjail_path=str(wrapper)))


def test_missing_libnl_is_diagnosed():
    stderr = "nsjail: error while loading shared libraries: libnl-route-3.so.200: cannot open shared object file"
    assert "apt-get install libnl-3-200 libnl-route-3-200" in diagnose(stderr, "starting a jail")


def test_unsafe_backend_is_loud_and_never_the_default(caplog, tmp_path):
    assert SandboxConfig().backend == "nsjail"
    with caplog.at_level(logging.WARNING, logger="sandbox"):
        with WarmJailPool(SandboxConfig(backend="unsafe_subprocess", jails=1, **FAST)) as pool:
            r = pool.execute("import os; open('marker', 'w').write('x'); print(6*7, os.listdir('.'))")
            assert r.stdout == "42 ['marker']\n"
            assert pool.execute("import os; print(os.listdir('.'))").stdout == "[]\n"
            assert pool.execute("import time; time.sleep(100)").timed_out
    assert any("unsafe_subprocess" in rec.message and "no namespaces" in rec.message for rec in caplog.records)


@pytest.mark.parametrize("kwargs, match", [
    (dict(backend="docker"), "backend must be one of"),
    (dict(jails=0), "jails must be >= 1"),
    (dict(timeout_s=0), "timeout_s must be > 0"),
    (dict(cpu_time_s=1.5), "cpu_time_s must be an int"),
    (dict(memory_mb=64), "memory_mb must be >= 256"),
    (dict(max_output_bytes=10), "max_output_bytes must be >= 256"),
    (dict(max_processes=2), "max_processes must be >= 4"),
    (dict(session_jails=1, max_sessions_per_jail=40), "max_sessions_per_jail"),
    (dict(nice_level=30), "nice_level"),
    (dict(actor_num_cpus=-1), "actor_num_cpus"),
    (dict(extra_readonly_paths=("relative",)), "must be absolute"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SandboxConfig(**kwargs)
