"""Metrics, preconditions and the pre-registered verdicts on hand-built tables: every rule checked for each outcome
it can give (holds, does not hold, inconclusive, untestable here)."""

import math

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from scipy import stats

from congkit.pipeline import smoke_pipeline_config
from congkit.pipeline.evaluation import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    UNTESTABLE,
    claim_rows,
    holm_intervals,
    main_table,
    mean_ci,
    pgr_rows,
    preconditions,
    smallest_detectable_effect,
    summarise,
    three_way,
    verdicts,
    win_rate,
    within_prompt_ranking,
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


def test_three_way_and_holm():
    assert three_way(0.01, 0.2) == HOLDS and three_way(-0.3, -0.01) == DOES_NOT_HOLD
    assert three_way(-0.1, 0.1) == INCONCLUSIVE and three_way(math.nan, math.nan) == INCONCLUSIVE
    assert three_way(-0.015, 0.1, threshold=-0.02) == HOLDS
    rng = np.random.default_rng(0)
    diffs = {"clear": 0.1 + rng.normal(0, 0.01, 10), "weak": 0.01 + rng.normal(0, 0.01, 10)}
    holm = holm_intervals(diffs)
    # the smallest p-value gets the 1 - 0.05/2 interval, the next the plain 95% interval
    assert holm["clear"] == pytest.approx(mean_ci(diffs["clear"], 1 - 0.05 / 2))
    assert holm["weak"] == pytest.approx(mean_ci(diffs["weak"], 0.95))


def row(method, seed, metric, value, eps=math.nan, alpha=math.nan):
    return dict(method=method, seed=seed, eps=eps, alpha=alpha, metric=metric, value=value)


def test_pgr_rows_from_weak_aligned_and_from_strong_base():
    t = pd.DataFrame([
        row("weak_aligned", 0, "r_pref", 0.4, eps=0.0), row("strong_base", 0, "r_pref", 0.5, eps=0.0),
        row("gold", 0, "r_pref", 0.9, eps=0.0), row("cong", 0, "r_pref", 0.7, eps=0.0),
        row("cong", 0, "r_pref", 0.6, eps=0.4), row("weak_aligned", 0, "r_pref", 0.3, eps=0.4),
        row("weak_base", 0, "r_pref", 0.1, eps=0.0),
    ])  # fmt: skip
    out = pd.DataFrame(pgr_rows(t)).set_index(["eps", "metric"]).value
    assert out[0.0, "pgr"] == pytest.approx((0.7 - 0.4) / (0.9 - 0.4))
    assert out[0.0, "pgr_strong"] == pytest.approx((0.7 - 0.5) / (0.9 - 0.5))
    assert out[0.4, "pgr"] == pytest.approx((0.6 - 0.3) / (0.9 - 0.3))  # the noisy replicate's own weak teacher
    assert out[0.4, "pgr_strong"] == pytest.approx((0.6 - 0.5) / (0.9 - 0.5))


def test_within_prompt_ranking():
    pool = pd.DataFrame({
        "prompt": ["a"] * 4 + ["b"] * 4 + ["c"] * 4,
        "k": [0, 1, 2, 3] * 3,
        "implicit": [1, 2, 3, 4, 4, 3, 2, 1, 1, 2, 3, 4],
        "r_pref": [0.0, 0.25, 0.5, 1.0, 0.0, 0.25, 0.5, 1.0, 0.5, 0.5, 0.5, 0.5],  # c: all tied, skipped
    })  # fmt: skip
    rho, recovery = within_prompt_ranking(pool, "implicit", "r_pref", best_of=2)
    assert rho == pytest.approx(0.0)  # +1 for a, -1 for b
    # groups of 2: a: (0,.25) picks .25, (.5,1) picks 1; b: picks 0 and .5; c: no gain possible
    gains = (0.125 + 0.25) + (-0.125 - 0.25)
    assert recovery == pytest.approx(gains / (0.125 + 0.25 + 0.125 + 0.25))


def test_the_same_response_drawn_twice_ranks_as_a_tie():
    """Implicit rewards of one response differ by float rounding across batch positions (~1e-6): ranked as ties, so
    the Spearman is that of the responses, not of the rounding."""
    pool = pd.DataFrame({"prompt": ["a"] * 4, "k": [0, 1, 2, 3], "r_pref": [0.5, 0.5, 0.0, 1.0],
                         "implicit": [1.0, 1.0 + 2e-6, 0.0, 2.0]})  # draws 0 and 1: one response  # fmt: skip
    flipped = pool.assign(implicit=[1.0 + 2e-6, 1.0, 0.0, 2.0])
    rho, _ = within_prompt_ranking(pool, "implicit", "r_pref", best_of=2)
    assert rho == pytest.approx(1.0) and within_prompt_ranking(flipped, "implicit", "r_pref", best_of=2)[0] == rho
    apart = pool.assign(implicit=[1.0, 1.01, 0.0, 2.0])  # a real difference still ranks
    assert within_prompt_ranking(apart, "implicit", "r_pref", best_of=2)[0] < 1.0


def test_claim_rows_from_pool_probes_and_sweep():
    pool = Dataset.from_dict({"prompt": ["a"] * 3, "k": [0, 1, 2], "implicit": [1.0, 2.0, 3.0],
                              "r_pref": [0.25, 0.5, 1.0]})  # fmt: skip
    probes = Dataset.from_dict({"attribute": ["format", "format", "length"], "implicit_better": [1.0, 0.0, 2.0],
                                "implicit_worse": [0.0, 1.0, 1.0]})  # fmt: skip
    sweep = Dataset.from_dict({
        "alpha": [0.0, 0.0, float("nan"), float("nan")], "prompt": ["a", "b"] * 2, "response": ["x", "x", "u", "v"],
        "implicit": [1.0, 3.0, 0.5, 0.5], "scores": [0.2, 0.4, 0.1, 0.3], "r_pref": [0.5, 0.5, 0.25, 0.75],
        "r_cap": [1.0, 0.0, 1.0, 1.0], "length": [1, 1, 1, 3],
    })  # fmt: skip
    out = pd.DataFrame(claim_rows(7, pool, sweep, probes, best_of=3)).set_index(["method", "metric"])
    assert out.value["weak_pair", "spearman_within_pi_r"] == pytest.approx(1.0)
    assert out.value["weak_pair", "best_of_k_recovery"] == pytest.approx(1.0)
    assert out.value["weak_pair", "probe:format"] == 0.5 and out.value["weak_pair", "probe:length"] == 1.0
    assert out.value["cd", "implicit"] == 2.0 and out.loc[("cd", "implicit"), "alpha"] == 0.0
    assert out.value["cd", "distinct"] == 0.5 and out.value["naive", "r_cap"] == 1.0
    assert out.value["naive", "length"] == 2.0 and math.isnan(out.loc[("naive", "length"), "alpha"])


def study_table(seeds=10, probe=0.95, rho=0.6, recovery=0.6, weak_base=0.5, weak_aligned=0.75, gold=0.95,
                strong_base=0.55, strong_cap=0.9, weak_cap=0.3, cd_gain=(0.05, 0.03), ours=0.85, baselines=0.8,
                ours_cap=0.88, base_cap=0.88, heldout=(0.95, 0.95), drop=(0.02, 0.08), noise=0.002,
                head_share=0.5):  # fmt: skip
    """A results table with every row the preconditions and verdicts read; knobs move each rule across its
    thresholds (defaults: every precondition met and every claim holds)."""
    rng = np.random.default_rng(0)
    t = []

    def add(method, metric, value, eps=math.nan, alpha=math.nan, sd=noise):
        for s in range(seeds):
            t.append(row(method, s, metric, value + rng.normal(0, sd), eps, alpha))

    for attribute in ("format", "length"):
        add("weak_pair", f"probe:{attribute}", probe)
    add("weak_pair", "spearman_within_pi_r", rho)
    add("weak_pair", "best_of_k_recovery", recovery)
    for metric, gain in zip(("implicit", "r_pref"), cd_gain):
        add("naive", metric, 0.3, eps=0.0)
        add("cd", metric, 0.3 + gain, eps=0.0, alpha=0.5)
        add("cd", metric, 0.3 + head_share * gain, eps=0.0, alpha=1.0)  # the head alone (claims 2b, 2c)
        add("cd", metric, 0.3 + 0.4, eps=0.0, alpha=0.0)  # never read: claims are judged at the plan's alpha
    models = {"weak_base": (weak_base, weak_cap), "weak_aligned": (weak_aligned, weak_cap), "gold": (gold, 0.9),
              "strong_base": (strong_base, strong_cap), "weaksft": (baselines, base_cap),
              "auxconf": (baselines - 0.01, base_cap), "wspo": (baselines - 0.02, base_cap),
              "cong_s": (ours, ours_cap), "cong": (ours, ours_cap)}  # fmt: skip
    for method, (pref, cap) in models.items():
        add(method, "r_pref", pref, eps=0.0)
        add(method, "r_cap", cap, eps=0.0)
        add(method, "heldout_accuracy", heldout[0] if method == "cong" else heldout[1], eps=0.0)
    for method, d in (("cong", drop[0]), ("weaksft", drop[1])):
        add(method, "r_pref", models[method][0] - d, eps=0.4)
    return pd.DataFrame(t)


def verdict_of(table, claim):
    v = verdicts(table, config=smoke_pipeline_config())
    return v.set_index(v.claim.str.split(".").str[0]).verdict[claim]


def test_all_preconditions_met_and_every_claim_holds_on_the_default_table():
    table = study_table()
    conditions = preconditions(table)
    assert conditions.met.all(), conditions[~conditions.met]
    v = verdicts(table, conditions, smoke_pipeline_config())
    assert list(v.verdict) == [HOLDS] * 8 and set(v.columns) >= {"claim", "verdict", "estimate", "ci_low", "ci_high",
                                                                  "rule"}  # fmt: skip
    assert v.estimate.notna().all() and (v.ci_low < v.ci_high).all()


@pytest.mark.parametrize(
    "knobs, claim, verdict",
    [
        (dict(rho=-0.3), "1", DOES_NOT_HOLD),
        (dict(rho=0.0, noise=0.05), "1", INCONCLUSIVE),
        (dict(cd_gain=(0.05, -0.03)), "2", DOES_NOT_HOLD),
        (dict(cd_gain=(0.05, 0.0), noise=0.02), "2", INCONCLUSIVE),
        (dict(head_share=1.5), "2b", DOES_NOT_HOLD),  # the contrast lowers what the head alone gives
        (dict(head_share=1.0, noise=0.01), "2b", INCONCLUSIVE),  # CD's gain is all the head's
        (dict(head_share=1.0, noise=0.01), "2c", HOLDS),
        (dict(head_share=-0.5), "2c", DOES_NOT_HOLD),
        (dict(ours=0.7), "3a", DOES_NOT_HOLD),
        (dict(ours=0.8, noise=0.002), "3a", INCONCLUSIVE),  # ties WeakSFT
        (dict(ours_cap=0.8), "3a", DOES_NOT_HOLD),  # better on R_pref, but loses capability
        (dict(heldout=(0.85, 0.95)), "4", DOES_NOT_HOLD),
        (dict(heldout=(0.93, 0.95), noise=0.002), "4", INCONCLUSIVE),  # -0.02 inside the interval
        (dict(drop=(0.1, 0.02)), "5", DOES_NOT_HOLD),
        (dict(drop=(0.05, 0.05)), "5", INCONCLUSIVE),
    ],
)
def test_each_verdict_rule(knobs, claim, verdict):
    table = study_table(**knobs)
    assert verdict_of(table, claim) == verdict


@pytest.mark.parametrize(
    "knobs, unmet, untestable",
    [
        (dict(probe=0.8), "attribute probe: format", {"2", "2b", "2c", "3a", "3b", "5"}),
        (dict(rho=0.3), "Spearman", {"3a", "3b", "5"}),
        (dict(weak_aligned=0.6), "share of the R_pref headroom", {"1", "2", "2b", "2c", "3a", "3b", "5"}),
        (dict(strong_cap=0.7), "strong base correct rate", {"4"}),
        (dict(gold=0.85), "gold ceiling minus weak aligned", {"3a", "3b", "5"}),
        (dict(noise=0.03), "smallest detectable", {"3a", "3b", "4", "5"}),
        (dict(seeds=1), "smallest detectable", {"3a", "3b", "4", "5"}),  # one seed: nothing is detectable
    ],
)
def test_an_unmet_precondition_makes_its_claims_untestable(knobs, unmet, untestable):
    table = study_table(**knobs)
    conditions = preconditions(table)
    assert not conditions[conditions.condition.str.startswith(unmet)].met.any()
    v = verdicts(table, conditions, smoke_pipeline_config())
    got = set(v.claim.str.split(".").str[0][v.verdict == UNTESTABLE])
    assert got == untestable
    assert all(unmet in u for u in v.unmet[v.verdict == UNTESTABLE])


def test_smallest_detectable_effect_is_the_median_ci_half_width():
    table = study_table(noise=0.01)
    widths = []
    for ours in ("cong_s", "cong"):
        for base in ("weaksft", "auxconf", "wspo"):
            a = table[(table.method == ours) & (table.metric == "r_pref") & (table.eps == 0.0)].set_index("seed").value
            b = table[(table.method == base) & (table.metric == "r_pref") & (table.eps == 0.0)].set_index("seed").value
            _, lo, hi = mean_ci((a - b).to_numpy())
            widths.append((hi - lo) / 2)
    assert smallest_detectable_effect(table) == pytest.approx(np.median(widths))


def test_summarise_and_main_table():
    table = study_table()
    summary = summarise(table)
    hit = summary[(summary.method == "cong") & (summary.metric == "r_pref") & (summary.eps == 0.0)].iloc[0]
    assert hit.n_seeds == 10 and hit.ci_low < hit["mean"] < hit.ci_high
    main = main_table(table)
    assert list(main.index)[:3] == ["weak base (π_ref)", "weak aligned (π_r)", "strong base"]
    assert main.loc["ConG", ("r_pref", "mean")] == pytest.approx(hit["mean"])
    assert main.loc["ConG", ("r_pref", "±95%")] == pytest.approx((hit.ci_high - hit.ci_low) / 2)


def test_a_judge_without_a_capability_channel_makes_the_capability_claim_untestable_not_false():
    """A reward-model judge: no R_cap and no held-out set. Claim 4 is untestable here, saying why; claim 3 is judged
    on R_pref alone (and can hold); the R_cap preconditions are not applicable and block nothing."""
    table = study_table()
    table = table[~table.metric.isin(["r_cap", "heldout_accuracy"])]
    conditions = preconditions(table)
    capability = conditions[conditions.id.isin(["strong_capability", "capability_gap"])]
    assert not capability.applicable.any() and conditions[conditions.applicable].met.all()
    v = verdicts(table, conditions, smoke_pipeline_config()).set_index("claim")
    four = v.loc[v.index.str.startswith("4.")].iloc[0]
    assert four.verdict == UNTESTABLE and "no channel for r_cap / heldout_accuracy / mc_accuracy" in four.unmet
    three = v.loc[v.index.str.startswith("3a.")].iloc[0]
    assert three.verdict == HOLDS and "judged on R_pref alone" in three.rule


def test_rule_texts_are_filled_from_the_run():
    config = smoke_pipeline_config()
    config.cd_alpha = 0.3
    table = study_table()
    table.loc[table.eps == 0.4, "eps"] = 0.2
    rules = verdicts(table, config=config).set_index(verdicts(table, config=config).claim.str.split(".").str[0]).rule
    assert "(0.3)" in rules["2"] and "eps 0 -> 0.2" in rules["5"] and "-0.02" in rules["4"]
    assert "{" not in "".join(rules)


def test_a_claim_naming_an_unknown_precondition_is_refused(monkeypatch):
    from congkit.pipeline import evaluation

    typo = evaluation.Claim("x", "rule", ("ranking_spearmann",), lambda t, c: None)
    monkeypatch.setattr(evaluation.rules, "CLAIMS", (*evaluation.CLAIMS, typo))
    with pytest.raises(ValueError, match=r"unknown precondition id\(s\) \['ranking_spearmann'\]"):
        evaluation.rules._check_registries()


def test_a_metric_is_one_registry_entry(monkeypatch):
    """Adding a metric: one `Metric` entry; evaluation rows and the book's table headers follow."""
    from congkit.pipeline import evaluation
    from congkit.study import tables

    extra = evaluation.Metric("short", "share of short answers", True, lambda r, ref: float(np.mean(
        [[n < 5 for n in row] for row in r["lengths"]])))  # fmt: skip
    monkeypatch.setattr(evaluation.metrics, "METRICS", (*evaluation.METRICS, extra))
    rows = evaluation.evaluation_rows("cong", 0, 0.0, {"scores": [[1.0]], "lengths": [[3, 9]]}, {"scores": [[0.5]]})
    assert {r["metric"]: r["value"] for r in rows}["short"] == 0.5
    assert tables.header("short") == "share of short answers" and tables.higher_is_better("short")


def test_the_walk_from_cong_to_wspo_names_the_step_that_carries_the_gap():
    """ConG 0.70, ConG-S 0.71, SFT on chosen 0.72, WSPO 0.85: the loss step (SFT -> WSPO) carries the gap."""
    from congkit.pipeline.evaluation import decomposition_rows, walk

    rng = np.random.default_rng(1)
    values = {"cong": 0.70, "cong_s": 0.71, "sft_chosen": 0.72, "wspo": 0.85, "wspo_cd": 0.83, "wspo_plain": 0.8,
              "wspo_b05": 0.8, "wspo_b10": 0.78, "bon_implicit": 0.75}  # fmt: skip
    table = pd.DataFrame([row(m, s, "r_pref", v + rng.normal(0, 0.003), 0.0) for m, v in values.items()
                          for s in range(8)])  # fmt: skip
    steps = walk(table).set_index("step")
    loss = steps.loc["SFT on weak chosen -> WSPO"]
    assert loss.carries and loss.estimate == pytest.approx(0.13, abs=0.01) and loss.share == pytest.approx(0.87, abs=0.05)
    assert steps.carries.sum() == 1
    assert steps.loc["ConG -> ConG-S"].estimate == pytest.approx(0.01, abs=0.005)
    assert set(steps.path) == {"main", "other"}
    rows = decomposition_rows(table, world=2)
    assert list(rows.columns) == ["arm", "world", "seed", "metric", "value"] and set(rows.world) == {2}
    assert set(rows.arm) == set(values) and len(rows) == 8 * len(values)
    tied = table.assign(value=np.where(table.method == "wspo", table.value - 0.15, table.value))
    assert not walk(tied).carries.any()  # no gap to carry: nothing is named


def slow_bootstrap_draw(values, rng):
    """One draw written out level by level (the reference for the vectorised-per-level implementation)."""
    worlds = list(values.values())
    means = []
    for _ in worlds:
        world = worlds[rng.integers(len(worlds))]
        seeds = list(world.values())
        seed_means = []
        for _ in seeds:
            v = np.asarray(seeds[rng.integers(len(seeds))])
            seed_means.append(v[rng.integers(len(v), size=len(v))].mean())
        means.append(np.mean(seed_means))
    return np.mean(means)


def test_hierarchical_bootstrap_resamples_worlds_seeds_and_prompts():
    from congkit.pipeline.evaluation import hierarchical_bootstrap, world_signs

    rng = np.random.default_rng(0)
    values = {w: {s: rng.normal(0.1 * (w + 1), 0.2, 50) for s in range(4)} for w in range(3)}
    mean, lo, hi = hierarchical_bootstrap(values, draws=1000, seed=1)
    nested = np.mean([np.mean([v.mean() for v in seeds.values()]) for seeds in values.values()])
    assert mean == pytest.approx(nested) and lo < mean < hi
    reference = np.array([slow_bootstrap_draw(values, np.random.default_rng(s)) for s in range(1000)])
    assert (hi - lo) == pytest.approx(np.subtract(*np.percentile(reference, [97.5, 2.5])), rel=0.25)
    # worlds that disagree widen the interval beyond what seeds alone give
    one_world = {0: {(w, s): v for w, seeds in values.items() for s, v in seeds.items()}}
    _, lo1, hi1 = hierarchical_bootstrap(one_world, draws=1000, seed=1)
    assert hi - lo > 1.5 * (hi1 - lo1)
    assert world_signs(values) == pytest.approx({w: np.mean([v.mean() for v in values[w].values()]) for w in values})
    assert all(math.isnan(x) for x in hierarchical_bootstrap({}))


def test_pooled_over_worlds_the_interval_is_the_hierarchical_bootstrap_over_worlds_and_seeds():
    from congkit.pipeline.evaluation import hierarchical_bootstrap, mean_ci

    values = pd.Series([0.1, 0.3, 0.2, 0.6, 0.5], index=pd.MultiIndex.from_tuples(
        [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)], names=["world", "seed"]))  # fmt: skip
    nested = {0: {0: [0.1], 1: [0.3]}, 1: {0: [0.2], 1: [0.6], 2: [0.5]}}
    assert mean_ci(values) == hierarchical_bootstrap(nested)
    assert mean_ci(values)[0] == pytest.approx((0.2 + 1.3 / 3) / 2)  # worlds weigh equally
    assert mean_ci(values.droplevel(0).reset_index(drop=True))[0] == pytest.approx(0.34)  # one level: the t-interval


def test_world_verdicts_pool_worlds_check_each_world_and_apply_the_sign_rule():
    from congkit.pipeline.evaluation import world_verdicts

    config = smoke_pipeline_config()
    same = world_verdicts({0: study_table(), 1: study_table(), 2: study_table()}, config)
    assert list(same.verdict) == [HOLDS] * 8 and set(same[[f"verdict_world_{w}" for w in range(3)]].stack()) == {HOLDS}
    # world 5's ConG loses to WeakSFT: the pooled interval lies above 0, but the estimate flips there
    tables = {w: study_table(ours=0.82) for w in range(5)} | {5: study_table(ours=0.795)}
    flipped = world_verdicts(tables, config)
    row = flipped.set_index(flipped.claim.str.split(".").str[0]).loc["3a"]
    assert row.world_5 < 0 < row.world_0 and row.verdict_world_5 != HOLDS and row.ci_low > 0
    assert row.verdict == INCONCLUSIVE and row.note == "flips sign in world 5"
    # a precondition unmet in one world makes its claims untestable, naming the world
    unmet = world_verdicts({0: study_table(), 1: study_table(probe=0.8)}, config)
    row = unmet.set_index(unmet.claim.str.split(".").str[0]).loc["2"]
    assert row.verdict == UNTESTABLE and "attribute probe: format (world 1)" in row.unmet
    assert "world 0" not in row.unmet


@pytest.mark.parametrize("values, quantity", [([0.0, 1.0], "r_pref"), ([1.0, 1.0, 0.999], "probe:format"),
                                              ([-1.0, 1.0], "spearman"), ([0.9, -0.9], "cong_vs_best_r_pref"),
                                              ([0.99, 1.0], "strong_capability")])  # fmt: skip
def test_no_interval_passes_the_range_of_its_quantity(values, quantity):
    """Two seeds give a t-interval 12.7 standard errors wide: clipped to what the quantity can take."""
    from congkit.pipeline.evaluation import mean_ci, value_range

    low, high = value_range(quantity)
    mean, lo, hi = mean_ci(values, bounds=(low, high))
    unclipped = mean_ci(values)
    assert low <= lo <= mean <= hi <= high and (unclipped[1] < low or unclipped[2] > high)
    assert mean_ci([0.5, 0.5], bounds=(0, 1)) == (0.5, 0.5, 0.5)  # a constant column: a zero-width interval
    assert value_range("cd_gain_implicit") == (-math.inf, math.inf) and value_range("pgr") == (-math.inf, math.inf)


def test_summaries_and_preconditions_clip_to_the_range():
    table = study_table(seeds=2, probe=0.999, noise=0.01)
    summary = summarise(table)
    pref = summary[summary.metric == "r_pref"]
    assert (pref.ci_low >= 0).all() and (pref.ci_high <= 1).all()
    conditions = preconditions(table).set_index("id")
    assert conditions.loc["probe:format", "ci_high"] <= 1.0


def slow_crossed_draw(values, rng):
    """One crossed draw written out: worlds resampled, then per drawn world its seeds and one prompt resample that
    all of its drawn seeds share."""
    worlds = list(values.values())
    means = []
    for _ in worlds:
        world = list(worlds[rng.integers(len(worlds))].values())
        prompts = rng.integers(len(world[0]), size=len(world[0]))
        means.append(np.mean([np.asarray(world[rng.integers(len(world))])[prompts].mean() for _ in world]))
    return np.mean(means)


def test_the_crossed_bootstrap_resamples_prompts_jointly_across_seeds():
    from congkit.pipeline.evaluation import agreed, crossed_bootstrap, hierarchical_bootstrap, mean_ci, world_t_interval

    rng = np.random.default_rng(0)
    prompt_effect = rng.normal(0, 0.3, 60)  # shared by every seed: what the nested bootstrap misses
    values = {w: {s: 0.01 * w + prompt_effect + rng.normal(0, 0.05, 60) for s in range(4)} for w in range(3)}
    mean, lo, hi = crossed_bootstrap(values, draws=2000, seed=1)
    assert mean == pytest.approx(np.mean([np.mean(list(s.values())) for s in values.values()])) and lo < mean < hi
    reference = np.array([slow_crossed_draw(values, np.random.default_rng(s)) for s in range(2000)])
    assert (hi - lo) == pytest.approx(np.subtract(*np.percentile(reference, [97.5, 2.5])), rel=0.15)
    _, nlo, nhi = hierarchical_bootstrap(values, draws=2000, seed=1)
    assert hi - lo > 1.3 * (nhi - nlo)  # prompts shared by seeds: the crossed interval is the honest, wider one
    world_means = [np.mean(list(seeds.values())) for seeds in values.values()]
    assert world_t_interval(values) == pytest.approx(mean_ci(np.array(world_means)))  # the worlds as replicates
    assert agreed("holds", "holds") == ("holds", "")
    assert agreed("holds", "inconclusive")[0] == "inconclusive"
    with pytest.raises(ValueError, match="same prompts"):
        crossed_bootstrap({0: {0: [1.0, 2.0], 1: [1.0]}})
