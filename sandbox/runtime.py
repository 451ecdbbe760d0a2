"""The sandbox runtime: the Python the jail executes, and the host paths it needs to see."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import dataclass

from sandbox.errors import SandboxStartError

# Bound read-only into every jail (the dynamic loader, libc, /usr/lib/python3.x, ...).
SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/bin")

_PROBE = (
    "import json, sys; print(json.dumps({'version': sys.version.split()[0], "
    "'paths': [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix] + sys.path}))"
)


@dataclass(frozen=True)
class Runtime:
    """The jail's interpreter and the extra host directories (beyond SYSTEM_PATHS) it reads."""

    python: str
    version: str
    readonly_paths: tuple[str, ...]


def probe_runtime(python: str, extra_paths: tuple[str, ...] = ()) -> Runtime:
    """Ask `python` where its prefix, stdlib and site-packages live; check uid 65534 can read them."""
    if not os.access(python, os.X_OK):
        raise SandboxStartError(
            f"sandbox runtime {python} does not exist or is not executable: run `bash scripts/setup.sh` "
            "(it creates /opt/torl-sandbox/runtime), or set TORL_SANDBOX_RUNTIME / "
            "SandboxConfig.runtime_python to a Python with numpy and sympy outside home directories"
        )
    try:
        out = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        raise SandboxStartError(f"sandbox runtime {python} does not run: {exc}") from exc
    info = json.loads(out.stdout)
    # The venv's bin/python is a symlink chain into /usr/bin: resolve every path, bind each once.
    candidates = [os.path.dirname(os.path.dirname(os.path.abspath(python)))]
    candidates += [os.path.realpath(p) for p in info["paths"] if p and os.path.isdir(p)]
    candidates += [os.path.dirname(os.path.realpath(python)), *extra_paths]
    paths: list[str] = []
    for path in sorted(set(candidates), key=len):
        if not any(_within(path, root) for root in (*SYSTEM_PATHS, *paths)):
            paths.append(path)
    for path in paths:
        _check_world_readable(path)
    return Runtime(python=python, version=info["version"], readonly_paths=tuple(paths))


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_world_readable(path: str) -> None:
    """The jailed user is uid 65534: every directory on the way must be world-traversable."""
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        mode = os.stat(current).st_mode
        if not mode & stat.S_IXOTH or (current == path and not mode & stat.S_IROTH):
            raise SandboxStartError(
                f"the jailed user (uid 65534) cannot read {path}: {current} has mode "
                f"{stat.filemode(mode)}. Keep the sandbox runtime outside home directories "
                "(TORL_SANDBOX_RUNTIME=/opt/torl-sandbox/runtime bash scripts/setup.sh), "
                "or chmod it a+rX"
            )
