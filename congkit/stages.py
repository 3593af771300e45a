"""The ConG pipeline and its baselines, stage by stage, each stage cached and resumable.

    setting = Setting.from_world(build_world(WorldConfig()))       # or Setting(...) with real checkpoints
    results = Pipeline(setting, PipelineConfig(), root="runs").run() # tidy table: method, seed, setting, metric, value

Stages (PAPER.md, "The pipeline"), per seed and label-noise rate epsilon:
  1. weak_preferences: N samples per training prompt from the weak base, scored by the explicit reward, best =
     chosen, worst = rejected, ties dropped; a fraction epsilon of pairs flipped.
  2. weak_aligned: TRL DPO, weak base (pi_ref) -> pi_r.
  3. weak_samples: CD between pi_r and pi_ref (alpha, lambda), and ordinary samples from pi_r, per training prompt.
  4. strong methods from the strong base: weaksft, auxconf, wspo, cong_s, cong; gold (DPO on the strong model's own
     samples ranked by the true reward) is the ceiling.
  5. evaluation on held-out prompts (see `congkit.evaluation`).
Every artifact sits in `root/<stage>/<fingerprint of its inputs and settings>/` and is written atomically.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from transformers import set_seed

from .cache import build_once, fingerprint, read_json, write_json_atomic
from .data import load_saved_dataset
from .decoding import DecodingConfig, contrastive_generate, sample
from .models import load_causal_lm, load_tokenizer
from .rewards import check_same_vocab, implicit_reward_from_ids, mean_response_logprobs
from .scorers import Scorer
from .tokens import encode_prompt
from .trainers import AuxConfTrainer, WSPOTrainer
from .training import TrainConfig, train_dpo, train_sft

STRONG_METHODS = ("weaksft", "auxconf", "wspo", "cong_s", "cong")


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
        from .world import canonical_response, dataset_tasks, judge

        heldout = world.prompts("heldout")
        tasks = {t.prompt: t for t in dataset_tasks(heldout)}
        heldout = heldout.map(lambda row: {"reference": canonical_response(tasks[row["prompt"]])})
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
            key=world.path.name,
            device=device or "cpu",
            dtype=torch.float32,
        )


@dataclass
class PipelineConfig:
    """Every knob of the experiment. Learning rates are for the tiny world's models (the paper's are for 3-8B)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4])
    n_preference_samples: int = 4
    # T 0.8 / top-p 0.95 as the authors; no repetition penalty: with character tokens every answer repeats tokens.
    sampling: DecodingConfig = field(
        default_factory=lambda: DecodingConfig(
            lam=None, temperature=0.8, top_p=0.95, repetition_penalty=1.0, max_new_tokens=48, batch_size=64
        )
    )
    cd_alpha: float = 0.5
    cd_lam: float = 0.1
    alpha_sweep: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    # DPO stages add an NLL term on the chosen response (RPO; TRL loss_type ["sigmoid", "sft"]): plain DPO on these
    # character-level models lowers the likelihood of answer tokens shared by chosen and rejected and wrecks accuracy.
    weak_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=2e-4, num_train_epochs=2, beta=0.1,
                                                                      dpo_loss=["sigmoid", "sft"]))  # fmt: skip
    strong_sft: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1e-4, num_train_epochs=2))
    auxconf_weight: float = 0.5
    wspo: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1e-4, num_train_epochs=2, beta=0.1))
    cong_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1e-4, num_train_epochs=2, beta=0.5,
                                                                      dpo_loss=["sigmoid", "sft"]))  # fmt: skip
    gold_dpo: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=2e-4, num_train_epochs=2, beta=0.1,
                                                                      dpo_loss=["sigmoid", "sft"]))  # fmt: skip
    eval_samples: int = 4
    eval_seed: int = 1000

    def validate(self) -> None:
        if not self.seeds:
            raise ValueError("PipelineConfig.seeds is empty: name at least one seed")
        if not self.noise_levels or any(not 0.0 <= e <= 1.0 for e in self.noise_levels):
            raise ValueError(f"noise_levels must be a non-empty list in [0, 1], got {self.noise_levels}")
        if self.n_preference_samples < 2:
            raise ValueError(f"n_preference_samples must be >= 2 to form a pair, got {self.n_preference_samples}")
        DecodingConfig(alpha=self.cd_alpha, lam=self.cd_lam).validate(contrastive=True)
        for a in self.alpha_sweep:
            DecodingConfig(alpha=a, lam=self.cd_lam).validate(contrastive=True)


def smoke_pipeline_config() -> PipelineConfig:
    """Everything once and small: for tests (about a minute on 2 cores)."""
    return PipelineConfig(
        seeds=[0],
        noise_levels=[0.0, 0.4],
        n_preference_samples=3,
        sampling=DecodingConfig(lam=None, temperature=0.8, top_p=0.95, repetition_penalty=1.0, max_new_tokens=24),
        alpha_sweep=[0.0, 0.5, 1.0],
        eval_samples=2,
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
        self.timings: dict[str, float] = {}

    # --- plumbing -------------------------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        if self.progress:
            print(f"[congkit] {message}", flush=True)

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
        key = {"model": self._ref(model_path), "seed": seed, "n": cfg.n_preference_samples, "sampling": asdict(cfg.sampling)}

        def make() -> Dataset:
            model, prompts, n = self.load(model_path), self._prompts("train"), cfg.n_preference_samples
            samples = [[] for _ in prompts]
            for k in range(n):
                gen = sample(
                    model, self.tokenizer, prompts, self._sampling(seed=seed * 1000 + k), progress=self.progress
                )
                for i, text in enumerate(gen.texts):
                    samples[i].append(text)
            flat = self._score([p for p in prompts for _ in range(n)], [t for texts in samples for t in texts])
            scores = [flat[i * n : (i + 1) * n] for i in range(len(prompts))]
            return Dataset.from_dict({"prompt": prompts, "samples": samples, "scores": scores})

        return self._dataset_stage(stage, key, make, "pool")

    def weak_preferences(self, seed: int, eps: float) -> Dataset:
        """Stage 1: weak preference data (columns prompt, chosen, rejected, *_score, flipped)."""
        pool = self._pool(self.setting.weak_base, seed, "weak_pool")
        return preference_pairs(pool["prompt"], pool["samples"], pool["scores"], eps, seed)

    def gold_pairs(self, seed: int) -> Dataset:
        """The gold ceiling's data: the strong base's own samples ranked by the true explicit reward."""
        pool = self._pool(self.setting.strong_base, seed, "strong_pool")
        return preference_pairs(pool["prompt"], pool["samples"], pool["scores"], 0.0, seed)

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
        key = {"pi_r": self._ref(pi_r_path), "alpha": cfg.cd_alpha, "lam": cfg.cd_lam, "sampling": asdict(cfg.sampling),
               "seed": seed, "eps": eps}  # fmt: skip

        def make() -> Dataset:
            (pi_r, pi_ref), prompts = self._weak_pair(pi_r_path), self._prompts("train")
            run = self._sampling(seed=seed, alpha=cfg.cd_alpha, lam=cfg.cd_lam)
            cd = contrastive_generate(pi_r, pi_ref, self.tokenizer, prompts, run, progress=self.progress)
            plain = sample(pi_r, self.tokenizer, prompts, self._sampling(seed=seed), progress=self.progress)
            return Dataset.from_dict(
                {"prompt": prompts, "cd": cd.texts, "cd_implicit": cd.implicit_reward(), "plain": plain.texts}
            )

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
        if method == "wspo":
            pi_r = self.weak_aligned(seed, eps)

            def wspo_models() -> dict:
                return {"ref_model": self.load(self.setting.strong_base), "weak_model": self.load(pi_r),
                        "weak_ref_model": self.load(self.setting.weak_base), "beta": cfg.wspo.beta}  # fmt: skip

            return str(self._sft_stage(method, plain, cfg.wspo, {**key, "pi_r": self._ref(pi_r)}, seed,
                                       trainer_cls=WSPOTrainer, trainer_kwargs=wspo_models))  # fmt: skip
        if method == "cong_s":
            return str(self._sft_stage(method, contrastive, cfg.strong_sft, key, seed))
        # cong: ConG-S, then DPO with the CD sample as chosen and ConG-S's own sample as rejected.
        cong_s = self.strong("cong_s", seed, eps)
        return str(self._dpo_stage("cong", cong_s, self.cong_pairs(seed, eps), cfg.cong_dpo, {}, seed))

    def cong_pairs(self, seed: int, eps: float = 0.0) -> Dataset:
        """ConG's preference data: chosen = CD sample, rejected = ConG-S's own sample (identical pairs dropped)."""
        samples, cong_s = self.weak_samples(seed, eps), self.strong("cong_s", seed, eps)
        key = {"model": self._ref(cong_s), "sampling": asdict(self.config.sampling), "seed": seed}

        def make() -> Dataset:
            gen = sample(self.load(cong_s), self.tokenizer, list(samples["prompt"]),
                         self._sampling(seed=seed + 7), progress=self.progress)  # fmt: skip
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
        """Explicit reward of `eval_samples` samples per eval prompt, response length, and held-out capability.

        Sampling seeds depend on `seed` only, so every model of one seed is judged on paired draws.
        """
        cfg = self.config
        key = {"model": self._ref(model_path), "seed": seed, "k": cfg.eval_samples, "sampling": asdict(cfg.sampling),
               "eval_seed": cfg.eval_seed}  # fmt: skip

        def build(tmp: Path) -> None:
            model, prompts = self.load(model_path), self._prompts("eval")
            scores, lengths = [], []
            for k in range(cfg.eval_samples):
                run = self._sampling(seed=cfg.eval_seed + 100 * seed + k)
                texts = sample(model, self.tokenizer, prompts, run, progress=False).texts
                scores.append(self._score(prompts, texts))
                lengths.append([len(t) for t in texts])
            result = {"scores": scores, "lengths": lengths}
            result.update(self._capability(model))
            write_json_atomic(tmp / "eval.json", result)

        return read_json(self._stage("evaluate", key, build) / "eval.json")

    def _capability(self, model) -> dict:
        out = {}
        if self.setting.multiple_choice is not None:
            from .evaluation import multiple_choice_accuracy

            out["mc_accuracy"] = multiple_choice_accuracy(model, self.tokenizer, self.setting.multiple_choice)
        heldout = self.setting.heldout_prompts
        if heldout is None:
            return out
        prompts = list(heldout["prompt"])
        if self.setting.is_correct is not None:
            greedy = sample(model, self.tokenizer, prompts, self._sampling(do_sample=False), progress=False)
            out["heldout_accuracy"] = sum(self.setting.is_correct(p, r) for p, r in zip(prompts, greedy.texts)) / len(
                prompts
            )
        if "reference" in heldout.column_names:
            logps = mean_response_logprobs(model, self.tokenizer, prompts, heldout["reference"])
            out["heldout_answer_logprob"] = sum(logps) / len(logps)
        return out

    # --- claims 1 and 2 -------------------------------------------------------------------------------------------

    def implicit_vs_explicit(self, seed: int, eps: float = 0.0) -> Dataset:
        """Claim 1 pool: samples of pi_ref and pi_r on eval prompts with implicit (mean) and explicit reward."""
        pi_r_path = self.weak_aligned(seed, eps)
        key = {"pi_r": self._ref(pi_r_path), "sampling": asdict(self.config.sampling), "seed": seed, "eps": eps}

        def make() -> Dataset:
            (pi_r, pi_ref), prompts = self._weak_pair(pi_r_path), self._prompts("eval")
            prompt_ids = [encode_prompt(self.tokenizer, p) for p in prompts]
            rows = {"prompt": [], "response": [], "source": [], "implicit": [], "explicit": []}
            for source, model in (("pi_ref", pi_ref), ("pi_r", pi_r)):
                gen = sample(model, self.tokenizer, prompts, self._sampling(seed=seed + 31), progress=False)
                implicit = implicit_reward_from_ids(pi_r, pi_ref, prompt_ids, gen.token_ids).mean
                rows["prompt"] += prompts
                rows["response"] += gen.texts
                rows["source"] += [source] * len(prompts)
                rows["implicit"] += implicit
                rows["explicit"] += self._score(prompts, gen.texts)
            return Dataset.from_dict(rows)

        return self._dataset_stage("implicit_vs_explicit", key, make, "pool")

    def alpha_sweep(self, seed: int, eps: float = 0.0) -> Dataset:
        """Claim 2: CD samples on eval prompts at each alpha, and naive samples of pi_r, with both rewards."""
        pi_r_path = self.weak_aligned(seed, eps)
        cfg = self.config
        key = {"pi_r": self._ref(pi_r_path), "alphas": cfg.alpha_sweep, "lam": cfg.cd_lam, "sampling": asdict(cfg.sampling),
               "seed": seed, "eps": eps}  # fmt: skip

        def make() -> Dataset:
            (pi_r, pi_ref), prompts = self._weak_pair(pi_r_path), self._prompts("eval")
            prompt_ids = [encode_prompt(self.tokenizer, p) for p in prompts]
            rows = {"alpha": [], "prompt": [], "response": [], "implicit": [], "explicit": [], "length": []}
            runs = [(a, True) for a in cfg.alpha_sweep] + [(float("nan"), False)]
            for alpha, contrastive in runs:
                if contrastive:
                    run = self._sampling(seed=seed + 17, alpha=alpha, lam=cfg.cd_lam)
                    gen = contrastive_generate(pi_r, pi_ref, self.tokenizer, prompts, run, progress=False)
                    implicit = gen.implicit_reward()
                else:  # naive sampling from pi_r, scored by the rewards module
                    gen = sample(pi_r, self.tokenizer, prompts, self._sampling(seed=seed + 17), progress=False)
                    implicit = implicit_reward_from_ids(pi_r, pi_ref, prompt_ids, gen.token_ids).mean
                rows["alpha"] += [alpha] * len(prompts)
                rows["prompt"] += prompts
                rows["response"] += gen.texts
                rows["implicit"] += implicit
                rows["explicit"] += self._score(prompts, gen.texts)
                rows["length"] += [len(t) for t in gen.texts]
            return Dataset.from_dict(rows)

        return self._dataset_stage("alpha_sweep", key, make, "sweep")

    def claims(self) -> pd.DataFrame:
        """Claim 1 and claim 2 rows (tidy) for every seed, at epsilon = 0."""
        from .evaluation import claim_rows

        rows = []
        for seed in self.config.seeds:
            rows += claim_rows(seed, self.implicit_vs_explicit(seed), self.alpha_sweep(seed))
        return pd.DataFrame(rows)

    def training_views(self, seed: int = 0, eps: float = 0.0, n: int = 5) -> pd.DataFrame:
        """What each strong method trained on, for the first `n` training prompts."""
        samples = self.weak_samples(seed, eps).select(range(n))
        cong_pairs = self.cong_pairs(seed, eps)
        own = dict(zip(cong_pairs["prompt"], cong_pairs["rejected"]))
        gold = self.gold_pairs(seed)
        gold_pairs = {p: (c, r) for p, c, r in zip(gold["prompt"], gold["chosen"], gold["rejected"])}
        rows = []
        for row in samples:
            p = row["prompt"]
            rows.append(
                {
                    "prompt": p,
                    "WeakSFT / AuxConf / WSPO: pi_r sample": row["plain"],
                    "ConG-S target, ConG chosen: CD sample": row["cd"],
                    "ConG rejected: ConG-S's own sample": own.get(p, "(same as chosen: pair dropped)"),
                    "gold chosen / rejected": " | ".join(gold_pairs.get(p, ("(tie: dropped)", ""))),
                }
            )
        return pd.DataFrame(rows)

    # --- everything -----------------------------------------------------------------------------------------------

    def model_paths(self, seed: int, eps: float) -> dict[str, str]:
        paths = {"strong_base": self.setting.strong_base, "weak_base": self.setting.weak_base,
                 "weak_aligned": self.weak_aligned(seed, eps), "gold": self.strong("gold", seed)}  # fmt: skip
        for method in STRONG_METHODS:
            paths[method] = self.strong(method, seed, eps)
        return paths

    def run(self) -> pd.DataFrame:
        """All stages for all seeds and noise levels; the tidy results table (also saved as results.csv)."""
        from .evaluation import evaluation_rows, pgr_rows

        start = time.perf_counter()
        rows = []
        for seed in self.config.seeds:
            for eps in self.config.noise_levels:
                paths = self.model_paths(seed, eps)
                reference = self.evaluate(paths["strong_base"], seed)
                for method, path in paths.items():
                    rows += evaluation_rows(method, seed, eps, self.evaluate(path, seed), reference)
        rows += self.claims().to_dict("records")
        table = pd.DataFrame(rows, columns=["method", "seed", "setting", "metric", "value"])
        table = pd.concat([table, pd.DataFrame(pgr_rows(table))], ignore_index=True)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "results.csv.tmp"
        table.to_csv(tmp, index=False)
        tmp.replace(self.root / "results.csv")
        self.timings["total"] = time.perf_counter() - start
        return table


def content_key(ds: Dataset) -> str:
    """A fingerprint of a dataset's contents (in-memory datasets get random `_fingerprint`s; this is stable)."""
    return fingerprint(ds.to_dict())


def _seeded(cfg: TrainConfig, seed: int) -> TrainConfig:
    return TrainConfig(**{**asdict(cfg), "seed": seed})
