"""Two smoke worlds (own bases, own prompts), the decomposition arms trained in each, pooled with the hierarchical
bootstrap; the plan's per-world sign rule checked on hand-made values."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from congkit.pipeline import Pipeline, Setting, plan, smoke_pipeline_config
from congkit.pipeline.evaluation import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from congkit.pipeline.world_build import build_world, smoke_world_config
from congkit.study.worlds import comparison, decomposition_table, world_walk

ARMS = ["sft_chosen", "wspo_cd", "wspo_plain", "wspo_b05", "wspo_b10", "bon_implicit"]


@pytest.fixture(scope="module")
def two_worlds(smoke_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    config = dataclasses.replace(smoke_pipeline_config(), noise_levels=[0.0], methods=[
        "weaksft", "auxconf", "wspo", "cong_s", "cong", *ARMS])  # fmt: skip
    other = dataclasses.replace(smoke_world_config(), data=dataclasses.replace(smoke_world_config().data, seed=1))
    worlds = {0: smoke_world, 1: build_world(other, root=root, progress=False)}
    return {w: Pipeline(Setting.from_world(world), config, root=root / f"world-{w}", progress=False)
            for w, world in worlds.items()}  # fmt: skip


def test_each_world_has_its_own_prompts_and_bases(two_worlds):
    a, b = (p.setting for p in two_worlds.values())
    assert a.key != b.key and set(a.eval_prompts["prompt"]) != set(b.eval_prompts["prompt"])


def test_the_arms_train_and_the_decomposition_pools_over_worlds(two_worlds):
    table = decomposition_table(two_worlds)
    assert set(table.world) == {0, 1} and set(table.arm) == {"cong", "cong_s", "wspo", *ARMS}
    assert set(table.metric) == {"r_pref", "r_cap"} and table.value.between(0, 1).all()
    paths = {arm: two_worlds[0].strong(arm, 0) for arm in ["wspo", *ARMS]}
    assert len(set(paths.values())) == len(paths)  # every arm is its own model
    walk = world_walk(two_worlds)
    assert list(walk.step[walk.path == "main"]) == ["ConG -> ConG-S", "ConG-S -> SFT on weak chosen",
                                                    "SFT on weak chosen -> WSPO"]  # fmt: skip
    assert {"world_0", "world_1"} <= set(walk.columns) and (walk.ci_low <= walk.ci_high).all()
    assert walk.carries.sum() <= 1


def test_a_sign_flip_in_one_world_makes_a_verdict_inconclusive(monkeypatch):
    from congkit.study import worlds

    consistent = {0: {0: np.full(40, 0.10), 1: np.full(40, 0.12)}, 1: {0: np.full(40, 0.08), 1: np.full(40, 0.11)}}
    flipping = {w: {0: np.full(40, 0.30), 1: np.full(40, 0.32)} for w in range(5)}
    flipping[2] = {0: np.full(40, -0.02), 1: np.full(40, -0.01)}  # the pooled interval excludes 0; world 2 does not
    for values, verdict, note in ((consistent, HOLDS, ""), (flipping, INCONCLUSIVE, "flips sign in world 2")):
        monkeypatch.setattr(worlds, "paired_values", lambda *a, v=values, **k: v)
        got = comparison({}, "a", "b")
        assert (got["verdict"], got["note"]) == (verdict, note)
    negative = {w: {s: -v for s, v in seeds.items()} for w, seeds in consistent.items()}
    monkeypatch.setattr(worlds, "paired_values", lambda *a, **k: negative)
    assert comparison({}, "a", "b")["verdict"] == DOES_NOT_HOLD
    assert plan.value("study", "worlds") == [0, 1, 2] and isinstance(pd.DataFrame(), pd.DataFrame)


def test_the_plans_run_writes_every_table_for_both_budgets(smoke_world, tmp_path, monkeypatch):
    """`run_plan` on two smoke worlds, one seed, a 2 x 1 grid for three methods, in two build workers: the result
    tables of both budgets, tuning per world, preconditions per world."""
    from congkit import study

    small = {("study", "worlds"): [0, 1], ("tuning", "learning_rate_multipliers"): [0.5, 1.0],
             ("tuning", "epochs"): [2], ("tuning", "methods"): ["weaksft", "cong_s", "cong"],
             ("tuning", "validation_prompts"): 16, ("tuning", "samples"): 1}  # fmt: skip
    real_value = plan.value
    monkeypatch.setattr(plan, "value", lambda s, n, plan=1: small.get((s, n), real_value(s, n)) if plan == 1 else real_value(
        s, n, plan))  # fmt: skip
    config = dataclasses.replace(smoke_pipeline_config(), noise_levels=[0.0])
    out = study.run_plan(tmp_path, workers=1, config=config, world_base=smoke_world_config())
    tables = {p.stem: pd.read_csv(p) for p in out.glob("*.csv")}
    assert set(tables) == {"decomposition", "walk", "comparisons", "verdicts", "tuning", "preconditions"}
    assert set(tables["verdicts"].budget) == {"fixed", "tuned"} and {"world_0", "verdict_world_1"} <= set(
        tables["verdicts"])  # fmt: skip
    assert set(tables["decomposition"].budget) == {"fixed", "tuned"} and set(tables["decomposition"].world) == {0, 1}
    tuning = tables["tuning"]
    assert len(tuning) == 2 * 3 * 2 and tuning.groupby(["world", "method"]).chosen.sum().eq(1).all()
    assert set(tables["preconditions"].world.astype(str)) == {"0", "1", "pooled"}
    pooled = tables["preconditions"][tables["preconditions"].world.astype(str) == "pooled"]
    assert list(pooled.id) == ["detectable_effect"] * 2 and set(pooled.budget) == {"fixed", "tuned"}
    assert {"world_0", "world_1"} <= set(tables["comparisons"])


def test_the_plans_committed_tables_in_words(tmp_path):
    """The introduction's sentences about the plan profile, from the committed `results/plan` tables."""
    from congkit.study import PLAN_RESULTS
    from congkit.study.tables import plan_sentences

    said = plan_sentences(PLAN_RESULTS)
    verdicts = pd.read_csv(PLAN_RESULTS / "verdicts.csv")
    for budget in ("fixed", "tuned"):  # claim 3a's own interval and its pre-registered verdict, one number one word
        claim = verdicts[(verdicts.budget == budget) & verdicts.claim.str.startswith("3a.")].iloc[0]
        assert (f"ConG − the best baseline (WSPO) {claim.estimate:+.3f} [{claim.ci_low:+.3f}, {claim.ci_high:+.3f}]: "
                f"claim 3a {claim.verdict}") in said[f"plan_{budget}"]  # fmt: skip
    assert said["plan_worlds"] == "3" and "untestable here" in said["plan_fixed"] and "does not hold" not in said["plan_fixed"]
    assert said["plan_verdicts"].count("untestable here") == (verdicts.budget == "fixed").sum() - (
        verdicts[verdicts.budget == "fixed"].verdict != "untestable here").sum()  # fmt: skip
    claim2 = verdicts[(verdicts.budget == "fixed") & verdicts.claim.str.startswith("2.")]
    assert said["plan_cd"].startswith(f"CD − naive {claim2.estimate.item():+.3f}") and "tuned" not in said["plan_cd"]
    assert plan_sentences(tmp_path) == {}  # no tables: nothing said
