"""Keys the driver adds to ``timesteps`` for every mini-batch update (``execution.train_ops``
sends them; the GRPO Learner reads them in ``before_gradient_based_update``)."""

GLOBAL_LOSS_TOKENS = "grpo_global_loss_tokens"  # the mini-batch's trainable tokens, over all Learners
GLOBAL_SEQUENCES = "grpo_global_sequences"  # the mini-batch's trajectories, over all Learners
UPDATE_START = "grpo_update_start"  # 1.0 for the step's first mini-batch: no optimizer step yet
