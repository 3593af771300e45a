"""The book's typesetting: glued tables numbered and aligned as tables, figure text legible on a phone, sentences that
say what the data shows."""

import re

import numpy as np
import pandas as pd
import pytest
from docutils import nodes
from docutils.frontend import get_default_settings
from docutils.parsers.rst import Parser
from docutils.utils import new_document

from congkit.study import plots
from congkit.study.sphinx_tables import TableFigure, is_table
from congkit.study.tables import cell_style, signed, typeset, zero_preference_note


def test_numbers_right_on_one_line_and_text_left():
    right = "text-align: right; white-space: nowrap"
    for number in (0.5, 3, np.float64(-1.25), "+0.108 [+0.081, +0.136]", "−0.023", "12%", ".5"):
        assert cell_style(number) == right, number
    for number in ("0.45\u00a0±0.02", "+0.108 [+0.081, +0.136] t [+0.036, +0.180]", "(0.5, 1)"):
        assert cell_style(number) == right, number
    for text in ("holds", "WSPO", "Answer: 9 [1.00]", True, None, "(default)", "1. the weak pair's implicit reward",
                 "3a. ConG beats the best baseline", "width 32, ε = 0.4", "nan"):
        assert cell_style(text) == "text-align: left", text


def test_typeset_aligns_every_cell_and_refuses_a_second_caption():
    frame = pd.DataFrame({"method": ["WSPO", "ConG"], "R_pref": [0.9, 0.8]})
    html = typeset(frame).to_html()
    rules = dict(re.findall(r"(#T_\w+_row0_col\d)[^{]*\{([^}]*)\}", html))
    number, text = (next(v for k, v in rules.items() if k.endswith(c)) for c in ("col1", "col0"))
    assert "text-align: right" in number and "white-space: nowrap" in number
    assert "text-align: left" in text and "nowrap" not in text
    assert "R<sub>pref</sub>" in html  # the book's notation in the header
    with pytest.raises(ValueError, match="caption"):
        typeset(frame.style.set_caption("a second caption"))


def _figure(*children) -> nodes.figure:
    return nodes.figure("", *children)


def test_a_figure_holding_a_table_is_a_table_and_one_holding_an_image_is_not():
    assert is_table(_figure(nodes.raw("", "<table><tr><td>1</td></tr></table>", format="html")))
    assert is_table(_figure(nodes.table()))
    assert not is_table(_figure(nodes.image(uri="a.svg")))
    assert not is_table(_figure(nodes.image(uri="a.svg"), nodes.raw("", "<table></table>", format="html")))
    assert not is_table(_figure(nodes.paragraph(text="no table here")))


def test_the_transform_numbers_glued_tables_as_tables_with_the_caption_first():
    from congkit.study.sphinx_tables import GluedTablesAsTables

    document = new_document("test", get_default_settings(Parser))
    table = _figure(nodes.raw("", "<table></table>", format="html"), nodes.caption(text="Table's caption"))
    plot = _figure(nodes.image(uri="a.svg"), nodes.caption(text="Plot's caption"))
    document += [table, plot]
    transform = GluedTablesAsTables(document)
    transform.apply()
    first, second = document.children
    assert type(first) is TableFigure and isinstance(first.children[0], nodes.caption)
    assert "table-figure" in first["classes"]
    assert type(second) is nodes.figure and isinstance(second.children[-1], nodes.caption)


def test_signed_numbers_use_a_true_minus():
    assert signed(-0.123) == "\u22120.12" and signed(0.3) == "+0.30" and signed(-1.0, 3) == "\u22121.000"


def test_the_lowest_box_sentence_says_what_the_pool_shows():
    pool = pd.DataFrame({
        "r_pref": [0.0, 0.0, 1.0, 1.0],
        "response": ["a b c d e f", "a b c d e f g h", "Answer: 9", "Answer: 7"],
        "implicit": [3.0, 4.0, 1.0, 2.0],
        "implicit_mean": [0.5, 0.5, 0.6, 0.7],
    })  # fmt: skip
    note = zero_preference_note(pool)
    assert note.startswith("2 of 4 samples score $R_{pref}$ 0")
    assert "+3.50 nats against +1.50" in note and "7 words long on median against 2" in note
    assert "per token they score lower" in note  # 0.5 < 0.65: the sum's length, not a per-token preference
    higher = zero_preference_note(pool.assign(implicit_mean=[0.9, 0.9, 0.6, 0.7]))
    assert "per token too they score higher" in higher
    assert zero_preference_note(pool[pool.r_pref > 0]) == "No sample scores $R_{pref}$ 0 in this pool."


def test_figure_text_stays_legible_when_drawn_at_its_size(tmp_path):
    """No text in the book's figures under 7 SVG units (a 10 pt subscript), so shown at the drawn size (1.333 px a
    unit) none is under 9 px; the pipeline diagram and a heatmap with maths are checked."""
    plots.use_book_style()
    summary = pd.DataFrame([{"quantity": q, "weak": h, "eps": e, "mean": m, "ci_low": m - 0.1, "ci_high": m + 0.1,
                             "vs_zero": "above 0" if m > 0.1 else "includes 0"}
                            for q, m in (("cong_vs_best_r_pref", 0.5), ("pgr", 0.3)) for h in ("a", "b")
                            for e in (0.0, 0.2)])  # fmt: skip
    for name, fig in (("pipeline", plots.pipeline_diagram()),
                      ("heatmaps", plots.regime_heatmaps(summary, ["cong_vs_best_r_pref", "pgr"], {}, None))):
        path = tmp_path / f"{name}.svg"
        fig.savefig(path, format="svg")
        _, sizes = plots.svg_text_sizes(path.read_text())
        assert sizes and min(sizes) >= 7.0 - 1e-9, (name, sorted(set(sizes)))
        assert "\u2212" in path.read_text() or name == "pipeline"  # negative annotations carry a true minus


def test_heatmap_panels_share_one_scale_per_kind_with_colour_bars():
    plots.use_book_style()
    summary = pd.DataFrame([{"quantity": q, "weak": "a", "eps": e, "mean": m, "ci_low": m, "ci_high": m,
                             "vs_zero": "includes 0"}
                            for q, ms in (("cong_vs_best_r_pref", (0.01, -0.02)), ("cong_vs_best_r_cap", (0.4, 0.3)))
                            for e, m in zip((0.0, 0.2), ms)])  # fmt: skip
    fig = plots.regime_heatmaps(summary, ["cong_vs_best_r_pref", "cong_vs_best_r_cap"], {}, None)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 2 and images[0].norm.vmin == images[1].norm.vmin == -0.4  # one scale: the larger effect's
    assert len(fig.axes) == 3  # two panels and one colour bar for the differences


def test_table_text_uses_the_books_symbols_and_notation_outside_tags():
    from congkit.study.tables import book_text, table_html

    assert book_text("ConG -> WSPO, n >= 3, p <= 0.05, -0.02 [-0.04, +0.01]") == \
        "ConG \u2192 WSPO, n \u2265 3, p \u2264 0.05, \u22120.02 [\u22120.04, +0.01]"
    assert book_text("self-alignment, 3-token, R_pref of pi_r") == \
        "self-alignment, 3-token, R<sub>pref</sub> of \u03c0<sub>r</sub>"  # hyphens in words stay
    html = table_html(pd.DataFrame({"claim": ["ConG -> WSPO"], "estimate": ["-0.113 [-0.14, -0.09]"]}))
    assert "\u2192" in html and "\u22120.113 [\u22120.14, \u22120.09]" in html
    style = html.split("</style>")[0]
    assert "\u2212" not in style and "\u2192" not in style  # the style sheet is left alone


def test_glued_text_reads_with_the_books_minus_sign(monkeypatch):
    from congkit.study import tables

    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=False: glued.__setitem__(name, value))
    tables.glue("estimate", "-0.101 [-0.111, -0.091], 3-token, n >= 3")
    assert glued["estimate"] == "\u22120.101 [\u22120.111, \u22120.091], 3-token, n \u2265 3"


def test_an_inconclusive_estimate_carries_its_equivalence_bound():
    from types import SimpleNamespace

    from congkit.study.tables import interval_text

    row = SimpleNamespace(estimate=-0.0002, ci_low=-0.0046, ci_high=0.0042, verdict="inconclusive")
    assert interval_text(row) == "-0.000 [-0.005, +0.004]; |effect| \u2264 0.005"  # the widest effect not ruled out
    assert interval_text(SimpleNamespace(**{**vars(row), "verdict": "holds"})) == "-0.000 [-0.005, +0.004]"
    assert interval_text(SimpleNamespace(estimate=0.1, ci_low=float("nan"), ci_high=float("nan"),
                                         verdict="inconclusive")) == "+0.100 (no interval)"
