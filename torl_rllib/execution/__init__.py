"""What a training step is made of, apart from the algorithm that orders it (as RLlib's
``ray.rllib.execution``): cluster and sandbox set-up, training data checks, failure-tolerant
sampling and EnvRunner restore, the step's update on the LearnerGroup (``train_ops``), the
versioned weight sync, and atomic (FSDP-aware) checkpointing. The functions take the algorithm, or its parts, as arguments; nothing here
imports ``torl_rllib.algorithms``."""
