"""The study's pipeline: the models of `congkit.pipeline.stages`, measured (`congkit.pipeline.measure`, cached), for every seed and noise
level; `pipe.run()` writes the results, preconditions and verdicts tables.

    setting = Setting.from_world(build_world(WorldConfig()))       # or Setting(...) with real checkpoints
    results = Pipeline(setting, PipelineConfig(), root="runs").run() # tidy table: method, seed, eps, alpha, metric, value

Each function below is a node (`congkit.pipeline.runner.node`): `pipe.<name>(*args)` runs it once per arguments in a run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from datasets import Dataset

from congkit.pipeline import measure, plan, stages  # noqa: F401  (stages: declares the pipeline's model nodes)
from congkit.pipeline.cache import cache_view, read_json, write_csv_atomic, write_json_atomic
from congkit.pipeline.cong import stream_seed
from congkit.pipeline.methods import METHODS
from congkit.pipeline.provenance import TIMING_COLUMNS, read_timings
from congkit.pipeline.runner import Pipeline, node
from congkit.pipeline.settings import tuned_methods

RESULT_COLUMNS = ["method", "seed", "eps", "alpha", "metric", "value"]

# --- measurements -------------------------------------------------------------------------------------------------------


@node(stage=True)
def evaluate(pipe: Pipeline, model_path: str, seed: int) -> dict:
    """`eval_samples` samples per eval prompt judged on every channel, lengths, held-out capability
    (`measure.evaluate_model`). Draws depend on `seed` only (paired across models); the setting's base models are the
    same in every replicate, so they are evaluated once, with the first seed's draws."""
    cfg, s = pipe.config, pipe.setting
    seed = cfg.seeds[0] if model_path in (s.weak_base, s.strong_base) else seed
    key = {"model": pipe.ref(model_path), "seed": seed, "k": cfg.eval_samples, "sampling": cache_view(cfg.sampling)}

    def build(tmp: Path) -> None:
        greedy = pipe.sampling(do_sample=False)
        capability = lambda m: measure.heldout_capability(m, pipe.tokenizer, s.heldout_prompts, s.is_correct,  # noqa: E731
                                                          s.multiple_choice, greedy, pipe.chat)  # fmt: skip
        result = measure.evaluate_model(pipe.load(model_path), pipe.tokenizer, pipe.prompts("eval"), s.scorer,
                                        cfg.eval_samples, pipe.sampling(seed=stream_seed(seed, "evaluation")), pipe.chat,
                                        capability)  # fmt: skip
        write_json_atomic(tmp / "eval.json", result)

    return read_json(pipe.artifact("evaluate", key, build) / "eval.json")


@node(stage=True)
def weak_pair_pool(pipe: Pipeline, seed: int, eps: float = 0.0) -> Dataset:
    """pi_r's own samples with the weak pair's implicit reward and every channel (`measure.weak_pair_pool`)."""
    pi_r_path, cfg = pipe.weak_aligned(seed, eps), pipe.config
    key = {"pi_r": pipe.ref(pi_r_path), "sampling": cache_view(cfg.sampling), "k": cfg.eval_samples, "seed": seed}
    decoding = pipe.sampling(seed=stream_seed(seed, "weak_pair_pool"))
    return pipe.dataset("weak_pair_pool", key, lambda: measure.weak_pair_pool(
        *pipe.weak_pair(pi_r_path), pipe.tokenizer, pipe.prompts("eval"), pipe.setting.scorer, cfg.eval_samples,
        decoding, pipe.chat), "pool")  # fmt: skip


@node(stage=True)
def attribute_probes(pipe: Pipeline, seed: int) -> Dataset | None:
    """The weak pair's attribute probes (`measure.attribute_probes`); None when the setting has none."""
    if pipe.setting.preference_probes is None:
        return None
    pi_r_path = pipe.weak_aligned(seed, 0.0)
    return pipe.dataset("attribute_probes", {"pi_r": pipe.ref(pi_r_path), "seed": seed},
                        lambda: measure.attribute_probes(*pipe.weak_pair(pi_r_path), pipe.tokenizer,
                                                         pipe.prompts("eval"), pipe.setting.preference_probes,
                                                         pipe.chat), "probes")  # fmt: skip


@node(stage=True)
def alpha_sweep(pipe: Pipeline, seed: int, eps: float = 0.0) -> Dataset:
    """Claim 2: CD at each alpha and naive pi_r samples, one paired draw (`measure.alpha_sweep`)."""
    pi_r_path, cfg = pipe.weak_aligned(seed, eps), pipe.config
    key = {"pi_r": pipe.ref(pi_r_path), "alphas": cfg.alpha_sweep, "min_p": cfg.cd_lam,
           "sampling": cache_view(cfg.sampling), "seed": seed, "eps": eps}  # fmt: skip
    decoding = pipe.sampling(seed=stream_seed(seed, "alpha_sweep"))
    return pipe.dataset("alpha_sweep", key, lambda: measure.alpha_sweep(
        *pipe.weak_pair(pi_r_path), pipe.tokenizer, pipe.prompts("eval"), pipe.setting.scorer, cfg.alpha_sweep,
        cfg.cd_lam, decoding, pipe.chat), "sweep")  # fmt: skip


# --- everything ---------------------------------------------------------------------------------------------------------


@node
def model_paths(pipe: Pipeline, seed: int, eps: float, every_method: bool = False) -> dict[str, str]:
    """Every model of one replicate: the configured methods at the clean setting, the `noise` methods (claim 5) at
    others (`every_method`: all of them at any eps, as the regime map needs)."""
    clean = eps == pipe.config.noise_levels[0] or every_method
    names = ["strong_base", "weak_base", "weak_aligned", *pipe.config.methods, "gold"]
    return {n: pipe.model_path(n, seed, eps) for n in names if clean or n in ("strong_base", "weak_base")
            or METHODS[n].noise}  # fmt: skip


@node
def evaluation_rows(pipe: Pipeline, seed: int, eps: float, every_method: bool = False) -> list[dict]:
    """Every model of one seed and noise level (`model_paths`) evaluated, as tidy rows."""
    from congkit.pipeline.evaluation import evaluation_rows as rows_of

    results = {m: pipe.evaluate(path, seed) for m, path in pipe.model_paths(seed, eps, every_method).items()}
    return [row for m, result in results.items() for row in rows_of(m, seed, eps, result, results["strong_base"])]


@node
def replicate(pipe: Pipeline, seed: int) -> list[dict]:
    """Every stage of one seed (all noise levels, evaluations, the weak pair's pool, sweep and probes); returns the
    seed's evaluation rows. Seeds are independent: separate processes may build them concurrently."""
    rows = [row for eps in pipe.config.noise_levels for row in pipe.evaluation_rows(seed, eps)]
    pipe.weak_pair_pool(seed), pipe.alpha_sweep(seed), pipe.attribute_probes(seed)
    return rows


@node
def tuning_table(pipe: Pipeline) -> pd.DataFrame:
    """Every tuned method's grid: learning rate, epochs, validation score, the setting chosen, and (plan 2) the grid's
    edges the point lies on (a chosen point on an edge: budget-capped), after plan 2's weak DPO grid
    (`weak_dpo_table`)."""
    methods = [m for m in [*pipe.config.methods, "gold"] if m in tuned_methods(pipe.config)]
    rows = [row for method in methods for row in _chosen(pipe.tuning_rows(method))]
    table = pd.DataFrame(rows, columns=TUNING_COLUMNS[:-1] + (TUNING_COLUMNS[-1:] if pipe.config.plan == 2 else []))
    return pd.concat([pipe.weak_dpo_table(), table], ignore_index=True) if pipe.config.plan == 2 else table


@node
def weak_dpo_table(pipe: Pipeline) -> pd.DataFrame:
    """Plan 2's weak DPO grid (`weak_dpo_rows`), its score the validation probe accuracy, the tuning table's columns."""
    return pd.DataFrame(_chosen(pipe.weak_dpo_rows()), columns=TUNING_COLUMNS)


TUNING_COLUMNS = ["method", "learning_rate", "epochs", "score", "chosen", "edge"]


def _chosen(grid: list[dict]) -> list[dict]:
    best = stages.best_row(grid)  # the rule the tuned settings are taken by
    return [{k: v for k, v in row.items() if k != "config"} | {"chosen": row is best} for row in grid]


@node
def claims(pipe: Pipeline) -> pd.DataFrame:
    """Claim 1 and 2 rows and the weak pair's precondition rows (tidy), for every seed, at epsilon = 0."""
    from congkit.pipeline.evaluation import claim_rows

    rows = [row for seed in pipe.config.seeds for row in claim_rows(
        seed, pipe.weak_pair_pool(seed), pipe.alpha_sweep(seed), pipe.attribute_probes(seed), pipe.config.best_of)]  # fmt: skip
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


@node
def run(pipe: Pipeline) -> pd.DataFrame:
    """All stages for all seeds and noise levels; the tidy results table (columns `RESULT_COLUMNS`). Writes
    results.csv, preconditions.csv, verdicts.csv and decomposition.csv (tuning.csv with a tuned budget, timings.csv)
    into the pipeline's folder."""
    from congkit.pipeline.evaluation import decomposition_rows, pgr_rows, preconditions, verdicts

    rows = [row for seed in pipe.config.seeds for row in pipe.replicate(seed)] + pipe.claims().to_dict("records")
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    table = pd.concat([table, pd.DataFrame(pgr_rows(table), columns=RESULT_COLUMNS)], ignore_index=True)
    conditions = preconditions(table, pipe.config)
    for name, frame in (("results", table), ("preconditions", conditions),
                        ("verdicts", verdicts(table, conditions, pipe.config))):  # fmt: skip
        write_csv_atomic(frame, pipe.root / f"{name}.csv")
    write_csv_atomic(decomposition_rows(table), pipe.root / "decomposition.csv")
    if pipe.config.budget == "tuned":
        write_csv_atomic(pipe.tuning_table(), pipe.root / "tuning.csv")
    record_timings(pipe.root / "timings.csv", pipe.timings)
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
