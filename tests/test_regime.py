"""The regime map: its per-cell arithmetic on hand-made tables (fast), and the smoke grid end to end (slow)."""

import math

import numpy as np
import pandas as pd
import pytest

from congkit.pipeline.methods import with_role
from congkit.study import regime
from congkit.study.regime import REGIME_COLUMNS, RegimeConfig, WeakSetting


def _table(cells: dict, seeds=(0, 1, 2)) -> pd.DataFrame:
    """A regime table from {(size, eps): {method: {metric: value or per-seed list}}}; alpha rows via ("cd", alpha)."""
    rows = []
    for (size, eps), methods in cells.items():
        for method, metrics in methods.items():
            method, alpha = method if isinstance(method, tuple) else (method, math.nan)
            for metric, value in metrics.items():
                values = value if isinstance(value, list) else [value] * len(seeds)
                rows += [dict(weak=size, method=method, seed=s, eps=eps, alpha=alpha, metric=metric, value=v)
                         for s, v in zip(seeds, values)]  # fmt: skip
    return pd.DataFrame(rows, columns=REGIME_COLUMNS)


def _cell(cong_pref, baselines_pref, spearman, cd_gain=0.1, gap=0.5):
    out = {
        "cong": {"r_pref": cong_pref, "r_cap": 0.6, "pgr": 0.5},
        "weak_base": {"r_cap": 0.3, "r_pref": 0.6},
        "strong_base": {"r_cap": 0.3 + gap},
        "weak_aligned": {"r_pref": 0.8},
        "weak_pair": {"spearman_within_pi_r": spearman},
        ("cd", 0.5): {"implicit": 1.0 + cd_gain, "r_pref": 0.8 + cd_gain},
        ("cd", 1.0): {"implicit": 2.0, "r_pref": 0.85},
        "naive": {"implicit": 1.0, "r_pref": 0.8},
    }
    for name, value in zip(with_role("baseline"), baselines_pref):
        out[name] = {"r_pref": value, "r_cap": 0.55}
    return out


def test_cell_quantities_are_paired_differences_against_the_best_baseline():
    table = _table({(16, 0.0): _cell([0.9, 0.8, 0.7], [[0.7, 0.7, 0.7], [0.85, 0.75, 0.65], [0.1, 0.1, 0.1]], 0.6)})
    best = regime.best_baselines(table)
    assert best[best.metric == "r_pref"].best.item() == with_role("baseline")[1]  # highest mean R_pref
    q = regime.cell_quantities(table).set_index(["quantity", "seed"]).value
    assert q[("cong_vs_best_r_pref", 0)] == pytest.approx(0.05) and q[("cong_vs_best_r_pref", 2)] == pytest.approx(0.05)
    assert q[("cong_vs_weaksft_r_pref", 1)] == pytest.approx(0.8 - 0.7)
    assert q[("cd_gain_r_pref", 0)] == pytest.approx(0.1) and q[("cd_gain_implicit", 0)] == pytest.approx(0.1)
    assert q[("capability_gap", 0)] == pytest.approx(0.5) and q[("spearman", 1)] == pytest.approx(0.6)
    summary = regime.cell_summary(regime.cell_quantities(table)).set_index("quantity")
    assert summary.loc["cong_vs_best_r_pref", "vs_zero"] == "above 0"  # 0.05 at every seed: zero-width interval
    assert summary.loc["cong_vs_best_r_cap", "mean"] == pytest.approx(0.05)


def test_predictor_correlation_finds_the_quantity_that_orders_the_gain_and_the_findings_follow_the_rule():
    rng = np.random.default_rng(0)
    cells = {}
    for i, (size, eps) in enumerate([(h, e) for h in (16, 32, 64) for e in (0.0, 0.2, 0.4)]):
        gain = 0.02 * i - 0.08  # ConG - best grows with the cell's Spearman; the gap is unrelated (alternates)
        cong = list(0.7 + gain + rng.normal(0, 0.002, 4))
        cells[(size, eps)] = _cell(cong, [0.7, 0.6, 0.5], 0.1 * i + rng.normal(0, 0.001), gap=0.3 + 0.1 * (i % 2))
    cq = regime.cell_quantities(_table(cells, seeds=(0, 1, 2, 3)))
    corr = regime.predictor_correlations(cq, n_boot=300).set_index("predictor")
    assert corr.loc["spearman", "spearman"] == pytest.approx(1.0)
    assert corr.loc["spearman", "ci_low"] > 0.9
    assert abs(corr.loc["capability_gap", "spearman"]) < 0.5
    assert corr.loc["spearman", "permutation_p"] < 0.001  # 1/9! of orderings are as extreme
    assert math.isnan(corr.loc["pi_r_r_pref", "spearman"])  # constant across cells: no correlation
    assert corr.confidence.iloc[0] == pytest.approx(0.99)  # family-wise over five predictors
    found = regime.regime_findings(regime.cell_summary(cq), corr.reset_index())
    assert found["n_wins_r_pref"] == "4" and found["n_losses_r_pref"] == "4"  # 0.0 in the middle cell: neither
    assert "support one rule of thumb" in found["rule_of_thumb"] and "larger" in found["rule_of_thumb"]
    assert "Spearman" in found["best_predictor"]


def test_no_rule_of_thumb_when_the_best_predictor_interval_includes_zero():
    rng = np.random.default_rng(1)
    cells = {(h, e): _cell(list(0.7 + rng.normal(0, 0.05, 3)), [0.7, 0.6, 0.5], list(0.5 + rng.normal(0, 0.05, 3)))
             for h in (16, 32) for e in (0.0, 0.4)}  # fmt: skip
    cq = regime.cell_quantities(_table(cells))
    corr = regime.predictor_correlations(cq, n_boot=300)
    found = regime.regime_findings(regime.cell_summary(cq), corr)
    assert found["rule_of_thumb"].startswith("The data support no rule of thumb")
    assert "permutation test across cells" in found["rule_of_thumb"]  # 4 cells: p >= 2/24 whatever the data
    assert (corr.dropna(subset=["spearman"]).permutation_p >= 2 / 24 - 1e-9).all()


def test_sweep_gains_and_best_alpha():
    table = _table({(16, 0.0): _cell(0.8, [0.7, 0.6, 0.5], 0.5, cd_gain=0.02)})
    sweep = regime.sweep_gains(table)
    gains = sweep[sweep.metric == "r_pref"].set_index("alpha")["mean"]
    assert gains[0.5] == pytest.approx(0.02) and gains[1.0] == pytest.approx(0.05)
    assert regime.best_alphas(sweep).best_alpha.item() == 1.0


@pytest.mark.parametrize(
    "grid, message",
    [
        (RegimeConfig(weak=[WeakSetting("a", 16)]), ">= 2 values per knob"),
        (RegimeConfig(weak=[WeakSetting("a", 16), WeakSetting("b", 18)]), "multiples of 4"),
        (RegimeConfig(weak=[WeakSetting("a", 16), WeakSetting("a", 32)]), "distinct names"),
        (RegimeConfig(weak=[WeakSetting("a", 16), WeakSetting("b", 16, 0)]), ">= 1 epoch"),
        (RegimeConfig(noise_levels=[0.0, 0.5]), "0.5 makes the labels random"),
        (RegimeConfig(seeds=[0]), ">= 2 seeds"),
    ],
)
def test_grid_validation_names_the_problem(grid, message):
    with pytest.raises(ValueError, match=message):
        grid.validate()


def test_profiles_without_a_world_have_no_regime_map():
    from congkit.study import get_profile, regime_objects

    assert get_profile("regime").chapters() == ["06_regime.md"]
    assert "06_regime.md" not in get_profile("default").chapters() and "06_regime.md" in get_profile("smoke").chapters()
    with pytest.raises(ValueError, match="no regime map"):
        regime_objects("real", "/nonexistent")


def test_the_smoke_grid_is_complete(smoke_world):
    """Every cell, every quantity, two seeds, finite intervals; the world's own weak pair reuses its weak base, the
    self-alignment row's weak base is the strong base, the under-aligned row's pi_r trains fewer epochs; every cell
    has its walk from ConG to WSPO."""
    from congkit.study import get_profile, regime_objects

    world, grid, pipes = regime_objects("smoke", smoke_world.path.parent, progress=False)
    assert len(grid.weak) == 4 and len(grid.noise_levels) >= 2
    assert pipes["width 32"].setting.weak_base == str(world.model_path("weak_base"))
    assert pipes["self (width 64)"].setting.weak_base == str(world.model_path("strong_base"))
    under = pipes["width 32, under-aligned"]
    assert under.config.weak_dpo.num_train_epochs == 1 < pipes["width 32"].config.weak_dpo.num_train_epochs
    assert under.weak_aligned(0, 0.0) != pipes["width 32"].weak_aligned(0, 0.0)
    config = get_profile("smoke").pipeline
    table = regime.run_regime(world, config, grid, next(iter(pipes.values())).root, progress=False)
    cells = regime.cell_quantities(table, config.cd_alpha)
    summary = regime.cell_summary(cells)
    assert len(summary) == len(grid.weak) * len(grid.noise_levels) * len(regime.QUANTITIES)
    assert (summary.n_seeds == len(grid.seeds)).all()
    assert np.isfinite(summary[["mean", "ci_low", "ci_high"]].to_numpy()).all()
    self_gap = summary[(summary.quantity == "capability_gap") & (summary.weak == "self (width 64)")]["mean"]
    assert (self_gap == 0).all()  # the same base on both sides
    sweep = regime.sweep_gains(table)
    assert len(sweep) == len(grid.weak) * len(grid.noise_levels) * len(config.alpha_sweep) * 2
    walks = regime.cell_walks(table)
    assert len(walks) == len(grid.weak) * len(grid.noise_levels) * 5 and walks.estimate.notna().all()
    carried = regime.carrying_steps(walks, grid.rows())
    assert list(carried["weak pair"]) == [w for w in grid.rows() for _ in grid.noise_levels]
    # the knob moves the weak pair: flipped labels lower pi_r's preference reward in every row
    pi_r = summary[summary.quantity == "pi_r_r_pref"].set_index(["weak", "eps"])["mean"]
    assert all(pi_r[(h, 0.0)] >= pi_r[(h, max(grid.noise_levels))] - 0.02 for h in grid.rows())


def test_findings_summarise_a_grid_where_every_cell_loses():
    cells = {(h, e): _cell([0.5, 0.51, 0.49], [0.7, 0.6, 0.5], [0.3, 0.4, 0.5]) for h in (16, 32) for e in (0.0, 0.4)}
    cq = regime.cell_quantities(_table(cells))
    found = regime.regime_findings(regime.cell_summary(cq), regime.predictor_correlations(cq, n_boot=100))
    assert found["n_losses_r_pref"] == "4" and found["losses_r_pref"] == "every cell, by 0.200 to 0.200"
    assert found["wins_r_pref"] == "none"
