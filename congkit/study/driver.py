"""The study: named parameter profiles, the notebooks run by papermill, and the offline Jupyter Book build.

    python -m congkit.study --profile smoke|default|real [--runs runs] [--no-book]

The chapters are MyST Markdown notebooks (`notebooks/*.md`, paired by jupytext), listed once, in the book's
`_toc.yml`. Each is read by jupytext, executed by papermill with its parameters (`profile`, `runs_dir`, and its own)
and written to `book/notebooks/`; the book is then built from them with execution off, into `book/_build/html`.
Every notebook starts with `notebook_setup(...)`, which checks the parameters, silences progress bars and warnings
(the published pages show none) and returns the world, setting and pipeline. Stage progress goes to stderr, which
the terminal running `make study` shows and the book drops. Stages are cached under `runs_dir`, so rerunning one
notebook recomputes nothing that is already there."""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid
from pathlib import Path

from congkit.pipeline.cache import swap_in
from congkit.study.book import COMMITTED_CHAPTERS, build_book, fill_missing_chapters, remove_dead_runs_leftovers
from congkit.study.chapter_setup import quiet_libraries
from congkit.study.notebooks import chapters, run_notebooks, select_notebooks
from congkit.study.paths import REPO
from congkit.study.plan2 import run_plan2
from congkit.study.prebuild import prebuild, prebuild_regime, run_plan
from congkit.study.profiles import PROFILES, REGIME_CHAPTERS, get_profile, parse_real, pipeline_root
from congkit.study.reference import REFERENCE, accept_new_reference, compare_with_reference, read_reference
from congkit.study.workers import QUIET_ENV


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
            read_reference(REFERENCE)
        except (OSError, ValueError) as error:
            parser.error(str(error))
    remove_dead_runs_leftovers(REPO / "book")
    # the terminal shows one line per stage and per finished job, no trainer dicts or progress bars (set before the
    # libraries read them; the build workers and kernels inherit them)
    os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})
    quiet_libraries()
    start = time.perf_counter()
    phases: dict[str, float] = {}  # the final time table: seconds per phase of this run
    if args.profile in ("plan", "plan2"):  # a pre-registered plan's run: result tables, no chapters yet
        tables = run_plan(args.runs, args.workers) if args.profile == "plan" else run_plan2(args.runs, args.workers)
        print(f"[study] {args.profile} results: {tables}")
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
        accept_new_reference(pipeline_root(get_profile(args.profile), args.runs), REFERENCE)
        print(f"[study] wrote this run's tables as the new reference results ({REFERENCE}/, "
              "--accept-new-reference): commit them with the reason")  # fmt: skip
    elif args.profile == "default":
        differences = compare_with_reference(pipeline_root(get_profile(args.profile), args.runs), REFERENCE)
        print("[study] matches the reference results" if not differences else
              "[study] differs from the reference results (results/reference/):\n  " + "\n  ".join(differences))
    phases["total"] = time.perf_counter() - start
    print(time_table(phases, pipeline_root(get_profile(args.profile), args.runs) / "timings.csv"))
    if differences:
        raise SystemExit(1)


def time_table(phases: dict[str, float], timings: Path) -> str:
    """The terminal's last lines: seconds per phase of this run, then per stage of the artifacts in `timings.csv`
    (their build seconds summed over the build workers, so they can exceed the phase's wall time)."""
    from congkit.pipeline.provenance import stage_seconds

    lines = ["[study] time table (seconds)"] + [f"[study]   {name:<34} {seconds:8.0f}" for name, seconds in phases.items()]
    stages = stage_seconds(timings)
    if stages is not None:
        lines.append(f"[study]   stage builds ({timings.name}, summed over workers):")
        lines += [f"[study]     {stage:<20} {int(row['count']):4d} x {row['sum']:8.0f}" for stage, row in stages.iterrows()]
    return "\n".join(lines)


