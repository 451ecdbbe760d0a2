"""The vLLM rollout engine (GPU): continuous batching through vLLM's ``AsyncLLM``.

Written against vLLM 0.33.0's public API; the comments name the module each choice relies on.

* Token in, token out: prompts go in as ``TokensPrompt`` ids, nothing is re-tokenized.
* Every ``generate`` call is its own vLLM request, added to the running engine as soon as it
  arrives (continuous batching: no batch barrier, a trajectory waiting for its tool call holds
  nobody back).
* ``AsyncLLM`` binds its background tasks and ZMQ sockets to the event loop that first uses it
  (``vllm/v1/engine/async_llm.py: AsyncLLM._run_output_handler``,
  ``vllm/v1/engine/core_client.py: AsyncMPClient._ensure_output_queue_task``), while our callers
  run a fresh ``asyncio.run`` per rollout. So the engine owns one event loop in a daemon thread,
  creates ``AsyncLLM`` there, and every call from any caller loop is forwarded to it.
* The mapping between our types and vLLM's is pure module-level functions
  (:func:`engine_kwargs`, :func:`sampling_kwargs`, :func:`to_generation_output`), unit-tested
  on CPU without vLLM.

Batch invariance: each seeded request samples from its own ``torch.Generator``
(``vllm/v1/sample/ops/topk_topp_sampler.py: random_sample``), so its random draws do not depend
on the batch; its logits can still differ in the last bits with batch composition unless vLLM
runs with ``VLLM_BATCH_INVARIANT=1``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import uuid
from typing import Any, Mapping, Sequence

from torl_rllib.rollout.engine import FinishReason, GenerationOutput, RolloutEngine, SamplingParams

logger = logging.getLogger(__name__)

__all__ = ["VLLMEngine", "cpu_engine_kwargs", "engine_kwargs", "sampling_kwargs", "to_generation_output"]

# ``vllm/config/model.py: ModelConfig.logprobs_mode``. "raw_logprobs" (vLLM's default) is
# log_softmax(logits) *before* temperature; "processed_logprobs" is log_softmax of the logits
# the sampler draws from: after temperature, after top-k/top-p masking
# (``vllm/v1/sample/sampler.py: Sampler.sample``; ``topk_topp_sampler.py: forward_native``).
# Our contract wants log_softmax(logits / T) before truncation: "processed_logprobs" is exactly
# that when top-k/top-p are off (the masking is then a no-op, ``apply_top_k_top_p`` returns the
# logits unchanged), which :func:`sampling_kwargs` enforces. (The processed modes also keep vLLM
# off FlashInfer's sampler, which cannot return them: ``TopKTopPSampler.__init__``.)
LOGPROBS_MODE = "processed_logprobs"
# Engine options the contract depends on: the logprobs above, and a tokenizer in the engine,
# without which vLLM's detokenizer is a no-op and stop strings silently never match
# (``vllm/v1/engine/detokenizer.py: IncrementalDetokenizer.from_new_request``).
_FIXED_ENGINE_KWARGS = {"logprobs_mode": LOGPROBS_MODE, "skip_tokenizer_init": False}
# vLLM clamps temperatures below 0.01 up to 0.01 with only a warning (and treats < 1e-5 as
# greedy) and rejects those above 2 (``vllm/sampling_params.py: SamplingParams.__post_init__``,
# ``_verify_args``); a clamped temperature would silently break the logprob contract.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 2.0
# How ``load_weights`` moves weights into the engine: "ipc" copies them to this process's GPU and
# hands vLLM's workers CUDA IPC handles (vLLM's own weight-transfer path, packed in bounded
# chunks: no file, no second host copy); "file" stages a safetensors file that every worker
# reloads (any device, the fallback).
WEIGHT_SYNCS = ("ipc", "file")
# vLLM's CPU build sizes its KV cache, unless told (``kv_cache_memory_bytes`` or
# ``VLLM_CPU_KVCACHE_SPACE`` GiB), as ``gpu_memory_utilization`` (0.9) of the machine's RAM minus
# what it holds (``vllm/v1/worker/cpu_worker.py: determine_available_memory``): most of the memory
# the Learners and the sandbox need. 1 GiB holds ~250k tokens of the tiny model.
CPU_KV_CACHE_BYTES = 1 << 30


def cpu_engine_kwargs(vllm_kwargs: Mapping[str, Any], model_path: str) -> dict[str, Any]:
    """The caller's options plus what vLLM's CPU build needs to honour the contract.

    * No chunked prefill. When a prefill is split over engine steps, the sampler's draw for the
      unfinished chunk is discarded and the request's generator rewound with
      ``Generator.set_offset`` (``vllm/v1/worker/gpu_model_runner.py``, the
      ``discard_request_mask`` loop), which CPU generators refuse ("CPU Generator does not use
      offset"): the engine core dies at the first split prefill of a seeded request. Whole
      prefills need ``max_num_batched_tokens >= max_model_len``.
    * A bounded KV cache (:data:`CPU_KV_CACHE_BYTES`) unless one is given.
    """
    kwargs = dict(vllm_kwargs)
    kwargs.setdefault("enable_chunked_prefill", False)
    if not kwargs["enable_chunked_prefill"]:
        context = kwargs.get("max_model_len")
        if not context:
            from transformers import AutoConfig

            context = AutoConfig.from_pretrained(model_path).max_position_embeddings
        kwargs["max_num_batched_tokens"] = max(kwargs.get("max_num_batched_tokens") or 0, context, 2048)
    if "kv_cache_memory_bytes" not in kwargs and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    return kwargs


def engine_kwargs(model_path: str, vllm_kwargs: Mapping[str, Any], *, sleep_mode: bool = False,
                  weight_sync: str = "file") -> dict[str, Any]:
    """``vllm.AsyncEngineArgs`` keyword arguments: the caller's plus what the contract needs,
    sleep mode (``vllm/config/model.py: enable_sleep_mode``) and, for ``weight_sync="ipc"``,
    vLLM's CUDA-IPC weight transfer (``vllm/config/weight_transfer.py``)."""
    for key, value in _FIXED_ENGINE_KWARGS.items():
        if key in vllm_kwargs and vllm_kwargs[key] != value:
            raise ValueError(f"VLLMEngine requires {key}={value!r}, got {vllm_kwargs[key]!r}")
    if weight_sync not in WEIGHT_SYNCS:
        raise ValueError(f"weight_sync must be one of {list(WEIGHT_SYNCS)}, got {weight_sync!r}")
    kwargs = {"model": model_path, **vllm_kwargs, **_FIXED_ENGINE_KWARGS}
    if sleep_mode:
        kwargs["enable_sleep_mode"] = True
    if weight_sync == "ipc":
        kwargs["weight_transfer_config"] = {"backend": "ipc"}
    return kwargs


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """``vllm.SamplingParams`` keyword arguments for one of our requests."""
    if params.top_p < 1.0 or params.top_k:
        # With truncation on, "processed_logprobs" are renormalized over the kept tokens and no
        # vLLM logprobs mode returns the pre-truncation value the contract (and the learner) uses.
        raise ValueError(
            "VLLMEngine supports top_p=1 and top_k=0 only (got top_p="
            f"{params.top_p}, top_k={params.top_k}): vLLM cannot return the pre-truncation "
            "log-probabilities the learner recomputes; use the HF engine for top-p/top-k"
        )
    if not (params.greedy or MIN_TEMPERATURE <= params.temperature <= MAX_TEMPERATURE):
        raise ValueError(
            f"vLLM decodes greedily (temperature 0) or samples at temperatures in "
            f"[{MIN_TEMPERATURE}, {MAX_TEMPERATURE}] only, got {params.temperature}"
        )
    return {
        "n": 1,
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "top_p": 1.0,
        "top_k": 0,  # vLLM 0.33: 0 disables top-k (-1 is still accepted, 0 preferred)
        "seed": params.seed,  # None: vLLM's global stream; an int: a per-request generator
        "stop": list(params.stop),
        # Stop strings are checked on the detokenized text, and the token that completes one is
        # kept in ``token_ids`` either way: the detokenizer only drops tokens sampled *after*
        # it (``detokenizer.py: BaseIncrementalDetokenizer.update`` keeps
        # ``bisect_left(token_offsets, stop_end)`` new tokens;
        # ``output_processor.py: OutputProcessor._trim_surplus_tokens`` trims logprobs alike).
        # Including the stop string also keeps ``text`` equal to the decoded ``token_ids``.
        "include_stop_str_in_output": True,
        # Match stop strings on the text of *all* sampled tokens, special ones rendered, as the
        # HF engine does (vLLM's default skips them, so "a<unk>b" would match the stop "ab").
        "skip_special_tokens": False,
        "logprobs": 0,  # the sampled token's logprob only (vLLM always adds it to the top-0)
    }


def to_generation_output(completion: Any) -> GenerationOutput:
    """A finished vLLM ``CompletionOutput`` (``vllm/outputs.py``) as a :class:`GenerationOutput`.

    ``completion.logprobs`` holds one ``{token_id: Logprob}`` per generated token (a list of
    dicts, or ``vllm.logprobs.FlatLogprobs``, which indexes the same way), containing at least
    the sampled token.
    """
    token_ids = [int(t) for t in completion.token_ids]
    if completion.logprobs is None or len(completion.logprobs) != len(token_ids):
        raise RuntimeError("vLLM returned no per-token logprobs for every generated token")
    logprobs = [float(position[t].logprob) for position, t in zip(completion.logprobs, token_ids)]
    return GenerationOutput(token_ids, logprobs, _finish_reason(completion))


def _finish_reason(completion: Any) -> FinishReason:
    """vLLM's (finish_reason, stop_reason) as ours (``vllm/v1/core/sched/utils.py: check_stop``)."""
    reason, stop_reason = completion.finish_reason, completion.stop_reason
    if reason == "length":  # max_tokens reached, or max_model_len
        return "length"
    if reason == "stop":
        if isinstance(stop_reason, str):  # one of our stop strings
            return "stop"
        # None: the tokenizer's EOS token. An int: a token of ``stop_token_ids``, which we never
        # set, so one of the generation config's extra ``eos_token_id`` values
        # (``SamplingParams.update_from_generation_config``). The token is in ``token_ids``.
        return "eos"
    raise RuntimeError(f"vLLM ended the request with finish_reason={reason!r} ({stop_reason!r})")


class VLLMEngine(RolloutEngine):
    """Generates with a vLLM ``AsyncLLM`` holding its own copy of the policy weights.

    Args:
        model_path: a local Hugging Face model directory (weights, config and tokenizer).
        weights_dir: where the "file" weight sync stages the new weights for vLLM to read
            (default: ``/dev/shm`` when writable, else the system temp directory).
        sleep_mode: create the engine with vLLM's sleep mode, so ``sleep()`` frees its GPU
            memory while a colocated Learner updates.
        weight_sync: "ipc" (default on CUDA: GPU memory, vLLM's ``ipc`` weight transfer) or
            "file" (a safetensors file; also the fallback if IPC fails).
        **vllm_kwargs: any ``vllm.AsyncEngineArgs`` option, e.g. ``gpu_memory_utilization``,
            ``tensor_parallel_size``, ``dtype``, ``max_model_len``, ``enable_prefix_caching``.
    """

    holds_own_weights = True

    def __init__(self, model_path: str, *, weights_dir: str | None = None, sleep_mode: bool = False,
                 weight_sync: str | None = None, **vllm_kwargs):
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ModuleNotFoundError as exc:
            if exc.name != "vllm":
                raise
            raise ImportError(
                "VLLMEngine needs vLLM: pip install 'torl-rllib[vllm]' on a GPU machine, or "
                "bash scripts/setup.sh (vLLM's CPU build) on a CPU one"
            ) from exc
        import torch

        self.weight_sync = weight_sync or ("ipc" if torch.cuda.is_available() else "file")
        if self.weight_sync == "ipc":
            # CUDA IPC handles hold torch types that vLLM's msgpack channel to its engine-core
            # process carries only as pickles (``vllm/v1/serial_utils.py: MsgpackEncoder.enc_hook``).
            # The channel is this process's own local socket to the engine it spawns.
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        self._asleep = False
        if not torch.cuda.is_available():
            vllm_kwargs = cpu_engine_kwargs(vllm_kwargs, model_path)
        args = AsyncEngineArgs(**engine_kwargs(model_path, vllm_kwargs, sleep_mode=sleep_mode,
                                               weight_sync=self.weight_sync))
        self._weights_dir = weights_dir or (
            "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="vllm-engine", daemon=True
        )
        self._thread.start()

        async def start():  # created inside the engine loop, so its tasks live there
            return AsyncLLM.from_engine_args(args)

        try:
            self._llm = self._run(start())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro):
        """Run ``coro`` on the engine loop and wait for its result (from a non-engine thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> GenerationOutput:
        if not prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        request = self._request(list(prompt_ids), sampling_kwargs(params))
        # Cancelling the caller's await cancels the request's task on the engine loop, where
        # AsyncLLM.generate catches the CancelledError and aborts the request.
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(request, self._loop))

    async def _request(self, prompt_ids: list[int], kwargs: dict[str, Any]) -> GenerationOutput:
        from vllm import SamplingParams as VLLMSamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sampling = VLLMSamplingParams(**kwargs, output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for final in self._llm.generate(
            TokensPrompt(prompt_token_ids=prompt_ids), sampling, request_id=uuid.uuid4().hex
        ):
            pass  # FINAL_ONLY: one output, when the request finishes
        return to_generation_output(final.outputs[0])

    def sleep(self) -> None:
        """Level 2 sleep (``AsyncLLM.sleep``): weights and KV cache released, nothing kept on the
        host, since the next ``load_weights`` replaces the weights anyway."""
        self._run(self._llm.sleep(level=2))
        self._asleep = True

    def load_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Push HF-named tensors into the running engine (waking it first if it sleeps: the
        weights' memory, the new weights, then the KV cache)."""
        if self._asleep:
            self._run(self._llm.wake_up(tags=["weights"]))
        if self.weight_sync == "ipc":
            try:
                self._load_weights_ipc(state_dict)
            except Exception as exc:  # noqa: BLE001 - any IPC failure: the file path always works
                logger.warning("CUDA IPC weight sync failed (%s); using the file path from now on", exc)
                self.weight_sync = "file"
        if self.weight_sync == "file":
            self._load_weights_file(state_dict)
        if self._asleep:
            self._run(self._llm.wake_up(tags=None))
            self._asleep = False

    def _load_weights_ipc(self, state_dict: Mapping[str, Any]) -> None:
        """vLLM's trainer-side IPC engine (``vllm/distributed/weight_transfer/ipc_engine.py:
        IPCTrainerWeightTransferEngine``), with this process as the trainer: it copies the
        tensors to this GPU in packed chunks and the workers load each chunk through CUDA IPC
        (``IPCWeightTransferEngine.receive_weights`` → ``model.load_weights``)."""
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCTrainerWeightTransferEngine

        sender = IPCTrainerWeightTransferEngine.trainer_init(
            IPCTrainerInitInfo(rank=0, packed=True), client=_InProcessSyncClient(self),
            source=_state_dict_source(state_dict, self._llm.model_config.dtype))
        sender.send_weights()
        self._run(self._llm.reset_prefix_cache(reset_running_requests=True))

    def _load_weights_file(self, state_dict: Mapping[str, Any]) -> None:
        """The tensors are staged as one safetensors file (cast to the engine's dtype) and every
        worker reloads from it with its own ``reload_weights`` (``vllm/v1/worker/gpu_worker.py``
        → ``model_executor/model_loader/reload/inplace.py``: ``model.load_weights`` over the
        checkpoint-format names, sharding for tensor parallelism, then post-processing), called
        through ``AsyncLLM.collective_rpc``. The file hop is needed because collective_rpc
        arguments cross to the engine-core process as msgpack (``vllm/v1/serial_utils.py``),
        which does not rebuild tensors in untyped arguments. Requests in flight are preempted
        and recomputed, and the prefix cache is dropped, so no KV computed by the old weights
        is reused (``AsyncLLM.reset_prefix_cache(reset_running_requests=True)``). Workers must
        share this machine's file system (single node), and the engine must have been loaded
        with a reloadable ``load_format`` (the default is; ``dummy`` is not).
        """
        from safetensors.torch import save_file

        dtype = self._llm.model_config.dtype
        # copy=True also unties shared tensors (tied embeddings), which safetensors refuses.
        tensors = {
            name: t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype, copy=True)
            .contiguous()
            for name, t in state_dict.items()
        }
        staging = tempfile.TemporaryDirectory(prefix="torl-vllm-weights-", dir=self._weights_dir)
        with staging as path:
            save_file(tensors, os.path.join(path, "model.safetensors"))
            del tensors
            self._run(self._reload(path))

    async def _reload(self, path: str) -> None:
        await self._llm.collective_rpc(
            "reload_weights", kwargs={"weights_path": path, "is_checkpoint_format": True}
        )
        await self._llm.reset_prefix_cache(reset_running_requests=True)

    def shutdown(self) -> None:
        """Stop the engine core and its workers (their processes end here, not at exit)."""
        if self._thread.is_alive():

            async def close():
                self._llm.shutdown()
                await asyncio.sleep(0)  # let its cancelled output handler finish

            try:
                self._run(close())
            finally:
                self._stop_loop()
                # Dropped now: AsyncLLM.__del__ shuts down again, which at interpreter exit
                # fails on half-torn-down modules ("'NoneType' object is not callable").
                self._llm = None

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class _InProcessSyncClient:
    """vLLM's ``VLLMWeightSyncClient`` protocol (``weight_transfer/base.py``) for an engine in
    this process: each call runs the ``AsyncLLM`` method on the engine's loop."""

    def __init__(self, engine: VLLMEngine):
        self._engine = engine

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferInitRequest

        self._engine._run(self._engine._llm.init_weight_transfer_engine(WeightTransferInitRequest(init_info=init_info)))

    def start_weight_update(self) -> None:
        self._engine._run(self._engine._llm.start_weight_update())

    def update_weights(self, update_info) -> None:
        from vllm.distributed.weight_transfer.base import WeightTransferUpdateRequest

        self._engine._run(self._engine._llm.update_weights(WeightTransferUpdateRequest(update_info=update_info)))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._engine._run(self._engine._llm.finish_weight_update(weight_version))


def _state_dict_source(state_dict: Mapping[str, Any], dtype):
    """A vLLM ``WeightSource`` over host tensors: each is copied to this GPU (in the engine's
    dtype) only when the sender packs it."""
    from functools import cached_property

    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    def wire(t):
        return dtype if t.is_floating_point() else t.dtype

    class StateDictSource(WeightSource):
        @cached_property
        def metadata(self):
            return [ParamMeta(name, wire(t), tuple(t.shape)) for name, t in state_dict.items()]

        def iter_full(self):
            for name, t in state_dict.items():
                yield name, t.detach().to("cuda", wire(t)).contiguous()

    return StateDictSource()
