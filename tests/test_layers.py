"""The package's import rule (its docstring): imports point down the layers, ``sandbox`` never
imports ``torl_rllib``, neither imports the build tools (``tools/``, outside the package), and
no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = [
    {"utils"}, {"core"}, {"tasks"}, {"modules"}, {"rollout"}, {"evaluation"}, {"tracking"}, {"export"},
    {"execution"}, {"algorithms"}, {"recipe", "evaluation_recipe"}, {"train", "evaluate", "sweep"}, {"cli"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def imports(path: Path):
    """``(line, module, names)`` of every import in ``path``, function-level ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def top(module: str) -> str | None:
    """The first-level part of a ``torl_rllib`` module name (None for other packages)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "torl_rllib" and len(parts) > 1 else None


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {p.relative_to(REPO / "torl_rllib").parts[0].removesuffix(".py") for p in sources("torl_rllib")}
    assert parts - {"__init__"} == set(LEVEL), "add new packages to LAYERS and the package docstring"


@pytest.mark.parametrize("path", sources("torl_rllib"), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down(path):
    own = top(".".join(path.relative_to(REPO).with_suffix("").parts))
    upward = [f"line {line}: {module}" for line, module, _ in imports(path)
              if top(module) and LEVEL[top(module)] > LEVEL[own]]
    assert not upward, f"{own} (layer {LEVEL[own] + 1}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("path", sources("torl_rllib") + sources("sandbox"), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_another_modules_private_names(path):
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    private = [f"line {line}: {name} from {source}" for line, source, names in imports(path)
               for name in names if name.startswith("_") and not name.startswith("__") and source != module
               and source.split(".")[0] in ("torl_rllib", "sandbox")]
    assert not private, private


@pytest.mark.parametrize("path", sources("sandbox"), ids=lambda p: str(p.relative_to(REPO)))
def test_sandbox_stands_alone(path):
    assert not [m for _, m, _ in imports(path) if m.split(".")[0] == "torl_rllib"]


OUTSIDE_THE_PACKAGE = ("tools", "benchmarks", "tests")


@pytest.mark.parametrize("path", sources("torl_rllib") + sources("sandbox"), ids=lambda p: str(p.relative_to(REPO)))
def test_runtime_never_imports_the_build_tools(path):
    """The build tools, benchmarks and tests live outside the package and are not in the wheel."""
    assert not [f"line {line}: {m}" for line, m, _ in imports(path) if m.split(".")[0] in OUTSIDE_THE_PACKAGE]


def test_a_violation_is_caught(tmp_path):
    """The checker itself: an upward import in a low layer is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from torl_rllib.algorithms.grpo import GRPOConfig\n")
    assert [top(m) for _, m, _ in imports(bad)] == ["algorithms"] and LEVEL["algorithms"] > LEVEL["rollout"]
