"""The rollout-engine interface: token ids in; sampled token ids, their log-probabilities and a
finish reason out.

Every engine (HF ``generate``-style on CPU/GPU, vLLM on GPU) honours the same contract, which
the tool loop and the tests rely on:

* ``token_ids`` are exactly the sampled ids. When a stop string ends a segment, the ids include
  the token(s) that completed it and nothing after; nothing is decoded and re-encoded.
* ``logprobs[i]`` is ``log softmax(logits / temperature)[token_ids[i]]`` under the weights that
  sampled it, *before* top-p/top-k truncation. That is exactly what the learner recomputes, so
  with top_p=1 and top_k=0 (ToRL's settings) rollout and learner agree to float precision.
* ``temperature == 0`` is greedy decoding (evaluation; ToRL's protocol): ``token_ids[i]`` is the
  argmax of the logits (top-p/top-k and the seed play no part) and ``logprobs[i]`` is
  ``log softmax(logits)[token_ids[i]]``, the model's own (temperature 1) log-probability of
  it. vLLM reports the same for its greedy requests: its sampler replaces a temperature below
  1e-5 by 1 before computing "processed" logprobs (``vllm/v1/sample/sampler.py``).
* ``finish_reason``: ``"stop"`` (a stop string), ``"eos"`` (an end-of-sequence token, included in
  ``token_ids``), ``"length"`` (``max_new_tokens`` reached).
* ``generate`` is a coroutine: many trajectories await it concurrently and the engine batches
  them; one trajectory waiting for its tool call never holds the others back.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

__all__ = ["SamplingParams", "GenerationOutput", "RolloutEngine", "FinishReason", "MAX_SEED", "derive_seed"]

FinishReason = Literal["stop", "eos", "length"]
# Request seeds are non-negative 63-bit ints: every engine takes them (vLLM's request channel
# carries ints of at most 64 bits, and torch.Generator.manual_seed takes them; numpy any size).
MAX_SEED = 2**63 - 1


def derive_seed(*parts) -> int:
    """A stable seed in [0, MAX_SEED] from any printable parts (same on every machine and run).
    Every seed the runners and the evaluator pass to an engine is made here."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one generation request."""

    max_new_tokens: int
    temperature: float = 1.0  # 0: greedy (argmax)
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k (HF's own default of 50 is never applied)
    stop: tuple[str, ...] = ()
    # Per-request seed. Engines sample each request from its own random stream derived from it,
    # so a request's tokens do not depend on which other requests share its batch.
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**63 - 1] (derive_seed makes one), got {self.seed}")


@dataclass
class GenerationOutput:
    """One generated segment."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason

    def __post_init__(self):
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError("token_ids and logprobs must have the same length")


class RolloutEngine(abc.ABC):
    """Generates continuations of token-id prompts with the current policy weights."""

    #: False when the engine generates with the RLModule's own torch model (weight updates to
    #: the module are seen directly); True when it keeps a copy that ``load_weights`` replaces.
    holds_own_weights: bool = True
    #: Tokens (prompt + response) the engine holds, when it knows better than the model's
    #: ``max_position_embeddings`` (None: the model's; vLLM: ``max_model_len``).
    context_length: int | None = None

    @abc.abstractmethod
    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> GenerationOutput:
        """Sample one continuation of ``prompt_ids``. Concurrent calls are batched by the engine."""

    @abc.abstractmethod
    def load_weights(self, state_dict: Mapping[str, "object"]) -> None:
        """Replace the policy weights (HF parameter names, torch tensors)."""

    def generate_batch(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[GenerationOutput]:
        """Synchronous convenience: generate one continuation per prompt."""

        async def _all():
            return await asyncio.gather(*(self.generate(p, params) for p in prompts))

        return asyncio.run(_all())

    def sleep(self) -> None:
        """Release the engine's accelerator memory (weights and cache) while a colocated Learner
        updates on the same device; the next ``load_weights`` brings it back. Default: an
        engine that shares the module's weights has nothing to release."""

    def shutdown(self) -> None:
        """Release the engine's resources."""
