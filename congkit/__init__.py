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
from .rewards import ImplicitReward, completion_logprobs, implicit_reward, implicit_reward_from_ids
from .tokens import encode_pair, encode_prompt

__all__ = [
    "DecodingConfig",
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
