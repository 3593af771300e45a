"""Plan 2's run on smoke worlds, its numbers shrunk: worlds drawn and accepted by the rule, a level tuned once and its
choices reused, comparisons with both intervals, and the plan's decision words computed from its thresholds."""

import pandas as pd
import pytest
from transformers import AutoConfig

from congkit.pipeline import plan
from congkit.pipeline.settings import smoke_pipeline_config
from congkit.pipeline.world_build import smoke_world_config
from congkit.study import plan2

SMALL = {("world", "weak_widths"): [32, 16], ("study", "levels"): ["spread"], ("study", "accepted_per_level"): 2,
         ("study", "max_draws_per_level"): 3, ("study", "seeds_per_world"): 1,
         ("tuning", "learning_rate_multipliers"): [1.0], ("tuning", "epochs"): [3],
         ("tuning", "weak_dpo_grid"): [[1.0, 2], [4.0, 2]], ("tuning", "extend_steps"): 0,
         ("arms", "methods"): ["wspo", "wspo_seqmean", "cong_s", "gold"],
         ("comparisons", "primary"): [["wspo", "cong_s"], ["wspo", "wspo_seqmean"]],
         ("comparisons", "secondary"): []}  # fmt: skip


@pytest.mark.slow
def test_plan2_accepts_worlds_by_its_rule_tunes_once_per_level_and_decides_in_its_words(tmp_path, monkeypatch):
    real = plan.value
    monkeypatch.setattr(plan, "value", lambda s, n, plan=1: SMALL[s, n] if plan == 2 and (s, n) in SMALL else real(
        s, n, plan))  # fmt: skip
    verdicts, widths, real_acceptance = {}, [], plan2.acceptance

    def accept_all_but_world_1(pipe):  # the real rule runs first on world 0 below; here the draw order is tested
        world = int(pipe.root.name.rsplit("-", 1)[1])
        widths.append((world, AutoConfig.from_pretrained(pipe.setting.weak_base).hidden_size))  # the model checked
        verdicts[pipe.root.name] = real_acceptance(pipe) if world == 0 else None
        return (world != 1), "" if world != 1 else "attribute probe: format"

    monkeypatch.setattr(plan2, "acceptance", accept_all_but_world_1)
    config = smoke_pipeline_config()
    config.seeds = [0]
    out = plan2.run_plan2(tmp_path / "runs", workers=1, config=config, base=smoke_world_config())
    acceptance, tuning, comparisons, decisions = (pd.read_csv(out / f"{n}.csv").fillna("") for n in
                                                  ("acceptance", "tuning", "comparisons", "decisions"))  # fmt: skip
    # drawn in order until 2 accepted; world 1 failed at the first width, so it was checked at the second (amendment 3)
    assert list(acceptance.world[acceptance.level == "spread"]) == [0, 1, 1, 2]
    assert list(acceptance.weak_width[acceptance.level == "spread"]) == [32, 32, 16, 32]
    assert widths == [(0, 32), (1, 32), (1, 16), (2, 32)]  # each check's weak model has the width its row names
    assert list(acceptance.accepted[acceptance.level == "spread"]) == [True, False, False, True]
    assert sorted(verdicts) == ["plan2-spread-world-0", "plan2-spread-world-1", "plan2-spread-world-2"]
    probes = [c for c in acceptance.columns if c.startswith("probe_")]  # what the acceptance rule's probes read
    assert probes and ((acceptance[probes] >= 0) & (acceptance[probes] <= 1)).all().all()
    ok, unmet = next(v for v in verdicts.values() if v is not None)
    assert isinstance(ok, bool) and (ok or unmet)  # the real acceptance rule ran and said why not
    strong = tuning[tuning.method != "weak_dpo"]
    assert set(strong.world) == {0} and set(tuning.level) == {"spread"}  # the arms tuned on the first world only
    assert set(strong.method) == {"wspo", "wspo_seqmean", "cong_s", "gold"}
    weak = tuning[tuning.method == "weak_dpo"]  # amendment 1: every accepted world chose its own weak DPO
    assert sorted(weak.world) == [0, 0, 2, 2] and list(weak.epochs) == [2, 2, 2, 2]
    for world, grid in weak.groupby("world"):
        assert grid.chosen.sum() == 1 and grid.score[grid.chosen].iloc[0] == grid.score.max()
        assert ((0 <= grid.score) & (grid.score <= 1)).all()  # a fraction of probes ranked right
        pipe = plan2.world_pipeline("spread", world, tmp_path / "runs", plan2.plan2_config(config), smoke_world_config())
        chosen = pipe.weak_dpo_config()
        assert chosen.learning_rate == grid.learning_rate[grid.chosen].iloc[0]
        assert pipe.weak_aligned(0, 0.0) == pipe.weak_aligned(0, 0.0, chosen)  # the seeds' pi_r is the chosen one
    assert set(comparisons.level) == {"spread"} and len(comparisons) == 2 * 2  # 2 comparisons x R_pref, R_cap
    assert (comparisons.boot_low <= comparisons.estimate).all() and (comparisons.t_low <= comparisons.t_high).all()
    assert decisions.set_index("level").loc["spread", "decision"] in (
        "single-token artifact", "generalises within these worlds", "partly")
    # the book's chapter 7 reads these tables: every table renders without a NaN, the sentences hold the plan's words
    from congkit.study import plots, tables

    raw = {n: pd.read_csv(out / f"{n}.csv") for n in ("acceptance", "tuning", "comparisons", "decisions")}
    for styled in (tables.style_acceptance(raw["acceptance"]), tables.style_plan2_decisions(raw["decisions"]),
                   tables.style_plan2_comparisons(raw["comparisons"]), tables.style_plan2_optima(raw["tuning"])):  # fmt: skip
        assert "nan" not in styled.to_html().lower()
    words = tables.plan2_sentences(out)
    assert words["plan2_spread_draws"].startswith("3 worlds drawn, 2 accepted (worlds 0 and 2, weak width 32); the "
                                                  "failed checks missed: ")  # fmt: skip
    assert words["plan2_spread"].startswith(decisions.set_index("level").loc["spread", "decision"])
    optima = tables.plan2_optima(raw["tuning"])
    assert len(optima) == 4 + 2 and set(optima["where"]) <= {"interior"} | {w for w in optima["where"] if "capped" in w}
    assert words["plan2_capped"] != "none"  # a one-point grid is on every edge: every arm is budget-capped
    assert len(plots.plan2_forest(raw["comparisons"]).axes[0].get_yticklabels()) == 2


def _comparison(level: str, a: str, b: str, estimate: float, verdict: str) -> dict:
    return {"level": level, "a": a, "b": b, "metric": "r_pref", "estimate": estimate, "verdict": verdict}


@pytest.mark.parametrize(
    ("spread", "original", "overshoot", "words"),
    [
        # spread: P1 estimate, P1 verdict, P2 verdict; original P1 estimate (None: level untestable); overshoot P1
        ((0.01, "holds", "inconclusive"), 0.10, (0.09, "holds"), ("single-token artifact", "does not overshoot")),
        ((0.10, "holds", "holds"), 0.10, (0.04, "holds"), ("generalises within these worlds", "amplification overshoots")),
        ((0.05, "holds", "holds"), 0.10, (-0.02, "does not hold"), ("partly", "amplification overshoots")),
        ((0.10, "holds", "holds"), None, (0.09, "holds"), ("generalises within these worlds", "untestable here")),
        ((0.10, "holds", "holds"), None, (-0.05, "does not hold"), ("generalises within these worlds",
                                                                    "amplification overshoots")),
    ],
)
def test_plan2_decisions_are_the_plans_words_from_its_thresholds(spread, original, overshoot, words):
    rows = [_comparison("spread", "wspo", "cong_s", spread[0], spread[1]),
            _comparison("spread", "wspo", "wspo_seqmean", 0.0, spread[2]),
            _comparison("overshoot", "wspo", "cong_s", *overshoot),
            _comparison("overshoot", "wspo", "wspo_seqmean", 0.0, "holds")]  # fmt: skip
    accepted = {"spread": {0: 64, 1: 64, 2: 64}, "overshoot": {0: 64, 1: 32, 2: 64}, "original": {}}
    if original is not None:
        rows += [_comparison("original", "wspo", "cong_s", original, "holds"),
                 _comparison("original", "wspo", "wspo_seqmean", 0.0, "holds")]  # fmt: skip
        accepted["original"] = {0: 32, 1: 32, 2: 32}
    table = plan2.decisions(pd.DataFrame(rows), accepted).set_index("level")
    assert (table.decision["spread"], table.decision["overshoot"]) == words
    assert table.decision["original"] == ("reference" if original is not None else "untestable here")


def test_checks_by_width_counts_each_widths_checks_and_the_two_preconditions_they_trade():
    from congkit.study.tables import checks_by_width

    acceptance = pd.DataFrame({"level": ["spread"] * 4 + ["original"], "world": [0, 0, 1, 1, 0],
                               "weak_width": [64, 32, 64, 32, 64], "accepted": [False, False, False, True, True],
                               "unmet": ["attribute probe: length; strong base minus weak base correct rate",
                                         "attribute probe: length", "strong base minus weak base correct rate", None,
                                         None]})  # fmt: skip
    assert checks_by_width(acceptance, "spread") == (
        "at weak width 64, 2 world(s) checked, 0 accepted, 1 missed the length probe and 2 the capability gap; "
        "at weak width 32, 2 world(s) checked, 1 accepted, 1 missed the length probe and 0 the capability gap")
