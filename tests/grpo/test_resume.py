"""Exact resume: N steps, save, restore in a fresh process, M more steps gives the same
weights, optimizer state and sampled prompts as N+M uninterrupted steps (fixed seeds) —
also when the save falls exactly on an epoch boundary of the data (verl #7401 ran 0 steps
there)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

RUNNER = Path(__file__).with_name("resume_run.py")
TOTAL_STEPS = 7
# 20 problems, 4 per step: step 5 ends the first epoch exactly; step 2 is mid-epoch.
SAVE_POINTS = (2, 5)

pytestmark = pytest.mark.slow


def _run(*args) -> None:
    proc = subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"resume_run.py {args[0]} failed:\n{proc.stderr[-4000:]}"


def _flatten(tree, prefix=""):
    if torch.is_tensor(tree):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _flatten(v, f"{prefix}/{i}")
    else:
        yield prefix, tree


def _assert_same(a, b, what):
    fa, fb = dict(_flatten(a)), dict(_flatten(b))
    assert fa.keys() == fb.keys(), f"{what}: different entries"
    for key in fa:
        x, y = fa[key], fb[key]
        if torch.is_tensor(x):
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y)), f"{what} differs at {key}"
        else:
            assert x == y, f"{what} differs at {key}: {x!r} != {y!r}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory, random_model_dir, arithmetic_jsonl):
    root = tmp_path_factory.mktemp("resume")
    out = root / "straight.pt"
    _run("straight", random_model_dir, arithmetic_jsonl, out, "--steps", TOTAL_STEPS,
         "--save-at", *SAVE_POINTS, "--checkpoint-dir", root / "ckpt")
    return root, torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def straight_off_policy(tmp_path_factory, random_model_dir, arithmetic_jsonl):
    """max_staleness=1: each checkpoint records the next step's rollout, already sampled."""
    root = tmp_path_factory.mktemp("resume_off_policy")
    out = root / "straight.pt"
    _run("straight", random_model_dir, arithmetic_jsonl, out, "--steps", TOTAL_STEPS, "--max-staleness", 1,
         "--save-at", SAVE_POINTS[0], "--checkpoint-dir", root / "ckpt")
    return root, torch.load(out, weights_only=False)


def _resume_and_compare(root, reference, saved_at, random_model_dir, arithmetic_jsonl, steps=TOTAL_STEPS):
    out = root / f"resumed_{saved_at}.pt"
    _run("resume", random_model_dir, arithmetic_jsonl, out, "--steps", steps,
         "--from", root / "ckpt" / f"step_{saved_at}")
    resumed = torch.load(out, weights_only=False)

    assert resumed["iteration"] == steps
    assert sorted(resumed["prompts"]) == list(range(saved_at + 1, steps + 1)), "resume ran the wrong steps"
    for step, ids in resumed["prompts"].items():
        assert ids == reference["prompts"][step], f"step {step} sampled other prompts after the resume"
    _assert_same(resumed["weights"], reference["weights"], "weights")
    _assert_same(resumed["optimizer"], reference["optimizer"], "optimizer state")
    return resumed


@pytest.mark.parametrize("saved_at", SAVE_POINTS, ids=["mid_epoch", "epoch_boundary"])
def test_resume_in_fresh_process_matches_uninterrupted_run(straight, saved_at, random_model_dir, arithmetic_jsonl):
    root, reference = straight
    _resume_and_compare(root, reference, saved_at, random_model_dir, arithmetic_jsonl)
    assert set(reference["lags"].values()) == {0}  # on-policy


def test_one_step_off_policy_lags_one_version_and_resumes_exactly(straight_off_policy, random_model_dir,
                                                                   arithmetic_jsonl):
    root, reference = straight_off_policy
    # The first step samples with the initial weights; every later one was sampled during the
    # previous update, with the weights from before it: staleness <= max_staleness, everywhere.
    assert reference["lags"] == {1: 0, **{step: 1 for step in range(2, TOTAL_STEPS + 1)}}
    resumed = _resume_and_compare(root, reference, SAVE_POINTS[0], random_model_dir, arithmetic_jsonl)
    assert resumed["lags"] == {step: 1 for step in range(SAVE_POINTS[0] + 1, TOTAL_STEPS + 1)}


def test_fsdp_learners_resume_exactly_in_a_fresh_process(tmp_path, random_model_dir, arithmetic_jsonl):
    """2 FSDP2 Learners (gloo): the checkpoint holds the gathered state, a fresh process
    shards it again and continues exactly as the uninterrupted run."""
    out = tmp_path / "straight.pt"
    _run("straight", random_model_dir, arithmetic_jsonl, out, "--steps", 4, "--save-at", 2,
         "--checkpoint-dir", tmp_path / "ckpt", "--learner-strategy", "fsdp")
    reference = torch.load(out, weights_only=False)
    assert reference["optimizer"], "the FSDP checkpoint state has no optimizer state"
    _resume_and_compare(tmp_path, reference, 2, random_model_dir, arithmetic_jsonl, steps=4)


def test_training_changes_the_weights(straight, random_model_dir):
    """Guards the test above against passing vacuously (e.g. a zero learning rate)."""
    from safetensors.torch import load_file

    _, reference = straight
    initial = load_file(str(Path(random_model_dir) / "model.safetensors"))
    trained = {k.removeprefix("model."): v for k, v in reference["weights"].items()}
    changed = [k for k, v in initial.items() if k in trained and not torch.equal(v, trained[k])]
    assert changed, "7 GRPO steps left every weight unchanged"
