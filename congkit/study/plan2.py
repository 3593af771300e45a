"""The second pre-registered plan (`congkit/pipeline/analysis_plan_2.md`): is the verdict a property of the world?

    out = run_plan2("runs")   # every level: worlds drawn and accepted, tuned once per level, every seed; tables
    # out/acceptance.csv, tuning.csv, comparisons.csv, decisions.csv

Per knob level (a `WorldShape`), worlds are drawn in seed order and accepted by the plan's rule (the weak pair's and
the capability preconditions met on the first seed, before any strong method trains); the first accepted world of a
level is tuned on its validation prompts (plan 2's grid, extended once past an edge) and its choices serve the
level's other worlds (`PipelineConfig.budgets`). Comparisons pool a level's accepted worlds: the crossed bootstrap and
the t-interval over world means, a verdict where both agree, plan 1's sign rule on top; the decisions are the plan's
words, computed from its thresholds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pandas as pd

from congkit.pipeline import plan
from congkit.pipeline.cache import write_csv_atomic
from congkit.pipeline.evaluation import (
    DOES_NOT_HOLD,
    HOLDS,
    UNTESTABLE,
    agreed,
    claim_rows,
    crossed_bootstrap,
    evaluation_rows,
    preconditions,
    sign_rule,
    three_way,
    world_signs,
    world_t_interval,
)
from congkit.pipeline.runner import Pipeline
from congkit.pipeline.settings import PipelineConfig, Setting, tuned_methods
from congkit.pipeline.world import WorldShape
from congkit.pipeline.world_build import WorldConfig, build_world
from congkit.study.workers import run_in_workers
from congkit.study.worlds import paired_values

# the preconditions a world must meet to be accepted (plan 2: the weak pair's and the capability ones)
ACCEPTANCE = ("probe", "ranking_spearman", "ranking_best_of_k", "headroom", "strong_capability", "capability_gap")


def value(section: str, name: str):
    return plan.value(section, name, plan=2)


def level_world_config(level: str, world_seed: int, base: WorldConfig | None = None,
                       weak_width: int | None = None) -> WorldConfig:  # fmt: skip
    """World `world_seed` of knob level `level`: the base world's sizes with weak model width `weak_width` (default:
    the first of the plan's `weak_widths`, amendment 3), its shape from the plan, validation prompts."""
    base = base or WorldConfig()
    data = dataclasses.replace(base.data, seed=world_seed, shape=WorldShape(**value("levels", level)),
                               n_valid_prompts=plan.value("tuning", "validation_prompts"))  # fmt: skip
    weak = dataclasses.replace(base.weak, hidden_size=weak_width or value("world", "weak_widths")[0])
    return dataclasses.replace(base, data=data, weak=weak)


def plan2_config(base: PipelineConfig | None = None) -> PipelineConfig:
    """The pipeline settings of plan 2: its arms, the clean setting, plan 2's tuned budget, and its seeds per world
    (`base`'s seeds when a base config is given, as the tests give smaller ones)."""
    base = base or PipelineConfig(seeds=list(range(value("study", "seeds_per_world"))))
    methods = [m for m in value("arms", "methods") if m != "gold"]  # the gold ceiling is always trained
    return dataclasses.replace(base, methods=methods, noise_levels=[0.0], plan=2, budget="tuned")


def world_pipeline(level: str, world_seed: int, runs: Path, config: PipelineConfig, base: WorldConfig | None = None,
                   weak_width: int | None = None, *, progress: bool = False) -> Pipeline:  # fmt: skip
    world = build_world(level_world_config(level, world_seed, base, weak_width), root=runs, progress=progress)
    return Pipeline(Setting.from_world(world), config, root=runs / f"plan2-{level}-world-{world_seed}",
                    progress=progress)  # fmt: skip


def probe_accuracy(probes: pd.DataFrame) -> dict[str, float]:
    """Per preference attribute, the share of attribute probes whose better response the weak pair's implicit reward
    ranks above the worse (what the acceptance rule's probe preconditions read), as columns `probe_<attribute>`."""
    right = probes.implicit_better > probes.implicit_worse
    return {f"probe_{a}": float(v) for a, v in right.groupby(probes.attribute).mean().items()}


def acceptance(pipe: Pipeline) -> tuple[bool, str]:
    """Whether a world meets the plan's acceptance preconditions on its first seed at the clean setting (before any
    strong method trains), and the unmet ones in words."""
    seed, eps = pipe.config.seeds[0], 0.0
    results = {m: pipe.evaluate(pipe.model_path(m, seed, eps), seed) for m in ("strong_base", "weak_base",
                                                                                "weak_aligned")}  # fmt: skip
    rows = [r for m, result in results.items() for r in evaluation_rows(m, seed, eps, result, results["strong_base"])]
    rows += claim_rows(seed, pipe.weak_pair_pool(seed), pipe.alpha_sweep(seed), pipe.attribute_probes(seed),
                       pipe.config.best_of)  # fmt: skip
    table = preconditions(pd.DataFrame(rows))
    table = table[table.id.apply(lambda i: i.split(":")[0] in ACCEPTANCE)]
    unmet = list(table.condition[~table.met])
    return not unmet, "; ".join(unmet)


def _job(job: tuple):
    """One unit of plan 2's run in a build worker: a drawn world's acceptance, one method's tuning grid (a level's
    first world), or one seed of one accepted world (its evaluations build every model)."""
    kind, runs, level, world, width, item, config, base = job
    start = time.perf_counter()
    result = None
    if kind == "accept":  # amendment 3: the plan's weak widths in order, until one passes
        result = []
        for width in value("world", "weak_widths"):
            pipe = world_pipeline(level, world, Path(runs), config, base, width)
            ok, unmet = acceptance(pipe)
            result.append((width, ok, unmet, probe_accuracy(pipe.attribute_probes(pipe.config.seeds[0]).to_pandas())))
            if ok:
                break
    elif kind == "tune":
        world_pipeline(level, world, Path(runs), config, base, width).tuning_rows(item)
    else:
        world_pipeline(level, world, Path(runs), config, base, width).evaluation_rows(item, 0.0)
    return kind, level, world, item, result, time.perf_counter() - start


def _describe(done: int, total: int, r: tuple) -> str:
    what = {"accept": lambda: "; ".join(f"weak width {w}: " + ("accepted" if ok else f"not accepted ({unmet})")
                                        for w, ok, unmet, _ in r[4]),
            "tune": lambda: f"{r[3]} tuned", "seed": lambda: f"seed {r[3]} built"}[r[0]]()  # fmt: skip
    return f"{r[1]} world {r[2]}: {what} ({done}/{total}, {r[5]:.0f} s)"


def accepted_worlds(level: str, runs: Path, config: PipelineConfig, base: WorldConfig | None = None,
                    workers: int = 1) -> tuple[dict[int, int], list[dict]]:  # fmt: skip
    """The plan's acceptance rule for one level: world seeds drawn in order until `accepted_per_level` pass (at most
    `max_draws_per_level` drawn), each checked at the plan's weak widths in order until one passes (amendment 3),
    `workers` worlds at a time (worlds drawn past the last one needed are not counted). Returns {accepted seed: its
    weak width} in draw order and one row per counted check (a world and a width)."""
    wanted, draws, rows, accepted = value("study", "accepted_per_level"), value("study", "max_draws_per_level"), [], {}
    for start in range(0, draws, max(1, workers)):
        batch = range(start, min(start + max(1, workers), draws))
        results = run_in_workers(_job, [("accept", str(runs), level, w, None, None, config, base) for w in batch],
                                 workers, _describe, "plan2")  # fmt: skip
        for _, _, world, _, checks, _ in results:
            if len(accepted) < wanted:
                for width, ok, unmet, probes in checks:
                    rows.append({"level": level, "world": world, "weak_width": width, "accepted": ok, "unmet": unmet,
                                 **probes})  # fmt: skip
                    accepted |= {world: width} if ok else {}
        if len(accepted) == wanted:
            break
    return accepted, rows


def level_pipelines(level: str, widths: dict[int, int], runs: Path, config: PipelineConfig,
                    base: WorldConfig | None = None, workers: int = 1) -> tuple[dict[int, Pipeline], pd.DataFrame]:  # fmt: skip
    """{world: pipeline} of a level's accepted worlds ({world: weak width}, in draw order), every seed built, and the
    tuning table: the first world tunes (plan 2's grid; ConG after the tuned ConG-S it starts from), the others train
    with its choices (`PipelineConfig.budgets`)."""
    tuned, worlds = tuned_methods(config), list(widths)
    for stage in ([m for m in tuned if m != "cong"], [m for m in tuned if m == "cong"]):
        run_in_workers(_job, [("tune", str(runs), level, worlds[0], widths[worlds[0]], m, config, base)
                              for m in stage], workers, _describe, "plan2")  # fmt: skip
    first = world_pipeline(level, worlds[0], runs, config, base, widths[worlds[0]])
    tuning = first.tuning_table()
    reuse = dataclasses.replace(config, budget="fixed", budgets={m: first.tuned_config(m) for m in tuned})
    configs = {w: config if w == worlds[0] else reuse for w in worlds}
    run_in_workers(_job, [("seed", str(runs), level, w, widths[w], s, configs[w], base) for w in worlds
                          for s in config.seeds], workers, _describe, "plan2")  # fmt: skip
    pipes = {w: world_pipeline(level, w, runs, configs[w], base, widths[w]) for w in worlds}
    # the strong arms' grids from the first world; each world's own weak DPO choice (amendment 1)
    tables = [tuning[tuning.method != "weak_dpo"].assign(world=worlds[0], weak_width=widths[worlds[0]])]
    tables += [pipes[w].weak_dpo_table().assign(world=w, weak_width=widths[w]) for w in worlds]
    return pipes, pd.concat(tables, ignore_index=True).assign(level=level)


def compare(pipes: dict[int, Pipeline], a: str, b: str, metric: str = "r_pref") -> dict:
    """`a` - `b` over a level's worlds: the crossed bootstrap and the t-interval over world means, each one's
    three-way verdict, the agreed verdict, and plan 1's sign rule over worlds on top."""
    values = paired_values(pipes, a, b, metric)
    estimate, lo, hi = crossed_bootstrap(values)
    _, t_lo, t_hi = world_t_interval(values)
    verdict, note = agreed(three_way(lo, hi), three_way(t_lo, t_hi))
    worlds = world_signs(values)
    signed, flip = sign_rule(verdict, estimate, worlds)
    return {"a": a, "b": b, "metric": metric, "estimate": estimate, "boot_low": lo, "boot_high": hi, "t_low": t_lo,
            "t_high": t_hi, "verdict": signed, "note": "; ".join(n for n in (note, flip) if n),
            **{f"world_{w}": e for w, e in worlds.items()}}  # fmt: skip


def decisions(comparisons: pd.DataFrame, accepted: dict[str, list[int]]) -> pd.DataFrame:
    """The plan's words per level, from its thresholds: `spread` decides single-token artifact / generalises / partly,
    `overshoot` decides whether amplification overshoots; a level short of accepted worlds is untestable here."""
    def row(level: str, a: str, b: str) -> pd.Series | None:
        hit = comparisons[(comparisons.level == level) & (comparisons.a == a) & (comparisons.b == b)
                          & (comparisons.metric == "r_pref")]  # fmt: skip
        return hit.iloc[0] if len(hit) else None

    wanted, out = value("study", "accepted_per_level"), []
    for level in value("study", "levels"):
        if len(accepted.get(level, [])) < wanted:
            out.append({"level": level, "decision": UNTESTABLE, "why": f"{len(accepted.get(level, []))} accepted "
                        f"world(s), the plan needs {wanted}"})  # fmt: skip
            continue
        gap, credit = row(level, "wspo", "cong_s"), row(level, "wspo", "wspo_seqmean")
        if level == "spread":
            artifact = ((gap.verdict == DOES_NOT_HOLD or gap.estimate < value("decisions", "artifact_gap"))
                        and credit.verdict != HOLDS)  # fmt: skip
            general = (gap.verdict == HOLDS and gap.estimate >= value("decisions", "generalises_gap")
                       and credit.verdict == HOLDS)  # fmt: skip
            words = "single-token artifact" if artifact else "generalises within these worlds" if general else "partly"
            out.append({"level": level, "decision": words, "why": f"P1 {gap.estimate:+.3f} ({gap.verdict}), P2 "
                        f"{credit.estimate:+.3f} ({credit.verdict})"})  # fmt: skip
        elif level == "original":  # the reference the other levels are read against: no decision of its own
            out.append({"level": level, "decision": "reference", "why": f"P1 {gap.estimate:+.3f} ({gap.verdict}), P2 "
                        f"{credit.estimate:+.3f} ({credit.verdict})"})  # fmt: skip
        elif level == "overshoot":
            original = row("original", "wspo", "cong_s")
            drop = original.estimate - gap.estimate if original is not None else math.nan
            overshoots = gap.verdict == DOES_NOT_HOLD or drop >= value("decisions", "overshoot_drop")
            words = ("amplification overshoots" if overshoots else UNTESTABLE if math.isnan(drop)
                     else "does not overshoot")  # P1 holds but no original level to read the drop against  # fmt: skip
            against = "the original level untestable" if math.isnan(drop) else f"{drop:+.3f} below the original level"
            out.append({"level": level, "decision": words,
                        "why": f"P1 {gap.estimate:+.3f} ({gap.verdict}), {against}"})  # fmt: skip
    return pd.DataFrame(out, columns=["level", "decision", "why"])


def run_plan2(runs_dir: str | Path, workers: int = 2, config: PipelineConfig | None = None,
              base: WorldConfig | None = None, out: str | Path | None = None) -> Path:  # fmt: skip
    """Plan 2 end to end, in `workers` build workers (resumable: every stage cached under `runs_dir`): acceptance per
    level, tuning on each level's first accepted world, every seed of every accepted world, the comparisons and the
    decisions. Writes acceptance.csv, tuning.csv, comparisons.csv and decisions.csv to `out` (default
    `runs_dir/plan2`)."""
    runs = Path(runs_dir).resolve()
    config = plan2_config(config)
    tables: dict[str, list] = {"acceptance": [], "tuning": [], "comparisons": []}
    accepted = {}
    for level in value("study", "levels"):
        accepted[level], rows = accepted_worlds(level, runs, config, base, workers)
        tables["acceptance"].append(pd.DataFrame(rows))
        if len(accepted[level]) < value("study", "accepted_per_level"):
            continue
        pipes, tuning = level_pipelines(level, accepted[level], runs, config, base, workers)
        tables["tuning"].append(tuning)
        pairs = value("comparisons", "primary") + value("comparisons", "secondary")
        tables["comparisons"].append(pd.DataFrame([compare(pipes, a, b, metric) | {"level": level}
                                                   for metric in ("r_pref", "r_cap") for a, b in pairs]))  # fmt: skip
    # no comparisons only when no level has its accepted worlds: `decisions` then reads none of them
    frames = {name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame() for name, parts in tables.items()}
    frames["decisions"] = decisions(frames["comparisons"], accepted)
    out = Path(out) if out is not None else runs / "plan2"
    for name, frame in frames.items():
        write_csv_atomic(frame, out / f"{name}.csv")
    return out
