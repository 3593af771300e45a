"""What a page was computed from: the profile, its seeds, the run date, the commit, the package versions and the
machine. Every chapter shows it in a "This run" box at its top (`this_run_box`); a smoke run's box says its numbers are
not findings, and a chapter built by another profile than the book's main one says so.

    facts = run_facts("default", seeds=range(20))
    this_run_box(facts)  # an HTML admonition for the page
"""

from __future__ import annotations

import datetime
import html
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout: congkit/pipeline/provenance.py -> ../../
PACKAGES = ("congkit", "torch", "transformers", "trl", "datasets")
MAIN_PROFILE = "default"  # the profile `make study` runs: chapters 0-5 of the published book
SMOKE_NOTICE = "Smoke run: these numbers are not findings (tiny models, few seeds; a test of the code, not a study)."


def commit(repo: Path = REPO) -> str:
    """The checkout's short commit, with "+ local changes" when tracked files differ from it; "unknown (not a git
    checkout)" outside git, and "unknown (inside another repository ...)" for a copy lying in another repository's
    work tree (whose commit is not this code's)."""
    try:
        top = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
        if Path(top).resolve() != Path(repo).resolve():
            return f"unknown (not a git checkout: inside another repository, {top})"
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} + local changes" if dirty else head


def versions(packages=PACKAGES) -> dict[str, str]:
    """Installed versions of the packages the numbers depend on ("not installed" where absent)."""
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def gpu_name() -> str:
    """The first GPU's name, or "" when torch sees none (or is not installed)."""
    try:
        import torch
    except ImportError:
        return ""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def machine(gpu: str | None = None) -> str:
    """CPU cores, memory and GPU of this machine, in words. `gpu`: the GPU's name ("" for none); None detects it
    (`gpu_name`), so the tests can force both branches."""
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    gpu = gpu_name() if gpu is None else gpu
    return f"{os.cpu_count()} CPU cores ({platform.machine()}){memory}, {gpu or 'no GPU'}"


def run_facts(profile: str, seeds, date: datetime.date | None = None, **extra) -> dict[str, str]:
    """The facts the "This run" box shows, as text: profile, seeds, date (UTC), commit, packages, machine, and any
    `extra` (e.g. what the chapter's grid is)."""
    seeds = list(seeds)
    shown = f"{len(seeds)} ({seeds[0]}–{seeds[-1]})" if len(seeds) > 3 else f"{len(seeds)} ({', '.join(map(str, seeds))})"
    return {
        "profile": profile,
        "seeds": shown,
        "run date": str(date or datetime.datetime.now(datetime.UTC).date()),
        "commit": commit(),
        "packages": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "machine": machine(),
        **{k: str(v) for k, v in extra.items()},
    }


TIMING_COLUMNS = ["stage", "artifact", "seed", "method", "eps", "seconds"]


def read_timings(path: Path):
    """`timings.csv` as a table (columns `TIMING_COLUMNS`), None when there is no such file; a file that is not such
    a table (empty, garbage, a column missing, seconds that are not numbers) is a one-line error naming it."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a timings table ({str(error).splitlines()[0]}); move it away and the next run "
                         "starts a new one") from None  # fmt: skip
    missing = [c for c in TIMING_COLUMNS if c not in frame.columns]
    if missing or pd.to_numeric(frame["seconds"], errors="coerce").isna().any():
        problem = f"columns {missing} missing" if missing else "seconds that are not numbers"
        raise ValueError(f"{path}: not a timings table ({problem}); move it away and the next run starts a new one")
    return frame


def stage_seconds(path: Path):
    """`timings.csv` (stage, artifact, seed, method, eps, seconds) per stage: artifacts built (`count`) and their
    seconds (`sum`), longest first; None when there is no such file."""
    frame = read_timings(path)
    if frame is None:
        return None
    return frame.groupby("stage")["seconds"].agg(["count", "sum"]).sort_values("sum", ascending=False)


def timing_summary(path: Path) -> str:
    """`timings.csv` in one line: the total build time and the three stages that took most of it; "" when there is
    no such file."""
    stages = stage_seconds(path)
    total = float(stages["sum"].sum()) if stages is not None else 0.0
    if total <= 0:
        return ""
    top = ", ".join(f"{stage} {seconds / total:.0%}" for stage, seconds in stages["sum"].head(3).items())
    return f"{total / 60:.0f} min of stage builds (one core each); most in {top}"


def notices(profile: str) -> list[str]:
    """What the box must say before the facts: a smoke run is no finding; a chapter from another profile than the
    book's main one says where it comes from."""
    if profile == "smoke":
        return [SMOKE_NOTICE]
    if profile != MAIN_PROFILE:
        return [f"This chapter comes from the {profile!r} profile (make study PROFILE={profile}), run separately "
                f"from the {MAIN_PROFILE!r} profile's chapters; its date and seeds are below."]  # fmt: skip
    return []


def this_run_box(facts: dict[str, str]):
    """The "This run" admonition as HTML (a warning under smoke, a note otherwise) for the page."""
    from IPython.display import HTML

    said = notices(facts["profile"])
    kind = "warning" if facts["profile"] == "smoke" else "note"
    lead = "".join(f"<p><strong>{html.escape(n)}</strong></p>" for n in said)
    rows = "".join(f"<li><em>{html.escape(k)}</em>: {html.escape(v)}</li>" for k, v in facts.items())
    return HTML(f'<div class="admonition {kind} this-run"><p class="admonition-title">This run</p>{lead}'
                f"<ul>{rows}</ul></div>")  # fmt: skip
