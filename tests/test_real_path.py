"""The real-checkpoint path, offline: tiny hub-style folders that the tests create and save locally."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForSequenceClassification

from congkit.models import char_tokenizer, tiny_llama
from congkit.pipeline import Pipeline, Setting, smoke_pipeline_config
from congkit.pipeline.methods import with_role
from congkit.scorers import RewardModelScorer


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
    assert set(with_role("baseline", "ours")) <= set(table.method)
    assert np.isfinite(table[table.metric == "reward"].value).all()
    # a reward model is the preference judge: r_pref is its score; there is no R_cap channel and no attribute probe
    reward, pref = (table[(table.metric == m) & table.alpha.isna()].set_index(["method", "seed", "eps"]).value
                    for m in ("reward", "r_pref"))  # fmt: skip
    pd.testing.assert_series_equal(reward, pref, check_names=False)
    assert not (table.metric == "r_cap").any() and not table.metric.str.startswith("probe:").any()
    assert (tmp_path / "runs" / "verdicts.csv").exists() and (tmp_path / "runs" / "preconditions.csv").exists()
    meta = json.loads(next((tmp_path / "runs" / "weak_aligned").glob("*/meta.json")).read_text())
    assert meta["key"]["policy"] == "setting:weak_base"  # cache keys name roles and stages, never folders
    assert meta["stage"] == "weak_aligned" and meta["summary"] == "weak_aligned seed=0 eps=0.0 (tiny-real)"
    assert str(tmp_path) not in json.dumps(meta)


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

    from congkit.pipeline.data import load_prompts
    from congkit.pipeline.measure import multiple_choice_accuracy
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
    from congkit.rewards import mean_response_logprobs

    expected = 0.0
    for q, choices, answer in zip(*(setting.multiple_choice[c] for c in ("question", "choices", "answer"))):
        expected += int(np.argmax(mean_response_logprobs(strong, pipe.tokenizer, [q] * len(choices), choices))) == answer
    assert acc == expected / 2
    pipe.config.eval_samples = 1
    result = pipe.evaluate(setting.strong_base, 0)
    assert result["mc_accuracy"] == acc and len(result["scores"]) == 1 and len(result["scores"][0]) == 3


def test_multiple_choice_accuracy_picks_the_likeliest_choice(expert, tokenizer):
    from congkit.pipeline.measure import multiple_choice_accuracy
    from congkit.rewards import completion_logprobs
    from congkit.tokens import encode_pair

    q, choices = "Add 1 and 1.", ["Answer: 2", "zzzz qqqq", "Answer: 11"]
    pairs = [encode_pair(tokenizer, q, c) for c in choices]
    means = [float(lp.mean()) for lp in completion_logprobs(expert, [p for p, _ in pairs], [c for _, c in pairs])]
    best = int(np.argmax(means))
    ds = Dataset.from_dict({"question": [q, q], "choices": [choices, choices], "answer": [best, (best + 1) % 3]})
    assert multiple_choice_accuracy(expert, tokenizer, ds) == 0.5
