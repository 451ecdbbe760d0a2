"""RLModules: the policy LLM as an RLlib ``TorchRLModule``."""

from torl_rllib.modules.causal_lm_module import CausalLMModule, token_logprobs_and_entropy

__all__ = ["CausalLMModule", "token_logprobs_and_entropy"]
