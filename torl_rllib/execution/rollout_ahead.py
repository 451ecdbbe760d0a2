"""The next step's rollout, sampled while the Learners update on this step's (``max_staleness=1``).

verl's one-step-off-policy mode, in RLlib terms: the EnvRunners sample step t+1 with the weights
they hold (version v) while the LearnerGroup turns step t's trajectories into version v+1; the
runners receive v+1 before they sample step t+2. Every episode therefore lags the learner by
exactly one version, and the loss corrects for it with the recorded rollout log-probabilities.

It runs on a thread of the driver, not as bare Ray futures, because the sampling goes through
``call_in_shards`` (work queue with failover when a runner dies), which waits on the
EnvRunnerGroup; on a thread that logic is reused as is, and nothing else touches the group until
the thread is joined.
"""

from __future__ import annotations

import threading
from typing import Callable


class RolloutAhead:
    """One step's rollout, either running on a background thread or already complete (restored
    from a checkpoint). ``data_position`` is the prompt iterator's state before its problems were
    drawn; ``version`` the weights version it samples with."""

    def __init__(self, problems: list, data_position: dict, version: int, result: tuple | None = None):
        self.problems, self.data_position, self.version = problems, data_position, version
        self._result, self._error = result, None
        self._thread: threading.Thread | None = None

    def start(self, sample: Callable[[list], tuple]) -> "RolloutAhead":
        """Sample on a background thread (``sample(problems) -> (episodes, rollouts, resampled shards)``)."""
        self._thread = threading.Thread(target=self._run, args=(sample,), name="rollout-ahead", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, sample) -> None:
        try:
            self._result = sample(self.problems)
        except BaseException as exc:  # re-raised in the driver's thread by result()
            self._error = exc

    def wait(self) -> None:
        """Wait for the background thread (its outcome, result or error, is kept for ``result``)."""
        while self.running:
            self._thread.join(timeout=0.2)  # short waits: an interrupt of the driver is seen at once

    def result(self, sample: Callable[[list], tuple] | None = None) -> tuple:
        """(episodes, rollouts, resampled shards): waits for the background thread, or samples now with ``sample``
        when none was started; raises what the sampling raised."""
        if self._thread is None and self._result is None:
            self._result = sample(self.problems)
        self.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def get_state(self) -> dict:
        """What a checkpoint records: the finished rollout (a checkpoint waits for it), so a
        resumed run learns from the very trajectories the uninterrupted run would have."""
        return {"problems": self.problems, "data_position": self.data_position, "version": self.version,
                "result": self.result()}

    @classmethod
    def from_state(cls, state: dict) -> "RolloutAhead":
        return cls(state["problems"], state["data_position"], state["version"], result=state["result"])
