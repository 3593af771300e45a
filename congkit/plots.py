"""Figures for the book. Each function takes tidy data and returns a matplotlib Figure with title, labels, units."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .evaluation import mean_ci
from .methods import BY_NAME, METHOD_LABELS, METHOD_ORDER


def head_size_vs_lambda(expert_logp: torch.Tensor, lambdas=None) -> plt.Figure:
    """Mean size of the plausibility head {v : pi_r(v) >= lambda max pi_r} over a batch of next-token distributions."""
    lambdas = np.asarray(lambdas if lambdas is not None else np.geomspace(1e-4, 1.0, 40))
    max_logp = expert_logp.max(-1, keepdim=True).values
    sizes = [float((expert_logp >= max_logp + np.log(lam)).sum(-1).float().mean()) for lam in lambdas]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(lambdas, sizes, marker=".")
    ax.set_xscale("log")
    ax.axvline(0.1, color="grey", ls="--", lw=1, label="lambda = 0.1 (paper)")
    ax.set(title="Plausibility head size vs lambda", xlabel="lambda (log scale)", ylabel="tokens in head (mean)")
    ax.legend()
    fig.tight_layout()
    return fig


def training_curves(histories: dict[str, list[dict]], metric: str = "loss") -> plt.Figure:
    """One line per run of `metric` against optimiser step (histories from `train_history.json`)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for label, rows in histories.items():
        pts = [(r["step"], r[metric]) for r in rows if metric in r]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    ax.set(title=f"Training {metric}", xlabel="optimiser step", ylabel=metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def load_history(model_dir: str | Path) -> list[dict]:
    path = Path(model_dir) / "train_history.json"
    return json.loads(path.read_text()) if path.exists() else []


def implicit_vs_r_pref(pool: pd.DataFrame) -> plt.Figure:
    """Claim 1: pi_r's own samples, the weak pair's implicit reward against R_pref (the ranking CD relies on)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    rng = np.random.default_rng(0)
    target = "r_pref" if "r_pref" in pool else "scores"
    jitter = rng.uniform(-0.02, 0.02, len(pool))  # R_pref takes five values; jitter shows density
    ax.scatter(pool.implicit, pool[target] + jitter, s=6, alpha=0.3)
    ax.set(title="pi_r's samples: implicit reward vs R_pref (claim 1)",
           xlabel="implicit reward: sum of log pi_r/pi_ref over response tokens (nats)", ylabel="R_pref")  # fmt: skip
    fig.tight_layout()
    return fig


def alpha_sweep(table: pd.DataFrame) -> plt.Figure:
    """Claim 2: implicit reward, R_pref, R_cap and length of CD samples against alpha; naive sampling as lines."""
    cd, naive = table[table.method == "cd"], table[table.method == "naive"]
    panels = [("implicit", "implicit reward (nats)"), ("r_pref", "R_pref"), ("r_cap", "R_cap (correct rate)"),
              ("length", "length (characters)")]  # fmt: skip
    panels = [p for p in panels if (cd.metric == p[0]).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 * len(panels), 3.4), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        part = cd[cd.metric == metric].groupby("alpha").value
        stats = [(a, *mean_ci(v)) for a, v in part]
        alphas, mean = [s[0] for s in stats], [s[1] for s in stats]
        ax.plot(alphas, mean, marker="o", label="CD")
        lo, hi = [s[2] for s in stats], [s[3] for s in stats]
        if np.isfinite(lo).all():
            ax.fill_between(alphas, lo, hi, alpha=0.2)
        nv = naive[naive.metric == metric].value
        if len(nv):
            ax.axhline(nv.mean(), color="C3", ls="--", label="naive pi_r")
        ax.set(title=label, xlabel="alpha")
    axes[0][0].legend()
    fig.suptitle("Contrastive decoding across alpha (claim 2)")
    fig.tight_layout()
    return fig


def method_bars(table: pd.DataFrame, metric: str = "r_pref", eps: float = 0.0, ylabel: str | None = None):
    """Mean over seeds with 95% interval, one bar per method."""
    part = table[(table.metric == metric) & np.isclose(table.eps, eps) & table.alpha.isna()]
    methods = [m for m in METHOD_ORDER if m in set(part.method)]
    stats = [mean_ci(part[part.method == m].value) for m in methods]
    means = [s[0] for s in stats]
    err = [
        [s[0] - s[1] if np.isfinite(s[1]) else 0 for s in stats],
        [s[2] - s[0] if np.isfinite(s[2]) else 0 for s in stats],
    ]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    colors = {"reference": "C7", "ceiling": "C7", "baseline": "C0", "ours": "C2"}
    ax.bar([METHOD_LABELS[m] for m in methods], means, yerr=err, capsize=3,
           color=[colors[BY_NAME[m].role] for m in methods])  # fmt: skip
    ax.set(title=f"{metric} by method (eps = {eps}, mean and 95% CI over seeds)", ylabel=ylabel or metric)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def noise_curves(table: pd.DataFrame, metric: str = "r_pref") -> plt.Figure:
    """Claim 5: each method's `metric` as the weak preference label-noise rate epsilon grows."""
    part = table[(table.metric == metric) & table.eps.notna() & table.alpha.isna()]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method in [m for m in METHOD_ORDER if BY_NAME[m].noise and m in set(part.method)]:
        g = part[part.method == method].groupby("eps").value
        stats = [(e, *mean_ci(v)) for e, v in g]
        eps, mean = [s[0] for s in stats], [s[1] for s in stats]
        style = "-" if method.startswith("cong") else "--"
        ax.plot(eps, mean, style, marker="o", label=METHOD_LABELS[method])
    sb = part[part.method == "strong_base"].value.mean()
    ax.axhline(sb, color="grey", lw=1, ls=":", label="strong base")
    ax.set(title=f"Robustness to label noise (claim 5): {metric}",
           xlabel="fraction of weak preference pairs flipped (epsilon)", ylabel=metric)  # fmt: skip
    ax.legend(fontsize=8, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig


def pipeline_diagram() -> plt.Figure:
    """The ConG pipeline as boxes and arrows (the book's introduction figure)."""
    from matplotlib.patches import FancyBboxPatch

    boxes = {
        "weak": (0.02, 0.62, "weak base\n$\\pi_{ref}$"),
        "prefs": (0.22, 0.62, "weak preference data\n(samples ranked by r*)"),
        "dpo": (0.45, 0.62, "DPO\n$\\pi_{ref} \\to \\pi_r$"),
        "cd": (0.66, 0.62, "contrastive decoding\n$\\log\\pi_r - (1-\\alpha)\\log\\pi_{ref}$"),
        "strong": (0.02, 0.12, "strong base"),
        "congs": (0.30, 0.12, "ConG-S\nSFT on CD samples"),
        "cong": (0.58, 0.12, "ConG\nDPO: CD sample > own sample"),
    }
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.set_axis_off()
    centers = {}
    for key, (x, y, text) in boxes.items():
        w, h = {"cd": 0.3, "cong": 0.24}.get(key, 0.18), 0.26
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01", fc="#e8f0fe" if y > 0.5 else "#e6f4ea",
                                    ec="#444"))  # fmt: skip
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)
        centers[key] = (x, y, w, h)

    def arrow(a, b, label=""):
        xa, ya, wa, ha = centers[a]
        xb, yb, wb, hb = centers[b]
        start = (xa + wa, ya + ha / 2) if abs(ya - yb) < 0.1 else (xa + wa / 2, ya)
        end = (xb, yb + hb / 2) if abs(ya - yb) < 0.1 else (xb + wb / 2, yb + hb)
        ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", lw=1.2))
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.03, label, fontsize=8, ha="center")

    arrow("weak", "prefs")
    arrow("prefs", "dpo")
    arrow("dpo", "cd")
    arrow("strong", "congs")
    arrow("congs", "cong")
    arrow("cd", "congs", "CD samples")
    ax.set_title(
        "ConG: extract the alignment direction of a weak pair by contrastive decoding, train the strong model on it"
    )
    return fig
