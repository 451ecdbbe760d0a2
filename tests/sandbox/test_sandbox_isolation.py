"""Hostile snippets against real nsjail warm jails: each is contained, and the same pool keeps serving."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
from pathlib import Path

import pytest


PROJECT_DIR = Path(__file__).resolve().parents[2]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def test_loopback_tcp_connect_fails(pool, same_jails):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        r = pool.execute(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)")
        assert r.exit_code == 1
        assert last_line(r.stderr).startswith("ConnectionRefusedError"), r.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing from the jail reached the host's loopback
    finally:
        listener.close()


def test_dns_fails(pool, same_jails):
    r = pool.execute("import socket; socket.getaddrinfo('example.com', 80)")
    assert r.exit_code == 1
    assert last_line(r.stderr).startswith("socket.gaierror"), r.stderr
    r = pool.execute("import socket; print([name for _, name in socket.if_nameindex()])")
    assert r.stdout == "['lo']\n"


@pytest.mark.parametrize("path", ["/etc/shadow", str(PROJECT_DIR / "pyproject.toml"), os.path.expanduser("~")])
def test_host_files_are_invisible(pool, same_jails, path):
    assert os.path.exists(path)  # it is there on the host...
    r = pool.execute(f"import os; print(os.listdir({path!r}) if os.path.isdir({path!r}) else open({path!r}).read())")
    assert r.exit_code == 1  # ...and not in the jail
    assert last_line(r.stderr).startswith("FileNotFoundError"), r.stderr


@pytest.mark.parametrize("path", ["/x", "/etc/x", "/usr/x", "/proc/sys/kernel/hostname", "/opt/torl-sandbox/runtime/x"])
def test_writing_outside_tmp_fails(pool, same_jails, path):
    r = pool.execute(f"open({path!r}, 'w').write('x')")
    assert r.exit_code == 1
    assert "Read-only file system" in last_line(r.stderr), r.stderr


def test_filling_tmp_fails_cleanly(pool, same_jails):
    r = pool.execute(
        "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(b'x' * (8 << 20))\n    i += 1"
    )
    assert r.exit_code == 1 and not r.timed_out and r.error is None
    assert last_line(r.stderr) == "OSError: [Errno 28] No space left on device"
    r = pool.execute("open('/tmp/big', 'wb').write(b'x' * (64 << 20))")  # one file: RLIMIT_FSIZE
    assert last_line(r.stderr) == "OSError: [Errno 27] File too large"


def test_fork_bomb_is_contained(pool, same_jails):
    r = pool.execute("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    assert r.timed_out and r.error is None
    # `same_jails` then checks that no jailed process survived on the host.


def test_memory_bomb_is_killed_and_reported(pool, same_jails):
    r = pool.execute("x = []\nwhile True:\n    x.append(bytearray(10**7))")
    assert r.memory_exceeded and r.exit_code == 1 and not r.ok
    assert last_line(r.stderr) == "MemoryError"
    r = pool.execute("import numpy as np; np.ones(10**10)")
    assert r.memory_exceeded


def test_memory_bomb_spread_over_processes_is_killed(pool, same_jails, test_config):
    """RLIMIT_AS bounds each process; PID 1 also caps what all of a snippet's processes add up to."""
    r = pool.execute(
        "import os, time\n"
        "for _ in range(8):\n"
        "    if os.fork() == 0:\n"
        "        hog = b'x' * (300 << 20)\n"  # 8 x 300 MB resident, each under the 512 MB RLIMIT_AS
        "        time.sleep(100)\n"
        "time.sleep(100)"
    )
    assert r.memory_exceeded and r.signal == signal.SIGKILL and not r.timed_out
    assert r.duration_s < test_config.timeout_s


def test_busy_loop_is_killed_by_the_cpu_limit(pool, same_jails, test_config):
    r = pool.execute("while True:\n    pass")
    assert r.timed_out and r.signal == signal.SIGXCPU
    assert r.cpu_time_s >= 0.8 * test_config.cpu_time_s  # rusage is tick-granular


def test_sleep_is_killed_at_the_deadline(pool, same_jails, test_config):
    r = pool.execute("import time; time.sleep(1000)")
    assert r.timed_out and r.signal == signal.SIGKILL and r.exit_code is None and r.error is None
    assert test_config.timeout_s <= r.duration_s < test_config.timeout_s + test_config.grace_s


def test_huge_output_is_capped(pool, same_jails, test_config):
    r = pool.execute("import sys; sys.stdout.write('a' + 'x' * 99_999_998 + 'z'); print('err', file=sys.stderr)")
    assert r.ok and r.stdout_truncated and not r.stderr_truncated
    assert r.stdout_bytes == 100_000_000 and r.stderr == "err\n"
    assert len(r.stdout.encode()) < test_config.max_output_bytes + 100
    assert r.stdout.startswith("axxx") and r.stdout.endswith("xxxz")  # head and tail are kept
    assert "bytes truncated]" in r.stdout


def test_ptrace_of_pid1_and_namespaces_are_refused(pool, same_jails):
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def errno(ret):\n"
        "    return ctypes.get_errno() if ret == -1 else ret\n"
        "print(errno(libc.ptrace(16, 1, 0, 0)))\n"  # PTRACE_ATTACH to PID 1
        "print(errno(libc.unshare(0x10000000)))\n"  # CLONE_NEWUSER
        "print(errno(libc.unshare(0x20000)))\n"  # CLONE_NEWNS
        "print(errno(libc.syscall(56, 0x40000000 | 17, 0, 0, 0, 0)))\n"  # clone(CLONE_NEWNET)
        "for p in ('/proc/1/mem', '/proc/1/environ', '/proc/1/fd/0'):\n"
        "    try:\n"
        "        open(p, 'rb').read(1)\n"
        "    except PermissionError:\n"
        "        print('denied')\n"
    )
    r = pool.execute(code)
    assert r.stdout.split() == ["1", "1", "1", "1", "denied", "denied", "denied"], r.stderr


def test_snippet_cannot_read_requests_or_forge_replies(pool, same_jails):
    forged = {"id": 1, "stdout": "FORGED", "exit_code": 0}
    payload = json.dumps(forged).encode()
    code = (
        "import os, struct\n"
        "print(repr(os.read(0, 100)), flush=True)\n"  # stdin is /dev/null, not the request pipe
        f"frame = struct.pack('>I', {len(payload)}) + {payload!r}\n"
        "open_fds = []\n"
        "for fd in range(3, 1024):\n"
        "    try:\n"
        "        os.write(fd, frame)\n"
        "        open_fds.append(fd)\n"
        "    except OSError:\n"
        "        pass\n"
        "os.write(1, frame)\n"
        "print(len(open_fds) <= 1)\n"  # only the snippet's own status pipe
    )
    r = pool.execute(code)
    assert r.ok and r.stdout.startswith("b''\n") and r.stdout.endswith("True\n")
    assert struct.pack(">I", len(payload)).decode("latin-1") in r.stdout  # the "reply" is plain output
    assert pool.execute("print('real')").stdout == "real\n"


def test_kill_pid1_and_everything_is_harmless(pool, same_jails):
    r = pool.execute(
        "import os, signal\n"
        "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGSTOP, signal.SIGKILL):\n"
        "    os.kill(1, s)\n"
        "print('sent')"
    )
    assert r.stdout == "sent\n"


def test_tmp_files_and_background_processes_do_not_survive(pool, same_jails):
    r = pool.execute(
        "import os, subprocess\n"
        "open('/tmp/marker', 'w').write('x')\n"
        "open('/dev/shm/marker', 'w').write('x')\n"
        "os.makedirs('/tmp/locked/inner')\n"
        "os.chmod('/tmp/locked', 0)\n"
        "subprocess.Popen(['sleep', '1000'])\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    import time; time.sleep(1000)\n"
        "print('spawned')"
    )
    assert r.stdout == "spawned\n"
    r = pool.execute_batch(["import os; print(os.listdir('/tmp'), os.listdir('/dev/shm'), os.listdir('/proc/1/task'))"] * 4)
    assert {x.stdout for x in r} == {"[] [] ['1']\n"}
    # `same_jails` checks from the host: no children under any PID 1, empty /tmp.


def test_host_environment_is_absent(pool, same_jails, host_secret):
    r = pool.execute("import os, json; print(json.dumps(dict(os.environ)))")
    env = json.loads(r.stdout)
    assert host_secret[0] not in env and host_secret[1] not in r.stdout
    assert env["HOME"] == "/tmp" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert os.environ["PATH"] != env["PATH"]


def test_jailed_identity(pool, same_jails):
    r = pool.execute("import os, socket; print(os.getuid(), os.getgid(), os.getpid() > 1, socket.gethostname(), os.getcwd())")
    assert r.stdout == "65534 65534 True sandbox /tmp\n"
    r = pool.execute("import shutil, subprocess; shutil.copy('/bin/true', '/tmp/t'); subprocess.run(['/tmp/t'])")
    assert last_line(r.stderr).startswith("PermissionError")  # /tmp is noexec
