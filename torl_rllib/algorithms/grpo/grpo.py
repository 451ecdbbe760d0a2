"""GRPO for tool-integrated reasoning (ToRL) as an RLlib Algorithm.

``GRPOConfig`` is a fluent builder like ``PPOConfig``: ``.training()`` holds GRPO's own
hyperparameters, ``.rollout()`` the generation and tool-loop settings, ``.task()`` the
dataset, prompt template and reward, ``.sandbox()`` the interpreter pool; the policy model
is ``.rl_module(model_config={"path": ..., "dtype": ...})``; scale with RLlib's own
``.env_runners(num_env_runners=...)`` and ``.learners(num_learners=...)``. Which recipe key
each builder argument is lives in ``config_keys`` (the one table), what ``validate()`` checks
in ``config_checks``.

``GRPO.training_step``: sample whole groups on every EnvRunner → mini-batch updates on the
LearnerGroup → blocking weight broadcast to every EnvRunner (versioned). The jobs a step is
made of (cluster set-up, failure-tolerant sampling, the update, the weight sync, atomic
checkpoints) live in ``torl_rllib.execution``, as RLlib's do in ``ray.rllib.execution``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import ray
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import COMPONENT_LEARNER_GROUP
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils import force_list
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME, TIMERS,
)
from ray.exceptions import RayActorError
from ray.tune.result import TRIAL_INFO

from torl_rllib.algorithms.grpo.config_checks import FSDP_KEYS, ConfigProblem, config_problems
from torl_rllib.algorithms.grpo.config_keys import (
    RENAMED_TRAINING_KEYS, UNUSED_RLLIB_TRAINING_KEYS, recipe_of, refused_training_key,
)
from torl_rllib.algorithms.grpo.evaluation import grpo_evaluation_function
from torl_rllib.algorithms.grpo.learner_connector import GRPOLearnerConnector
from torl_rllib.algorithms.grpo.prompt_iterator import PromptIterator
from torl_rllib.core.columns import WEIGHTS_VERSION
from torl_rllib.execution import rollout_ops
from torl_rllib.execution.checkpointing import check_restorable, gather_sharded_learner_state, save_atomically
from torl_rllib.execution.cluster import check_schedulable, limit_trial_threads, start_sandbox_pools
from torl_rllib.execution.data import load_eval_benchmarks, skip_overlong_prompts, split_column_problem
from torl_rllib.execution.faults import (
    LearnersLost, RunCannotContinue, RunUnhealthy, check_sandbox_pools, is_learner_failure,
)
from torl_rllib.execution.rollout_ahead import RolloutAhead
from torl_rllib.execution.run_health import FailingStreak
from torl_rllib.execution.train_ops import train_on_episodes
from torl_rllib.execution.weight_sync import policy_weights, sync_weights_to
from torl_rllib.modules.causal_lm_module import DTYPES
from torl_rllib.rollout.failures import SANDBOX_FAILED
from torl_rllib.rollout.metrics import FAILED_FRACTION, VERSION_LAG, summarize_failures, summarize_rollouts
from torl_rllib.rollout.trace_records import gather_traces
from torl_rllib.tracking.callback import MlflowTrackingCallback, tracking_callback
from torl_rllib.tracking.step_metrics import RESULT_KEY, step_metrics

logger = logging.getLogger(__name__)

PROMPT_STATE = "grpo_prompt_iterator"
VERSION_STATE = "grpo_weights_version"
TRACKING_STATE = "grpo_tracking"
AHEAD_STATE = "grpo_rollout_ahead"  # max_staleness=1: the next step's rollout, sampled already
# Timers (seconds, logged with window=1: the value of this step, not an EMA).
TIMER_ROLLOUT = "rollout"
TIMER_LEARN = "learner_update"
TIMER_SYNC = "weight_sync"
TIMER_STEP = "step"  # RLlib keeps its own EMA "training_step" timer


def build_grpo_learner_connector(input_observation_space, input_action_space):
    """RLlib learner-connector builder (module-level so configs pickle)."""
    return GRPOLearnerConnector()


class GRPOConfig(AlgorithmConfig):
    """Configuration of a ToRL GRPO run (defaults: ToRL's 1.5B recipe where it has one)."""

    def __init__(self, algo_class=None):
        super().__init__(algo_class=algo_class or GRPO)
        # RLlib settings with GRPO defaults.
        self.lr = 1e-6
        self.grad_clip = 1.0
        self.grad_clip_by = "global_norm"
        self.num_epochs = 1
        self.num_env_runners = 0
        self.add_default_connectors_to_learner_pipeline = False
        self._learner_connector = build_grpo_learner_connector
        from torl_rllib.rollout.env_runner import ToolEnvRunner

        self.env_runner_cls = ToolEnvRunner
        # .training(): GRPO
        self.group_size = 16  # G samples per prompt
        self.prompts_per_step = 128
        self.minibatches_per_step = 2  # optimizer steps per epoch over the step's batch
        self.clip_eps_low = 0.2
        self.clip_eps_high = 0.2  # > clip_eps_low = DAPO's clip-higher
        self.loss_agg_mode = "token-mean"
        self.scale_advantages = True  # divide by the group std (False = Dr. GRPO)
        self.kl_coeff = 0.0  # > 0 builds a frozen reference model (k3 estimator)
        self.entropy_coeff = 0.0
        self.dynamic_sampling = False  # drop zero-variance groups from the update
        self.overlong_mask = False  # no loss on responses cut by the length limit
        self.max_staleness = 0  # 1: sample step t+1 while the Learners update on step t
        self.importance_clip: float | None = None  # truncated importance weight (off-policy correction)
        self.micro_batch_size: int | None = None  # sequences per forward/backward on a Learner
        # UNUSED_RLLIB_TRAINING_KEYS given to .training(), even at RLlib's default: refused by validate()
        self._unused_training_keys: list[str] = []
        # .rollout()
        self.rollout_engine = "hf"
        self.engine_max_batch_size = 64
        self.vllm_kwargs: dict[str, Any] = {}
        self.max_prompt_tokens = 400
        self.max_response_tokens = 3072
        self.temperature = 1.0
        self.top_p = 1.0
        self.top_k = 0
        self.max_tool_calls = 1  # C
        self.budget_counts_tool_output = True
        self.observation_style = "torl"
        self.num_threads: int | None = None  # torch threads per remote EnvRunner (None: auto)
        self.infra_retries = 3  # retries of a failed generation, sandbox call or grading
        # .task()
        self.train_data: dict[str, Any] | str | None = None
        self.prompt_template = "tir_base_0309"
        self.reward: dict[str, Any] = {}
        self.grade_timeout_s = 5.0
        self.trajectories_to_log = 8
        self.split_metrics_by = None
        # .sandbox()
        self.sandbox_config: dict[str, Any] = {}
        # .tracking(): TrackingConfig fields; empty = off
        self.tracking_config: dict[str, Any] = {}
        # .evaluation(): held-out benchmarks evaluated every ``evaluation_interval`` steps
        self.evaluation_benchmarks: list = []
        self.evaluation_protocol: dict[str, Any] = {}  # EvalProtocol fields; {} = greedy
        self.benchmarks_dir: str | None = None
        # .learners(): how the Learners hold the model
        self.learner_strategy = "ddp"  # "fsdp": FSDP2-sharded (ShardedTorchLearner)
        self.fsdp: dict[str, Any] = {}  # FSDP_KEYS overrides
        self.colocate = False  # EnvRunner and Learner i share a GPU; the engine sleeps during updates
        # .fault_tolerance(): a run whose steps keep failing stops (RunUnhealthy)
        self.max_failed_fraction = 0.5
        self.failure_patience = 3

    # ---- builder sections ------------------------------------------------------------------
    @override(AlgorithmConfig)
    def training(
        self, *, group_size=NotProvided, prompts_per_step=NotProvided,
        minibatches_per_step=NotProvided, clip_eps_low=NotProvided, clip_eps_high=NotProvided,
        loss_agg_mode=NotProvided, scale_advantages=NotProvided, kl_coeff=NotProvided,
        entropy_coeff=NotProvided, dynamic_sampling=NotProvided, overlong_mask=NotProvided,
        max_staleness=NotProvided, importance_clip=NotProvided, micro_batch_size=NotProvided, **kwargs,
    ) -> "GRPOConfig":
        """GRPO hyperparameters (plus RLlib's ``lr``, ``grad_clip``, ``grad_clip_by``, ``num_epochs``).

        RLlib's other training keys (``minibatch_size``, ``train_batch_size_per_learner``, ...)
        mean nothing to GRPO: ``validate()`` refuses them, naming what GRPO uses instead
        (``config_keys.UNUSED_RLLIB_TRAINING_KEYS``); the old names ``kl_coef``/``entropy_coef`` raise a
        ``TypeError`` naming RLlib's ``kl_coeff``/``entropy_coeff``.

        Args:
            group_size: samples per prompt (G); advantages are normalized within a group.
            prompts_per_step: prompts per training step (split across EnvRunners).
            minibatches_per_step: optimizer steps per epoch over one step's trajectories.
            clip_eps_low / clip_eps_high: PPO ratio clip range ``[1-low, 1+high]``.
            loss_agg_mode: ``token-mean`` | ``seq-mean-token-mean`` | ``seq-mean-token-sum-norm``.
            scale_advantages: divide by the group's reward std (False: Dr. GRPO).
            kl_coeff: weight of the k3 KL to a frozen reference model (0: no reference model).
            entropy_coeff: entropy bonus weight.
            dynamic_sampling: leave zero-variance groups out of the update (DAPO).
            overlong_mask: no loss on truncated responses (DAPO).
            max_staleness: 0 = on-policy (ToRL); 1 = the EnvRunners sample step t+1 with the
                weights they hold while the Learners update on step t (verl's one-step-off-policy;
                episodes lag the learner by one version).
            importance_clip: None = the PPO ratio is taken against the recorded rollout
                log-probabilities (the behaviour policy); c > 1 = decoupled PPO: the ratio is
                taken against the policy at the start of the update, times the importance weight
                ``min(pi_start / pi_rollout, c)`` (truncated IS), for stale episodes.
            micro_batch_size: sequences per forward/backward pass on a Learner; gradients of
                the micro-batches add up before the one optimizer step of the mini-batch (the
                same step as without it, in bounded activation memory). None: the Learner's
                whole share of the mini-batch at once.
        """
        renamed = [f"{key}: {refused_training_key(key)}" for key in kwargs if key in RENAMED_TRAINING_KEYS]
        if renamed:
            raise TypeError("GRPOConfig.training(): " + "; ".join(renamed))
        super().training(**kwargs)
        self._set(locals(), exclude=("kwargs",))
        given = [key for key in kwargs if key in UNUSED_RLLIB_TRAINING_KEYS and key != "optimizer"]
        if given:  # (RLlib's update_from_dict passes every config dict's ``optimizer`` through here)
            self._unused_training_keys = sorted({*self._unused_training_keys, *given})
        return self

    def rollout(
        self, *, rollout_engine=NotProvided, engine_max_batch_size=NotProvided,
        vllm_kwargs=NotProvided, max_prompt_tokens=NotProvided, max_response_tokens=NotProvided,
        temperature=NotProvided, top_p=NotProvided, top_k=NotProvided, max_tool_calls=NotProvided,
        budget_counts_tool_output=NotProvided, observation_style=NotProvided, num_threads=NotProvided,
        infra_retries=NotProvided,
    ) -> "GRPOConfig":
        """Generation and tool-loop settings.

        Args:
            rollout_engine: ``hf`` (embedded, CPU/GPU), ``vllm`` (GPU), or ``package.module:Class``
                of another ``RolloutEngine``.
            engine_max_batch_size: most sequences per HF forward batch.
            vllm_kwargs: extra ``vllm.LLM`` arguments (e.g. ``gpu_memory_utilization``).
            max_prompt_tokens: longer prompts are skipped (counted as failed).
            max_response_tokens: the response budget.
            temperature / top_p / top_k: sampling (top_k 0 = off).
            max_tool_calls: C, the most code executions per response.
            budget_counts_tool_output: tool output counts against the budget (ToRL).
            observation_style: ``torl`` (last error line, 128+...+128) or ``full``.
            num_threads: torch threads of each remote EnvRunner. None (auto): on-policy, the
                machine's CPUs divided among the EnvRunners (rollout and update alternate, so
                the runners may use the cores the Learner leaves idle while they sample); with
                max_staleness=1, the CPUs Ray gives each runner.
            infra_retries: how often a generation, a sandbox call or a grading that failed in
                the infrastructure (engine error, jail or pool killed, grader crash) is retried
                for the same trajectory at the same point (same seed, same snippet); a
                trajectory that still fails takes its group out of the update.
        """
        self._set(locals())
        return self

    @override(AlgorithmConfig)
    def fault_tolerance(self, *, max_failed_fraction=NotProvided, failure_patience=NotProvided,
                        **kwargs) -> "GRPOConfig":
        """RLlib's fault tolerance (``restart_failed_env_runners``, ...) plus when a run whose
        trajectories keep failing stops.

        Args:
            max_failed_fraction: a step whose failed-trajectory fraction is at least this (or
                that has no trainable trajectory) is failing: it makes no update.
            failure_patience: after this many failing steps in a row the run stops
                (``RunUnhealthy``), naming the dominant cause; its weights are the last
                healthy step's.
        """
        super().fault_tolerance(**kwargs)
        self._set(locals(), exclude=("kwargs",))
        return self

    def task(
        self, *, train_data=NotProvided, prompt_template=NotProvided, reward=NotProvided,
        grade_timeout_s=NotProvided, trajectories_to_log=NotProvided, split_metrics_by=NotProvided,
    ) -> "GRPOConfig":
        """What is learned: dataset, prompt template, reward.

        Args:
            train_data: a dataset path or ``DatasetSpec`` fields (``torl_rllib.tasks``).
            prompt_template: a registered template name (``tir_base_0309``, ``no_tool_base``, ``chat``).
            reward: ``RewardConfig`` fields (``correct``, ``incorrect``, ``truncation_penalty``).
            grade_timeout_s: time bound of one grading.
            trajectories_to_log: sample trajectories each EnvRunner reports per step.
            split_metrics_by: a dataset column (e.g. ``kind``, ``data_source``): every response
                metric is also reported per value of it, as ``<metric>/<value>``.
        """
        self._set(locals())
        return self

    @override(AlgorithmConfig)
    def learners(self, *, learner_strategy=NotProvided, fsdp=NotProvided, colocate=NotProvided,
                 **kwargs) -> "GRPOConfig":
        """RLlib's Learner settings (``num_learners``, ``num_gpus_per_learner``, ...) plus how
        the Learners hold the model.

        Args:
            learner_strategy: ``ddp`` (RLlib's: full weights, gradients and optimizer state on
                every Learner) or ``fsdp`` (FSDP2: each of them sharded over the Learners; needs
                ``num_learners >= 1``, a process group).
            fsdp: ``param_dtype`` (compute dtype of the gathered weights, default bfloat16),
                ``reduce_dtype`` (gradient reduction, default float32), ``cpu_offload`` (keep the
                shards, gradients and optimizer state in CPU memory, default False).
            colocate: EnvRunner i and Learner i share GPU i: the rollout engine is created with
                sleep mode and releases its GPU memory during every update (vLLM: weights and
                KV cache), waking with the new weights. On-policy only. Give each EnvRunner more
                than half a GPU and each Learner the rest (e.g. 0.51 / 0.49): Ray places
                fractional GPUs best-fit, so two EnvRunners can then never share a GPU and each
                Learner lands on the GPU an EnvRunner leaves half free.
        """
        super().learners(**kwargs)
        self._set(locals(), exclude=("kwargs",))
        return self

    def fsdp_policy(self) -> dict[str, Any]:
        """``shard_causal_lm_module`` keyword arguments from ``fsdp``."""
        settings = {**FSDP_KEYS, **self.fsdp}
        return {"param_dtype": DTYPES[settings["param_dtype"]], "reduce_dtype": DTYPES[settings["reduce_dtype"]],
                "cpu_offload": bool(settings["cpu_offload"])}

    def sandbox(self, **sandbox_config) -> "GRPOConfig":
        """``sandbox.SandboxConfig`` fields of the interpreter pool (one per node)."""
        self.sandbox_config = {**self.sandbox_config, **sandbox_config}
        return self

    def tracking(self, **tracking_config) -> "GRPOConfig":
        """MLflow tracking (``torl_rllib.tracking.TrackingConfig`` fields): calling it turns
        tracking on (``enabled=False`` turns it off) through ``MlflowTrackingCallback``, so
        ``torl-rllib train``, a Tune trial and ``algo.train()`` record the same run."""
        self.tracking_config = {"enabled": True, **self.tracking_config, **tracking_config}
        return self

    @override(AlgorithmConfig)
    def evaluation(
        self, *, evaluation_benchmarks=NotProvided, evaluation_protocol=NotProvided,
        benchmarks_dir=NotProvided, **kwargs,
    ) -> "GRPOConfig":
        """RLlib's evaluation settings (``evaluation_interval``, ``evaluation_num_env_runners``,
        ``evaluation_config``, ...) plus what GRPO evaluates: every ``evaluation_interval``
        steps the policy answers each held-out benchmark on the evaluation EnvRunners, and the
        result is reported as ``eval/<benchmark>/<metric>`` (``torl_rllib.evaluation``).

        Args:
            evaluation_benchmarks: benchmark names (``aime24``, ``math500``, ``tiny_test``, ...),
                dataset paths, or ``{name: {path, problem_field, answer_field, ...}}`` entries.
            evaluation_protocol: ``EvalProtocol`` fields (default: greedy, one response each).
            benchmarks_dir: where registry names are looked up (default ``$TORL_BENCHMARKS_DIR``).
        """
        super().evaluation(**kwargs)
        self._set(locals(), exclude=("kwargs",))
        return self

    @override(AlgorithmConfig)
    def get_evaluation_config_object(self):
        eval_config = super().get_evaluation_config_object()
        if eval_config is not None:  # a local evaluation runner exactly when there is no remote one
            eval_config.create_local_env_runner = eval_config.num_env_runners == 0
        return eval_config

    def tracked_params(self) -> dict[str, Any]:
        """This config as a recipe (``config_keys``): the run's MLflow params."""
        return recipe_of(self)

    @override(AlgorithmConfig)
    def env_runners(self, **kwargs) -> "GRPOConfig":
        super().env_runners(**kwargs)
        if "create_local_env_runner" not in kwargs:
            # Sample in the driver only when there are no remote EnvRunners.
            self.create_local_env_runner = self.num_env_runners == 0
        return self

    def _set(self, values: dict, exclude=()) -> None:
        for name, value in values.items():
            if name not in ("self", "__class__", *exclude) and value is not NotProvided:
                setattr(self, name, value)

    # ---- RLlib hooks -----------------------------------------------------------------------
    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self):
        from torl_rllib.modules import CausalLMModule

        return RLModuleSpec(module_class=CausalLMModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self):
        from torl_rllib.algorithms.grpo.torch.grpo_torch_learner import GRPOTorchLearner

        return GRPOTorchLearner

    @property
    @override(AlgorithmConfig)
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "kl_coeff": self.kl_coeff}

    @property
    def train_batch_trajectories(self) -> int:
        return self.prompts_per_step * self.group_size

    def problems(self) -> list[ConfigProblem]:
        """Every invalid setting, each one readable line naming its attribute (empty when valid)."""
        return config_problems(self)

    @property
    def tracking_enabled(self) -> bool:
        return bool(self.tracking_config.get("enabled"))

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        errors = self.problems()
        if errors:
            raise ValueError("invalid GRPO config:\n  - " + "\n  - ".join(errors))
        if self.evaluation_interval and self.custom_evaluation_function is None:
            self.custom_evaluation_function = grpo_evaluation_function
        callbacks = force_list(self.callbacks_class)
        if self.tracking_enabled and MlflowTrackingCallback not in callbacks:
            self.callbacks_class = [*callbacks, MlflowTrackingCallback]


class GRPO(Algorithm):
    """Group Relative Policy Optimization with ToRL's tool-calling rollouts."""

    _ahead: RolloutAhead | None = None  # max_staleness=1: the next step's rollout, in flight

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> GRPOConfig:
        return GRPOConfig()

    def __init__(self, config=None, *args, **kwargs):
        # Tune passes the trial's identity inside a config dict, which RLlib's Algorithm drops
        # when it builds the AlgorithmConfig: keep it, so ``trial_id``/``trial_name`` work.
        trial_info = config.get(TRIAL_INFO) if isinstance(config, dict) else None
        super().__init__(config, *args, **kwargs)
        self._trial_info = self._trial_info or trial_info

    @override(Algorithm)
    def setup(self, config: GRPOConfig) -> None:
        from torl_rllib.tasks import load_dataset

        limit_trial_threads(config)
        check_schedulable(config)
        self._sandbox_pools = start_sandbox_pools(config)
        self.eval_benchmarks = load_eval_benchmarks(config)  # before any actor starts: fail fast
        super().setup(config)
        dataset = load_dataset(config.train_data)
        self._num_skipped_rows = dataset.num_skipped
        self.train_problems = skip_overlong_prompts(config, dataset.problems)
        unsplittable = split_column_problem(config, self.train_problems)
        if unsplittable:
            raise ValueError(unsplittable)
        self._num_skipped_rows += len(dataset.problems) - len(self.train_problems)
        self._prompts = PromptIterator(self.train_problems, seed=config.seed or 0)
        # How the run ends, for tracking: a failed step makes it FAILED; a driver that stops
        # on an interrupt sets KILLED before ``stop()``.
        self.run_status = "FINISHED"
        self.last_export: tuple[int, Path] | None = None  # (iteration, directory)
        self._weights_version = 0
        self._env_runner_restarts = 0  # EnvRunners brought back after a failure, this session
        self.step_rewound = False
        self.last_samples: list[dict] = []  # sample trajectories of the last step (for tracking)
        self.last_problem_ids: list[str] = []  # the problems the last step sampled
        self.last_failures: list[dict] = []  # the last step's failures: kind, count, example
        self.last_traces: list = []  # trace records of the last step's sampled trajectories (for tracking)
        self.last_eval_traces: list[tuple[str, list]] = []  # (benchmark, trace records) of its evaluation
        self._failing = FailingStreak(config.max_failed_fraction, config.failure_patience)
        # Set when failure_patience failing steps in a row ended the run's health: the driver
        # raises it after logging that step; a Tune trial's next train() raises it.
        self.unhealthy: RunUnhealthy | None = None
        self._sync_weights()  # every EnvRunner starts from the learner's weights

    @override(Algorithm)
    def step(self) -> dict:
        """RLlib's step, plus the flat per-step metrics under ``result["torl"]`` (what MLflow,
        the CLI and Tune's schedulers read, e.g. Tune's metric ``torl/accuracy``)."""
        interval = self.config.evaluation_interval
        evaluates = bool(interval and (self.iteration + 1) % interval == 0)  # RLlib's own test
        self.last_eval_traces = []
        try:
            result = super().step()
        except BaseException:
            self.run_status = "FAILED"
            raise
        # RLlib repeats the last evaluation in every later result: report it at its own step only.
        result[RESULT_KEY] = step_metrics(result, evaluation=evaluates)
        return result

    @override(Algorithm)
    def training_step(self) -> None:
        """Sample (or take the rollout sampled during the last update), learn, sync weights.

        On-policy (``max_staleness=0``, ToRL's): sample with the learner's weights, update, sync.
        One step off-policy (``max_staleness=1``): this step's rollout was sampled while the
        Learners updated on the last step's; the runners get the learner's weights and start
        the next step's rollout before this step's update begins.
        """
        if self.unhealthy is not None:
            raise self.unhealthy
        step_start = time.perf_counter()
        self.step_rewound = False  # True when this step stopped before it changed any state
        current, self._ahead = self._ahead or self._draw_rollout(), None
        try:
            with self.metrics.log_time((TIMERS, TIMER_ROLLOUT), reduce="mean", window=1):
                episodes, rollouts, resampled = current.result(sample=self._sample)
            if any(r["stats"].get(f"failed/{SANDBOX_FAILED}") for r in rollouts):
                check_sandbox_pools(self._sandbox_pools)  # restarting: fine; gone: stop the run
        except (RunCannotContinue, KeyboardInterrupt):
            self._prompts.set_state(current.data_position)  # the step never happened: a checkpoint redoes it
            self.step_rewound = True
            raise
        self.last_problem_ids = [p.id for p in current.problems]
        if self.config.max_staleness:
            # The runners are idle until the next rollout starts: RLlib's per-step restore (which
            # skips while a rollout runs ahead) happens here, then the sync.
            self._restore_env_runners(self.env_runner_group)
            with self.metrics.log_time((TIMERS, TIMER_SYNC), reduce="mean", window=1):
                weights = self._sync_weights()
            next_iteration = self.iteration + 1  # the seeds are those of the step it is sampled for
            self._ahead = self._draw_rollout().start(lambda problems: self._sample(problems, next_iteration, weights))
        summary = summarize_rollouts(rollouts, learner_version=self._weights_version)
        summary[VERSION_LAG] = max(
            (self._weights_version - int(ep.get_extra_model_outputs(WEIGHTS_VERSION, 0)) for ep in episodes), default=0)
        summary["dataset_rows_skipped"] = self._num_skipped_rows
        summary["env_runner_restarts"] = self._env_runner_restarts
        summary["resampled_shards"] = resampled  # re-sampled after a runner failed
        summary["healthy_env_runners"] = self.env_runner_group.num_healthy_remote_workers()
        self.metrics.log_dict(summary, key=ENV_RUNNER_RESULTS, window=1)
        self.metrics.log_value(
            (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), len(episodes), reduce="lifetime_sum"
        )
        self.last_samples = [row for r in rollouts for row in r["samples"]]
        self.last_traces = gather_traces(rollouts)
        self.last_failures = summarize_failures(rollouts)
        streak, unhealthy = self._failing.record(self.iteration + 1, summary, bool(episodes), self.last_failures,
                                                 current.data_position)
        if unhealthy is not None:  # the driver raises it after logging this step
            self.unhealthy = unhealthy
            self._prompts.set_state(self._failing.data_position)
            self._ahead = None  # its problems come after the rewound position: sampled again
        if streak:
            logger.warning("step %d: %.0f%% of the trajectories failed (%s); no update (%d failing step(s) in a row)",
                           self.iteration + 1, 100 * summary[FAILED_FRACTION],
                           ", ".join(f"{f['kind']} x{f['count']}" for f in self.last_failures) or "none trainable",
                           streak)
        elif episodes:
            try:
                if self.config.colocate:  # the engines give their GPU memory to the Learners
                    self.env_runner_group.foreach_env_runner(lambda runner: runner.sleep_engine())
                with self.metrics.log_time((TIMERS, TIMER_LEARN), reduce="mean", window=1):
                    train_on_episodes(self, episodes)
                self._weights_version += 1
                if not self.config.max_staleness:
                    with self.metrics.log_time((TIMERS, TIMER_SYNC), reduce="mean", window=1):
                        self._sync_weights()
            except RayActorError as exc:
                if not self._is_learner_failure(exc):
                    raise
                raise LearnersLost(
                    f"a Learner died during step {self.iteration + 1} ({type(exc).__name__}). RLlib "
                    f"{ray.__version__} cannot restart Learners (the LearnerGroup is one torch process "
                    "group, built once): resume from the newest checkpoint") from exc
        else:
            logger.warning("step %d: no trainable trajectory (every group was filtered by dynamic sampling)",
                           self.iteration + 1)
        self.metrics.log_value((TIMERS, TIMER_STEP), time.perf_counter() - step_start, window=1)

    def finish_rollout_ahead(self) -> None:
        """Wait for the rollout running ahead (``max_staleness=1``), if any; it is kept for the
        next step. Anything else that needs the training EnvRunners calls this first."""
        if self._ahead is not None:
            self._ahead.wait()  # a failure surfaces in the next step, which rewinds its data

    def _draw_rollout(self) -> RolloutAhead:
        """The next step's problems, drawn now (with the data position to rewind to)."""
        position = self._prompts.get_state()
        return RolloutAhead(self._prompts.next_batch(self.config.prompts_per_step), position, self._weights_version)

    def _is_learner_failure(self, exc: RayActorError) -> bool:
        """Whether ``exc`` came from one of the LearnerGroup's actors (not an EnvRunner's)."""
        return is_learner_failure(self.learner_group, exc)

    def _sample(self, problems: list, iteration: int | None = None, weights: tuple | None = None) -> tuple[list, list[dict], int]:
        """``execution.rollout_ops.sample``: the step's problems over the EnvRunners, failure-tolerant."""
        return rollout_ops.sample(self, problems, iteration, weights)

    def wait_for_env_runners(self, group, weights: tuple | None = None) -> list[int]:
        """With no healthy runner left: wait for restarts and restore them (``rollout_ops``)."""
        return rollout_ops.wait_for_env_runners(self, group, weights)

    @override(Algorithm)
    def restore_env_runners(self, env_runner_group) -> list[int]:
        """Bring failed EnvRunners back (RLlib's restart) and give them the current weights
        through the blocking, versioned sync before they sample (RLlib's own re-sync is
        fire-and-forget). Called by RLlib before every step, and by ``_sample`` mid-step. While a
        rollout runs ahead, its own thread restores the runners it uses (with its weights)."""
        if self._ahead is not None and self._ahead.running and env_runner_group is self.env_runner_group:
            return []
        return self._restore_env_runners(env_runner_group)

    def _restore_env_runners(self, env_runner_group, weights: tuple | None = None) -> list[int]:
        return rollout_ops.restore_env_runners(self, env_runner_group, weights)

    def _sync_weights(self) -> tuple:
        """Blocking broadcast of the learner's weights to every (training) EnvRunner."""
        return self.sync_weights_to(self.env_runner_group)

    def sync_weights_to(self, group, remote_ids: list[int] | None = None, weights: tuple | None = None) -> tuple:
        """Blocking, versioned broadcast of ``weights`` (default: the learner's) to ``group``'s
        runners, each confirming its version (``execution.weight_sync``). Returns (ref, version)."""
        return sync_weights_to(self, group, remote_ids, weights)

    def policy_weights(self) -> dict:
        """The Learners' policy as an inference-only module state (what EnvRunners load)."""
        return policy_weights(self.learner_group)

    def export_policy(self, out_dir: str | Path) -> Path:
        """Write the current policy as a Hugging Face model directory (no checkpoint needed)."""
        from torl_rllib.export import export_weights

        out = export_weights(self.policy_weights(), self.config.model_config, out_dir)
        self.last_export = (self.iteration, out)
        return out

    @override(Algorithm)
    def cleanup(self) -> None:
        callback = tracking_callback(self)
        if callback is not None:  # RLlib has no stop hook: the algorithm calls it
            callback.on_algorithm_stop(algorithm=self, status=self.run_status)
        super().cleanup()

    # ---- checkpoint state --------------------------------------------------------------------
    @override(Algorithm)
    def save_to_path(self, path=None, *args, **kwargs) -> str:
        """RLlib's save, made atomic (``execution.checkpointing``): written to ``PATH.partial``
        and renamed, so a crash or a kill mid-save never leaves a half checkpoint under ``path``."""
        self._gather_sharded_learner_state()
        save = super().save_to_path
        path = save_atomically(lambda to: save(to, *args, **kwargs), path)
        callback = tracking_callback(self)
        if callback is not None:  # RLlib has no checkpoint-saved hook: the algorithm calls it
            callback.on_checkpoint_saved(algorithm=self, path=str(path))
        return path

    def _gather_sharded_learner_state(self) -> None:
        gather_sharded_learner_state(self.config, self.learner_group)

    @override(Algorithm)
    def get_state(self, components=None, *, not_components=None, **kwargs):
        if self._check_component(COMPONENT_LEARNER_GROUP, components, not_components):
            self._gather_sharded_learner_state()
        state = super().get_state(components, not_components=not_components, **kwargs)
        state[PROMPT_STATE] = self._prompts.get_state()
        state[VERSION_STATE] = self._weights_version
        if self._ahead is not None:  # waits for the rollout in flight and records it
            try:
                state[AHEAD_STATE] = self._ahead.get_state()
            except Exception:  # it failed: the checkpoint's data position redoes its problems
                state[PROMPT_STATE] = self._ahead.data_position
        callback = tracking_callback(self)
        if callback is not None:
            state[TRACKING_STATE] = callback.get_state(self)
        return state

    @override(Algorithm)
    def set_state(self, state) -> None:
        super().set_state(state)
        if PROMPT_STATE in state:
            self._prompts.set_state(state[PROMPT_STATE])
        if VERSION_STATE in state:
            self._weights_version = state[VERSION_STATE]
        self._ahead = RolloutAhead.from_state(state[AHEAD_STATE]) if state.get(AHEAD_STATE) else None
        callback = tracking_callback(self)
        if callback is not None and TRACKING_STATE in state:
            callback.set_state(self, state[TRACKING_STATE])

    @override(Algorithm)
    def restore_from_path(self, path, *args, **kwargs):
        check_restorable(path, kwargs.get("component"))  # a damaged checkpoint is refused, naming its file
        super().restore_from_path(path, *args, **kwargs)
        self._sync_weights()  # RLlib's restore sync is fire-and-forget: make it certain
