"""When does ConG help? The regime map: the ConG pipeline over a grid of two knobs of the synthetic world.

    grid = RegimeConfig(weak_sizes=[16, 32, 64], noise_levels=[0.0, 0.2, 0.4], seeds=[0, 1, 2, 3, 4])
    table = run_regime(world, PipelineConfig(), grid, root="runs/pipeline-default")
    cells, sweep = cell_quantities(table), sweep_gains(table)

The knobs:
- **implicit-reward quality**, moved by the label-noise rate eps of the weak preference pairs (a fraction eps of
  pairs flipped before the weak DPO): the noisier the labels, the worse pi_r - pi_ref ranks pi_r's own samples.
- **weak-strong capability gap**, moved by the weak model's width (`hidden_size`; depth, heads, corpus and
  pretraining schedule as the world's weak model); the strong model is the world's, unchanged.

A cell is one (weak size, eps); every cell runs the whole pipeline (weak preferences, weak DPO, CD and plain samples,
the five strong methods, the gold ceiling, evaluation, pi_r's own-sample pool, the alpha sweep) for the same paired
seeds, through the same cached stages as the main study: the world's own weak size at eps = 0 *is* the main study's
clean setting, and reuses its artifacts.

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

from .cache import build_once, fingerprint, folder_fingerprint, write_csv_atomic
from .evaluation import claim_rows, mean_ci, per_seed, pgr_rows
from .methods import BASELINES, STRONG_METHODS
from .stages import RESULT_COLUMNS, Pipeline, PipelineConfig, Setting
from .world_build import ModelSize, World, pretrain

REGIME_COLUMNS = ["weak_size", *RESULT_COLUMNS]
CELL = ["weak_size", "eps"]


@dataclass
class RegimeConfig:
    """The grid: weak model widths (the capability-gap knob) x label-noise rates (the implicit-reward-quality knob),
    the paired seeds every cell runs, and the CD weights of each cell's alpha sweep (None: the pipeline's)."""

    weak_sizes: list[int] = field(default_factory=lambda: [16, 32, 64])
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4])
    seeds: list[int] = field(default_factory=lambda: list(range(5)))
    alpha_sweep: list[float] | None = None

    def validate(self) -> None:
        if len(self.weak_sizes) < 2 or len(self.noise_levels) < 2:
            raise ValueError(f"a regime map needs >= 2 values per knob, got weak_sizes={self.weak_sizes}, "
                             f"noise_levels={self.noise_levels}")  # fmt: skip
        if len(set(self.weak_sizes)) != len(self.weak_sizes) or any(h < 4 or h % 4 for h in self.weak_sizes):
            raise ValueError(f"weak_sizes must be distinct multiples of 4 (4 attention heads), got {self.weak_sizes}")
        if any(not 0.0 <= e < 0.5 for e in self.noise_levels):
            raise ValueError(f"noise_levels must lie in [0, 0.5) (0.5 makes the labels random), got {self.noise_levels}")
        if len(self.seeds) < 2:
            raise ValueError(f"a regime map needs >= 2 seeds for its intervals, got {self.seeds}")


def smoke_regime_config() -> RegimeConfig:
    """3 x 3 cells, two seeds: for the tests and the smoke study."""
    return RegimeConfig(weak_sizes=[16, 32, 48], noise_levels=[0.0, 0.2, 0.4], seeds=[0, 1])


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


def regime_pipeline(world: World, config: PipelineConfig, grid: RegimeConfig, hidden_size: int,
                    root: str | Path, progress: bool = True) -> Pipeline:  # fmt: skip
    """The pipeline of one column of the grid: the world's setting with the weak base of `hidden_size`."""
    setting = Setting.from_world(world)
    if hidden_size != world.config.weak.hidden_size:
        base = weak_base(world, hidden_size, root)  # its artifacts say "weak{width}" (`python -m congkit.cache ls`)
        setting = dataclasses.replace(setting, name=f"{setting.name}-weak{hidden_size}", weak_base=base,
                                      key=f"{setting.key}-weak{hidden_size}@{folder_fingerprint(base)}")  # fmt: skip
    cfg = dataclasses.replace(config, seeds=list(grid.seeds), noise_levels=list(grid.noise_levels),
                              alpha_sweep=list(grid.alpha_sweep or config.alpha_sweep),
                              methods=list(STRONG_METHODS))  # the paper's methods in every cell  # fmt: skip
    return Pipeline(setting, cfg, root=root, progress=progress)


def cell_rows(pipe: Pipeline, seed: int, eps: float, hidden_size: int) -> list[dict]:
    """Every stage of one cell and seed: all methods trained at `eps` and evaluated, PGR, pi_r's own-sample pool
    (the within-pi_r Spearman) and the alpha sweep; tidy rows (`REGIME_COLUMNS`), all carrying the cell's eps."""
    rows = pipe.evaluation_rows(seed, eps, every_method=True)
    rows += pgr_rows(pd.DataFrame(rows, columns=RESULT_COLUMNS))
    rows += claim_rows(seed, pipe.weak_pair_pool(seed, eps), pipe.alpha_sweep(seed, eps), None, pipe.config.best_of,
                       eps=eps)  # fmt: skip
    return [{"weak_size": hidden_size, **row, "eps": eps} for row in rows]


def column_rows(pipe: Pipeline, grid: RegimeConfig, hidden_size: int, seed: int) -> list[dict]:
    """One weak size and seed, every eps of the grid (the unit of work of `prebuild_regime`)."""
    return [row for eps in grid.noise_levels for row in cell_rows(pipe, seed, eps, hidden_size)]


def run_regime(world: World, config: PipelineConfig, grid: RegimeConfig, root: str | Path,
               progress: bool = True) -> pd.DataFrame:  # fmt: skip
    """Every cell and seed (cached stages: a second call only reads); the tidy table, also written to
    root/regime.csv."""
    grid.validate()
    rows = []
    for hidden_size in grid.weak_sizes:
        pipe = regime_pipeline(world, config, grid, hidden_size, root, progress)
        for seed in grid.seeds:
            rows += column_rows(pipe, grid, hidden_size, seed)
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
}


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
            means = {b: _values(cell, b, metric).mean() for b in BASELINES}
            rows.append({"weak_size": size, "eps": eps, "metric": metric, "best": max(means, key=means.get)})
    return pd.DataFrame(rows)


def cell_quantities(table: pd.DataFrame, cd_alpha: float = 0.5) -> pd.DataFrame:
    """Per cell and seed, every `QUANTITIES` entry (paired differences within a seed); columns weak_size, eps, seed,
    quantity, value. The best baseline is chosen per cell and metric by its mean over the same seeds."""
    best = best_baselines(table).set_index(["weak_size", "eps", "metric"]).best
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
        }
        for metric in ("r_pref", "r_cap"):
            by_seed[f"cong_vs_weaksft_{metric}"] = cong[metric] - _values(cell, "weaksft", metric)
            by_seed[f"cong_vs_best_{metric}"] = cong[metric] - _values(cell, best[(size, eps, metric)], metric)
        for quantity, series in by_seed.items():
            out += [{"weak_size": size, "eps": eps, "seed": s, "quantity": quantity, "value": float(v)}
                    for s, v in series.dropna().items()]  # fmt: skip
    return pd.DataFrame(out, columns=["weak_size", "eps", "seed", "quantity", "value"])


def cell_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds of every quantity in every cell, and the cell's verdict against 0
    (`above 0`, `below 0`, `includes 0`)."""
    rows = []
    for (size, eps, quantity), part in cells.groupby([*CELL, "quantity"]):
        mean, lo, hi = mean_ci(part.value)
        side = "above 0" if lo > 0 else "below 0" if hi < 0 else "includes 0"
        rows.append({"weak_size": size, "eps": eps, "quantity": quantity, "mean": mean, "ci_low": lo, "ci_high": hi,
                     "n_seeds": part.seed.nunique(), "vs_zero": side})  # fmt: skip
    return pd.DataFrame(rows)


def cell_measures(table: pd.DataFrame) -> pd.DataFrame:
    """Context per cell: the weak base's and pi_r's R_pref and R_cap, the strong base's R_cap, the best baseline."""
    best = best_baselines(table)
    rows = []
    for (size, eps), cell in table.groupby(CELL):
        row = {"weak_size": size, "eps": eps}
        for method in ("weak_base", "weak_aligned", "strong_base", "gold", "cong"):
            for metric in ("r_pref", "r_cap"):
                row[f"{method}_{metric}"] = _values(cell, method, metric).mean()
        pick = best[(best.weak_size == size) & (best.eps == eps)].set_index("metric").best
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
    reward and R_pref; columns weak_size, eps, alpha, metric, mean, ci_low, ci_high."""
    rows = []
    for (size, eps), cell in table.groupby(CELL):
        for metric in ("implicit", "r_pref"):
            naive = _values(cell, "naive", metric)
            cd = cell[(cell.method == "cd") & (cell.metric == metric)]
            for alpha, part in cd.groupby("alpha"):
                gain = part.groupby("seed").value.mean() - naive
                mean, lo, hi = mean_ci(gain.dropna())
                rows.append({"weak_size": size, "eps": eps, "alpha": alpha, "metric": metric, "mean": mean,
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
        return [f"weak width {int(r.weak_size)}, ε = {r.eps:g} ({r.mean:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}])"
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
