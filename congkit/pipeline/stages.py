"""`congkit.pipeline.cong`'s steps as cached nodes of the runner (`congkit.pipeline.runner`), each declared where it is defined.

The algorithm itself is in `congkit/pipeline/cong.py` (read it there, top to bottom); the compared methods and their recipes in
`congkit.pipeline.methods`; the study's measurements in `congkit.pipeline`. Here, per seed and label-noise rate epsilon:
  weak_pool -> weak_preferences (eps of pairs flipped) -> weak_aligned (DPO: pi_ref -> pi_r) -> weak_samples (CD and
  plain samples of pi_r) -> the training-data sources -> strong (each method's recipe), fixed or tuned.
Every random draw takes its seed from `stream_seed(seed, purpose, k)`: one named stream per purpose.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from datasets import Dataset

from congkit.pipeline import cong, measure, plan
from congkit.pipeline.cache import cache_view, read_json, write_json_atomic
from congkit.pipeline.code_key import code_key
from congkit.pipeline.cong import seeded, stream_seed
from congkit.pipeline.methods import DATA_SOURCES, TrainInputs, data_source, recipe
from congkit.pipeline.runner import Pipeline, node
from congkit.pipeline.settings import tuned_methods
from congkit.pipeline.training import TrainConfig

# --- the weak side ----------------------------------------------------------------------------------------------------


@node(stage=True)
def weak_pool(pipe: Pipeline, seed: int) -> Dataset:
    """`n_preference_samples` judged samples per training prompt from the weak base (`cong.sample_pool`)."""
    return _pool(pipe, "weak_pool", pipe.setting.weak_base, seed)


@node(stage=True)
def strong_pool(pipe: Pipeline, seed: int) -> Dataset:
    """The same from the strong base: the gold ceiling's ranked pairs where a setting has no gold responses."""
    return _pool(pipe, "strong_pool", pipe.setting.strong_base, seed)


def _pool(pipe: Pipeline, stage: str, model_path: str, seed: int) -> Dataset:
    cfg = pipe.config
    key = {"model": pipe.ref(model_path), "seed": seed, "n": cfg.n_preference_samples, "sampling": cache_view(cfg.sampling)}
    decoding = pipe.sampling(seed=stream_seed(seed, stage))
    return pipe.dataset(stage, key, lambda: cong.sample_pool(pipe.load(model_path), pipe.tokenizer, pipe.prompts("train"),
                                                            pipe.setting.scorer, cfg.n_preference_samples, decoding,
                                                            pipe.chat), "pool")  # fmt: skip


@node
def weak_preferences(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """Weak preference pairs (columns prompt, chosen, rejected, *_score, flipped); a fraction eps flipped."""
    return cong.preference_pairs(pipe.weak_pool(seed), eps, stream_seed(seed, "label_noise"))


@node(stage=True)
def weak_aligned(pipe: Pipeline, seed: int, eps: float, cfg: TrainConfig | None = None) -> str:
    """pi_r = DPO(weak base) on the weak preference pairs (`cong.dpo`) with settings `cfg`, by default the configured
    `weak_dpo` (under plan 2, the one chosen on the validation prompts: `weak_dpo_config`); returns its folder."""
    if cfg is None:
        return pipe.weak_aligned(seed, eps, pipe.weak_dpo_config() if pipe.config.plan == 2 else pipe.config.weak_dpo)
    pairs, cfg, base = pipe.weak_preferences(seed, eps), seeded(cfg, seed), pipe.setting.weak_base
    key = {"eps": eps, "policy": pipe.ref(base), "train": cache_view(cfg), "data": pipe.data_key(pairs)}
    return pipe.train("weak_aligned", key, seed, lambda work, save: cong.dpo(pipe.load(base), pipe.load(base), pipe.tokenizer,
                                                                            pairs, cfg, work, save))  # fmt: skip


@node(stage=True)
def weak_samples(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """Per training prompt, a CD sample of pi_r against pi_ref (`cd`, `cd_implicit`) and a plain sample (`plain`)."""
    pi_r_path, cfg = pipe.weak_aligned(seed, eps), pipe.config
    key = {"pi_r": pipe.ref(pi_r_path), "alpha": cfg.cd_alpha, "min_p": cfg.cd_lam, "sampling": cache_view(cfg.sampling),
           "seed": seed, "eps": eps}  # fmt: skip

    def make() -> Dataset:
        (pi_r, pi_ref), prompts = pipe.weak_pair(pi_r_path), pipe.prompts("train")
        cd_run = pipe.sampling(seed=stream_seed(seed, "cd_samples"), alpha=cfg.cd_alpha, plausibility_threshold=cfg.cd_lam)
        cd = cong.contrastive_samples(pi_r, pi_ref, pipe.tokenizer, prompts, cd_run, pipe.chat)
        plain = cong.plain_samples(pi_r, pipe.tokenizer, prompts, pipe.sampling(seed=stream_seed(seed, "plain_samples")),
                                   pipe.chat)  # fmt: skip
        return Dataset.from_dict({"prompt": prompts, "cd": cd["completion"], "cd_implicit": cd["implicit"],
                                  "plain": plain["completion"]})  # fmt: skip

    return pipe.dataset("weak_samples", key, make, "samples")


# --- the training data a recipe can name (`congkit.pipeline.methods.DATA_SOURCES`) ----------------------------------------------


@data_source("prompt", "completion")
def plain_samples(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """One ordinary sample of pi_r per training prompt."""
    return pipe.weak_samples(seed, eps).select_columns(["prompt", "plain"]).rename_column("plain", "completion")


@data_source("prompt", "completion")
def cd_samples(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """One CD sample (pi_r against pi_ref, alpha = cd_alpha) per training prompt."""
    return pipe.weak_samples(seed, eps).select_columns(["prompt", "cd"]).rename_column("cd", "completion")


@data_source("prompt", "completion")
def weak_chosen(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """The weak preference set's chosen responses."""
    return pipe.weak_preferences(seed, eps).select_columns(["prompt", "chosen"]).rename_column("chosen", "completion")


@data_source("prompt", "chosen", "rejected", stage=True)
def cong_pairs(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """CD sample (chosen) vs ConG-S's own sample (rejected), identical pairs dropped (`cong.cong_pairs`)."""
    cd, cong_s = pipe.cd_samples(seed, eps), pipe.strong("cong_s", seed, eps)
    key = {"model": pipe.ref(cong_s), "sampling": cache_view(pipe.config.sampling), "seed": seed}
    decoding = pipe.sampling(seed=stream_seed(seed, "cong_own_samples"))
    return pipe.dataset("cong_pairs", key, lambda: cong.cong_pairs(pipe.load(cong_s), pipe.tokenizer, cd, decoding,
                                                                  pipe.chat), "pairs")  # fmt: skip


@data_source("prompt", "completion", stage=True)
def bon_implicit(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """The best of N (`best_of_n`) pi_r samples per training prompt by the weak pair's implicit reward (no labels;
    `cong.best_of_n_by_implicit_reward`)."""
    pi_r_path, n = pipe.weak_aligned(seed, eps), pipe.config.best_of_n
    key = {"pi_r": pipe.ref(pi_r_path), "n": n, "sampling": cache_view(pipe.config.sampling), "seed": seed, "eps": eps}
    decoding = pipe.sampling(seed=stream_seed(seed, "best_of_n"))
    return pipe.dataset("bon_implicit", key, lambda: cong.best_of_n_by_implicit_reward(
        *pipe.weak_pair(pi_r_path), pipe.tokenizer, pipe.prompts("train"), n, decoding, pipe.chat).select_columns(
        ["prompt", "completion"]), "best")  # fmt: skip


@data_source("prompt", "completion", stage=True)
def bon_cd(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """The best of N (`best_of_n`) CD samples (alpha = cd_alpha) per training prompt by the weak pair's implicit
    reward (no labels; `cong.best_of_n_cd`)."""
    pi_r_path, cfg = pipe.weak_aligned(seed, eps), pipe.config
    key = {"pi_r": pipe.ref(pi_r_path), "n": cfg.best_of_n, "alpha": cfg.cd_alpha, "min_p": cfg.cd_lam,
           "sampling": cache_view(cfg.sampling), "seed": seed, "eps": eps}  # fmt: skip
    decoding = pipe.sampling(seed=stream_seed(seed, "bon_cd"), alpha=cfg.cd_alpha, plausibility_threshold=cfg.cd_lam)
    return pipe.dataset("bon_cd", key, lambda: cong.best_of_n_cd(
        *pipe.weak_pair(pi_r_path), pipe.tokenizer, pipe.prompts("train"), cfg.best_of_n, decoding, pipe.chat
    ).select_columns(["prompt", "completion"]), "best")  # fmt: skip


@data_source("prompt")
def gold(pipe: Pipeline, seed: int, eps: float) -> Dataset:
    """Gold responses (SFT), or the strong base's own samples ranked by the explicit reward (DPO)."""
    if pipe.setting.gold_responses is not None:
        prompts = pipe.prompts("train")
        return Dataset.from_dict({"prompt": prompts, "completion": [pipe.setting.gold_responses(p) for p in prompts]})
    return cong.preference_pairs(pipe.strong_pool(seed), 0.0, 0)


# --- the strong side: every method by its recipe ----------------------------------------------------------------------


@node
def model_path(pipe: Pipeline, name: str, seed: int, eps: float = 0.0) -> str:
    """The folder (or hub id) of a model of this replicate, by its registry name."""
    if name in ("weak_base", "strong_base"):
        return getattr(pipe.setting, name)
    return pipe.weak_aligned(seed, eps) if name == "weak_aligned" else pipe.strong(name, seed, eps)


@node(stage=True)
def strong(pipe: Pipeline, method: str, seed: int, eps: float = 0.0, cfg: TrainConfig | None = None) -> str:
    """The strong model `method` trains by its registry recipe (`congkit.pipeline.methods`) with settings `cfg`, by default its
    fixed or tuned budget (`PipelineConfig.budget`); returns its folder. The gold ceiling is trained on clean
    supervision only. The key holds the recipe's code (`train`: data handling, loss, trainer wrapper), which static
    reading of this function cannot reach."""
    eps, how = 0.0 if method == "gold" else eps, recipe(method)
    data = pipe.call(how.data, seed, eps)
    if cfg is None:
        tuned = pipe.config.budget == "tuned" and method in tuned_methods(pipe.config)
        return pipe.strong(method, seed, eps, pipe.tuned_config(method) if tuned else fixed_config(pipe, method, data))
    require_columns(data, DATA_SOURCES[how.data].columns, method)
    start = pipe.model_path(how.start, seed, eps)
    others = {n: (start if n == "reference" else pipe.model_path(n, seed, eps)) for n in how.models}
    cfg = seeded(cfg, seed)
    options = {name: getattr(pipe.config, name) for name in how.options}
    key = {"method": method, "recipe": how.version, "recipe_code": code_key(how.train), "eps": eps,
           "start": pipe.ref(start), "train": cache_view(cfg), "models": {n: pipe.ref(p) for n, p in others.items()},
           "options": options, "data": pipe.data_key(data)}  # fmt: skip

    def train(work: str, save: str):
        inputs = TrainInputs(pipe.load(start), pipe.tokenizer, data, cfg, lambda n: pipe.load(others[n]), options, work,
                             save)  # fmt: skip
        return how.train(inputs)

    return pipe.train("strong", key, seed, train)


def fixed_config(pipe: Pipeline, method: str, data: Dataset) -> TrainConfig:
    """The method's configured settings (the fixed budget), its recipe's overrides applied; a setting given for it in
    `PipelineConfig.budgets` instead, as it is."""
    if method in pipe.config.budgets:
        return pipe.config.budgets[method]
    how = recipe(method)
    cfg = getattr(pipe.config, how.config) if isinstance(how.config, str) else how.config(pipe.config, data)
    return dataclasses.replace(cfg, **dict(how.overrides))


@node
def tuned_config(pipe: Pipeline, method: str) -> TrainConfig:
    """The grid point (learning rate x epochs, the config's plan) with the best validation score, trained and scored
    on the first seed at the clean setting; ties go to the first in grid order."""
    return best_row(pipe.tuning_rows(method))["config"]


def best_row(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: r["score"])  # max keeps the first of equal scores


@node
def tuning_rows(pipe: Pipeline, method: str) -> list[dict]:
    """Every grid point of `method`: its settings, the model it trained (first seed, clean setting), its validation
    score (the plan's criterion: oracle R_pref on the validation prompts) and `edge`: which edges of the grid it lies
    on. Under plan 2 a choice on an edge extends the grid one step past that edge, up to `extend_steps` steps past the
    pre-registered grid per edge (`extend_grid`)."""
    number = pipe.config.plan
    seed, eps = pipe.config.seeds[0], pipe.config.noise_levels[0]
    base = fixed_config(pipe, method, pipe.call(recipe(method).data, seed, eps))
    base_m, base_e = plan.value("tuning", "learning_rate_multipliers", plan=number), plan.value("tuning", "epochs",
                                                                                                  plan=number)  # fmt: skip
    steps = plan.value("tuning", "extend_steps", plan=2) if number == 2 else 0
    multipliers, epochs = list(base_m), list(base_e)
    scored: dict[tuple, dict] = {}
    while True:  # the base grid, then one step past the chosen point's edges until it is interior or capped
        for m in multipliers:
            for e in epochs:
                if (m, e) not in scored:
                    cfg = dataclasses.replace(base, learning_rate=base.learning_rate * m, num_train_epochs=e)
                    scored[m, e] = {"method": method, "learning_rate": cfg.learning_rate, "epochs": e, "config": cfg,
                                    "multiplier": m, "score": pipe.validation_score(pipe.strong(method, seed, eps, cfg),
                                                                                    seed)}  # fmt: skip
        best = best_row(list(scored.values()))
        grown = extend_grid(multipliers, epochs, best["multiplier"], best["epochs"], base_m, base_e, steps)
        if grown == (multipliers, epochs):
            break
        multipliers, epochs = grown
    return [row | {"edge": grid_edge(multipliers, epochs, row["multiplier"], row["epochs"])} for row in scored.values()]


def extend_grid(multipliers: list, epochs: list, m: float, e: int, base_m: list, base_e: list,
                steps: int) -> tuple[list, list]:  # fmt: skip
    """Plan 2's rule: a choice on an edge of the grid adds one step past that edge (learning rate x2 or /2, epochs x2
    or /2, at least 1), while that edge lies fewer than `steps` steps past the pre-registered grid (`base_m`,
    `base_e`)."""
    multipliers, epochs = sorted(multipliers), sorted(epochs)
    if m == multipliers[-1] and sum(x > max(base_m) for x in multipliers) < steps:
        multipliers.append(m * 2)
    if m == multipliers[0] and sum(x < min(base_m) for x in multipliers) < steps:
        multipliers.insert(0, m / 2)
    if e == epochs[-1] and sum(x > max(base_e) for x in epochs) < steps:
        epochs.append(e * 2)
    if e == epochs[0] and e > 1 and sum(x < min(base_e) for x in epochs) < steps:
        epochs.insert(0, max(1, e // 2))
    return multipliers, epochs


def grid_edge(multipliers: list, epochs: list, m: float, e: int) -> str:
    """Which edges of the (final) grid a point lies on, in words ("" when interior): a choice on an edge is
    budget-capped."""
    edges = [name for name, hit in (("lowest learning rate", m == min(multipliers)),
                                    ("highest learning rate", m == max(multipliers)),
                                    ("fewest epochs", e == min(epochs)), ("most epochs", e == max(epochs))) if hit]  # fmt: skip
    return ", ".join(edges)


@node
def weak_dpo_rows(pipe: Pipeline) -> list[dict]:
    """Plan 2's weak DPO choice: each point of its `weak_dpo_grid` (learning-rate multiplier x epochs of the configured
    `weak_dpo`) trained on the first seed at the clean setting and scored by `probe_score` on the validation prompts
    (the weak side has no strong model to score); `edge` as in `tuning_rows`, no extension."""
    seed, base, grid = pipe.config.seeds[0], pipe.config.weak_dpo, plan.value("tuning", "weak_dpo_grid", plan=2)
    rows = []
    for m, e in grid:
        cfg = dataclasses.replace(base, learning_rate=base.learning_rate * m, num_train_epochs=e)
        rows.append({"method": "weak_dpo", "learning_rate": cfg.learning_rate, "epochs": e, "config": cfg,
                     "multiplier": m, "score": pipe.probe_score(pipe.weak_aligned(seed, 0.0, cfg))})  # fmt: skip
    multipliers, epochs = sorted({m for m, _ in grid}), sorted({e for _, e in grid})
    return [row | {"edge": grid_edge(multipliers, epochs, row["multiplier"], row["epochs"])} for row in rows]


@node
def weak_dpo_config(pipe: Pipeline) -> TrainConfig:
    """The weak DPO setting with the best `probe_score` (ties to the first in grid order)."""
    return best_row(pipe.weak_dpo_rows())["config"]


@node(stage=True)
def probe_score(pipe: Pipeline, pi_r_path: str) -> float:
    """The weak DPO's tuning criterion: the fraction of attribute probes on the validation prompts (one response and
    the same response with one attribute made worse, `measure.attribute_probes`) whose better response the weak pair's
    implicit reward ranks above the worse."""
    if pipe.setting.valid_prompts is None or pipe.setting.preference_probes is None:
        raise ValueError(f"setting {pipe.setting.name!r}: tuning the weak DPO needs validation prompts and probes")

    def build(tmp: Path) -> None:
        probes = measure.attribute_probes(*pipe.weak_pair(pi_r_path), pipe.tokenizer, pipe.prompts("valid"),
                                          pipe.setting.preference_probes, pipe.chat)  # fmt: skip
        better, worse = np.asarray(probes["implicit_better"]), np.asarray(probes["implicit_worse"])
        write_json_atomic(tmp / "score.json", {"probe_accuracy": float(np.mean(better > worse))})

    return read_json(pipe.artifact("probe_score", {"pi_r": pipe.ref(pi_r_path)}, build) / "score.json")["probe_accuracy"]


@node(stage=True)
def validation_score(pipe: Pipeline, model_path: str, seed: int) -> float:
    """The tuning criterion: mean R_pref of `samples` draws per validation prompt (never the eval prompts)."""
    if pipe.setting.valid_prompts is None:
        raise ValueError(f"setting {pipe.setting.name!r} has no validation prompts: a tuned budget needs them")
    k = plan.value("tuning", "samples", plan=pipe.config.plan)  # the criterion of the plan in force
    key = {"model": pipe.ref(model_path), "seed": seed, "k": k, "sampling": cache_view(pipe.config.sampling)}

    def build(tmp: Path) -> None:
        decoding = pipe.sampling(seed=stream_seed(seed, "validation"))
        result = measure.evaluate_model(pipe.load(model_path), pipe.tokenizer, pipe.prompts("valid"), pipe.setting.scorer, k,
                                        decoding, pipe.chat)  # fmt: skip
        write_json_atomic(tmp / "score.json", {"r_pref": float(np.mean(result["r_pref"]))})

    return read_json(pipe.artifact("validation_score", key, build) / "score.json")["r_pref"]


def require_columns(ds: Dataset, columns: tuple[str, ...], stage: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"stage {stage!r}: input dataset lacks column(s) {missing}; it has {ds.column_names}")
