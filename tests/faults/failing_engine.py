"""A test double of the *model* whose every generation fails with a chained cause and an empty
outer message, as vLLM's ``EngineGenerateError`` did when a request seed overflowed."""

from __future__ import annotations

from torl_rllib.rollout.engine import RolloutEngine

ROOT_CAUSE = "can't serialize ints < -2**63 or > 2**64 - 1"


class EngineGenerateError(Exception):
    """Raised with no message, its cause chained (the real one's shape)."""


class ChainedFailureEngine(RolloutEngine):
    def __init__(self, *, config, module, tokenizer):
        pass

    async def generate(self, prompt_ids, params):
        try:
            raise OverflowError(ROOT_CAUSE)
        except OverflowError as exc:
            raise EngineGenerateError() from exc

    def load_weights(self, state_dict) -> None:
        pass
