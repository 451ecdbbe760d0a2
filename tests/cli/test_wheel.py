"""The package as a wheel: built from this checkout, installed non-editable into a fresh
environment that cannot see the source tree, and run through its ``torl-rllib`` console script
from a directory outside the clone (``train`` on the tiny recipe, ``eval`` on ``tiny_test``), with
the shipped models and benchmark files read from the installed ``torl_rllib.assets``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

# What the wheel is built from (a copy, so the build leaves no build/ folder in the checkout).
BUILD_INPUTS = ("pyproject.toml", "README.md", "torl_rllib", "sandbox", "assets")
QUICK = ["run.steps=3", "training.prompts_per_step=2", "training.group_size=4", "evaluation.interval=0",
         "run.checkpoint_every=0"]

PROBE = """
import json, sys, importlib.resources
import torl_rllib, sandbox
from torl_rllib.utils.resources import asset_path
from torl_rllib.evaluation.benchmarks import REGISTRY
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(asset_path("tiny-math-base"))
print(json.dumps({"torl_rllib": torl_rllib.__file__, "sandbox": sandbox.__file__,
                  "assets": str(importlib.resources.files("torl_rllib.assets")),
                  "benchmarks": {n: REGISTRY[n]["path"] for n in ("tiny_test", "emergent_test")},
                  "models": [str(asset_path(m, "model.safetensors")) for m in ("tiny-math-base", "tiny-emergent-base")],
                  "parameters": sum(p.numel() for p in model.parameters()), "sys_path": sys.path}))
"""


def _package_dirs() -> set[str]:
    """Every folder of torl_rllib/ and sandbox/ that holds Python code, as a package name."""
    return {".".join(d.relative_to(REPO).parts) for top in ("torl_rllib", "sandbox")
            for d in [REPO / top, *(REPO / top).rglob("*")]
            if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))}


def test_pyproject_lists_every_package():
    """pyproject.toml lists its packages (discovery cannot see torl_rllib.assets, mapped from
    assets/): a code folder missing from the list would be missing from the wheel, silently in an
    editable install."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    assert setuptools["package-dir"] == {"torl_rllib.assets": "assets"}
    assert sorted(_package_dirs() - listed) == [], "add these to [tool.setuptools] packages"
    assert sorted(listed - _package_dirs() - {"torl_rllib.assets"}) == [], "listed but gone"


def test_assets_resolve_in_this_checkout():
    from torl_rllib.evaluation.benchmarks import REGISTRY
    from torl_rllib.utils.resources import asset_path

    assert asset_path("data", "tiny_arithmetic_test.jsonl") == REPO / "assets" / "data" / "tiny_arithmetic_test.jsonl"
    assert (asset_path("tiny-math-base") / "config.json").is_file()
    assert all(Path(REGISTRY[name]["path"]).is_file() for name in ("tiny_test", "emergent_test"))


def run(*args, cwd: Path, env: dict, timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args[:3]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_clone(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", tmp_path / "dist", src, cwd=tmp_path, env=env, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("torl_rllib-*.whl")
    assert wheel.stat().st_size < 20e6, f"the wheel is {wheel.stat().st_size / 1e6:.1f} MB"

    # A fresh environment: the base interpreter, the dependencies of this one's site-packages
    # through a .pth file (which does not run the .pth files there, so no editable finder), and the
    # wheel installed non-editable into site/, first on the path.
    site = tmp_path / "site"
    run(sys.executable, "-m", "venv", "--without-pip", tmp_path / "env", cwd=tmp_path, env=env, timeout=120)
    python = tmp_path / "env" / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                  cwd=tmp_path, env=env, timeout=60).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # this interpreter's (the .venv's) site-packages
    Path(purelib, "torl_wheel_test.pth").write_text(f"{site}\n{deps}\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "--target", site, wheel,
        cwd=tmp_path, env=env, timeout=300)
    script = site / "bin" / "torl-rllib"
    assert script.read_text().splitlines()[0] == f"#!{python}"

    cwd = tmp_path / "cwd"  # outside the clone
    cwd.mkdir()
    probe = json.loads(run(python, "-c", PROBE, cwd=cwd, env=env, timeout=300).stdout.splitlines()[-1])
    installed = site / "torl_rllib"
    assert Path(probe["torl_rllib"]).parent == installed and Path(probe["sandbox"]).parent == site / "sandbox"
    assert Path(probe["assets"]) == installed / "assets"
    assert all(Path(p).is_relative_to(installed / "assets") for p in probe["benchmarks"].values())
    assert all(Path(p).is_relative_to(installed / "assets") for p in probe["models"])
    assert probe["parameters"] > 0
    on_path = {(cwd / p).resolve() for p in probe["sys_path"]} - {Path(deps).resolve()}
    assert not [p for p in on_path if p.is_relative_to(REPO)], "the clone is on sys.path"

    mlflow = f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"
    train = run(script, "train", REPO / "experiments" / "tiny_cpu.yaml", *QUICK, f"run.output_dir={tmp_path / 'run'}",
                mlflow, cwd=cwd, env=env, timeout=900)
    assert "finished: 3 steps" in train.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "FINISHED" and summary["steps"] == 3
    final_model = tmp_path / "run" / "final_model"
    assert (final_model / "model.safetensors").is_file()

    run(script, "eval", final_model, "--benchmarks", "tiny_test", "max_problems=8", mlflow,
        "--output-dir", tmp_path / "eval", cwd=cwd, env=env, timeout=900)
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    tiny = report["benchmarks"]["tiny_test"]
    assert report["status"] == "FINISHED" and tiny["problems"] == 8 and tiny["failed_samples"] == 0
    assert Path(tiny["path"]) == installed / "assets" / "data" / "tiny_arithmetic_test.jsonl"
    assert list(cwd.iterdir()) == [], "the commands wrote into the working directory"
