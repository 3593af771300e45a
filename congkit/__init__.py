"""congkit: contrastive weak-to-strong generalization (ConG) on stock transformers and TRL."""

from .decoding import (
    DecodingConfig,
    Generation,
    apply_repetition_penalty,
    choose_tokens,
    contrastive_generate,
    contrastive_scores,
    plausibility_head,
    sample,
)
from .evaluation import main_table, preconditions, summarise, verdicts
from .methods import METHODS, Method
from .rewards import ImplicitReward, completion_logprobs, implicit_reward, implicit_reward_from_ids
from .scorers import RewardModelScorer
from .stages import Pipeline, PipelineConfig, Setting, smoke_pipeline_config
from .tokens import encode_pair, encode_prompt
from .training import TrainConfig
from .world import ExplicitReward, NoiseRates, Task, WorldData, judge
from .world_build import World, WorldConfig, build_world, card_table, smoke_world_config

__all__ = [
    "DecodingConfig",
    "Pipeline",
    "PipelineConfig",
    "RewardModelScorer",
    "Setting",
    "TrainConfig",
    "main_table",
    "METHODS",
    "Method",
    "preconditions",
    "smoke_pipeline_config",
    "summarise",
    "verdicts",
    "ExplicitReward",
    "NoiseRates",
    "Task",
    "World",
    "WorldConfig",
    "WorldData",
    "build_world",
    "card_table",
    "judge",
    "smoke_world_config",
    "Generation",
    "ImplicitReward",
    "apply_repetition_penalty",
    "choose_tokens",
    "completion_logprobs",
    "contrastive_generate",
    "contrastive_scores",
    "encode_pair",
    "encode_prompt",
    "implicit_reward",
    "implicit_reward_from_ids",
    "plausibility_head",
    "sample",
]
