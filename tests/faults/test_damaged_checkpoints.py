"""Damaged checkpoints are found, not crashed into: every checkpoint carries a manifest (sizes,
sha256) written inside its atomic save and verified before any restore. ``--resume auto|latest``
falls back to the newest intact checkpoint, saying what it skipped; an explicit ``--resume
PATH``, ``eval`` and ``export`` of a damaged checkpoint refuse in one line.

One real run (3 steps, a checkpoint each: the session's ``trained_run``) is shared; each test
damages a ``cp -r`` copy of it, one part at a time: module weights, optimizer state, algorithm state, RLlib's
metadata, the manifest itself. The first tests need no run (a hand-made checkpoint)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RECIPE, SHORT, run_cli
from torl_rllib.utils.checkpoint_manifest import MANIFEST_NAME, DamagedCheckpoint, verify_checkpoint, write_manifest
from torl_rllib.train import truncate_metrics_log, complete_checkpoints, newest_intact_checkpoint

MODULE_WEIGHTS = "learner_group/learner/rl_module/default_policy/module_state.pkl"
OPTIMIZER_STATE = "learner_group/learner/state.pkl"  # the Learner's state: its optimizer's
ALGORITHM_STATE = "algorithm_state.pkl"
METADATA = "rllib_checkpoint.json"


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


# (part, file, damage, what the message says)
DAMAGES = [
    ("module_weights", MODULE_WEIGHTS, truncate, "(truncated)"),
    ("optimizer_state", OPTIMIZER_STATE, flip_a_byte, "sha256 differs"),
    ("algorithm_state", ALGORITHM_STATE, delete, "missing"),
    ("metadata", METADATA, flip_a_byte, "sha256 differs"),
    ("metadata_lost", METADATA, delete, "missing"),
    ("manifest", MANIFEST_NAME, truncate, "unreadable"),
]
DAMAGE_IDS = [d[0] for d in DAMAGES]


# ---- a hand-made checkpoint (no training) ---------------------------------------------------
def fake_checkpoint(path: Path, manifest: bool = True) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / METADATA).write_text(json.dumps({"class_and_ctor_args_file": "class_and_ctor_args.pkl",
                                             "state_file": "algorithm_state"}))
    (path / "class_and_ctor_args.pkl").write_bytes(pickle.dumps({"ctor_args_and_kwargs": ((), {})}))
    (path / ALGORITHM_STATE).write_bytes(pickle.dumps({"training_iteration": 1}))
    (path / "sub" / "module_state.pkl").write_bytes(pickle.dumps({"w": bytes(range(256)) * 400}))
    if manifest:
        write_manifest(path)
    return path


def test_manifest_lists_every_file_and_verifies(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "c")
    manifest = json.loads((ckpt / MANIFEST_NAME).read_text())
    assert sorted(manifest["files"]) == sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*")
                                               if p.is_file() and p.name != MANIFEST_NAME)
    assert manifest["files"]["sub/module_state.pkl"]["size"] == (ckpt / "sub" / "module_state.pkl").stat().st_size
    verify_checkpoint(ckpt)
    (ckpt / "tune_metadata.json").write_text("{}")  # added after the save (Ray Tune does): not checked
    verify_checkpoint(ckpt)


@pytest.mark.parametrize("damage,expected", [(truncate, "(truncated)"), (flip_a_byte, "sha256 differs"),
                                             (delete, "missing")], ids=["truncated", "flipped", "deleted"])
def test_verify_names_the_damaged_file_and_why(tmp_path, damage, expected):
    ckpt = fake_checkpoint(tmp_path / "c")
    damage(ckpt / "sub" / "module_state.pkl")
    with pytest.raises(DamagedCheckpoint) as caught:
        verify_checkpoint(ckpt)
    assert caught.value.file == "sub/module_state.pkl" and expected in caught.value.reason
    assert str(caught.value).startswith(f"damaged checkpoint {ckpt}: sub/module_state.pkl: ")
    assert "\n" not in str(caught.value)


def test_a_damaged_manifest_is_named(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "c")
    text = (ckpt / MANIFEST_NAME).read_text()
    (ckpt / MANIFEST_NAME).write_text(text.replace('"size": ', '"size": 1', 1))  # still valid JSON
    with pytest.raises(DamagedCheckpoint, match=r": manifest\.json: its own checksum differs"):
        verify_checkpoint(ckpt)


def test_checkpoints_written_before_manifests_must_parse(tmp_path, caplog):
    ckpt = fake_checkpoint(tmp_path / "old", manifest=False)
    with caplog.at_level(logging.WARNING):
        verify_checkpoint(ckpt)  # accepted, with a warning
    assert "has no manifest.json" in caplog.text
    truncate(ckpt / "sub" / "module_state.pkl")
    with pytest.raises(DamagedCheckpoint, match=r": sub/module_state\.pkl: does not parse"):
        verify_checkpoint(ckpt)


def test_a_directory_without_manifest_or_metadata_is_not_a_checkpoint(tmp_path):
    with pytest.raises(DamagedCheckpoint, match="rllib_checkpoint.json: missing.*not a checkpoint"):
        verify_checkpoint(tmp_path)
    with pytest.raises(DamagedCheckpoint, match="no such directory"):
        verify_checkpoint(tmp_path / "nothing")


def test_resume_candidates_walk_back_from_latest(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        fake_checkpoint(folder / f"step_{step:06d}")
    (folder / "step_000005.partial").mkdir()  # an interrupted save: never a candidate
    (folder / "latest").write_text("step_000003\n")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000003", "step_000002", "step_000001"]
    (folder / "latest").unlink()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000004", "step_000003", "step_000002",
                                                                "step_000001"]
    truncate(folder / "step_000004" / ALGORITHM_STATE)
    delete(folder / "step_000003" / METADATA)  # the manifest still marks it complete: reported, not ignored
    found, skipped = newest_intact_checkpoint(tmp_path)
    assert found == folder / "step_000002"
    assert [(d.checkpoint.name, d.file) for d in skipped] == [("step_000004", ALGORITHM_STATE),
                                                              ("step_000003", METADATA)]


def test_truncating_metrics_keeps_steps_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "acc')
    truncate_metrics_log(log, 1)
    assert log.read_text() == '{"step": 1}\n'


# ---- a real run ----------------------------------------------------------------------------
def cli(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torl_rllib.cli", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def trained(trained_run) -> Path:
    """The run directory of the session's real 3-step run, with a checkpoint after every step."""
    return trained_run[0] / "run"


# What the resumed steps leave out, to save time: the held-out evaluation, MLflow and the export.
QUICK_RESUME = ["evaluation.interval=0", "tracking.enabled=false", "run.export_final=false"]


def copy_run(trained: Path, to: Path) -> Path:
    subprocess.run(["cp", "-r", str(trained), str(to)], check=True)
    return to


@pytest.mark.slow
def test_every_checkpoint_has_a_manifest_of_all_its_files(trained):
    folder = trained / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step_000001", "step_000002", "step_000003"]
    for ckpt in folder.glob("step_*"):
        files = json.loads((ckpt / MANIFEST_NAME).read_text())["files"]
        on_disk = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file())
        assert sorted([*files, MANIFEST_NAME]) == on_disk
        assert {MODULE_WEIGHTS, OPTIMIZER_STATE, ALGORITHM_STATE, METADATA} <= set(files)
        verify_checkpoint(ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("part,file,damage,expected", DAMAGES, ids=DAMAGE_IDS)
def test_verify_and_the_algorithm_restore_name_the_damaged_part(trained, tmp_path, part, file, damage, expected):
    from torl_rllib.algorithms.grpo import GRPO

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained / "checkpoints" / "step_000003", ckpt)
    damage(ckpt / file)
    with pytest.raises(DamagedCheckpoint) as caught:
        verify_checkpoint(ckpt)
    assert caught.value.file == file and expected in caught.value.reason, str(caught.value)
    # GRPO.restore_from_path (the CLI's and Tune's way in) checks before RLlib reads anything.
    with pytest.raises(DamagedCheckpoint, match=re.escape(f": {file}: ")):
        GRPO.restore_from_path(object(), str(ckpt))


# The case through every command; each other part through one of them (each a refusal
# before Ray starts, so the CLI runs in this process).
REFUSALS = [("module_weights", "train"), ("module_weights", "eval"), ("module_weights", "export"),
            ("optimizer_state", "train"), ("algorithm_state", "export"), ("metadata", "eval"),
            ("metadata_lost", "export"), ("manifest", "train")]


@pytest.mark.slow
@pytest.mark.parametrize("part,command", REFUSALS, ids=[f"{p}-{c}" for p, c in REFUSALS])
def test_explicit_resume_eval_and_export_refuse_in_one_line(trained, tmp_path, part, command):
    _, file, damage, expected = DAMAGES[DAMAGE_IDS.index(part)]
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained / "checkpoints" / "step_000003", ckpt)
    damage(ckpt / file)
    args = {"train": ["train", RECIPE, *SHORT, "run.steps=4", "--resume", ckpt, "--output-dir", tmp_path / "out"],
            "eval": ["eval", ckpt, "--output-dir", tmp_path / "out"],
            "export": ["export", ckpt, tmp_path / "out"]}[command]
    code, _, stderr = run_cli(*args, cwd=tmp_path)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(f"error: damaged checkpoint {ckpt}: {file}: ") and expected in errors[0], errors
    assert not (tmp_path / "out").exists(), "it started anyway"


@pytest.mark.slow
def test_resume_auto_falls_back_to_the_newest_intact_checkpoint(trained, tmp_path):
    """The issue's case: the newest checkpoint's weights truncated and ``checkpoints/latest``
    gone; the one before has a damaged algorithm state too. ``--resume auto`` says what it
    skips, resumes from step 1, redoes steps 2 and 3 exactly, and logs each step once."""
    run = copy_run(trained, tmp_path / "run")
    folder = run / "checkpoints"
    truncate(folder / "step_000003" / MODULE_WEIGHTS)
    delete(folder / "step_000002" / ALGORITHM_STATE)
    (folder / "latest").unlink()
    sizes = [(folder / "step_000003" / MODULE_WEIGHTS).stat().st_size,
             (trained / "checkpoints" / "step_000003" / MODULE_WEIGHTS).stat().st_size]
    before = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in before] == [1, 2, 3]

    proc = cli("train", RECIPE, *SHORT, *QUICK_RESUME, "run.steps=3", "--output-dir", run, "--resume", "auto",
               cwd=tmp_path)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: skipping")]
    assert warnings == [
        f"warning: skipping damaged checkpoint {folder / 'step_000003'}: {MODULE_WEIGHTS}: "
        f"{sizes[0]} bytes, the manifest says {sizes[1]} (truncated)",
        f"warning: skipping damaged checkpoint {folder / 'step_000002'}: {ALGORITHM_STATE}: missing",
    ], stderr[-4000:]
    assert f"resuming from {folder / 'step_000001'}" in stderr

    after = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in after] == [1, 2, 3], "a step is missing or logged twice"
    assert after[0] == before[0], "the step before the checkpoint was logged again"
    # An exact resume: the redone steps sampled the very prompts of the first attempt.
    assert [m["problems_digest"] for m in after] == [m["problems_digest"] for m in before]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["steps"] == 3
    assert (folder / "latest").read_text().strip() == "step_000003"
    for step in (1, 2, 3):  # the damaged ones were replaced by intact ones
        verify_checkpoint(folder / f"step_{step:06d}")


@pytest.mark.slow
def test_resume_latest_with_every_checkpoint_damaged_refuses_in_one_line(trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    for ckpt in (run / "checkpoints").glob("step_*"):
        truncate(ckpt / MODULE_WEIGHTS)
    code, _, stderr = run_cli("train", RECIPE, *SHORT, "run.steps=4", "--output-dir", run, "--resume", "latest",
                              cwd=tmp_path)
    assert code == 2, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(("warning:", "error:"))]
    assert [line.split(":")[0] for line in lines] == ["warning"] * 3 + ["error"], stderr
    assert lines[-1] == f"error: --resume latest: no intact checkpoint in {run / 'checkpoints'} (3 damaged, above)"
