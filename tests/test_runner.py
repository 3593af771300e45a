"""The runner as a unit (fake nodes), then on tiny local checkpoints: each node once per arguments within a run, a
cached rerun that builds nothing, a method on new data added in two places, ConG's own pairs and AuxConf's warm-up."""

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from datasets import Dataset

from congkit import DecodingConfig, PipelineConfig, Setting, TrainConfig
from congkit.decoding import sample
from congkit.models import char_tokenizer, tiny_llama
from congkit.pipeline import Pipeline, plan
from congkit.pipeline import methods as registry
from congkit.pipeline.cong import cong_pairs
from congkit.pipeline.evaluation import UNTESTABLE, verdicts
from congkit.pipeline.runner import NODES, node
from congkit.pipeline.trainers import AuxConfTrainer, auxconf_weight

# --- the runner on fake nodes -----------------------------------------------------------------------------------------


@pytest.fixture
def fake_nodes():
    """Three fake nodes (a diamond: top reads left and right, both read base), removed afterwards."""
    added = []

    def declare(fn):
        added.append(fn.__name__)
        return node(fn)

    @declare
    def fake_base(pipe: Pipeline, seed: int, scale: float = 1.0) -> float:
        return seed * scale

    @declare
    def fake_left(pipe: Pipeline, seed: int) -> float:
        return pipe.fake_base(seed) + 1

    @declare
    def fake_right(pipe: Pipeline, seed: int) -> float:
        return pipe.fake_base(seed, 1.0) * 2

    @declare
    def fake_top(pipe: Pipeline, seed: int) -> float:
        return pipe.fake_left(seed) + pipe.fake_right(seed)

    yield
    for name in added:
        NODES.pop(name)


class _Config:
    def validate(self):
        pass


def _runner(tmp_path) -> Pipeline:
    setting = SimpleNamespace(name="fake", key="fake", weak_base="w", strong_base="s", tokenizer=None)
    return Pipeline(setting, _Config(), root=tmp_path, progress=False)


def test_each_node_runs_once_per_arguments_within_a_run(fake_nodes, tmp_path):
    pipe = _runner(tmp_path)
    assert pipe.fake_top(3) == (3 + 1) + 3 * 2
    assert pipe.calls == {"fake_top": 1, "fake_left": 1, "fake_right": 1, "fake_base": 1}  # the diamond's base once
    pipe.fake_top(3), pipe.fake_base(3, scale=1.0), pipe.fake_left(4)  # defaults filled: (3) and (3, 1.0) are one
    assert pipe.calls == {"fake_top": 1, "fake_left": 2, "fake_right": 1, "fake_base": 2}
    assert _runner(tmp_path).calls == {}  # the memo is per run


def test_an_unknown_node_and_a_node_declared_twice_are_named(fake_nodes, tmp_path):
    with pytest.raises(AttributeError, match="no attribute or node 'fake_nothing'.*fake_base"):
        _runner(tmp_path).fake_nothing(0)

    def fake_base(pipe, seed):  # another function of the same name
        return seed

    fake_base.__qualname__ = "elsewhere.fake_base"
    with pytest.raises(ValueError, match="node 'fake_base' is declared twice"):
        node(fake_base)


# --- on tiny local checkpoints ----------------------------------------------------------------------------------------


class LengthJudge:
    """A deterministic explicit reward: longer answers with more vowels score higher."""

    name = "length-judge"

    def __call__(self, prompts, responses):
        return [len(r) + 0.1 * sum(r.count(v) for v in "aeiou") for r in responses]


PROMPTS = ["Add 3 and 4.", "Sort: b a c", "Reverse abc", "Count a in banana", "Say hi", "Spell cat"]


@pytest.fixture(scope="module")
def tiny_setting(tmp_path_factory) -> Setting:
    root = tmp_path_factory.mktemp("checkpoints")
    tok = char_tokenizer()
    tok.save_pretrained(root / "tokenizer")
    for name, seed, size in (("weak", 1, 32), ("strong", 3, 48)):
        tiny_llama(len(tok), hidden_size=size, num_layers=2, num_heads=2, seed=seed, init_std=0.3).save_pretrained(
            root / name)  # fmt: skip
    prompts = Dataset.from_dict({"prompt": PROMPTS})
    return Setting("tiny", str(root / "weak"), str(root / "strong"), prompts, prompts, LengthJudge(),
                   tokenizer=str(root / "tokenizer"), device="cpu", dtype=torch.float32)  # fmt: skip


def _config(methods: list[str]) -> PipelineConfig:
    quick = dict(num_train_epochs=2, per_device_train_batch_size=4, warmup_steps=0.0)
    return PipelineConfig(
        seeds=[0], noise_levels=[0.0, 0.5], n_preference_samples=3, eval_samples=2, best_of=2, alpha_sweep=[0.5],
        sampling=DecodingConfig.authors(plausibility_threshold=None, repetition_penalty=1.0, max_new_tokens=6,
                                        batch_size=64),
        weak_dpo=TrainConfig(learning_rate=1e-3, beta=0.1, dpo_loss=["sigmoid", "sft"], **quick),
        strong_sft=TrainConfig(learning_rate=1e-3, **quick), wspo=TrainConfig(learning_rate=1e-3, **quick),
        gold_dpo=TrainConfig(learning_rate=1e-3, beta=0.1, dpo_loss=["sigmoid", "sft"], **quick),
        cong_dpo=TrainConfig(learning_rate=1e-3, beta=0.5, dpo_loss=["sigmoid", "sft"], **quick), methods=methods,
    )  # fmt: skip


def test_a_replicate_computes_each_node_once_and_a_cached_rerun_builds_nothing(tiny_setting, tmp_path):
    config = _config(["weaksft", "wspo", "cong_s", "cong"])
    pipe = Pipeline(tiny_setting, config, root=tmp_path, progress=False)
    pipe.replicate(0)
    levels = len(config.noise_levels)  # weaksft, cong_s and cong are also trained on noisy labels (claim 5)
    assert pipe.calls["weak_pool"] == 1 and pipe.calls["strong_pool"] == 1  # the gold ceiling's ranked pairs
    for name in ("weak_preferences", "weak_aligned", "weak_samples", "cd_samples", "plain_samples", "cong_pairs"):
        resolves = 2 if name == "weak_aligned" else 1  # its default call, then the setting that default resolves to
        assert pipe.calls[name] == levels * resolves, name
    assert pipe.calls["weak_chosen"] == 1  # WSPO's data: the clean setting only
    built = sorted(t["stage"] for t in pipe.timings)
    assert built.count("weak_aligned") == levels and built.count("weak_pool") == 1
    assert len(built) == len({(t["stage"], t["artifact"]) for t in pipe.timings})  # no artifact built twice
    again = Pipeline(tiny_setting, config, root=tmp_path, progress=False)
    again.replicate(0)
    assert again.timings == [] and again.calls == pipe.calls  # everything reused, each node still asked once


@pytest.fixture
def shortest_weak_sft():
    """A baseline on new data, added in two places: its data source and its registry entry."""

    @registry.data_source("prompt", "completion")
    def shortest_chosen(pipe: Pipeline, seed: int, eps: float) -> Dataset:
        """The weak preference set's chosen responses, for the shortest half of the prompts."""
        chosen = pipe.weak_chosen(seed, eps)
        return chosen.select(sorted(range(len(chosen)), key=lambda i: len(chosen[i]["prompt"]))[: len(chosen) // 2])

    registry.register(registry.Method("short_sft", "SFT on short chosen", "baseline",
                                      recipe=registry.Recipe("shortest_chosen", registry.by_sft, "strong_sft")))  # fmt: skip
    yield
    registry.unregister("short_sft")
    registry.DATA_SOURCES.pop("shortest_chosen")
    NODES.pop("shortest_chosen")


def test_a_baseline_on_new_data_is_two_entries_and_the_verdicts_compare_it(tiny_setting, tmp_path, shortest_weak_sft):
    config = _config(["weaksft", "short_sft", "cong_s"])
    config.noise_levels = [0.0]
    pipe = Pipeline(tiny_setting, config, root=tmp_path, progress=False)
    trained = pipe.strong("short_sft", 0)
    assert len(pipe.shortest_chosen(0, 0.0)) == len(pipe.weak_chosen(0, 0.0)) // 2
    assert any(t["method"] == "short_sft" for t in pipe.timings) and trained != pipe.strong("weaksft", 0)
    table = pipe.run()
    assert {"short_sft", "weaksft", "cong_s"} <= set(table.method)
    claim_3b = verdicts(table, config=config)
    row = claim_3b[claim_3b.claim.str.startswith("3b")].iloc[0]
    assert "SFT on short chosen" in row.claim and "WeakSFT" in row.claim and "AuxConf" not in row.claim
    assert "2 baselines" in claim_3b[claim_3b.claim.str.startswith("3a")].iloc[0].rule
    row_3a = claim_3b[claim_3b.claim.str.startswith("3a")].iloc[0]
    assert row_3a.verdict == UNTESTABLE and "the run trained no ConG" in row_3a.unmet


def test_a_run_without_auxconf_leaves_the_other_claims_testable():
    rows = []
    for seed in range(6):
        for method, value in (("weak_base", 0.5), ("weak_aligned", 0.7), ("strong_base", 0.55), ("gold", 0.95),
                              ("weaksft", 0.72), ("wspo", 0.8), ("cong_s", 0.76), ("cong", 0.78)):  # fmt: skip
            for metric, v in (("r_pref", value + 0.01 * seed), ("r_cap", 0.9 if method != "weak_base" else 0.4)):
                rows.append({"method": method, "seed": seed, "eps": 0.0, "alpha": math.nan, "metric": metric,
                             "value": v + 0.003 * ((seed * 7 + len(method)) % 5)})  # fmt: skip
    table = pd.DataFrame(rows)
    out = verdicts(table).set_index(verdicts(table).claim.str.split(".").str[0])
    for claim in ("3a", "3b", "4"):
        assert "the run trained no" not in out.loc[claim, "unmet"], claim
        assert "AuxConf" not in out.loc[claim, "claim"]
    assert out.loc["3a", "claim"].endswith("(WeakSFT, WSPO)") and "over the 2 baselines" in out.loc["3a", "rule"]
    assert math.isfinite(out.loc["3a", "estimate"])  # judged against the run's two baselines


# --- ConG's own pairs and AuxConf's warm-up ---------------------------------------------------------------------------


def test_cong_pairs_are_cd_samples_against_the_models_own_samples_identical_ones_dropped(expert, tokenizer):
    decoding = DecodingConfig.authors(plausibility_threshold=None, repetition_penalty=1.0, max_new_tokens=6, seed=5)
    own = sample(expert, tokenizer, PROMPTS, decoding, progress=False, apply_chat_template=True).texts
    cd = [f"cd answer {i}" for i in range(len(PROMPTS))]
    cd[2] = own[2]  # the model's own sample: no preference to learn from it
    pairs = cong_pairs(expert, tokenizer, Dataset.from_dict({"prompt": PROMPTS, "completion": cd}), decoding, True)
    keep = [i for i in range(len(PROMPTS)) if i != 2]
    assert pairs["prompt"] == [PROMPTS[i] for i in keep]
    assert pairs["chosen"] == [cd[i] for i in keep] and pairs["rejected"] == [own[i] for i in keep]


def test_auxconf_weight_warms_up_linearly_then_holds():
    weights = [auxconf_weight(step, 50, 0.5, 0.2) for step in range(51)]
    assert weights[0] == 0.0 and weights[5] == pytest.approx(0.25) and weights[10] == pytest.approx(0.5)
    assert all(b >= a for a, b in zip(weights, weights[1:])) and set(weights[10:]) == {0.5}
    assert auxconf_weight(3, 0, 0.5, 0.2) == 0.5  # a run of no steps: warmed up at once
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=5, max_steps=50), aux_weight=0.5, warmup_fraction=0.2)
    assert AuxConfTrainer.current_weight(trainer) == pytest.approx(0.25)  # the trainer reads it at its own step


# --- the second plan's controls ---------------------------------------------------------------------------------------


def test_the_sequence_mean_target_keeps_each_responses_total_and_drops_token_credit():
    from congkit.pipeline.trainers import WSPOTrainer, sequence_mean_target

    ratio = torch.tensor([[1.0, -2.0, 4.0, 9.0], [0.5, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    target = sequence_mean_target(ratio, mask)
    torch.testing.assert_close(target, torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0]]))
    torch.testing.assert_close((target * mask).sum(-1), (ratio * mask).sum(-1))  # the same total per response
    with pytest.raises(ValueError, match="WSPO target must be one of"):
        WSPOTrainer(ref_model=None, weak_model=None, weak_ref_model=None, target="per_word")


def test_best_of_n_cd_keeps_each_prompts_cd_draw_of_largest_implicit_reward(expert, amateur, tokenizer):
    from congkit.decoding import contrastive_generate
    from congkit.pipeline.cong import best_of_n_cd, by_prompt

    decoding = DecodingConfig.authors(alpha=0.5, plausibility_threshold=0.1, repetition_penalty=1.0,
                                      max_new_tokens=6, seed=3)  # fmt: skip
    best = best_of_n_cd(expert, amateur, tokenizer, PROMPTS, 3, decoding, True)
    draws = contrastive_generate(expert, amateur, tokenizer, PROMPTS * 3, decoding, progress=False,
                                 apply_chat_template=True)  # fmt: skip
    totals, texts = by_prompt(draws.implicit_reward(beta=1.0).total, len(PROMPTS), 3), by_prompt(draws.texts,
                                                                                                  len(PROMPTS), 3)  # fmt: skip
    for i in range(len(PROMPTS)):
        j = max(range(3), key=totals[i].__getitem__)
        assert best["completion"][i] == texts[i][j] and best["implicit"][i] == pytest.approx(totals[i][j])


def test_the_controls_train_by_their_registry_entries(tiny_setting, tmp_path):
    config = _config(["wspo", "wspo_seqmean", "bon_cd"])
    config.noise_levels, config.best_of_n = [0.0], 2
    pipe = Pipeline(tiny_setting, config, root=tmp_path, progress=False)
    paths = {m: pipe.strong(m, 0) for m in config.methods}
    assert len(set(paths.values())) == 3 and pipe.calls["weak_chosen"] == 1  # WSPO and its control: the same data
    assert len(pipe.bon_cd(0, 0.0)) == len(PROMPTS)


def test_plan_2s_grid_extends_past_an_edge_up_to_its_steps_and_names_a_capped_choice(tmp_path, monkeypatch):
    """The tuning walk on fake nodes: the validation score peaks far past the highest learning rate and at 4 epochs,
    so the grid grows one step at a time to the plan's last step, whose choice then lies on the (extended) edge:
    budget-capped."""
    from congkit.pipeline.runner import Node
    from congkit.pipeline.stages import extend_grid, grid_edge

    assert extend_grid([1, 2, 4], [4, 8, 16], 4, 8, [1, 4], [4, 16], 2) == ([1, 2, 4, 8], [4, 8, 16])
    assert extend_grid([1, 2], [2, 4], 1, 2, [1, 2], [2, 4], 2) == ([0.5, 1, 2], [1, 2, 4])
    assert extend_grid([0.5, 1, 2], [1, 2, 4], 0.5, 1, [1, 2], [2, 4], 2) == ([0.25, 0.5, 1, 2], [1, 2, 4])  # e >= 1
    assert extend_grid([0.25, 0.5, 1], [2, 4], 0.25, 4, [1], [2, 4], 2) == ([0.25, 0.5, 1], [2, 4, 8])  # 2 steps
    assert extend_grid([1, 2], [2, 4], 2, 4, [1, 2], [2, 4], 0) == ([1, 2], [2, 4])  # plan 1: never
    assert grid_edge([1, 2, 4], [2, 4, 8], 2, 4) == "" and grid_edge([1, 2, 4], [2, 4, 8], 4, 8) == (
        "highest learning rate, most epochs")

    base_lr = PipelineConfig().strong_sft.learning_rate
    trained = []

    def fake_strong(pipe, method, seed, eps=0.0, cfg=None):
        trained.append((cfg.learning_rate / base_lr, cfg.num_train_epochs))
        return f"{cfg.learning_rate / base_lr}:{cfg.num_train_epochs}"

    def fake_score(pipe, model_path, seed):
        m, e = (float(x) for x in model_path.split(":"))
        return -((m - 20) ** 2) - 10 * (e - 4) ** 2

    monkeypatch.setitem(NODES, "strong", Node("strong", fake_strong, stage=True))
    monkeypatch.setitem(NODES, "validation_score", Node("validation_score", fake_score, stage=True))
    monkeypatch.setitem(NODES, "plain_samples", Node("plain_samples", lambda pipe, seed, eps: Dataset.from_dict(
        {"prompt": ["p"], "completion": ["c"]})))  # fmt: skip
    setting = SimpleNamespace(name="fake", key="fake", weak_base="w", strong_base="s", tokenizer=None)
    pipe = Pipeline(setting, PipelineConfig(seeds=[0], noise_levels=[0.0], plan=2, budget="tuned"), root=tmp_path,
                    progress=False)  # fmt: skip
    rows = pipe.tuning_rows("weaksft")
    steps = plan.value("tuning", "extend_steps", plan=2)
    top = max(plan.value("tuning", "learning_rate_multipliers", plan=2)) * 2**steps
    assert top < 20 and len(set(trained)) == len(trained)  # the peak lies past the last step; nothing trained twice
    assert {m for m, _ in trained} == {m * 2**k for m in plan.value("tuning", "learning_rate_multipliers", plan=2)
                                       for k in range(steps + 1)} & {m for m, _ in trained}  # fmt: skip
    best = max(rows, key=lambda r: r["score"])
    assert (best["multiplier"], best["epochs"]) == (top, 4) and best["edge"] == "highest learning rate"
    assert pipe.tuned_config("weaksft").learning_rate == pytest.approx(top * base_lr)
