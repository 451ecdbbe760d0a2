"""Continuous batching in the HF engine: requests leave the batch when they finish and join it
mid-flight, without changing any request's tokens (the rest of the contract is in
``test_engine_contract.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from torl_rllib.rollout.engine import SamplingParams
from torl_rllib.rollout.hf_engine import HFEngine
from torl_rllib.rollout.stop_strings import StopStringDetector
from torl_rllib.rollout.tool_loop import STOP_STRING
from tools.tiny.tokenizer import build_tokenizer

NEVER = 10**6  # an end-of-sequence id no model samples: requests run to their budget


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def engine(tokenizer):
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=1024,
        tie_word_embeddings=True, initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config.eos_token_id = NEVER
    built = HFEngine(model, tokenizer, max_batch_size=8)
    yield built
    built.shutdown()


def params(n: int, seed: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, seed=seed)


async def _wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def test_a_finished_request_resolves_while_its_batch_still_generates(engine, tokenizer):
    prompt = tokenizer.encode("12+7=")

    async def scenario():
        long = asyncio.ensure_future(engine.generate(prompt, params(300, 1)))
        short = await engine.generate(prompt, params(3, 2))
        # The short request got its result while the long one shares the batch and still runs.
        assert not long.done() and engine.num_running == 1
        assert len(short.token_ids) == 3 and short.finish_reason == "length"
        return short, await long

    short, long = asyncio.run(scenario())
    assert len(long.token_ids) == 300
    (alone,) = engine.generate_batch([prompt], params(3, 2))
    assert short.token_ids == alone.token_ids


def test_a_request_submitted_mid_batch_joins_and_finishes_first(engine, tokenizer):
    prompt, late_prompt = tokenizer.encode("The answer is "), tokenizer.encode("x = 3*4\n")

    async def scenario():
        long = asyncio.ensure_future(engine.generate(prompt, params(300, 3)))
        start = engine.stats.decode_steps
        await _wait_for(lambda: engine.stats.decode_steps >= start + 20)  # the batch is mid-way
        prefills = engine.stats.prefills
        late = await engine.generate(late_prompt, params(5, 4))
        assert not long.done(), "the late request waited for the running batch to end"
        assert engine.stats.prefills == prefills + 1  # it was prefilled and joined the batch
        return late, await long

    late, long = asyncio.run(scenario())
    (late_alone, long_alone) = engine.generate_batch([late_prompt], params(5, 4)) + engine.generate_batch(
        [prompt], params(300, 3))
    # Neither request's tokens depend on when the other joined or left.
    assert late.token_ids == late_alone.token_ids
    assert long.token_ids == long_alone.token_ids
    assert long.logprobs == pytest.approx(long_alone.logprobs, abs=1e-4)


def test_many_requests_joining_and_leaving_keep_their_own_streams(engine, tokenizer):
    rng = random.Random(0)
    texts = ["1+1=", "abc", "print(2)\n", "The sum of 3 and 4 is ", "x", "```python\n"]
    requests = [(tokenizer.encode(rng.choice(texts)), params(rng.randint(1, 40), seed)) for seed in range(24)]

    async def staggered():
        async def one(i, prompt, p):
            await asyncio.sleep(0.002 * i)  # arrivals spread over the running batch
            return await engine.generate(prompt, p)

        return await asyncio.gather(*(one(i, *r) for i, r in enumerate(requests)))

    together = asyncio.run(staggered())
    for (prompt, p), out in zip(requests, together):
        (alone,) = engine.generate_batch([prompt], p)
        assert out.token_ids == alone.token_ids and len(out.token_ids) == p.max_new_tokens


def test_a_cancelled_request_leaves_the_batch(engine, tokenizer):
    prompt = tokenizer.encode("12+7=")

    async def scenario():
        doomed = asyncio.ensure_future(engine.generate(prompt, params(1000, 5)))
        await _wait_for(lambda: engine.num_running == 1)
        doomed.cancel()
        await _wait_for(lambda: engine.num_running == 0)
        return await engine.generate(prompt, params(4, 6))

    assert len(asyncio.run(scenario()).token_ids) == 4


@pytest.mark.parametrize("seed", range(20))
def test_incremental_stop_detection_agrees_with_decoding_everything(tokenizer, seed):
    rng = random.Random(seed)
    ids = [rng.randrange(2, len(tokenizer)) for _ in range(60)]
    text = tokenizer.decode(ids)
    start = rng.randrange(0, 50)
    stops = (text[start : start + rng.randint(1, 12)], "no such text")
    detector = StopStringDetector(tokenizer, stops)
    hit = next(i for i in range(len(ids)) if detector.push(ids[i]))
    expected = next(e for e in range(1, len(ids) + 1) if any(s in tokenizer.decode(ids[:e]) for s in stops))
    assert hit + 1 == expected


def test_the_tool_loops_stop_string_is_found_wherever_it_starts(tokenizer):
    for prefix in ["", "1", "1\n", "x = 1\n```python\nprint(2)\n```\n"]:
        ids = tokenizer.encode(prefix + "```output\n2")
        detector = StopStringDetector(tokenizer, (STOP_STRING,))
        hits = [i for i, token in enumerate(ids) if detector.push(token)]
        assert tokenizer.decode(ids[: hits[0] + 1]) == prefix + STOP_STRING


def test_stop_detection_on_multibyte_text_waits_for_whole_characters():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # A byte-level tokenizer with one token per byte: "é" takes two tokens, "€" three.
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    core.pre_tokenizer, core.decoder = byte_level, decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    ids = tok.encode("café costs 3€ ```output")
    detector = StopStringDetector(tok, ("3€",))
    hit = next(i for i in range(len(ids)) if detector.push(ids[i]))
    assert tok.decode(ids[: hit + 1]).endswith("3€")


def _first_stop(engine, tokenizer, prompt, params):
    """A two-character stop string from the model's own continuation of ``prompt``."""
    (reference,) = engine.generate_batch([prompt], params)
    ids = reference.token_ids
    k = next(i for i in range(2, len(ids) - 1) if min(ids[i], ids[i + 1]) >= 2)
    return tokenizer.decode(ids[k : k + 2])


def test_a_trajectory_back_from_its_tool_call_prefills_only_its_new_tokens(engine, tokenizer):
    prompt = tokenizer.encode("12+7=")
    first = params(40, 11)
    stop = _first_stop(engine, tokenizer, prompt, first)
    (segment,) = engine.generate_batch([prompt], dataclasses.replace(first, stop=(stop,)))
    assert segment.finish_reason == "stop"
    back = prompt + segment.token_ids + tokenizer.encode("\n```output\n19\n```\n")
    resumed_before = engine.stats.resumed
    (continued,) = engine.generate_batch([back], params(30, 12))
    assert engine.stats.resumed == resumed_before + 1 and len(engine._parked) == 0
    # The same request on an engine with nothing parked: the same tokens and log-probs.
    fresh = HFEngine(engine.model, tokenizer, max_batch_size=8)
    try:
        (again,) = fresh.generate_batch([back], params(30, 12))
    finally:
        fresh.shutdown()
    assert fresh.stats.resumed == 0
    assert continued.token_ids == again.token_ids
    assert continued.logprobs == pytest.approx(again.logprobs, abs=1e-4)


def test_parked_kv_is_not_reused_after_a_weight_change(engine, tokenizer):
    prompt = tokenizer.encode("The answer is ")
    first = params(40, 13)
    stop = _first_stop(engine, tokenizer, prompt, first)
    (segment,) = engine.generate_batch([prompt], dataclasses.replace(first, stop=(stop,)))
    engine.load_weights(engine.model.state_dict())  # same values, new weights version
    resumed_before = engine.stats.resumed
    engine.generate_batch([prompt + segment.token_ids + tokenizer.encode("1\n")], params(5, 14))
    assert engine.stats.resumed == resumed_before and len(engine._parked) == 0
