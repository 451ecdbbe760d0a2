"""A checkpoint's manifest: what it holds, written when it is saved and verified before a restore.

``manifest.json`` in a checkpoint directory lists every file (path relative to the checkpoint,
size, sha256) and a checksum of that list itself. ``GRPO.save_to_path`` writes it inside the
atomic save, before the ``.partial`` directory is renamed, so a checkpoint has a manifest exactly
when it is complete; ``verify_checkpoint`` raises ``DamagedCheckpoint`` naming the first damaged
file. Files added after the save (Ray Tune's own metadata, say) are not checked: they are not
part of what RLlib restores.

This module imports neither Ray nor torch: the CLI refuses a damaged checkpoint before either
loads. (``torl_rllib.algorithms.grpo`` would import the algorithm, hence its place here.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickletools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_NAME", "DamagedCheckpoint", "verify_checkpoint", "write_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
RLLIB_MARKER = "rllib_checkpoint.json"
FORMAT = "torl-rllib checkpoint manifest"
VERSION = 1
_HASH_THREADS = 4  # hashlib releases the GIL: the big files (weights, optimizer state) hash in parallel

# Checkpoints verified by this process, with the (path, size, mtime, inode) of each of their
# files then: `--resume auto` verifies before it restores, and the restore verifies again; an
# unchanged checkpoint is not hashed twice (tens of GB for a 7B policy with its optimizer state).
_verified: dict[str, tuple] = {}


class DamagedCheckpoint(ValueError):
    """A checkpoint that must not be restored: ``file`` (relative to ``checkpoint``) is missing,
    truncated, differs from the manifest, or does not parse; or ``checkpoint`` is none at all."""

    def __init__(self, checkpoint: str | Path, file: str, reason: str, more: int = 0):
        self.checkpoint, self.file, self.reason = Path(checkpoint), file, reason
        also = f" (and {more} more damaged file{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"damaged checkpoint {checkpoint}: {file}: {reason}{also}")


def _files(root: Path) -> list[str]:
    """Every regular file under ``root`` but the manifest, as sorted POSIX relative paths."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return sorted(f for f in found if f != MANIFEST_NAME)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:  # streamed in chunks: never the whole file in memory
        return hashlib.file_digest(f, "sha256").hexdigest()


def _hash_all(root: Path, files: list[str]) -> list[str]:
    if len(files) < 2:
        return [_sha256(root / f) for f in files]
    with ThreadPoolExecutor(min(_HASH_THREADS, len(files))) as pool:
        return list(pool.map(lambda f: _sha256(root / f), files))


def _list_digest(files: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_manifest(checkpoint: str | Path) -> Path:
    """Write ``manifest.json`` into the checkpoint directory: every file's relative path, size
    and sha256, and the checksum of that list. Returns the manifest's path."""
    root = Path(checkpoint)
    names = _files(root)
    digests = _hash_all(root, names)
    files = {name: {"size": (root / name).stat().st_size, "sha256": digest} for name, digest in zip(names, digests)}
    manifest = {"format": FORMAT, "version": VERSION, "files": files, "files_sha256": _list_digest(files)}
    staged = root / (MANIFEST_NAME + ".tmp")
    staged.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    staged.replace(root / MANIFEST_NAME)
    return root / MANIFEST_NAME


def _read_manifest(root: Path) -> dict[str, dict]:
    def damaged(why: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(root, MANIFEST_NAME, why)

    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise damaged(f"unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise damaged("not a torl-rllib checkpoint manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or manifest.get("files_sha256") != _list_digest(files):
        raise damaged("its own checksum differs (the manifest is damaged)")
    for name, entry in files.items():
        parts = Path(name).parts
        if (Path(name).is_absolute() or ".." in parts or not isinstance(entry, dict)
                or not isinstance(entry.get("size"), int) or not isinstance(entry.get("sha256"), str)):
            raise damaged(f"malformed entry {name!r}")
    return files


def _signature(root: Path, names) -> tuple:
    stats = []
    for name in [MANIFEST_NAME, *names]:
        try:
            st = (root / name).stat()
        except OSError:
            return ()
        stats.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(stats)


def _local_path(path: str | Path) -> Path | None:
    text = str(path)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    return None if "://" in text else Path(text)


def verify_checkpoint(path: str | Path) -> None:
    """Check the checkpoint at ``path`` against its manifest: every listed file present, of its
    size and sha256. Raises ``DamagedCheckpoint`` naming the (first) damaged file and why.

    A checkpoint without a manifest but with RLlib's ``rllib_checkpoint.json`` was written
    before manifests existed. Decision: such a checkpoint is accepted (with a warning) when the
    files RLlib restores from are there and every ``.json`` and ``.pkl`` in it parses to its end
    (pickles are walked opcode by opcode, nothing is built, so no weights are loaded): that
    catches truncation (a cut copy, a full disk), which is what those runs can meet, but not a
    flipped bit. Without either file it is not a checkpoint. Remote URIs (``s3://``...) are
    not verified here: RLlib reads them itself."""
    root = _local_path(path)
    if root is None:
        return
    if not root.is_dir():
        raise DamagedCheckpoint(root, ".", "missing (no such directory)")
    if not (root / MANIFEST_NAME).exists():
        if not (root / RLLIB_MARKER).is_file():
            raise DamagedCheckpoint(root, RLLIB_MARKER, f"missing, and there is no {MANIFEST_NAME} either: "
                                                        "not a checkpoint (or one whose metadata is lost)")
        _verify_without_manifest(root)
        return
    files = _read_manifest(root)
    key = str(root.resolve())
    signature = _signature(root, files)
    if signature and _verified.get(key) == signature:
        return
    problems: list[tuple[str, str]] = []
    for name, entry in files.items():
        file = root / name
        if not file.is_file():
            problems.append((name, "missing"))
        elif (size := file.stat().st_size) != entry["size"]:
            cut = " (truncated)" if size < entry["size"] else ""
            problems.append((name, f"{size} bytes, the manifest says {entry['size']}{cut}"))
    if not problems:
        names = list(files)
        for name, digest in zip(names, _hash_all(root, names)):
            if digest != files[name]["sha256"]:
                problems.append((name, "sha256 differs from the manifest's (the file changed or rotted)"))
    if problems:
        _verified.pop(key, None)
        raise DamagedCheckpoint(root, *problems[0], more=len(problems) - 1)
    if signature:
        _verified[key] = signature


def _verify_without_manifest(root: Path) -> None:
    def damaged(name: str, why: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(root, name, why)

    try:
        marker = json.loads((root / RLLIB_MARKER).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise damaged(RLLIB_MARKER, f"unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(marker, dict):
        raise damaged(RLLIB_MARKER, "not RLlib's checkpoint metadata")
    state = str(marker.get("state_file", "state"))
    required = [(marker.get("class_and_ctor_args_file") or "class_and_ctor_args.pkl",)]
    required.append((f"{state}.pkl", f"{state}.msgpack"))
    for choices in required:
        if not any((root / name).is_file() for name in choices):
            raise damaged(choices[0], "missing")
    for name in _files(root):
        try:
            if name.endswith(".json"):
                json.loads((root / name).read_text())
            elif name.endswith(".pkl"):
                with open(root / name, "rb") as f:
                    for _ in pickletools.genops(f):
                        pass
        except (OSError, UnicodeDecodeError, ValueError, EOFError) as exc:
            raise damaged(name, f"does not parse ({exc}); the checkpoint predates manifests") from None
    logger.warning("%s has no %s (written before checkpoints recorded one): its files parse, their "
                   "checksums cannot be checked", root, MANIFEST_NAME)
