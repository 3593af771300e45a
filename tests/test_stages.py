"""The pipeline on the smoke world: every stage, the cache, reruns, interruptions, relocation."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset

from congkit.pipeline import Pipeline, Setting, smoke_pipeline_config
from congkit.pipeline.cache import CorruptArtifactWarning, verify
from congkit.pipeline.cong import preference_pairs
from congkit.pipeline.evaluation import CLAIMS, main_table, summarise
from congkit.pipeline.methods import METHODS, with_role
from congkit.pipeline.world_build import build_world, smoke_world_config

STRONG_METHODS = with_role("baseline", "ours")


def test_preference_pairs_drop_ties_and_flip_exactly():
    prompts = [f"p{i}" for i in range(10)]
    samples = [[f"a{i}", f"b{i}", f"c{i}"] for i in range(10)]
    scores = [[0.1, 0.9, 0.5] for _ in range(9)] + [[0.5, 0.5, 0.5]]
    pool = Dataset.from_dict({"prompt": prompts, "samples": samples, "scores": scores})
    clean = preference_pairs(pool, 0.0, seed=0)
    assert len(clean) == 9 and clean["chosen"][0] == "b0" and clean["rejected"][0] == "a0"
    noisy = preference_pairs(pool, 1 / 3, seed=0)
    assert sum(noisy["flipped"]) == 3
    assert all((c < r) == f for c, r, f in zip(noisy["chosen_score"], noisy["rejected_score"], noisy["flipped"]))
    assert noisy.to_dict() == preference_pairs(pool, 1 / 3, seed=0).to_dict()
    with pytest.raises(ValueError, match="no preference pair"):
        preference_pairs(Dataset.from_dict({"prompt": ["p"], "samples": [["x", "y"]], "scores": [[0.2, 0.2]]}), 0.0, 0)


@pytest.fixture(scope="module")
def smoke_run(smoke_world):
    root = smoke_world.path.parent / "pipeline-smoke"  # where the smoke study looks: its notebooks reuse these stages
    pipe = Pipeline(Setting.from_world(smoke_world), smoke_pipeline_config(), root=root, progress=False)
    return pipe, pipe.run()


def test_smoke_pipeline_produces_every_method_and_metric(smoke_run):
    pipe, table = smoke_run
    assert list(table.columns) == ["method", "seed", "eps", "alpha", "metric", "value"]
    assert set(STRONG_METHODS) | {"gold", "weak_aligned", "weak_base", "strong_base", "cd", "naive", "weak_pair"} <= set(
        table.method
    )
    for method in STRONG_METHODS:
        noisy = METHODS[method].noise
        for metric in ("r_pref", "r_cap", "reward", "win_rate", "length", "heldout_accuracy", "pgr", "pgr_strong"):
            part = table[(table.method == method) & (table.metric == metric)]
            assert sorted(part.eps) == ([0.0, 0.4] if noisy else [0.0]), (method, metric)
    assert table[table.metric.isin(["reward", "r_pref", "r_cap"])].value.between(0, 1).all()
    assert sorted(table[table.method == "cd"].alpha.unique()) == [0.0, 0.5, 1.0]
    assert {"probe:format", "probe:length", "probe:no_filler", "probe:no_repetition", "spearman_within_pi_r",
            "best_of_k_recovery"} <= set(table[table.method == "weak_pair"].metric)  # fmt: skip
    saved = pd.read_csv(pipe.root / "results.csv")
    assert len(saved) == len(table)
    conditions, verdict_table = (pd.read_csv(pipe.root / f"{n}.csv") for n in ("preconditions", "verdicts"))
    assert list(conditions.columns) == ["id", "condition", "required", "measured", "ci_low", "ci_high", "met",
                                        "applicable"]  # fmt: skip
    assert len(conditions) == 12 and len(verdict_table) == len(CLAIMS)
    assert set(verdict_table.verdict) <= {"holds", "does not hold", "inconclusive", "untestable here"}
    # one seed: no interval, so nothing is detectable, and every claim that needs it is untestable
    assert not conditions.set_index("condition").met["smallest detectable paired effect on R_pref (95% CI half-width)"]
    assert {"ConG", "WeakSFT", "gold ceiling"} <= set(main_table(table).index)
    assert not summarise(table).empty


def test_trained_models_differ_from_their_start(smoke_run):
    pipe, _ = smoke_run
    base = pipe.load(pipe.setting.strong_base).state_dict()
    for method in ("weaksft", "auxconf", "wspo", "cong_s", "cong", "gold"):
        trained = pipe.load(pipe.strong(method, 0, 0.0)).state_dict()
        assert any(not torch.equal(base[k], trained[k]) for k in base), method
    weak = pipe.load(pipe.setting.weak_base).state_dict()
    aligned = pipe.load(pipe.weak_aligned(0, 0.0)).state_dict()
    assert any(not torch.equal(weak[k], aligned[k]) for k in weak)


def test_noise_flips_the_weak_pairs(smoke_run):
    pipe, _ = smoke_run
    clean, noisy = pipe.weak_preferences(0, 0.0), pipe.weak_preferences(0, 0.4)
    assert sum(clean["flipped"]) == 0 and sum(noisy["flipped"]) == round(0.4 * len(noisy))
    assert all(c >= r for c, r in zip(clean["chosen_score"], clean["rejected_score"]))


def test_rerun_reuses_every_stage_and_gives_the_same_numbers(smoke_run):
    pipe, table = smoke_run
    again = Pipeline(pipe.setting, smoke_pipeline_config(), root=pipe.root, progress=False)
    table2 = again.run()
    assert again.timings == []  # no stage was rebuilt
    pd.testing.assert_frame_equal(table, table2)


def test_interrupted_stage_is_rebuilt_not_trusted(smoke_run, tmp_path):
    pipe, _ = smoke_run
    fresh = Pipeline(pipe.setting, smoke_pipeline_config(), root=tmp_path, progress=False)

    class Boom(Exception):
        pass

    original = fresh.load
    fresh.load = lambda path: (_ for _ in ()).throw(Boom())  # dies inside the first stage
    with pytest.raises(Boom):
        fresh.weak_aligned(0, 0.0)
    assert not list((tmp_path / "weak_pool").glob("*/_COMPLETE"))
    fresh.load = original
    fresh.weak_aligned(0, 0.0)
    # same seed, same data: the rebuilt pool equals the one of the first run
    assert fresh.weak_preferences(0, 0.0).to_dict() == pipe.weak_preferences(0, 0.0).to_dict()


def test_stage_input_errors_name_stage_and_column(smoke_run):
    from congkit.pipeline.stages import require_columns

    pipe, _ = smoke_run
    bad = Dataset.from_dict({"prompt": ["a"], "response": ["b"]})
    with pytest.raises(ValueError, match=r"stage 'weaksft'.*\['completion'\]"):
        require_columns(bad, ("prompt", "completion"), "weaksft")
    with pytest.raises(ValueError, match="unknown method 'sft_on_vibes'"):
        pipe.strong("sft_on_vibes", 0)
    with pytest.raises(ValueError, match="method 'strong_base' has no training recipe"):
        pipe.strong("strong_base", 0)
    with pytest.raises(ValueError, match="eval_prompts is empty"):
        Setting("x", "w", "s", Dataset.from_dict({"prompt": ["a"]}), Dataset.from_dict({"prompt": []}), scorer=None)


def test_a_registered_method_runs_only_with_its_own_recipe(smoke_run, monkeypatch):
    """A method added to the registry without a recipe cannot be trained (it never falls through to another
    method's); with a recipe it is trained by that recipe, cached under its own name, and runs when configured."""
    import dataclasses

    from congkit.pipeline import methods

    pipe, _ = smoke_run
    bare = methods.Method("sft_on_chosen", "SFT on the weak chosen responses", "arm")
    monkeypatch.setitem(methods.METHODS, bare.name, bare)
    with pytest.raises(ValueError, match="'sft_on_chosen' has no training recipe"):
        pipe.strong("sft_on_chosen", 0)
    with pytest.raises(ValueError, match="'sft_on_chosen' has no training recipe"):
        dataclasses.replace(smoke_pipeline_config(), methods=["sft_on_chosen"]).validate()
    recipe = methods.Recipe("weak_chosen", methods.by_sft, "strong_sft")
    monkeypatch.setitem(methods.METHODS, bare.name, dataclasses.replace(bare, recipe=recipe))
    path = pipe.strong("sft_on_chosen", 0)
    meta = json.loads((Path(path) / "meta.json").read_text())
    assert meta["key"]["method"] == "sft_on_chosen" and path not in {pipe.strong(m, 0) for m in pipe.config.methods}


def test_cache_does_not_depend_on_how_the_root_is_spelled(smoke_run, monkeypatch):
    """A relative and an absolute spelling of the same runs folder reuse the same artifacts."""
    pipe, _ = smoke_run
    monkeypatch.chdir(pipe.root.parent)
    again = Pipeline(pipe.setting, smoke_pipeline_config(), root=pipe.root.name, progress=False)
    assert again.root == pipe.root
    again.weak_aligned(0, 0.0)
    assert again.timings == []  # nothing rebuilt


@pytest.fixture
def moved_run(smoke_run, tmp_path):
    """The smoke world and its pipeline folder copied to another place, as a user copies `runs/`."""
    pipe, table = smoke_run
    moved = tmp_path / "elsewhere" / "runs"
    shutil.copytree(pipe.root.parent, moved)
    world = build_world(smoke_world_config(), root=moved, progress=False)
    again = Pipeline(Setting.from_world(world), smoke_pipeline_config(), root=moved / pipe.root.name, progress=False)
    return again, table


def test_a_moved_runs_folder_reuses_every_stage(moved_run):
    again, table = moved_run
    assert again.setting.weak_base.startswith(str(again.root.parent))  # the moved world is the one in use
    pd.testing.assert_frame_equal(again.run(), table)
    assert again.timings == []  # nothing was rebuilt at the new place


def test_corrupt_artifacts_are_named_and_rebuilt_never_trusted(moved_run):
    again, table = moved_run
    path = again.weak_aligned(0, 0.0)
    weights = f"{path}/model.safetensors"
    original = open(weights, "rb").read()
    with open(weights, "r+b") as f:
        f.truncate(len(original) // 2)
    assert again.weak_aligned(0, 0.0) == path  # within a run, each node is looked up once (the memo)
    again = Pipeline(again.setting, again.config, root=again.root, progress=False)  # a new run verifies it again
    with pytest.warns(CorruptArtifactWarning, match=r"stage 'weak_aligned'.*model\.safetensors: \d+ bytes"):
        assert again.weak_aligned(0, 0.0) == path
    assert verify(path) == [] and open(weights, "rb").read() == original  # same seed, same weights
    # an evaluation this pipeline reads (the runs folder may also hold other pipelines', e.g. the regime map's)
    used = again.ref(path)
    evaluation = next(p for p in (again.root / "evaluate").glob("*/eval.json")
                      if json.loads((p.parent / "meta.json").read_text())["key"].get("model") == used)  # fmt: skip
    evaluation.write_text(evaluation.read_text().replace("0.", "0.9", 1))  # numbers altered by hand
    again = Pipeline(again.setting, again.config, root=again.root, progress=False)
    with pytest.warns(CorruptArtifactWarning, match=r"stage 'evaluate'.*eval\.json: "):
        pd.testing.assert_frame_equal(again.run(), table)


def test_stream_seeds_are_named_independent_and_stable():
    from congkit.pipeline.cong import stream_seed

    assert stream_seed(0, "evaluation", 0) == stream_seed(0, "evaluation", 0)
    draws = {stream_seed(s, p, k) for s in range(3) for p in ("evaluation", "cd_samples", "weak_pool") for k in range(3)}
    assert len(draws) == 27 and all(0 <= d < 2**30 for d in draws)


def test_wspo_and_gold_train_on_what_the_paper_says(smoke_run):
    """WSPO on the weak preference set's chosen responses (the authors' release), gold on the gold responses."""
    from pathlib import Path

    from congkit.pipeline.cache import read_json
    from congkit.pipeline.data import content_key

    pipe, _ = smoke_run
    chosen = pipe.weak_preferences(0, 0.0).select_columns(["prompt", "chosen"]).rename_column("chosen", "completion")
    assert read_json(Path(pipe.strong("wspo", 0, 0.0)) / "meta.json")["key"]["data"] == content_key(chosen)
    prompts = list(pipe.setting.train_prompts["prompt"])
    gold = Dataset.from_dict({"prompt": prompts, "completion": [pipe.setting.gold_responses(p) for p in prompts]})
    assert read_json(Path(pipe.strong("gold", 0)) / "meta.json")["key"]["data"] == content_key(gold)


def test_fields_outside_every_key_rebuild_nothing_and_a_result_changing_field_does(smoke_run):
    """The documented exclusions (a trainer's logging_steps, the decoding cache kind and token-choice path) change
    no key: a run with them changed reuses every stage. A learning rate changes the keys of what it trains."""
    import dataclasses

    pipe, table = smoke_run
    config = smoke_pipeline_config()
    config.weak_dpo = dataclasses.replace(config.weak_dpo, logging_steps=7)
    config.strong_sft = dataclasses.replace(config.strong_sft, logging_steps=5)
    config.sampling = dataclasses.replace(config.sampling, cache="dynamic", token_choice="vocabulary")
    again = Pipeline(pipe.setting, config, root=pipe.root, progress=False)
    pd.testing.assert_frame_equal(again.run(), table)
    assert again.timings == []
    changed = dataclasses.replace(smoke_pipeline_config(), strong_sft=dataclasses.replace(config.strong_sft,
                                                                                          learning_rate=1e-4))  # fmt: skip
    other = Pipeline(pipe.setting, changed, root=pipe.root, progress=False)
    assert other.weak_aligned(0, 0.0) == pipe.weak_aligned(0, 0.0)  # upstream of the change: the same artifact
    key = json.loads((Path(other.strong("weaksft", 0)) / "meta.json").read_text())["key"]
    assert key["train"]["learning_rate"] == 1e-4 and other.strong("weaksft", 0) != pipe.strong("weaksft", 0)


def test_finished_artifacts_hold_only_their_manifests_files(smoke_run):
    """No library writes into a finished artifact (datasets' cache-*.arrow files among them): every artifact of the
    smoke world and pipeline verifies, and none holds a file its manifest does not list."""
    from congkit.pipeline.cache import verify_tree

    pipe, _ = smoke_run
    root = pipe.root.parent
    assert verify_tree(root) == {}
    assert not list(root.rglob("cache-*.arrow"))


def test_an_evaluation_follows_the_models_content(smoke_run, tmp_path):
    """A model outside the runs folder enters keys by its content: retrained in place, it gets a new evaluation."""
    pipe, _ = smoke_run
    outside = tmp_path / "model"
    shutil.copytree(pipe.strong("weaksft", 0), outside)
    first = pipe.ref(outside)
    model = pipe.load(outside)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(outside)
    assert pipe.ref(outside) != first and first.startswith("folder:")


def test_a_tuned_budget_is_chosen_on_the_validation_prompts(smoke_run, monkeypatch):
    """Every grid point trained on the first seed and scored on the validation prompts (never the eval prompts); the
    best is the tuned setting, and the tuned method's model is that grid point's model."""
    import dataclasses

    from congkit.pipeline import plan

    pipe, _ = smoke_run
    small = {("tuning", "learning_rate_multipliers"): [0.5, 2.0], ("tuning", "epochs"): [1, 2],
             ("tuning", "methods"): ["weaksft"], ("tuning", "samples"): 2}  # fmt: skip
    real_value = plan.value
    monkeypatch.setattr(plan, "value", lambda section, name, plan=1: small.get((section, name), real_value(section, name))
                        if plan == 1 else real_value(section, name, plan))  # fmt: skip
    tuned = Pipeline(pipe.setting, dataclasses.replace(smoke_pipeline_config(), budget="tuned"), root=pipe.root,
                     progress=False)  # fmt: skip
    grid = tuned.tuning_table()
    assert len(grid) == 4 and grid.chosen.sum() == 1 and grid.score.between(0, 1).all()
    base = pipe.config.strong_sft.learning_rate
    assert sorted(zip(grid.learning_rate, grid.epochs)) == [(0.5 * base, 1), (0.5 * base, 2), (2 * base, 1), (2 * base, 2)]
    best = grid[grid.chosen].iloc[0]
    assert best.score == grid.score.max()
    key = json.loads((Path(tuned.strong("weaksft", 0)) / "meta.json").read_text())["key"]
    assert (key["train"]["learning_rate"], key["train"]["num_train_epochs"]) == (best.learning_rate, best.epochs)
    assert tuned.strong("auxconf", 0) == pipe.strong("auxconf", 0)  # not tuned: its fixed budget
    valid = set(pipe.setting.valid_prompts["prompt"])
    assert len(valid) == 16 and not valid & set(pipe.setting.eval_prompts["prompt"])
    assert not valid & set(pipe.setting.train_prompts["prompt"])
    with pytest.raises(ValueError, match="has no validation prompts"):
        tuned.setting = dataclasses.replace(pipe.setting, valid_prompts=None)
        tuned.validation_score(tuned.strong("auxconf", 0), 0)


def test_timings_merge_rebuilt_stages_and_keep_the_others(tmp_path):
    from congkit.pipeline import record_timings

    path = tmp_path / "timings.csv"
    first = [{"stage": "strong", "artifact": "a1", "seed": 0, "method": "wspo", "eps": 0.0, "seconds": 5.0},
             {"stage": "weak_aligned", "artifact": "b1", "seed": 0, "method": "", "eps": 0.0, "seconds": 2.0},
             {"stage": "evaluate", "artifact": "c1", "seed": 0, "method": "", "eps": None, "seconds": 0.5},
             {"stage": "evaluate", "artifact": "c2", "seed": 0, "method": "", "eps": None, "seconds": 0.5}]  # fmt: skip
    record_timings(path, first)
    assert len(record_timings(path, [])) == 4  # a cached rerun records nothing and loses nothing; two evaluations
    # of one seed are two artifacts
    table = record_timings(path, [{"stage": "strong", "artifact": "a1", "seed": 0, "method": "wspo", "eps": 0.0,
                                   "seconds": 7.0}])  # fmt: skip
    assert len(table) == 4 and table.groupby("stage").seconds.sum().to_dict() == {"strong": 7.0, "weak_aligned": 2.0,
                                                                                  "evaluate": 1.0}  # fmt: skip
    from congkit.pipeline.provenance import timing_summary

    assert timing_summary(path).startswith("0 min of stage builds") and "strong 70%" in timing_summary(path)
    from congkit.study import time_table

    lines = time_table({"notebooks": 12.4, "total": 30.0}, path).splitlines()
    assert lines[1].split()[-1] == "12" and lines[2].split()[-1] == "30"  # one line per phase, in order
    stages = [line.split()[1] for line in lines[4:]]
    assert stages == ["strong", "weak_aligned", "evaluate"]  # stage builds, longest first
    assert lines[4].split()[-3:] == ["1", "x", "7"] and lines[6].split()[-3:] == ["2", "x", "1"]
    assert "stage builds" not in time_table({"total": 1.0}, tmp_path / "none.csv")


def test_only_the_losses_that_read_beta_show_it():
    from congkit.pipeline.methods import reads_beta

    assert reads_beta("wspo", ["prompt", "completion"]) and reads_beta("cong", ["prompt", "chosen", "rejected"])
    assert not reads_beta("weaksft", ["prompt", "completion"]) and not reads_beta("auxconf", ["prompt", "completion"])
    assert not reads_beta("gold", ["prompt"]) and reads_beta("gold", ["prompt", "chosen", "rejected"])
