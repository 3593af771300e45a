"""From stage outputs to the tidy results table, the preconditions, and the pre-registered verdicts.

The results table is tidy with typed columns: `method, seed, eps, alpha, metric, value` (eps: the label-noise rate of
the weak preference data; alpha: the CD weight, NaN where it does not apply). Metrics per model and seed (eval
prompts, `eval_samples` samples each):
- r_pref, r_cap, reward: mean preference reward, correct rate and r* (the world's channels; with a reward model as
  judge r_pref = reward and capability comes from the held-out sets);
- win_rate: P(r_pref(model sample) > r_pref(strong base sample)) + 0.5 P(tie), sample k against sample k of the same
  prompt (the stand-in for AlpacaEval / Arena-Hard win rates against a fixed reference);
- length: mean response length in characters;
- heldout_accuracy / heldout_answer_logprob / mc_accuracy: capability on held-out sets; retention = method / strong base;
- pgr = (m - weak aligned) / (gold - weak aligned) on r_pref (Burns et al., 2023), and pgr_strong =
  (m - strong base) / (gold - strong base), the gain over the untrained strong model.

Every decision rule is fixed here, in code, before any run (`CONDITIONS`, `CLAIMS`); the book prints them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from datasets import Dataset
from scipy import stats

from . import plan
from .methods import METHODS, label, with_role

CONFIDENCE = plan.value("study", "confidence")
# claims 3 and 4: R_cap (and held-out accuracy) may not fall by more than this
NON_INFERIORITY_MARGIN = plan.value("study", "non_inferiority_margin")
THRESHOLD = plan.plan()["preconditions"]  # every precondition's threshold, from the analysis plan


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


def _models(table: pd.DataFrame) -> pd.DataFrame:
    return table[table.alpha.isna() & table.eps.notna()]


def pgr_rows(table: pd.DataFrame, metric: str = "r_pref") -> list[dict]:
    """PGR of each trained method per seed and noise level, from the weak aligned model (Burns et al.) and from the
    strong base; the gold ceiling is the same seed's (trained on clean supervision only)."""
    part = _models(table)
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


def within_prompt_ranking(pool: pd.DataFrame, score: str, target: str, best_of: int) -> tuple[float, float]:
    """(mean over prompts of Spearman(score, target) among one prompt's samples, best-of-k recovery).

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
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
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
    n = len(worlds)
    # every (draw, world slot) gets its own resample of each world: slot i of draw d reads world picks[d, i]
    per_world = np.stack([_resampled_world_means(w, (draws, n), rng) for w in worlds])  # (world, draw, slot)
    picks = rng.integers(n, size=(draws, n))
    out = per_world[picks, np.arange(draws)[:, None], np.arange(n)[None, :]].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(out, [tail, 100 - tail])
    return estimate, float(lo), float(hi)


def _resampled_world_means(seeds: list[np.ndarray], shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """`shape` independent bootstrap means of one world: its seeds resampled, then each drawn seed's prompts."""
    picked = rng.integers(len(seeds), size=(*shape, len(seeds)))
    means = np.empty(picked.shape)
    for j, v in enumerate(seeds):
        where = picked == j
        means[where] = v[rng.integers(len(v), size=(int(where.sum()), len(v)))].mean(axis=1)
    return means.mean(axis=-1)


def world_signs(values: dict) -> dict:
    """Each world's estimate (mean over seeds of the mean over prompts): a pooled verdict holds only if none of these
    has the opposite sign (analysis_plan.md)."""
    return {w: float(np.mean([np.mean(v) for v in seeds.values()])) for w, seeds in values.items() if seeds}


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
    models = _models(table)
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


# --- preconditions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A precondition of a fair test: its id (what claims name), its description, the range its mean over seeds
    must lie in, per-seed values from the results table, and the metrics it reads (`needs`): without them (e.g. a
    reward-model judge has no R_cap) it is not applicable, which blocks no claim."""

    id: str
    name: str
    low: float
    high: float
    per_seed: Callable[[pd.DataFrame], pd.Series | np.ndarray | float]
    needs: tuple[str, ...] = ()

    @property
    def required(self) -> str:
        if self.high == math.inf:
            return f">= {self.low:g}"
        return f"<= {self.high:g}" if self.low == -math.inf else f"{self.low:g} - {self.high:g}"


def clean_eps(table: pd.DataFrame) -> float:
    """The cleanest weak-label noise rate the models of `table` were trained at (the clean setting)."""
    models = _models(table)
    return float(models.eps.min()) if len(models) else 0.0


def _r(table, method, metric="r_pref"):
    return per_seed(table, method, metric, eps=clean_eps(table))


def _headroom(table):
    base, aligned = _r(table, "weak_base"), _r(table, "weak_aligned")
    common = base.index.intersection(aligned.index)
    return (aligned[common] - base[common]) / (1.0 - base[common])


def smallest_detectable_effect(table: pd.DataFrame, metric: str = "r_pref") -> float:
    """The median, over claim 3's comparisons (ConG-S, ConG vs each baseline), of the 95% CI half-width of the
    per-seed paired difference in `metric` at the clean setting: the smallest effect these seeds resolve."""
    widths = []
    for ours in in_run(table, "ours"):
        for base in in_run(table, "baseline"):
            d = paired_differences(_r(table, ours, metric), _r(table, base, metric))
            mean, lo, hi = mean_ci(d)
            widths.append((hi - lo) / 2)
    return float(np.median(widths)) if widths and np.isfinite(widths).all() else math.nan


def in_run(table: pd.DataFrame, *roles: str) -> list[str]:
    """The registered methods of these roles that the run trained (rows in `table`), in registry order: verdicts,
    tables and preconditions compare the methods of the run, not every method the registry knows."""
    present = set(table.method)
    return [m for m in with_role(*roles) if m in present]


def _gap(a: str, b: str, metric: str = "r_pref") -> Callable[[pd.DataFrame], pd.Series]:
    return lambda t: paired_differences(_r(t, a, metric), _r(t, b, metric))


def _pair_metric(metric: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda t: per_seed(t, "weak_pair", metric)


CONDITIONS: tuple[Condition, ...] = (
    Condition("ranking_spearman", "Spearman(implicit reward, R_pref) within pi_r's samples, per prompt",
              THRESHOLD["ranking_spearman"], math.inf,
              _pair_metric("spearman_within_pi_r"), ("spearman_within_pi_r",)),
    Condition("ranking_best_of_k", "best-of-k by implicit reward: share of the oracle best-of-k R_pref gain",
              THRESHOLD["ranking_best_of_k"], math.inf, _pair_metric("best_of_k_recovery"), ("best_of_k_recovery",)),
    Condition("headroom", "share of the R_pref headroom (weak base -> 1) that pi_r captures", *THRESHOLD["headroom"],
              _headroom,
              ("r_pref",)),
    Condition("strong_capability", "strong base correct rate (R_cap)", THRESHOLD["strong_capability"], math.inf,
              lambda t: _r(t, "strong_base", "r_cap"), ("r_cap",)),
    Condition("capability_gap", "strong base minus weak base correct rate", THRESHOLD["capability_gap"], math.inf,
              _gap("strong_base", "weak_base", "r_cap"), ("r_cap",)),
    Condition("ceiling_vs_weak", "gold ceiling minus weak aligned (R_pref)", THRESHOLD["ceiling_vs_weak"], math.inf,
              _gap("gold", "weak_aligned"), ("r_pref",)),
    Condition("ceiling_vs_strong", "gold ceiling minus strong base (R_pref)", THRESHOLD["ceiling_vs_strong"], math.inf,
              _gap("gold", "strong_base"), ("r_pref",)),
    Condition("detectable_effect", "smallest detectable paired effect on R_pref (95% CI half-width)", -math.inf,
              THRESHOLD["detectable_effect"],
              smallest_detectable_effect, ("r_pref",)),
)  # fmt: skip
PROBE = "probe"  # the group id of the attribute probes: one condition "probe:<attribute>" per probed attribute


def conditions_for(table: pd.DataFrame) -> list[Condition]:
    """`CONDITIONS`, preceded by one attribute-probe condition per attribute the table has probes for."""
    probes = sorted({m.split(":", 1)[1] for m in table.metric.unique() if m.startswith("probe:")})
    return [Condition(f"{PROBE}:{a}", f"attribute probe: {a}", THRESHOLD["probe"], math.inf, _pair_metric(f"probe:{a}"),
                      (f"probe:{a}",)) for a in probes] + list(CONDITIONS)  # fmt: skip


def preconditions(table: pd.DataFrame, config=None) -> pd.DataFrame:
    """The preconditions table: id, condition, required, measured (mean over seeds), ci_low, ci_high, met, applicable.

    `met` judges the mean over seeds against the requirement; a condition that cannot be measured is not met; one
    whose metrics the table lacks (the judge has no such channel) is not applicable (and not met)."""
    rows = []
    for c in conditions_for(table):
        applicable = all((table.metric == m).any() for m in c.needs)
        values = c.per_seed(table) if applicable else math.nan
        if np.isscalar(values):
            mean, lo, hi = float(values), math.nan, math.nan
        else:
            mean, lo, hi = mean_ci(values if isinstance(values, pd.Series) else np.asarray(values, dtype=float),
                                   bounds=value_range(c.id))
        met = bool(applicable and np.isfinite(mean) and c.low <= mean <= c.high)
        rows.append(dict(id=c.id, condition=c.name, required=c.required, measured=mean, ci_low=lo, ci_high=hi,
                         met=met, applicable=applicable))  # fmt: skip
    return pd.DataFrame(rows, columns=["id", "condition", "required", "measured", "ci_low", "ci_high", "met",
                                       "applicable"])  # fmt: skip


# --- the pre-registered verdicts ----------------------------------------------------------------------------------

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, UNTESTABLE = "holds", "does not hold", "inconclusive", "untestable here"


def three_way(lo: float, hi: float, threshold: float = 0.0) -> str:
    """holds if the whole interval lies above `threshold`, does not hold if it lies below, else inconclusive."""
    if np.isfinite(lo) and lo > threshold:
        return HOLDS
    if np.isfinite(hi) and hi < threshold:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def all_of(verdicts_: list[str]) -> str:
    """The verdict of a conjunction of tests: holds if every part holds, does not hold if any part does not, else
    inconclusive."""
    if verdicts_ and all(v == HOLDS for v in verdicts_):
        return HOLDS
    return DOES_NOT_HOLD if DOES_NOT_HOLD in verdicts_ else INCONCLUSIVE


def sign_rule(verdict: str, estimate: float, worlds: dict, threshold: float = 0.0) -> tuple[str, str]:
    """The plan's rule over worlds: a "holds" or "does not hold" whose estimate lies on the other side of `threshold`
    in some world ({world: estimate}) becomes "inconclusive"; returns (verdict, note naming the worlds)."""
    side = np.sign(estimate - threshold)
    flipped = [w for w, e in worlds.items() if np.isfinite(e) and np.sign(e - threshold) != side]
    if verdict in (HOLDS, DOES_NOT_HOLD) and flipped:
        return INCONCLUSIVE, f"flips sign in world {', '.join(map(str, flipped))}"
    return verdict, ""


def holm_intervals(diffs: dict[str, np.ndarray], confidence: float = CONFIDENCE) -> dict[str, tuple]:
    """Holm-corrected intervals for several paired comparisons: the comparison with the i-th smallest p-value
    (i = 0..m-1) gets the interval at level 1 - (1 - confidence) / (m - i). {name: (mean, lo, hi)}."""
    m = len(diffs)
    order = sorted(diffs, key=lambda k: (np.nan_to_num(_t_pvalue(diffs[k]), nan=1.0), k))
    return {name: mean_ci(diffs[name], 1 - (1 - confidence) / (m - i)) for i, name in enumerate(order)}


@dataclass(frozen=True)
class Claim:
    """A pre-registered claim: its text, its rule (a template filled from the run's settings: {alpha}, {margin},
    {eps_low}, {eps_high}, {capability}), the ids of the preconditions a fair test needs (`CONDITIONS`; "probe" names
    every attribute probe), the metrics it needs at least one of (`needs_any`: without them it is untestable here,
    e.g. a capability claim under a judge with no capability channel), and its decision."""

    claim: str
    rule: str
    conditions: tuple[str, ...]
    decide: Callable  # (table, config) -> (verdict, estimate, ci_low, ci_high)
    needs_any: tuple[str, ...] = ("r_pref",)
    threshold: float = 0.0  # what the estimate is judged against (a world's estimate "flips" across it)
    methods: tuple[str, ...] = ()  # the methods it compares ("baseline": at least one); without one: untestable here


def _claim1(table, config):
    mean, lo, hi = mean_ci(per_seed(table, "weak_pair", "spearman_within_pi_r"))
    return three_way(lo, hi), mean, lo, hi


def _sweep_arm(table, arm: str, config) -> Callable[[str], pd.Series]:
    """Per-seed values of one arm of the alpha sweep: "cd" (CD at the plan's alpha), "head" (the head alone: CD at
    alpha 1, no amateur) or "naive" (plain pi_r samples)."""
    alpha = {"cd": config.cd_alpha if config is not None else plan.value("study", "cd_alpha"), "head": 1.0}.get(arm)
    method = "naive" if arm == "naive" else "cd"
    return lambda metric: per_seed(table, method, metric, eps=0.0, alpha=alpha)


def _sweep_comparison(better: str, worse: str):
    """Claims 2, 2b, 2c: `better` minus `worse` (arms of the sweep), paired over seeds, on the implicit reward and on
    R_pref; holds if both intervals lie above 0 (estimate: R_pref)."""

    def decide(table, config):
        a, b = _sweep_arm(table, better, config), _sweep_arm(table, worse, config)
        out = {metric: mean_ci(paired_differences(a(metric), b(metric))) for metric in ("implicit", "r_pref")}
        return (all_of([three_way(s[1], s[2]) for s in out.values()]), *out["r_pref"])

    return decide


def capability_metrics(table: pd.DataFrame) -> list[str]:
    """The capability metrics the table has (`CAPABILITY_METRICS` order): R_cap with the world's judge, held-out or
    multiple-choice accuracy with a reward model."""
    return [m for m in CAPABILITY_METRICS if (table.metric == m).any()]


def _claim3(ours):
    def decide(table, config):
        eps = clean_eps(table)
        baselines = in_run(table, "baseline")
        diffs = {b: paired_differences(per_seed(table, ours, "r_pref", eps), per_seed(table, b, "r_pref", eps))
                 for b in baselines}  # fmt: skip
        holm = holm_intervals(diffs)
        best = max(baselines, key=lambda b: metric_mean(table, b, "r_pref", eps))
        verdicts_ = [three_way(lo, hi) for _, lo, hi in holm.values()]
        for metric in capability_metrics(table)[:1]:  # the capability guard, where the judge or setting has one
            cap = mean_ci(paired_differences(per_seed(table, ours, metric, eps), per_seed(table, best, metric, eps)))
            verdicts_.append(three_way(cap[1], cap[2], -NON_INFERIORITY_MARGIN))
        return (all_of(verdicts_), *holm[best])

    return decide


def _claim4(table, config):
    eps = clean_eps(table)
    results = [mean_ci(paired_differences(per_seed(table, "cong", m, eps), per_seed(table, "weaksft", m, eps)))
               for m in capability_metrics(table)]  # fmt: skip
    verdict = all_of([three_way(lo, hi, -NON_INFERIORITY_MARGIN) for _, lo, hi in results])
    worst = min(results, key=lambda r: r[1] if np.isfinite(r[1]) else r[0])
    return (verdict, *worst)


def _noise_levels(table: pd.DataFrame) -> list[float]:
    return sorted(_models(table).eps.dropna().unique())


def _claim5(table, config):
    levels = _noise_levels(table)
    if len(levels) < 2:
        return INCONCLUSIVE, math.nan, math.nan, math.nan
    lo_eps, hi_eps = levels[0], levels[-1]

    def drop(method):
        return per_seed(table, method, "r_pref", lo_eps) - per_seed(table, method, "r_pref", hi_eps)

    mean, lo, hi = mean_ci(paired_differences(drop("cong"), drop("weaksft")))
    verdict = {HOLDS: DOES_NOT_HOLD, DOES_NOT_HOLD: HOLDS}.get(three_way(lo, hi), INCONCLUSIVE)  # below 0 = robust
    return verdict, mean, lo, hi


RANKING = (PROBE, "ranking_spearman", "ranking_best_of_k", "headroom")
CEILING = ("ceiling_vs_weak", "ceiling_vs_strong", "detectable_effect")
CAPABILITY = ("strong_capability", "capability_gap")

CLAIMS: tuple[Claim, ...] = (
    Claim("1. the weak pair's implicit reward correlates with the preference reward",
          "per prompt, Spearman(implicit reward, R_pref) among pi_r's own samples; mean over prompts per seed; holds if "
          "the 95% t-interval over seeds lies above 0, does not hold if below, else inconclusive",
          ("headroom",), _claim1),
    Claim("2. CD samples beat naive pi_r samples on implicit reward and R_pref",
          "at the alpha fixed in the config ({alpha}): paired 95% intervals over seeds of CD minus naive, on the "
          "implicit reward and on R_pref; holds if both lie above 0, does not hold if either lies below 0, else "
          "inconclusive (estimate shown: R_pref)",
          (PROBE, "headroom"), _sweep_comparison("cd", "naive")),
    Claim("2b. (extra) the contrast itself: CD beats the head alone (alpha 1, no amateur)",
          "CD at alpha {alpha} minus CD at alpha 1 (pi_r renormalised to its head) on the same draws, paired 95% "
          "intervals over seeds on the implicit reward and on R_pref; holds if both lie above 0, does not hold if "
          "either lies below 0, else inconclusive (estimate: R_pref)",
          (PROBE, "headroom"), _sweep_comparison("cd", "head")),
    Claim("2c. (extra) the plausibility head alone beats naive pi_r sampling",
          "CD at alpha 1 minus naive pi_r samples, as 2b (estimate: R_pref)",
          (PROBE, "headroom"), _sweep_comparison("head", "naive")),
    Claim("3a. ConG beats the best baseline ({baselines})",
          "ConG minus each baseline on R_pref, paired over seeds, Holm-corrected intervals over the {n_baselines} "
          "baselines; holds "
          "if all lie above 0 and {capability}; does not hold if any R_pref interval lies below 0 or the capability "
          "interval below -{margin}; else inconclusive (estimate: vs the best baseline)",
          RANKING + CEILING, _claim3("cong"), methods=("cong", "baseline")),
    Claim("3b. ConG-S beats the best baseline ({baselines})", "as 3a, for ConG-S",
          RANKING + CEILING, _claim3("cong_s"), methods=("cong_s", "baseline")),
    Claim("4. capabilities are preserved (ConG vs WeakSFT)",
          "ConG minus WeakSFT on each capability metric ({capability_metrics}), paired 95% intervals; holds if all lie "
          "above -{margin} (non-inferior), does not hold if any lies below -{margin}, else inconclusive (estimate: the "
          "less favourable)",
          CAPABILITY + ("detectable_effect",), _claim4, needs_any=CAPABILITY_METRICS,
          threshold=-NON_INFERIORITY_MARGIN, methods=("cong", "weaksft")),
    Claim("5. ConG is more robust to label noise than WeakSFT",
          "drop in R_pref from the cleanest to the noisiest weak labels (eps {eps_low} -> {eps_high}), per seed; ConG's "
          "drop minus WeakSFT's, paired 95% interval; holds if it lies below 0, does not hold if above 0, else "
          "inconclusive",
          RANKING + CEILING, _claim5, methods=("cong", "weaksft")),
)  # fmt: skip


def _check_registries() -> None:
    """Every id a claim names is a precondition's (a typo would silently drop a gate)."""
    known = {c.id for c in CONDITIONS} | {PROBE}
    for claim in CLAIMS:
        unknown = set(claim.conditions) - known
        if unknown:
            raise ValueError(f"claim {claim.claim!r} names unknown precondition id(s) {sorted(unknown)}")


_check_registries()


def claim_text(claim: Claim, table: pd.DataFrame) -> str:
    """The claim with the run's baselines named."""
    return claim.claim.format(baselines=", ".join(label(b) for b in in_run(table, "baseline")) or "none in this run")


def missing_methods(claim: Claim, table: pd.DataFrame) -> list[str]:
    """The methods a claim compares that the run did not train (by label; "a baseline" if it trained none)."""
    present = set(table.method)
    return [("a baseline" if m == "baseline" else label(m)) for m in claim.methods
            if (not in_run(table, "baseline") if m == "baseline" else m not in present)]  # fmt: skip


def rule_text(claim: Claim, table: pd.DataFrame, config=None) -> str:
    """The claim's rule with this run's numbers filled in."""
    levels = _noise_levels(table) or [math.nan]
    caps = capability_metrics(table)
    capability = (f"its {caps[0]} minus the best baseline's has its 95% interval above -{NON_INFERIORITY_MARGIN:g}"
                  if caps else "(no capability metric: judged on R_pref alone)")  # fmt: skip
    return claim.rule.format(alpha=config.cd_alpha if config is not None else 0.5, margin=f"{NON_INFERIORITY_MARGIN:g}",
                             eps_low=f"{levels[0]:g}", eps_high=f"{levels[-1]:g}", capability=capability,
                             capability_metrics=", ".join(caps) or "none",
                             n_baselines=len(in_run(table, "baseline")))  # fmt: skip


def verdicts(table: pd.DataFrame, conditions: pd.DataFrame | None = None, config=None) -> pd.DataFrame:
    """One three-way verdict per claim (holds / does not hold / inconclusive), or "untestable here" when the table
    lacks every metric the claim needs (said why) or one of its applicable preconditions is not met. Columns: claim,
    verdict, estimate, ci_low, ci_high, rule, unmet."""
    conditions = preconditions(table, config) if conditions is None else conditions
    rows = []
    for c in CLAIMS:
        needed = conditions[conditions.id.apply(lambda i, ids=c.conditions: i in ids or i.split(":")[0] in ids)]
        unmet = list(needed.condition[needed.applicable & ~needed.met])
        if missing := missing_methods(c, table):
            verdict, estimate, lo, hi = UNTESTABLE, math.nan, math.nan, math.nan
            unmet = [f"the run trained no {', '.join(missing)}"]
        elif not any((table.metric == m).any() for m in c.needs_any):
            verdict, estimate, lo, hi = UNTESTABLE, math.nan, math.nan, math.nan
            unmet = [f"the judge has no channel for {' / '.join(c.needs_any)} and the setting no held-out set"]
        else:
            verdict, estimate, lo, hi = c.decide(table, config)
            verdict = UNTESTABLE if unmet else verdict
        rows.append(dict(claim=claim_text(c, table), verdict=verdict, estimate=estimate, ci_low=lo, ci_high=hi,
                         rule=rule_text(c, table, config), unmet="; ".join(unmet)))  # fmt: skip
    return pd.DataFrame(rows)


def _pooled(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """The worlds' results tables as one, each row marked with its world (`per_seed` then indexes by (world, seed))."""
    return pd.concat([t.assign(world=w) for w, t in tables.items()], ignore_index=True)


def world_preconditions(tables: dict[int, pd.DataFrame], config=None) -> tuple[dict, pd.DataFrame]:
    """({world: its preconditions}, the preconditions of the worlds pooled): what `world_verdicts` checks."""
    return {w: preconditions(t, config) for w, t in tables.items()}, preconditions(_pooled(tables), config)


def world_verdicts(tables: dict[int, pd.DataFrame], config=None, conditions: tuple | None = None) -> pd.DataFrame:
    """Every claim judged over several worlds (analysis_plan.md, question 5): the worlds' results tables pooled
    (`per_seed` then indexes by (world, seed) and `mean_ci` bootstraps worlds, then seeds within them). A claim is
    untestable if one of its preconditions is unmet in any world (checked per world) or, for the smallest detectable
    effect, on the pooled intervals; a "holds" or "does not hold" whose estimate lies on the other side of the claim's
    threshold in some world becomes "inconclusive" (the note names the world). `conditions`: `world_preconditions`,
    if already computed. Columns: those of `verdicts`, then note, and each world's estimate (`world_<w>`) and verdict
    (`verdict_world_<w>`)."""
    if not tables:
        raise ValueError("world_verdicts needs at least one world's results table")
    each, pooled_conditions = conditions or world_preconditions(tables, config)
    per_world = {w: verdicts(t, each[w], config) for w, t in tables.items()}
    pooled = _pooled(tables)
    conditions = pd.concat(
        [c.assign(condition=lambda c, w=w: c.condition + f" (world {w})") for w, c in each.items()]
        + [pooled_conditions[pooled_conditions.id == "detectable_effect"].assign(
            condition=lambda c: c.condition + " (pooled over worlds)")], ignore_index=True)  # fmt: skip
    out = verdicts(pooled, conditions, config)
    out["note"] = ""
    for i, claim in enumerate(CLAIMS):
        estimates = {w: v.loc[i, "estimate"] for w, v in per_world.items()}
        out.loc[i, ["verdict", "note"]] = sign_rule(out.loc[i, "verdict"], out.loc[i, "estimate"], estimates,
                                                    claim.threshold)  # fmt: skip
        for w, e in estimates.items():
            out.loc[i, f"world_{w}"] = e
            out.loc[i, f"verdict_world_{w}"] = per_world[w].loc[i, "verdict"]
    return out


# --- the decomposition of the ConG - WSPO gap (analysis_plan.md, question 2) ----------------------------------------


def decomposition_rows(table: pd.DataFrame, world: int = 0, metrics=("r_pref", "r_cap")) -> pd.DataFrame:
    """The per-seed values of every arm the decomposition reads (ConG, ConG-S, WSPO and the plan's arms) at the
    clean setting: columns arm, world, seed, metric, value (`decomposition.csv`)."""
    arms = ["cong", "cong_s", "wspo", *plan.value("decomposition", "arms")]
    part = _models(table)
    part = part[part.method.isin(arms) & part.metric.isin(metrics) & np.isclose(part.eps, clean_eps(table))]
    out = part.rename(columns={"method": "arm"})[["arm", "seed", "metric", "value"]].assign(world=world)
    return out[["arm", "world", "seed", "metric", "value"]].reset_index(drop=True)


def walk_steps(compare: Callable[[str, str], dict], metric: str = "r_pref") -> pd.DataFrame:
    """The walk from ConG to WSPO one change at a time (the plan's `walk`, then its `other_walk`), each step judged by
    `compare(a, b)` -> {"estimate", "ci_low", "ci_high", "verdict", ...} for `a` minus `b` (its other entries become
    columns): per step (to - from), its share of the whole WSPO - ConG gap, and `carries`, the step the book may
    name: the gap is decided (holds or does not hold), and the step is the largest in size on the main path, is
    decided itself, and has a share of at least the plan's `carries_share`."""
    total = compare("wspo", "cong")
    rows = []
    for path, steps in (("main", plan.value("decomposition", "walk")),
                        ("other", plan.value("decomposition", "other_walk"))):  # fmt: skip
        for start, end in steps:
            c = compare(end, start)
            share = c["estimate"] / total["estimate"] if total["estimate"] else math.nan
            rows.append({"path": path, "step": f"{label(start)} -> {label(end)}", "start": start, "end": end,
                         "metric": metric, **{k: c.pop(k) for k in ("estimate", "ci_low", "ci_high")}, "share": share,
                         **c})  # fmt: skip
    frame = pd.DataFrame(rows)
    frame["carries"] = False
    main = frame[(frame.path == "main") & frame.estimate.notna()]
    if len(main) and total["verdict"] in (HOLDS, DOES_NOT_HOLD):
        top = main.estimate.abs().idxmax()
        decided = frame.loc[top, "verdict"] in (HOLDS, DOES_NOT_HOLD)
        frame.loc[top, "carries"] = bool(decided and frame.loc[top, "share"] >= plan.value("decomposition",
                                                                                          "carries_share"))  # fmt: skip
    return frame


def walk(table: pd.DataFrame, metric: str = "r_pref") -> pd.DataFrame:
    """`walk_steps` over one world's seeds: each step the paired difference over seeds with its 95% interval."""
    eps = clean_eps(table)

    def compare(a: str, b: str) -> dict:
        mean, lo, hi = mean_ci(paired_differences(per_seed(table, a, metric, eps), per_seed(table, b, metric, eps)))
        return {"estimate": mean, "ci_low": lo, "ci_high": hi, "verdict": three_way(lo, hi)}

    return walk_steps(compare, metric).drop(columns="verdict")


def side_by_side(sweep: Dataset, alphas=(0.0, 0.5, 1.0), n: int = 6) -> pd.DataFrame:
    """A few eval prompts with the naive pi_r sample and CD samples at some alphas, R_pref in brackets."""
    df = sweep.to_pandas()
    prompts = list(dict.fromkeys(df.prompt))[:n]
    out = []
    for prompt in prompts:
        part = df[df.prompt == prompt]
        row = {"prompt": prompt}
        naive = part[part.alpha.isna()].iloc[0]
        row["naive pi_r"] = f"{naive.response!r} [{naive.r_pref:.2f}]"
        for a in alphas:
            hit = part[np.isclose(part.alpha, a)]
            if len(hit):
                row[f"CD alpha={a}"] = f"{hit.iloc[0].response!r} [{hit.iloc[0].r_pref:.2f}]"
        out.append(row)
    return pd.DataFrame(out)
