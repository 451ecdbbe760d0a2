"""The embedded rollout engine: batched Hugging Face generation with a KV cache (CPU or GPU).

Requests from concurrently running trajectories are queued and served in batches by one
background task; the forward passes run in a worker thread so the event loop keeps serving
tool results meanwhile. A trajectory that comes back from its tool call joins the next
batch instead of waiting for the whole rollout round.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from torl_rllib.rollout.engine import GenerationOutput, RolloutEngine, SamplingParams
from torl_rllib.rollout.sampling import sample_tokens, sequence_rng


def kv_cache_argument(model) -> str:
    """The forward argument (and output field) of the KV cache: ``cache`` from transformers
    5.24 on, where ``past_key_values`` is deprecated (removed in 5.40); ``past_key_values``
    before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: asyncio.Future
    out_ids: list[int] = field(default_factory=list)
    out_logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None


class HFEngine(RolloutEngine):
    """Generates with a ``transformers`` causal LM that it shares (by reference) with its owner.

    Args:
        model: the causal LM; weight updates applied to it (e.g. by RLlib's ``set_state``)
            are seen by the next batch.
        tokenizer: used only to detect stop strings in freshly sampled tokens.
        max_batch_size: most sequences in one forward batch.
    """

    holds_own_weights = False  # generates with the RLModule's model itself

    def __init__(self, model, tokenizer, max_batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.eos_ids = self._eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self._pending: list[_Request] = []
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-engine")
        self._lock = threading.Lock()
        self._cache_arg = kv_cache_argument(model)

    @staticmethod
    def _eos_ids(model, tokenizer) -> list[int]:
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the model has no eos_token_id (generation_config or tokenizer)")
        return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> GenerationOutput:
        if not prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        request = _Request(list(prompt_ids), params, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve())
        return await request.future

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await asyncio.sleep(0)  # let every runnable trajectory enqueue its request first
            batch = self._take_batch()
            try:
                await loop.run_in_executor(self._executor, self._generate_batch, batch)
            except Exception as exc:  # surfaces in each trajectory's own await
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            for r in batch:
                if not r.future.done():
                    r.future.set_result(GenerationOutput(r.out_ids, r.out_logprobs, r.finish_reason))

    def _take_batch(self) -> list[_Request]:
        """Up to ``max_batch_size`` queued requests sharing temperature/top-p/top-k."""
        key = lambda r: (r.params.temperature, r.params.top_p, r.params.top_k)  # noqa: E731
        first = key(self._pending[0])
        batch = [r for r in self._pending if key(r) == first][: self.max_batch_size]
        taken = set(map(id, batch))
        self._pending = [r for r in self._pending if id(r) not in taken]
        return batch

    def _stop_hit(self, request: _Request) -> bool:
        stops = request.params.stop
        if not stops:
            return False
        window = max(len(s) for s in stops) + 1  # every token carries >= 1 character
        tail = self.tokenizer.decode(request.out_ids[-window:], skip_special_tokens=False)
        return any(s in tail for s in stops)

    @torch.no_grad()
    def _generate_batch(self, batch: list[_Request]) -> None:
        with self._lock:
            self._generate_locked(batch)

    def _generate_locked(self, batch: list[_Request]) -> None:
        device = next(self.model.parameters()).device
        params = batch[0].params
        rngs = [sequence_rng(r.params.seed) for r in batch]
        budgets = [r.params.max_new_tokens for r in batch]
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, r in enumerate(batch):  # left padding
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            attn[i, width - len(r.prompt_ids):] = 1
        ids, attn = ids.to(device), attn.to(device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True)
            active = list(range(len(batch)))
            next_pos = positions[:, -1:] + 1
            for _ in range(max(budgets)):
                logprobs = torch.log_softmax(out.logits[:, -1].float() / (params.temperature or 1.0), dim=-1)
                if params.greedy:
                    tokens = logprobs.argmax(dim=-1)
                else:
                    uniforms = torch.tensor([rng.random() for rng in rngs], device=device)
                    tokens = sample_tokens(logprobs, uniforms, params.top_p, params.top_k)
                token_lp = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
                token_list = tokens.tolist()
                for i in list(active):
                    r = batch[i]
                    r.out_ids.append(token_list[i])
                    r.out_logprobs.append(token_lp[i])
                    if token_list[i] in self.eos_ids:
                        r.finish_reason = "eos"
                    elif self._stop_hit(r):
                        r.finish_reason = "stop"
                    elif len(r.out_ids) >= budgets[i]:
                        r.finish_reason = "length"
                    if r.finish_reason:
                        active.remove(i)
                if not active:
                    break
                attn = torch.cat([attn, attn.new_ones((len(batch), 1))], dim=-1)
                out = self.model(
                    input_ids=tokens.unsqueeze(-1), attention_mask=attn, position_ids=next_pos,
                    **{self._cache_arg: getattr(out, self._cache_arg)}, use_cache=True,
                )
                next_pos = next_pos + 1
        finally:
            self.model.train(was_training)

    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        with self._lock:
            self.model.load_state_dict(dict(state_dict), strict=True)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
