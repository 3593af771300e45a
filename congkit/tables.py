"""The book's tables as pandas `Styler`s: numbers formatted, readable headers, the best method per column marked."""

from __future__ import annotations

import pandas as pd

HEADERS = {
    "r_pref": "R_pref",
    "win_rate": "win rate vs strong base",
    "r_cap": "R_cap (correct rate)",
    "pgr": "PGR from π_r",
    "pgr_strong": "PGR from strong base",
    "heldout_accuracy": "held-out family accuracy",
    "length": "length (chars)",
    "reward": "r*",
}
HIGHER_IS_BETTER = {"r_pref", "win_rate", "r_cap", "pgr", "pgr_strong", "heldout_accuracy", "reward"}
TRAINED = ("WeakSFT", "AuxConf", "WSPO", "ConG-S", "ConG")  # the rows among which "best" is marked


def style_main_table(main: pd.DataFrame, n_seeds: int) -> pd.io.formats.style.Styler:
    """`evaluation.main_table` (metric x (mean, ±95%) columns): means to 3 decimals, half-widths as ±, the best trained
    method per metric in bold."""
    frame = main.copy()
    frame.columns = pd.MultiIndex.from_tuples([(HEADERS.get(m, m), part) for m, part in frame.columns])
    styler = frame.style.format("{:.3f}", na_rep="")
    for metric in main.columns.get_level_values(0).unique():
        styler = styler.format(lambda v: "" if pd.isna(v) else f"±{v:.3f}", subset=[(HEADERS.get(metric, metric), "±95%")])
        if metric in HIGHER_IS_BETTER:
            column = (HEADERS.get(metric, metric), "mean")
            rows = [r for r in TRAINED if r in frame.index and pd.notna(frame.loc[r, column])]
            if rows:
                best = max(rows, key=lambda r: frame.loc[r, column])
                styler = styler.set_properties(subset=pd.IndexSlice[[best], [column]], **{"font-weight": "bold"})
    caption = (f"Mean over {n_seeds} seeds and 95% t-interval half-width (±); eps = 0. Bold: the best of the five "
               "weak-to-strong methods in each column.")  # fmt: skip
    return styler.set_caption(caption)


def style_preconditions(conditions: pd.DataFrame) -> pd.io.formats.style.Styler:
    frame = conditions.rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high"})
    return (frame.style.hide(axis="index").format("{:.3f}", subset=["measured", "95% CI low", "95% CI high"], na_rep="")
            .map(lambda met: "color: #1b5e20; font-weight: bold" if met else "color: #b71c1c; font-weight: bold",
                 subset=["met"])
            .set_caption("Each condition's mean over seeds against its requirement, fixed in code before the run."))  # fmt: skip


VERDICT_COLORS = {"holds": "#1b5e20", "does not hold": "#b71c1c", "inconclusive": "#e65100", "untestable here": "#616161"}


def style_verdicts(verdicts: pd.DataFrame) -> pd.io.formats.style.Styler:
    frame = verdicts.rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high", "unmet": "unmet preconditions"})
    return (frame.style.hide(axis="index").format("{:+.3f}", subset=["estimate", "95% CI low", "95% CI high"], na_rep="")
            .map(lambda v: f"color: {VERDICT_COLORS.get(v, 'black')}; font-weight: bold", subset=["verdict"])
            .set_properties(subset=["rule"], **{"font-size": "0.85em"}))  # fmt: skip
