"""The whole study on the smoke profile: papermill runs every chapter, Jupyter Book renders them, a browser looks.

What a reader of the published book must see, checked on the built pages: no progress bars, warnings, stage lines or
machine paths; every chapter under 15,000 px at 1280 px wide; figures as SVG (or >= 2x raster); the introduction's
key-findings box equal to the study's verdicts.csv."""

import json
import re
import shutil
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from congkit.study import REPO, build_book, chapters, run_notebooks
from congkit.study.tables import signed

NOTEBOOKS = chapters()

pytestmark = pytest.mark.slow
NOISE = [r"it/s\]", r"examples/s", r"\d+%\|", "Warning", r"\[congkit\]", "Loading weights", "/tmp/", "/root/", "/work/"]


@pytest.fixture(scope="module")
def built_book(smoke_world, tmp_path_factory):
    book = tmp_path_factory.mktemp("study") / "book"
    shutil.copytree(REPO / "book", book, ignore=shutil.ignore_patterns("_build", "notebooks"))
    # the smoke world (and the smoke pipeline's stages, if test_stages ran) are reused from the shared cache
    run_notebooks("smoke", smoke_world.path.parent, book / "notebooks")
    return build_book(book), book, smoke_world.path.parent / "pipeline-smoke"


def test_every_chapter_executed_without_error_and_without_stderr(built_book):
    _, book, _ = built_book
    assert [n.removesuffix(".md") for n in NOTEBOOKS][0] == "00_introduction"
    for name in NOTEBOOKS:
        nb = nbformat.read(book / "notebooks" / name.replace(".md", ".ipynb"), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        injected = [c for c in code if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and all("remove-cell" in c.metadata["tags"] for c in injected), name
        assert all(c.get("execution_count") for c in code), f"{name}: a cell did not run"
        outputs = [o for c in code for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert not [o for o in outputs if o.get("name") == "stderr"], name
        assert str(REPO) not in nbformat.writes(nb) and "/tmp/" not in nbformat.writes(nb), name  # no machine paths


def test_pages_are_clean(built_book):
    html, _, _ = built_book
    for name in NOTEBOOKS:
        page = (html / "notebooks" / name.replace(".md", ".html")).read_text()
        text = re.sub(r"<script.*?</script>|<style.*?</style>", "", page, flags=re.S)
        text = re.sub(r"<[^>]+>", " ", text)
        for pattern in NOISE:
            assert not re.search(pattern, text), (name, pattern, re.search(f".{{60}}{pattern}.{{60}}", text))
    results = (html / "notebooks" / "05_results.html").read_text()
    assert "Preconditions" in results and "Verdicts" in results and "untestable here" in results
    regime = re.sub(r"<[^>]+>", " ", (html / "notebooks" / "06_regime.html").read_text())
    assert "What the grid shows" in regime and "rule of thumb" in regime and "Spearman" in regime
    assert not re.search(r"\bnan\b", regime), "a regime table has an empty (NaN) entry"
    assert (html / "real_checkpoints.html").exists() and (html / "bibliography.html").exists()
    assert (html / "_static" / "mathjax" / "tex-mml-chtml.js").exists()  # formulas render offline


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="Chromium not installed")
def test_book_renders_in_a_browser(built_book, tmp_path):
    html, _, pipeline_root = built_book
    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "screenshot_book.py"), "--book", str(html), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    for name, page in report.items():
        assert page["height"] <= 15_000, (name, page["height"])
        assert page["loaded"] == page["images"], name
        assert page["svg"] == page["images"] or page["min_raster_scale"] >= 2, name
        assert page["too_wide"] == [], (name, page["column"], page["too_wide"])  # every table and figure fits
        assert not page["nan"], name
        assert page["tables_not_numbered_as_tables"] == [] and page["figures_not_numbered_as_figures"] == [], name
        assert page["uncaptioned"] == 0 and page["loose_images"] == 0, name  # every figure numbered and captioned
        assert page["this_run"] == 1, name  # the provenance box, once
        assert "Smoke run: these numbers are not findings" in page["text"], name
    index = report["index.html"]
    assert "Contrastive Weak-to-Strong" in index["title"] and index["mathjax"] > 0
    verdicts = pd.read_csv(pipeline_root / "verdicts.csv")
    box = index["findings"]
    assert "Key findings" in box
    for row in verdicts.itertuples():
        assert row.verdict in box and signed(row.estimate, 3) in box, row.claim  # the book's minus sign
    answer = verdicts[verdicts.claim.str.startswith("3a.")].iloc[0]  # the one-minute box holds the answer first
    assert index["summary"].startswith("In one minute") and answer.verdict in index["summary"]
    assert signed(answer.estimate, 3) in index["summary"]
    phone = subprocess.run(
        [sys.executable, str(REPO / "tools" / "screenshot_book.py"), "--book", str(html), "--out", str(tmp_path / "390"),
         "--width", "390"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert phone.returncode == 0, phone.stdout + phone.stderr
    for name, page in json.loads(phone.stdout).items():  # a phone: no page scrolls sideways, nothing passes the column
        assert page["page_width"] <= page["viewport"] and page["too_wide"] == [], (name, page["page_width"])
        assert page["min_figure_text_px"] is None or page["min_figure_text_px"] >= 9, (name, page["min_figure_text_px"])
    results = report["notebooks/05_results.html"]
    assert "Results" in results["h1"] and results["images"] >= 3 and results["svg"] == results["images"]  # bars, walk, noise
