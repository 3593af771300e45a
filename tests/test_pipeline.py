import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import LlamaConfig, LlamaForSequenceClassification

from congkit.evaluation import main_table, summarise, verdicts, win_rate
from congkit.models import char_tokenizer, tiny_llama
from congkit.scorers import RewardModelScorer
from congkit.stages import STRONG_METHODS, Pipeline, Setting, preference_pairs, smoke_pipeline_config
from congkit.trainers import auxconf_loss, wspo_loss


def test_auxconf_loss_limits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[0, :2] = -100
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(auxconf_loss(logits, labels, 0.0), ce)
    self_labels = logits.argmax(-1).masked_fill(labels == -100, -100)
    self_ce = F.cross_entropy(logits.flatten(0, 1), self_labels.flatten(), ignore_index=-100)
    torch.testing.assert_close(auxconf_loss(logits, labels, 1.0), self_ce)
    torch.testing.assert_close(auxconf_loss(logits, labels, 0.3), 0.7 * ce + 0.3 * self_ce)


def test_wspo_loss_against_a_loop():
    g = torch.Generator().manual_seed(1)
    s, sr, w, wr = (torch.randn(3, 6, generator=g) for _ in range(4))
    mask = (torch.rand(3, 6, generator=g) > 0.3).float()
    terms = [(0.1 * (s[i, t] - sr[i, t]) - (w[i, t] - wr[i, t])) ** 2 for i in range(3) for t in range(6) if mask[i, t]]
    torch.testing.assert_close(wspo_loss(s, sr, w, wr, mask, 0.1), torch.stack(terms).mean())
    # zero exactly when the strong scaled log-ratio matches the weak one
    assert wspo_loss(sr + (w - wr) / 0.1, sr, w, wr, mask, 0.1).item() == pytest.approx(0.0, abs=1e-10)


def test_preference_pairs_drop_ties_and_flip_exactly():
    prompts = [f"p{i}" for i in range(10)]
    samples = [[f"a{i}", f"b{i}", f"c{i}"] for i in range(10)]
    scores = [[0.1, 0.9, 0.5] for _ in range(9)] + [[0.5, 0.5, 0.5]]
    clean = preference_pairs(prompts, samples, scores, 0.0, seed=0)
    assert len(clean) == 9 and clean["chosen"][0] == "b0" and clean["rejected"][0] == "a0"
    noisy = preference_pairs(prompts, samples, scores, 1 / 3, seed=0)
    assert sum(noisy["flipped"]) == 3
    assert all((c < r) == f for c, r, f in zip(noisy["chosen_score"], noisy["rejected_score"], noisy["flipped"]))
    assert noisy.to_dict() == preference_pairs(prompts, samples, scores, 1 / 3, seed=0).to_dict()
    with pytest.raises(ValueError, match="no preference pair"):
        preference_pairs(["p"], [["x", "y"]], [[0.2, 0.2]], 0.0, 0)


def test_win_rate_counts_ties_half():
    assert win_rate([[1, 0], [0.5, 0.2]], [[0, 0], [0.5, 0.9]]) == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)


@pytest.fixture(scope="module")
def smoke_run(smoke_world):
    root = smoke_world.path.parent / "pipeline-smoke"  # where the smoke study looks: its notebooks reuse these stages
    pipe = Pipeline(Setting.from_world(smoke_world), smoke_pipeline_config(), root=root, progress=False)
    return pipe, pipe.run()


def test_smoke_pipeline_produces_every_method_and_metric(smoke_run):
    pipe, table = smoke_run
    assert set(table.columns) == {"method", "seed", "setting", "metric", "value"}
    methods = set(table.method)
    assert (
        set(STRONG_METHODS) | {"gold", "weak_aligned", "weak_base", "strong_base", "cd", "naive", "weak_pair"}
        <= methods
    )
    for method in STRONG_METHODS:
        for metric in ("reward", "win_rate", "length", "heldout_accuracy", "pgr"):
            assert len(table[(table.method == method) & (table.metric == metric)]) == 2  # two noise levels
    assert table[table.metric == "reward"].value.between(0, 1).all()
    assert set(table[table.method == "cd"].setting) == {"alpha=0.0", "alpha=0.5", "alpha=1.0"}
    saved = pd.read_csv(pipe.root / "results.csv")
    assert len(saved) == len(table)
    assert {"ConG", "WeakSFT", "gold ceiling"} <= set(main_table(table).index)
    assert len(verdicts(table)) == 5
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
    assert set(again.timings) == {"total"}  # no stage was rebuilt
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
    pipe, _ = smoke_run
    bad = Dataset.from_dict({"prompt": ["a"], "response": ["b"]})
    with pytest.raises(ValueError, match=r"stage 'weaksft'.*\['completion'\]"):
        pipe._sft_stage("weaksft", bad, pipe.config.strong_sft, {}, 0)
    no_rejected = Dataset.from_dict({"prompt": ["a"], "chosen": ["b"]})
    with pytest.raises(ValueError, match=r"stage 'weak_aligned'.*\['rejected'\]"):
        pipe._dpo_stage("weak_aligned", pipe.setting.weak_base, no_rejected, pipe.config.weak_dpo, {}, 0)
    with pytest.raises(ValueError, match="unknown method"):
        pipe.strong("sft_on_vibes", 0)
    with pytest.raises(ValueError, match="eval_prompts is empty"):
        Setting("x", "w", "s", Dataset.from_dict({"prompt": ["a"]}), Dataset.from_dict({"prompt": []}), scorer=None)


def save_tiny_checkpoints(root):
    """Hub-style local folders: weak and strong causal LMs (random, different sizes) and a sequence-classification
    reward model, each with the chat-template tokenizer saved beside it."""
    tok = char_tokenizer()
    for name, hidden, layers in (("weak", 16, 1), ("strong", 32, 2)):
        model = tiny_llama(len(tok), hidden_size=hidden, num_layers=layers, num_heads=2, seed=hidden)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    rm_config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(rm_config).save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    return tok


def test_real_checkpoint_path_offline(tmp_path):
    """The whole pipeline on tiny random Llama checkpoints and a tiny random reward model saved locally."""
    save_tiny_checkpoints(tmp_path)
    scorer = RewardModelScorer(tmp_path / "rm", device="cpu")
    scores = scorer(["Add 1 and 2.", "Sort: b a"], ["Answer: 3", "a b"])
    assert len(scores) == 2 and all(np.isfinite(scores)) and scores[0] != scores[1]
    prompts = [f"Question {i}: say something about {w}." for i, w in enumerate("abcdefgh")]
    setting = Setting(
        name="tiny-real",
        weak_base=str(tmp_path / "weak"),
        strong_base=str(tmp_path / "strong"),
        train_prompts=Dataset.from_dict({"prompt": prompts[:6]}),
        eval_prompts=Dataset.from_dict({"prompt": prompts[6:]}),
        scorer=scorer,
        device="cpu",
    )
    config = smoke_pipeline_config()
    config.noise_levels, config.alpha_sweep = [0.0], [0.5]
    config.sampling.max_new_tokens = 8
    table = Pipeline(setting, config, root=tmp_path / "runs", progress=False).run()
    assert set(STRONG_METHODS) <= set(table.method)
    assert np.isfinite(table[table.metric == "reward"].value).all()
    meta = json.loads(next((tmp_path / "runs" / "weak_aligned").glob("*/meta.json")).read_text())
    assert meta["policy"] == str(tmp_path / "weak")


def test_unresolvable_model_id_names_the_id_and_suggests_a_local_path():
    import os
    import subprocess
    import sys

    code = "from congkit.models import load_causal_lm; load_causal_lm('no-such-org/no-such-model')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert run.returncode != 0
    assert "cannot load 'no-such-org/no-such-model'" in run.stderr and "local path" in run.stderr
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from congkit.models import load_causal_lm

        load_causal_lm("./no/such/folder")


def test_real_profile_loads_local_checkpoints_prompts_and_choices(tmp_path):
    """The `real` profile's loading path on hub-style local folders: chat-template tokenizer, causal LMs, a
    sequence-classification reward model, a preference dataset with named splits, a multiple-choice set."""
    from datasets import DatasetDict

    from congkit.data import load_prompts
    from congkit.evaluation import multiple_choice_accuracy
    from congkit.study import study_objects

    save_tiny_checkpoints(tmp_path)

    def split(n):
        return Dataset.from_dict(
            {
                "prompt": [f"Tell me about {i}." for i in range(n)] + ["  "],
                "messages": [[{"role": "user", "content": f"m{i}"}] for i in range(n + 1)],
            }
        )

    DatasetDict({"train_prefs": split(6), "test_prefs": split(3)}).save_to_disk(str(tmp_path / "uf"))
    Dataset.from_dict({"question": ["Add 1 and 1.", "Add 2 and 2."], "choices": [["Answer: 2", "Answer: 3"]] * 2,
                       "answer": [0, 1]}).save_to_disk(str(tmp_path / "mc"))  # fmt: skip
    overrides = dict(weak_model=str(tmp_path / "weak"), strong_model=str(tmp_path / "strong"),
                     reward_model=str(tmp_path / "rm"), prompts=str(tmp_path / "uf"), n_train_prompts=4,
                     n_eval_prompts=10, max_new_tokens=6, multiple_choice=str(tmp_path / "mc"), device="cpu")  # fmt: skip
    world, setting, pipe = study_objects("real", tmp_path / "runs", progress=False, real=overrides)
    assert world is None and setting.train_prompts["prompt"] == [f"Tell me about {i}." for i in range(4)]
    assert setting.eval_prompts["prompt"] == [f"Tell me about {i}." for i in range(3)]  # the blank prompt is dropped
    assert isinstance(setting.scorer, RewardModelScorer) and pipe.config.sampling.max_new_tokens == 6
    assert load_prompts(str(tmp_path / "uf"), "train_prefs", "messages", 2)["prompt"] == ["m0", "m1"]
    with pytest.raises(ValueError, match="no split 'nope'"):
        load_prompts(str(tmp_path / "uf"), "nope")
    with pytest.raises(ValueError, match="no column 'text'"):
        load_prompts(str(tmp_path / "uf"), "train_prefs", "text")
    strong = pipe.load(setting.strong_base)
    acc = multiple_choice_accuracy(strong, pipe.tokenizer, setting.multiple_choice)
    assert acc in (0.0, 0.5, 1.0)
    pipe.config.eval_samples = 1
    result = pipe.evaluate(setting.strong_base, 0)
    assert result["mc_accuracy"] == acc and len(result["scores"]) == 1 and len(result["scores"][0]) == 3


def test_multiple_choice_accuracy_picks_the_likeliest_choice(expert, tokenizer):
    from congkit.evaluation import multiple_choice_accuracy
    from congkit.rewards import completion_logprobs
    from congkit.tokens import encode_pair

    q, choices = "Add 1 and 1.", ["Answer: 2", "zzzz qqqq", "Answer: 11"]
    pairs = [encode_pair(tokenizer, q, c) for c in choices]
    means = [float(lp.mean()) for lp in completion_logprobs(expert, [p for p, _ in pairs], [c for _, c in pairs])]
    best = int(np.argmax(means))
    ds = Dataset.from_dict({"question": [q, q], "choices": [choices, choices], "answer": [best, (best + 1) % 3]})
    assert multiple_choice_accuracy(expert, tokenizer, ds) == 0.5


def test_cache_does_not_depend_on_how_the_root_is_spelled(smoke_run, monkeypatch):
    """A relative and an absolute spelling of the same runs folder reuse the same artifacts."""
    pipe, _ = smoke_run
    monkeypatch.chdir(pipe.root.parent)
    again = Pipeline(pipe.setting, smoke_pipeline_config(), root=pipe.root.name, progress=False)
    assert again.root == pipe.root
    again.weak_aligned(0, 0.0)
    assert again.timings == {}  # nothing rebuilt
