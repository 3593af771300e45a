"""Batched contrastive decoding and sampling: `DecodingConfig` in, `Generation` out.

    config.py   what a run is asked and what it returns
    engine.py   the batched loop around the one CD step (`congkit/hub/custom_generate/step.py`), the public functions
    runtime.py  key-value caches and the thread plan that steps the two models
"""

from congkit.decoding.config import DecodingConfig, Generation
from congkit.decoding.engine import contrastive_generate, next_tokens, prompt_ids, sample, warpers
from congkit.decoding.runtime import PreallocatedLayer, Stepper, ThreadPlan, decode_threads, new_cache, step_models
from congkit.hub.custom_generate.step import (
    apply_repetition_penalty,
    cd_step,
    contrastive_scores,
    plausibility_head,
)

__all__ = ["DecodingConfig", "Generation", "PreallocatedLayer", "Stepper", "ThreadPlan", "apply_repetition_penalty",
           "cd_step", "contrastive_generate", "contrastive_scores", "decode_threads", "new_cache", "next_tokens",
           "plausibility_head", "prompt_ids", "sample", "step_models", "warpers"]  # fmt: skip
