"""`SandboxStartError` and the diagnosis that turns nsjail's stderr into a cause and a fix."""

from __future__ import annotations

import re

# The bundled nsjail binary links libnl from Debian; the loader warns about symbol versions on
# every start. Harmless noise, filtered from logs and error messages.
LOADER_NOISE = re.compile(r"libnl[-\w.]*\.so[.\d]*: no version information available")

_USERNS_FIX = (
    "unprivileged user namespaces are blocked here. Enable them: on the host "
    "`sysctl -w user.max_user_namespaces=15000` (and `kernel.unprivileged_userns_clone=1` on "
    "Debian/Ubuntu kernels, `kernel.apparmor_restrict_unprivileged_userns=0` on Ubuntu 23.10+); "
    "in Docker run with `--security-opt seccomp=unconfined --security-opt apparmor=unconfined` "
    "(or `--privileged`); in Kubernetes set the pod's `securityContext.seccompProfile.type: "
    "Unconfined` (or run it privileged). On a trusted development machine only, "
    "SandboxConfig(backend='unsafe_subprocess') runs snippets without isolation"
)

_CAUSES = (
    (re.compile(r"error while loading shared libraries: (libnl[^:]*)"),
     "the nsjail binary cannot load {0}: install it with `apt-get install libnl-3-200 "
     "libnl-route-3-200` (scripts/setup.sh does this)"),
    (re.compile(r"clone\(flags=[^)]*CLONE_NEWUSER[^)]*\) failed|uid_map|setgroups|newuidmap|"
                r"Operation not permitted.*(clone|unshare)|(clone|unshare).*Operation not permitted"),
     _USERNS_FIX),
    (re.compile(r"cannot import '([^']+)' in the sandbox runtime"),
     "the sandbox runtime lacks the module {0!r}: run `bash scripts/setup.sh`, or point "
     "TORL_SANDBOX_RUNTIME / SandboxConfig.runtime_python at a Python that has it"),
    (re.compile(r"execve\('([^']+)'.*(Permission denied|No such file)"),
     "the jail cannot execute {0}: the sandbox runtime must live outside home directories "
     "(uid 65534 cannot traverse /root); run `bash scripts/setup.sh`"),
    (re.compile(r"Could not compile policy|Couldn't prepare sandboxing policy"),
     "nsjail rejected the seccomp policy (sandbox/nsjail_config.py: SECCOMP_POLICY)"),
)


class SandboxStartError(RuntimeError):
    """The sandbox cannot start; the message names the cause and the fix."""


def clean_stderr(text: str) -> str:
    """nsjail's stderr without the libnl loader warnings."""
    return "".join(line for line in text.splitlines(keepends=True) if not LOADER_NOISE.search(line))


def diagnose(stderr: str, what: str) -> str:
    """A one-paragraph explanation of why `what` failed, from nsjail's (or the server's) stderr."""
    text = clean_stderr(stderr)
    for pattern, fix in _CAUSES:
        match = pattern.search(text)
        if match:
            return f"{what} failed: {fix.format(*match.groups())}.\nnsjail said:\n{text[-2000:]}"
    return f"{what} failed (unrecognized cause).\nstderr:\n{text[-2000:] or '(empty)'}"
