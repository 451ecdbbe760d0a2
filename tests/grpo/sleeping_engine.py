"""A test double of the *engine* for colocation: the real HF engine on the module's own weights,
recording when it is put to sleep and when weights are loaded into it (as vLLM's would be)."""

from __future__ import annotations

from torl_rllib.rollout.hf_engine import HFEngine


class SleepRecordingEngine(HFEngine):
    holds_own_weights = True  # so the runner calls load_weights on every sync, as with vLLM

    def __init__(self, *, config, module, tokenizer):
        super().__init__(module.model, tokenizer, max_batch_size=config.engine_max_batch_size)
        self.events: list[str] = []

    def sleep(self) -> None:
        self.events.append("sleep")

    def load_weights(self, state_dict) -> None:
        self.events.append("load")  # the module holds them already: the runner set its state
