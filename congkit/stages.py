"""The ConG pipeline and its baselines, stage by stage, each stage cached and resumable.

    setting = Setting.from_world(build_world(WorldConfig()))       # or Setting(...) with real checkpoints
    results = Pipeline(setting, PipelineConfig(), root="runs").run() # tidy table: method, seed, setting, metric, value

Stages (PAPER.md, "The pipeline"), per seed and label-noise rate epsilon:
  1. weak_preferences: N samples per training prompt from the weak base, scored by the explicit reward, best =
     chosen, worst = rejected, ties dropped; a fraction epsilon of pairs flipped.
  2. weak_aligned: TRL DPO, weak base (pi_ref) -> pi_r.
  3. weak_samples: CD between pi_r and pi_ref (alpha, lambda), and ordinary samples from pi_r, per training prompt.
  4. strong methods from the strong base (`congkit.methods`): weaksft, auxconf, wspo (on the weak preference set's
     chosen responses, as the authors' release), cong_s, cong; gold is the ceiling: SFT on the setting's gold
     responses where it has them (the synthetic world), else DPO on the strong model's own samples ranked by the
     explicit reward.
  5. evaluation on held-out prompts (see `congkit.evaluation`), the weak pair's own-sample pool (claim 1 and the
     preconditions), the alpha sweep (claim 2) and the attribute probes (preconditions).
Every artifact sits in `root/<stage>/<fingerprint of its inputs and settings>/`, written atomically and verified.
Every random draw takes its seed from `stream_seed(seed, purpose, k)`: one named stream per purpose.
"""

from __future__ import annotations

import json
import random
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from transformers import set_seed

from .cache import build_once, cache_view, fingerprint, read_json, write_csv_atomic, write_json_atomic
from .data import load_saved_dataset
from .decoding import DecodingConfig, contrastive_generate, sample
from .methods import BY_NAME, STRONG_METHODS
from .models import load_causal_lm, load_tokenizer
from .rewards import check_same_vocab, implicit_reward, implicit_reward_from_ids, mean_response_logprobs
from .scorers import Scorer
from .tokens import encode_prompt, has_chat_template
from .trainers import AuxConfTrainer, WSPOTrainer
from .training import TrainConfig, train_dpo, train_sft


def stream_seed(seed: int, purpose: str, k: int = 0) -> int:
    """The seed of draw `k` of the named random stream `purpose` in pipeline replicate `seed` (independent streams,
    stable across runs and machines)."""
    state = np.random.SeedSequence([seed, zlib.crc32(purpose.encode()), k]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> 34)


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
    is_correct: Callable[[str, str], bool] | None = None  # (prompt, response) -> answer right? (heldout)
    multiple_choice: Dataset | None = None  # columns question, choices, answer (capability retention, real models)
    gold_responses: Callable[[str], str] | None = None  # prompt -> ideal response (the gold ceiling's SFT data)
    preference_probes: Callable[[str], list[tuple[str, str, str]]] | None = None  # prompt -> [(attribute, better,
    #   one-attribute-worse response)]: the weak pair's attribute probes (a precondition); synthetic world only
    tokenizer: str | None = None  # defaults to weak_base's folder / id
    key: str = ""  # identifies the setting in cache fingerprints
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
            extra = [content_key(d) for d in (self.heldout_prompts, self.multiple_choice) if d is not None]
            self.key = fingerprint(
                self.name, self.weak_base, self.strong_base, self.tokenizer or "",
                getattr(self.scorer, "name", type(self.scorer).__name__),
                content_key(self.train_prompts), content_key(self.eval_prompts), extra,
            )  # fmt: skip

    @classmethod
    def from_world(cls, world, device: str | None = None) -> Setting:
        """The synthetic world as a setting: exact reward as judge, the held-out family for capability."""
        from .world import PREFERENCE_ATTRIBUTES, canonical_response, dataset_tasks, judge, one_attribute_worse

        heldout = world.prompts("heldout")
        tasks = {t.prompt: t for split in ("train", "eval", "heldout") for t in dataset_tasks(world.prompts(split))}
        heldout = heldout.map(lambda row: {"reference": canonical_response(tasks[row["prompt"]])})

        def probes(prompt: str) -> list[tuple[str, str, str]]:
            task = tasks[prompt]
            return [(a, canonical_response(task), one_attribute_worse(task, a)) for a in PREFERENCE_ATTRIBUTES]

        return cls(
            name=f"world-{world.path.name}",
            weak_base=str(world.model_path("weak_base")),
            strong_base=str(world.model_path("strong_base")),
            tokenizer=str(world.path / "tokenizer"),
            train_prompts=world.prompts("train"),
            eval_prompts=world.prompts("eval"),
            heldout_prompts=heldout,
            scorer=world.reward(),
            is_correct=lambda p, r: judge(tasks[p], r).correct,
            gold_responses=lambda p: canonical_response(tasks[p]),
            preference_probes=probes,
            key=world.path.name,
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
            min_p=None, repetition_penalty=1.0, max_new_tokens=20, batch_size=256
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
    eval_samples: int = 8  # samples per evaluation prompt (also the size of the weak pair's own-sample pool)
    best_of: int = 4  # the best-of-k precondition

    def validate(self) -> None:
        if not self.seeds:
            raise ValueError("PipelineConfig.seeds is empty: name at least one seed")
        if not self.noise_levels or any(not 0.0 <= e <= 1.0 for e in self.noise_levels):
            raise ValueError(f"noise_levels must be a non-empty list in [0, 1], got {self.noise_levels}")
        if self.n_preference_samples < 2:
            raise ValueError(f"n_preference_samples must be >= 2 to form a pair, got {self.n_preference_samples}")
        if self.best_of < 2:  # with eval_samples < best_of the best-of-k precondition is simply not measured
            raise ValueError(f"best_of must be >= 2, got {self.best_of}")
        DecodingConfig(alpha=self.cd_alpha, min_p=self.cd_lam).validate(contrastive=True)
        for a in self.alpha_sweep:
            DecodingConfig(alpha=a, min_p=self.cd_lam).validate(contrastive=True)


def smoke_pipeline_config() -> PipelineConfig:
    """Everything once and small: for tests and the smoke study."""
    return PipelineConfig(
        seeds=[0],
        noise_levels=[0.0, 0.4],
        n_preference_samples=3,
        sampling=DecodingConfig.authors(min_p=None, repetition_penalty=1.0, max_new_tokens=16, batch_size=256),
        alpha_sweep=[0.0, 0.5, 1.0],
        eval_samples=4,
        best_of=2,
    )


def require_columns(ds: Dataset, columns: tuple[str, ...], stage: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"stage {stage!r}: input dataset lacks column(s) {missing}; it has {ds.column_names}")


def preference_pairs(
    prompts: list[str], samples: list[list[str]], scores: list[list[float]], flip_fraction: float, seed: int
) -> Dataset:
    """Best-vs-worst pairs per prompt (ties dropped); a seeded `flip_fraction` of pairs swapped (label noise)."""
    rows = {"prompt": [], "chosen": [], "rejected": [], "chosen_score": [], "rejected_score": [], "flipped": []}
    for prompt, texts, s in zip(prompts, samples, scores):
        best = max(range(len(texts)), key=lambda i: s[i])
        worst = min(range(len(texts)), key=lambda i: s[i])
        if s[best] == s[worst] or texts[best] == texts[worst]:
            continue
        rows["prompt"].append(prompt)
        rows["chosen"].append(texts[best])
        rows["rejected"].append(texts[worst])
        rows["chosen_score"].append(s[best])
        rows["rejected_score"].append(s[worst])
        rows["flipped"].append(False)
    rng = random.Random(seed)
    n = len(rows["prompt"])
    for i in rng.sample(range(n), round(flip_fraction * n)):
        rows["chosen"][i], rows["rejected"][i] = rows["rejected"][i], rows["chosen"][i]
        rows["chosen_score"][i], rows["rejected_score"][i] = rows["rejected_score"][i], rows["chosen_score"][i]
        rows["flipped"][i] = True
    if n == 0:
        raise ValueError("no preference pair survived: every prompt's samples tied on the explicit reward")
    return Dataset.from_dict(rows)


class Pipeline:
    """Runs and caches the stages for one `Setting` and `PipelineConfig` under `root`."""

    def __init__(self, setting: Setting, config: PipelineConfig | None = None, root: str | Path = "runs",
                 progress: bool = True):  # fmt: skip
        self.setting, self.config = setting, config or PipelineConfig()
        self.config.validate()
        # absolute, so that cache keys (which hold artifact paths) do not depend on how the folder was spelled
        self.root, self.progress = Path(root).resolve(), progress
        self.tokenizer = load_tokenizer(setting.tokenizer or setting.weak_base)
        # string prompts are one user turn when the tokenizer has a chat template, as `to_trl_format` hands them to TRL
        self.chat = {"apply_chat_template": has_chat_template(self.tokenizer)}
        self.timings: dict[str, float] = {}

    # --- plumbing -------------------------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        """Stage progress on stderr: the terminal shows it, the published notebooks drop it."""
        if self.progress:
            print(f"[congkit] {message}", file=sys.stderr, flush=True)

    def _stage(self, stage: str, key: dict, build: Callable[[Path], None]) -> Path:
        """The artifact of `stage` for `key`: reused when intact, else built (once, under a lock) and verified.

        `key` holds settings, data hashes and upstream artifacts as `_ref`s, never paths, so the cache is
        content-addressed: a copied or moved runs folder reuses every stage.
        """
        path = self.root / stage / fingerprint(self.setting.key, stage, key)

        def timed_build(tmp: Path) -> None:
            self._log(f"{stage} {json.dumps({k: v for k, v in key.items() if k in ('seed', 'eps', 'method')})}")
            start = time.perf_counter()
            build(tmp)
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

        return build_once(path, timed_build, meta={"stage": stage, **key},
                          label=f"stage {stage!r} ({path.relative_to(self.root)})")  # fmt: skip

    def _ref(self, model: str | Path) -> str:
        """How a model enters cache keys: the setting's role for its base models, `stage/<fingerprint>` for an
        artifact of this pipeline (both independent of where the runs folder lies), else the id as given."""
        if str(model) == self.setting.weak_base:
            return "setting:weak_base"
        if str(model) == self.setting.strong_base:
            return "setting:strong_base"
        try:
            return str(Path(model).resolve().relative_to(self.root))
        except ValueError:
            return str(model)

    def _dataset_stage(self, stage: str, key: dict, make: Callable[[], Dataset], name: str) -> Dataset:
        """A stage whose artifact is one dataset, saved as `<artifact>/<name>`: `make()` builds it (once), later
        calls load it from the cache."""
        path = self._stage(stage, key, lambda tmp: make().save_to_disk(str(tmp / name)))
        return load_saved_dataset(path / name)

    def load(self, path: str | Path):
        return load_causal_lm(path, device=self.setting.device, dtype=self.setting.dtype)

    def _weak_pair(self, pi_r_path: str):
        """(pi_r, pi_ref) loaded, checked to share one vocabulary."""
        pi_r, pi_ref = self.load(pi_r_path), self.load(self.setting.weak_base)
        check_same_vocab(pi_r, pi_ref, ("post-alignment weak", "pre-alignment weak"))
        return pi_r, pi_ref

    def _prompts(self, split: str) -> list[str]:
        ds = self.setting.train_prompts if split == "train" else self.setting.eval_prompts
        return list(ds["prompt"])

    def _sampling(self, **overrides) -> DecodingConfig:
        return DecodingConfig(**{**vars(self.config.sampling), **overrides})

    def _score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [float(s) for s in self.setting.scorer(prompts, responses)]

    # --- stages 1-3: the weak side --------------------------------------------------------------------------------

    def _pool(self, model_path: str, seed: int, stage: str) -> Dataset:
        """N samples per training prompt from `model_path` with their explicit rewards (columns samples, scores)."""
        cfg = self.config
        key = {"model": self._ref(model_path), "seed": seed, "n": cfg.n_preference_samples,
               "sampling": cache_view(cfg.sampling)}  # fmt: skip

        def make() -> Dataset:
            model, prompts, n = self.load(model_path), self._prompts("train"), cfg.n_preference_samples
            draws = self._draws(model, prompts, n, stream_seed(seed, stage)).texts
            scores = self._score(prompts * n, draws)
            per_prompt = [list(range(i, n * len(prompts), len(prompts))) for i in range(len(prompts))]
            return Dataset.from_dict({"prompt": prompts, "samples": [[draws[j] for j in js] for js in per_prompt],
                                      "scores": [[scores[j] for j in js] for js in per_prompt]})  # fmt: skip

        return self._dataset_stage(stage, key, make, "pool")

    def weak_preferences(self, seed: int, eps: float) -> Dataset:
        """Stage 1: weak preference data (columns prompt, chosen, rejected, *_score, flipped)."""
        pool = self._pool(self.setting.weak_base, seed, "weak_pool").to_dict()
        return preference_pairs(pool["prompt"], pool["samples"], pool["scores"], eps, stream_seed(seed, "label_noise"))

    def gold_pairs(self, seed: int) -> Dataset:
        """The gold ceiling's data: the strong base's own samples ranked by the true explicit reward."""
        pool = self._pool(self.setting.strong_base, seed, "strong_pool").to_dict()
        return preference_pairs(pool["prompt"], pool["samples"], pool["scores"], 0.0, 0)

    def _dpo_stage(self, stage: str, policy: str, pairs: Dataset, cfg: TrainConfig, key: dict, seed: int) -> Path:
        require_columns(pairs, ("prompt", "chosen", "rejected"), stage)

        def build(tmp: Path) -> None:
            set_seed(seed)
            model, ref = self.load(policy), self.load(policy)
            _, history = train_dpo(model, ref, self.tokenizer, pairs, _seeded(cfg, seed), str(tmp / "_trainer"),
                                   save_to=str(tmp))  # fmt: skip
            (tmp / "train_history.json").write_text(json.dumps(history))

        full_key = {**key, "policy": self._ref(policy), "train": asdict(cfg), "seed": seed, "data": content_key(pairs)}
        return self._stage(stage, full_key, build)

    def weak_aligned(self, seed: int, eps: float) -> str:
        """Stage 2: pi_r = DPO(weak base) on the weak preference data; returns its folder."""
        pairs = self.weak_preferences(seed, eps)
        return str(self._dpo_stage("weak_aligned", self.setting.weak_base, pairs, self.config.weak_dpo,
                                   {"eps": eps}, seed))  # fmt: skip

    def weak_samples(self, seed: int, eps: float) -> Dataset:
        """Stage 3: per training prompt, a CD sample (`cd`, with `cd_implicit`) and a plain sample of pi_r (`plain`)."""
        pi_r_path = self.weak_aligned(seed, eps)
        cfg = self.config
        key = {"pi_r": self._ref(pi_r_path), "alpha": cfg.cd_alpha, "lam": cfg.cd_lam, "sampling": cache_view(cfg.sampling),
               "seed": seed, "eps": eps}  # fmt: skip

        def make() -> Dataset:
            (pi_r, pi_ref), prompts = self._weak_pair(pi_r_path), self._prompts("train")
            run = self._sampling(seed=stream_seed(seed, "cd_samples"), alpha=cfg.cd_alpha, min_p=cfg.cd_lam)
            cd = contrastive_generate(pi_r, pi_ref, self.tokenizer, prompts, run, progress=self.progress, **self.chat)
            plain_run = self._sampling(seed=stream_seed(seed, "plain_samples"))
            plain = sample(pi_r, self.tokenizer, prompts, plain_run, progress=self.progress, **self.chat)
            return Dataset.from_dict({"prompt": prompts, "cd": cd.texts, "cd_implicit": cd.implicit_reward(beta=1.0).mean,
                                      "plain": plain.texts})  # fmt: skip

        return self._dataset_stage("weak_samples", key, make, "samples")

    # --- stage 4: the strong side ---------------------------------------------------------------------------------

    def _sft_stage(self, method: str, data: Dataset, cfg: TrainConfig, key: dict, seed: int, start: str | None = None,
                   trainer_cls=None, trainer_kwargs: Callable[[], dict] | None = None) -> Path:  # fmt: skip
        require_columns(data, ("prompt", "completion"), method)
        start = start or self.setting.strong_base

        def build(tmp: Path) -> None:
            set_seed(seed)
            extra = {} if trainer_kwargs is None else trainer_kwargs()
            kwargs = {"trainer_cls": trainer_cls} if trainer_cls is not None else {}
            _, history = train_sft(self.load(start), self.tokenizer, data, _seeded(cfg, seed), str(tmp / "_trainer"),
                                   save_to=str(tmp), **kwargs, **extra)  # fmt: skip
            (tmp / "train_history.json").write_text(json.dumps(history))

        full_key = {**key, "method": method, "start": self._ref(start), "train": asdict(cfg), "data": content_key(data),
                    "seed": seed}  # fmt: skip
        return self._stage("strong", full_key, build)

    def strong(self, method: str, seed: int, eps: float = 0.0) -> str:
        """Stage 4: the strong model trained by `method` (a STRONG_METHODS name or 'gold'); returns its folder."""
        cfg = self.config
        if method == "gold":
            if self.setting.gold_responses is not None:  # the strong model trained on gold supervision
                prompts = self._prompts("train")
                data = Dataset.from_dict({"prompt": prompts,
                                          "completion": [self.setting.gold_responses(p) for p in prompts]})  # fmt: skip
                return str(self._sft_stage("gold", data, cfg.gold_sft, {}, seed))
            pairs = self.gold_pairs(seed)
            return str(self._dpo_stage("gold", self.setting.strong_base, pairs, cfg.gold_dpo, {}, seed))
        if method not in STRONG_METHODS:
            raise ValueError(f"unknown method {method!r}; known: {STRONG_METHODS + ('gold',)}")
        samples = self.weak_samples(seed, eps)
        plain = samples.select_columns(["prompt", "plain"]).rename_column("plain", "completion")
        contrastive = samples.select_columns(["prompt", "cd"]).rename_column("cd", "completion")
        key = {"eps": eps}
        if method == "weaksft":
            return str(self._sft_stage(method, plain, cfg.strong_sft, key, seed))
        if method == "auxconf":
            return str(self._sft_stage(method, plain, cfg.strong_sft, {**key, "w": cfg.auxconf_weight}, seed,
                                       trainer_cls=AuxConfTrainer,
                                       trainer_kwargs=lambda: {"aux_weight": cfg.auxconf_weight}))  # fmt: skip
        if method == "wspo":  # on the weak preference set's chosen responses, as in the authors' release
            pi_r = self.weak_aligned(seed, eps)
            chosen = self.weak_preferences(seed, eps).select_columns(["prompt", "chosen"])
            chosen = chosen.rename_column("chosen", "completion")

            def wspo_models() -> dict:
                return {"ref_model": self.load(self.setting.strong_base), "weak_model": self.load(pi_r),
                        "weak_ref_model": self.load(self.setting.weak_base), "beta": cfg.wspo.beta}  # fmt: skip

            return str(self._sft_stage(method, chosen, cfg.wspo, {**key, "pi_r": self._ref(pi_r)}, seed,
                                       trainer_cls=WSPOTrainer, trainer_kwargs=wspo_models))  # fmt: skip
        if method == "cong_s":
            return str(self._sft_stage(method, contrastive, cfg.strong_sft, key, seed))
        # cong: ConG-S, then DPO with the CD sample as chosen and ConG-S's own sample as rejected.
        cong_s = self.strong("cong_s", seed, eps)
        return str(self._dpo_stage("cong", cong_s, self.cong_pairs(seed, eps), cfg.cong_dpo, {}, seed))

    def cong_pairs(self, seed: int, eps: float = 0.0) -> Dataset:
        """ConG's preference data: chosen = CD sample, rejected = ConG-S's own sample (identical pairs dropped)."""
        samples, cong_s = self.weak_samples(seed, eps), self.strong("cong_s", seed, eps)
        key = {"model": self._ref(cong_s), "sampling": cache_view(self.config.sampling), "seed": seed}

        def make() -> Dataset:
            gen = sample(self.load(cong_s), self.tokenizer, list(samples["prompt"]),
                         self._sampling(seed=stream_seed(seed, "cong_own_samples")), progress=self.progress, **self.chat)  # fmt: skip
            pairs = {"prompt": [], "chosen": [], "rejected": []}
            for prompt, chosen, rejected in zip(samples["prompt"], samples["cd"], gen.texts):
                if chosen != rejected:
                    pairs["prompt"].append(prompt)
                    pairs["chosen"].append(chosen)
                    pairs["rejected"].append(rejected)
            return Dataset.from_dict(pairs)

        return self._dataset_stage("cong_pairs", key, make, "pairs")

    # --- stage 5: evaluation --------------------------------------------------------------------------------------

    def evaluate(self, model_path: str, seed: int) -> dict:
        """`eval_samples` samples per eval prompt scored on every reward channel (r*, r_pref, r_cap when the scorer
        has them), response length, and held-out capability.

        Sampling seeds depend on `seed` only, so every model of one seed is judged on paired draws. The setting's base
        models are the same in every replicate: they are evaluated once (with the first seed's draws) and that
        evaluation serves every seed.
        """
        cfg = self.config
        if model_path in (self.setting.weak_base, self.setting.strong_base):
            seed = cfg.seeds[0]
        key = {"model": self._ref(model_path), "seed": seed, "k": cfg.eval_samples, "sampling": cache_view(cfg.sampling)}

        def build(tmp: Path) -> None:
            model, prompts, k = self.load(model_path), self._prompts("eval"), cfg.eval_samples
            texts = self._draws(model, prompts, k, stream_seed(seed, "evaluation")).texts
            n = len(prompts)
            result = {name: [values[j * n : (j + 1) * n] for j in range(k)]  # draw j of every prompt
                      for name, values in self._judge(prompts * k, texts).items()}  # fmt: skip
            result["lengths"] = [[len(t) for t in texts[j * n : (j + 1) * n]] for j in range(k)]
            result.update(self._capability(model))
            write_json_atomic(tmp / "eval.json", result)

        return read_json(self._stage("evaluate", key, build) / "eval.json")

    def _draws(self, model, prompts: list[str], k: int, seed: int, **overrides):
        """k samples of every prompt in one batched run: draw j of prompt i is row j * len(prompts) + i, whose
        randomness is seeded by (seed, row), so every draw is independent."""
        return sample(model, self.tokenizer, prompts * k, self._sampling(seed=seed, **overrides),
                      progress=self.progress, **self.chat)  # fmt: skip

    def _judge(self, prompts: list[str], texts: list[str]) -> dict[str, list[float]]:
        """{"scores": r*, "r_pref": ..., "r_cap": ...}: both channels when the scorer has them; a reward model (no
        channels) is the preference judge, so r_pref = its score and capability comes from the held-out sets."""
        scores = self._score(prompts, texts)
        channels = getattr(self.setting.scorer, "channels", None)
        if channels is None:
            return {"scores": scores, "r_pref": scores}
        return {"scores": scores, **channels(prompts, texts)}

    def _capability(self, model) -> dict:
        out = {}
        if self.setting.multiple_choice is not None:
            from .evaluation import multiple_choice_accuracy

            out["mc_accuracy"] = multiple_choice_accuracy(model, self.tokenizer, self.setting.multiple_choice, **self.chat)
        heldout = self.setting.heldout_prompts
        if heldout is None:
            return out
        prompts = list(heldout["prompt"])
        if self.setting.is_correct is not None:
            greedy = sample(model, self.tokenizer, prompts, self._sampling(do_sample=False), progress=False, **self.chat)
            out["heldout_accuracy"] = sum(self.setting.is_correct(p, r) for p, r in zip(prompts, greedy.texts)) / len(
                prompts
            )
        if "reference" in heldout.column_names:
            logps = mean_response_logprobs(model, self.tokenizer, prompts, heldout["reference"], batch_size=256,
                                           **self.chat)  # fmt: skip
            out["heldout_answer_logprob"] = sum(logps) / len(logps)
        return out

    # --- claims 1 and 2, and the weak pair's preconditions -------------------------------------------------------

    def weak_pair_pool(self, seed: int, eps: float = 0.0) -> Dataset:
        """pi_r's own samples (`eval_samples` per eval prompt, the evaluation decoding), each with the weak pair's
        implicit reward (sum and mean over tokens, beta = 1) and every reward channel: claim 1 and the ranking
        preconditions are measured within this pool (pi_r aligned on labels with noise rate `eps`)."""
        pi_r_path = self.weak_aligned(seed, eps)
        cfg = self.config
        key = {"pi_r": self._ref(pi_r_path), "sampling": cache_view(cfg.sampling), "k": cfg.eval_samples, "seed": seed}

        def make() -> Dataset:
            (pi_r, pi_ref), prompts = self._weak_pair(pi_r_path), self._prompts("eval")
            k, n = cfg.eval_samples, len(prompts)
            prompt_ids = [encode_prompt(self.tokenizer, p, **self.chat) for p in prompts] * k
            gen = self._draws(pi_r, prompts, k, stream_seed(seed, "weak_pair_pool"))
            implicit = implicit_reward_from_ids(pi_r, pi_ref, prompt_ids, gen.token_ids, beta=1.0, batch_size=256)
            rows = {"prompt": prompts * k, "k": [j for j in range(k) for _ in range(n)], "response": gen.texts,
                    "implicit": implicit.total, "implicit_mean": implicit.mean}  # fmt: skip
            return Dataset.from_dict({**rows, **self._judge(prompts * k, gen.texts)})

        return self._dataset_stage("weak_pair_pool", key, make, "pool")

    def attribute_probes(self, seed: int) -> Dataset | None:
        """Per eval prompt and preference attribute: the summed implicit reward of the better response and of the
        same response with that one attribute made worse (None when the setting has no probes)."""
        if self.setting.preference_probes is None:
            return None
        pi_r_path = self.weak_aligned(seed, 0.0)

        def make() -> Dataset:
            pi_r, pi_ref = self._weak_pair(pi_r_path)
            rows = [(p, *probe) for p in self._prompts("eval") for probe in self.setting.preference_probes(p)]
            prompts, attributes, better, worse = (list(col) for col in zip(*rows))
            good = implicit_reward(pi_r, pi_ref, self.tokenizer, prompts, better, 1.0, 256, **self.chat).total
            bad = implicit_reward(pi_r, pi_ref, self.tokenizer, prompts, worse, 1.0, 256, **self.chat).total
            return Dataset.from_dict({"prompt": prompts, "attribute": attributes, "better": better, "worse": worse,
                                      "implicit_better": good, "implicit_worse": bad})  # fmt: skip

        return self._dataset_stage("attribute_probes", {"pi_r": self._ref(pi_r_path), "seed": seed}, make, "probes")

    def alpha_sweep(self, seed: int, eps: float = 0.0) -> Dataset:
        """Claim 2: CD samples on eval prompts at each alpha, and naive samples of pi_r, with the implicit reward
        (sum over tokens) and every reward channel."""
        pi_r_path = self.weak_aligned(seed, eps)
        cfg = self.config
        key = {"pi_r": self._ref(pi_r_path), "alphas": cfg.alpha_sweep, "lam": cfg.cd_lam,
               "sampling": cache_view(cfg.sampling), "seed": seed, "eps": eps}  # fmt: skip

        def make() -> Dataset:
            (pi_r, pi_ref), prompts = self._weak_pair(pi_r_path), self._prompts("eval")
            prompt_ids = [encode_prompt(self.tokenizer, p, **self.chat) for p in prompts]
            rows = {"alpha": [], "prompt": [], "response": [], "implicit": [], "length": []}
            judged: dict[str, list] = {}
            runs = [(a, True) for a in cfg.alpha_sweep] + [(float("nan"), False)]
            draw = stream_seed(seed, "alpha_sweep")  # one draw for every alpha and for naive: paired comparisons
            for alpha, contrastive in runs:
                if contrastive:
                    run = self._sampling(seed=draw, alpha=alpha, min_p=cfg.cd_lam)
                    gen = contrastive_generate(pi_r, pi_ref, self.tokenizer, prompts, run, progress=False, **self.chat)
                    implicit = [sum(r) for r in gen.log_ratios]
                else:  # naive sampling from pi_r, scored by the rewards module
                    gen = sample(pi_r, self.tokenizer, prompts, self._sampling(seed=draw), progress=False, **self.chat)
                    implicit = implicit_reward_from_ids(pi_r, pi_ref, prompt_ids, gen.token_ids, beta=1.0,
                                                        batch_size=256).total  # fmt: skip
                rows["alpha"] += [alpha] * len(prompts)
                rows["prompt"] += prompts
                rows["response"] += gen.texts
                rows["implicit"] += implicit
                rows["length"] += [len(t) for t in gen.texts]
                for name, values in self._judge(prompts, gen.texts).items():
                    judged.setdefault(name, []).extend(values)
            return Dataset.from_dict({**rows, **judged})

        return self._dataset_stage("alpha_sweep", key, make, "sweep")

    def claims(self) -> pd.DataFrame:
        """Claim 1 and 2 rows and the weak pair's precondition rows (tidy), for every seed, at epsilon = 0."""
        from .evaluation import claim_rows

        rows = []
        for seed in self.config.seeds:
            rows += claim_rows(seed, self.weak_pair_pool(seed), self.alpha_sweep(seed), self.attribute_probes(seed),
                               self.config.best_of)  # fmt: skip
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)

    def training_views(self, seed: int = 0, eps: float = 0.0, n: int = 5) -> pd.DataFrame:
        """What each strong method trained on, for the first `n` training prompts."""
        samples = self.weak_samples(seed, eps).select(range(n))
        cong_pairs = self.cong_pairs(seed, eps)
        own = dict(zip(cong_pairs["prompt"], cong_pairs["rejected"]))
        chosen = dict(zip(*(self.weak_preferences(seed, eps)[c] for c in ("prompt", "chosen"))))
        gold = self.setting.gold_responses or (lambda p: "(DPO on own samples ranked by the explicit reward)")
        return pd.DataFrame([{
            "prompt": row["prompt"],
            "WeakSFT / AuxConf: pi_r sample": row["plain"],
            "WSPO: weak chosen response": chosen.get(row["prompt"], "(tie: no pair)"),
            "ConG-S target, ConG chosen: CD sample": row["cd"],
            "ConG rejected: ConG-S's own sample": own.get(row["prompt"], "(same as chosen: pair dropped)"),
            "gold": gold(row["prompt"]),
        } for row in samples])  # fmt: skip

    # --- everything -----------------------------------------------------------------------------------------------

    def model_paths(self, seed: int, eps: float, every_method: bool = False) -> dict[str, str]:
        """Every model of one replicate: all methods at the clean setting, the `noise` methods (claim 5) at others
        (`every_method`: all of them at any eps, as the regime map needs)."""
        clean = eps == self.config.noise_levels[0] or every_method
        paths = {"strong_base": self.setting.strong_base, "weak_base": self.setting.weak_base,
                 "weak_aligned": self.weak_aligned(seed, eps)}  # fmt: skip
        if clean:
            paths["gold"] = self.strong("gold", seed)
        for method in STRONG_METHODS:
            if clean or BY_NAME[method].noise:
                paths[method] = self.strong(method, seed, eps)
        return paths

    def replicate(self, seed: int) -> list[dict]:
        """Every stage of one seed (all noise levels, evaluations, the weak pair's pool, sweep and probes); returns
        the seed's evaluation rows. Seeds are independent: separate processes may build them concurrently."""
        from .evaluation import evaluation_rows

        rows = []
        for eps in self.config.noise_levels:
            paths = self.model_paths(seed, eps)
            results = {method: self.evaluate(path, seed) for method, path in paths.items()}
            for method, result in results.items():
                rows += evaluation_rows(method, seed, eps, result, results["strong_base"])
        self.weak_pair_pool(seed), self.alpha_sweep(seed), self.attribute_probes(seed)
        return rows

    def run(self) -> pd.DataFrame:
        """All stages for all seeds and noise levels; the tidy results table (columns `RESULT_COLUMNS`). Writes
        results.csv, preconditions.csv and verdicts.csv into the pipeline's folder."""
        from .evaluation import pgr_rows, preconditions, verdicts

        start = time.perf_counter()
        rows = [row for seed in self.config.seeds for row in self.replicate(seed)]
        rows += self.claims().to_dict("records")
        table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        table = pd.concat([table, pd.DataFrame(pgr_rows(table), columns=RESULT_COLUMNS)], ignore_index=True)
        conditions = preconditions(table, self.config)
        for name, frame in (("results", table), ("preconditions", conditions),
                            ("verdicts", verdicts(table, conditions, self.config))):  # fmt: skip
            write_csv_atomic(frame, self.root / f"{name}.csv")
        self.timings["total"] = time.perf_counter() - start
        return table


RESULT_COLUMNS = ["method", "seed", "eps", "alpha", "metric", "value"]


def content_key(ds: Dataset) -> str:
    """A fingerprint of a dataset's contents (in-memory datasets get random `_fingerprint`s; this is stable)."""
    return fingerprint(ds.to_dict())


def _seeded(cfg: TrainConfig, seed: int) -> TrainConfig:
    return TrainConfig(**{**asdict(cfg), "seed": seed})
