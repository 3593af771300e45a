"""The study's training speed-ups change no number: activation checkpointing off, and a dataset tokenised once for
every SFT-family trainer that reads it. Both stay out of the cache keys on the strength of these tests: the trained
weights are equal, bit for bit, with and without them. (TRL's `precompute_ref_log_probs` was measured too: 16% off
the weak DPO, but the reference's log-probabilities then differ in the last bits, and so do the weights: not taken.)"""

import dataclasses

import pytest
import torch
from datasets import Dataset

from congkit.pipeline import training
from congkit.pipeline.cache import cache_view
from congkit.pipeline.training import TrainConfig, train_dpo, train_sft

from .conftest import PROMPTS, _model

CFG = TrainConfig(learning_rate=3e-3, num_train_epochs=2, per_device_train_batch_size=2, seed=0)
SFT_DATA = Dataset.from_dict({"prompt": PROMPTS, "completion": ["7", "a b c", "olleh", "6"]})
DPO_DATA = Dataset.from_dict({"prompt": PROMPTS, "chosen": ["7", "a b c", "olleh", "6"],
                              "rejected": ["8", "c b a", "hello", "five"]})  # fmt: skip


def weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def sft(tokenizer, cfg, tmp_path, name):
    torch.manual_seed(0)
    model, _ = train_sft(_model(tokenizer, seed=1), tokenizer, SFT_DATA, cfg, str(tmp_path / name))
    return weights(model)


def dpo(tokenizer, cfg, tmp_path, name):
    torch.manual_seed(0)
    model, _ = train_dpo(_model(tokenizer, seed=1), _model(tokenizer, seed=1), tokenizer, DPO_DATA, cfg,
                         str(tmp_path / name))  # fmt: skip
    return weights(model)


def test_activation_checkpointing_changes_no_weight(tokenizer, tmp_path):
    training._TOKENISED.clear()
    off = sft(tokenizer, CFG, tmp_path, "off")
    on = sft(tokenizer, dataclasses.replace(CFG, activation_checkpointing=True), tmp_path, "on")
    assert not torch.equal(off, weights(_model(tokenizer, seed=1)))  # it trained
    assert torch.equal(on, off)
    on_dpo = dpo(tokenizer, dataclasses.replace(CFG, activation_checkpointing=True), tmp_path, "dpo_on")
    assert torch.equal(on_dpo, dpo(tokenizer, CFG, tmp_path, "dpo_off"))


def test_a_dataset_is_tokenised_once_and_trains_the_same(tokenizer, tmp_path, monkeypatch):
    training._TOKENISED.clear()
    fresh = sft(tokenizer, CFG, tmp_path, "fresh")
    calls = []
    monkeypatch.setattr(training, "to_trl_format", lambda *a: calls.append(a) or pytest.fail("tokenised again"))
    assert torch.equal(sft(tokenizer, CFG, tmp_path, "reused"), fresh)  # read from the memo: no new formatting
    assert not calls
    other = Dataset.from_dict({"prompt": PROMPTS, "completion": ["8", "a b c", "olleh", "6"]})
    monkeypatch.undo()
    torch.manual_seed(0)
    model, _ = train_sft(_model(tokenizer, seed=1), tokenizer, other, CFG, str(tmp_path / "other"))
    assert not torch.equal(weights(model), fresh)  # other contents: not mistaken for the memoised dataset


def test_speedups_stay_out_of_cache_keys():
    view = cache_view(dataclasses.replace(CFG, activation_checkpointing=True))
    assert view == cache_view(CFG)
