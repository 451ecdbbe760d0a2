"""The scalar reward of a graded response.

ToRL's reward: +1 when the last ``\\boxed{}`` equals the gold answer, -1 otherwise
(no box, unparsable or timed-out answers included). ``RewardConfig(incorrect=0.0)`` gives the
1/0 variant. ``no_box`` optionally scores a response without any box differently from a wrong
one, and ``truncation_penalty`` is subtracted from responses cut off by the length limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torl_rllib.tasks.grading import GradeResult

__all__ = ["RewardConfig", "compute_reward"]


@dataclass(frozen=True)
class RewardConfig:
    """Reward values; the defaults are ToRL's ±1 with no truncation penalty."""

    correct: float = 1.0
    incorrect: float = -1.0
    no_box: float | None = None  # None: same as ``incorrect``
    truncation_penalty: float | None = None  # None or 0: truncation is not penalized

    def __post_init__(self) -> None:
        for name in ("correct", "incorrect", "no_box", "truncation_penalty"):
            value = getattr(self, name)
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if value is not None and not finite:
                raise ValueError(f"RewardConfig.{name} must be a finite number, got {value!r}")
        if self.correct <= self.incorrect:
            raise ValueError(f"RewardConfig.correct ({self.correct}) must exceed incorrect ({self.incorrect})")
        if self.no_box is not None and self.no_box >= self.correct:
            raise ValueError(f"RewardConfig.no_box ({self.no_box}) must be below correct ({self.correct})")
        if self.truncation_penalty is not None and self.truncation_penalty < 0:
            raise ValueError(
                f"RewardConfig.truncation_penalty must be >= 0 (it is subtracted), got {self.truncation_penalty}"
            )


def compute_reward(result: GradeResult, truncated: bool, config: RewardConfig = RewardConfig()) -> float:
    """Reward of one graded response; ``truncated``: it hit the length limit."""
    if result.correct:
        reward = config.correct
    elif result.reason == "no_box" and config.no_box is not None:
        reward = config.no_box
    else:
        reward = config.incorrect
    if truncated and config.truncation_penalty:
        reward -= config.truncation_penalty
    return float(reward)
