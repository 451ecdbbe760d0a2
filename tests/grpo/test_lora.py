"""LoRA through PEFT (``model.lora``): only the adapters are trained, held by the optimizer and
checkpointed; EnvRunners get the merged weights and sample what the learner's policy would;
the KL reference is the base model with the adapters off; ``export`` writes the merged model
(which generates the learner policy's tokens) and the adapter alone."""

from __future__ import annotations

import json

import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from transformers import AutoModelForCausalLM

from torl_rllib.algorithms.grpo.grpo_learner import REF_KL_KEY
from torl_rllib.core.learner.timesteps import GLOBAL_LOSS_TOKENS, GLOBAL_SEQUENCES
from torl_rllib.modules.causal_lm_module import REF_LOGPROBS, TOKEN_LOGPROBS
from torl_rllib.rollout.engine import SamplingParams
from torl_rllib.rollout.env_runner import placeholder_spaces
from torl_rllib.rollout.hf_engine import HFEngine
from torl_rllib.rollout.tool_loop import Trajectory

from .conftest import build_learner, grpo_config, learner_batch, policy, to_episode

LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "up_proj"]}


def lora_config(model_dir, data, **training):
    config = grpo_config(model_dir, data, **training)
    return config.rl_module(model_config={"path": str(model_dir), "lora": LORA})


def episodes_and_batch(learner, tokenizer):
    prompts = [tokenizer.encode(f"What is {i} + 3?", add_special_tokens=False) for i in range(4)]
    model = policy(learner).model
    outputs = HFEngine(model, tokenizer).generate_batch(prompts, SamplingParams(max_new_tokens=12, seed=3))
    episodes = [
        to_episode(Trajectory(p, o.token_ids, o.logprobs, [1] * len(o.token_ids), finish_reason=o.finish_reason),
                   advantage=adv)
        for p, o, adv in zip(prompts, outputs, [1.0, -1.0, 1.0, -1.0])
    ]
    return episodes, learner_batch(learner, episodes)


def update(learner, episodes, batch):
    tokens = float(batch["loss_mask"].sum())
    return learner.update(episodes=episodes, timesteps={GLOBAL_LOSS_TOKENS: tokens, GLOBAL_SEQUENCES: 4.0})


@pytest.fixture(scope="module")
def trained(random_model_dir, arithmetic_jsonl, tokenizer):
    """A LoRA learner (with a KL term) before and after 3 updates."""
    learner = build_learner(lora_config(random_model_dir, arithmetic_jsonl, kl_coeff=0.1, lr=3e-2))
    module = policy(learner)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    episodes, batch = episodes_and_batch(learner, tokenizer)
    results = [update(learner, episodes, batch) for _ in range(3)]
    return learner, before, batch, results


def test_only_the_adapters_are_optimized_changed_and_checkpointed(trained):
    learner, before, _, _ = trained
    module = policy(learner)
    optimized = {id(p) for group in learner.get_optimizer().param_groups for p in group["params"]}
    adapters = {name: p for name, p in module.named_parameters() if "lora_" in name}
    assert adapters and optimized == {id(p) for p in adapters.values()}
    after = module.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed and all("lora_" in k for k in changed), sorted(changed)[:5]
    assert any("lora_B" in k for k in changed), "lora_B starts at 0 and must move"
    state = learner.get_state()
    assert set(state["rl_module"][DEFAULT_MODULE_ID]) == {k for k in after if "lora_" in k}
    assert len(state["optimizer"]["default_policy_default_optimizer"]["state"]["state"]) == len(adapters)


def test_runners_get_merged_weights_that_give_the_policys_logprobs(trained):
    learner, _, batch, _ = trained
    module = policy(learner)
    runner = learner.config.get_rl_module_spec(spaces=placeholder_spaces(), inference_only=True).build()
    assert not runner.lora and runner.ref_model is None
    merged = module.get_state(inference_only=True)
    runner.set_state(merged)  # what the weight sync sends
    assert merged.keys() == runner.get_state().keys()
    mask = batch["loss_mask"].bool()
    with torch.no_grad():
        ours = module.forward_train(batch)[TOKEN_LOGPROBS][mask]
    theirs = runner.forward_exploration(batch)[TOKEN_LOGPROBS][mask]
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)


def test_the_kl_reference_is_the_base_model_with_adapters_off(trained, random_model_dir, arithmetic_jsonl):
    learner, _, batch, results = trained
    module = policy(learner)
    assert module.ref_model is None, "LoRA needs no reference copy"
    assert results[0][DEFAULT_MODULE_ID][REF_KL_KEY].peek() == 0.0, "policy == base model at init"
    assert results[-1][DEFAULT_MODULE_ID][REF_KL_KEY].peek() > 0.0
    base = policy(build_learner(grpo_config(random_model_dir, arithmetic_jsonl)))
    mask = batch["loss_mask"].bool()
    with torch.no_grad():
        reference = module.forward_train(batch)[REF_LOGPROBS][mask]
        expected = base.forward_train(batch)[TOKEN_LOGPROBS][mask]
    torch.testing.assert_close(reference, expected)


@pytest.mark.slow
def test_export_writes_the_merged_model_and_the_adapter(ray_cluster, random_model_dir, arithmetic_jsonl,
                                                        tokenizer, tmp_path):
    from peft import PeftModel

    from torl_rllib.export import export_policy

    config = (lora_config(random_model_dir, arithmetic_jsonl, lr=3e-2, entropy_coeff=0.05, max_response_tokens=16,
                          max_tool_calls=0)
              .training(group_size=4, prompts_per_step=4))
    algo = config.build_algo()
    try:
        for _ in range(2):
            algo.train()
        checkpoint = algo.save_to_path(str(tmp_path / "ckpt"))
        trained_policy = policy(algo.learner_group._learner).model.eval()
        out = export_policy(checkpoint, tmp_path / "export")
    finally:
        algo.stop()
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in k for k in exported.state_dict()), "the exported model must be merged"
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == LORA["r"] and sorted(adapter["target_modules"]) == sorted(LORA["target_modules"])
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(random_model_dir), out / "adapter")
    prompts = [tokenizer.encode(f"What is {i} + 4?", add_special_tokens=False) for i in range(4)]
    greedy = SamplingParams(max_new_tokens=24, temperature=0.0)
    expected = [o.token_ids for o in HFEngine(trained_policy, tokenizer).generate_batch(prompts, greedy)]
    assert [o.token_ids for o in HFEngine(exported, tokenizer).generate_batch(prompts, greedy)] == expected
    assert [o.token_ids for o in HFEngine(reloaded.eval(), tokenizer).generate_batch(prompts, greedy)] == expected
    base = AutoModelForCausalLM.from_pretrained(random_model_dir)
    assert any(not torch.equal(v, base.state_dict()[k]) for k, v in exported.state_dict().items()), (
        "two LoRA steps left the exported model equal to the base: nothing was compared")


@pytest.mark.slow
def test_lora_on_two_ddp_learners_syncs_merged_weights(ray_cluster, random_model_dir, arithmetic_jsonl):
    config = (lora_config(random_model_dir, arithmetic_jsonl, lr=3e-2, entropy_coeff=0.05, max_response_tokens=8,
                          max_tool_calls=0)
              .training(group_size=4, prompts_per_step=2)
              .env_runners(num_env_runners=1, num_cpus_per_env_runner=0.5)
              .learners(num_learners=2, num_cpus_per_learner=0.5))
    algo = config.build_algo()
    try:
        for _ in range(2):
            algo.train()
        merged = algo.policy_weights()
        (runner,) = algo.env_runner_group.foreach_env_runner(lambda r: r.module.get_state(), local_env_runner=False)
        assert runner.keys() == merged.keys() and not any("lora" in k for k in merged)
        for key, value in merged.items():
            assert torch.equal(runner[key], value), key
        base = AutoModelForCausalLM.from_pretrained(random_model_dir).state_dict()
        assert any(not torch.equal(v, base[k.removeprefix("model.")]) for k, v in merged.items())
    finally:
        algo.stop()
