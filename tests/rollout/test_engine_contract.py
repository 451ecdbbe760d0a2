"""The rollout-engine contract (``torl_rllib/rollout/engine.py``), checked on every engine.

The contract suite runs on the HF engine and on the real vLLM engine (vLLM's CPU build, which
``scripts/setup.sh`` installs on machines without a GPU; vLLM itself on GPUs), both with the same
tiny random Qwen2 model. Only sleep mode and the CUDA-IPC weight transfer need a GPU. The vLLM
mapping functions and the engine's event-loop plumbing are also unit-tested against stand-ins
shaped like vLLM 0.33.0's objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
import sys
import threading
import types

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from torl_rllib.rollout.engine import MAX_SEED, GenerationOutput, SamplingParams, derive_seed
from torl_rllib.rollout.hf_engine import HFEngine
from torl_rllib.rollout import vllm_engine
from torl_rllib.rollout.vllm_engine import (
    VLLMEngine,
    cpu_engine_kwargs,
    engine_kwargs,
    sampling_kwargs,
    to_generation_output,
)
from tools.tiny.tokenizer import build_tokenizer

PROMPTS = ["12+7=", "The answer is ", "x", "```python\nprint(3 * 4)\n```\n```output\n12\n```\n"]
# Per-engine tolerance on logprobs recomputed by a full fp32 forward: the HF engine runs that same
# model; vLLM runs its own kernels (in fp32 here).
LOGPROB_TOL = {"hf": 1e-4, "vllm": 2e-3}


def run(engine, requests: list[tuple[list[int], SamplingParams]]) -> list[GenerationOutput]:
    """All requests at once, as concurrent trajectories would issue them."""

    async def gather():
        return await asyncio.gather(*(engine.generate(p, s) for p, s in requests))

    return asyncio.run(gather())


def recomputed_logprobs(model, prompt: list[int], out: GenerationOutput, temperature: float):
    """log softmax(logits / T) of the sampled tokens, from one full forward pass."""
    ids = torch.tensor([prompt + out.token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    return logprobs.gather(-1, torch.tensor(out.token_ids).unsqueeze(-1)).squeeze(-1).tolist()


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    """A tiny random Qwen2 (hidden 32, 2 layers) saved with its tokenizer, as vLLM loads models."""
    eos = tokenizer.eos_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=256,
        tie_word_embeddings=True,
        initializer_range=0.2,  # next-token distributions far from uniform
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-qwen2")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def load_model(model_dir: str) -> Qwen2ForCausalLM:
    return Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def reference(model_dir):
    """The model on CPU in fp32, to recompute logprobs."""
    return load_model(model_dir)


def _vllm_skip_reason(cuda: bool = False) -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (bash scripts/setup.sh installs vLLM's CPU build)"
    if cuda and not torch.cuda.is_available():
        return "vLLM's sleep mode and CUDA-IPC weight transfer need a CUDA GPU"
    return None


@pytest.fixture(scope="module", params=["hf", "vllm"])
def engine(request, model_dir, tokenizer):
    if request.param == "hf":
        built = HFEngine(load_model(model_dir), tokenizer, max_batch_size=8)
    else:
        if reason := _vllm_skip_reason():
            pytest.skip(reason)
        built = VLLMEngine(
            model_dir, dtype="float32", gpu_memory_utilization=0.2, max_model_len=256,
            enforce_eager=True, enable_prefix_caching=True,
        )
    built.name = request.param
    yield built
    built.shutdown()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer.encode(text) for text in PROMPTS]


# ---- the contract ---------------------------------------------------------------------------


def test_lengths_logprobs_and_finish_reasons(engine, prompts, tokenizer):
    params = SamplingParams(max_new_tokens=40)
    requests = [(p, dataclasses.replace(params, seed=seed)) for seed in range(4) for p in prompts]
    outputs = run(engine, requests)
    eos = tokenizer.eos_token_id
    for out in outputs:
        assert len(out.token_ids) == len(out.logprobs) >= 1
        assert len(out.token_ids) <= params.max_new_tokens
        assert all(lp <= 0.0 for lp in out.logprobs)
        assert eos not in out.token_ids[:-1]
        if out.finish_reason == "eos":
            assert out.token_ids[-1] == eos
        else:
            assert out.finish_reason == "length"
            assert len(out.token_ids) == params.max_new_tokens
    assert {out.finish_reason for out in outputs} == {"eos", "length"}


@pytest.mark.parametrize("max_new_tokens", [1, 3])
def test_max_new_tokens_is_honoured(engine, prompts, max_new_tokens):
    params = SamplingParams(max_new_tokens=max_new_tokens, seed=1)
    for out in run(engine, [(p, params) for p in prompts]):
        assert 1 <= len(out.token_ids) <= max_new_tokens
        assert out.finish_reason == "length" or out.finish_reason == "eos"


def test_stop_string_ends_generation_with_its_tokens(engine, prompts, tokenizer):
    params = SamplingParams(max_new_tokens=30, seed=11)
    prompt = prompts[0]
    (reference,) = run(engine, [(prompt, params)])
    ids = reference.token_ids
    # A two-character stop string from the reference continuation (ordinary characters only:
    # engines may render special tokens differently), and where it first completes.
    k = next(i for i in range(2, len(ids) - 1) if min(ids[i], ids[i + 1]) >= 2)
    stop = tokenizer.decode(ids[k : k + 2])
    end = next(e for e in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:e]))

    (out,) = run(engine, [(prompt, dataclasses.replace(params, stop=(stop, "no such text")))])
    assert out.finish_reason == "stop"
    assert out.token_ids == ids[:end]  # the stop string's tokens included, nothing after
    assert stop in tokenizer.decode(out.token_ids[-len(stop) :])
    assert stop not in tokenizer.decode(out.token_ids[:-1])
    assert out.logprobs == pytest.approx(reference.logprobs[:end], abs=1e-4)


def test_same_seed_same_tokens_whatever_the_batch(engine, prompts):
    params = SamplingParams(max_new_tokens=20, seed=7)
    target = prompts[1]
    (alone,) = run(engine, [(target, params)])
    crowd = run(
        engine,
        [(prompts[0], dataclasses.replace(params, seed=1)), (target, params),
         (prompts[3], dataclasses.replace(params, seed=2)), (prompts[2], params)],
    )
    assert crowd[1].token_ids == alone.token_ids
    assert crowd[1].logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    (reseeded,) = run(engine, [(target, dataclasses.replace(params, seed=8))])
    assert reseeded.token_ids != alone.token_ids


def test_seeds_a_run_derives_are_accepted(engine, prompts):
    """The seeds the runners derive (a trajectory's, then each segment's) span the whole range
    SamplingParams allows; every engine takes them, and out-of-range seeds are refused early."""
    trajectory = derive_seed(0, 12, "tiny_arithmetic", "p-17", 5)  # seed, iteration, source, id, k
    seeds = [derive_seed(trajectory, segment) for segment in range(3)] + [0, MAX_SEED]
    outputs = run(engine, [(prompts[0], SamplingParams(max_new_tokens=8, seed=s)) for s in seeds])
    assert all(1 <= len(out.token_ids) <= 8 for out in outputs)
    assert max(seeds[:3]) > 2**32  # the 63-bit range is exercised, not just small seeds
    for bad in (-1, MAX_SEED + 1, trajectory * 1000):
        with pytest.raises(ValueError, match="seed must be in"):
            SamplingParams(max_new_tokens=8, seed=bad)


def test_logprobs_are_the_models_tempered_log_softmax(engine, prompts, reference):
    temperature = 0.7
    params = SamplingParams(max_new_tokens=16, temperature=temperature, seed=3)
    outputs = run(engine, [(p, params) for p in prompts])
    for prompt, out in zip(prompts, outputs):
        expected = recomputed_logprobs(reference, prompt, out, temperature)
        assert out.logprobs == pytest.approx(expected, abs=LOGPROB_TOL[engine.name])


def test_greedy_is_the_argmax_with_untempered_logprobs(engine, prompts, reference):
    params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=1)
    outputs = run(engine, [(p, params) for p in prompts])
    for prompt, out in zip(prompts, outputs):
        ids = torch.tensor([prompt + out.token_ids])
        with torch.no_grad():
            logits = reference(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        assert out.token_ids == logits.argmax(-1).tolist()
        assert out.logprobs == pytest.approx(
            recomputed_logprobs(reference, prompt, out, 1.0), abs=LOGPROB_TOL[engine.name])
    # Neither the seed nor the batch changes a greedy continuation.
    crowd = run(engine, [(prompts[0], dataclasses.replace(params, seed=99)),
                         (prompts[2], dataclasses.replace(params, temperature=1.0)), (prompts[1], params)])
    assert crowd[0].token_ids == outputs[0].token_ids and crowd[2].token_ids == outputs[1].token_ids


def test_load_weights_replaces_the_policy(engine, prompts, model_dir):
    params = SamplingParams(max_new_tokens=16, seed=5)
    before = run(engine, [(p, params) for p in prompts])
    original = {k: v.clone() for k, v in load_model(model_dir).state_dict().items()}
    changed = load_model(model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in changed.parameters():
            param.add_(0.3 * torch.randn_like(param))
    try:
        engine.load_weights(changed.state_dict())
        after = run(engine, [(p, params) for p in prompts])
        assert [o.token_ids for o in after] != [o.token_ids for o in before]
        for prompt, out in zip(prompts, after):
            expected = recomputed_logprobs(changed, prompt, out, 1.0)
            assert out.logprobs == pytest.approx(expected, abs=LOGPROB_TOL[engine.name])
    finally:
        engine.load_weights(original)
    restored = run(engine, [(p, params) for p in prompts])
    assert [o.token_ids for o in restored] == [o.token_ids for o in before]


@pytest.mark.gpu
@pytest.mark.parametrize("weight_sync", ["ipc", "file"])
def test_vllm_sleeps_and_wakes_with_new_weights_in_memory(model_dir, prompts, weight_sync):
    """GPU: the colocated cycle. Level-2 sleep frees the GPU memory, ``load_weights`` wakes the
    engine with the new weights (through CUDA IPC, or the file fallback), which it then samples."""
    if reason := _vllm_skip_reason(cuda=True):
        pytest.skip(reason)
    engine = VLLMEngine(model_dir, dtype="float32", gpu_memory_utilization=0.2, max_model_len=256,
                        enforce_eager=True, sleep_mode=True, weight_sync=weight_sync)
    try:
        params = SamplingParams(max_new_tokens=16, seed=5)
        free_awake = torch.cuda.mem_get_info()[0]
        engine.sleep()
        assert torch.cuda.mem_get_info()[0] > free_awake, "sleep released no GPU memory"
        changed = load_model(model_dir)
        torch.manual_seed(1)
        with torch.no_grad():
            for param in changed.parameters():
                param.add_(0.3 * torch.randn_like(param))
        engine.load_weights(changed.state_dict())
        assert engine.weight_sync == weight_sync, "the IPC path fell back to the file"
        for prompt, out in zip(prompts, run(engine, [(p, params) for p in prompts])):
            assert out.logprobs == pytest.approx(recomputed_logprobs(changed, prompt, out, 1.0),
                                                 abs=LOGPROB_TOL["vllm"])
    finally:
        engine.shutdown()


# ---- vLLM mapping, with stand-ins shaped like vllm/outputs.py and vllm/logprobs.py ---------


def completion(token_ids, finish_reason="length", stop_reason=None, logprobs="sampled"):
    """A stand-in ``CompletionOutput``: ``logprobs`` is one ``{token_id: Logprob}`` per token."""
    if logprobs == "sampled":
        logprobs = [
            {t: types.SimpleNamespace(logprob=-0.5 - i, rank=1)} for i, t in enumerate(token_ids)
        ]
    return types.SimpleNamespace(
        index=0, text="", token_ids=token_ids, cumulative_logprob=None, logprobs=logprobs,
        finish_reason=finish_reason, stop_reason=stop_reason,
    )


@pytest.mark.parametrize(
    "finish_reason, stop_reason, expected",
    [("length", None, "length"), ("stop", "```output", "stop"),
     ("stop", None, "eos"), ("stop", 151645, "eos")],  # an int: a generation-config EOS id
)
def test_finish_reason_mapping(finish_reason, stop_reason, expected):
    out = to_generation_output(completion([5, 6, 7], finish_reason, stop_reason))
    assert out.finish_reason == expected
    assert out.token_ids == [5, 6, 7]
    assert out.logprobs == [-0.5, -1.5, -2.5]


@pytest.mark.parametrize("finish_reason", ["abort", "error", "repetition", None])
def test_unfinished_or_failed_requests_raise(finish_reason):
    with pytest.raises(RuntimeError, match="finish_reason"):
        to_generation_output(completion([5], finish_reason))


def test_logprob_of_the_sampled_token_is_picked():
    Logprob = lambda lp: types.SimpleNamespace(logprob=lp, rank=None)  # noqa: E731
    positions = [{9: Logprob(-0.1), 4: Logprob(-2.0)}, {8: Logprob(-0.3), 3: Logprob(-1.25)}]
    out = to_generation_output(completion((4, 3), logprobs=positions))
    assert out.token_ids == [4, 3]
    assert out.logprobs == [-2.0, -1.25]


@pytest.mark.parametrize("logprobs", [None, [{5: types.SimpleNamespace(logprob=-1.0)}]])
def test_missing_logprobs_raise(logprobs):
    with pytest.raises(RuntimeError, match="logprobs"):
        to_generation_output(completion([5, 6], logprobs=logprobs))


def test_sampling_kwargs():
    params = SamplingParams(max_new_tokens=9, temperature=0.6, stop=("```output",), seed=42)
    kwargs = sampling_kwargs(params)
    assert kwargs == {
        "n": 1, "max_tokens": 9, "temperature": 0.6, "top_p": 1.0, "top_k": 0, "seed": 42,
        "stop": ["```output"], "include_stop_str_in_output": True, "skip_special_tokens": False,
        "logprobs": 0,
    }
    assert sampling_kwargs(SamplingParams(max_new_tokens=1))["seed"] is None


@pytest.mark.parametrize(
    "params, match",
    [(dict(top_p=0.9), "top_p=1 and top_k=0"), (dict(top_k=20), "top_p=1 and top_k=0"),
     (dict(temperature=0.005), "temperatures"), (dict(temperature=2.5), "temperatures")],
)
def test_sampling_kwargs_reject_what_breaks_the_logprob_contract(params, match):
    with pytest.raises(ValueError, match=match):
        sampling_kwargs(SamplingParams(max_new_tokens=4, **params))


def test_temperature_bounds_are_accepted():
    for temperature in (0.0, 0.01, 2.0):  # 0: greedy
        kwargs = sampling_kwargs(SamplingParams(max_new_tokens=4, temperature=temperature))
        assert kwargs["temperature"] == temperature


def test_cpu_engine_kwargs(model_dir, monkeypatch):
    """vLLM's CPU build: whole prefills (its CPU generators cannot rewind a discarded chunk's
    draw), a batch budget that fits the context, and a bounded KV cache unless one is given."""
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert cpu_engine_kwargs({"dtype": "float32"}, model_dir) == {
        "dtype": "float32", "enable_chunked_prefill": False, "max_num_batched_tokens": 2048,
        "kv_cache_memory_bytes": 1 << 30}
    long = cpu_engine_kwargs({"max_model_len": 8192, "kv_cache_memory_bytes": 5}, "/not/read")
    assert long["max_num_batched_tokens"] == 8192 and long["kv_cache_memory_bytes"] == 5
    chunked = cpu_engine_kwargs({"enable_chunked_prefill": True}, "/not/read")
    assert "max_num_batched_tokens" not in chunked
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert "kv_cache_memory_bytes" not in cpu_engine_kwargs({"max_model_len": 64}, "/not/read")


def test_engine_kwargs():
    given = {"gpu_memory_utilization": 0.5, "logprobs_mode": "processed_logprobs"}
    kwargs = engine_kwargs("/models/m", given)
    assert kwargs == {
        "model": "/models/m", "gpu_memory_utilization": 0.5,
        "logprobs_mode": "processed_logprobs", "skip_tokenizer_init": False,
    }
    for bad in ({"logprobs_mode": "raw_logprobs"}, {"skip_tokenizer_init": True}):
        with pytest.raises(ValueError, match="requires"):
            engine_kwargs("/models/m", bad)
    colocated = engine_kwargs("/models/m", given, sleep_mode=True, weight_sync="ipc")
    assert colocated == {**kwargs, "enable_sleep_mode": True, "weight_transfer_config": {"backend": "ipc"}}
    with pytest.raises(ValueError, match="weight_sync must be one of"):
        engine_kwargs("/models/m", given, weight_sync="nccl")


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an environment without vLLM imports
    assert VLLMEngine.holds_own_weights is True
    with pytest.raises(ImportError, match=r"pip install 'torl-rllib\[vllm\]'.*scripts/setup.sh"):
        VLLMEngine("/models/m")


# ---- VLLMEngine's plumbing, against a stand-in vLLM -----------------------------------------


class FakeAsyncLLM:
    """Mimics ``vllm.v1.engine.async_llm.AsyncLLM`` where VLLMEngine touches it, and checks
    that every call runs on the event loop that created it (as AsyncLLM's tasks require)."""

    instances: list["FakeAsyncLLM"] = []

    def __init__(self, args):
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.model_config = types.SimpleNamespace(dtype=torch.bfloat16)
        self.in_flight = self.max_in_flight = 0
        self.rpcs, self.resets, self.closed, self.aborted = [], [], False, []
        self.calls = []  # sleep / wake_up / collective_rpc, in order
        FakeAsyncLLM.instances.append(self)

    @classmethod
    def from_engine_args(cls, args):
        return cls(args)

    async def generate(self, prompt, sampling_params, request_id):
        assert asyncio.get_running_loop() is self.loop
        assert sampling_params.output_kind == "FINAL_ONLY"
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05 if sampling_params.max_tokens < 100 else 60)
        except asyncio.CancelledError:
            self.aborted.append(request_id)
            raise
        finally:
            self.in_flight -= 1
        ids = [t + 1 for t in prompt["prompt_token_ids"]][: sampling_params.max_tokens]
        yield types.SimpleNamespace(outputs=[completion(ids)], finished=True)

    async def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        from safetensors.torch import load_file

        assert asyncio.get_running_loop() is self.loop
        files = os.listdir(kwargs["weights_path"])
        staged = load_file(os.path.join(kwargs["weights_path"], files[0]))
        self.rpcs.append((method, kwargs, files, staged))
        self.calls.append(method)
        return [None]

    async def sleep(self, level=1, mode="abort"):
        assert asyncio.get_running_loop() is self.loop
        self.calls.append(("sleep", level))

    async def wake_up(self, tags=None):
        assert asyncio.get_running_loop() is self.loop
        self.calls.append(("wake_up", tags))
        return True

    async def reset_prefix_cache(self, reset_running_requests=False, reset_connector=False):
        self.resets.append(reset_running_requests)
        return True

    def shutdown(self):
        assert asyncio.get_running_loop() is self.loop
        self.closed = True


@pytest.fixture
def fake_vllm(monkeypatch):
    """Stand-in ``vllm`` modules exposing what VLLMEngine imports."""

    class FakeSamplingParams(types.SimpleNamespace):
        pass

    modules = {
        "vllm": dict(
            AsyncEngineArgs=lambda **kw: kw, SamplingParams=FakeSamplingParams, TokensPrompt=dict
        ),
        "vllm.v1": {}, "vllm.v1.engine": {},
        "vllm.v1.engine.async_llm": dict(AsyncLLM=FakeAsyncLLM),
        "vllm.sampling_params": dict(
            RequestOutputKind=types.SimpleNamespace(FINAL_ONLY="FINAL_ONLY")
        ),
    }
    for name, attrs in modules.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    # The engine arguments are passed through as on a GPU (cpu_engine_kwargs is tested on its own).
    monkeypatch.setattr(vllm_engine, "cpu_engine_kwargs", lambda kwargs, model_path: dict(kwargs))
    FakeAsyncLLM.instances.clear()
    yield
    for llm in FakeAsyncLLM.instances:
        assert llm.closed, "the engine was not shut down"


def test_engine_batches_concurrent_requests_across_caller_loops(fake_vllm):
    engine = VLLMEngine("/models/m", gpu_memory_utilization=0.3)
    try:
        (llm,) = FakeAsyncLLM.instances
        assert llm.args == {"model": "/models/m", "gpu_memory_utilization": 0.3,
                            "logprobs_mode": "processed_logprobs", "skip_tokenizer_init": False}
        assert llm.loop is engine._loop and llm.loop.is_running()  # the engine's own loop
        for _ in range(2):  # one asyncio.run per rollout, as the env runner does
            outputs = engine.generate_batch([[1, 2], [3], [4, 5, 6]], SamplingParams(2))
            assert [o.token_ids for o in outputs] == [[2, 3], [4], [5, 6]]
            assert all(o.finish_reason == "length" for o in outputs)
        assert llm.max_in_flight == 3  # all in the engine at once: no batch barrier
    finally:
        engine.shutdown()
    assert not engine._thread.is_alive()
    engine.shutdown()  # idempotent


def test_cancelling_a_trajectory_aborts_its_request(fake_vllm):
    engine = VLLMEngine("/models/m")
    try:
        async def cancel_one():
            slow = asyncio.ensure_future(engine.generate([1], SamplingParams(max_new_tokens=500)))
            fast = await engine.generate([7], SamplingParams(max_new_tokens=4))
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            return fast

        assert asyncio.run(cancel_one()).token_ids == [8]
        (llm,) = FakeAsyncLLM.instances
        for _ in range(100):
            if llm.aborted:
                break
            threading.Event().wait(0.01)
        assert len(llm.aborted) == 1
    finally:
        engine.shutdown()


def test_load_weights_stages_hf_names_and_reloads(fake_vllm, tmp_path):
    engine = VLLMEngine("/models/m", weights_dir=str(tmp_path))
    try:
        shared = torch.randn(4, 3)
        state = {"model.embed_tokens.weight": shared, "lm_head.weight": shared,  # tied
                 "model.norm.weight": torch.ones(3, dtype=torch.float64), "step": torch.tensor(3)}
        engine.load_weights(state)
        (llm,) = FakeAsyncLLM.instances
        ((method, kwargs, files, loaded),) = llm.rpcs
        assert method == "reload_weights" and kwargs["is_checkpoint_format"] is True
        assert files == ["model.safetensors"]
        assert set(loaded) == set(state)
        assert loaded["lm_head.weight"].dtype == torch.bfloat16  # cast to the engine's dtype
        torch.testing.assert_close(loaded["lm_head.weight"], shared.to(torch.bfloat16))
        assert loaded["step"].dtype == torch.int64
        assert llm.resets == [True]  # no KV computed by the old weights survives
        assert os.listdir(tmp_path) == []  # the staging file is gone
    finally:
        engine.shutdown()


def test_a_sleeping_engine_wakes_for_its_weights_then_its_cache(fake_vllm, tmp_path):
    """Colocation: level-2 sleep during the update; the sync wakes the weights' memory, loads
    the new weights (the file path on CPU), then wakes the rest (the KV cache)."""
    engine = VLLMEngine("/models/m", sleep_mode=True, weights_dir=str(tmp_path))
    try:
        (llm,) = FakeAsyncLLM.instances
        assert llm.args["enable_sleep_mode"] is True and engine.weight_sync == "file"  # no CUDA here
        engine.sleep()
        engine.load_weights({"lm_head.weight": torch.randn(4, 3)})
        assert llm.calls == [("sleep", 2), ("wake_up", ["weights"]), "reload_weights", ("wake_up", None)]
        engine.load_weights({"lm_head.weight": torch.randn(4, 3)})  # awake: no wake_up
        assert llm.calls[4:] == ["reload_weights"]
    finally:
        engine.shutdown()


def test_a_prompt_near_the_context_ends_as_truncated(engine, tokenizer):
    """The response budget is clipped to the room the engine's context leaves: the trajectory ends
    as truncated, never as an engine error (vLLM would refuse a request over max_model_len)."""
    from torl_rllib.rollout.tool_loop import ToolLoopConfig, run_trajectory

    prompt = tokenizer.encode("12+7=" * 50)[:250]
    config = ToolLoopConfig(max_tool_calls=0, max_response_tokens=100, context_length=256, infra_retries=0)
    traj = asyncio.run(run_trajectory(engine, None, tokenizer, prompt, SamplingParams(max_new_tokens=1, seed=3),
                                      config, seed=3))
    assert traj.error is None, traj.error
    assert len(prompt) + len(traj.response_ids) <= 256
    assert traj.truncated or traj.finish_reason == "eos"
