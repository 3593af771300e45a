"""Figures for the book. Each function takes tidy data and returns a matplotlib Figure with title, labels, units.

One style for every figure (`book.mplstyle`, applied by `use_book_style`): drawn at the book's text width with 10 pt
text, legends outside the data, 95% intervals over seeds wherever a curve has seeds, shown as SVG in the notebooks.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from congkit.pipeline.evaluation import mean_ci
from congkit.pipeline.methods import METHODS, label

STYLE = Path(__file__).with_name("book.mplstyle")
ROLE_COLORS = {"reference": "#9e9e9e", "ceiling": "#616161", "baseline": "#1f77b4", "ours": "#2ca02c", "arm": "#ff7f0e"}
ROLE_NAMES = {"reference": "reference model", "ceiling": "gold ceiling", "baseline": "baseline", "ours": "ConG",
              "arm": "control arm"}


def use_book_style(svg: bool = True) -> None:
    """Apply the book's matplotlib style; in a notebook, show figures as SVG."""
    plt.style.use(str(STYLE))
    if svg:
        try:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("svg")
        except ImportError:  # not in a notebook kernel
            pass


def svg_text_sizes(svg: str) -> tuple[float, list[float]]:
    """An SVG figure's drawing width (its viewBox, in the units its text sizes use) and every text size in it: what
    the style's promise (no text under 9 px at the drawn size) is checked on (matplotlib writes `font: 10px ...` or
    `font-size: 10px` with `svg.fonttype` none)."""
    box = re.search(r'viewBox="[\d.\-]+ [\d.\-]+ ([\d.]+) [\d.]+"', svg)
    sizes = [float(x) for x in re.findall(r"font(?:-size)?:\s*([\d.]+)px", svg)]
    return (float(box.group(1)) if box else float("nan")), sizes


def _legend_below(fig, handles: list, labels: list, **kwargs) -> None:
    """A figure's colour key under its panels, in one row (the book style's constrained layout makes room)."""
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False, **kwargs)


def _legend_outside(ax, **kwargs) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def head_size_vs_lambda(lambdas, sizes) -> plt.Figure:
    """Mean size of the plausibility head {v : pi_r(v) >= lambda max pi_r} against lambda
    (`congkit.study.derivation.head_sizes`)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(lambdas, sizes, marker=".")
    ax.set_xscale("log")
    ax.axvline(0.1, color="grey", ls="--", lw=1, label="λ = 0.1 (paper)")
    ax.set(title="Plausibility head size vs λ", xlabel="λ (log scale)", ylabel="tokens in the head (mean)")
    _legend_outside(ax)
    return fig


def training_curves(histories: dict[str, list[dict]], metric: str = "loss", title: str | None = None) -> plt.Figure:
    """One line per run of `metric` against optimiser step (histories from `train_history.json`)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for label_, rows in histories.items():
        pts = [(r["step"], r[metric]) for r in rows if metric in r]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label_)
    ax.set(title=title or f"Training {metric}", xlabel="optimiser step", ylabel=metric)
    _legend_outside(ax)
    return fig


def load_history(model_dir: str | Path) -> list[dict]:
    path = Path(model_dir) / "train_history.json"
    return json.loads(path.read_text()) if path.exists() else []


def implicit_vs_r_pref(pool: pd.DataFrame) -> plt.Figure:
    """Claim 1: pi_r's own samples, the weak pair's implicit reward by R_pref level (the ranking CD relies on)."""
    target = "r_pref" if "r_pref" in pool else "scores"
    levels = sorted(pool[target].unique())
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.boxplot([pool.implicit[pool[target] == v] for v in levels], positions=range(len(levels)), widths=0.5,
               showfliers=False)  # fmt: skip
    ax.set_xticks(range(len(levels)), [f"{v:g}\n(n={int((pool[target] == v).sum())})" for v in levels])
    ax.set(title="$\\pi_r$'s own samples: implicit reward by $R_{pref}$ (claim 1)", xlabel="$R_{pref}$ of the sample",
           ylabel="implicit reward $\\sum \\log \\pi_r/\\pi_{ref}$ (nats)")  # fmt: skip
    return fig


def alpha_sweep(table: pd.DataFrame) -> plt.Figure:
    """Claim 2: implicit reward, R_pref, R_cap and length of CD samples against alpha (mean and 95% CI over seeds);
    naive sampling from pi_r as a dashed line."""
    cd, naive = table[table.method == "cd"], table[table.method == "naive"]
    panels = [("implicit", "implicit reward (nats)"), ("r_pref", "$R_{pref}$"), ("r_cap", "$R_{cap}$ (correct rate)"),
              ("length", "length (characters)")]  # fmt: skip
    panels = [p for p in panels if (cd.metric == p[0]).any()]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(7, 2.8 * rows), squeeze=False)
    for ax, (metric, title) in zip(axes.flat, panels):
        stats = [(a, *mean_ci(v)) for a, v in cd[cd.metric == metric].groupby("alpha").value]
        alphas, mean, lo, hi = (np.array(c) for c in zip(*stats))
        ax.plot(alphas, mean, marker="o", label="CD")
        if np.isfinite(lo).all():
            ax.fill_between(alphas, lo, hi, alpha=0.2, label="CD 95% CI")
        nv = naive[naive.metric == metric].value
        if len(nv):
            ax.axhline(nv.mean(), color="C3", ls="--", label="naive $\\pi_r$")
        ax.set(title=title, xlabel="α")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3)
    fig.suptitle("Contrastive decoding across α (claim 2)")
    return fig


def method_panels(table: pd.DataFrame, metrics: list[tuple[str, str]], eps: float = 0.0) -> plt.Figure:
    """One panel per (metric, label): a horizontal bar per method (mean over seeds, 95% interval), coloured by role,
    the methods named once on the shared axis."""
    part = table[np.isclose(table.eps, eps) & table.alpha.isna()]
    methods = [m for m in METHODS if m in set(part[part.metric == metrics[0][0]].method)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(7, 0.28 * len(methods) + 1.2), sharey=True, squeeze=False)
    y = np.arange(len(methods))[::-1]
    for ax, (metric, label_) in zip(axes[0], metrics):
        stats = [mean_ci(part[(part.metric == metric) & (part.method == m)].value) for m in methods]
        means = np.array([st[0] for st in stats])
        err = [[st[0] - st[1] if np.isfinite(st[1]) else 0 for st in stats],
               [st[2] - st[0] if np.isfinite(st[2]) else 0 for st in stats]]  # fmt: skip
        ax.barh(y, means, xerr=err, capsize=2, color=[ROLE_COLORS[METHODS[m].role] for m in methods])
        ax.set_xlabel(tex(label_))
        ax.set_xlim(0, 1.0)
    axes[0, 0].set_yticks(y, [tex(label(m)) for m in methods])
    roles = list(dict.fromkeys(METHODS[m].role for m in methods))
    _legend_below(fig, [Patch(color=ROLE_COLORS[r]) for r in roles], [ROLE_NAMES.get(r, r) for r in roles])
    return fig


def noise_curves(table: pd.DataFrame, metric: str = "r_pref") -> plt.Figure:
    """Claim 5: each method's `metric` as the weak preference label-noise rate epsilon grows (95% CI over seeds)."""
    part = table[(table.metric == metric) & table.eps.notna() & table.alpha.isna()]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, method in enumerate(m for m in METHODS if METHODS[m].noise and m in set(part.method)):
        stats = [(e, *mean_ci(v)) for e, v in part[part.method == method].groupby("eps").value]
        eps, mean, lo, hi = (np.array(c) for c in zip(*stats))
        style = "-" if METHODS[method].role == "ours" else "--"
        ax.errorbar(eps + 0.004 * (i - 1.5), mean, yerr=[mean - lo, hi - mean] if np.isfinite(lo).all() else None,
                    fmt=style, marker="o", capsize=3, label=label(method))  # fmt: skip
    sb = part[part.method == "strong_base"].value.mean()
    ax.axhline(sb, color="grey", lw=1, ls=":", label="strong base")
    ax.set(title=f"Robustness to label noise (claim 5): {metric}",
           xlabel="fraction of weak preference pairs flipped (ε)", ylabel=metric)  # fmt: skip
    _legend_outside(ax)
    return fig


def pipeline_diagram() -> plt.Figure:
    """The ConG pipeline as boxes and arrows (the introduction's figure), drawn at the column's width with no text
    under 10 pt, so a subscript (70% of its text) stays >= 9 px where the figure is shown at its drawn size."""
    from matplotlib.patches import FancyBboxPatch

    boxes = {
        "weak": (0.0, 0.62, "weak base\n$\\pi_{ref}$"),
        "prefs": (0.205, 0.62, "preference\npairs (by $r^*$)"),
        "dpo": (0.44, 0.62, "DPO\n$\\pi_{ref} \\to \\pi_r$"),
        "cd": (0.675, 0.62, "contrastive\ndecoding"),
        "strong": (0.0, 0.08, "strong base"),
        "congs": (0.30, 0.08, "ConG-S: SFT\non CD samples"),
        "cong": (0.66, 0.08, "ConG: DPO, CD\nsample > own"),
    }
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.set_axis_off()
    ax.set_xlim(-0.015, 0.955)
    ax.set_ylim(0.05, 0.95)
    centers = {}
    for key, (x, y, text) in boxes.items():
        w, h = {"cd": 0.25, "cong": 0.28, "congs": 0.27, "prefs": 0.2}.get(key, 0.18), 0.3
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01", fc="#e8f0fe" if y > 0.5 else "#e6f4ea",
                                    ec="#444"))  # fmt: skip
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=10)
        centers[key] = (x, y, w, h)

    def arrow(a, b, label=""):
        xa, ya, wa, ha = centers[a]
        xb, yb, wb, hb = centers[b]
        start = (xa + wa, ya + ha / 2) if abs(ya - yb) < 0.1 else (xa + wa / 2, ya)
        end = (xb, yb + hb / 2) if abs(ya - yb) < 0.1 else (xb + wb / 2, yb + hb)
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", lw=1.2))
        if label:
            ax.text((start[0] + end[0]) / 2 + 0.1, (start[1] + end[1]) / 2 - 0.03, label, fontsize=10, ha="left")

    for a, b in (("weak", "prefs"), ("prefs", "dpo"), ("dpo", "cd"), ("strong", "congs"), ("congs", "cong")):
        arrow(a, b)
    arrow("cd", "congs", "CD samples")
    return fig


# --- the regime map (congkit.study.regime) -------------------------------------------------------------------------------


def tex(text: str) -> str:
    """The book's notation in a figure's text (matplotlib mathtext): R_pref -> $R_{pref}$, π_r / pi_r -> $\\pi_r$,
    ... (never inside maths already written), and the book's symbols for ASCII stand-ins (-> as →, >= as ≥)."""
    for plain, math in (("R_pref", "$R_{pref}$"), ("R_cap", "$R_{cap}$"), ("π_ref", "$\\pi_{ref}$"),
                        ("pi_ref", "$\\pi_{ref}$"), ("π_r", "$\\pi_r$"), ("pi_r", "$\\pi_r$"),
                        ("r_pref", "$R_{pref}$"), ("r_cap", "$R_{cap}$"), ("->", "\u2192"), (">=", "\u2265")):  # fmt: skip
        text = re.sub(rf"(?<![\\{{$\w]){re.escape(plain)}(?![\w}}$])", lambda _, m=math: m, text)
    return text


def _weak_rows(frame: pd.DataFrame, order: list | None) -> list:
    """The grid's weak pairs in `order` (the grid's), else as sorted."""
    present = set(frame.weak.unique())
    return [w for w in order if w in present] if order else sorted(present)


def regime_heatmaps(summary: pd.DataFrame, quantities: list[str], labels: dict[str, str],
                    order: list | None = None) -> plt.Figure:  # fmt: skip
    """One heatmap per quantity over the grid (weak pair x label noise eps), one per row: colour = mean over seeds,
    each cell annotated with the mean and its 95% interval; differences (names with `_vs_` or `gain`) on one diverging
    scale centred at 0 shared by every difference panel (a null cell stays pale beside a real effect), levels on one
    shared sequential scale; a colour bar per scale; a bold border where a difference's interval excludes 0."""
    from matplotlib.colors import Normalize, TwoSlopeNorm
    from matplotlib.patches import Rectangle

    from congkit.pipeline.evaluation import is_difference

    weak, noise = _weak_rows(summary, order), sorted(summary.eps.unique())
    fig, axes = plt.subplots(len(quantities), 1, figsize=(7, 0.45 * len(weak) * len(quantities) + 0.9 * len(quantities)),
                             squeeze=False)  # fmt: skip
    grids = {q: np.array([[summary[(summary.quantity == q) & (summary.weak == h) & (summary.eps == e)]["mean"]
                           .mean() for e in noise] for h in weak]) for q in quantities}  # fmt: skip
    differences = [g for q, g in grids.items() if is_difference(q) and np.isfinite(g).any()]
    levels = [g for q, g in grids.items() if not is_difference(q) and np.isfinite(g).any()]
    bound = max((float(np.nanmax(np.abs(g))) for g in differences), default=1.0) or 1.0
    norms = {True: TwoSlopeNorm(0.0, -bound, bound),
             False: Normalize(min((np.nanmin(g) for g in levels), default=0.0),
                              max((np.nanmax(g) for g in levels), default=1.0))}  # fmt: skip
    images = {}
    for ax, quantity in zip(axes.flat, quantities):
        part = summary[summary.quantity == quantity].set_index(["weak", "eps"])
        grid, diverging = grids[quantity], is_difference(quantity)
        image = ax.imshow(grid, cmap="RdBu" if diverging else "viridis", norm=norms[diverging], aspect="auto")
        images.setdefault(diverging, (image, []))[1].append(ax)
        for i, h in enumerate(weak):
            for j, e in enumerate(noise):
                if (h, e) not in part.index:
                    continue
                row = part.loc[(h, e)]
                text = f"{row['mean']:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]" if diverging else \
                    f"{row['mean']:.3f} ± {(row.ci_high - row.ci_low) / 2:.3f}"  # fmt: skip
                shade = image.norm(row["mean"])
                dark = (abs(shade - 0.5) > 0.3) if diverging else shade < 0.45
                ax.text(j, i, text.replace("-", "\u2212"), ha="center", va="center", fontsize=9,
                        color="white" if dark else "black")  # fmt: skip
                if diverging and row.vs_zero != "includes 0":
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black"))
        ax.set_xticks(range(len(noise)), [f"label noise ε = {e:g}" for e in noise])
        ax.set_yticks(range(len(weak)), [str(h) for h in weak])
        ax.set_title(tex(labels.get(quantity, quantity)), fontsize=10)
        ax.grid(False)
    for diverging, (image, panels) in images.items():
        fig.colorbar(image, ax=panels, shrink=0.9, pad=0.02, label="difference (0: white)" if diverging else "mean")
    return fig


def regime_predictor(summary: pd.DataFrame, predictor: str, target: str, labels: dict[str, str],
                     order: list | None = None) -> plt.Figure:  # fmt: skip
    """Each cell's target against a predictor (means with 95% intervals over seeds), marked by weak pair, coloured
    by eps, and each point labelled with its cell."""
    p = summary[summary.quantity == predictor].set_index(["weak", "eps"])
    t = summary[summary.quantity == target].set_index(["weak", "eps"])
    cells = p.index.intersection(t.index)
    markers = dict(zip(_weak_rows(summary, order), "os^Dv<>"))
    colours = dict(zip(sorted({e for _, e in cells}), ("C0", "C1", "C3", "C4", "C5")))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for h, e in cells:
        x, y = p.loc[(h, e)], t.loc[(h, e)]
        ax.errorbar(x["mean"], y["mean"], xerr=[[x["mean"] - x.ci_low], [x.ci_high - x["mean"]]],
                    yerr=[[y["mean"] - y.ci_low], [y.ci_high - y["mean"]]], fmt=markers[h], color=colours[e],
                    capsize=2)  # fmt: skip
        ax.annotate(f"{h}, ε = {e:g}", (x["mean"], y["mean"]), xytext=(5, 4), textcoords="offset points",
                    fontsize=9, color=colours[e])  # each point named where it is: no legend to decode
    ax.axhline(0, color="grey", lw=1, ls=":")
    ax.set(xlabel=tex(labels.get(predictor, predictor)), ylabel=tex(labels.get(target, target)),
           title="Per cell: the gain against its candidate predictor (95% CIs)")  # fmt: skip
    return fig


def regime_alpha_sweep(sweep: pd.DataFrame, metric: str = "r_pref", ylabel: str = "CD − naive, R_pref",
                       order: list | None = None) -> plt.Figure:  # fmt: skip
    """CD gain over naive pi_r sampling against alpha, one panel per weak pair, one line per eps (95% bands)."""
    part = sweep[sweep.metric == metric]
    sizes = _weak_rows(part, order)
    fig, axes = plt.subplots(1, len(sizes), figsize=(7, 2.9), sharey=True, squeeze=False)
    for ax, h in zip(axes[0], sizes):
        for i, (e, line) in enumerate(part[part.weak == h].groupby("eps")):
            line = line.sort_values("alpha")
            ax.plot(line.alpha, line["mean"], marker=".", color=f"C{i}", label=f"ε = {e:g}")
            if np.isfinite(line.ci_low).all():
                ax.fill_between(line.alpha, line.ci_low, line.ci_high, color=f"C{i}", alpha=0.15)
        ax.axhline(0, color="grey", lw=1, ls=":")
        ax.set_title(str(h), fontsize=10)
        ax.set_xlabel("α")
    axes[0, 0].set_ylabel(ylabel)
    handles, labels_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="outside lower center", ncols=len(handles))
    return fig


def walk_figure(steps: pd.DataFrame) -> plt.Figure:
    """The walk from ConG to WSPO (`evaluation.walk`): each step's paired difference with its 95% interval, the main
    path first; the step that carries the gap (the analysis plan's rule) in colour."""
    steps = steps.iloc[::-1]
    y = np.arange(len(steps))
    lo = (steps.estimate - steps.ci_low).fillna(0).to_numpy()
    hi = (steps.ci_high - steps.estimate).fillna(0).to_numpy()
    kinds = {"carries the gap": "#d62728", "main path": "#1f77b4", "other order": "#9e9e9e"}
    kind = ["carries the gap" if c else ("main path" if p == "main" else "other order")
            for c, p in zip(steps.carries, steps.path)]  # fmt: skip
    colors = [kinds[k] for k in kind]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(steps) + 1.2))
    ax.barh(y, steps.estimate, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(y, [tex(f"{s} ({'main' if p == 'main' else 'other order'})") for s, p in zip(steps.step, steps.path)])
    ax.axvline(0, color="black", lw=0.8)
    ax.set(title="From ConG to WSPO, one change at a time", xlabel=f"paired difference in {tex(steps.metric.iloc[0])} "
           "(95% CI)")  # fmt: skip
    shown = [k for k in kinds if k in kind]
    _legend_below(fig, [Patch(color=kinds[k]) for k in shown], shown)
    return fig


LEVEL_COLORS = {"original": "#616161", "spread": "#1f77b4", "overshoot": "#d62728"}


def plan2_forest(comparisons: pd.DataFrame, metric: str = "r_pref") -> plt.Figure:
    """Plan 2's comparisons side by side per knob level: each level's pooled estimate (dot), its crossed-bootstrap
    interval (thick) and its t-interval over world means (thin), one row per comparison, levels in the legend."""
    from congkit.study.tables import comparison_label

    part = comparisons[comparisons.metric == metric]
    pairs = list(dict.fromkeys(zip(part.a, part.b)))
    levels = list(dict.fromkeys(part.level))
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(pairs) * max(1, len(levels) / 2) + 1.6))
    step = 0.8 / max(1, len(levels))
    for i, (a, b) in enumerate(pairs[::-1]):
        for j, level in enumerate(levels):
            hit = part[(part.a == a) & (part.b == b) & (part.level == level)]
            if not len(hit):
                continue
            r, y = hit.iloc[0], i + (j - (len(levels) - 1) / 2) * step
            color = LEVEL_COLORS.get(level, "black")
            ax.plot([r.t_low, r.t_high], [y, y], color=color, lw=1)
            ax.plot([r.boot_low, r.boot_high], [y, y], color=color, lw=3.5, solid_capstyle="butt")
            ax.plot(r.estimate, y, "o", color="white", markeredgecolor=color, ms=5)
    labels = [textwrap.fill(comparison_label(a, b), 34) for a, b in pairs[::-1]]  # long names on two lines
    ax.set_yticks(range(len(pairs)), [tex(x) for x in labels], fontsize=9)
    ax.axvline(0, color="black", lw=0.8)
    ax.set(title="Plan 2: each comparison at each knob level",
           xlabel=f"paired difference in {tex(metric)}, 95%: thick bootstrap, thin t over worlds")  # fmt: skip
    _legend_below(fig, [plt.Line2D([], [], color=LEVEL_COLORS.get(v, "black"), lw=3.5) for v in levels], levels,
                  title="knob level")  # fmt: skip
    return fig
