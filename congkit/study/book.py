"""The offline Jupyter Book build: executed chapters in `book/notebooks/` (committed ones filling in for profiles
`make study` does not run), leftovers of dead runs removed, HTML into `book/_build/html`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from congkit.pipeline.cache import swap_in
from congkit.study.paths import REPO
from congkit.study.workers import die_with_parent, process_alive

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


def remove_dead_runs_leftovers(book: Path) -> list[Path]:
    """Delete the `.notebooks-tmp-<pid>-*` and `.build-tmp-<pid>-*` folders of study runs that are no longer alive
    (a killed run's leftovers, 14 MB a book build); a live concurrent run's folder is kept. Returns what was removed."""
    removed = []
    for prefix in (".notebooks-tmp-", ".build-tmp-"):
        for folder in book.glob(f"{prefix}*"):
            pid = folder.name.removeprefix(prefix).split("-")[0]
            if not pid.isdigit() or not process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed
