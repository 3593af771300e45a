"""congkit: contrastive weak-to-strong generalization (ConG) on stock transformers and TRL.

The library's names load lazily: `import congkit` imports nothing heavy; `congkit.contrastive_generate` imports the
decoding module (torch, transformers) on first use, `congkit.Pipeline` the TRL/datasets stack (the `train` extra).
"""

from __future__ import annotations

import importlib
import os

# Thread-robust by default: OpenMP threads that busy-wait between parallel regions collapse decoding (measured: batch-1
# CD from 240 to 24-44 tokens/s) when another busy process shares the cores; passive waiting keeps it. It only takes
# effect if congkit is imported before torch loads OpenMP; set OMP_WAIT_POLICY=ACTIVE yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from typing import TYPE_CHECKING

from congkit import _extras

_extras.install()  # a missing optional package names the extra to install (`congkit[train]`, `congkit[study]`)

# public name -> the module that defines it
_EXPORTS = {
    "decoding": ["DecodingConfig", "Generation", "apply_repetition_penalty", "cd_step", "contrastive_generate",
                 "contrastive_scores", "plausibility_head", "prompt_ids", "sample", "warpers"],
    "generation": ["CUSTOM_GENERATE_DIR", "ContrastiveDecoderOnlyOutput", "cd_generation_config", "contrastive_decoding"],
    "rewards": ["ImplicitReward", "completion_logprobs", "implicit_reward", "implicit_reward_from_ids"],
    "tokens": ["encode_pair", "encode_prompt", "is_templated"],
    "pipeline.methods": ["METHODS", "Method", "Recipe"],
    "pipeline.cong": ["reference_cd", "run_cong"],
    "pipeline.evaluation": ["main_table", "preconditions", "summarise", "verdicts"],
    "scorers": ["RewardModelScorer"],
    "pipeline": ["Pipeline", "PipelineConfig", "Setting", "smoke_pipeline_config"],
    "pipeline.training": ["TrainConfig"],
    "pipeline.world": ["ExplicitReward", "NoiseRates", "Task", "WorldData", "judge"],
    "pipeline.world_build": ["World", "WorldConfig", "build_world", "card_table", "smoke_world_config"],
    "study.regime": ["RegimeConfig", "run_regime"],
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'congkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from congkit.decoding import (  # noqa: F401
        DecodingConfig,
        Generation,
        apply_repetition_penalty,
        cd_step,
        contrastive_generate,
        contrastive_scores,
        plausibility_head,
        prompt_ids,
        sample,
        warpers,
    )
    from congkit.generation import (  # noqa: F401
        CUSTOM_GENERATE_DIR,
        ContrastiveDecoderOnlyOutput,
        cd_generation_config,
        contrastive_decoding,
    )
    from congkit.pipeline import Pipeline, PipelineConfig, Setting, smoke_pipeline_config  # noqa: F401
    from congkit.pipeline.cong import reference_cd, run_cong  # noqa: F401
    from congkit.pipeline.evaluation import main_table, preconditions, summarise, verdicts  # noqa: F401
    from congkit.pipeline.methods import METHODS, Method, Recipe  # noqa: F401
    from congkit.pipeline.training import TrainConfig  # noqa: F401
    from congkit.pipeline.world import ExplicitReward, NoiseRates, Task, WorldData, judge  # noqa: F401
    from congkit.pipeline.world_build import World, WorldConfig, build_world, card_table, smoke_world_config  # noqa: F401
    from congkit.rewards import ImplicitReward, completion_logprobs, implicit_reward, implicit_reward_from_ids  # noqa: F401
    from congkit.scorers import RewardModelScorer  # noqa: F401
    from congkit.study.regime import RegimeConfig, run_regime  # noqa: F401
    from congkit.tokens import encode_pair, encode_prompt, is_templated  # noqa: F401
