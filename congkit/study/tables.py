"""The book's tables as pandas `Styler`s: numbers formatted, readable headers, the best method per column marked."""

from __future__ import annotations

import numbers
import re

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from congkit.pipeline.evaluation import INCONCLUSIVE
from congkit.pipeline.evaluation import metrics as metric_registry
from congkit.pipeline.methods import label, with_role

NOTATION = (("R_pref", "R<sub>pref</sub>"), ("R_cap", "R<sub>cap</sub>"), ("π_ref", "π<sub>ref</sub>"),
            ("pi_ref", "π<sub>ref</sub>"), ("π_r", "π<sub>r</sub>"), ("pi_r", "π<sub>r</sub>"))


def notation(text):
    """The book's one notation in a table's text: R_pref -> R<sub>pref</sub>, pi_r / π_r -> π<sub>r</sub>, ...
    (non-strings pass through)."""
    if not isinstance(text, str):
        return text
    for plain, html in NOTATION:
        text = text.replace(plain, html)
    return text


def finish(styler):
    """Every table's last step: the book's notation in its headers and index, no wrapping of short headers."""
    return styler.format_index(notation, axis=0).format_index(notation, axis=1)


# a cell that is a number: digits with signs, intervals, ±, % and separators only ("+0.108 [+0.081, +0.136]",
# "0.45 ± 0.02", "t [+0.036, +0.180]", "12%"); a claim like "1. the weak pair ..." is text
_NUMBER = re.compile(r"^[\s+\-\u2212\u00b1\u00d7%.,\[\]()/:t]*\d[\s\d+\-\u2212\u00b1\u00d7%.,\[\]()/:t]*$")


def cell_style(value) -> str:
    """A table cell's typesetting, from its value: a number (or a string of one: an estimate with its interval, a
    percentage, `_NUMBER`) right-aligned on one line; text left-aligned and free to wrap."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Number | str):
        return "text-align: left"
    if isinstance(value, str) and not _NUMBER.fullmatch(value.replace("\u00a0", " ")):
        return "text-align: left"
    return "text-align: right; white-space: nowrap"


def typeset(table) -> Styler:
    """Every glued table's typesetting (`glue`): text left and numbers right on one line (`cell_style`), the book's
    notation in headers and index. A `Styler` caption is refused: the book's caption above the table is the only one."""
    styler = table.style if isinstance(table, pd.DataFrame) else table
    if styler.caption:
        raise ValueError(f"a glued table carries its own caption ({styler.caption!r}): put it in the book's caption")
    return finish(styler.map(cell_style))


_SYMBOLS = ((r"-(?:>|&gt;)", "\u2192"), (r"(?:>|&gt;)=", "\u2265"), (r"(?:<|&lt;)=", "\u2264"),
            (r"(?<![\w.\-])-(?=\.?\d)", "\u2212"))  # ->, >=, <= and a minus sign written as a hyphen


def symbols(text: str) -> str:
    """→ ≥ ≤ and a true minus sign in place of their ASCII stand-ins (->, >=, <=, a hyphen before a number); a hyphen
    inside a word or a range (3-token, 1-16) stays."""
    for pattern, symbol in _SYMBOLS:
        text = re.sub(pattern, symbol, text)
    return text


def book_text(text: str) -> str:
    """A table cell's text as the book writes it: `symbols`, and the book's one notation (`notation`): R_pref ->
    R<sub>pref</sub>, pi_r -> π<sub>r</sub>."""
    return notation(symbols(text))


def table_html(table) -> str:
    """A table's HTML for the book: `typeset`, then `book_text` applied to the text between tags (never inside a
    tag or the style sheet)."""
    html = typeset(table).to_html()
    style, closes, body = html.rpartition("</style>")
    return style + closes + re.sub(r">([^<]+)<", lambda m: ">" + book_text(m.group(1)) + "<", body)


def glue(name: str, value, display: bool = False) -> None:
    """myst-nb's `glue`, with a table (a `DataFrame` or `Styler`) as the book shows it (`table_html`) and plain text
    in the book's `symbols` (a glued estimate reads −0.101, not -0.101); figures and Markdown as they are."""
    from IPython.display import HTML
    from myst_nb import glue as myst_glue

    if isinstance(value, pd.DataFrame | Styler):
        value = HTML(table_html(value))
    elif isinstance(value, str):
        value = symbols(value)
    myst_glue(name, value, display=display)


def header(metric: str) -> str:
    """A metric's label, from its registry entry (`congkit.pipeline.evaluation.metrics.METRICS`)."""
    return next((m.label for m in metric_registry.METRICS if m.name == metric), metric)


def higher_is_better(metric: str) -> bool:
    return any(m.name == metric and m.higher_is_better for m in metric_registry.METRICS)

PREFERENCE_COLUMNS = ("r_pref", "win_rate", "pgr", "pgr_strong")  # the main table's first half; the rest: capability


def style_main_table(main: pd.DataFrame, n_seeds: int, metrics: list[str] | None = None) -> Styler:
    """`evaluation.main_table` (metric x (mean, ±95%) columns), the `metrics` given (all by default), as one cell per
    metric, "mean ±half-width" kept on one line, readable headers, and the best of the five weak-to-strong methods
    per metric marked by its background (bold alone ran cells together)."""
    present = list(main.columns.get_level_values(0).unique())
    metrics = [m for m in (metrics or present) if m in present]
    cells = pd.DataFrame(index=main.index, columns=[header(m) for m in metrics], dtype=object)
    for metric in metrics:
        mean, half = main[(metric, "mean")], main[(metric, "±95%")]
        cells[header(metric)] = [
            "" if pd.isna(m) else f"{m:.3f}" + ("" if pd.isna(h) else f"\u00a0±{h:.3f}") for m, h in zip(mean, half)
        ]
    styler = cells.style.set_properties(**{"white-space": "nowrap", "font-size": "0.9em"})
    trained = [label(m) for m in with_role("baseline", "ours")]  # the rows among which "best" is marked
    for metric in metrics:
        if higher_is_better(metric):
            rows = [r for r in trained if r in main.index and pd.notna(main.loc[r, (metric, "mean")])]
            if rows:
                best = max(rows, key=lambda r: main.loc[r, (metric, "mean")])
                styler = styler.set_properties(subset=pd.IndexSlice[[best], [header(metric)]],
                                               **{"background-color": "#dcedc8", "font-weight": "bold"})  # fmt: skip
    return finish(styler)


def style_preconditions(conditions: pd.DataFrame) -> Styler:
    frame = conditions.drop(columns=["id"]).rename(columns={"ci_low": "95% CI low", "ci_high": "95% CI high"})
    frame["met"] = [("yes" if met else "no") if applicable else "n/a (no such channel)"
                    for met, applicable in zip(frame.met, frame.pop("applicable"))]  # fmt: skip
    frame["condition"] = frame.condition.map(notation)
    frame["95% CI"] = [f"[{lo:.3f}, {hi:.3f}]" if pd.notna(lo) else "" for lo, hi in zip(frame.pop("95% CI low"),
                                                                                         frame.pop("95% CI high"))]  # fmt: skip
    frame = frame[["condition", "required", "measured", "95% CI", "met"]]
    return finish(frame.style.hide(axis="index").format("{:.3f}", subset=["measured"], na_rep="")
                  .map(lambda met: f"color: {dict(yes='#1b5e20', no='#b71c1c').get(met, '#616161')}; font-weight: bold",
                       subset=["met"]))  # fmt: skip


VERDICT_COLORS = {"holds": "#1b5e20", "does not hold": "#b71c1c", "inconclusive": "#e65100", "untestable here": "#616161"}


def _estimate(row) -> str:
    return "" if pd.isna(row.estimate) else interval_text(row)


def style_verdicts(verdicts: pd.DataFrame) -> Styler:
    """The verdicts: claim, verdict (coloured), estimate [95% CI], the rule (small) and any unmet preconditions."""
    frame = pd.DataFrame({"claim": verdicts.claim.map(notation), "verdict": verdicts.verdict,
                          "estimate [95% CI]": [_estimate(r) for r in verdicts.itertuples()],
                          "rule": verdicts.rule.map(notation)})  # fmt: skip
    if verdicts.unmet.fillna("").astype(bool).any():  # every precondition met: no empty column
        frame["unmet preconditions"] = verdicts.unmet.fillna("").map(notation).to_numpy()
    return finish(frame.style.hide(axis="index")
                  .map(lambda v: f"color: {VERDICT_COLORS.get(v, 'black')}; font-weight: bold", subset=["verdict"])
                  .set_properties(subset=["estimate [95% CI]"], **{"white-space": "nowrap"})
                  .set_properties(subset=["rule"], **{"font-size": "0.8em"}))  # fmt: skip


def _in_grid_order(frame: pd.DataFrame, order: list | None) -> pd.DataFrame:
    """A regime table indexed by (weak pair, eps), its weak pairs in the grid's `order` (as they come if None)."""
    if not order:
        return frame
    return frame.loc[sorted(frame.index, key=lambda c: (order.index(c[0]) if c[0] in order else len(order), c[1]))]


def _cell_index(cells) -> pd.MultiIndex:
    """(weak pair, eps) cells as the regime tables show them, eps written compactly."""
    return pd.MultiIndex.from_tuples([(str(h), f"{e:g}") for h, e in cells], names=["weak pair", "ε"])


def style_regime_cells(summary: pd.DataFrame, quantities: list[str], labels: dict[str, str],
                       order: list | None = None):  # fmt: skip
    """The regime map as one row per cell (weak pair, eps), one column per quantity: "mean [95% CI]"; differences
    whose interval excludes 0 in bold."""
    from congkit.pipeline.evaluation import is_difference

    part = summary[summary.quantity.isin(quantities)]
    cells = part.pivot_table(index=["weak", "eps"], columns="quantity", values="mean").index
    frame = pd.DataFrame(index=cells, columns=[labels[q] for q in quantities], dtype=object)
    bold = []
    for row in part.itertuples():
        frame.loc[(row.weak, row.eps), labels[row.quantity]] = (
            f"{row.mean:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]")  # fmt: skip
        if is_difference(row.quantity) and row.vs_zero != "includes 0":
            bold.append(((row.weak, row.eps), labels[row.quantity]))
    frame = _in_grid_order(frame, order)
    frame.index = _cell_index(frame.index)
    bold = [((str(h), f"{e:g}"), column) for (h, e), column in bold]
    styler = frame.style.set_properties(**{"font-size": "0.85em"})
    for index, column in bold:
        styler = styler.set_properties(subset=pd.IndexSlice[[index], [column]], **{"font-weight": "bold"})
    return styler


def style_correlations(correlations: pd.DataFrame):
    frame = correlations[["label", "spearman", "ci_low", "ci_high", "permutation_p"]].rename(columns={
        "label": "predictor (cell mean)", "spearman": "Spearman ρ with ConG − best baseline (R_pref)",
        "ci_low": "CI low", "ci_high": "CI high", "permutation_p": "permutation p (cells)"})  # fmt: skip
    return (frame.style.hide(axis="index").format("{:+.2f}", subset=frame.columns[1:4], na_rep="(constant)")
            .format("{:.3f}", subset=frame.columns[4:], na_rep=""))


def style_cell_measures(measures: pd.DataFrame, order: list | None = None):
    """Where each cell's models stand (`regime.cell_measures`), with readable headers and method labels."""

    columns = {"weak_base_r_cap": "weak base R_cap", "weak_aligned_r_pref": "π_r R_pref", "cong_r_pref": "ConG R_pref",
               "cong_r_cap": "ConG R_cap", "gold_r_pref": "gold R_pref", "best_baseline_r_pref": "best baseline (R_pref)",
               "best_baseline_r_cap": "best baseline (R_cap)"}  # fmt: skip
    frame = measures.set_index(["weak", "eps"])[list(columns)].rename(columns=columns)
    frame = _in_grid_order(frame, order)
    frame.index = _cell_index(frame.index)
    for column in ("best baseline (R_pref)", "best baseline (R_cap)"):
        frame[column] = frame[column].map(label)
    return frame.style.format(precision=3)


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


def interval_text(row) -> str:
    """An estimate as the book writes it: "+0.108 [+0.081, +0.136]"; "(no interval)" without one; and for a verdict
    that is inconclusive, the equivalence bound its interval gives: the largest effect it has not ruled out
    ("+0.000 [−0.005, +0.004]; |effect| ≤ 0.005")."""
    finite = pd.notna(row.ci_low) and pd.notna(row.ci_high)
    text = f"{row.estimate:+.3f}" + (f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}]" if finite else " (no interval)")
    if finite and getattr(row, "verdict", None) == INCONCLUSIVE:
        text += f"; |effect| \u2264 {max(abs(row.ci_low), abs(row.ci_high)):.3f}"
    return text


def why_sentence(steps: pd.DataFrame) -> str:
    """The walk from ConG to WSPO (`evaluation.walk`) in words: every main step with its paired estimate, then the
    step that carries the gap under the analysis plan's rule, or that no single step does."""
    main = steps[steps.path == "main"]
    walked = "; ".join(f"{r.step} {interval_text(r)}" for r in main.itertuples())
    carrying = main[main.carries]
    if len(carrying):
        r = carrying.iloc[0]
        verdict = (f"The step that carries the gap (the plan's rule: the largest step, its interval excluding 0, at "
                   f"least half of the gap) is **{r.step}**: {interval_text(r)} $R_{{pref}}$, {r.share:.0%} of the WSPO "
                   "minus ConG gap.")  # fmt: skip
    else:
        verdict = "No single step carries the gap under the plan's rule (largest step, interval excluding 0, half the gap)."
    return f"Walking from ConG to WSPO one change at a time ($R_{{pref}}$, paired over seeds): {walked}. {verdict}"


def in_words(table: pd.DataFrame) -> str:
    """How far ConG's mean R_pref lies from every baseline's and the weak aligned model's (means over seeds at the
    clean setting), in words: "0.008 below WeakSFT, ..."."""
    from congkit.pipeline.evaluation import clean_eps, in_run, metric_mean

    eps = clean_eps(table)
    cong = metric_mean(table, "cong", "r_pref", eps)
    parts = []
    for other in [*in_run(table, "baseline"), "weak_aligned"]:
        gap = cong - metric_mean(table, other, "r_pref", eps)
        name = label(other) if other != "weak_aligned" else "the weak aligned model"
        parts.append(f"{abs(gap):.3f} {'below' if gap < 0 else 'above'} {name}")
    return f"{cong:.3f}: " + ", ".join(parts)


def best_method(table: pd.DataFrame, metric: str = "r_pref") -> str:
    """The weak-to-strong method (the run's baselines and ours) with the highest mean `metric` at the clean setting,
    by label."""
    from congkit.pipeline.evaluation import clean_eps, in_run, metric_mean

    eps = clean_eps(table)
    names = in_run(table, "baseline", "ours")
    return label(max(names, key=lambda m: metric_mean(table, m, metric, eps))) if names else "(none)"


def plan_sentences(folder) -> dict[str, str]:
    """The analysis plan's committed run (`results/plan`, profile plan) in words: ConG - WSPO pooled over worlds for
    each budget with claim 3a's pre-registered verdict (the plan's world-aware rule: "untestable here" where a world
    misses a precondition), the step that carries it, and best-of-N by implicit reward against WSPO (a comparison
    outside the claims, its interval only). {} if the folder lacks the tables."""
    from pathlib import Path

    folder = Path(folder)
    if not all((folder / f"{n}.csv").exists() for n in ("comparisons", "walk", "verdicts")):
        return {}
    comparisons, steps = pd.read_csv(folder / "comparisons.csv"), pd.read_csv(folder / "walk.csv")
    claims = pd.read_csv(folder / "verdicts.csv")
    claims = claims.set_index([claims.claim.str.split(".").str[0], claims.budget])
    worlds = sorted(int(c.split("_")[1]) for c in comparisons.columns if c.startswith("world_"))
    out = {"plan_worlds": str(len(worlds))}
    for budget in ("fixed", "tuned"):
        c = comparisons[(comparisons.budget == budget) & (comparisons.metric == "r_pref")].set_index("a")
        w = steps[(steps.budget == budget) & (steps.path == "main")]
        carrying = w[w.carries]
        step = (f"{carrying.step.iloc[0]} {interval_text(carrying.iloc[0])}, {carrying.share.iloc[0]:.0%} of it"
                if len(carrying) else "no single step")  # fmt: skip
        claim = claims.loc[("3a", budget)]
        unmet = f"; unmet: {_short(claim.unmet)}" if isinstance(claim.unmet, str) and claim.unmet else ""
        out[f"plan_{budget}"] = (f"ConG − the best baseline (WSPO) {interval_text(claim)}: claim 3a {claim.verdict}{unmet}; carried "
                                 f"by: {step}; best-of-N by implicit reward − WSPO {interval_text(c.loc['bon_implicit'])}")  # fmt: skip
    v = claims.xs("fixed", level=1)  # the sampling claims do not depend on the strong budget
    out["plan_cd"] = (f"CD − naive {interval_text(v.loc['2'])} (claim 2 {v.loc['2', 'verdict']}), of which the head alone − "
                      f"naive {interval_text(v.loc['2c'])} and CD − the head alone {interval_text(v.loc['2b'])}")  # fmt: skip
    out["plan_verdicts"] = ", ".join(f"{k} {v.loc[k, 'verdict']}" for k in v.index)
    return out


def _worlds(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("world_")]


def style_plan_verdicts(verdicts: pd.DataFrame, budget: str):
    """The plan's world-aware verdicts of one budget (`evaluation.world_verdicts`): claim number, verdict, pooled
    estimate [interval], each world's estimate, and why a verdict is not plain (a sign flip, unmet preconditions)."""
    part = verdicts[verdicts.budget == budget]
    frame = pd.DataFrame({
        "claim": part.claim.str.split(".").str[0],
        "verdict": part.verdict,
        "pooled [95% CI]": [interval_text(r) for r in part.itertuples()],
        **{f"world {c.split('_')[1]}": part[c].map("{:+.3f}".format) for c in _worlds(part)},
        "note": [" ".join(x for x in (str(n) if isinstance(n, str) else "", f"unmet: {_short(u)}"
                                      if isinstance(u, str) and u else "") if x) for n, u in zip(part.note, part.unmet)],
    })  # fmt: skip
    return finish(frame.style.hide(axis="index")
                  .map(lambda v: f"color: {VERDICT_COLORS.get(v, 'black')}; font-weight: bold", subset=["verdict"])
                  .set_properties(subset=["pooled [95% CI]"], **{"white-space": "nowrap", "font-size": "0.9em"})
                  .set_properties(subset=["note"], **{"font-size": "0.8em"}))  # fmt: skip


def _short(unmet: str) -> str:
    """Unmet preconditions as a table cell can hold them: "format probe (w1); detectable effect (pooled)"."""
    for long, short in (("smallest detectable paired effect on R_pref (95% CI half-width)", "detectable effect"),
                        ("attribute probe: ", ""), ("(pooled over worlds)", "(pooled)"), ("(world ", "(w")):  # fmt: skip
        unmet = unmet.replace(long, short)
    return notation(unmet)


def style_plan_walk(steps: pd.DataFrame):
    """The plan's pooled walk from ConG to WSPO, both budgets side by side: each step's estimate [95% CI]."""
    frame = steps[steps.path == "main"].pivot_table(index="step", columns="budget", values="estimate", sort=False)
    for budget in frame.columns:
        rows = steps[(steps.path == "main") & (steps.budget == budget)].set_index("step")
        frame[budget] = [interval_text(rows.loc[s]) + (" (carries)" if rows.loc[s, "carries"] else "") for s in frame.index]
    frame.columns = [f"{b} budget" for b in frame.columns]
    return frame.rename_axis("step (R_pref, pooled over worlds)").style


def style_tuning(tuning: pd.DataFrame):
    """The setting the tuning chose per method and world: learning rate x epochs and its validation score."""

    chosen = tuning[tuning.chosen.astype(bool)]
    frame = chosen.pivot_table(index="method", columns="world", values="learning_rate", aggfunc="first", sort=False)
    for w in frame.columns:
        rows = chosen[chosen.world == w].set_index("method")
        frame[w] = [f"lr {rows.loc[m, 'learning_rate']:.2g}, {int(rows.loc[m, 'epochs'])} ep ({rows.loc[m, 'score']:.3f})"
                    for m in frame.index]  # fmt: skip
    frame.index = [label(m) for m in frame.index]
    frame.columns = [f"world {w}" for w in frame.columns]
    return frame.rename_axis("method").style


def style_sweep(claims: pd.DataFrame):
    """Chapter 3's table: naive pi_r sampling and CD at every alpha of the sweep (rows), the means over seeds of each
    measure (columns); rows with no values dropped, alpha written compactly."""
    from congkit.pipeline.evaluation import summarise

    stats = summarise(claims[claims.method.isin(["cd", "naive"])])
    stats["row"] = ["naive π_r sampling" if m == "naive" else f"CD, α = {a:g}" + (" (the head alone)" if a == 1 else "")
                    for m, a in zip(stats.method, stats.alpha)]  # fmt: skip
    order = ["naive π_r sampling", *sorted({r for r in stats.row if r.startswith("CD")},
                                         key=lambda r: float(r.split("= ")[1].split(" ")[0]))]  # fmt: skip
    wide = stats.pivot_table(index="row", columns="metric", values="mean").reindex(order).dropna(how="all")
    columns = {"implicit": "implicit reward (nats)", "r_pref": "R_pref", "r_cap": "R_cap", "length": "length",
               "distinct": "distinct"}  # fmt: skip
    wide = wide[[c for c in columns if c in wide]].rename(columns=columns)
    return finish(wide.rename_axis(None).style.format("{:.3f}", na_rep="–"))


def training_settings(pipe, seed: int) -> pd.DataFrame:
    """Every strong method's fixed training settings (chapter 4): its data, start, loss settings and optimiser, from
    its registry recipe and the pipeline's configuration."""
    from congkit.pipeline.methods import reads_beta, recipe
    from congkit.pipeline.stages import fixed_config

    rows = []
    for method in [*pipe.config.methods, "gold"]:
        how = recipe(method)
        data = pipe.call(how.data, seed, pipe.config.noise_levels[0])
        cfg = fixed_config(pipe, method, data)
        rows.append({"method": label(method), "trained on": how.data.replace("_", " "), "starts from": label(how.start),
                     "learning rate": f"{cfg.learning_rate:.2g}", "epochs": f"{cfg.num_train_epochs:g}",
                     "batch": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps,
                     "β": f"{cfg.beta:g}" if reads_beta(method, data.column_names) else "–"})  # fmt: skip
    return pd.DataFrame(rows)


# --- plan 2: is the verdict a property of the world? (results/plan2, `congkit.study.plan2`) ------------------------

LEVEL_MODELS = {  # what each knob level of plan 2 models in an LLM
    "original": "the plan-1 world: each preference decided at one token, every attribute's extreme preferred",
    "spread": "format spread over 3 lead words with interchangeable wordings (majority decides): no single token "
              "decides it, the weak pair's log-ratio is spread over a span",
    "overshoot": "length wants exactly 2 closing phrases (reward 1 − |c − 2| / 2): amplifying the weak direction can "
                 "go past the optimum",
}  # fmt: skip
COMPARISON_NAMES = {("wspo", "cong_s"): "P1 gap", ("wspo", "wspo_seqmean"): "P2 token credit",
                    ("bon_implicit", "wspo"): "P3 label-free selection", ("wspo", "cong"): "P4 WSPO over ConG",
                    ("cong", "cong_s"): "ConG's DPO stage", ("wspo_b10", "wspo"): "amplification (β 1 vs 0.1)",
                    ("bon_cd", "cong_s"): "best-of-N of CD samples"}  # fmt: skip


def comparison_label(a: str, b: str) -> str:
    """"P1 gap: WSPO − ConG-S" for a plan-2 comparison."""
    name = COMPARISON_NAMES.get((a, b))
    return (f"{name}: " if name else "") + f"{label(a)} − {label(b)}"


def style_plan2_levels(levels: dict[str, dict]):
    """The knob levels: each one's world shape and what it models."""
    frame = pd.DataFrame([{"level": name, "format span (tokens)": shape.get("format_span", 1),
                           "closing target": shape.get("closing_target", 0) or "none (more is better)",
                           "what it models": LEVEL_MODELS.get(name, "")} for name, shape in levels.items()])  # fmt: skip
    return finish(frame.style.hide(axis="index").set_properties(subset=["what it models"], **{"font-size": "0.85em"}))


def acceptance_summary(acceptance: pd.DataFrame) -> pd.DataFrame:
    """Per level: worlds drawn, the accepted ones (with their weak model's width where the run checked several),
    draws per accepted world, each unmet precondition of the failed checks with the number of checks (a world at one
    width) that missed it, and (where the run recorded them) each attribute probe's accuracy over the checks, mean
    [min]."""
    rows = []
    for level, part in acceptance.groupby("level", sort=False):
        accepted = part[part.accepted.astype(bool)]
        widths = ("weak_width" in part and part.weak_width.nunique() > 1)
        unmet = [u for r in part[~part.accepted.astype(bool)].itertuples() for u in str(r.unmet).split("; ") if u]
        reasons = ", ".join(f"{_condition(u)} ({n})" for u, n in pd.Series(unmet, dtype=str).value_counts().items())
        drawn = part.world.nunique()
        rows.append({"level": level, "drawn": drawn,
                     "accepted worlds": ", ".join(f"{int(r.world)} (width {int(r.weak_width)})" if widths
                                                  else str(int(r.world)) for r in accepted.itertuples()),
                     "draws per accepted": f"{drawn / len(accepted):.2f}" if len(accepted) else "none accepted",
                     "unmet in the failed checks": reasons or "none",
                     **{f"{c.removeprefix('probe_')} probe, mean [min]": f"{part[c].mean():.2f} [{part[c].min():.2f}]"
                        for c in part.columns if c.startswith("probe_")}})  # fmt: skip
    return pd.DataFrame(rows)


def _condition(unmet: str) -> str:
    """A precondition's name as a table cell holds it: "length probe", "ranking (Spearman)", "best-of-k"."""
    if unmet.startswith("attribute probe: "):
        return unmet.removeprefix("attribute probe: ") + " probe"
    for start, short in (("Spearman", "ranking (Spearman)"), ("best-of-k", "best-of-k"), ("share of the R_pref headroom",
                         "headroom"), ("smallest detectable", "detectable effect")):  # fmt: skip
        if unmet.startswith(start):
            return short
    return notation(unmet)


def style_acceptance(acceptance: pd.DataFrame):
    return finish(acceptance_summary(acceptance).style.hide(axis="index")
                  .set_properties(subset=["unmet in the failed checks"], **{"font-size": "0.8em"}))  # fmt: skip


def _two_intervals(row) -> str:
    """A plan-2 estimate with both intervals; inconclusive: the equivalence bound neither interval rules out."""
    text = f"{row.estimate:+.3f} [{row.boot_low:+.3f}, {row.boot_high:+.3f}] t [{row.t_low:+.3f}, {row.t_high:+.3f}]"
    if getattr(row, "verdict", None) == INCONCLUSIVE:
        text += f"; |effect| \u2264 {max(abs(row.boot_low), abs(row.boot_high), abs(row.t_low), abs(row.t_high)):.3f}"
    return text


def style_plan2_comparisons(comparisons: pd.DataFrame, metric: str = "r_pref"):
    """Every plan-2 comparison (rows) at every level (columns): the estimate pooled over the accepted worlds, the
    crossed-bootstrap interval, the t-interval over world means, and the verdict where both agree."""
    part = comparisons[comparisons.metric == metric]
    levels = list(dict.fromkeys(part.level))
    rows = []
    for (a, b), pair in part.groupby(["a", "b"], sort=False):
        row = {"comparison": comparison_label(a, b)}
        for level in levels:
            hit = pair[pair.level == level]
            row[f"{level}: estimate [bootstrap] t [interval]"] = _two_intervals(hit.iloc[0]) if len(hit) else ""
            row[f"{level}: verdict"] = hit.verdict.iloc[0] if len(hit) else ""
        rows.append(row)
    frame = pd.DataFrame(rows)
    verdicts = [c for c in frame.columns if c.endswith("verdict")]
    return finish(frame.style.hide(axis="index")
                  .map(lambda v: f"color: {VERDICT_COLORS.get(v, 'black')}; font-weight: bold", subset=verdicts)
                  .set_properties(subset=[c for c in frame.columns if "estimate" in c],
                                  **{"white-space": "nowrap", "font-size": "0.85em"}))  # fmt: skip


def style_plan2_decisions(decisions: pd.DataFrame):
    """The plan's answer per level, in its pre-registered words, and the numbers that decided it."""
    frame = decisions.rename(columns={"decision": "answer (plan 2's words)", "why": "decided by"})
    return finish(frame.style.hide(axis="index").set_properties(subset=["answer (plan 2's words)"],
                                                                **{"font-weight": "bold"}))  # fmt: skip


def plan2_optima(tuning: pd.DataFrame) -> pd.DataFrame:
    """Per level and method (the weak DPO per world): the chosen learning rate and epochs, its validation score,
    and where it lies: "interior", or "budget-capped (<edges>)" when it lies on an edge of the final grid."""
    chosen = tuning[tuning.chosen.astype(bool)].copy()
    chosen["edge"] = chosen["edge"].fillna("") if "edge" in chosen else ""
    chosen["where"] = ["interior" if not e else f"budget-capped ({e})" for e in chosen.edge]
    chosen["method"] = [label(m) if m != "weak_dpo" else "weak DPO (π_r)" for m in chosen.method]
    chosen["points"] = [int(((tuning.level == r.level) & (tuning.world == r.world) & (tuning.method == m)).sum())
                        for r, m in zip(chosen.itertuples(), tuning.loc[chosen.index, "method"])]  # fmt: skip
    return chosen[["level", "world", "method", "learning_rate", "epochs", "score", "points", "where"]].reset_index(drop=True)


def style_plan2_optima(tuning: pd.DataFrame):
    frame = plan2_optima(tuning).rename(columns={"learning_rate": "learning rate", "score": "validation score",
                                                 "points": "grid points"})  # fmt: skip
    return finish(frame.style.hide(axis="index").format({"learning rate": "{:.2g}", "validation score": "{:.3f}"})
                  .map(lambda v: "color: #b71c1c" if str(v).startswith("budget-capped") else "", subset=["where"]))  # fmt: skip


def plan2_sentences(folder, prefix: str = "plan2") -> dict[str, str]:
    """Plan 2's committed run in words for the book, keyed `<prefix>_...`: per level its decision, P1-P4 with both
    intervals, and the worlds drawn and accepted (with their weak width where the level checked several); the
    budget-capped arms. {} when `folder` lacks the tables."""
    from pathlib import Path

    folder = Path(folder)
    if not all((folder / f"{n}.csv").exists() for n in ("decisions", "comparisons", "acceptance", "tuning")):
        return {}
    decisions, comparisons = pd.read_csv(folder / "decisions.csv"), pd.read_csv(folder / "comparisons.csv")
    acceptance, tuning = acceptance_summary(pd.read_csv(folder / "acceptance.csv")), pd.read_csv(folder / "tuning.csv")
    out = {}
    for row in decisions.itertuples():
        out[f"{prefix}_{row.level}"] = f"{row.decision} ({row.why})"
        for (a, b), key in ((("wspo", "cong_s"), "p1"), (("wspo", "wspo_seqmean"), "p2"), (("bon_implicit", "wspo"), "p3"),
                            (("wspo", "cong"), "p4")):  # fmt: skip
            hit = comparisons[(comparisons.level == row.level) & (comparisons.a == a) & (comparisons.b == b)
                              & (comparisons.metric == "r_pref")]  # fmt: skip
            out[f"{prefix}_{row.level}_{key}"] = (f"{_two_intervals(hit.iloc[0])}, {hit.verdict.iloc[0]}" if len(hit)
                                                  else f"{row.decision} ({row.why})")  # fmt: skip
    for row in acceptance.to_dict("records"):
        accepted = len(row["accepted worlds"].split(", ")) if row["accepted worlds"] else 0
        which = f" ({_accepted_words(row['accepted worlds'])})" if accepted else ""
        missed = row["unmet in the failed checks"]
        out[f"{prefix}_{row['level']}_draws"] = (f"{row['drawn']} worlds drawn, {accepted} accepted{which}"
                                                 + (f"; the failed checks missed: {missed}" if missed != "none" else ""))
    optima = plan2_optima(tuning)
    capped = optima[optima["where"] != "interior"]
    out[f"{prefix}_capped"] = ("; ".join(f"{r.method} ({r.level}{'' if r.method != 'weak DPO (π_r)' else f' w{r.world}'})"
                                     for r in capped.itertuples()) or "none")  # fmt: skip
    return out


def checks_by_width(acceptance: pd.DataFrame, level: str) -> str:
    """One level's acceptance checks per weak width in words: how many worlds were checked at it, how many passed,
    and how many missed the length probe and the capability gap (the two preconditions the widths trade off)."""
    part = acceptance[acceptance.level == level]
    if "weak_width" not in part or part.empty:
        return "(no checks by weak width)"
    out = []
    for width, checks in part.groupby("weak_width", sort=False):
        unmet = checks.unmet.fillna("").astype(str)
        length = int(unmet.str.contains("attribute probe: length").sum())
        gap = int(unmet.str.contains("strong base minus weak base").sum())
        out.append(f"at weak width {int(width)}, {len(checks)} world(s) checked, {int(checks.accepted.astype(bool).sum())}"
                   f" accepted, {length} missed the length probe and {gap} the capability gap")  # fmt: skip
    return "; ".join(out)


def length_diagnosis_sentence(path) -> str:
    """The diagnosis after amendment 1's run (`tools/plan2_length_diagnosis.py`) in one sentence: per level and weak
    width, the length probe's range over the budgets tried, and the best budget's four probes where all reach 0.9."""
    from pathlib import Path

    if not Path(path).exists():
        return "(no length diagnosis in results/plan2)"
    table = pd.read_csv(path)
    probes = [c for c in table.columns if c.startswith("probe_")]
    parts = []
    for (level, width), part in table.groupby(["level", "weak_width"], sort=False):
        low, high = part.probe_length.min(), part.probe_length.max()
        passing = part[(part[probes] >= 0.9).all(axis=1)]
        span = f"{high:.2f}" if len(part) == 1 else f"{low:.2f}–{high:.2f}"
        parts.append(f"`{level}` at width {int(width)}: length probe {span} over {len(part)} budget(s)"
                     + ("" if passing.empty else " (all four probes ≥ 0.9 at "
                        f"{len(passing)} of them)"))  # fmt: skip
    return "; ".join(parts)


def _accepted_words(accepted: str) -> str:
    """"1 (width 32), 2 (width 64)" -> "worlds 1 and 2, weak widths 32 and 64"; "1, 2, 3" -> "worlds 1, 2 and 3"."""
    items = accepted.split(", ")
    join = lambda xs: xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]  # noqa: E731
    worlds = join([i.split(" ")[0] for i in items])
    widths = [i.split("width ")[1].rstrip(")") for i in items if "width " in i]
    if not widths:
        return f"world{'s' if len(items) > 1 else ''} {worlds}"
    width = f"weak width {widths[0]}" if len(set(widths)) == 1 else f"weak widths {join(widths)}"
    return f"world{'s' if len(items) > 1 else ''} {worlds}, {width}"


def signed(x: float, digits: int = 2) -> str:
    """A signed number with a true minus sign (−0.12, +0.30), as the book writes numbers in its text."""
    return f"{x:+.{digits}f}".replace("-", "\u2212")


def zero_preference_note(pool: pd.DataFrame) -> str:
    """The Markdown sentence under claim 1's figure on its lowest box, from the pool itself: how many of pi_r's
    samples score R_pref 0 (no answer statement the judge can parse, or every attribute failed), how long they are
    against the top level's, and whether their implicit reward is high per token or only summed over more tokens."""
    target = "r_pref" if "r_pref" in pool else "scores"
    zero, top = pool[pool[target] == 0], pool[pool[target] == pool[target].max()]
    if not len(zero) or pool[target].max() == 0:
        return "No sample scores $R_{pref}$ 0 in this pool."
    words = lambda part: float(part.response.str.split().str.len().median())  # noqa: E731
    total = (float(zero.implicit.median()), float(top.implicit.median()))
    per_token = (float(zero.implicit_mean.median()), float(top.implicit_mean.median()))
    both = f"{signed(per_token[0])} vs {signed(per_token[1])} nats a token"
    why = (f"per token they score lower ({both}): the summed reward grows with length" if per_token[0] < per_token[1]
           else f"per token too they score {'higher' if per_token[0] > per_token[1] else 'the same'} ({both}): "
           "tokens that $\\pi_r$ makes likelier than $\\pi_{ref}$ does, in responses the judge rejects, a blind spot of the "
           "weak pair's reward")  # fmt: skip
    return (f"{len(zero)} of {len(pool)} samples score $R_{{pref}}$ 0 (no answer statement the judge can parse, or "
            f"every attribute failed); their median summed implicit reward is {signed(total[0])} nats against "
            f"{signed(total[1])} at $R_{{pref}}$ {pool[target].max():g}, and they are {words(zero):.0f} words long "
            f"on median against {words(top):.0f}; {why}.")
