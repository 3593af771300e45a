"""Metrics, summaries and verdicts on hand-built tables: each rule checked for the outcomes it can give."""

import math

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from scipy import stats

from congkit.evaluation import (
    claim_rows,
    main_table,
    mean_ci,
    paired_differences,
    pgr_rows,
    summarise,
    verdicts,
    win_rate,
)


def test_win_rate_counts_ties_half():
    assert win_rate([[1, 0], [0.5, 0.2]], [[0, 0], [0.5, 0.9]]) == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    with pytest.raises(ValueError, match="paired samples"):
        win_rate([[1, 0]], [[1, 0, 1]])


def test_mean_ci_is_the_t_interval():
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert mean == 2.0 and lo == pytest.approx(2.0 - half) and hi == pytest.approx(2.0 + half)
    assert mean_ci([1.0, 2.0, 3.0, float("nan")]) == (mean, lo, hi)  # NaN values are dropped
    one = mean_ci([0.4])
    assert one[0] == 0.4 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(x) for x in mean_ci([]))


def rows(method, setting, metric, values):
    return [dict(method=method, seed=s, setting=setting, metric=metric, value=v) for s, v in enumerate(values)]


def test_pgr_rows():
    table = pd.DataFrame(
        rows("weak_aligned", "eps=0.0", "reward", [0.4, 0.5])
        + rows("gold", "eps=0.0", "reward", [0.8, 0.5])  # seed 1: no gap, no PGR
        + rows("cong", "eps=0.0", "reward", [0.7, 0.6])
        + rows("weak_base", "eps=0.0", "reward", [0.1, 0.1])
    )
    out = pd.DataFrame(pgr_rows(table))
    assert list(out.method) == ["cong"] and list(out.seed) == [0]
    assert out.value.iloc[0] == pytest.approx((0.7 - 0.4) / (0.8 - 0.4))


def test_claim_rows_spearman_per_source_and_sweep_means():
    pool = Dataset.from_dict({
        "source": ["pi_r"] * 4 + ["pi_ref"] * 4,
        "implicit": [1, 2, 3, 4, 1, 2, 3, 4],
        "explicit": [0.1, 0.2, 0.3, 0.4, 0.4, 0.3, 0.2, 0.1],
    })  # fmt: skip
    sweep = Dataset.from_dict({
        "alpha": [0.0, 0.0, 1.0, 1.0, float("nan"), float("nan")],
        "prompt": ["a", "b"] * 3,
        "response": ["x", "x", "y", "z", "u", "v"],
        "implicit": [1.0, 3.0, 0.0, 2.0, 0.5, 0.5],
        "explicit": [0.2, 0.4, 0.6, 0.6, 0.1, 0.3],
        "length": [1, 1, 1, 1, 1, 3],
    })  # fmt: skip
    out = pd.DataFrame(claim_rows(7, pool, sweep)).set_index(["method", "setting", "metric"]).value
    assert out["weak_pair", "pool:pi_r", "spearman_implicit_explicit"] == pytest.approx(1.0)
    assert out["weak_pair", "pool:pi_ref", "spearman_implicit_explicit"] == pytest.approx(-1.0)
    assert out["weak_pair", "pool", "spearman_implicit_explicit"] == pytest.approx(
        stats.spearmanr(pool["implicit"], pool["explicit"]).statistic
    )
    assert out["cd", "alpha=0.0", "implicit"] == 2.0 and out["cd", "alpha=0.0", "distinct"] == 0.5
    assert out["cd", "alpha=1.0", "explicit"] == pytest.approx(0.6)
    assert out["naive", "pi_r", "length"] == 2.0 and out["naive", "pi_r", "distinct"] == 1.0


def study_table(rho=0.5, cd_gain=(0.05, 0.04), cong=0.7, baseline=0.6, retention=0.95, drop_cong=0.01,
                drop_sft=0.1, seeds=3):  # fmt: skip
    """A results table with every row `verdicts` reads; knobs move each claim across its rule."""
    rng = np.random.default_rng(0)
    jitter = lambda: rng.normal(0, 0.002, seeds)  # noqa: E731
    t = rows("weak_pair", "pool", "spearman_implicit_explicit", rho + jitter())
    for metric, gain in zip(("implicit", "explicit"), cd_gain):
        base = 0.3 + jitter()
        t += rows("naive", "pi_r", metric, base)
        t += rows("cd", "alpha=0.5", metric, base + gain + jitter())
        t += rows("cd", "alpha=1.0", metric, base + 0.2)  # never counts: alpha = 1 is not contrastive
    for method, reward in (("cong_s", cong), ("cong", cong), ("weaksft", baseline), ("auxconf", baseline - 0.01),
                           ("wspo", baseline - 0.02)):  # fmt: skip
        drop = drop_sft if method == "weaksft" else drop_cong
        t += rows(method, "eps=0.0", "reward", reward + jitter())
        t += rows(method, "eps=0.4", "reward", reward - drop + jitter())
        t += rows(method, "eps=0.0", "win_rate", 0.5 + jitter())
        t += rows(method, "eps=0.0", "retention", retention + jitter())
    return pd.DataFrame(t)


def holds(table):
    return dict(zip(verdicts(table).claim.str[:1], verdicts(table).holds))


def test_verdicts_hold_when_the_table_says_so():
    assert holds(study_table()) == {"1": True, "2": True, "3": True, "4": True, "5": True}


@pytest.mark.parametrize(
    "knobs, claim",
    [
        (dict(rho=0.1), "1"),
        (dict(cd_gain=(0.05, -0.04)), "2"),  # CD better on implicit reward only
        (dict(cd_gain=(0.05, 0.04), seeds=1), "2"),  # one seed: no interval, nothing significant
        (dict(cong=0.5), "3"),
        (dict(retention=0.8), "4"),
        (dict(drop_cong=0.2), "5"),
    ],
)
def test_each_verdict_fails_when_its_rule_is_not_met(knobs, claim):
    got = holds(study_table(**knobs))
    assert got[claim] is False
    assert all(v for k, v in got.items() if k != claim)


def test_paired_differences_use_common_seeds_only():
    table = pd.DataFrame(rows("a", "s", "m", [1.0, 2.0, 3.0]) + rows("b", "s", "m", [0.5, 0.5]))
    assert paired_differences(table, ("a", "s"), ("b", "s"), "m") == [0.5, 1.5]


def test_summarise_and_main_table():
    table = study_table()
    summary = summarise(table)
    hit = summary[(summary.method == "cong") & (summary.metric == "reward") & (summary.setting == "eps=0.0")].iloc[0]
    assert hit.n_seeds == 3 and hit.ci_low < hit["mean"] < hit.ci_high
    assert hit["mean"] == pytest.approx(table[(table.method == "cong") & (table.metric == "reward")
                                              & (table.setting == "eps=0.0")].value.mean())  # fmt: skip
    main = main_table(table)
    assert list(main.index) == ["WeakSFT", "AuxConf", "WSPO", "ConG-S", "ConG"]
    assert main.loc["ConG", "reward"].startswith(f"{hit['mean']:.3f} ± ")
