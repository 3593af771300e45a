"""The cached runner of the ConG pipeline and its baselines: `congkit.cong`'s functions, keyed, stored and reused.

    setting = Setting.from_world(build_world(WorldConfig()))       # or Setting(...) with real checkpoints
    results = Pipeline(setting, PipelineConfig(), root="runs").run() # tidy table: method, seed, eps, alpha, metric, value

The algorithm itself is in `congkit/cong.py` (read it there, top to bottom); the compared methods and their recipes in
`congkit.methods`; measurements in `congkit.measure`. Here, per seed and label-noise rate epsilon:
  weak_pool -> weak_preferences (eps of pairs flipped) -> weak_aligned (DPO: pi_ref -> pi_r) -> weak_samples (CD and
  plain samples of pi_r) -> strong (each method's recipe) -> evaluate; and the weak pair's pool, probes and alpha sweep.

Every artifact sits in `root/<stage>/<key>/`, written atomically, verified on reuse (`congkit.cache`). A key holds
exactly what the result depends on: the stage's code (`STAGES`: every congkit function it can reach, `code_key`),
settings (`cache_view`: fields that cannot change a result left out), data by content, and models by their
artifact's key and content digest, never by the path where they lie. Every random draw takes its seed from
`stream_seed(seed, purpose, k)`: one named stream per purpose.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from transformers import set_seed

from . import cong, measure, plan
from .cache import (
    artifact_digest,
    build_once,
    cache_view,
    fingerprint,
    folder_fingerprint,
    read_json,
    write_csv_atomic,
    write_json_atomic,
)
from .code_key import code_key, code_parts
from .cong import seeded, stream_seed
from .data import content_key, load_saved_dataset
from .decoding import DecodingConfig
from .methods import BY_NAME, STRONG_METHODS, TrainInputs, recipe
from .models import load_causal_lm, load_tokenizer
from .provenance import TIMING_COLUMNS, read_timings
from .rewards import check_same_vocab
from .scorers import Scorer
from .tokens import has_chat_template
from .training import TrainConfig


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
        from .world import PREFERENCE_ATTRIBUTES, canonical_response, dataset_tasks, judge, one_attribute_worse

        heldout = world.prompts("heldout")
        tasks = {t.prompt: t for split in world.splits for t in dataset_tasks(world.prompts(split))}
        heldout = heldout.map(lambda row: {"reference": canonical_response(tasks[row["prompt"]])})

        def probes(prompt: str) -> list[tuple[str, str, str]]:
            task = tasks[prompt]
            return [(a, canonical_response(task), one_attribute_worse(task, a)) for a in PREFERENCE_ATTRIBUTES]

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
            is_correct=lambda p, r: judge(tasks[p], r).correct,
            gold_responses=lambda p: canonical_response(tasks[p]),
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
    cd_alpha: float = 0.5  # fixed before any run: the alpha of claim 2's verdict and of the ConG data
    cd_lam: float = 0.1
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
    # the strong methods each replicate trains (registry names, `congkit.methods`): the paper's five and the analysis
    # plan's decomposition arms (`analysis_plan.md`)
    methods: list[str] = field(default_factory=lambda: [*STRONG_METHODS, *plan.value("decomposition", "arms")])
    best_of_n: int = 4  # the bon_implicit arm: samples per training prompt to pick from
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
        if self.budget == "tuned":
            for name in ("learning_rate_multipliers", "epochs"):
                grid = plan.value("tuning", name)
                if not grid or any(not isinstance(v, (int, float)) or v <= 0 for v in grid):
                    raise ValueError(f"the analysis plan's tuning grid [tuning] {name} must list numbers > 0, got "
                                     f"{grid!r}: a tuned budget picks from that grid")  # fmt: skip
        for name in ("weak_dpo", "strong_sft", "gold_sft", "wspo", "cong_dpo", "gold_dpo"):
            getattr(self, name).validate(f"PipelineConfig.{name}")
        DecodingConfig(alpha=self.cd_alpha, plausibility_threshold=self.cd_lam).validate(contrastive=True)
        for a in self.alpha_sweep:
            DecodingConfig(alpha=a, plausibility_threshold=self.cd_lam).validate(contrastive=True)


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


def require_columns(ds: Dataset, columns: tuple[str, ...], stage: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"stage {stage!r}: input dataset lacks column(s) {missing}; it has {ds.column_names}")


class Runner:
    """The thin cache under the pipeline: keys, stores and reuses the results of pure functions. Nothing of the
    algorithm is here; `Pipeline` says which function makes which artifact from what."""

    def __init__(self, setting: Setting, root: str | Path, progress: bool):
        self.setting, self.root, self.progress = setting, Path(root).resolve(), progress
        self.timings: list[dict] = []  # one row per artifact built: stage, artifact, seed, method, eps, seconds
        self._paths: dict[tuple, str] = {}  # model_path's answers: a folder's key chain is long to recompute
        self._data: dict[tuple, tuple] = {}  # training_data's answers and their content keys

    def _stage(self, stage: str, key: dict, build: Callable[[Path], None]) -> Path:
        """The artifact of `stage` for `key`: reused when intact, else built (once, under a lock) and verified. Its
        `meta.json` says in words what it is (stage, code version, setting, seed, method, settings)."""
        version = STAGES[stage].version
        path = self.root / stage / fingerprint(self.setting.key, stage, version, stage_code(stage), key)
        summary = " ".join(f"{k}={key[k]}" for k in ("method", "seed", "eps") if k in key)

        def timed_build(tmp: Path) -> None:
            if self.progress:  # stage progress on stderr: the terminal shows it, the published notebooks drop it
                print(f"[congkit] {stage} {summary}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            build(tmp)
            self.timings.append({"stage": stage, "artifact": path.name, "seed": key.get("seed"),
                                 "method": key.get("method", ""), "eps": key.get("eps"),
                                 "seconds": time.perf_counter() - start})  # fmt: skip

        meta = {"stage": stage, "version": version, "setting": self.setting.name, "setting_key": self.setting.key,
                "summary": f"{stage} {summary} ({self.setting.name})".replace("  ", " "), "key": key}  # fmt: skip
        return build_once(path, timed_build, meta=meta, label=f"stage {stage!r} ({path.relative_to(self.root)})")

    def _dataset_stage(self, stage: str, key: dict, make: Callable[[], Dataset], name: str) -> Dataset:
        """A stage whose artifact is one dataset, saved as `<artifact>/<name>`."""
        return load_saved_dataset(self._stage(stage, key, lambda tmp: make().save_to_disk(str(tmp / name))) / name)

    def _train(self, stage: str, key: dict, seed: int, train: Callable[[str, str], tuple]) -> str:
        """A training stage: `train(work_dir, save_to)` under `seed`, the model saved with its training history."""

        def build(tmp: Path) -> None:
            set_seed(seed)
            _, history = train(str(tmp / "_trainer"), str(tmp))
            shutil.rmtree(tmp / "_trainer", ignore_errors=True)  # the trainer's scratch is not part of the artifact,
            (tmp / "training_args.bin").unlink(missing_ok=True)  # nor its pickled arguments (with this tmp folder's
            # name in them): a model retrained with the same seed is then byte-identical, and so are the keys after it
            (tmp / "train_history.json").write_text(json.dumps(history))

        return str(self._stage(stage, {**key, "seed": seed}, build))

    def _prompts(self, split: str) -> list[str]:
        return list((self.setting.train_prompts if split == "train" else self.setting.eval_prompts)["prompt"])

    def _remember(self, key: tuple, make: Callable[[], Dataset]) -> Dataset:
        """A dataset made once per object, its content key with it (every model trained on it needs that key)."""
        if key not in self._data:
            data = make()
            self._data[key] = (data, content_key(data))
        return self._data[key][0]

    def _data_key(self, data: Dataset) -> str:
        """`content_key(data)`, known without hashing again for the datasets `_remember` made."""
        known = [key for ds, key in self._data.values() if ds is data]
        return known[0] if known else content_key(data)

    def _ref(self, model: str | Path) -> str:
        """How a model enters cache keys, never by where it lies: the setting's role for its base models (the
        setting's key holds their content); an artifact of this runner by its stage key and content digest; another
        local folder by its content (`folder_fingerprint`); a hub id as given."""
        roles = {self.setting.weak_base: "setting:weak_base", self.setting.strong_base: "setting:strong_base"}
        if str(model) in roles:
            return roles[str(model)]
        path = Path(model)
        if not path.is_dir():
            return str(model)
        path = path.resolve()
        if path.is_relative_to(self.root) and (digest := artifact_digest(path)) is not None:
            return f"{path.relative_to(self.root)}@{digest}"
        return f"folder:{folder_fingerprint(path)}"


class CachedConG(Runner):
    """`congkit.cong`'s steps for one `Setting` and `PipelineConfig`, each result cached under `root`: the weak side
    (pool, preferences, pi_r, CD and plain samples) and every strong method by its registry recipe."""

    def __init__(self, setting: Setting, config: PipelineConfig | None = None, root: str | Path = "runs",
                 progress: bool = True):  # fmt: skip
        super().__init__(setting, root, progress)
        self.config = config or PipelineConfig()
        self.config.validate()
        read_code_keys(self.config.methods)
        self.tokenizer = load_tokenizer(setting.tokenizer or setting.weak_base)
        # string prompts are one user turn when the tokenizer has a chat template, as `to_trl_format` hands them to TRL
        self.chat = has_chat_template(self.tokenizer)
        self._tuned: dict[str, TrainConfig] = {}  # method -> its tuned settings, once looked up

    def load(self, path: str | Path):
        return load_causal_lm(path, device=self.setting.device, dtype=self.setting.dtype)

    def _weak_pair(self, pi_r_path: str):
        """(pi_r, pi_ref) loaded, checked to share one vocabulary."""
        pi_r, pi_ref = self.load(pi_r_path), self.load(self.setting.weak_base)
        check_same_vocab(pi_r, pi_ref, ("post-alignment weak", "pre-alignment weak"))
        return pi_r, pi_ref

    def _sampling(self, **overrides) -> DecodingConfig:
        return DecodingConfig(**{**vars(self.config.sampling), **overrides})

    def model_path(self, name: str, seed: int, eps: float = 0.0) -> str:
        """The folder (or hub id) of a model of this replicate, by its registry name."""
        if name in ("weak_base", "strong_base"):
            return getattr(self.setting, name)
        if (name, seed, eps) not in self._paths:
            self._paths[name, seed, eps] = (self.weak_aligned(seed, eps) if name == "weak_aligned"
                                            else self.strong(name, seed, eps))  # fmt: skip
        return self._paths[name, seed, eps]

    # --- the weak side ----------------------------------------------------------------------------------------------

    def weak_pool(self, model_path: str, seed: int, stage: str = "weak_pool") -> Dataset:
        """`n_preference_samples` judged samples per training prompt from `model_path` (`cong.sample_pool`)."""
        cfg = self.config
        key = {"model": self._ref(model_path), "seed": seed, "n": cfg.n_preference_samples,
               "sampling": cache_view(cfg.sampling)}  # fmt: skip
        run = self._sampling(seed=stream_seed(seed, stage))
        return self._dataset_stage(stage, key, lambda: cong.sample_pool(
            self.load(model_path), self.tokenizer, self._prompts("train"), self.setting.scorer,
            cfg.n_preference_samples, run, self.chat), "pool")  # fmt: skip

    def weak_preferences(self, seed: int, eps: float) -> Dataset:
        """Weak preference pairs (columns prompt, chosen, rejected, *_score, flipped); a fraction eps flipped."""
        pool = self.weak_pool(self.setting.weak_base, seed)
        return cong.preference_pairs(pool, eps, stream_seed(seed, "label_noise"))

    def weak_aligned(self, seed: int, eps: float) -> str:
        """pi_r = DPO(weak base) on the weak preference pairs (`cong.dpo`); returns its folder."""
        pairs, cfg, base = self.weak_preferences(seed, eps), seeded(self.config.weak_dpo, seed), self.setting.weak_base
        key = {"eps": eps, "policy": self._ref(base), "train": cache_view(cfg), "data": content_key(pairs)}
        return self._train("weak_aligned", key, seed, lambda work, save: cong.dpo(
            self.load(base), self.load(base), self.tokenizer, pairs, cfg, work, save))  # fmt: skip

    def weak_samples(self, seed: int, eps: float) -> Dataset:
        """Per training prompt, a CD sample of pi_r against pi_ref (`cd`, `cd_implicit`) and a plain sample (`plain`)."""
        pi_r_path, cfg = self.weak_aligned(seed, eps), self.config
        key = {"pi_r": self._ref(pi_r_path), "alpha": cfg.cd_alpha, "min_p": cfg.cd_lam,
               "sampling": cache_view(cfg.sampling), "seed": seed, "eps": eps}  # fmt: skip

        def make() -> Dataset:
            (pi_r, pi_ref), prompts = self._weak_pair(pi_r_path), self._prompts("train")
            cd_run = self._sampling(seed=stream_seed(seed, "cd_samples"), alpha=cfg.cd_alpha, plausibility_threshold=cfg.cd_lam)
            cd = cong.contrastive_samples(pi_r, pi_ref, self.tokenizer, prompts, cd_run, self.chat)
            plain_run = self._sampling(seed=stream_seed(seed, "plain_samples"))
            plain = cong.plain_samples(pi_r, self.tokenizer, prompts, plain_run, self.chat)
            return Dataset.from_dict({"prompt": prompts, "cd": cd["completion"], "cd_implicit": cd["implicit"],
                                      "plain": plain["completion"]})  # fmt: skip

        return self._dataset_stage("weak_samples", key, make, "samples")

    # --- the strong side: every method by its recipe ----------------------------------------------------------------

    def training_data(self, name: str, seed: int, eps: float) -> Dataset:
        """The training data a recipe names (`congkit.methods.DATA`), looked up once per pipeline."""
        return self._remember((name, seed, eps), lambda: self._training_data(name, seed, eps))

    def _training_data(self, name: str, seed: int, eps: float) -> Dataset:
        if name in ("plain_samples", "cd_samples"):
            column = "plain" if name == "plain_samples" else "cd"
            return self.weak_samples(seed, eps).select_columns(["prompt", column]).rename_column(column, "completion")
        if name == "weak_chosen":
            chosen = self.weak_preferences(seed, eps).select_columns(["prompt", "chosen"])
            return chosen.rename_column("chosen", "completion")
        if name == "cong_pairs":
            return self.cong_pairs(seed, eps)
        if name == "bon_implicit":
            return self.best_of_n(seed, eps).select_columns(["prompt", "completion"])
        if name == "gold":
            if self.setting.gold_responses is not None:
                prompts = self._prompts("train")
                return Dataset.from_dict({"prompt": prompts,
                                          "completion": [self.setting.gold_responses(p) for p in prompts]})  # fmt: skip
            pool = self.weak_pool(self.setting.strong_base, seed, "strong_pool")
            return cong.preference_pairs(pool, 0.0, 0)
        raise ValueError(f"unknown training data {name!r}; known: {', '.join(DATA_COLUMNS)}")

    def strong(self, method: str, seed: int, eps: float = 0.0) -> str:
        """The strong model `method` trains by its registry recipe (`congkit.methods`), with its fixed or tuned
        budget (`PipelineConfig.budget`); returns its folder. The gold ceiling is trained on clean supervision only."""
        eps = 0.0 if method == "gold" else eps
        data = self.training_data(recipe(method).data, seed, eps)
        tuned = self.config.budget == "tuned" and method in plan.value("tuning", "methods")
        return self._strong(method, seed, eps, data, self.tuned_config(method) if tuned else self.fixed_config(method,
                                                                                                            data))  # fmt: skip

    def fixed_config(self, method: str, data: Dataset) -> TrainConfig:
        """The method's configured settings (the fixed budget), its recipe's overrides applied."""
        how = recipe(method)
        cfg = getattr(self.config, how.config) if isinstance(how.config, str) else how.config(self.config, data)
        return dataclasses.replace(cfg, **dict(how.overrides))

    def tuned_config(self, method: str) -> TrainConfig:
        """The grid point (learning rate x epochs, `analysis_plan.md`) with the best validation score, trained and
        scored on the first seed at the clean setting; ties go to the first in grid order."""
        if method not in self._tuned:  # the grid's artifacts are cached; this spares looking them up again
            rows = self.tuning_rows(method)
            self._tuned[method] = max(rows, key=lambda r: r["score"])["config"]  # max keeps the first of equal scores
        return self._tuned[method]

    def tuning_rows(self, method: str) -> list[dict]:
        """Every grid point of `method`: its settings, the model it trained (first seed, clean setting) and its
        validation score (the plan's criterion: oracle R_pref on the validation prompts)."""
        seed, eps = self.config.seeds[0], self.config.noise_levels[0]
        data = self.training_data(recipe(method).data, seed, eps)
        base, rows = self.fixed_config(method, data), []
        for multiplier in plan.value("tuning", "learning_rate_multipliers"):
            for epochs in plan.value("tuning", "epochs"):
                cfg = dataclasses.replace(base, learning_rate=base.learning_rate * multiplier, num_train_epochs=epochs)
                path = self._strong(method, seed, eps, data, cfg)
                rows.append({"method": method, "learning_rate": cfg.learning_rate, "epochs": epochs, "config": cfg,
                             "score": self.validation_score(path, seed)})  # fmt: skip
        return rows

    def validation_score(self, model_path: str, seed: int) -> float:
        """The tuning criterion: mean R_pref of `samples` draws per validation prompt (never the eval prompts)."""
        if self.setting.valid_prompts is None:
            raise ValueError(f"setting {self.setting.name!r} has no validation prompts: a tuned budget needs them")
        k = plan.value("tuning", "samples")
        key = {"model": self._ref(model_path), "seed": seed, "k": k, "sampling": cache_view(self.config.sampling)}

        def build(tmp: Path) -> None:
            run = self._sampling(seed=stream_seed(seed, "validation"))
            result = measure.evaluate_model(self.load(model_path), self.tokenizer, list(self.setting.valid_prompts[
                "prompt"]), self.setting.scorer, k, run, self.chat)  # fmt: skip
            write_json_atomic(tmp / "score.json", {"r_pref": float(np.mean(result["r_pref"]))})

        return read_json(self._stage("validate", key, build) / "score.json")["r_pref"]

    def _strong(self, method: str, seed: int, eps: float, data: Dataset, cfg: TrainConfig) -> str:
        how = recipe(method)
        require_columns(data, DATA_COLUMNS[how.data] if how.data in DATA_COLUMNS else ("prompt",), method)
        start = self.model_path(how.start, seed, eps)
        others = {n: (start if n == "reference" else self.model_path(n, seed, eps)) for n in how.models}
        cfg = seeded(cfg, seed)
        options = {name: getattr(self.config, name) for name in how.options}
        key = {"method": method, "recipe": how.version, "recipe_code": code_key(how.train), "eps": eps, "start": self._ref(start), "train": cache_view(cfg),
               "models": {n: self._ref(p) for n, p in others.items()}, "options": options, "data": self._data_key(data)}  # fmt: skip

        def train(work: str, save: str):
            inputs = TrainInputs(self.load(start), self.tokenizer, data, cfg, lambda n: self.load(others[n]), options,
                                 work, save)  # fmt: skip
            return how.train(inputs)

        return self._train("strong", key, seed, train)

    def best_of_n(self, seed: int, eps: float = 0.0) -> Dataset:
        """Per training prompt, the best of `best_of_n` pi_r samples by the weak pair's implicit reward
        (`cong.best_of_n_by_implicit_reward`)."""
        pi_r_path, n = self.weak_aligned(seed, eps), self.config.best_of_n
        key = {"pi_r": self._ref(pi_r_path), "n": n, "sampling": cache_view(self.config.sampling), "seed": seed,
               "eps": eps}  # fmt: skip
        run = self._sampling(seed=stream_seed(seed, "best_of_n"))
        return self._dataset_stage("best_of_n", key, lambda: cong.best_of_n_by_implicit_reward(
            *self._weak_pair(pi_r_path), self.tokenizer, self._prompts("train"), n, run, self.chat), "best")  # fmt: skip

    def cong_pairs(self, seed: int, eps: float = 0.0) -> Dataset:
        """ConG's preference data (`cong.cong_pairs`): the CD sample vs ConG-S's own sample."""
        cd, cong_s = self.training_data("cd_samples", seed, eps), self.strong("cong_s", seed, eps)
        key = {"model": self._ref(cong_s), "sampling": cache_view(self.config.sampling), "seed": seed}
        run = self._sampling(seed=stream_seed(seed, "cong_own_samples"))
        return self._dataset_stage("cong_pairs", key, lambda: cong.cong_pairs(self.load(cong_s), self.tokenizer, cd,
                                                                              run, self.chat), "pairs")  # fmt: skip

    def model_paths(self, seed: int, eps: float, every_method: bool = False) -> dict[str, str]:
        """Every model of one replicate: the configured methods at the clean setting, the `noise` methods (claim 5)
        at others (`every_method`: all of them at any eps, as the regime map needs)."""
        clean = eps == self.config.noise_levels[0] or every_method
        paths = {name: self.model_path(name, seed, eps) for name in ("strong_base", "weak_base", "weak_aligned")}
        for name in [*self.config.methods, "gold"] if clean else self.config.methods:
            if clean or BY_NAME[name].noise:
                paths[name] = self.model_path(name, seed, eps)
        return paths


class Pipeline(CachedConG):
    """The study's pipeline: `CachedConG`'s models, measured (`congkit.measure`, cached), for every seed and noise
    level; `run()` writes the results, preconditions and verdicts tables."""

    # --- measurements -----------------------------------------------------------------------------------------------

    def evaluate(self, model_path: str, seed: int) -> dict:
        """`eval_samples` samples per eval prompt judged on every channel, lengths, held-out capability
        (`measure.evaluate_model`). Draws depend on `seed` only (paired across models); the setting's base models are
        the same in every replicate, so they are evaluated once, with the first seed's draws."""
        cfg, s = self.config, self.setting
        seed = cfg.seeds[0] if model_path in (s.weak_base, s.strong_base) else seed
        key = {"model": self._ref(model_path), "seed": seed, "k": cfg.eval_samples, "sampling": cache_view(cfg.sampling)}

        def build(tmp: Path) -> None:
            greedy = self._sampling(do_sample=False)
            capability = lambda m: measure.heldout_capability(m, self.tokenizer, s.heldout_prompts, s.is_correct,  # noqa: E731
                                                              s.multiple_choice, greedy, self.chat)  # fmt: skip
            result = measure.evaluate_model(self.load(model_path), self.tokenizer, self._prompts("eval"), s.scorer,
                                            cfg.eval_samples, self._sampling(seed=stream_seed(seed, "evaluation")),
                                            self.chat, capability)  # fmt: skip
            write_json_atomic(tmp / "eval.json", result)

        return read_json(self._stage("evaluate", key, build) / "eval.json")

    def weak_pair_pool(self, seed: int, eps: float = 0.0) -> Dataset:
        """pi_r's own samples with the weak pair's implicit reward and every channel (`measure.weak_pair_pool`)."""
        pi_r_path, cfg = self.weak_aligned(seed, eps), self.config
        key = {"pi_r": self._ref(pi_r_path), "sampling": cache_view(cfg.sampling), "k": cfg.eval_samples, "seed": seed}
        run = self._sampling(seed=stream_seed(seed, "weak_pair_pool"))
        return self._dataset_stage("weak_pair_pool", key, lambda: measure.weak_pair_pool(
            *self._weak_pair(pi_r_path), self.tokenizer, self._prompts("eval"), self.setting.scorer, cfg.eval_samples,
            run, self.chat), "pool")  # fmt: skip

    def attribute_probes(self, seed: int) -> Dataset | None:
        """The weak pair's attribute probes (`measure.attribute_probes`); None when the setting has none."""
        if self.setting.preference_probes is None:
            return None
        pi_r_path = self.weak_aligned(seed, 0.0)
        return self._dataset_stage("attribute_probes", {"pi_r": self._ref(pi_r_path), "seed": seed},
                                   lambda: measure.attribute_probes(*self._weak_pair(pi_r_path), self.tokenizer,
                                                                    self._prompts("eval"), self.setting.preference_probes,
                                                                    self.chat), "probes")  # fmt: skip

    def alpha_sweep(self, seed: int, eps: float = 0.0) -> Dataset:
        """Claim 2: CD at each alpha and naive pi_r samples, one paired draw (`measure.alpha_sweep`)."""
        pi_r_path, cfg = self.weak_aligned(seed, eps), self.config
        key = {"pi_r": self._ref(pi_r_path), "alphas": cfg.alpha_sweep, "min_p": cfg.cd_lam,
               "sampling": cache_view(cfg.sampling), "seed": seed, "eps": eps}  # fmt: skip
        run = self._sampling(seed=stream_seed(seed, "alpha_sweep"))
        return self._dataset_stage("alpha_sweep", key, lambda: measure.alpha_sweep(
            *self._weak_pair(pi_r_path), self.tokenizer, self._prompts("eval"), self.setting.scorer, cfg.alpha_sweep,
            cfg.cd_lam, run, self.chat), "sweep")  # fmt: skip

    # --- everything -------------------------------------------------------------------------------------------------

    def evaluation_rows(self, seed: int, eps: float, every_method: bool = False) -> list[dict]:
        """Every model of one seed and noise level (`model_paths`) evaluated, as tidy rows."""
        from .evaluation import evaluation_rows

        results = {m: self.evaluate(path, seed) for m, path in self.model_paths(seed, eps, every_method).items()}
        return [row for m, result in results.items()
                for row in evaluation_rows(m, seed, eps, result, results["strong_base"])]  # fmt: skip

    def replicate(self, seed: int) -> list[dict]:
        """Every stage of one seed (all noise levels, evaluations, the weak pair's pool, sweep and probes); returns
        the seed's evaluation rows. Seeds are independent: separate processes may build them concurrently."""
        rows = [row for eps in self.config.noise_levels for row in self.evaluation_rows(seed, eps)]
        self.weak_pair_pool(seed), self.alpha_sweep(seed), self.attribute_probes(seed)
        return rows

    def tuning_table(self) -> pd.DataFrame:
        """Every tuned method's grid: learning rate, epochs, validation score, and the setting chosen."""
        rows = []
        for method in [m for m in [*self.config.methods, "gold"] if m in plan.value("tuning", "methods")]:
            grid = self.tuning_rows(method)
            best = max(range(len(grid)), key=lambda i: grid[i]["score"])
            rows += [{k: v for k, v in row.items() if k != "config"} | {"chosen": i == best} for i, row in enumerate(grid)]
        return pd.DataFrame(rows, columns=["method", "learning_rate", "epochs", "score", "chosen"])

    def claims(self) -> pd.DataFrame:
        """Claim 1 and 2 rows and the weak pair's precondition rows (tidy), for every seed, at epsilon = 0."""
        from .evaluation import claim_rows

        rows = [row for seed in self.config.seeds for row in claim_rows(
            seed, self.weak_pair_pool(seed), self.alpha_sweep(seed), self.attribute_probes(seed), self.config.best_of)]  # fmt: skip
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)

    def run(self) -> pd.DataFrame:
        """All stages for all seeds and noise levels; the tidy results table (columns `RESULT_COLUMNS`). Writes
        results.csv, preconditions.csv and verdicts.csv into the pipeline's folder."""
        from .evaluation import decomposition_rows, pgr_rows, preconditions, verdicts

        rows = [row for seed in self.config.seeds for row in self.replicate(seed)] + self.claims().to_dict("records")
        table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        table = pd.concat([table, pd.DataFrame(pgr_rows(table), columns=RESULT_COLUMNS)], ignore_index=True)
        conditions = preconditions(table, self.config)
        for name, frame in (("results", table), ("preconditions", conditions),
                            ("verdicts", verdicts(table, conditions, self.config))):  # fmt: skip
            write_csv_atomic(frame, self.root / f"{name}.csv")
        write_csv_atomic(decomposition_rows(table), self.root / "decomposition.csv")
        if self.config.budget == "tuned":
            write_csv_atomic(self.tuning_table(), self.root / "tuning.csv")
        record_timings(self.root / "timings.csv", self.timings)
        return table


def record_timings(path: Path, rows: list[dict]) -> pd.DataFrame:
    """Merge stage timings into `path` (`timings.csv`: stage, artifact (its cache folder's name), seed, method, eps,
    seconds): an artifact built again replaces its old row, the others keep theirs (a cached rerun records nothing
    new). Returns the table."""
    old = read_timings(path)
    old = pd.DataFrame(columns=TIMING_COLUMNS) if old is None else old
    new = pd.DataFrame(rows, columns=TIMING_COLUMNS)
    if new.empty:
        return old
    keys = ["stage", "artifact"]
    merged = pd.concat([old, new], ignore_index=True).astype({"method": str}).fillna({"method": ""})
    merged = merged.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
    write_csv_atomic(merged, path)
    return merged


DATA_COLUMNS = {"plain_samples": ("prompt", "completion"), "cd_samples": ("prompt", "completion"),
                "weak_chosen": ("prompt", "completion"), "cong_pairs": ("prompt", "chosen", "rejected"),
                "gold": ("prompt",), "bon_implicit": ("prompt", "completion")}  # fmt: skip


@dataclass(frozen=True)
class Stage:
    """A cached stage's version and the functions that produce its artifact. Both enter every key: the functions by
    their code and all the congkit code it reaches (`stage_code`, `congkit.code_key`), so an edit that can change
    the artifact rebuilds it without anyone bumping `version` (bump it only for a change outside congkit's code).
    Keys assume a result does not depend on torch's thread count (builds with 1 and 2 threads can differ in the last
    bits): the study builds every stage with the same threads."""

    version: int
    code: tuple[Callable, ...]


STAGES = {
    "weak_pool": Stage(1, (CachedConG.weak_pool, cong.sample_pool, cong.draws)),
    "strong_pool": Stage(1, (CachedConG.weak_pool, cong.sample_pool, cong.draws)),
    "weak_aligned": Stage(1, (CachedConG.weak_aligned, CachedConG.weak_preferences, cong.preference_pairs, cong.dpo)),
    "weak_samples": Stage(1, (CachedConG.weak_samples, cong.contrastive_samples, cong.plain_samples)),
    # the strong stage's method-specific code (its recipe's `train`: data, loss, trainer) enters each key by itself
    "strong": Stage(1, (CachedConG._strong, CachedConG.training_data)),
    "validate": Stage(1, (CachedConG.validation_score, measure.evaluate_model, measure.judged)),
    "cong_pairs": Stage(1, (CachedConG.cong_pairs, cong.cong_pairs)),
    "best_of_n": Stage(1, (CachedConG.best_of_n, cong.best_of_n_by_implicit_reward)),
    "evaluate": Stage(1, (Pipeline.evaluate, measure.evaluate_model, measure.judged, measure.heldout_capability,
                          measure.multiple_choice_accuracy)),  # fmt: skip
    "weak_pair_pool": Stage(1, (Pipeline.weak_pair_pool, measure.weak_pair_pool, measure.judged)),
    "attribute_probes": Stage(1, (Pipeline.attribute_probes, measure.attribute_probes)),
    "alpha_sweep": Stage(1, (Pipeline.alpha_sweep, measure.alpha_sweep, measure.judged)),
}


@functools.cache
def stage_code(stage: str) -> str:
    """The code key of a stage (`congkit.code_key`): every congkit function and constant its code can reach, up to
    the entry points of the other stages (their artifacts enter its key by their keys and contents)."""
    return code_key(*STAGES[stage].code, stop=_other_stages(stage))


def read_code_keys(methods: list[str]) -> None:
    """Every stage's and every recipe's (`methods` and the gold ceiling) code key, read now from the code this process
    loaded and cached after, so an edit on disk while a run goes on changes no key of that run."""
    for stage in STAGES:
        stage_code(stage)
    for method in [*methods, "gold"]:
        code_key(recipe(method).train)


def stage_parts(stage: str) -> dict[str, str]:
    """What `stage_code` covers, by qualified name (`congkit.code_key.code_parts`)."""
    return code_parts(*STAGES[stage].code, stop=_other_stages(stage))


def _other_stages(stage: str) -> frozenset:
    return frozenset({s.code[0] for name, s in STAGES.items() if name != stage} | {CachedConG.strong,
                                                                                  CachedConG.model_path})  # fmt: skip


def _model_key(model: str) -> str:
    """A base model in a setting's key: a local folder by its content, a hub id as given."""
    return f"folder:{folder_fingerprint(model)}" if model and Path(model).is_dir() else str(model)


RESULT_COLUMNS = ["method", "seed", "eps", "alpha", "metric", "value"]
