"""The pre-registered rules (`congkit/pipeline/analysis_plan.md`): the preconditions of a fair test (`CONDITIONS`), the
claims (`CLAIMS`) and their three-way verdicts, pooled over worlds with the sign rule, and the walk that decomposes
the ConG - WSPO gap one change at a time. Each rule is written here once."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from congkit.pipeline import plan
from congkit.pipeline.evaluation.metrics import CAPABILITY_METRICS
from congkit.pipeline.evaluation.statistics import (
    clean_eps,
    holm_intervals,
    mean_ci,
    metric_mean,
    model_rows,
    paired_differences,
    per_seed,
    value_range,
)
from congkit.pipeline.methods import label, with_role

# claims 3 and 4: R_cap (and held-out accuracy) may not fall by more than this
NON_INFERIORITY_MARGIN = plan.value("study", "non_inferiority_margin")


THRESHOLD = plan.plan()["preconditions"]  # every precondition's threshold, from the analysis plan


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


def agreed(bootstrap: str, t_interval: str) -> tuple[str, str]:
    """The second plan's rule over worlds: a comparison's verdict is the bootstrap's and the t-interval's over world
    means where they agree; where they do not, it is "inconclusive" and the note says what each gave."""
    if bootstrap == t_interval:
        return bootstrap, ""
    return INCONCLUSIVE, f"the bootstrap gives {bootstrap!r}, the t-interval over worlds {t_interval!r}"


def sign_rule(verdict: str, estimate: float, worlds: dict, threshold: float = 0.0) -> tuple[str, str]:
    """The plan's rule over worlds: a "holds" or "does not hold" whose estimate lies on the other side of `threshold`
    in some world ({world: estimate}) becomes "inconclusive"; returns (verdict, note naming the worlds)."""
    side = np.sign(estimate - threshold)
    flipped = [w for w, e in worlds.items() if np.isfinite(e) and np.sign(e - threshold) != side]
    if verdict in (HOLDS, DOES_NOT_HOLD) and flipped:
        return INCONCLUSIVE, f"flips sign in world {', '.join(map(str, flipped))}"
    return verdict, ""


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


def claim4_parts(table: pd.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Claim 4 per capability metric: ConG - WeakSFT (mean, 95% CI over seeds) at the clean setting; the claim takes
    the less favourable."""
    eps = clean_eps(table)
    return {m: mean_ci(paired_differences(per_seed(table, "cong", m, eps), per_seed(table, "weaksft", m, eps)))
            for m in capability_metrics(table)}  # fmt: skip


def _claim4(table, config):
    results = list(claim4_parts(table).values())
    verdict = all_of([three_way(lo, hi, -NON_INFERIORITY_MARGIN) for _, lo, hi in results])
    worst = min(results, key=lambda r: r[1] if np.isfinite(r[1]) else r[0])
    return (verdict, *worst)


def _noise_levels(table: pd.DataFrame) -> list[float]:
    return sorted(model_rows(table).eps.dropna().unique())


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


def decomposition_rows(table: pd.DataFrame, world: int = 0, metrics=("r_pref", "r_cap")) -> pd.DataFrame:
    """The per-seed values of every arm the decomposition reads (ConG, ConG-S, WSPO and the plan's arms) at the
    clean setting: columns arm, world, seed, metric, value (`decomposition.csv`)."""
    arms = ["cong", "cong_s", "wspo", *plan.value("decomposition", "arms")]
    part = model_rows(table)
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
