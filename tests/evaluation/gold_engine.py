"""Test doubles of the *model* for evaluation tests: engines that know each benchmark problem's
gold answer. Everything else (tool loop, sandbox, grader, EnvRunners) is real.

``GoldEngine`` first writes a python block that prints the gold answer (the real sandbox runs it
and the tool loop appends its output), then answers ``\\boxed{<gold>}``; with no tool call
allowed it answers at once. ``WrongEngine`` answers a number no benchmark has. Problems are
recognised by their prompt's token ids, built from the files listed (JSON) in ``$GOLD_ENGINE_FILES``.
"""

from __future__ import annotations

import json
import os

from torl_rllib.rollout.engine import GenerationOutput, RolloutEngine
from torl_rllib.tasks import load_dataset, render_prompt

WRONG = "-98765.4321"


class GoldEngine(RolloutEngine):
    """Answers each known problem with its gold (after printing it from python)."""

    context_length = 10**6  # a lookup table, not the tiny model: the benchmarks' prompts all fit

    def __init__(self, *, config, module, tokenizer):
        self.tokenizer = tokenizer
        self.gold: dict[tuple, str] = {}
        for path in json.loads(os.environ["GOLD_ENGINE_FILES"]):
            for problem in load_dataset(path):
                text = render_prompt(config.prompt_template, problem.problem, tokenizer)
                self.gold[tuple(tokenizer.encode(text, add_special_tokens=False))] = problem.answer
        self.lengths = sorted({len(key) for key in self.gold})

    def answer(self, gold: str) -> str:
        return gold

    async def generate(self, prompt_ids, params):
        ids = list(prompt_ids)
        length = next(n for n in self.lengths if tuple(ids[:n]) in self.gold)
        gold = self.gold[tuple(ids[:length])]
        if len(ids) == length and params.stop:  # a tool call is allowed: print the answer first
            text, reason = f"```python\nprint({gold!r})\n```\n```output", "stop"
        else:
            text, reason = f"The answer is \\boxed{{{self.answer(gold)}}}.", "eos"
        out = self.tokenizer.encode(text, add_special_tokens=False)
        if reason == "eos":
            out.append(self.tokenizer.eos_token_id)
        return GenerationOutput(out, [0.0] * len(out), reason)

    def load_weights(self, state_dict) -> None:
        pass


class WrongEngine(GoldEngine):
    """Answers a number that is no benchmark's answer."""

    def answer(self, gold: str) -> str:
        return WRONG
