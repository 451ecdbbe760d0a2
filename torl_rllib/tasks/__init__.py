"""Everything between a dataset file and a reward: datasets, prompt templates, answer extraction,
grading (math-verify, bounded in time) and ToRL's reward.

    from torl_rllib.tasks import load_dataset, render_prompt, grade, compute_reward, RewardConfig
"""

from torl_rllib.tasks.batch import BatchGrader, BatchStats
from torl_rllib.tasks.datasets import Dataset, DatasetSpec, Problem, RowError, load_dataset
from torl_rllib.tasks.extraction import extract_boxed
from torl_rllib.tasks.grading import DEFAULT_TIMEOUT_S, GradeResult, grade
from torl_rllib.tasks.reward import RewardConfig, compute_reward
from torl_rllib.tasks.templates import register_template, render_prompt, template_names

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "BatchGrader",
    "BatchStats",
    "Dataset",
    "DatasetSpec",
    "GradeResult",
    "Problem",
    "RewardConfig",
    "RowError",
    "compute_reward",
    "extract_boxed",
    "grade",
    "load_dataset",
    "register_template",
    "render_prompt",
    "template_names",
]
