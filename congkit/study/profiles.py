"""The study's named parameter profiles (smoke, default, regime, real, plan) and the objects each builds: the world,
its setting and the cached pipeline; real checkpoints given as a JSON of overrides (`--real`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from congkit.pipeline import Pipeline, PipelineConfig, Setting, smoke_pipeline_config
from congkit.pipeline.world_build import WorldConfig, build_world, smoke_world_config
from congkit.study.paths import chapters
from congkit.study.regime import RegimeConfig, regime_pipeline, smoke_regime_config


@dataclass
class RealCheckpoints:
    """The real-model profile: modelled on the paper's smallest setting. Any folder works in place of a hub id."""

    weak_model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    strong_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    reward_model: str = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"
    prompts: str = "HuggingFaceH4/ultrafeedback_binarized"
    train_split: str = "train_prefs"
    eval_split: str = "test_prefs"
    prompt_column: str = "prompt"
    n_train_prompts: int = 2000
    n_eval_prompts: int = 200
    multiple_choice: str | None = None  # optional: a save_to_disk folder (question, choices, answer) for retention
    max_new_tokens: int = 512
    device: str | None = None  # auto: cuda if present


PROFILES = ("smoke", "default", "regime", "real", "plan", "plan2")


# The regime map (notebooks/06_regime.md) is its own profile: it runs the whole pipeline in 9 cells (~30 min), too long
# for `make study`. `smoke` runs every chapter (the regime map on a smoke grid); `default` and `real` every chapter
# but the regime map; `regime` only the regime map, on the default world (whose stages it shares with `default`).
REGIME_CHAPTERS = ("06_regime.md",)


@dataclass
class Profile:
    name: str
    world: WorldConfig | None = None
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    real: RealCheckpoints | None = None
    regime: RegimeConfig | None = None  # the regime map's grid (synthetic world only)
    cache: str = ""  # the pipeline's folder under the runs folder: pipeline-<cache or name>

    def chapters(self) -> list[str]:
        """The chapters this profile executes."""
        if self.name == "smoke":
            return list(chapters())
        if self.name == "regime":
            return [n for n in chapters() if n in REGIME_CHAPTERS]
        if self.name in ("plan", "plan2"):
            return []
        return [n for n in chapters() if n not in REGIME_CHAPTERS]


def get_profile(name: str, real_overrides: dict | None = None) -> Profile:
    """A named profile; `real_overrides` set fields of `RealCheckpoints` (model ids or folders, dataset, sizes)."""
    if name == "smoke":
        return Profile("smoke", world=smoke_world_config(), pipeline=smoke_pipeline_config(),
                       regime=smoke_regime_config())  # fmt: skip
    if name in ("default", "regime"):
        return Profile(name, world=WorldConfig(), pipeline=PipelineConfig(), regime=RegimeConfig(), cache="default")
    if name in ("plan", "plan2"):  # a pre-registered plan's worlds (congkit.study.worlds, .plan2); tables, no chapters
        return Profile(name, world=WorldConfig(), pipeline=PipelineConfig())
    if name == "real":
        real = RealCheckpoints(**check_real(real_overrides or {}))
        pipeline = real_pipeline_config()
        pipeline.sampling.max_new_tokens = real.max_new_tokens
        return Profile("real", pipeline=pipeline, real=real)
    raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")


def real_pipeline_config() -> PipelineConfig:
    """The paper's optimiser settings (Jiang et al., 2025) for 0.5-8B models; one seed, two noise levels by default."""
    from congkit.decoding import DecodingConfig
    from congkit.pipeline.training import TrainConfig

    return PipelineConfig(
        seeds=[0],
        noise_levels=[0.0, 0.2],
        n_preference_samples=5,
        sampling=DecodingConfig.authors(plausibility_threshold=None, max_new_tokens=512, batch_size=16),
        alpha_sweep=[0.0, 0.25, 0.5, 0.75, 1.0],
        weak_dpo=TrainConfig(
            learning_rate=8e-7, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        strong_sft=TrainConfig(
            learning_rate=1e-5, num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),  # fmt: skip
        wspo=TrainConfig(learning_rate=1e-6, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8),
        cong_dpo=TrainConfig(
            learning_rate=6e-7, beta=0.5, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        gold_dpo=TrainConfig(
            learning_rate=8e-7, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        eval_samples=1,
    )


def real_setting(real: RealCheckpoints) -> Setting:
    """A `Setting` on real checkpoints: prompts from a dataset (hub id or local folder), a reward model as judge."""
    from congkit.pipeline.data import load_prompts, load_saved_dataset
    from congkit.scorers import RewardModelScorer

    train = load_prompts(real.prompts, real.train_split, real.prompt_column, real.n_train_prompts)
    evaluation = load_prompts(real.prompts, real.eval_split, real.prompt_column, real.n_eval_prompts)
    return Setting(
        name="real",
        weak_base=real.weak_model,
        strong_base=real.strong_model,
        train_prompts=train,
        eval_prompts=evaluation,
        scorer=RewardModelScorer(real.reward_model, device=real.device),
        multiple_choice=load_saved_dataset(real.multiple_choice) if real.multiple_choice else None,
        device=real.device,
    )


def study_objects(profile: str = "default", runs_dir: str | Path = "runs", progress: bool = True,
                  real: dict | None = None):  # fmt: skip
    """(world or None, setting, pipeline) for a profile; building the world on first use. `real`: overrides of
    `RealCheckpoints` for the real profile (e.g. {"weak_model": "/models/qwen-0.5b"})."""
    prof = get_profile(profile, real)
    runs_dir = Path(runs_dir)
    if prof.real is not None:
        return None, *_pipeline(real_setting(prof.real), prof.pipeline, runs_dir / "real", progress)
    world = build_world(prof.world, root=runs_dir, progress=progress)
    return world, *_pipeline(Setting.from_world(world), prof.pipeline, pipeline_root(prof, runs_dir), progress)


def pipeline_root(prof: Profile, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / f"pipeline-{prof.cache or prof.name}"


def regime_objects(profile: str = "regime", runs_dir: str | Path = "runs", progress: bool = True):
    """(world, grid, {weak pair's name: pipeline}) of the regime map; building the world and the weak bases on first
    use."""
    prof = get_profile(profile)
    if prof.regime is None:
        raise ValueError(f"profile {profile!r} has no regime map: it needs the synthetic world (smoke or regime)")
    prof.regime.validate()
    world = build_world(prof.world, root=runs_dir, progress=progress)
    root = pipeline_root(prof, runs_dir)
    pipes = {w.name: regime_pipeline(world, prof.pipeline, prof.regime, w, root, progress) for w in prof.regime.weak}
    return world, prof.regime, pipes


def _pipeline(setting: Setting, config: PipelineConfig, root: Path, progress: bool):
    return setting, Pipeline(setting, config, root=root, progress=progress)


REAL_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(RealCheckpoints)}


def parse_real(text: str) -> dict:
    """The --real JSON: an object whose keys are `RealCheckpoints` fields, with values of the field's type."""
    try:
        real = json.loads(text)
    except ValueError as error:
        raise ValueError(f"--real is not valid JSON ({error}): {text!r}") from error
    return check_real(real)


def check_real(real: dict) -> dict:
    """Overrides of `RealCheckpoints`: known fields only, each of the field's type."""
    if not isinstance(real, dict):
        raise ValueError(f"--real must be a JSON object of RealCheckpoints fields, got {type(real).__name__}")
    unknown = sorted(set(real) - set(REAL_FIELD_TYPES))
    if unknown:
        raise ValueError(f"--real: unknown field(s) {unknown}; RealCheckpoints fields: {sorted(REAL_FIELD_TYPES)}")
    for name, value in real.items():
        kind = REAL_FIELD_TYPES[name]
        if "int" in kind and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"--real: {name} must be a positive integer, got {value!r}")
        if "str" in kind and not (isinstance(value, str) or (value is None and "None" in kind)):
            raise ValueError(f"--real: {name} must be a string, got {value!r}")
    return real
