"""PID 1 of a warm jail: imports numpy and sympy once, then runs each snippet in a forked child.

This file runs under the sandbox runtime's Python and uses the standard library only. The host
starts it as `python -I -c <this source> <json config>`; requests and replies are length-prefixed
JSON frames on fds 0 and 1. The host imports this module too, for `encode_frame`/`HEADER`, so
both ends share one definition of the protocol.

Per snippet: a child forked (and set up) ahead of the request, with fresh globals, its own RNG
state and session, no access to the control pipes, RLIMIT_CPU/AS/FSIZE; stdout and stderr capped
(head and tail kept); a wall-clock deadline and a memory cap over all its processes. PID 1 replies
as soon as the snippet reports, then kills every other process in the jail, wipes the scratch
dirs, and forks the next snippet's process while the host reads the reply.

Sessions (optional): a holder process keeps a globals dict; each turn forks the holder, and the
turn's process becomes the new holder when it finishes. A turn that is killed (deadline, CPU
limit, crash) leaves the previous holder in place, so the session rolls back to before it.
"""

import builtins
import gc
import importlib
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback

HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20
CHUNK = 1 << 16
DRAIN_S = 1.0  # after the snippet is gone, how long leftover output may take to arrive
SESSION_SLACK_S = 1.0  # a session's holder enforces the turn's deadline; the server waits this much longer
RECURSION_LIMIT = sys.getrecursionlimit()
WATCH_S = 0.05  # how often a running snippet's total memory is checked
PAGE = os.sysconf("SC_PAGE_SIZE")
DONE, EXITED, DEADLINE, OVER_MEMORY = "done", "exited", "deadline", "over_memory"  # a session turn's holder enforces the deadline; the server waits this much longer


def encode_frame(obj):
    data = json.dumps(obj, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd):
    head = _read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = _read_exact(fd, size)
    return None if body is None else json.loads(body)


class Capture:
    """Keeps the first and last bytes of a stream once it passes `limit`, and counts every byte."""

    def __init__(self, limit):
        self.limit = limit
        self.half = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data):
        self.total += len(data)
        room = self.limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            del self.tail[: -self.half]

    def render(self):
        """(text, truncated): all of it, or head + marker + tail when over the limit."""
        if self.total <= self.limit:
            return self.head.decode("utf-8", "replace"), False
        keep = self.limit - self.half
        tail = (bytes(self.head[keep:]) + bytes(self.tail))[-self.half:]
        marker = f"\n...[{self.total - keep - len(tail)} bytes truncated]...\n".encode()
        return (bytes(self.head[:keep]) + marker + tail).decode("utf-8", "replace"), True


# --- inside a forked child -------------------------------------------------------------------


def _isolate(cfg, stdout_fd, stderr_fd, keep=()):
    """Detach a freshly forked child: own session, only fds 0-2 (+ keep), limits, scratch cwd."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    # Closes the control pipes (a snippet must not read requests or forge replies), the
    # other sessions' sockets and every pipe that belongs to the server.
    last = 2
    for fd in sorted(set(keep)):
        os.closerange(last + 1, fd)
        last = fd
    os.closerange(last + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(cfg["scratch"][0])
    mem = cfg["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    fsize = cfg["file_size_mb"] << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))


def _reseed_rngs():
    """Reseed `random` and numpy's global RNG from the OS (forked children inherit the state)."""
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _limit_cpu(cfg):
    cpu = cfg["cpu_time_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL a second later


def _cpu_time():
    usage = resource.getrusage(resource.RUSAGE_SELF)  # a forked child starts from zero
    return usage.ru_utime + usage.ru_stime


def _open_streams():
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    return sys.stdout, sys.stderr


def _fresh_globals():
    return {"__name__": "__main__", "__doc__": None, "__builtins__": builtins}


def _exit_code(exc):
    """The interpreter's exit status for an uncaught SystemExit."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def run_snippet(code, env):
    """Run `code` like `python -c` would, in globals `env`; returns the status dict."""
    streams = _open_streams()
    sys.argv = ["-c"]
    # `python -c` runs a snippet at depth 1, this one runs deeper (our frames, plus exec() itself,
    # which counts as one level): raise the limit by as much, so recursion fails where it would there.
    depth, frame = 1, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    sys.setrecursionlimit(RECURSION_LIMIT + depth)
    status = {"exit_code": 0, "memory_exceeded": False}
    try:
        exec(compile(code, "<string>", "exec"), env)
    except SystemExit as exc:
        status["exit_code"] = _exit_code(exc)
    except BaseException as exc:
        status["exit_code"] = 1
        status["memory_exceeded"] = isinstance(exc, MemoryError)
        try:
            # tb_next skips this frame, so the traceback reads like `python -c`'s.
            tb = exc.__traceback__.tb_next if exc.__traceback__ else None
            traceback.print_exception(type(exc), exc, tb)
        except BaseException:
            pass
    for stream in (sys.stdout, sys.stderr, *streams):
        try:
            stream.flush()
        except BaseException:
            pass
    return status


def _stateless_child(cfg, code_r, out_w, err_w, status_w):
    """A snippet's process: set up ahead of time, then wait for the code (read to EOF) and run it."""
    _isolate(cfg, out_w, err_w, keep=(code_r, status_w))
    _limit_cpu(cfg)
    chunks = []
    while chunk := os.read(code_r, CHUNK):
        chunks.append(chunk)
    os.close(code_r)
    status = run_snippet(b"".join(chunks).decode(), _fresh_globals())
    status["cpu_time_s"] = _cpu_time()
    for fd in (0, 1, 2):  # EOF for the server now: an exiting process closes its files only
        try:  # after unmapping its memory, which takes about a millisecond
            os.close(fd)
        except OSError:
            pass
    write_all(status_w, json.dumps(status).encode())
    os.close(status_w)
    os._exit(status["exit_code"])


def _hold_session(cfg, sock):
    """Session holder loop. Each turn forks; the turn's process becomes the next holder."""
    env = _fresh_globals()
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 16, 4)
        if not msg:
            os._exit(0)  # the server closed the session
        code_fd, out_w, err_w, status_w = fds
        code = os.pread(code_fd, os.fstat(code_fd).st_size, 0).decode()
        os.close(code_fd)
        commit_r, commit_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the turn
            os.close(commit_r)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.close(out_w)
            os.close(err_w)
            _limit_cpu(cfg)
            status = run_snippet(code, env)
            status["cpu_time_s"] = _cpu_time()
            # As the next holder, this process keeps its CPU count: leave it the hard limit's margin.
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 1)  # release the output pipes: the server is waiting for their EOF
            os.dup2(devnull, 2)
            os.close(devnull)
            write_all(status_w, json.dumps(status).encode())
            os.close(status_w)
            try:
                os.write(commit_w, b"c")
            except OSError:
                pass
            os.close(commit_w)
            continue  # this process now holds the session
        for fd in (commit_w, out_w, err_w):
            os.close(fd)
        ready, _, _ = select.select([commit_r], [], [], cfg["timeout_s"])
        committed = bool(ready) and os.read(commit_r, 1) == b"c"
        os.close(commit_r)
        if committed:
            os.close(status_w)
            os._exit(0)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        _, wstatus, usage = os.wait4(pid, 0)
        sig = os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else None
        status = {
            "exit_code": None if sig else os.WEXITSTATUS(wstatus),
            "signal": sig,
            "timed_out": not ready or sig == signal.SIGXCPU,
            "cpu_time_s": usage.ru_utime + usage.ru_stime,
            "rolled_back": True,
        }
        write_all(status_w, json.dumps(status).encode())
        os.close(status_w)


# --- the server (PID 1) ----------------------------------------------------------------------


def _force_remove(path):
    """Delete a snippet's file or tree, even one it made unreadable (never following symlinks)."""
    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            return
        os.chmod(path, 0o700)
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                sub = os.path.join(root, name)
                if not os.path.islink(sub):
                    os.chmod(sub, 0o700)
        shutil.rmtree(path)
    except OSError as exc:
        print(f"jail_server: cannot remove {path}: {exc}", file=sys.stderr)


class Server:
    """Serves exec/session requests; one at a time, in the order they arrive."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.pid1 = os.getpid() == 1
        self.sessions = {}
        self._unreaped = None  # a finished snippet's pid, reaped after the reply
        self._dirty = False  # scratch dirs to wipe after the reply
        self._next = None  # (pid, code_w, out_r, err_r, status_r) of the process forked ahead

    def handle(self, req):
        op = req.get("op")
        if op == "exec":
            return self.execute(req["code"])
        if op == "open":
            return self.open_session(req["session"])
        if op == "run":
            return self.run_in_session(req["session"], req["code"])
        if op == "close":
            sock = self.sessions.pop(req["session"], None)
            if sock is not None:
                sock.close()
            return {"closed": sock is not None}
        return {"error": f"unknown op {op!r}"}

    # stateless ---------------------------------------------------------------------------

    def execute(self, code):
        start = time.monotonic()
        pid, out_r, err_r, st_r = self._hand_over(code.encode())
        self._dirty = True
        out, err, raw, sinks, poller = self._collector(out_r, err_r, st_r)
        pidfd = os.pidfd_open(pid)
        poller.register(pidfd, select.POLLIN)
        deadline = start + self.cfg["timeout_s"]
        outcome = _pump(poller, sinks, deadline, pidfd, self._over_memory if self.pid1 else None)
        status = _parse_status(raw)
        if outcome == DONE and "exit_code" in status:
            # Fast path: the snippet closed its output and reported its status. Reply now; it is
            # still unmapping its memory, and `after_reply` reaps it while the host reads the reply.
            os.close(pidfd)
            self._unreaped = pid
            status.update(signal=None, timed_out=False)
            return _with_output(status, out, err)
        if outcome == DONE:  # pipes closed but no status: the exit status will tell
            exited = select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]
            outcome = EXITED if exited else DEADLINE
        poller.unregister(pidfd)
        os.close(pidfd)
        if outcome != EXITED:
            os.kill(pid, signal.SIGKILL)
        wstatus, usage = self._end_snippet(pid)
        _pump(poller, sinks, time.monotonic() + DRAIN_S)  # the output still in the pipes
        _close_all(sinks)
        sig = os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else None
        cpu = usage.ru_utime + usage.ru_stime
        status.update(
            exit_code=None if sig else os.WEXITSTATUS(wstatus),
            signal=sig,
            # SIGXCPU at the soft CPU limit; SIGKILL at the hard one if the snippet ignored SIGXCPU.
            timed_out=outcome == DEADLINE or sig == signal.SIGXCPU
            or (sig == signal.SIGKILL and cpu >= self.cfg["cpu_time_s"]),
            memory_exceeded=outcome == OVER_MEMORY or status.get("memory_exceeded", False),
            cpu_time_s=cpu,
        )
        return _with_output(status, out, err)

    def _collector(self, out_r, err_r, status_r):
        """Captures for stdout and stderr, a buffer for the status, and a poller over the three pipes."""
        out, err, raw = Capture(self.cfg["max_output_bytes"]), Capture(self.cfg["max_output_bytes"]), bytearray()
        sinks = {out_r: out.feed, err_r: err.feed, status_r: raw.extend}
        poller = select.poll()
        for fd in sinks:
            poller.register(fd, select.POLLIN)
        return out, err, raw, sinks, poller

    def _over_memory(self):
        """The jail-wide memory cap (cgroups cannot be relied on): RLIMIT_AS bounds each process,
        this bounds what a snippet's processes add together, forks included."""
        pids = [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]
        if len(pids) < 2:
            return False  # a single process is bounded by RLIMIT_AS already
        # A forked child maps PID 1's pages (copy-on-write): count only what it has beyond them.
        base = _resident_bytes("1")
        total = sum(max(0, _resident_bytes(p) - base) for p in pids)
        return total > self.cfg["memory_mb"] << 20

    def _fork_child(self):
        """Fork the next snippet's process; it sets itself up and blocks reading its code."""
        (code_r, code_w), (out_r, out_w), (err_r, err_w), (st_r, st_w) = (os.pipe() for _ in range(4))
        pid = os.fork()
        if pid == 0:
            try:
                _stateless_child(self.cfg, code_r, out_w, err_w, st_w)
            finally:
                os._exit(70)
        for fd in (code_r, out_w, err_w, st_w):
            os.close(fd)
        return pid, code_w, out_r, err_r, st_r

    def _hand_over(self, code):
        """Give `code` to the process forked ahead of time (a new one if that one is gone)."""
        child, self._next = self._next, None
        if child is not None:
            try:
                return _send_code(child, code)
            except OSError:  # it died while waiting
                _discard(child)
        return _send_code(self._fork_child(), code)

    def after_reply(self):
        """Work kept off the reply's path: reap, kill leftovers, wipe scratch, reseed, fork ahead."""
        pid, self._unreaped = self._unreaped, None
        if pid is not None:
            self._end_snippet(pid)
        self._reap()
        if self._dirty:
            self._dirty = False
            for path in self.cfg["scratch"]:
                for entry in os.scandir(path):
                    _force_remove(entry.path)
            # Children inherit PID 1's RNG state: a fresh one for each. Then the next snippet's
            # process is forked and set up now, while the host reads this reply.
            _reseed_rngs()
            self._next = self._fork_child()

    def shutdown(self):
        if self._next is not None:
            _discard(self._next)

    def _end_snippet(self, pid):
        """Kill what the snippet left running, reap it; returns its wait status and rusage."""
        # Its process group first, while the unreaped pid cannot be reused (the only cleanup the
        # unsafe backend gets: outside a pid namespace, kill(-1) would hit the whole host).
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, wstatus, usage = os.wait4(pid, 0)
        if self.pid1 and not self.sessions:
            # PID 1 of a pid namespace: kill(-1) reaches every other process in the jail
            # (background jobs, fork bombs, orphans reparented to us). Repeat until none is left.
            while True:
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    os.waitpid(-1, 0)
                except ChildProcessError:
                    break
        return wstatus, usage

    def _reap(self):
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    return
            except ChildProcessError:
                return

    # sessions ----------------------------------------------------------------------------

    def open_session(self, sid):
        if sid in self.sessions:
            return {"error": f"session {sid} already open"}
        if len(self.sessions) >= self.cfg["max_sessions"]:
            return {"error": "no session capacity left in this jail"}
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            try:
                devnull = os.open(os.devnull, os.O_RDWR)
                _isolate(self.cfg, devnull, devnull, keep=(theirs.fileno(),))
                _hold_session(self.cfg, theirs)
            finally:
                os._exit(70)
        theirs.close()
        self.sessions[sid] = ours
        return {"opened": True}

    def run_in_session(self, sid, code):
        start = time.monotonic()
        sock = self.sessions.get(sid)
        if sock is None:
            return {"error": f"unknown or lost session {sid}"}
        code_fd = os.memfd_create("snippet")
        write_all(code_fd, code.encode())
        (out_r, out_w), (err_r, err_w), (st_r, st_w) = os.pipe(), os.pipe(), os.pipe()
        try:
            socket.send_fds(sock, [b"r"], [code_fd, out_w, err_w, st_w])
            lost = False
        except OSError:
            lost = True
        for fd in (code_fd, out_w, err_w, st_w):
            os.close(fd)
        out, err, raw, sinks, poller = self._collector(out_r, err_r, st_r)
        finished = not lost and _pump(poller, sinks, start + self.cfg["timeout_s"] + SESSION_SLACK_S) == DONE
        _close_all(sinks)
        reply = _parse_status(raw)
        if lost or not finished or "exit_code" not in reply:
            self.sessions.pop(sid).close()
            reply = {"error": f"session {sid} lost (its holder died or hung)", "timed_out": not finished}
        return _with_output(reply, out, err)


def _send_code(child, code):
    """Write the code and close the pipe (EOF starts the snippet); returns (pid, out_r, err_r, status_r)."""
    pid, code_w, *outputs = child
    try:
        write_all(code_w, code)
    finally:
        os.close(code_w)
    return (pid, *outputs)


def _discard(child):
    pid, code_w, *outputs = child
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    for fd in (code_w, *outputs):
        try:
            os.close(fd)
        except OSError:
            pass


def _pump(poller, sinks, deadline, pidfd=None, over_memory=None):
    """Feed pipe data to `sinks` until every pipe hits EOF or `pidfd` fires (the process exited).

    Returns DONE (every pipe closed), EXITED (`pidfd` fired), DEADLINE, or OVER_MEMORY when
    `over_memory()` (checked every WATCH_S) says so.
    """
    checked = time.monotonic()
    while sinks:
        now = time.monotonic()
        if now >= deadline:
            return DEADLINE
        if over_memory is not None and now - checked >= WATCH_S:
            checked = now
            if over_memory():
                return OVER_MEMORY
        wait = deadline - now if over_memory is None else min(deadline - now, WATCH_S)
        for fd, _ in poller.poll(wait * 1000):
            if fd == pidfd:
                return EXITED
            data = os.read(fd, CHUNK)
            if data:
                sinks[fd](data)
            else:
                poller.unregister(fd)
                os.close(fd)
                del sinks[fd]
    return DONE


def _resident_bytes(pid):
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0  # already gone


def _close_all(sinks):
    for fd in sinks:
        os.close(fd)
    sinks.clear()


def _parse_status(raw):
    try:
        status = json.loads(raw)
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _with_output(reply, out, err):
    reply["stdout"], reply["stdout_truncated"] = out.render()
    reply["stderr"], reply["stderr_truncated"] = err.render()
    reply["stdout_bytes"], reply["stderr_bytes"] = out.total, err.total
    return reply


def _set_non_dumpable():
    """No ptrace/`/proc/1/mem`/`/proc/1/fd` access to PID 1 for the snippets (same uid)."""
    import ctypes

    PR_SET_DUMPABLE = 4
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def main(argv):
    cfg = json.loads(argv[1])
    # PID 1 gets only the signals it handles; Python handles SIGINT, so ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_non_dumpable()
    ctl_in, ctl_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # a stray print must never reach the protocol stream
    os.close(devnull)
    if cfg["scratch"] is None:  # unsafe backend: a private directory stands in for the jail's /tmp
        cfg["scratch"] = [tempfile.mkdtemp(prefix="torl-sandbox-")]
        os.environ["TMPDIR"] = os.environ["HOME"] = cfg["scratch"][0]
    try:
        return _serve(cfg, ctl_in, ctl_out)
    finally:
        if os.getpid() != 1:
            shutil.rmtree(cfg["scratch"][0], ignore_errors=True)


def _serve(cfg, ctl_in, ctl_out):
    for name in cfg["preload"]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            print(f"jail_server: cannot import {name!r} in the sandbox runtime: {exc}", file=sys.stderr)
            return 3
    _reseed_rngs()  # also pays numpy's lazy set-up of its RNG (~15 ms) once, before any fork
    gc.freeze()  # keeps the children's garbage collector off the shared (copy-on-write) pages
    server = Server(cfg)
    write_all(ctl_out, encode_frame({"ready": True, "python": sys.version.split()[0], "pid": os.getpid()}))
    try:
        while True:
            req = read_frame(ctl_in)
            if req is None:
                return 0
            try:
                reply = server.handle(req)
            except Exception as exc:
                reply = {"error": f"jail server: {exc!r}"}
            reply["id"] = req.get("id")
            write_all(ctl_out, encode_frame(reply))
            server.after_reply()
    finally:
        server.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
