"""What a chapter calls: its set-up (`notebook_setup`: parameters checked, progress and warnings silenced, the
world, setting and pipeline returned), the findings in words, the *This run* box and its parameter table."""

from __future__ import annotations

import math
import os
from pathlib import Path

from congkit.study.notebooks import check_notebook_parameters
from congkit.study.paths import DEFAULT_RUNS, REPO
from congkit.study.profiles import regime_objects, study_objects
from congkit.study.workers import QUIET_ENV


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

    from congkit.study.plots import use_book_style

    os.environ.update(QUIET_ENV)
    warnings.filterwarnings("ignore")
    quiet_libraries()
    use_book_style()


def quiet_libraries() -> None:
    """datasets' and transformers' progress bars and log lines off in this process (they read the environment only
    when imported)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


PLAN_RESULTS = REPO / "results" / "plan"  # the plan profile's committed result tables
PLAN2_RESULTS = REPO / "results" / "plan2"  # the plan2 profile's (analysis plan 2: is it the world?)


def read_plan_results(folder: Path | None = None) -> dict:
    """The plan profile's committed tables (`results/plan/*.csv`) by name; {} when it has none."""
    import pandas as pd

    folder = folder or PLAN_RESULTS
    return {p.stem: pd.read_csv(p) for p in sorted(Path(folder).glob("*.csv"))}


MECHANISM_STEPS = {  # the introduction's four steps from ConG to WSPO: (key, better, worse)
    "step_dpo": ("cong", "cong_s"), "step_data": ("sft_chosen", "cong_s"), "step_match": ("wspo_b10", "sft_chosen"),
    "step_amplify": ("wspo", "wspo_b10")}  # fmt: skip


def mechanism_steps(table) -> dict[str, str]:
    """Each of `MECHANISM_STEPS` as "estimate [95% CI]" of the paired R_pref difference over seeds at the clean
    setting ("(not run)" when an arm is missing): ConG's DPO stage, the data, matching the weak log-ratio (WSPO at
    beta 1 over SFT on the same data), amplifying it (beta 0.1 over beta 1)."""
    from congkit.pipeline.evaluation import clean_eps, mean_ci, paired_differences, per_seed

    eps, out = clean_eps(table), {}
    for key, (a, b) in MECHANISM_STEPS.items():
        diffs = paired_differences(per_seed(table, a, "r_pref", eps), per_seed(table, b, "r_pref", eps))
        estimate, lo, hi = mean_ci(diffs) if len(diffs) else (math.nan,) * 3
        out[key] = f"{estimate:+.3f} [{lo:+.3f}, {hi:+.3f}]" if len(diffs) > 1 else "(not run)"
    return out


def findings(pipe, pipe_profile: str = "default", table=None) -> dict[str, str]:
    """The introduction's key findings as text, computed from the pipeline's results (`table`, its `run()` if not
    given): n_seeds, verdict_<claim> and estimate_<claim> for every claim, why (the walk from ConG to WSPO in words),
    preconditions_met, unmet_note."""
    from congkit.pipeline.evaluation import claim4_parts, preconditions, verdicts, walk
    from congkit.pipeline.provenance import SMOKE_NOTICE
    from congkit.study.tables import (
        best_method,
        header,
        in_words,
        interval_text,
        plan2_sentences,
        plan_sentences,
        why_sentence,
    )

    table = pipe.run() if table is None else table
    conditions = preconditions(table, pipe.config)
    out = {"n_seeds": str(table.seed.nunique())}
    for row in verdicts(table, conditions, pipe.config).itertuples():
        key = row.claim.split(".")[0]
        out[f"verdict_{key}"] = row.verdict
        out[f"estimate_{key}"] = interval_text(row)
    out |= mechanism_steps(table)
    out["claim4_parts"] = "; ".join(f"{header(m)} {e:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                                    for m, (e, lo, hi) in claim4_parts(table).items())  # fmt: skip
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
    keys = ("plan_worlds", "plan_fixed", "plan_tuned", "plan_cd", "plan_verdicts")
    out |= {k: planned.get(k, "(no plan results in results/plan)") for k in keys}
    answered = plan2_sentences(PLAN2_RESULTS)  # chapter 7: is it the world?
    keys = [f"plan2_{level}" for level in ("original", "spread", "overshoot")] + [
        f"plan2_{level}_{p}" for level in ("original", "spread", "overshoot") for p in ("p1", "p2", "p3", "p4")]
    out |= {k: answered.get(k, "(no plan-2 results in results/plan2)") for k in [*keys, "plan2_capped"]}
    applicable = conditions[conditions.applicable]
    out["preconditions_met"] = f"{int(applicable.met.sum())} of {len(applicable)}"
    unmet = applicable[~applicable.met]
    out["unmet_note"] = ("Not met: " + "; ".join(f"{r.condition} (measured {r.measured:.3f}, required {r.required})"
                                                 for r in unmet.itertuples()) + "." if len(unmet) else "")  # fmt: skip
    return out


def this_run(profile: str, seeds, timings: Path | None = None, **extra):
    """The chapter's "This run" box: profile, seeds, date, commit, packages, machine and, given the run's
    `timings.csv`, its build time (`congkit.pipeline.provenance`); a smoke run's says its numbers are not findings, a chapter
    of another profile than the book's main one says so."""
    from congkit.pipeline.provenance import run_facts, this_run_box, timing_summary

    spent = timing_summary(timings) if timings is not None else ""
    return this_run_box(run_facts(profile, seeds, **extra, **({"build time": spent} if spent else {})))


def page_parameters(**params) -> str:
    """The chapter's own parameters as one line of the "This run" box (`this_run(..., parameters=...)`): `name value`
    pairs, folders shown relative to the project, an empty value as "(default)"."""

    def show(value):
        if isinstance(value, str) and value.startswith("/"):
            path = Path(value)
            return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
        return value if value not in ("", None, {}) else "(default)"

    return ", ".join(f"{name.replace('_', ' ')} {show(value)}" for name, value in params.items())
