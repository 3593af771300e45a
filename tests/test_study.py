"""The whole study on the smoke profile: papermill runs every notebook, Jupyter Book renders them, a browser looks."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from congkit.study import NOTEBOOKS, REPO, build_book, run_notebooks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_book(smoke_world, tmp_path_factory):
    book = tmp_path_factory.mktemp("study") / "book"
    shutil.copytree(REPO / "book", book, ignore=shutil.ignore_patterns("_build", "notebooks"))
    # the smoke world (and the smoke pipeline's stages, if test_pipeline ran) are reused from the shared cache
    run_notebooks("smoke", smoke_world.path.parent, book / "notebooks")
    return build_book(book), book


def test_every_notebook_executed_without_error(built_book):
    _, book = built_book
    for name in NOTEBOOKS:
        nb = nbformat.read(book / "notebooks" / name, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in code), name
        assert all(c.get("execution_count") for c in code), f"{name}: a cell did not run"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[:1]}"


def test_book_has_one_page_per_notebook_and_figures(built_book):
    html, _ = built_book
    for name in NOTEBOOKS:
        page = html / "notebooks" / name.replace(".ipynb", ".html")
        assert page.exists(), page
    results = (html / "notebooks" / "05_results.html").read_text()
    assert len(re.findall(r"<img[^>]+src=\"[^\"]+\.png\"", results)) >= 4
    assert "Verdicts" in results and "WeakSFT" in results
    for name in ("02_weak_alignment", "03_contrastive_sampling", "04_strong_training"):
        assert re.search(r"<img[^>]+\.png", (html / "notebooks" / f"{name}.html").read_text()), name
    assert "intro.html" in (html / "index.html").read_text()  # jupyter-book redirects index to the root page
    index = (html / "intro.html").read_text()
    assert "Contrastive Weak-to-Strong" in index
    assert (html / "real_checkpoints.html").exists() and (html / "bibliography.html").exists()
    assert (html / "_static" / "mathjax" / "tex-mml-chtml.js").exists()  # formulas render offline


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="Chromium not installed")
def test_book_renders_in_a_browser(built_book, tmp_path):
    html, _ = built_book
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "screenshot_book.py"), "--book", str(html), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    index, results = report["index.html"], report["notebooks/05_results.html"]
    assert "Contrastive Weak-to-Strong" in index["title"]
    assert index["images"] >= 1 and index["loaded"] == index["images"]
    assert "Results" in results["h1"] and results["images"] >= 4 and results["loaded"] == results["images"]
    assert index["mathjax"] > 0  # MathJax typeset the introduction's formulas from the local copy
    assert Path(results["screenshot"]).stat().st_size > 10_000
