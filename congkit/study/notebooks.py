"""The chapters, executed by papermill: listed once in the book's `_toc.yml`, read by jupytext, run with their
parameters checked, in a kernel that imports this checkout, and scrubbed of machine paths before publishing."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from congkit.study.paths import REPO, chapters
from congkit.study.profiles import PROFILES, Profile, get_profile
from congkit.study.workers import QUIET_ENV


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


def check_notebook_parameters(profile: str, runs_dir: str, seed: int | None = None, real: dict | None = None,
                              **chapter) -> Profile:  # fmt: skip
    """A notebook's first cell: stop at once, with a message naming the parameter, on a value the study cannot use
    (unknown profile, a seed the profile does not run, alpha or lam outside their range, a malformed `real`)."""
    from congkit.inputs import check_int, check_number

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
