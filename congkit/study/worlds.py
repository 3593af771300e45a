"""More than one world: pipelines of several synthetic worlds (own pretrained bases, own prompt sets), pooled with
intervals over worlds, seeds and prompts (`evaluation.hierarchical_bootstrap`), and the plan's rule that a
comparison's verdict holds only if it holds on the pooled interval and its estimate keeps its sign in every world.

    pipes = {w: Pipeline(Setting.from_world(build_world(world_config(w))), config, root / f"world-{w}") for w in ...}
    comparison(pipes, "wspo", "cong")  # {"estimate", "ci_low", "ci_high", "worlds": {w: estimate}, "verdict", ...}
    world_walk(pipes)                  # the ConG -> WSPO walk, pooled, per-world signs, the step that carries the gap
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from congkit.pipeline import Pipeline, plan
from congkit.pipeline.evaluation import hierarchical_bootstrap, sign_rule, three_way, walk_steps, world_signs


def prompt_values(pipe: Pipeline, method: str, seed: int, eps: float, metric: str = "r_pref") -> np.ndarray:
    """One model's per-prompt `metric` (mean over its evaluation draws) on the evaluation prompts, in prompt order."""
    result = pipe.evaluate(pipe.model_path(method, seed, eps), seed)
    return np.asarray(result[metric], dtype=float).mean(axis=0)


def paired_values(pipes: dict[int, Pipeline], a: str, b: str, metric: str = "r_pref") -> dict:
    """world -> seed -> per-prompt `a` minus `b` (paired: same prompts, same draws' seeds), at the clean setting."""
    return {w: {s: prompt_values(p, a, s, p.config.noise_levels[0], metric)
                - prompt_values(p, b, s, p.config.noise_levels[0], metric) for s in p.config.seeds}
            for w, p in pipes.items()}  # fmt: skip


def comparison(pipes: dict[int, Pipeline], a: str, b: str, metric: str = "r_pref", threshold: float = 0.0) -> dict:
    """`a` minus `b`, pooled over worlds, seeds and prompts: estimate, hierarchical bootstrap interval, each world's
    estimate, and the three-way verdict under the plan's rule (a "holds" or "does not hold" whose sign flips in some
    world is "inconclusive", naming the world)."""
    values = paired_values(pipes, a, b, metric)
    estimate, lo, hi = hierarchical_bootstrap(values)
    worlds = world_signs(values)
    verdict, note = sign_rule(three_way(lo, hi, threshold), estimate, worlds, threshold)
    return {"a": a, "b": b, "metric": metric, "estimate": estimate, "ci_low": lo, "ci_high": hi, "worlds": worlds,
            "verdict": verdict, "note": note}  # fmt: skip


def world_walk(pipes: dict[int, Pipeline], metric: str = "r_pref") -> pd.DataFrame:
    """The walk from ConG to WSPO (`evaluation.walk_steps`), every step pooled over worlds (`comparison`), with its
    verdict under the plan's sign rule and its per-world estimates."""

    def compare(a: str, b: str) -> dict:
        c = comparison(pipes, a, b, metric)
        return {k: c[k] for k in ("estimate", "ci_low", "ci_high", "verdict", "note")} | {
            f"world_{w}": e for w, e in c["worlds"].items()}  # fmt: skip

    return walk_steps(compare, metric)


def decomposition_table(pipes: dict[int, Pipeline], metrics=("r_pref", "r_cap")) -> pd.DataFrame:
    """`decomposition.csv`: arm, world, seed, metric, value (mean over prompts and draws) for ConG, ConG-S, WSPO and
    the plan's arms, at the clean setting."""
    arms = ["cong", "cong_s", "wspo", *plan.value("decomposition", "arms")]
    rows = [{"arm": arm, "world": w, "seed": s, "metric": m,
             "value": float(prompt_values(p, arm, s, p.config.noise_levels[0], m).mean())}
            for w, p in pipes.items() for s in p.config.seeds for arm in arms for m in metrics
            if m in p.evaluate(p.model_path(arm, s, p.config.noise_levels[0]), s)]  # fmt: skip
    return pd.DataFrame(rows, columns=["arm", "world", "seed", "metric", "value"])


# --- the plan's run: every world, both budgets, resumable ----------------------------------------------------------

BUDGETS = ("fixed", "tuned")


def plan_world_config(world: int, base=None):
    """World `world` of the plan: the default world's sizes, `WorldData.seed = world`, validation prompts."""
    import dataclasses

    from congkit.pipeline.world_build import WorldConfig

    base = base or WorldConfig()
    data = dataclasses.replace(base.data, seed=world, n_valid_prompts=plan.value("tuning", "validation_prompts"))
    return dataclasses.replace(base, data=data)


def plan_pipelines(root, budget: str, config=None, world_base=None, progress: bool = False,
                   worlds: list[int] | None = None) -> dict[int, Pipeline]:  # fmt: skip
    """{world: its pipeline} for one budget ("fixed" or "tuned") and the plan's worlds (or `worlds`); both budgets
    share one cache folder per world (`root/world-<w>`), so the tuned budget reuses what the fixed one built."""
    import dataclasses
    from pathlib import Path

    from congkit.pipeline.settings import PipelineConfig, Setting
    from congkit.pipeline.world_build import build_world

    seeds = list(range(plan.value("study", "seeds_per_world")))
    config = dataclasses.replace(config or PipelineConfig(), seeds=config.seeds if config else seeds, budget=budget)
    worlds = plan.value("study", "worlds") if worlds is None else worlds
    if not worlds:
        raise ValueError("no worlds to run: the analysis plan's [study] worlds (or `worlds`) must name at least one")
    out = {}
    for w in worlds:
        world = build_world(plan_world_config(w, world_base), root=Path(root), progress=progress)
        out[w] = Pipeline(Setting.from_world(world), config, root=Path(root) / f"world-{w}", progress=progress)
    return out


def plan_tables(by_budget: dict[str, dict[int, Pipeline]]) -> dict[str, pd.DataFrame]:
    """The plan's result tables from built pipelines: decomposition (arm, world, seed, metric, value, budget), the
    pooled walk and the ConG - WSPO comparisons per budget, every claim's world-aware verdict per budget, tuning
    (world, method, grid point, score, chosen), each world's preconditions (fixed budget) and the smallest detectable
    effect pooled over worlds (world "pooled") per budget."""
    from congkit.pipeline.evaluation import world_preconditions, world_verdicts

    tables = {"decomposition": [], "walk": [], "comparisons": [], "verdicts": [], "tuning": [], "preconditions": []}
    for budget, pipes in by_budget.items():
        tables["decomposition"].append(decomposition_table(pipes).assign(budget=budget))
        tables["walk"].append(world_walk(pipes).assign(budget=budget))
        rows = [comparison(pipes, a, "wspo", m) for a in ("cong", "cong_s", "bon_implicit") for m in ("r_pref", "r_cap")]
        tables["comparisons"].append(pd.DataFrame([{k: v for k, v in r.items() if k != "worlds"} | {
            f"world_{w}": e for w, e in r["worlds"].items()} for r in rows]).assign(budget=budget))  # fmt: skip
        config = next(iter(pipes.values())).config
        results = {w: p.run() for w, p in pipes.items()}
        each, pooled = conditions = world_preconditions(results, config)
        tables["verdicts"].append(world_verdicts(results, config, conditions).assign(budget=budget))
        tables["preconditions"].append(pooled[pooled.id == "detectable_effect"].assign(world="pooled", budget=budget))
        for w, pipe in pipes.items():
            if budget == "tuned":
                tables["tuning"].append(pipe.tuning_table().assign(world=w))
            if budget == "fixed":
                tables["preconditions"].append(each[w].assign(world=w, budget=budget))
    return {name: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame() for name, parts in tables.items()}
