"""Checkpoints that are whole or absent: RLlib's save written to ``PATH.partial`` with a
manifest and renamed; FSDP optimizer shards gathered on the first Learner before RLlib reads
the LearnerGroup's state; a damaged checkpoint refused before a restore."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from torl_rllib.utils.checkpoint_manifest import verify_checkpoint, write_manifest


def save_atomically(save: Callable[[str | None], str], path=None) -> str:
    """``save(path)`` (RLlib's ``save_to_path``), made atomic: written to ``PATH.partial`` and
    renamed, so a crash or a kill mid-save never leaves a half checkpoint under ``path``. With
    no ``path``, RLlib's own choice of folder, given a manifest. Returns the checkpoint's path."""
    if path is None:
        path = save(None)
        write_manifest(path)
        return path
    final = Path(path)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        save(str(partial))
        write_manifest(partial)  # before the rename: complete <=> has a manifest
    except BaseException:  # e.g. disk full: leave nothing half-written behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return str(final)


def gather_sharded_learner_state(config, learner_group) -> None:
    """FSDP: RLlib reads a LearnerGroup's state from its first Learner alone, so every
    Learner first gathers its optimizer shards there (``ShardedTorchLearner``)."""
    if config.learner_strategy == "fsdp":
        for result in learner_group.foreach_learner(lambda learner: learner.gather_optimizer_state()):
            if not result.ok:
                raise result.get()


def check_restorable(path, component=None) -> None:
    """Refuse a damaged checkpoint, naming its file (a whole-algorithm restore only)."""
    if component is None:
        verify_checkpoint(path)
