"""What a pipeline runs on and with: the `Setting` (models, prompts, judge) and the `PipelineConfig` (every knob).

    setting = Setting.from_world(build_world(WorldConfig()))       # or Setting(...) with real checkpoints
    results = Pipeline(setting, PipelineConfig(), root="runs").run() # tidy table: method, seed, eps, alpha, metric, value

The numbers the pre-registered plan fixes (CD's alpha and head, best-of-N's N) are read from the plan
(`congkit.pipeline.plan`) as the config's defaults: one source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset

from congkit.decoding import DecodingConfig
from congkit.pipeline import plan
from congkit.pipeline.cache import artifact_digest, fingerprint, folder_fingerprint
from congkit.pipeline.code_key import code_key
from congkit.pipeline.data import content_key
from congkit.pipeline.methods import recipe, with_role
from congkit.pipeline.training import TrainConfig
from congkit.scorers import Scorer


@dataclass
class Setting:
    """Where models, prompts and the judge come from. Model entries are folders or hub ids."""

    name: str
    weak_base: str
    strong_base: str
    train_prompts: Dataset  # column "prompt"
    eval_prompts: Dataset  # column "prompt"
    scorer: Scorer
    heldout_prompts: Dataset | None = None  # columns "prompt", "reference" (capability retention)
    valid_prompts: Dataset | None = None  # column "prompt": where training budgets are tuned (never the eval prompts)
    is_correct: Callable[[str, str], bool] | None = None  # (prompt, response) -> answer right? (heldout)
    multiple_choice: Dataset | None = None  # columns question, choices, answer (capability retention, real models)
    gold_responses: Callable[[str], str] | None = None  # prompt -> ideal response (the gold ceiling's SFT data)
    preference_probes: Callable[[str], list[tuple[str, str, str]]] | None = None  # prompt -> [(attribute, better,
    #   one-attribute-worse response)]: the weak pair's attribute probes (a precondition); synthetic world only
    tokenizer: str | None = None  # defaults to weak_base's folder / id
    key: str = ""  # identifies the setting in cache keys (default: its models' and data's contents)
    device: str | None = None
    dtype: torch.dtype | None = None

    def __post_init__(self):
        for split in ("train_prompts", "eval_prompts"):
            ds = getattr(self, split)
            if "prompt" not in ds.column_names:
                raise ValueError(f"setting {self.name!r}: {split} lacks a 'prompt' column (has {ds.column_names})")
            if len(ds) == 0:
                raise ValueError(f"setting {self.name!r}: {split} is empty")
        if not self.key:  # everything a cached stage's output depends on, the judge included
            extra = [content_key(d) for d in (self.heldout_prompts, self.multiple_choice, self.valid_prompts)
                     if d is not None]  # fmt: skip
            self.key = fingerprint(
                self.name, *(_model_key(m) for m in (self.weak_base, self.strong_base, self.tokenizer or "")),
                getattr(self.scorer, "name", type(self.scorer).__name__), code_key(type(self.scorer)),
                content_key(self.train_prompts), content_key(self.eval_prompts), extra,
            )  # fmt: skip

    @classmethod
    def from_world(cls, world, device: str | None = None) -> Setting:
        """The synthetic world as a setting: exact reward as judge, the held-out family for capability."""
        from congkit.pipeline.world import (
            PREFERENCE_ATTRIBUTES,
            canonical_response,
            dataset_tasks,
            judge,
            one_attribute_worse,
        )

        heldout = world.prompts("heldout")
        tasks = {t.prompt: t for split in world.splits for t in dataset_tasks(world.prompts(split))}
        shape = world.config.data.shape
        heldout = heldout.map(lambda row: {"reference": canonical_response(tasks[row["prompt"]], shape)})

        def probes(prompt: str) -> list[tuple[str, str, str]]:
            task = tasks[prompt]
            return [(a, canonical_response(task, shape), one_attribute_worse(task, a, shape)) for a in PREFERENCE_ATTRIBUTES]

        scorer = world.reward()
        return cls(
            name=f"world-{world.path.name}",
            weak_base=str(world.model_path("weak_base")),
            strong_base=str(world.model_path("strong_base")),
            tokenizer=str(world.path / "tokenizer"),
            train_prompts=world.prompts("train"),
            eval_prompts=world.prompts("eval"),
            heldout_prompts=heldout,
            valid_prompts=world.prompts("valid") if "valid" in world.splits else None,
            scorer=scorer,
            is_correct=lambda p, r: judge(tasks[p], r, shape).correct,
            gold_responses=lambda p: canonical_response(tasks[p], shape),
            preference_probes=probes,
            # the world's settings and its models' bytes, and the code of its judge and of the callables above
            key=f"{world.path.name}@{artifact_digest(world.path)}:{code_key(Setting.from_world, type(scorer))}",
            device=device or "cpu",
            dtype=torch.float32,
        )


@dataclass
class PipelineConfig:
    """Every knob of the experiment. Learning rates are for the tiny world's models (the paper's are for 3-8B)."""

    seeds: list[int] = field(default_factory=lambda: list(range(20)))  # paired replicates of the whole pipeline
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.4])  # the first is the clean setting
    n_preference_samples: int = 4
    # T 0.8 / top-p 0.95 as the authors; no repetition penalty: answers legitimately repeat tokens ("a b b").
    sampling: DecodingConfig = field(
        default_factory=lambda: DecodingConfig.authors(
            plausibility_threshold=None, repetition_penalty=1.0, max_new_tokens=20, batch_size=256
        )
    )
    # fixed before any run (the plan's [study] cd_alpha and min_p): claim 2's alpha and head, and the ConG data's
    cd_alpha: float = field(default_factory=lambda: plan.value("study", "cd_alpha"))
    cd_lam: float = field(default_factory=lambda: plan.value("study", "min_p"))
    alpha_sweep: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    # DPO stages add an NLL term on the chosen response (RPO; TRL loss_type ["sigmoid", "sft"]): plain DPO on these
    # tiny models collapses them (measured: weak aligned R_pref 0.61 -> 0.53, correct rate 0.35 -> 0.09).
    # a light weak DPO (many small steps): pi_r learns the preferences partly (measured over 3 seeds: 63% of the
    # R_pref headroom, attribute probes >= 0.94); lr 3e-4 x 3 epochs gave the same pi_r but a format probe of 0.897
    weak_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1.5e-4, num_train_epochs=8,
                                                                      beta=0.1, dpo_loss=["sigmoid", "sft"]))  # fmt: skip
    strong_sft: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=3e-4, num_train_epochs=3))
    # the ceiling is trained to convergence on gold responses (R_pref 0.978 vs 0.962 with strong_sft's 3 epochs)
    gold_sft: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=3e-4, num_train_epochs=6))
    auxconf_weight: float = 0.5
    wspo: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=3e-4, num_train_epochs=3, beta=0.1))
    cong_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1e-4, num_train_epochs=2, beta=0.5,
                                                                      dpo_loss=["sigmoid", "sft"]))  # fmt: skip
    gold_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=2e-4, num_train_epochs=2, beta=0.1,
                                                                      dpo_loss=["sigmoid", "sft"]))  # fmt: skip
    # the strong methods each replicate trains (registry names, `congkit.pipeline.methods`): the paper's five and the analysis
    # plan's decomposition arms (`analysis_plan.md`)
    methods: list[str] = field(default_factory=lambda: [*with_role("baseline", "ours"),
                                                        *plan.value("decomposition", "arms")])  # fmt: skip
    # the bon_implicit arm: samples per training prompt to pick from (the plan's [decomposition] best_of_n)
    best_of_n: int = field(default_factory=lambda: plan.value("decomposition", "best_of_n"))
    # the pre-registered plan whose tuning grid and tuned methods a tuned budget reads (1: analysis_plan.md, 2:
    # analysis_plan_2.md, whose grid is extended once past an edge the choice lies on)
    plan: int = 1
    # per-method training settings that replace the recipe's configured ones (e.g. a level's tuned choices, reused)
    budgets: dict[str, TrainConfig] = field(default_factory=dict)
    # "fixed": each method's configured settings; "tuned": the grid point chosen on the validation prompts
    # (analysis_plan.md: grid, criterion and methods; tuned on the first seed, kept for the others)
    budget: str = "fixed"
    eval_samples: int = 8  # samples per evaluation prompt (also the size of the weak pair's own-sample pool)
    best_of: int = 4  # the best-of-k precondition

    def validate(self) -> None:
        if not self.seeds:
            raise ValueError("PipelineConfig.seeds is empty: name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"PipelineConfig.seeds repeats a seed ({self.seeds}): each replicate once")
        if not self.noise_levels or any(not 0.0 <= e <= 1.0 for e in self.noise_levels):
            raise ValueError(f"noise_levels must be a non-empty list in [0, 1], got {self.noise_levels}")
        if self.n_preference_samples < 2:
            raise ValueError(f"n_preference_samples must be >= 2 to form a pair, got {self.n_preference_samples}")
        if self.best_of < 2:  # with eval_samples < best_of the best-of-k precondition is simply not measured
            raise ValueError(f"best_of must be >= 2, got {self.best_of}")
        for name in self.methods:
            recipe(name)  # an unknown method, or one without a recipe, raises here
        if self.budget not in ("fixed", "tuned"):
            raise ValueError(f"budget must be 'fixed' or 'tuned', got {self.budget!r}")
        if self.plan not in plan.PLAN_FILES:
            raise ValueError(f"plan must be one of {sorted(plan.PLAN_FILES)}, got {self.plan!r}")
        for name, cfg in self.budgets.items():
            recipe(name)
            cfg.validate(f"PipelineConfig.budgets[{name!r}]")
        if self.budget == "tuned":
            for name in ("learning_rate_multipliers", "epochs"):
                grid = plan.value("tuning", name, plan=self.plan)
                if not grid or any(not isinstance(v, (int, float)) or v <= 0 for v in grid):
                    raise ValueError(f"the analysis plan's tuning grid [tuning] {name} must list numbers > 0, got "
                                     f"{grid!r}: a tuned budget picks from that grid")  # fmt: skip
        for name in ("weak_dpo", "strong_sft", "gold_sft", "wspo", "cong_dpo", "gold_dpo"):
            getattr(self, name).validate(f"PipelineConfig.{name}")
        DecodingConfig(alpha=self.cd_alpha, plausibility_threshold=self.cd_lam).validate(contrastive=True)
        for a in self.alpha_sweep:
            DecodingConfig(alpha=a, plausibility_threshold=self.cd_lam).validate(contrastive=True)


def tuned_methods(config: PipelineConfig) -> list[str]:
    """The methods a tuned budget tunes, by the config's plan: plan 1's [tuning] methods; plan 2's arms (every arm and
    the gold ceiling)."""
    return list(plan.value("tuning", "methods") if config.plan == 1 else plan.value("arms", "methods", plan=2))


def smoke_pipeline_config() -> PipelineConfig:
    """Everything once and small: for tests and the smoke study."""
    return PipelineConfig(
        seeds=[0],
        noise_levels=[0.0, 0.4],
        n_preference_samples=3,
        sampling=DecodingConfig.authors(plausibility_threshold=None, repetition_penalty=1.0, max_new_tokens=16, batch_size=256),
        alpha_sweep=[0.0, 0.5, 1.0],
        eval_samples=4,
        best_of=2,
    )


def _model_key(model: str) -> str:
    """A base model in a setting's key: a local folder by its content, a hub id as given."""
    return f"folder:{folder_fingerprint(model)}" if model and Path(model).is_dir() else str(model)


