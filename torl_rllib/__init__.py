"""ToRL on Ray RLlib.

Layers, lowest first. A module imports only from its own layer or the ones below it, and may
import ``sandbox`` (an independent package that imports nothing of ours);
``tests/test_layers.py`` checks both, and that no module imports another module's private
names:

1. ``utils``: Ray start-up, CPU counts, FSDP tensor helpers, checkpoint manifests, shipped assets.
2. ``core``: what the rollout and the algorithm sides share (episode columns, advantages,
   the keys an update's ``timesteps`` carry, the sharded Learner base).
3. ``tasks``: datasets, prompt templates, answer extraction, grading, rewards.
4. ``modules``: the causal-LM ``RLModule``.
5. ``rollout``: engines, the tool loop, the ``ToolEnvRunner``, per-step rollout metrics.
6. ``evaluation``: benchmarks, protocols, outcome metrics.
7. ``tracking``: MLflow (tracker, RLlib callback, traces, plots).
8. ``export``: a checkpoint's policy as a Hugging Face model folder.
9. ``execution``: what a step is made of (cluster and sandbox set-up, failure-tolerant sampling
   and EnvRunner restore, the update on the LearnerGroup, versioned weight sync, atomic
   checkpointing, run health), as RLlib's ``execution``.
10. ``algorithms``: GRPO (its config, the one table of recipe keys, the algorithm, learners).
11. ``recipe``, ``evaluation_recipe``: YAML recipes into configs.
12. ``train``, ``evaluate``, ``sweep``: the drivers.
13. ``cli``.

Names: held-out evaluation is spelled "evaluation" everywhere (the ``evaluation`` package, the
in-training ``algorithms/grpo/evaluation.py`` as RLlib's ``evaluation``, ``evaluation_recipe``);
drivers are named by their verb (``train``, ``evaluate``, ``sweep``); only the CLI command is
the short ``eval``, as the metric prefix ``eval/``.

The tiny models' build tools (tokenizer, synthetic data, pretraining) are not part of the
package: they live in the top-level ``tools/tiny`` (run from the repository root), which the
package never imports.
"""
