"""Column names of GRPO episodes and train batches (RLlib keeps its own in ``ray.rllib.core.columns``).

The EnvRunner writes the extra model outputs; the learner connector reads them and builds the
batch columns; both import the names from here.
"""

# Extra model outputs of each single-step episode (one trajectory), written by the EnvRunner.
LOGPROBS = "token_logprobs"  # per response token: the sampling log-probability (0 on tool tokens)
LOSS_MASK = "loss_mask"  # per response token: 1 = model token, 0 = tool output
ADVANTAGE = "advantage"  # the trajectory's group-relative advantage
WEIGHTS_VERSION = "weights_version"  # the policy version that sampled it

# Batch columns built by the learner connector (besides the module's inputs).
OLD_LOGPROBS = "old_logprobs"
ADVANTAGES = "advantages"
