"""The book's tables as pandas `Styler`s: numbers formatted, readable headers, the best method per column marked."""

from __future__ import annotations

import pandas as pd

from . import evaluation


def header(metric: str) -> str:
    """A metric's label, from its registry entry (`congkit.evaluation.METRICS`)."""
    return next((m.label for m in evaluation.METRICS if m.name == metric), metric)


def higher_is_better(metric: str) -> bool:
    return any(m.name == metric and m.higher_is_better for m in evaluation.METRICS)

TRAINED = ("WeakSFT", "AuxConf", "WSPO", "ConG-S", "ConG")  # the rows among which "best" is marked


def style_main_table(main: pd.DataFrame, n_seeds: int) -> pd.io.formats.style.Styler:
    """`evaluation.main_table` (metric x (mean, ±95%) columns) as one cell per metric, "mean ±half-width" kept on one
    line, readable headers, and the best of the five weak-to-strong methods per metric in bold."""
    metrics = list(main.columns.get_level_values(0).unique())
    cells = pd.DataFrame(index=main.index, columns=[header(m) for m in metrics], dtype=object)
    for metric in metrics:
        mean, half = main[(metric, "mean")], main[(metric, "±95%")]
        cells[header(metric)] = [
            "" if pd.isna(m) else f"{m:.3f}" + ("" if pd.isna(h) else f"\u00a0±{h:.3f}") for m, h in zip(mean, half)
        ]
    styler = cells.style.set_properties(**{"white-space": "nowrap", "font-size": "0.9em"})
    for metric in metrics:
        if higher_is_better(metric):
            rows = [r for r in TRAINED if r in main.index and pd.notna(main.loc[r, (metric, "mean")])]
            if rows:
                best = max(rows, key=lambda r: main.loc[r, (metric, "mean")])
                styler = styler.set_properties(subset=pd.IndexSlice[[best], [header(metric)]],
                                               **{"font-weight": "bold"})  # fmt: skip
    caption = (f"Mean over {n_seeds} seeds ± 95% t-interval half-width, eps = 0. Bold: the best of the five "
               "weak-to-strong methods in each column.")  # fmt: skip
    return styler.set_caption(caption)


def style_preconditions(conditions: pd.DataFrame) -> pd.io.formats.style.Styler:
    frame = conditions.drop(columns=["id"]).rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high"})
    frame["met"] = [("yes" if met else "no") if applicable else "n/a (no such channel)"
                    for met, applicable in zip(frame.met, frame.pop("applicable"))]  # fmt: skip
    return (frame.style.hide(axis="index").format("{:.3f}", subset=["measured", "95% CI low", "95% CI high"], na_rep="")
            .map(lambda met: f"color: {dict(yes='#1b5e20', no='#b71c1c').get(met, '#616161')}; font-weight: bold",
                 subset=["met"])
            .set_caption("Each condition's mean over seeds against its requirement, fixed in code before the run."))  # fmt: skip


VERDICT_COLORS = {"holds": "#1b5e20", "does not hold": "#b71c1c", "inconclusive": "#e65100", "untestable here": "#616161"}


def style_verdicts(verdicts: pd.DataFrame) -> pd.io.formats.style.Styler:
    if not verdicts.unmet.fillna("").astype(bool).any():  # every precondition met: no empty column
        verdicts = verdicts.drop(columns=["unmet"])
    frame = verdicts.rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high", "unmet": "unmet preconditions"})
    return (frame.style.hide(axis="index").format("{:+.3f}", subset=["estimate", "95% CI low", "95% CI high"], na_rep="")
            .map(lambda v: f"color: {VERDICT_COLORS.get(v, 'black')}; font-weight: bold", subset=["verdict"])
            .set_properties(subset=["rule"], **{"font-size": "0.85em"}))  # fmt: skip


def _cell_index(cells) -> pd.MultiIndex:
    """(weak width, eps) cells as the regime tables show them: integer width, eps written compactly."""
    return pd.MultiIndex.from_tuples([(int(h), f"{e:g}") for h, e in cells], names=["weak width", "ε"])


def style_regime_cells(summary: pd.DataFrame, quantities: list[str], labels: dict[str, str]):
    """The regime map as one row per cell (weak width, eps), one column per quantity: "mean [95% CI]"; differences
    whose interval excludes 0 in bold."""
    from .evaluation import is_difference

    part = summary[summary.quantity.isin(quantities)]
    cells = part.pivot_table(index=["weak_size", "eps"], columns="quantity", values="mean").index
    frame = pd.DataFrame(index=cells, columns=[labels[q] for q in quantities], dtype=object)
    bold = []
    for row in part.itertuples():
        frame.loc[(row.weak_size, row.eps), labels[row.quantity]] = (
            f"{row.mean:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]")  # fmt: skip
        if is_difference(row.quantity) and row.vs_zero != "includes 0":
            bold.append(((row.weak_size, row.eps), labels[row.quantity]))
    frame.index = _cell_index(frame.index)
    bold = [((int(h), f"{e:g}"), column) for (h, e), column in bold]
    styler = frame.style.set_properties(**{"font-size": "0.85em"})
    for index, column in bold:
        styler = styler.set_properties(subset=pd.IndexSlice[[index], [column]], **{"font-weight": "bold"})
    return styler.set_caption("Mean over seeds [95% t-interval]; bold: a difference whose interval excludes 0.")


def style_correlations(correlations: pd.DataFrame):
    frame = correlations[["label", "spearman", "ci_low", "ci_high", "permutation_p"]].rename(columns={
        "label": "predictor (cell mean)", "spearman": "Spearman ρ with ConG − best baseline (R_pref)",
        "ci_low": "CI low", "ci_high": "CI high", "permutation_p": "permutation p (cells)"})  # fmt: skip
    level = correlations.confidence.iloc[0] if len(correlations) else 0.95
    n = int(correlations.n_cells.iloc[0]) if len(correlations) else 0
    return (frame.style.hide(axis="index").format("{:+.2f}", subset=frame.columns[1:4], na_rep="(constant)")
            .format("{:.3f}", subset=frame.columns[4:], na_rep="")
            .set_caption(f"Rank correlation across {n} cells; bootstrap {level:.0%} intervals (seeds resampled, "
                         f"paired across cells) and a permutation test across cells, each at {1 - level:.2g} "
                         "(family-wise 95% over the predictors)."))  # fmt: skip


def style_cell_measures(measures: pd.DataFrame):
    """Where each cell's models stand (`regime.cell_measures`), with readable headers and method labels."""
    from .methods import label

    columns = {"weak_base_r_cap": "weak base R_cap", "weak_aligned_r_pref": "π_r R_pref", "cong_r_pref": "ConG R_pref",
               "cong_r_cap": "ConG R_cap", "gold_r_pref": "gold R_pref", "best_baseline_r_pref": "best baseline (R_pref)",
               "best_baseline_r_cap": "best baseline (R_cap)"}  # fmt: skip
    frame = measures.set_index(["weak_size", "eps"])[list(columns)].rename(columns=columns)
    frame.index = _cell_index(frame.index)
    for column in ("best baseline (R_pref)", "best baseline (R_cap)"):
        frame[column] = frame[column].map(label)
    return frame.style.format(precision=3).set_caption("Means over seeds.")


def training_views(samples, preferences, cong_pairs, gold=None, n: int = 5) -> pd.DataFrame:
    """What each strong method trained on, for the first `n` training prompts: the weak samples (`weak_samples`
    dataset), the weak preference pairs, ConG's pairs, and `gold(prompt)` where the setting has gold responses."""
    samples = samples.select(range(min(n, len(samples))))
    own = dict(zip(cong_pairs["prompt"], cong_pairs["rejected"]))
    chosen = dict(zip(preferences["prompt"], preferences["chosen"]))
    gold = gold or (lambda p: "(DPO on own samples ranked by the explicit reward)")
    return pd.DataFrame([{
        "prompt": row["prompt"],
        "WeakSFT / AuxConf: pi_r sample": row["plain"],
        "WSPO: weak chosen response": chosen.get(row["prompt"], "(tie: no pair)"),
        "ConG-S target, ConG chosen: CD sample": row["cd"],
        "ConG rejected: ConG-S's own sample": own.get(row["prompt"], "(same as chosen: pair dropped)"),
        "gold": gold(row["prompt"]),
    } for row in samples])  # fmt: skip


def _interval(row) -> str:
    finite = pd.notna(row.ci_low) and pd.notna(row.ci_high)
    return f"{row.estimate:+.3f}" + (f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}]" if finite else " (no interval)")


def why_sentence(steps: pd.DataFrame) -> str:
    """The walk from ConG to WSPO (`evaluation.walk`) in words: every main step with its paired estimate, then the
    step that carries the gap under the analysis plan's rule, or that no single step does."""
    main = steps[steps.path == "main"]
    walked = "; ".join(f"{r.step} {_interval(r)}" for r in main.itertuples())
    carrying = main[main.carries]
    if len(carrying):
        r = carrying.iloc[0]
        verdict = (f"The step that carries the gap (the plan's rule: the largest step, its interval excluding 0, at "
                   f"least half of the gap) is **{r.step}**: {_interval(r)} $R_{{pref}}$, {r.share:.0%} of the WSPO "
                   "minus ConG gap.")  # fmt: skip
    else:
        verdict = "No single step carries the gap under the plan's rule (largest step, interval excluding 0, half the gap)."
    return f"Walking from ConG to WSPO one change at a time ($R_{{pref}}$, paired over seeds): {walked}. {verdict}"
