"""The study: named parameter profiles, the notebooks run by papermill, and the offline Jupyter Book build.

    python -m congkit.study --profile smoke|default|real [--runs runs] [--no-book]

The chapters are MyST Markdown notebooks (`notebooks/*.md`, paired by jupytext), listed once, in the book's
`_toc.yml`. Each is read by jupytext, executed by papermill with its parameters (`profile`, `runs_dir`, and its own)
and written to `book/notebooks/`; the book is then built from them with execution off, into `book/_build/html`.
Every notebook starts with `notebook_setup(...)`, which checks the parameters, silences progress bars and warnings
(the published pages show none) and returns the world, setting and pipeline. Stage progress goes to stderr, which
the terminal running `make study` shows and the book drops. Stages are cached under `runs_dir`, so rerunning one
notebook recomputes nothing that is already there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .cache import swap_in, write_csv_atomic
from .pipeline import Pipeline, PipelineConfig, Setting, record_timings, smoke_pipeline_config
from .regime import RegimeConfig, column_rows, regime_pipeline, smoke_regime_config
from .workers import QUIET_ENV, settle
from .world_build import WorldConfig, build_world, smoke_world_config

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = REPO / "runs"


@functools.cache
def chapters(toc: Path = REPO / "book" / "_toc.yml") -> tuple[str, ...]:
    """The notebook chapters in book order (`notebooks/<name>` entries of the book's table of contents), read on
    first use (not at import: `import congkit.study` works outside a checkout)."""
    import yaml

    if not toc.exists():
        raise FileNotFoundError(f"{toc}: the book's table of contents is not here; the study runs from a checkout "
                                "of the congkit repository")  # fmt: skip
    data = yaml.safe_load(toc.read_text())
    files = [data["root"]] + [c["file"] for c in data.get("chapters", [])]
    return tuple(f"{Path(f).name}.md" for f in files if f.startswith("notebooks/"))


@dataclass
class RealCheckpoints:
    """The real-model profile: modelled on the paper's smallest setting. Any folder works in place of a hub id."""

    weak_model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    strong_model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    reward_model: str = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"
    prompts: str = "HuggingFaceH4/ultrafeedback_binarized"
    train_split: str = "train_prefs"
    eval_split: str = "test_prefs"
    prompt_column: str = "prompt"
    n_train_prompts: int = 2000
    n_eval_prompts: int = 200
    multiple_choice: str | None = None  # optional: a save_to_disk folder (question, choices, answer) for retention
    max_new_tokens: int = 512
    device: str | None = None  # auto: cuda if present


PROFILES = ("smoke", "default", "regime", "real", "plan")
# The regime map (notebooks/06_regime.md) is its own profile: it runs the whole pipeline in 9 cells (~30 min), too long
# for `make study`. `smoke` runs every chapter (the regime map on a smoke grid); `default` and `real` every chapter
# but the regime map; `regime` only the regime map, on the default world (whose stages it shares with `default`).
REGIME_CHAPTERS = ("06_regime.md",)


@dataclass
class Profile:
    name: str
    world: WorldConfig | None = None
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    real: RealCheckpoints | None = None
    regime: RegimeConfig | None = None  # the regime map's grid (synthetic world only)
    cache: str = ""  # the pipeline's folder under the runs folder: pipeline-<cache or name>

    def chapters(self) -> list[str]:
        """The chapters this profile executes."""
        if self.name == "smoke":
            return list(chapters())
        if self.name == "regime":
            return [n for n in chapters() if n in REGIME_CHAPTERS]
        if self.name == "plan":
            return []
        return [n for n in chapters() if n not in REGIME_CHAPTERS]


def get_profile(name: str, real_overrides: dict | None = None) -> Profile:
    """A named profile; `real_overrides` set fields of `RealCheckpoints` (model ids or folders, dataset, sizes)."""
    if name == "smoke":
        return Profile("smoke", world=smoke_world_config(), pipeline=smoke_pipeline_config(),
                       regime=smoke_regime_config())  # fmt: skip
    if name in ("default", "regime"):
        return Profile(name, world=WorldConfig(), pipeline=PipelineConfig(), regime=RegimeConfig(), cache="default")
    if name == "plan":  # the analysis plan's worlds and budgets (congkit.worlds); its tables, not chapters yet
        return Profile("plan", world=WorldConfig(), pipeline=PipelineConfig())
    if name == "real":
        real = RealCheckpoints(**check_real(real_overrides or {}))
        pipeline = real_pipeline_config()
        pipeline.sampling.max_new_tokens = real.max_new_tokens
        return Profile("real", pipeline=pipeline, real=real)
    raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")


def real_pipeline_config() -> PipelineConfig:
    """The paper's optimiser settings (Jiang et al., 2025) for 0.5-8B models; one seed, two noise levels by default."""
    from .decoding import DecodingConfig
    from .training import TrainConfig

    return PipelineConfig(
        seeds=[0],
        noise_levels=[0.0, 0.2],
        n_preference_samples=5,
        sampling=DecodingConfig.authors(plausibility_threshold=None, max_new_tokens=512, batch_size=16),
        alpha_sweep=[0.0, 0.25, 0.5, 0.75, 1.0],
        weak_dpo=TrainConfig(
            learning_rate=8e-7, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        strong_sft=TrainConfig(
            learning_rate=1e-5, num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),  # fmt: skip
        wspo=TrainConfig(learning_rate=1e-6, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8),
        cong_dpo=TrainConfig(
            learning_rate=6e-7, beta=0.5, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        gold_dpo=TrainConfig(
            learning_rate=8e-7, beta=0.1, per_device_train_batch_size=4, gradient_accumulation_steps=8
        ),
        eval_samples=1,
    )


def real_setting(real: RealCheckpoints) -> Setting:
    """A `Setting` on real checkpoints: prompts from a dataset (hub id or local folder), a reward model as judge."""
    from .data import load_prompts, load_saved_dataset
    from .scorers import RewardModelScorer

    train = load_prompts(real.prompts, real.train_split, real.prompt_column, real.n_train_prompts)
    evaluation = load_prompts(real.prompts, real.eval_split, real.prompt_column, real.n_eval_prompts)
    return Setting(
        name="real",
        weak_base=real.weak_model,
        strong_base=real.strong_model,
        train_prompts=train,
        eval_prompts=evaluation,
        scorer=RewardModelScorer(real.reward_model, device=real.device),
        multiple_choice=load_saved_dataset(real.multiple_choice) if real.multiple_choice else None,
        device=real.device,
    )


def study_objects(profile: str = "default", runs_dir: str | Path = "runs", progress: bool = True,
                  real: dict | None = None):  # fmt: skip
    """(world or None, setting, pipeline) for a profile; building the world on first use. `real`: overrides of
    `RealCheckpoints` for the real profile (e.g. {"weak_model": "/models/qwen-0.5b"})."""
    prof = get_profile(profile, real)
    runs_dir = Path(runs_dir)
    if prof.real is not None:
        return None, *_pipeline(real_setting(prof.real), prof.pipeline, runs_dir / "real", progress)
    world = build_world(prof.world, root=runs_dir, progress=progress)
    return world, *_pipeline(Setting.from_world(world), prof.pipeline, pipeline_root(prof, runs_dir), progress)


def pipeline_root(prof: Profile, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / f"pipeline-{prof.cache or prof.name}"


def regime_objects(profile: str = "regime", runs_dir: str | Path = "runs", progress: bool = True):
    """(world, grid, {weak pair's name: pipeline}) of the regime map; building the world and the weak bases on first
    use."""
    prof = get_profile(profile)
    if prof.regime is None:
        raise ValueError(f"profile {profile!r} has no regime map: it needs the synthetic world (smoke or regime)")
    prof.regime.validate()
    world = build_world(prof.world, root=runs_dir, progress=progress)
    root = pipeline_root(prof, runs_dir)
    pipes = {w.name: regime_pipeline(world, prof.pipeline, prof.regime, w, root, progress) for w in prof.regime.weak}
    return world, prof.regime, pipes


def _pipeline(setting: Setting, config: PipelineConfig, root: Path, progress: bool):
    return setting, Pipeline(setting, config, root=root, progress=progress)



def unknown_injected_parameters() -> list[str]:
    """Names papermill injected (its cell starts with "# Parameters") that the chapter's own parameters cell (the
    first cell executed) does not declare: papermill only warns about them, and the chapter would run on defaults.
    Read from the kernel's input history (`In`); outside IPython there is nothing to check."""
    try:
        from IPython import get_ipython
    except ImportError:
        return []
    shell = get_ipython()
    cells = [c for c in (shell.user_ns.get("In", []) if shell is not None else []) if c.strip()]
    injected = [c for c in cells if c.lstrip().startswith("# Parameters")]
    if not injected:
        return []
    declared = _assigned_names(cells[0])
    return sorted({n for c in injected for n in _assigned_names(c)} - declared)


def _assigned_names(source: str) -> set[str]:
    import re

    return {m.group(1) for m in re.finditer(r"^(\w+)\s*[:=]", source, re.M)}


def notebook_parameters(nb) -> set[str]:
    """Names a notebook declares in its `parameters` cell."""
    return {n for c in nb.cells if "parameters" in c.metadata.get("tags", []) for n in _assigned_names(c.source)}


def clean_executed(nb, machine_paths: tuple[str, ...] = ()) -> None:
    """What the published page and its downloadable notebook must not show: stderr (progress, warnings, stage lines),
    the injected-parameters cell on the page (each chapter shows its parameters once, as a table), and this
    machine's folders (`machine_paths`, e.g. the checkout and the runs folder: written "" in the injected `runs_dir`,
    which means the project's own runs/ folder, and "." elsewhere)."""
    import re

    def scrub(text: str) -> str:
        for path in sorted(machine_paths, key=len, reverse=True):
            text = text.replace(path, ".")
        return text

    papermill = nb.metadata.get("papermill", {})
    if "runs_dir" in papermill.get("parameters", {}):
        papermill["parameters"]["runs_dir"] = ""
    for key, value in list(papermill.items()):
        if isinstance(value, str):
            papermill[key] = scrub(value)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags:
            cell.source = re.sub(r'^runs_dir = ".*"$', 'runs_dir = ""', cell.source, flags=re.M)
            if "remove-cell" not in tags:
                tags.append("remove-cell")
        cell.source = scrub(cell.source)
        for output in cell.outputs:
            if "text" in output:
                output["text"] = scrub(output["text"])
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    output["data"][kind] = scrub(value)


def _build_replicate(job: tuple) -> tuple[int, float, list[dict]]:
    """One seed's stages, in a build worker (`congkit.workers`): the seed, its seconds and its stage timings."""
    profile, runs_dir, real, seed = job
    start = time.perf_counter()
    _, _, pipe = study_objects(profile, runs_dir, progress=False, real=real)
    settle()
    pipe.replicate(seed)
    return seed, time.perf_counter() - start, pipe.timings


def prebuild(profile: str, runs_dir: str | Path, real: dict | None = None, workers: int = 2) -> None:
    """Build every seed's stages in `workers` processes before the notebooks run (they then find them cached).
    Safe because the cache locks each artifact; the world is built first, once."""
    from .workers import run_in_workers

    _, _, pipe = study_objects(profile, runs_dir, progress=True, real=real)
    seeds = pipe.config.seeds
    print(f"[study] building {len(seeds)} seeds in {workers} processes", file=sys.stderr, flush=True)
    jobs = [(profile, str(runs_dir), real, seed) for seed in seeds]
    results = run_in_workers(_build_replicate, jobs, workers, lambda done, total, r: f"seed {r[0]} ready ({done}/"
                                                                                    f"{total}, {r[1]:.0f} s)")  # fmt: skip
    record_timings(pipe.root / "timings.csv", [*pipe.timings, *(row for r in results for row in r[2])])


# --- building the grid in parallel --------------------------------------------------------------------------------


def _column_job(job: tuple) -> tuple[int, int, float]:
    """One (weak pair, seed) column in a build worker (`congkit.workers`)."""
    profile, runs_dir, weak, seed = job
    start = time.perf_counter()
    world, grid, pipes = regime_objects(profile, runs_dir, progress=False)
    settle()
    column_rows(pipes[weak], grid, weak, seed)
    return weak, seed, time.perf_counter() - start


def prebuild_regime(profile: str, runs_dir: str | Path, workers: int = 2) -> None:
    """Build every (weak pair, seed) column in `workers` processes (the world and the weak bases first, once)."""
    from .workers import run_in_workers

    _, grid, _ = regime_objects(profile, runs_dir, progress=True)
    jobs = [(profile, str(runs_dir), w, s) for s in grid.seeds for w in grid.rows()]
    print(f"[regime] building {len(jobs)} (weak pair, seed) columns in {workers} processes", file=sys.stderr,
          flush=True)  # fmt: skip
    run_in_workers(_column_job, jobs, workers, lambda done, total, r: f"{r[0]}, seed {r[1]} ready "
                                                                      f"({done}/{total}, {r[2]:.0f} s)", "regime")  # fmt: skip


def _plan_job(job: tuple):
    """One unit of the plan's run in a build worker: a world, one method's tuning grid, or one seed of one budget."""
    kind, runs_dir, world, item, budget, config, world_base = job
    from .worlds import plan_pipelines, plan_world_config

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
    """The pre-registered plan (`congkit/analysis_plan.md`): every world, both budgets, in build workers (resumable:
    every stage is cached), then the result tables written to `runs_dir/plan/`. Returns that folder. `config` and
    `world_base` replace the default pipeline and world settings (the tests run it on smoke worlds)."""
    from . import plan
    from .workers import run_in_workers
    from .worlds import BUDGETS, plan_pipelines, plan_tables

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


def run_notebooks(
    profile: str, runs_dir: Path, out_dir: Path, only: list[str] | None = None, real: dict | None = None
) -> dict[str, float]:
    """Execute the chapters (all, or those whose names start with one of `only`) into `out_dir` as .ipynb; the
    seconds each took."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = select_notebooks(only, profile)
    with quiet_environment():  # the kernels inherit it
        return {name: _run_chapter(name, names, profile, runs_dir, out_dir, real) for name in names}


def kernel_environment() -> dict[str, str]:
    """What the chapters' kernels inherit besides `QUIET_ENV`: this congkit first on their import path (a venv's
    editable install may point at another checkout), and its folder, which `notebook_setup` checks."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""), "CONGKIT_CHECKOUT": str(REPO)}


@contextlib.contextmanager
def quiet_environment():
    """`QUIET_ENV` and `kernel_environment()` set for what starts inside the block (kernels), the caller's
    environment restored after it."""
    wanted = {**QUIET_ENV, **kernel_environment()}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_chapter(name: str, names: list[str], profile: str, runs_dir: Path, out_dir: Path, real: dict | None) -> float:
    """Execute one chapter with papermill, strip what the page must not show, write it as .ipynb; its seconds."""
    import jupytext
    import nbformat
    import papermill

    print(f"[study] notebook {names.index(name) + 1}/{len(names)}: {name} (profile={profile})", file=sys.stderr,
          flush=True)  # fmt: skip
    start = time.perf_counter()
    nb = jupytext.read(REPO / "notebooks" / name)
    given = {"profile": profile, "runs_dir": str(Path(runs_dir).resolve()), "real": real or {}}
    declared = notebook_parameters(nb)
    executed = papermill.execute_notebook(
        nb,
        None,
        parameters={k: v for k, v in given.items() if k in declared},
        kernel_name="python3",
        progress_bar=False,
        stderr_file=sys.stderr,  # stage progress lines reach the terminal, not the page
        cwd=str(REPO / "notebooks"),
    )
    clean_executed(executed, (str(Path(runs_dir).resolve()), str(REPO)))
    nbformat.write(executed, out_dir / Path(name).with_suffix(".ipynb").name)
    seconds = time.perf_counter() - start
    print(f"[study]   done in {seconds:.0f} s", file=sys.stderr, flush=True)
    return seconds


def notebook_setup(profile: str, runs_dir: str = "", seed: int | None = None, real: dict | None = None, **chapter):
    """A chapter's first (hidden) cell: check its parameters, make the page quiet, apply the book's figure style,
    and return (world or None, setting, pipeline). `runs_dir` "" means the project's `runs/` folder, wherever the
    notebook is run from."""
    runs_dir = runs_dir or str(DEFAULT_RUNS)
    check_notebook_parameters(profile, runs_dir, seed, real, **chapter)
    check_checkout()
    _quiet_page()
    return study_objects(profile, runs_dir, progress=True, real=real)


def check_checkout(expected: str | None = None) -> None:
    """A chapter executed by a study runs the study's congkit: refuse a kernel that imported another copy."""
    expected = os.environ.get("CONGKIT_CHECKOUT") if expected is None else expected
    if expected and Path(expected).resolve() != REPO:
        raise RuntimeError(f"this chapter's kernel imported congkit from {REPO}, but the study runs the one in "
                           f"{expected}: install that checkout (pip install -e) or run the study from it")  # fmt: skip


def regime_setup(profile: str, runs_dir: str = ""):
    """The regime chapter's first cell: as `notebook_setup`, returning `regime_objects` (world, grid, pipelines)."""
    runs_dir = runs_dir or str(DEFAULT_RUNS)
    check_notebook_parameters(profile, runs_dir)
    _quiet_page()
    return regime_objects(profile, runs_dir, progress=True)


def _quiet_page() -> None:
    """No progress bars, warnings or log lines on the page; the book's figure style."""
    import warnings

    from .plots import use_book_style

    os.environ.update(QUIET_ENV)
    warnings.filterwarnings("ignore")
    _quiet_libraries()
    use_book_style()


def _quiet_libraries() -> None:
    """datasets' and transformers' progress bars and log lines off in this process (they read the environment only
    when imported)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


PLAN_RESULTS = REPO / "results" / "plan"  # the plan profile's committed result tables


def read_plan_results(folder: Path | None = None) -> dict:
    """The plan profile's committed tables (`results/plan/*.csv`) by name; {} when it has none."""
    import pandas as pd

    folder = folder or PLAN_RESULTS
    return {p.stem: pd.read_csv(p) for p in sorted(Path(folder).glob("*.csv"))}


def findings(pipe, pipe_profile: str = "default", table=None) -> dict[str, str]:
    """The introduction's key findings as text, computed from the pipeline's results (`table`, its `run()` if not
    given): n_seeds, verdict_<claim> and estimate_<claim> for every claim, why (the walk from ConG to WSPO in words),
    preconditions_met, unmet_note."""
    from .evaluation import preconditions, verdicts, walk
    from .provenance import SMOKE_NOTICE
    from .tables import best_method, in_words, plan_sentences, why_sentence

    table = pipe.run() if table is None else table
    conditions = preconditions(table, pipe.config)
    out = {"n_seeds": str(table.seed.nunique())}
    for row in verdicts(table, conditions, pipe.config).itertuples():
        key = row.claim.split(".")[0]
        out[f"verdict_{key}"] = row.verdict
        interval = f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}]" if math.isfinite(row.ci_low) else " (no interval)"
        out[f"estimate_{key}"] = f"{row.estimate:+.3f}{interval}"
    steps = walk(table) if "sft_chosen" in pipe.config.methods else None
    out["why"] = why_sentence(steps) if steps is not None else "(no decomposition arms run)"
    carrying = steps[steps.carries].step if steps is not None else []
    out["carries"] = (f"the step {carrying.iloc[0]}" if len(carrying)
                      else "no single step (under the plan's rule)")  # fmt: skip
    out["best_r_pref"] = best_method(table)
    out["in_words"] = in_words(table) if (table.method == "cong").any() else ""
    out["run_note"] = SMOKE_NOTICE if pipe_profile == "smoke" else (
        f"Computed from this run of the {pipe_profile!r} profile: one world, {out['n_seeds']} paired seeds (each seed "
        "reruns every stage from the weak labels on; all share one pretrained base pair and one prompt set).")  # fmt: skip
    planned = plan_sentences(PLAN_RESULTS)
    keys = ("plan_worlds", "plan_fixed", "plan_tuned", "plan_cd")
    out |= {k: planned.get(k, "(no plan results in results/plan)") for k in keys}
    applicable = conditions[conditions.applicable]
    out["preconditions_met"] = f"{int(applicable.met.sum())} of {len(applicable)}"
    unmet = applicable[~applicable.met]
    out["unmet_note"] = ("Not met: " + "; ".join(f"{r.condition} (measured {r.measured:.3f}, required {r.required})"
                                                 for r in unmet.itertuples()) + "." if len(unmet) else "")  # fmt: skip
    return out


def this_run(profile: str, seeds, timings: Path | None = None, **extra):
    """The chapter's "This run" box: profile, seeds, date, commit, packages, machine and, given the run's
    `timings.csv`, its build time (`congkit.provenance`); a smoke run's says its numbers are not findings, a chapter
    of another profile than the book's main one says so."""
    from .provenance import run_facts, this_run_box, timing_summary

    spent = timing_summary(timings) if timings is not None else ""
    return this_run_box(run_facts(profile, seeds, **extra, **({"build time": spent} if spent else {})))


def parameter_table(**params):
    """The chapter's parameters as a small table for the page (folders shown relative to the project)."""
    import pandas as pd

    def show(value):
        if isinstance(value, str) and value.startswith("/"):
            path = Path(value)
            return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
        return value if value not in ("", None, {}) else "(default)"

    table = pd.DataFrame({"value": [str(show(v)) for v in params.values()]}, index=list(params))
    return table.rename_axis("parameter").style.set_caption("This page's parameters")


REFERENCE = REPO / "results" / "reference"  # the committed results of the default profile: what the book shows
REFERENCE_FILES = ("preconditions.csv", "verdicts.csv", "decomposition.csv")  # each of them must be there


def read_reference(reference: Path | None = None) -> dict:
    """The committed reference tables, {file name: DataFrame}. A missing, unreadable or empty one is an error naming
    it (checked before a run, so a run never ends in "matches" against tables that are not there)."""
    import pandas as pd

    tables, reference = {}, REFERENCE if reference is None else reference
    for name in REFERENCE_FILES:
        path = Path(reference) / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reference table missing (restore it from git, or write a new reference "
                                    "with --accept-new-reference)")  # fmt: skip
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a readable CSV table ({str(error).splitlines()[0]})") from None
        if frame.empty:
            raise ValueError(f"{path}: the reference table has no rows")
        tables[name] = frame
    return tables


def compare_with_reference(run_dir: Path, reference: Path | None = None, tolerance: float = 1e-6) -> list[str]:
    """Each difference between a fresh run's result tables and the committed reference ones (`read_reference`) beyond
    float noise (numbers differing by more than `tolerance`, relative or absolute; any text or shape difference): []
    when the run matches. A table the run lacks is a difference."""
    import pandas as pd

    differences = []
    for name, want in read_reference(reference).items():
        got_file = Path(run_dir) / name
        if not got_file.exists():
            differences.append(f"{name}: missing from the run")
            continue
        got = pd.read_csv(got_file)
        if list(want.columns) != list(got.columns) or len(want) != len(got):
            differences.append(f"{name}: columns or rows differ ({list(got.columns)} x {len(got)} vs "
                               f"{list(want.columns)} x {len(want)})")  # fmt: skip
            continue
        for column in want.columns:
            a, b = want[column], got[column]
            if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
                close = np.isclose(a, b, rtol=tolerance, atol=tolerance, equal_nan=True)
            else:
                close = (a.astype(str) == b.astype(str)).to_numpy()
            for row in np.flatnonzero(~close):
                want_value, got_value = (x.iloc[row] for x in (a, b))
                differences.append(f"{name} row {row} {column}: reference {_plain(want_value)}, this run {_plain(got_value)}")
    return differences


def accept_new_reference(run_dir: Path, reference: Path | None = None) -> None:
    """Write the run's result tables as the new reference (each file atomically)."""
    reference = REFERENCE if reference is None else reference
    for name in REFERENCE_FILES:
        source = Path(run_dir) / name
        if not source.is_file():
            raise FileNotFoundError(f"{source}: the run wrote no such table; nothing was accepted")
    for name in REFERENCE_FILES:
        tmp = Path(reference) / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copyfile(Path(run_dir) / name, tmp)
        os.replace(tmp, Path(reference) / name)


def _plain(value) -> str:
    return repr(value.item() if hasattr(value, "item") else value)


COMMITTED_CHAPTERS = REPO / "results" / "chapters"  # executed chapters of profiles `make study` does not run


def fill_missing_chapters(out_dir: Path, committed: Path = COMMITTED_CHAPTERS) -> list[str]:
    """Copy into `out_dir` every committed executed chapter (`results/chapters/*.ipynb`, e.g. the regime profile's
    chapter 6) that `out_dir` lacks, so a fresh clone's `make study` publishes it too; its This run box names the
    profile, date, seeds and commit it came from. A chapter executed here is never replaced. Returns the names."""
    copied = []
    for chapter in sorted(Path(committed).glob("*.ipynb")):
        target = Path(out_dir) / chapter.name
        if not target.exists():
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(chapter, target)
            copied.append(chapter.name)
    return copied


def build_book(book_dir: Path = REPO / "book") -> Path:
    """Jupyter Book 1.x (Sphinx) build of the already executed notebooks: works offline (2.x fetches its theme).

    Built into a temporary folder and swapped in only on success: a failed build leaves the previous HTML intact.
    """
    exe = Path(sys.executable).with_name("jupyter-book")
    remove_dead_runs_leftovers(book_dir)
    tmp = book_dir / f".build-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(book_dir), "--path-output", str(tmp), "--quiet"]
    print("[study] building the book", flush=True)
    try:
        subprocess.run(cmd, check=True, preexec_fn=die_with_parent)
        html = book_dir / "_build" / "html"
        swap_in(tmp / "_build" / "html", html)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return html


REAL_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(RealCheckpoints)}


def parse_real(text: str) -> dict:
    """The --real JSON: an object whose keys are `RealCheckpoints` fields, with values of the field's type."""
    try:
        real = json.loads(text)
    except ValueError as error:
        raise ValueError(f"--real is not valid JSON ({error}): {text!r}") from error
    return check_real(real)


def check_real(real: dict) -> dict:
    """Overrides of `RealCheckpoints`: known fields only, each of the field's type."""
    if not isinstance(real, dict):
        raise ValueError(f"--real must be a JSON object of RealCheckpoints fields, got {type(real).__name__}")
    unknown = sorted(set(real) - set(REAL_FIELD_TYPES))
    if unknown:
        raise ValueError(f"--real: unknown field(s) {unknown}; RealCheckpoints fields: {sorted(REAL_FIELD_TYPES)}")
    for name, value in real.items():
        kind = REAL_FIELD_TYPES[name]
        if "int" in kind and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"--real: {name} must be a positive integer, got {value!r}")
        if "str" in kind and not (isinstance(value, str) or (value is None and "None" in kind)):
            raise ValueError(f"--real: {name} must be a string, got {value!r}")
    return real


def check_notebook_parameters(profile: str, runs_dir: str, seed: int | None = None, real: dict | None = None,
                              **chapter) -> Profile:  # fmt: skip
    """A notebook's first cell: stop at once, with a message naming the parameter, on a value the study cannot use
    (unknown profile, a seed the profile does not run, alpha or lam outside their range, a malformed `real`)."""
    from .inputs import check_int, check_number

    unknown = unknown_injected_parameters()
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}: this chapter declares no such parameter (misspelt?); "
                         "see `papermill --help-notebook`")  # fmt: skip
    if profile not in PROFILES:
        raise ValueError(f"parameter profile={profile!r}: unknown profile; choose one of {PROFILES}")
    if not isinstance(runs_dir, (str, os.PathLike)):
        raise TypeError(f"parameter runs_dir must be a folder path, got {runs_dir!r}")
    if runs_dir and Path(runs_dir).exists() and not Path(runs_dir).is_dir():
        raise ValueError(f"parameter runs_dir {str(runs_dir)!r} is a file, not a folder")
    if real is not None and not isinstance(real, dict):
        raise TypeError(f"parameter real must be a dict of RealCheckpoints fields, got {type(real).__name__} {real!r}")
    if real and profile != "real":
        raise ValueError(f"parameter real is given but profile {profile!r} ignores it; use profile 'real'")
    prof = get_profile(profile, real or {})
    if seed is not None:
        check_int("parameter seed", seed, 0)
        if seed not in prof.pipeline.seeds:
            raise ValueError(f"parameter seed={seed}: profile {profile!r} runs seeds {prof.pipeline.seeds} only")
    for name in ("alpha", "lam"):
        if name in chapter:
            check_number(f"parameter {name}", chapter[name], 0.0, 1.0, low_open=name == "lam")
    for name, value in chapter.items():
        if name.startswith("n_"):
            check_int(f"parameter {name}", value, 1)
    return prof


def select_notebooks(only: list[str] | None, profile: str | None = None) -> list[str]:
    """The chapters to execute: those of `profile` (all if None), narrowed to names starting with one of `only`."""
    pool = get_profile(profile).chapters() if profile else list(chapters())
    if only is None:
        return pool
    if not only or not all(isinstance(o, str) and o.strip() for o in only):
        raise ValueError("--only needs at least one non-empty notebook name prefix, e.g. --only 05")
    unmatched = [o for o in only if not any(n.startswith(o) for n in pool)]
    if unmatched:
        raise ValueError(f"--only {unmatched} matches no notebook of profile {profile!r}; its notebooks: {pool}")
    return [n for n in pool if any(n.startswith(o) for o in only)]


def remove_dead_runs_leftovers(book: Path) -> list[Path]:
    """Delete the `.notebooks-tmp-<pid>-*` and `.build-tmp-<pid>-*` folders of study runs that are no longer alive
    (a killed run's leftovers, 14 MB a book build); a live concurrent run's folder is kept. Returns what was removed."""
    removed = []
    for prefix in (".notebooks-tmp-", ".build-tmp-"):
        for folder in book.glob(f"{prefix}*"):
            pid = folder.name.removeprefix(prefix).split("-")[0]
            if not pid.isdigit() or not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def die_with_parent() -> None:
    """In a child process before it runs (`preexec_fn`): on Linux, ask the kernel to end it with SIGTERM when the
    study that started it dies (killed or not), so no `jupyter-book` build outlives the study. Elsewhere nothing."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the ConG study notebooks and build the book.")
    parser.add_argument("--profile", default="default", choices=PROFILES)
    parser.add_argument("--runs", default=str(REPO / "runs"), help="cache folder for every stage")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 05")
    parser.add_argument("--no-book", action="store_true", help="execute the notebooks, skip the book build")
    parser.add_argument("--workers", type=int, default=2, help="processes that build the seeds before the notebooks")
    parser.add_argument("--accept-new-reference", action="store_true",
                        help="default profile: write this run's result tables as the new results/reference/ instead "
                             "of comparing with it")  # fmt: skip
    parser.add_argument("--real", default="{}", help='profile real: JSON of RealCheckpoints fields, e.g. '
                        '\'{"weak_model": "/models/Qwen2.5-0.5B-Instruct"}\'')  # fmt: skip
    args = parser.parse_args(argv)
    # every argument is checked before any file is touched
    try:
        real, names = parse_real(args.real), select_notebooks(args.only, args.profile)
    except ValueError as error:
        parser.error(str(error))
    if real and args.profile != "real":
        parser.error(f"--real is given but profile {args.profile!r} ignores it; use --profile real")
    if Path(args.runs).exists() and not Path(args.runs).is_dir():
        parser.error(f"--runs {args.runs!r} is a file, not a folder")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.profile == "default" and not args.accept_new_reference:
        try:  # the comparison at the end needs every reference table: checked before any work
            read_reference()
        except (OSError, ValueError) as error:
            parser.error(str(error))
    remove_dead_runs_leftovers(REPO / "book")
    # the terminal shows one line per stage and per finished job, no trainer dicts or progress bars (set before the
    # libraries read them; the build workers and kernels inherit them)
    os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    _quiet_libraries()
    start = time.perf_counter()
    phases: dict[str, float] = {}  # the final time table: seconds per phase of this run
    if args.profile == "plan":  # the analysis plan's run: result tables, no chapters yet
        print(f"[study] plan results: {run_plan(args.runs, args.workers)}")
        print(f"[study] total {time.perf_counter() - start:.0f} s")
        return
    out_dir = REPO / "book" / "notebooks"
    # executed into a temporary folder; the published notebooks are replaced only when every notebook succeeded
    tmp = REPO / "book" / f".notebooks-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if args.workers > 1 and args.profile != "real":
            if any(n not in REGIME_CHAPTERS for n in names):
                prebuild(args.profile, Path(args.runs).resolve(), real, args.workers)
            if any(n in REGIME_CHAPTERS for n in names):
                prebuild_regime(args.profile, Path(args.runs).resolve(), args.workers)
            phases["world and stages (build workers)"] = time.perf_counter() - start
        phases["notebooks"] = sum(run_notebooks(args.profile, Path(args.runs), tmp, names, real=real).values())
        if names != list(chapters()):  # a part of the book: the other executed chapters stay as they are
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in names:
                executed = Path(name).with_suffix(".ipynb").name
                os.replace(tmp / executed, out_dir / executed)
        else:
            swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_book:
        for name in fill_missing_chapters(out_dir):
            print(f"[study] {name}: the committed run's chapter ({COMMITTED_CHAPTERS.relative_to(REPO)})", flush=True)
        book_start = time.perf_counter()
        html = build_book()
        phases["book"] = time.perf_counter() - book_start
        print(f"[study] book: {html / 'index.html'}")
    differences = []
    if args.profile == "default" and args.accept_new_reference:
        accept_new_reference(pipeline_root(get_profile(args.profile), args.runs))
        print(f"[study] wrote this run's tables as the new reference results ({REFERENCE}/, "
              "--accept-new-reference): commit them with the reason")  # fmt: skip
    elif args.profile == "default":
        differences = compare_with_reference(pipeline_root(get_profile(args.profile), args.runs))
        print("[study] matches the reference results" if not differences else
              "[study] differs from the reference results (results/reference/):\n  " + "\n  ".join(differences))
    phases["total"] = time.perf_counter() - start
    print(time_table(phases, pipeline_root(get_profile(args.profile), args.runs) / "timings.csv"))
    if differences:
        raise SystemExit(1)


def time_table(phases: dict[str, float], timings: Path) -> str:
    """The terminal's last lines: seconds per phase of this run, then per stage of the artifacts in `timings.csv`
    (their build seconds summed over the build workers, so they can exceed the phase's wall time)."""
    from .provenance import stage_seconds

    lines = ["[study] time table (seconds)"] + [f"[study]   {name:<34} {seconds:8.0f}" for name, seconds in phases.items()]
    stages = stage_seconds(timings)
    if stages is not None:
        lines.append(f"[study]   stage builds ({timings.name}, summed over workers):")
        lines += [f"[study]     {stage:<20} {int(row['count']):4d} x {row['sum']:8.0f}" for stage, row in stages.iterrows()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
