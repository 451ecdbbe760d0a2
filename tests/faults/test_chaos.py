"""The chaos benchmark, short: random components killed while the tiny model trains, then the
run compared with an undisturbed one of the same seed."""

from __future__ import annotations

import json

import pytest

from benchmarks.chaos import main  # benchmarks/chaos.py

pytestmark = pytest.mark.slow


def test_chaos_run_completes_every_step_like_the_undisturbed_run(tmp_path, capsys):
    assert main(["--steps", "5", "--kill-every", "4", "--seed", "3", "--output-dir", str(tmp_path), "--json",
                 "training.prompts_per_step=4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps_completed"] == 5 and report["steps_in_order"], report
    assert sum(report["kills"].values()) >= 1, report
    assert report["prompts_equal"], report  # the same prompts at every step, resumes included
    # Runner kills are re-sampled, tool calls of killed jails and pools retried, a resume is
    # exact: nothing of the chaos reaches the gradient. (Weights agree to float rounding: the
    # rollout's log-probabilities depend in their last bits on batch composition, i.e. timing.)
    assert report["trajectories_failed"] == 0 and report["dropped_groups"] == 0, report
    assert report["accuracy_chaos"] == report["accuracy_undisturbed"], report
    assert report["weights_max_abs_diff"] < 1e-4, report
