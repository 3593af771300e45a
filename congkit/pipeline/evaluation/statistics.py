"""The statistics the verdicts read: t-intervals over seeds clipped to each quantity's range, the hierarchical
bootstrap over worlds, seeds and prompts, Holm's correction, and per-seed paired differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from congkit.pipeline import plan

CONFIDENCE = plan.value("study", "confidence")


def model_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.alpha.isna() & table.eps.notna()]


BOUNDED = {"r_pref": (0.0, 1.0), "r_cap": (0.0, 1.0), "win_rate": (0.0, 1.0), "heldout_accuracy": (0.0, 1.0),
           "mc_accuracy": (0.0, 1.0), "spearman_within_pi_r": (-1.0, 1.0), "spearman": (-1.0, 1.0),
           "reward": (0.0, 1.0), "ranking_spearman": (-1.0, 1.0), "headroom": (-math.inf, 1.0),
           "strong_capability": (0.0, 1.0), "capability_gap": (-1.0, 1.0), "ceiling_vs_weak": (-1.0, 1.0),
           "ceiling_vs_strong": (-1.0, 1.0), "detectable_effect": (0.0, math.inf)}  # metrics, preconditions  # fmt: skip


def value_range(quantity: str) -> tuple[float, float]:
    """The range a quantity's values can take (an interval is clipped to it): a rate in [0, 1], a Spearman in
    [-1, 1], an attribute probe in [0, 1], a difference of two [0, 1] values (`<a>_vs_<b>_<metric>`, `..._gain_..`,
    "gap") in [-1, 1]; unbounded otherwise (log-probs, implicit rewards, PGRs, lengths)."""
    if quantity.startswith("probe:") or quantity in BOUNDED:
        return BOUNDED.get(quantity, (0.0, 1.0))
    metric = quantity.rsplit("_", 2)[-1] if "_vs_" in quantity or "gain" in quantity else ""
    if metric in ("pref", "cap"):
        return -1.0, 1.0
    return -math.inf, math.inf


def mean_ci(values, confidence: float = CONFIDENCE, bounds: tuple[float, float] = (-math.inf, math.inf)
            ) -> tuple[float, float, float]:  # fmt: skip
    """Mean and a t confidence interval over seeds (NaN bounds with one seed), clipped to `bounds` (the range of the
    quantity, `value_range`: a t-interval over 2 seeds can otherwise pass it). Values indexed by (world, seed) (a
    table pooled over worlds, see `per_seed`) get the hierarchical bootstrap over worlds and seeds instead, worlds
    weighed equally: worlds are then a variance component (analysis_plan.md)."""
    if isinstance(values, pd.Series) and values.index.nlevels == 2:
        v = values[np.isfinite(values.to_numpy(dtype=float))]
        nested = {w: {s: [x] for (_, s), x in part.items()} for w, part in v.groupby(level=0)}
        return hierarchical_bootstrap(nested, confidence=confidence) if nested else (math.nan,) * 3
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, max(mean - half, bounds[0]), min(mean + half, bounds[1])


def hierarchical_bootstrap(values: dict, draws: int | None = None, confidence: float = CONFIDENCE,
                           seed: int | None = None) -> tuple[float, float, float]:  # fmt: skip
    """Mean and percentile interval of a nested mean, resampling at every level: `values` maps world -> seed ->
    the per-prompt values (e.g. paired differences) of that seed. The estimate weighs worlds equally, seeds equally
    within a world and prompts equally within a seed; each draw resamples worlds, then seeds within each drawn world,
    then prompts within each drawn seed (the plan's `[bootstrap]`: draws, seed). With one world the world level adds
    no spread: the interval is then over seeds and prompts only, which the book says."""
    draws = draws or plan.value("bootstrap", "draws")
    rng = np.random.default_rng(plan.value("bootstrap", "seed") if seed is None else seed)
    worlds = [[np.asarray(v, dtype=float) for v in seeds.values()] for seeds in values.values() if seeds]
    if not worlds:
        return math.nan, math.nan, math.nan
    estimate = float(np.mean([np.mean([v.mean() for v in w]) for w in worlds]))
    # every (draw, world slot) gets its own resample of each world: slot i of draw d reads world picks[d, i]
    per_world = np.stack([_resampled_world_means(w, (draws, len(worlds)), rng) for w in worlds])
    return (estimate, *_worlds_resampled(per_world, rng, confidence))


def _worlds_resampled(per_world: np.ndarray, rng: np.random.Generator, confidence: float) -> tuple[float, float]:
    """The top level of both bootstraps: `per_world` (world, draw, slot) holds each world's resampled means; each
    draw picks its worlds with replacement, one per slot, and averages them; the percentile interval of those draws."""
    n, draws = per_world.shape[0], per_world.shape[1]
    picks = rng.integers(n, size=(draws, n))
    out = per_world[picks, np.arange(draws)[:, None], np.arange(n)[None, :]].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(out, [tail, 100 - tail])
    return float(lo), float(hi)


def _resampled_world_means(seeds: list[np.ndarray], shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """`shape` independent bootstrap means of one world: its seeds resampled, then each drawn seed's prompts."""
    picked = rng.integers(len(seeds), size=(*shape, len(seeds)))
    means = np.empty(picked.shape)
    for j, v in enumerate(seeds):
        where = picked == j
        means[where] = v[rng.integers(len(v), size=(int(where.sum()), len(v)))].mean(axis=1)
    return means.mean(axis=-1)


def crossed_bootstrap(values: dict, draws: int | None = None, confidence: float = CONFIDENCE,
                      seed: int | None = None) -> tuple[float, float, float]:  # fmt: skip
    """`hierarchical_bootstrap` for the design the study has: within a world every seed is evaluated on the same
    prompts, so prompts are crossed with seeds, not nested in them. Each draw resamples worlds, then, within each drawn
    world, its seeds and *one* resample of its prompts that every drawn seed shares. `values`: world -> seed -> the
    per-prompt values, in the same prompt order for every seed of a world. A drawn world's mean is
    c_s' M c_p / (S P), with M its seeds x prompts matrix and c_s, c_p the draw's multiplicities."""
    draws = draws or plan.value("bootstrap", "draws")
    rng = np.random.default_rng(plan.value("bootstrap", "seed") if seed is None else seed)
    if any(len({len(v) for v in seeds.values()}) != 1 for seeds in values.values() if seeds):
        raise ValueError("crossed_bootstrap needs every seed of a world on the same prompts (equal lengths)")
    worlds = [np.stack([np.asarray(v, dtype=float) for v in seeds.values()]) for seeds in values.values() if seeds]
    if not worlds:
        return math.nan, math.nan, math.nan
    estimate = float(np.mean([m.mean() for m in worlds]))
    per_world = np.stack([_crossed_world_means(m, (draws, len(worlds)), rng) for m in worlds])
    return (estimate, *_worlds_resampled(per_world, rng, confidence))


def _crossed_world_means(m: np.ndarray, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """`shape` bootstrap means of one world's seeds x prompts matrix `m`: seeds and (shared) prompts resampled."""
    s, p = m.shape
    seed_counts = _counts(rng.integers(s, size=(*shape, s)), s)
    prompt_counts = _counts(rng.integers(p, size=(*shape, p)), p)
    return ((seed_counts @ m) * prompt_counts).sum(-1) / (s * p)


def _counts(picks: np.ndarray, n: int) -> np.ndarray:
    """How often each of `n` items was drawn, per draw: (..., k) indices -> (..., n) counts."""
    flat = picks.reshape(-1, picks.shape[-1])
    counts = np.zeros((len(flat), n))
    np.add.at(counts, (np.arange(len(flat))[:, None], flat), 1.0)
    return counts.reshape(*picks.shape[:-1], n)


def world_t_interval(values: dict, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The t-interval over the worlds' means (`world_signs`), the worlds as the only replicates (with 3 worlds, 2
    degrees of freedom: a percentile bootstrap over 3 worlds understates that uncertainty)."""
    return mean_ci(np.array(list(world_signs(values).values())), confidence)


def world_signs(values: dict) -> dict:
    """Each world's estimate (mean over seeds of the mean over prompts): a pooled verdict holds only if none of these
    has the opposite sign (analysis_plan.md)."""
    return {w: float(np.mean([np.mean(v) for v in seeds.values()])) for w, seeds in values.items() if seeds}


def metric_mean(table: pd.DataFrame, method: str, metric: str, eps: float | None = None) -> float:
    part = table[(table.method == method) & (table.metric == metric)]
    if eps is not None:
        part = part[np.isclose(part.eps, eps)]
    return float(part.value.mean()) if len(part) else math.nan


def per_seed(table: pd.DataFrame, method: str, metric: str, eps: float | None = None, alpha: float | None = None):
    """Series seed -> value of one (method, metric, eps, alpha) (NaN eps / alpha match NaN); indexed by (world,
    seed) when the table has a `world` column (several worlds pooled, `world_verdicts`)."""
    part = table[(table.method == method) & (table.metric == metric)]
    for column, value in (("eps", eps), ("alpha", alpha)):
        part = part[part[column].isna()] if value is None else part[np.isclose(part[column], value)]
    return part.groupby(["world", "seed"] if "world" in part.columns else "seed").value.mean()


def paired_differences(a: pd.Series, b: pd.Series) -> pd.Series:
    """a - b over the seeds (or (world, seed) pairs) present in both (paired replicates), keeping that index."""
    common = a.index.intersection(b.index)
    return (a[common] - b[common]).astype(float)


def _t_pvalue(diffs) -> float:
    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) < 2 or np.std(diffs, ddof=1) == 0:
        return math.nan if len(diffs) < 2 else (0.0 if np.mean(diffs) != 0 else 1.0)
    return float(stats.ttest_1samp(diffs, 0.0).pvalue)


def clean_eps(table: pd.DataFrame) -> float:
    """The cleanest weak-label noise rate the models of `table` were trained at (the clean setting)."""
    models = model_rows(table)
    return float(models.eps.min()) if len(models) else 0.0


def holm_intervals(diffs: dict[str, np.ndarray], confidence: float = CONFIDENCE) -> dict[str, tuple]:
    """Holm-corrected intervals for several paired comparisons: the comparison with the i-th smallest p-value
    (i = 0..m-1) gets the interval at level 1 - (1 - confidence) / (m - i). {name: (mean, lo, hi)}."""
    m = len(diffs)
    order = sorted(diffs, key=lambda k: (np.nan_to_num(_t_pvalue(diffs[k]), nan=1.0), k))
    return {name: mean_ci(diffs[name], 1 - (1 - confidence) / (m - i)) for i, name in enumerate(order)}
