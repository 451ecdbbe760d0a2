"""Group-relative advantages (GRPO), computed where whole groups live: the EnvRunner."""

from __future__ import annotations

import numpy as np


def group_advantages(rewards, scale: bool = True, eps: float = 1e-6) -> np.ndarray:
    """``r - mean(group)``, divided by the group's (population) std when ``scale``.

    A group whose rewards are all equal carries no learning signal: its advantages are 0.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        return r
    centered = r - r.mean()
    std = r.std()
    if std < eps:
        return np.zeros_like(r)
    return centered / std if scale else centered
