"""A seeded, resumable iterator over a dataset's problems (held by the driver).

Each epoch is a permutation of all problems drawn from ``(seed, epoch)``; the state is just
``(epoch, position)``, so a checkpoint resumes at exactly the next problem, including when
it was saved on an epoch boundary.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class PromptIterator:
    """Yields problems in seeded, per-epoch shuffled order; ``get_state``/``set_state`` resume it."""

    def __init__(self, problems: Sequence, seed: int = 0, shuffle: bool = True):
        if not problems:
            raise ValueError("PromptIterator needs at least one problem")
        self.problems = list(problems)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.problems))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.problems))

    def next_batch(self, n: int) -> list:
        batch = []
        while len(batch) < n:
            if self.position >= len(self.problems):
                self.epoch += 1
                self.position = 0
            order = self._order(self.epoch)
            take = order[self.position : self.position + n - len(batch)]
            batch.extend(self.problems[i] for i in take)
            self.position += len(take)
        return batch

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]
