"""Building a profile's stages before the chapters run: every seed's replicate, the regime grid's columns and the
analysis plan's worlds, in worker processes that die with their parent."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from congkit.pipeline import PipelineConfig, record_timings
from congkit.pipeline.cache import write_csv_atomic
from congkit.pipeline.world_build import WorldConfig, build_world
from congkit.study.profiles import regime_objects, study_objects
from congkit.study.regime import column_rows
from congkit.study.workers import settle


def _build_replicate(job: tuple) -> tuple[int, float, list[dict]]:
    """One seed's stages, in a build worker (`congkit.study.workers`): the seed, its seconds and its stage timings."""
    profile, runs_dir, real, seed = job
    start = time.perf_counter()
    _, _, pipe = study_objects(profile, runs_dir, progress=False, real=real)
    settle()
    pipe.replicate(seed)
    return seed, time.perf_counter() - start, pipe.timings


def prebuild(profile: str, runs_dir: str | Path, real: dict | None = None, workers: int = 2) -> None:
    """Build every seed's stages in `workers` processes before the notebooks run (they then find them cached).
    Safe because the cache locks each artifact; the world is built first, once."""
    from congkit.study.workers import run_in_workers

    _, _, pipe = study_objects(profile, runs_dir, progress=True, real=real)
    seeds = pipe.config.seeds
    print(f"[study] building {len(seeds)} seeds in {workers} processes", file=sys.stderr, flush=True)
    jobs = [(profile, str(runs_dir), real, seed) for seed in seeds]
    results = run_in_workers(_build_replicate, jobs, workers, lambda done, total, r: f"seed {r[0]} ready ({done}/"
                                                                                    f"{total}, {r[1]:.0f} s)")  # fmt: skip
    record_timings(pipe.root / "timings.csv", [*pipe.timings, *(row for r in results for row in r[2])])


def _column_job(job: tuple) -> tuple[int, int, float]:
    """One (weak pair, seed) column in a build worker (`congkit.study.workers`)."""
    profile, runs_dir, weak, seed = job
    start = time.perf_counter()
    world, grid, pipes = regime_objects(profile, runs_dir, progress=False)
    settle()
    column_rows(pipes[weak], grid, weak, seed)
    return weak, seed, time.perf_counter() - start


def prebuild_regime(profile: str, runs_dir: str | Path, workers: int = 2) -> None:
    """Build every (weak pair, seed) column in `workers` processes (the world and the weak bases first, once)."""
    from congkit.study.workers import run_in_workers

    _, grid, _ = regime_objects(profile, runs_dir, progress=True)
    jobs = [(profile, str(runs_dir), w, s) for s in grid.seeds for w in grid.rows()]
    print(f"[regime] building {len(jobs)} (weak pair, seed) columns in {workers} processes", file=sys.stderr,
          flush=True)  # fmt: skip
    run_in_workers(_column_job, jobs, workers, lambda done, total, r: f"{r[0]}, seed {r[1]} ready "
                                                                      f"({done}/{total}, {r[2]:.0f} s)", "regime")  # fmt: skip


def _plan_job(job: tuple):
    """One unit of the plan's run in a build worker: a world, one method's tuning grid, or one seed of one budget."""
    kind, runs_dir, world, item, budget, config, world_base = job
    from congkit.study.worlds import plan_pipelines, plan_world_config

    start = time.perf_counter()
    if kind == "world":
        build_world(plan_world_config(world, world_base), root=Path(runs_dir), progress=False)
    else:
        pipe = plan_pipelines(runs_dir, budget, config, world_base, worlds=[world])[world]
        settle()
        pipe.tuning_rows(item) if kind == "tune" else pipe.replicate(item)
    return kind, world, item, budget, time.perf_counter() - start


def run_plan(runs_dir: str | Path, workers: int = 2, config: PipelineConfig | None = None,
             world_base: WorldConfig | None = None) -> Path:  # fmt: skip
    """The pre-registered plan (`congkit/pipeline/analysis_plan.md`): every world, both budgets, in build workers (resumable:
    every stage is cached), then the result tables written to `runs_dir/plan/`. Returns that folder. `config` and
    `world_base` replace the default pipeline and world settings (the tests run it on smoke worlds)."""
    from congkit.pipeline import plan
    from congkit.study.workers import run_in_workers
    from congkit.study.worlds import BUDGETS, plan_pipelines, plan_tables

    runs_dir = Path(runs_dir).resolve()
    worlds = plan.value("study", "worlds")
    seeds = config.seeds if config is not None else range(plan.value("study", "seeds_per_world"))
    describe = lambda done, total, r: (f"{r[0]} world {r[1]} {'' if r[2] is None else r[2]} {r[3]} "  # noqa: E731
                                       f"({done}/{total}, {r[4]:.0f} s)")  # fmt: skip

    def jobs(kind, items, budgets):
        return [(kind, str(runs_dir), w, i, b, config, world_base) for b in budgets for w in worlds for i in items]

    run_in_workers(_plan_job, jobs("world", [None], ["fixed"]), workers, describe, "plan")
    tuned = plan.value("tuning", "methods")
    for stage in ([m for m in tuned if m != "cong"], [m for m in tuned if m == "cong"]):  # ConG tunes on tuned ConG-S
        run_in_workers(_plan_job, jobs("tune", stage, ["tuned"]), workers, describe, "plan")
    run_in_workers(_plan_job, jobs("seed", list(seeds), BUDGETS), workers, describe, "plan")
    out = runs_dir / "plan"
    pipes = {b: plan_pipelines(runs_dir, b, config, world_base) for b in BUDGETS}
    for name, frame in plan_tables(pipes).items():
        write_csv_atomic(frame, out / f"{name}.csv")
    return out


