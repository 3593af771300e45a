"""The metrics each evaluated model is scored on (`METRICS`, one registry), as tidy result rows; PGR; the weak
pair's claim rows (ranking within its own samples); summaries and the main table."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from datasets import Dataset
from scipy import stats

from congkit.pipeline.evaluation.statistics import mean_ci, model_rows, value_range
from congkit.pipeline.methods import METHODS, label


def win_rate(scores: list[list[float]], reference: list[list[float]]) -> float:
    """Paired win rate, ties count half."""
    a, b = np.asarray(scores, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"win rate needs paired samples: {a.shape} vs reference {b.shape}")
    return float(((a > b) + 0.5 * (a == b)).mean())


def _row(method: str, seed: int, metric: str, value: float, eps: float = math.nan, alpha: float = math.nan) -> dict:
    return dict(method=method, seed=seed, eps=float(eps), alpha=float(alpha), metric=metric, value=float(value))


@dataclass(frozen=True)
class Metric:
    """A per-model metric: its name in the results table, its label in the book, whether higher is better (None:
    neither, e.g. length), and how it is computed from one model's evaluation (`measure.evaluate_model`) and the
    strong base's (`compute(result, reference)`, None when the evaluation lacks what it needs). `compute=None`: derived
    later from the whole table (the PGRs, `pgr_rows`)."""

    name: str
    label: str
    higher_is_better: bool | None
    compute: Callable[[dict, dict], float | None] | None = None


def _mean(key: str) -> Callable[[dict, dict], float | None]:
    return lambda result, reference: float(np.mean(result[key])) if key in result else None


def _value(key: str) -> Callable[[dict, dict], float | None]:
    return lambda result, reference: float(result[key]) if key in result else None


def _win_rate(result: dict, reference: dict) -> float:
    key = "r_pref" if "r_pref" in result and "r_pref" in reference else "scores"
    return win_rate(result[key], reference[key])


def _retention(result: dict, reference: dict) -> float | None:
    for key in ("heldout_accuracy", "mc_accuracy"):
        if key in result and reference.get(key):
            return result[key] / reference[key]
    return None


METRICS: tuple[Metric, ...] = (
    Metric("r_pref", "R_pref", True, _mean("r_pref")),
    Metric("win_rate", "win rate vs strong base", True, _win_rate),
    Metric("r_cap", "R_cap (correct rate)", True, _mean("r_cap")),
    Metric("pgr", "PGR from π_r", True),
    Metric("pgr_strong", "PGR from strong base", True),
    Metric("heldout_accuracy", "held-out family accuracy", True, _value("heldout_accuracy")),
    Metric("heldout_answer_logprob", "held-out answer log-prob", True, _value("heldout_answer_logprob")),
    Metric("mc_accuracy", "multiple-choice accuracy", True, _value("mc_accuracy")),
    Metric("retention", "capability retention", True, _retention),
    Metric("length", "length (chars)", None, _mean("lengths")),
    Metric("reward", "r*", True, _mean("scores")),
)


CAPABILITY_METRICS = ("r_cap", "heldout_accuracy", "mc_accuracy")  # what can show a capability loss, best first


def evaluation_rows(method: str, seed: int, eps: float, result: dict, reference: dict) -> list[dict]:
    """One model's evaluation as tidy rows, one per `METRICS` entry it can be computed for; `reference` is the
    strong base's evaluation (win rates, retention)."""
    rows = []
    for metric in METRICS:
        value = metric.compute(result, reference) if metric.compute is not None else None
        if value is not None:
            rows.append(_row(method, seed, metric.name, value, eps=eps))
    return rows


def is_difference(quantity: str) -> bool:
    """Whether a quantity is a paired difference, judged against 0 (the gains and the `_vs_` margins)."""
    return "_vs_" in quantity or "gain" in quantity


def pgr_rows(table: pd.DataFrame, metric: str = "r_pref") -> list[dict]:
    """PGR of each trained method per seed and noise level, from the weak aligned model (Burns et al.) and from the
    strong base; the gold ceiling is the same seed's (trained on clean supervision only)."""
    part = model_rows(table)
    part = part[part.metric == (metric if (part.metric == metric).any() else "reward")]
    values = part.set_index(["method", "seed", "eps"]).value
    rows = []
    for (method, seed, eps), value in values.items():
        if method in ("weak_base", "weak_aligned", "strong_base", "gold"):
            continue
        gold = part[(part.method == "gold") & (part.seed == seed)].value
        if gold.empty:
            continue
        for name, start_method in (("pgr", "weak_aligned"), ("pgr_strong", "strong_base")):
            start = values.get((start_method, seed, eps), values.get((start_method, seed, part.eps.min()), math.nan))
            gap = float(gold.iloc[0]) - start
            if np.isfinite(gap) and gap != 0:
                rows.append(_row(method, seed, name, (value - start) / gap, eps=eps))
    return rows


TIE_DECIMALS = 4  # scores equal to 1e-4 rank as ties: the same response scored at two batch positions differs by ~1e-6


def within_prompt_ranking(pool: pd.DataFrame, score: str, target: str, best_of: int) -> tuple[float, float]:
    """(mean over prompts of Spearman(score, target) among one prompt's samples, best-of-k recovery).

    Scores are ranked rounded to `TIE_DECIMALS`: one response drawn twice gets implicit rewards that differ by float
    rounding (its rows sit at other batch positions), and ranking that noise would order identical responses apart.
    Prompts whose samples tie on either column have no rank correlation and are skipped. Best-of-k: the samples of
    each prompt, in draw order `k`, are cut into groups of k; recovery = E[target of the top-`score` sample - group
    mean] / E[max target - group mean], the share of the oracle best-of-k gain that choosing by `score` achieves.
    Vectorised over prompts (every prompt must have the same number of samples).
    """
    frame = pool.sort_values(["prompt", "k"], kind="stable")
    n = frame.groupby("prompt", sort=False).size()
    if n.nunique() != 1:
        raise ValueError(f"every prompt needs the same number of samples, got {sorted(n.unique())}")
    x = frame[score].to_numpy(dtype=float).reshape(len(n), -1)
    y = frame[target].to_numpy(dtype=float).reshape(len(n), -1)
    rx, ry = stats.rankdata(np.round(x, TIE_DECIMALS), axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    denominator = np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    valid = denominator > 0
    rho = float(((rx * ry).sum(1)[valid] / denominator[valid]).mean()) if valid.any() else math.nan
    groups = x.shape[1] // best_of
    if groups == 0:
        return rho, math.nan
    gx = x[:, : groups * best_of].reshape(-1, best_of)
    gy = y[:, : groups * best_of].reshape(-1, best_of)
    picked = gy[np.arange(len(gy)), gx.argmax(1)]
    gain, oracle = (picked - gy.mean(1)).sum(), (gy.max(1) - gy.mean(1)).sum()
    return rho, float(gain / oracle) if oracle > 0 else math.nan


def claim_rows(seed: int, pool: Dataset, sweep: Dataset, probes: Dataset | None = None, best_of: int = 4,
               eps: float = 0.0) -> list[dict]:  # fmt: skip
    """Claim 1 and the ranking preconditions (pi_r's own-sample pool), the attribute probes, claim 2 (the sweep);
    `eps`: the label-noise rate pi_r was aligned with (the sweep's rows carry it)."""
    df = pool.to_pandas()
    target = "r_pref" if "r_pref" in df else "scores"
    rho, recovery = within_prompt_ranking(df, "implicit", target, best_of)
    rows = [_row("weak_pair", seed, "spearman_within_pi_r", rho), _row("weak_pair", seed, "best_of_k_recovery", recovery)]
    if probes is not None:
        p = probes.to_pandas()
        for attribute, part in p.groupby("attribute", sort=False):
            share = float((part.implicit_better > part.implicit_worse).mean())
            rows.append(_row("weak_pair", seed, f"probe:{attribute}", share))
    sw = sweep.to_pandas()
    for alpha, part in sw.groupby(sw.alpha.fillna(-1.0)):
        method, alpha = ("naive", math.nan) if alpha < 0 else ("cd", alpha)
        metrics = {"implicit": part.implicit.mean(), "reward": part.scores.mean(), "length": part.length.mean(),
                   "distinct": part.response.nunique() / len(part)}  # fmt: skip
        for channel in ("r_pref", "r_cap"):
            if channel in part:
                metrics[channel] = part[channel].mean()
        rows += [_row(method, seed, m, v, eps=eps, alpha=alpha) for m, v in metrics.items()]
    return rows


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% interval over seeds for every (method, eps, alpha, metric)."""
    rows = []
    keys = ["method", "eps", "alpha", "metric"]
    for key, part in table.groupby(keys, dropna=False):
        mean, lo, hi = mean_ci(part.value, bounds=value_range(key[3]))
        rows.append({**dict(zip(keys, key)), "mean": mean, "ci_low": lo, "ci_high": hi, "n_seeds": part.seed.nunique()})
    return pd.DataFrame(rows)


MAIN_METRICS = ["r_pref", "win_rate", "r_cap", "pgr", "pgr_strong", "heldout_accuracy", "length"]


def main_table(table: pd.DataFrame, eps: float = 0.0, metrics: list[str] = MAIN_METRICS) -> pd.DataFrame:
    """Methods x metrics at one noise level: mean and 95% half-width over seeds as two numeric columns per metric."""
    models = model_rows(table)
    summary = summarise(models[np.isclose(models.eps, eps)])
    summary = summary[summary.metric.isin(metrics)]
    out = {}
    for method in [m for m in METHODS if m in set(summary.method)]:
        row = {}
        for metric in metrics:
            hit = summary[(summary.method == method) & (summary.metric == metric)]
            if len(hit):
                m, lo, hi = hit.iloc[0][["mean", "ci_low", "ci_high"]]
                row[(metric, "mean")] = m
                row[(metric, "±95%")] = (hi - lo) / 2 if np.isfinite(lo) else math.nan
        out[label(method)] = row
    frame = pd.DataFrame(out).T
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame[[c for c in frame.columns if c[0] in metrics]].reindex(columns=sorted(
        frame.columns, key=lambda c: (metrics.index(c[0]), c[1] != "mean")))  # fmt: skip


def side_by_side(sweep: Dataset, alphas=(0.0, 0.5, 1.0), n: int = 6) -> pd.DataFrame:
    """A few eval prompts with the naive pi_r sample and CD samples at some alphas, R_pref in brackets."""
    df = sweep.to_pandas()
    prompts = list(dict.fromkeys(df.prompt))[:n]
    out = []
    for prompt in prompts:
        part = df[df.prompt == prompt]
        row = {"prompt": prompt}
        naive = part[part.alpha.isna()].iloc[0]
        row["naive pi_r"] = f"{naive.response or '(empty)'} [{naive.r_pref:.2f}]"
        for a in alphas:
            hit = part[np.isclose(part.alpha, a)]
            if len(hit):
                row[f"CD α = {a:g}"] = f"{hit.iloc[0].response or '(empty)'} [{hit.iloc[0].r_pref:.2f}]"
        out.append(row)
    return pd.DataFrame(out)
