"""A test double of the *model*: every response runs a 2-second snippet, then answers. Tool
calls are then surely in flight when a test kills the sandbox a second into a step."""

from __future__ import annotations

from torl_rllib.rollout.engine import GenerationOutput, RolloutEngine

CODE = "```python\nimport time\ntime.sleep(2)\nprint(42)\n```\n```output"


class SlowCodeEngine(RolloutEngine):
    def __init__(self, *, config, module, tokenizer):
        self.tokenizer = tokenizer

    async def generate(self, prompt_ids, params):
        first = bool(params.stop) and "```output" not in self.tokenizer.decode(list(prompt_ids)[-400:])
        text, reason = (CODE, "stop") if first else ("\\boxed{42}", "eos")
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if reason == "eos":
            ids.append(self.tokenizer.eos_token_id)
        return GenerationOutput(ids, [-1.0] * len(ids), reason)

    def load_weights(self, state_dict) -> None:
        pass
