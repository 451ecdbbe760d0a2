"""A sweep's search space: dotted recipe keys → distributions, as Ray Tune domains placed where
the recipe key lives in ``GRPOConfig``'s config dict (what Tune hands each ``GRPO`` trial).

    training.lr:            {loguniform: [1.0e-5, 1.0e-3]}
    rollout.max_tool_calls: {grid: [0, 1, 2]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torl_rllib.algorithms.grpo.config_keys import config_path  # where a recipe key lives in the config dict

__all__ = ["Distribution", "parse_distribution", "config_path", "DISTRIBUTIONS", "UNSEARCHABLE"]

# name → (Tune factory, how its argument is written)
DISTRIBUTIONS = {
    "grid": "a list of values, every one tried",
    "choice": "a list of values, one sampled per trial",
    "uniform": "[low, high]",
    "loguniform": "[low, high], both > 0",
    "randint": "[low, high], integers, high exclusive (as in Tune)",
}
# Recipe sections a trial cannot vary, and why.
UNSEARCHABLE = {
    "name": "the sweep names the trials",
    "run": "the sweep's tune section sets steps and checkpoints",
    "tracking": "the sweep tracks every trial as a child of its own run",
    "resources": "Tune reserves the same resources for every trial",
}


@dataclass(frozen=True)
class Distribution:
    """One searched key's distribution."""

    kind: str  # one of DISTRIBUTIONS
    args: tuple

    def to_tune(self):
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)

    @property
    def example_values(self) -> list[Any]:
        """Values to validate against the recipe: every listed value, or both bounds."""
        if self.kind == "randint":
            return [self.args[0], self.args[1] - 1]
        return list(self.args)

    def describe(self) -> str:
        return f"{self.kind}{list(self.args)}"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_distribution(spec: Any) -> tuple[Distribution | None, str | None]:
    """(distribution, None) or (None, what is wrong with ``spec``)."""
    kinds = ", ".join(DISTRIBUTIONS)
    if not isinstance(spec, dict) or len(spec) != 1:
        return None, f"must be one of {{{kinds}}} mapped to its values, e.g. {{grid: [0, 1]}}; got {spec!r}"
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        import difflib

        close = difflib.get_close_matches(str(kind), list(DISTRIBUTIONS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {kinds})"
        return None, f"unknown distribution {kind!r}{hint}"
    if not isinstance(args, list) or not args:
        return None, f"{kind} takes {DISTRIBUTIONS[kind]}; got {args!r}"
    if kind in ("grid", "choice"):
        return Distribution(kind, tuple(args)), None
    if len(args) != 2 or not all(_number(a) for a in args):
        return None, f"{kind} takes {DISTRIBUTIONS[kind]}; got {args!r}"
    low, high = args
    if not low < high:
        return None, f"{kind} bounds must have low < high; got [{low}, {high}]"
    if kind == "loguniform" and low <= 0:
        return None, f"loguniform bounds must be > 0; got [{low}, {high}]"
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        return None, f"randint bounds must be integers; got {args!r}"
    return Distribution(kind, (low, high)), None
