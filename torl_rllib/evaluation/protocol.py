"""How each problem is answered in an evaluation: greedy (ToRL's protocol) or k samples."""

from __future__ import annotations

from dataclasses import dataclass

from torl_rllib.rollout.engine import SamplingParams

__all__ = ["EvalProtocol"]


@dataclass(frozen=True)
class EvalProtocol:
    """``temperature == 0``: greedy, one response per problem (ToRL's Table 3). Otherwise ``k``
    responses per problem at ``temperature``, reported as avg@k, pass@k and maj@k. ``seed``
    fixes each sample's random stream (per problem and sample index, so the result does not
    depend on how problems are sharded over EnvRunners)."""

    k: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.greedy and self.k > 1:
            raise ValueError(f"greedy decoding (temperature 0) gives {self.k} identical responses: "
                             "set temperature > 0 for k > 1, or k: 1")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def name(self) -> str:
        return "greedy" if self.greedy else f"k={self.k}, T={self.temperature:g}"

    def sampling(self, max_new_tokens: int) -> SamplingParams:
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=self.temperature,
                              top_p=self.top_p, top_k=self.top_k)

    def pass_ks(self) -> list[int]:
        """The k' of the reported pass@k': 1, 2, 4, ... below k, and k itself."""
        ks, k = [], 1
        while k < self.k:
            ks.append(k)
            k *= 2
        return ks + [self.k]
