"""When does ConG help? The regime map: the ConG pipeline over a grid of knobs of the synthetic world.

    grid = RegimeConfig()  # four weak pairs x two label-noise rates x three seeds
    table = run_regime(world, PipelineConfig(), grid, root="runs/pipeline-default")
    cells, sweep, walks = cell_quantities(table), sweep_gains(table), cell_walks(table)

The knobs (analysis_plan.md, question 6):
- **the weak pair** (`WeakSetting`, the grid's rows): the weak base's width moves the weak-strong capability gap
  (depth, heads, corpus and pretraining schedule as the world's weak model); at the strong model's width the strong
  base is its own weak base (**self-alignment**, one of the paper's settings); a shorter weak DPO gives an
  **under-aligned pi_r**.
- **implicit-reward quality**, moved by the label-noise rate eps of the weak preference pairs (a fraction eps of
  pairs flipped before the weak DPO): the noisier the labels, the worse pi_r - pi_ref ranks pi_r's own samples.
- **WSPO's extrapolation** (beta 0.1, 0.5, 1.0): not a grid axis but arms trained in every cell, as are the other
  arms of the decomposition; every cell reports the walk from ConG to WSPO (`cell_walks`).

A cell is one (weak pair, eps); every cell runs the whole pipeline (weak preferences, weak DPO, CD and plain samples,
the five strong methods, the decomposition arms, the gold ceiling, evaluation, pi_r's own-sample pool, the alpha
sweep) for the same paired seeds, through the same cached stages as the main study: the world's own weak pair *is*
the main study's, and reuses its artifacts.

The decision rules are fixed here before any run (the chapter prints them):
- a cell where ConG "beats the best baseline": the 95% t-interval over seeds of the paired difference ConG - (the
  baseline with the highest mean in that cell, on that metric) lies above 0; "loses": it lies below 0;
- the predictor of the gain: the measured cell quantity whose Spearman rank correlation with the cell's ConG - best
  baseline (R_pref) is largest in absolute value; a rule of thumb is stated only if, at the family-wise 95% level
  (Bonferroni over the five `PREDICTORS`, since the predictor is picked after looking: each test at 0.01),
  (a) that correlation's bootstrap interval (seeds resampled, paired across cells) excludes 0, so seed noise does
  not explain it, and (b) a permutation test across cells (the predictor's cell means shuffled over cells) gives
  p < 0.01, so the cells' arrangement does not either (with 9 cells that needs |rho| >~ 0.8).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from congkit.pipeline import RESULT_COLUMNS, Pipeline, PipelineConfig, Setting, plan
from congkit.pipeline.cache import build_once, fingerprint, folder_fingerprint, write_csv_atomic
from congkit.pipeline.evaluation import claim_rows, in_run, mean_ci, per_seed, pgr_rows, value_range, walk
from congkit.pipeline.methods import label, with_role
from congkit.pipeline.world_build import ModelSize, World, pretrain

REGIME_COLUMNS = ["weak", *RESULT_COLUMNS]
CELL = ["weak", "eps"]


@dataclass(frozen=True)
class WeakSetting:
    """One row of the grid: a weak pair. `width`: the weak base's hidden size (the strong model's width means
    self-alignment: the strong base is its own weak base); `dpo_epochs`: the weak DPO's epochs (None: the pipeline's;
    fewer: an under-aligned pi_r)."""

    name: str
    width: int
    dpo_epochs: int | None = None


@dataclass
class RegimeConfig:
    """The grid: weak pairs (`WeakSetting`: capability gap, self-alignment, under-alignment) x label-noise rates (the
    implicit-reward-quality knob), the paired seeds every cell runs, and the CD weights of each cell's alpha sweep
    (None: the pipeline's). The default's widths suit the default world (weak 32, strong 96)."""

    weak: list[WeakSetting] = field(default_factory=lambda: [
        WeakSetting("width 16", 16), WeakSetting("width 32", 32), WeakSetting("width 32, under-aligned", 32, 2),
        WeakSetting("self (width 96)", 96)])  # fmt: skip
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.4])
    seeds: list[int] = field(default_factory=lambda: list(range(3)))
    alpha_sweep: list[float] | None = None

    def validate(self) -> None:
        if len(self.weak) < 2 or len(self.noise_levels) < 2:
            raise ValueError(f"a regime map needs >= 2 values per knob, got {len(self.weak)} weak pairs and "
                             f"noise_levels={self.noise_levels}")  # fmt: skip
        if len({w.name for w in self.weak}) != len(self.weak) or len(set(self.weak)) != len(self.weak):
            raise ValueError(f"the weak pairs must be distinct, with distinct names, got {self.weak}")
        if any(w.width < 4 or w.width % 4 for w in self.weak):
            raise ValueError(f"weak widths must be multiples of 4 (4 attention heads), got {[w.width for w in self.weak]}")
        if any(w.dpo_epochs is not None and w.dpo_epochs < 1 for w in self.weak):
            raise ValueError(f"a weak DPO needs >= 1 epoch, got {[w.dpo_epochs for w in self.weak]}")
        if any(not 0.0 <= e < 0.5 for e in self.noise_levels):
            raise ValueError(f"noise_levels must lie in [0, 0.5) (0.5 makes the labels random), got {self.noise_levels}")
        if len(self.seeds) < 2:
            raise ValueError(f"a regime map needs >= 2 seeds for its intervals, got {self.seeds}")

    def describe(self, default_epochs: int) -> list[str]:
        """Each weak pair in words (the chapter's parameter table)."""
        return [f"{w.name}: width {w.width}, weak DPO {w.dpo_epochs or default_epochs} epochs" for w in self.weak]

    def rows(self) -> list[str]:
        """The weak pairs' names in grid order (the figures' and tables' row order)."""
        return [w.name for w in self.weak]


def smoke_regime_config() -> RegimeConfig:
    """Four weak pairs (smoke world: weak 32, strong 64) x two noise rates, two seeds: for the tests and the smoke
    study."""
    return RegimeConfig(weak=[WeakSetting("width 16", 16), WeakSetting("width 32", 32),
                              WeakSetting("width 32, under-aligned", 32, 1), WeakSetting("self (width 64)", 64)],
                        noise_levels=[0.0, 0.4], seeds=[0, 1])  # fmt: skip


def weak_base(world: World, hidden_size: int, root: str | Path) -> str:
    """The world's weak base model at another width: same corpus, tokenizer, depth, heads, pretraining schedule and
    seed as the world's own weak model (which is returned as is at its own width). Cached under root/weak_base."""
    own = world.config.weak
    if hidden_size == own.hidden_size:
        return str(world.model_path("weak_base"))
    size = ModelSize(hidden_size, own.num_layers, own.num_heads)
    path = Path(root).resolve() / "weak_base" / fingerprint(world.path.name, dataclasses.asdict(size),
                                                            dataclasses.asdict(world.config.weak_train))  # fmt: skip

    def build(tmp: Path) -> None:
        # the world's weak model takes seed data.seed + 1 (world_build.build_world); so does every width
        pretrain(size, world.tokenizer(), world.corpus(), world.config.weak_train, world.config.data.seed + 1, tmp)

    build_once(path, build, meta={"world": world.path.name, **dataclasses.asdict(size)},
               label=f"weak base of width {hidden_size}")  # fmt: skip
    return str(path)


def regime_pipeline(world: World, config: PipelineConfig, grid: RegimeConfig, weak: WeakSetting,
                    root: str | Path, progress: bool = True) -> Pipeline:  # fmt: skip
    """The pipeline of one row of the grid: the world's setting with `weak`'s weak base (the strong base itself at
    the strong width: self-alignment) and weak DPO."""
    setting = Setting.from_world(world)
    if weak.width == world.config.strong.hidden_size:
        base = str(world.model_path("strong_base"))
        setting = dataclasses.replace(setting, name=f"{setting.name}-self", weak_base=base, key=f"{setting.key}-self")
    elif weak.width != world.config.weak.hidden_size:
        base = weak_base(world, weak.width, root)  # its artifacts say "weak{width}" (`python -m congkit.pipeline.cache ls`)
        setting = dataclasses.replace(setting, name=f"{setting.name}-weak{weak.width}", weak_base=base,
                                      key=f"{setting.key}-weak{weak.width}@{folder_fingerprint(base)}")  # fmt: skip
    weak_dpo = config.weak_dpo if weak.dpo_epochs is None else dataclasses.replace(config.weak_dpo,
                                                                                   num_train_epochs=weak.dpo_epochs)
    paper = with_role("baseline", "ours")
    arms = [m for m in config.methods if m not in paper]  # the decomposition arms the study trains
    cfg = dataclasses.replace(config, seeds=list(grid.seeds), noise_levels=list(grid.noise_levels),
                              alpha_sweep=list(grid.alpha_sweep or config.alpha_sweep), weak_dpo=weak_dpo,
                              methods=[*paper, *arms])  # fmt: skip
    return Pipeline(setting, cfg, root=root, progress=progress)


def cell_rows(pipe: Pipeline, seed: int, eps: float, weak: str) -> list[dict]:
    """Every stage of one cell and seed: all methods trained at `eps` and evaluated, PGR, pi_r's own-sample pool
    (the within-pi_r Spearman) and the alpha sweep; tidy rows (`REGIME_COLUMNS`), all carrying the cell's eps."""
    rows = pipe.evaluation_rows(seed, eps, every_method=True)
    rows += pgr_rows(pd.DataFrame(rows, columns=RESULT_COLUMNS))
    rows += claim_rows(seed, pipe.weak_pair_pool(seed, eps), pipe.alpha_sweep(seed, eps), None, pipe.config.best_of,
                       eps=eps)  # fmt: skip
    return [{"weak": weak, **row, "eps": eps} for row in rows]


def column_rows(pipe: Pipeline, grid: RegimeConfig, weak: str, seed: int) -> list[dict]:
    """One weak pair and seed, every eps of the grid (the unit of work of `prebuild_regime`)."""
    return [row for eps in grid.noise_levels for row in cell_rows(pipe, seed, eps, weak)]


def run_regime(world: World, config: PipelineConfig, grid: RegimeConfig, root: str | Path,
               progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """Every cell and seed (cached stages: a second call only reads); the tidy table, also written to
    root/regime.csv."""
    grid.validate()
    rows = []
    for weak in grid.weak:
        pipe = regime_pipeline(world, config, grid, weak, root, progress)
        for seed in grid.seeds:
            rows += column_rows(pipe, grid, weak.name, seed)
    table = pd.DataFrame(rows, columns=REGIME_COLUMNS)
    write_csv_atomic(table, Path(root) / "regime.csv")
    return table


# --- per-cell quantities ------------------------------------------------------------------------------------------

QUANTITIES = {  # name -> what it is (the chapter's tables and figures use these labels)
    "spearman": "Spearman(implicit reward, R_pref) within π_r's samples",
    "cd_gain_implicit": "CD gain over naive π_r sampling, implicit reward (nats)",
    "cd_gain_r_pref": "CD gain over naive π_r sampling, R_pref",
    "cong_vs_weaksft_r_pref": "ConG − WeakSFT, R_pref",
    "cong_vs_weaksft_r_cap": "ConG − WeakSFT, R_cap",
    "cong_vs_best_r_pref": "ConG − best baseline, R_pref",
    "cong_vs_best_r_cap": "ConG − best baseline, R_cap",
    "pgr": "ConG's PGR (from π_r, on R_pref)",
    "pi_r_r_pref": "π_r's R_pref",
    "capability_gap": "strong base − weak base, R_cap",
    "cd_vs_head_r_pref": "CD − the head alone (α 1), R_pref",
    "wspo_b05_vs_wspo_r_pref": "WSPO β 0.5 − WSPO β 0.1, R_pref",
    "wspo_b10_vs_wspo_r_pref": "WSPO β 1.0 − WSPO β 0.1, R_pref",
}
WALK_STEPS = {  # the decomposition's steps, ConG -> ConG-S -> SFT on weak chosen -> WSPO (analysis_plan.md)
    f"{end}_vs_{start}_r_pref": (start, end) for start, end in plan.value("decomposition", "walk")}
QUANTITIES |= {q: f"{label(end)} − {label(start)}, R_pref" for q, (start, end) in WALK_STEPS.items()}


PREDICTORS = ("spearman", "cd_gain_implicit", "cd_gain_r_pref", "pi_r_r_pref", "capability_gap")
TARGET = "cong_vs_best_r_pref"


def _values(cell: pd.DataFrame, method: str, metric: str, alpha: float | None = None) -> pd.Series:
    """seed -> value of one (method, metric[, alpha]) within one cell (all its rows carry the cell's eps)."""
    return per_seed(cell, method, metric, eps=float(cell.eps.iloc[0]), alpha=alpha)


def best_baselines(table: pd.DataFrame) -> pd.DataFrame:
    """Per cell and metric (r_pref, r_cap): the baseline with the highest mean over seeds."""
    rows = []
    for (size, eps), cell in table.groupby(CELL):
        for metric in ("r_pref", "r_cap"):
            means = {b: _values(cell, b, metric).mean() for b in in_run(cell, "baseline")}
            rows.append({"weak": size, "eps": eps, "metric": metric, "best": max(means, key=means.get)})
    return pd.DataFrame(rows)


def cell_quantities(table: pd.DataFrame, cd_alpha: float = 0.5) -> pd.DataFrame:
    """Per cell and seed, every `QUANTITIES` entry (paired differences within a seed); columns weak, eps, seed,
    quantity, value. The best baseline is chosen per cell and metric by its mean over the same seeds."""
    best = best_baselines(table).set_index(["weak", "eps", "metric"]).best
    out = []
    for (size, eps), cell in table.groupby(CELL):
        cong = {m: _values(cell, "cong", m) for m in ("r_pref", "r_cap")}
        by_seed = {
            "spearman": _values(cell, "weak_pair", "spearman_within_pi_r"),
            "cd_gain_implicit": _values(cell, "cd", "implicit", cd_alpha) - _values(cell, "naive", "implicit"),
            "cd_gain_r_pref": _values(cell, "cd", "r_pref", cd_alpha) - _values(cell, "naive", "r_pref"),
            "pgr": _values(cell, "cong", "pgr"),
            "pi_r_r_pref": _values(cell, "weak_aligned", "r_pref"),
            "capability_gap": _values(cell, "strong_base", "r_cap") - _values(cell, "weak_base", "r_cap"),
            "cd_vs_head_r_pref": _values(cell, "cd", "r_pref", cd_alpha) - _values(cell, "cd", "r_pref", 1.0),
        }
        for arm in ("wspo_b05", "wspo_b10"):
            by_seed[f"{arm}_vs_wspo_r_pref"] = _values(cell, arm, "r_pref") - _values(cell, "wspo", "r_pref")
        for quantity, (start, end) in WALK_STEPS.items():
            by_seed[quantity] = _values(cell, end, "r_pref") - _values(cell, start, "r_pref")
        for metric in ("r_pref", "r_cap"):
            by_seed[f"cong_vs_weaksft_{metric}"] = cong[metric] - _values(cell, "weaksft", metric)
            by_seed[f"cong_vs_best_{metric}"] = cong[metric] - _values(cell, best[(size, eps, metric)], metric)
        for quantity, series in by_seed.items():
            out += [{"weak": size, "eps": eps, "seed": s, "quantity": quantity, "value": float(v)}
                    for s, v in series.dropna().items()]  # fmt: skip
    return pd.DataFrame(out, columns=["weak", "eps", "seed", "quantity", "value"])


def cell_walks(table: pd.DataFrame) -> pd.DataFrame:
    """The walk from ConG to WSPO (`evaluation.walk`) in every cell: each step's paired difference over seeds with
    its interval, its share of the cell's gap, and whether it carries the gap under the plan's rule."""
    parts = [walk(cell).assign(weak=size, eps=eps) for (size, eps), cell in table.groupby(CELL)
             if (cell.method == "wspo").any()]  # fmt: skip
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def carrying_steps(walks: pd.DataFrame, order: list | None = None) -> pd.DataFrame:
    """Per cell, the step of the main walk that carries the ConG - WSPO gap under the plan's rule, or "no single
    step"; columns "weak pair", "ε", in the grid's order."""
    rows = []
    for (weak, eps), cell in walks[walks.path == "main"].groupby(CELL):
        step = cell.loc[cell.carries, "step"]
        rows.append({"weak pair": weak, "ε": eps, "the step that carries ConG − WSPO": step.iloc[0] if len(step)
                     else "no single step"})  # fmt: skip
    out = pd.DataFrame(rows)
    if order and len(out):
        out = out.sort_values(["weak pair", "ε"], key=lambda c: c.map(order.index) if c.name == "weak pair" else c)
    return out.reset_index(drop=True)


def cell_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds of every quantity in every cell, and the cell's verdict against 0
    (`above 0`, `below 0`, `includes 0`)."""
    rows = []
    for (size, eps, quantity), part in cells.groupby([*CELL, "quantity"]):
        mean, lo, hi = mean_ci(part.value, bounds=value_range(quantity))
        side = "above 0" if lo > 0 else "below 0" if hi < 0 else "includes 0"
        rows.append({"weak": size, "eps": eps, "quantity": quantity, "mean": mean, "ci_low": lo, "ci_high": hi,
                     "n_seeds": part.seed.nunique(), "vs_zero": side})  # fmt: skip
    return pd.DataFrame(rows)


def cell_measures(table: pd.DataFrame) -> pd.DataFrame:
    """Context per cell: the weak base's and pi_r's R_pref and R_cap, the strong base's R_cap, the best baseline."""
    best = best_baselines(table)
    rows = []
    for (size, eps), cell in table.groupby(CELL):
        row = {"weak": size, "eps": eps}
        for method in ("weak_base", "weak_aligned", "strong_base", "gold", "cong"):
            for metric in ("r_pref", "r_cap"):
                row[f"{method}_{metric}"] = _values(cell, method, metric).mean()
        pick = best[(best.weak == size) & (best.eps == eps)].set_index("metric").best
        row.update({f"best_baseline_{m}": pick[m] for m in ("r_pref", "r_cap")})
        rows.append(row)
    return pd.DataFrame(rows)


def predictor_correlations(cells: pd.DataFrame, target: str = TARGET, predictors=PREDICTORS, n_boot: int = 2000,
                           seed: int = 0, confidence: float | None = None) -> pd.DataFrame:  # fmt: skip
    """Spearman rank correlation, across cells, between each predictor's cell mean and the target's cell mean, with
    a percentile bootstrap interval: seeds resampled with replacement, the same draw in every cell (paired). The
    interval's level (column `confidence`) is family-wise 95% over the predictors (Bonferroni) unless given."""
    confidence = confidence if confidence is not None else 1 - 0.05 / len(predictors)
    wide = cells.pivot_table(index=[*CELL, "seed"], columns="quantity", values="value")
    seeds = np.array(sorted(cells.seed.unique()))
    cell_keys = sorted({k[:2] for k in wide.index})
    # values[c, s, q]: quantity q of cell c at seed s (NaN where missing)
    columns = [target, *predictors]
    values = np.stack([wide.reindex(pd.MultiIndex.from_tuples([(*c, s) for s in seeds]))[columns].to_numpy()
                       for c in cell_keys])  # fmt: skip

    def rho(sample: np.ndarray) -> np.ndarray:
        means = np.nanmean(sample, axis=1)  # cells x quantities
        return np.array([_spearman(means[:, 1 + i], means[:, 0]) for i in range(len(predictors))])

    estimate = rho(values)
    means = np.nanmean(values, axis=1)
    perm_p = [_permutation_p(means[:, 1 + i], means[:, 0], estimate[i], seed) for i in range(len(predictors))]
    rng = np.random.default_rng(seed)
    boots = np.array([rho(values[:, rng.integers(0, len(seeds), len(seeds)), :]) for _ in range(n_boot)])
    tail = (1 - confidence) / 2 * 100
    rows = []
    for i, name in enumerate(predictors):
        b = boots[:, i][np.isfinite(boots[:, i])]
        lo, hi = (np.percentile(b, [tail, 100 - tail]) if len(b) > n_boot // 2 else (math.nan, math.nan))
        rows.append({"predictor": name, "label": QUANTITIES[name], "spearman": estimate[i], "ci_low": float(lo),
                     "ci_high": float(hi), "confidence": confidence, "permutation_p": perm_p[i],
                     "n_cells": len(cell_keys)})  # fmt: skip
    return pd.DataFrame(rows)


def _permutation_p(x: np.ndarray, y: np.ndarray, observed: float, seed: int, n: int = 20000) -> float:
    """Two-sided p-value of a Spearman correlation across cells: x shuffled over cells `n` times."""
    if not np.isfinite(observed):
        return math.nan
    rng = np.random.default_rng(seed)
    ok = np.isfinite(x) & np.isfinite(y)
    rx, ry = stats.rankdata(x[ok]), stats.rankdata(y[ok])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    perms = np.array([rng.permutation(rx) for _ in range(n)])
    rhos = perms @ ry / math.sqrt((rx**2).sum() * (ry**2).sum())
    return float((np.abs(rhos) >= abs(observed) - 1e-12).mean())


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def sweep_gains(table: pd.DataFrame) -> pd.DataFrame:
    """The alpha sweep per cell: CD minus naive pi_r sampling (same seed's draws) at every alpha, for the implicit
    reward and R_pref; columns weak, eps, alpha, metric, mean, ci_low, ci_high."""
    rows = []
    for (size, eps), cell in table.groupby(CELL):
        for metric in ("implicit", "r_pref"):
            naive = _values(cell, "naive", metric)
            cd = cell[(cell.method == "cd") & (cell.metric == metric)]
            for alpha, part in cd.groupby("alpha"):
                gain = part.groupby("seed").value.mean() - naive
                mean, lo, hi = mean_ci(gain.dropna(), bounds=value_range(f"cd_gain_{metric}"))
                rows.append({"weak": size, "eps": eps, "alpha": alpha, "metric": metric, "mean": mean,
                             "ci_low": lo, "ci_high": hi})  # fmt: skip
    return pd.DataFrame(rows)


def best_alphas(sweep: pd.DataFrame, metric: str = "r_pref") -> pd.DataFrame:
    """Per cell, the alpha whose mean CD gain on `metric` is largest (the grid of `RegimeConfig.alpha_sweep`)."""
    part = sweep[sweep.metric == metric]
    picks = part.loc[part.groupby(CELL)["mean"].idxmax(), [*CELL, "alpha", "mean"]]
    return picks.rename(columns={"alpha": "best_alpha", "mean": "gain_at_best"}).reset_index(drop=True)


def regime_findings(summary: pd.DataFrame, correlations: pd.DataFrame) -> dict[str, str]:
    """The chapter's computed summary, by the rules in the module docstring: which cells ConG wins and loses against
    the best baseline (R_pref and R_cap), and the rule of thumb the predictor correlations support, if any."""

    def cells(quantity: str, side: str) -> list[str]:
        part = summary[(summary.quantity == quantity) & (summary.vs_zero == side)]
        return [f"{r.weak}, ε = {r.eps:g} ({r.mean:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}])"
                for r in part.itertuples()]  # fmt: skip

    n_cells = summary[summary.quantity == TARGET].shape[0]
    out = {"n_cells": str(n_cells)}
    for metric in ("r_pref", "r_cap"):
        part = summary[summary.quantity == f"cong_vs_best_{metric}"]
        for side, word in (("above 0", "wins"), ("below 0", "losses")):
            hits = cells(f"cong_vs_best_{metric}", side)
            if hits and len(hits) == n_cells:  # every cell: the range says more than nine entries
                means = part["mean"]
                out[f"{word}_{metric}"] = f"every cell, by {means.abs().min():.3f} to {means.abs().max():.3f}"
            else:
                out[f"{word}_{metric}"] = "; ".join(hits) if hits else "none"
            out[f"n_{word}_{metric}"] = str(len(hits))
    ranked = correlations.dropna(subset=["spearman"])
    if ranked.empty:
        out["rule_of_thumb"] = "No predictor varies across the cells: no rule of thumb can be measured."
        return out
    top = ranked.loc[ranked.spearman.abs().idxmax()]
    interval = (f"ρ = {top.spearman:+.2f} over {int(top.n_cells)} cells, {top.confidence:.0%} interval "
                f"[{top.ci_low:+.2f}, {top.ci_high:+.2f}]")  # fmt: skip
    out["best_predictor"] = f"{top.label} ({interval})"
    level = 1 - top.confidence
    interval += f", permutation p = {top.permutation_p:.3f}"
    seeds_ok = np.isfinite(top.ci_low) and (top.ci_low > 0 or top.ci_high < 0)
    cells_ok = top.permutation_p < level
    if seeds_ok and cells_ok:
        direction = "larger" if top.spearman > 0 else "smaller"
        out["rule_of_thumb"] = (f"The data support one rule of thumb: ConG's margin over the best baseline (R_pref) "
                                f"is larger where {top.label} is {direction} ({interval}).")  # fmt: skip
    else:
        why = [w for w, bad in (("its interval includes 0", not seeds_ok),
                                (f"the permutation test across cells gives p >= {level:.2g}", not cells_ok)) if bad]  # fmt: skip
        out["rule_of_thumb"] = (f"The data support no rule of thumb: the strongest predictor, {top.label} "
                                f"({interval}), fails the rule: {' and '.join(why)}.")  # fmt: skip
    return out
