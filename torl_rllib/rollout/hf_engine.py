"""The embedded rollout engine: continuous batching over a Hugging Face causal LM (CPU or GPU).

One scheduler thread owns the forward passes. Each iteration it

1. admits queued requests (new prompts, and trajectories back from their tool call): one
   prefill of the admitted prompts, whose KV cache then joins the running batch's;
2. samples one token for every running sequence, each from its own seeded random stream;
3. resolves every sequence that finished (EOS, stop string, budget) at once and removes its rows
   from the batch and its cache;
4. runs one decode step for the sequences still running.

So a request never waits for the rest of its batch, and a trajectory back from the sandbox
joins at the next decode step. Why our own scheduler and not transformers' (5.24)
``generation.continuous_batching``: its manager draws every request's tokens from one shared
generator (the contract needs per-request seeded streams, so that a trajectory's tokens do not
depend on what shares its batch), stops only at EOS (no stop strings), and reports log-probs
only of its own processed distribution; a scheduler over the model's ``DynamicCache`` gives the
contract exactly with ~200 lines.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from torl_rllib.rollout.engine import GenerationOutput, RolloutEngine, SamplingParams
from torl_rllib.rollout.sampling import sample_tokens, sequence_rng
from torl_rllib.rollout.resume_cache import ParkedSequence, ResumeCache
from torl_rllib.rollout.slot_cache import SlotStore
from torl_rllib.rollout.stop_strings import StopStringDetector


def kv_cache_argument(model) -> str:
    """The forward argument (and output field) of the KV cache: ``cache`` from transformers
    5.24 on, where ``past_key_values`` is deprecated (removed in 5.40); ``past_key_values``
    before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class _Sequence:
    """One request while the engine serves it."""

    prompt_ids: list[int]
    params: SamplingParams
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    rng: np.random.Generator | None = None
    stop: StopStringDetector | None = None
    out_ids: list[int] = field(default_factory=list)
    out_logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class EngineStats:
    """Counters since the engine started (benchmarks read differences of them)."""

    busy_s: float = 0.0  # wall time with at least one sequence runnable
    generated_tokens: int = 0
    prefills: int = 0
    resumed: int = 0  # requests prefilled from the parked KV of their previous segment
    decode_steps: int = 0


class HFEngine(RolloutEngine):
    """Generates with a ``transformers`` causal LM that it shares (by reference) with its owner.

    Args:
        model: the causal LM; weight updates applied to it (e.g. by RLlib's ``set_state``)
            are seen from the next decode step.
        tokenizer: used only to detect stop strings in freshly sampled tokens.
        max_batch_size: most sequences decoded together; more wait in the queue.
    """

    holds_own_weights = False  # generates with the RLModule's model itself

    def __init__(self, model, tokenizer, max_batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.eos_ids = set(self._eos_ids(model, tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.stats = EngineStats()
        self._cache_arg = kv_cache_argument(model)
        self._logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._queue: deque[_Sequence] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # forward passes vs load_weights
        self._parked = ResumeCache(capacity=2 * max_batch_size)  # KV of segments awaiting their tool call
        self._reset_batch()

    @staticmethod
    def _eos_ids(model, tokenizer) -> list[int]:
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the model has no eos_token_id (generation_config or tokenizer)")
        return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]

    # ---- requests (any event loop, any thread) ------------------------------------------------
    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> GenerationOutput:
        if not prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        loop = asyncio.get_running_loop()
        seq = _Sequence(list(prompt_ids), params, loop.create_future(), loop)
        with self._wake:
            if self._closed:
                raise RuntimeError("the HF engine was shut down")
            self._queue.append(seq)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="hf-engine", daemon=True)
                self._thread.start()
            self._wake.notify()
        return await seq.future  # cancelling the caller cancels this future: the row is dropped

    @property
    def num_running(self) -> int:
        """Sequences being generated now (finished or cancelled ones excluded)."""
        return sum(s.finish_reason is None and not s.future.cancelled() for s in list(self._running))

    # ---- the scheduler thread -------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._running and not self._closed:
                    self._wake.wait()
                if self._closed:
                    break
                room = self.max_batch_size - len(self._running)
                admitted = [self._queue.popleft() for _ in range(min(room, len(self._queue)))]
            start = time.perf_counter()
            try:
                with self._lock, torch.no_grad():
                    self._iterate(admitted)
            except Exception as exc:  # surfaces in each affected trajectory's own await
                for seq in {id(s): s for s in self._running + admitted}.values():
                    _settle(seq, exc)
                self._reset_batch()
            self.stats.busy_s += time.perf_counter() - start
        for seq in self._running + list(self._queue):
            _settle(seq, RuntimeError("the HF engine was shut down"))

    def _reset_batch(self) -> None:
        self._store = SlotStore()  # the running sequences' KV cache, one slot (row) each
        self._slots: list[_Sequence | None] = []  # the sequence in each slot, None if free
        self._next_pos: torch.Tensor | None = None  # [slots, 1] position of each row's next token
        self._logits: torch.Tensor | None = None  # [slots, V] each row's next-token logits

    @property
    def _running(self) -> list[_Sequence]:
        return [seq for seq in self._slots if seq is not None]

    def _iterate(self, admitted: list[_Sequence]) -> None:
        was_training = self.model.training
        self.model.eval()
        try:
            if admitted:
                self._admit(admitted)
            live = [i for i, seq in enumerate(self._slots) if seq is not None]
            tokens = self._sample(live)
            self._record(live, tokens)
            if not self._running:
                self._reset_batch()
                return
            inputs = torch.full((len(self._slots),), self.pad_id, dtype=torch.long, device=tokens.device)
            inputs[torch.tensor(live, device=tokens.device)] = tokens  # free slots: a pad token
            self._decode(self._compact(inputs))
        finally:
            self.model.train(was_training)

    def _forward(self, **inputs):
        if self._logits_to_keep:
            inputs["logits_to_keep"] = 1  # only the last position's logits are ever used
        return self.model(**inputs, use_cache=True)

    def _admit(self, admitted: list[_Sequence]) -> None:
        """Prefill the admitted requests into free slots: from their parked KV when they extend a
        segment that stopped for a tool call, else from scratch."""
        stamp = self._weights_stamp()
        fresh, resumed = [], []
        for seq in admitted:
            seq.rng = None if seq.params.greedy else sequence_rng(seq.params.seed)
            seq.stop = StopStringDetector(self.tokenizer, seq.params.stop) if seq.params.stop else None
            parked = self._parked.take(seq.prompt_ids, stamp)
            if parked:
                resumed.append((seq, parked))
            else:
                fresh.append(seq)
        if fresh:
            self._prefill(fresh, [[] for _ in fresh], [s.prompt_ids for s in fresh])
        if resumed:
            self.stats.resumed += len(resumed)
            self._prefill([s for s, _ in resumed], [p for _, p in resumed],
                          [s.prompt_ids[len(p.ids):] for s, p in resumed])

    def _prefill(self, seqs: list[_Sequence], prefixes: list, suffixes: list[list[int]]) -> None:
        """One forward of ``suffixes`` (left-padded) after each row's parked prefix (left-padded
        too; ``[]`` for none); the rows then join the batch. Identical requests (a GRPO group's
        G samples start from one prompt) are computed once and copied."""
        device = next(self.model.parameters()).device
        distinct: dict[tuple, int] = {}
        row_of = [distinct.setdefault((id(p) if p else None, tuple(s)), i) for i, (p, s) in enumerate(zip(prefixes, suffixes))]
        computed = sorted(set(row_of))
        order = {row: k for k, row in enumerate(computed)}
        expand = torch.tensor([order[row] for row in row_of], device=device)
        prefixes, suffixes = [prefixes[i] for i in computed], [suffixes[i] for i in computed]
        n, width = len(computed), max(map(len, suffixes))
        prefix_width = max((p.mask.shape[0] for p in prefixes if p), default=0)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long, device=device)
        masks = torch.zeros((n, prefix_width + width), dtype=torch.long, device=device)
        positions = torch.zeros((n, width), dtype=torch.long, device=device)
        for i, (prefix, suffix) in enumerate(zip(prefixes, suffixes)):
            done = int(prefix.mask.sum()) if prefix else 0  # tokens already in the prefix
            ids[i, width - len(suffix):] = torch.tensor(suffix, device=device)
            masks[i, prefix_width + width - len(suffix):] = 1
            positions[i, width - len(suffix):] = torch.arange(done, done + len(suffix), device=device)
            if prefix:
                masks[i, prefix_width - prefix.mask.shape[0]:prefix_width] = prefix.mask
        inputs = {}
        if prefix_width:
            inputs[self._cache_arg] = DynamicCache(ddp_cache_data=[
                (_left_padded([p.kv[layer][0] if p else None for p in prefixes], prefix_width),
                 _left_padded([p.kv[layer][1] if p else None for p in prefixes], prefix_width))
                for layer in range(len(next(p for p in prefixes if p).kv))])
        out = self._forward(input_ids=ids, attention_mask=masks, position_ids=positions, **inputs)
        self.stats.prefills += 1
        layers = [(keys[expand], values[expand]) for keys, values in _kv_layers(getattr(out, self._cache_arg))]
        masks, positions, logits = masks[expand], positions[expand], out.logits[expand, -1].float()
        slots = self._store.admit(layers, masks)
        rows = self._store.slots
        if self._logits is None or self._logits.shape[0] < rows:  # the store added slots
            missing = rows - (0 if self._logits is None else self._logits.shape[0])
            self._logits = _append_rows(self._logits, logits.new_zeros((missing, logits.shape[-1])))
            self._next_pos = _append_rows(self._next_pos, positions.new_zeros((missing, 1)))
            self._slots += [None] * missing
        index = torch.tensor(slots, device=device)
        self._logits[index] = logits
        self._next_pos[index] = positions[:, -1:] + 1
        for slot, seq in zip(slots, seqs):
            self._slots[slot] = seq

    def _weights_stamp(self) -> int:
        """Changes whenever a parameter is modified in place or replaced (parked KV is then stale)."""
        return hash(tuple((id(p), p._version) for p in self.model.parameters()))

    def _sample(self, live: list[int]) -> torch.Tensor:
        """One token per live row: argmax for greedy rows, else from the row's own stream."""
        rows = [self._slots[i] for i in live]
        logits = self._logits[torch.tensor(live, device=self._logits.device)]
        temperature = torch.tensor([s.params.temperature or 1.0 for s in rows], device=logits.device)
        self._logprobs = torch.log_softmax(logits / temperature.unsqueeze(-1), dim=-1)
        tokens = self._logprobs.argmax(dim=-1)
        by_truncation: dict[tuple, list[int]] = {}
        for i, seq in enumerate(rows):
            if not seq.params.greedy:
                by_truncation.setdefault((seq.params.top_p, seq.params.top_k), []).append(i)
        for (top_p, top_k), idx in by_truncation.items():
            uniforms = torch.tensor([rows[i].rng.random() for i in idx], device=tokens.device)
            index = torch.tensor(idx, device=tokens.device)
            tokens[index] = sample_tokens(self._logprobs[index], uniforms, top_p, top_k)
        return tokens

    def _record(self, live: list[int], tokens: torch.Tensor) -> None:
        """Append each live row's token; resolve the finished ones now and free their slots
        (parking the KV of those that stopped for a tool call)."""
        token_lp = self._logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).tolist()
        for slot, token, lp in zip(live, tokens.tolist(), token_lp):
            seq = self._slots[slot]
            if not seq.future.cancelled():  # a cancelled trajectory's row is just dropped
                seq.out_ids.append(token)
                seq.out_logprobs.append(lp)
                if token in self.eos_ids:
                    seq.finish_reason = "eos"
                elif seq.stop is not None and seq.stop.push(token):
                    seq.finish_reason = "stop"
                elif len(seq.out_ids) >= seq.params.max_new_tokens:
                    seq.finish_reason = "length"
                if not seq.finish_reason:
                    continue
                _settle(seq, GenerationOutput(seq.out_ids, seq.out_logprobs, seq.finish_reason))
                if seq.finish_reason == "stop":  # it will be back after its tool call
                    kv, mask = self._store.row(slot)
                    self._parked.park(ParkedSequence(seq.prompt_ids + seq.out_ids[:-1], kv, mask), self._weights_stamp())
            self._slots[slot] = None
            self._store.release(slot)
        self.stats.generated_tokens += len(live)

    def _compact(self, inputs: torch.Tensor) -> torch.Tensor:
        """Drop the free slots when at most half are live; returns ``inputs`` in the new slot order."""
        kept = self._store.compact()
        if kept is None:
            return inputs
        index = torch.tensor(kept, device=inputs.device)
        self._slots = [self._slots[i] for i in kept]
        self._logits, self._next_pos = self._logits[index], self._next_pos[index]
        return inputs[index]

    def _decode(self, inputs: torch.Tensor) -> None:
        """One forward step for every slot (a free one computes a masked pad token)."""
        out = self._forward(
            input_ids=inputs.unsqueeze(-1),
            attention_mask=self._store.attention_mask(), position_ids=self._next_pos,
            **{self._cache_arg: self._store.cache},
        )
        self._store.advance()
        self.stats.decode_steps += 1
        self._logits = out.logits[:, -1].float()
        self._next_pos = self._next_pos + 1

    # ---- weights and lifetime -------------------------------------------------------------------
    def load_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        with self._lock:
            self.model.load_state_dict(dict(state_dict), strict=True)

    def shutdown(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _settle(seq: _Sequence, outcome) -> None:
    """Resolve a request's future on its own event loop (from the scheduler thread)."""

    def settle():
        if seq.future.done():
            return
        if isinstance(outcome, BaseException):
            seq.future.set_exception(outcome)
        else:
            seq.future.set_result(outcome)

    try:
        seq.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass


def _append_rows(tensor: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    return rows if tensor is None else torch.cat([tensor, rows])


def _left_padded(rows: list[torch.Tensor | None], width: int) -> torch.Tensor:
    """``[heads, columns, dim]`` rows (None: nothing) → ``[n, heads, width, dim]``, right-aligned."""
    like = next(r for r in rows if r is not None)
    out = like.new_zeros((len(rows), like.shape[0], width, like.shape[2]))
    for i, row in enumerate(rows):
        if row is not None:
            out[i, :, width - row.shape[1]:] = row
    return out


def _kv_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values) of a prefill's cache; only full-attention layers can be slotted."""
    layers = getattr(cache, "layers", None)
    if layers is None or any(type(layer) is not DynamicLayer for layer in layers):
        raise NotImplementedError(
            "HFEngine's continuous batching needs a full-attention DynamicCache (one DynamicLayer per "
            f"layer); this model's cache is {type(cache).__name__} with "
            f"{sorted({type(layer).__name__ for layer in (layers or [])})}. Use rollout.engine=vllm for it."
        )
    return [(layer.keys, layer.values) for layer in layers]
