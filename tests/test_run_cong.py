"""`run_cong`, the uncached algorithm on real checkpoints, is the cached pipeline: on tiny local checkpoints it gives
the datasets and weights `congkit.Pipeline` caches for the same seed (its stages, seeds and decoding streams)."""

import pytest
import torch
from datasets import Dataset

from congkit import DecodingConfig, PipelineConfig, Setting, TrainConfig, run_cong
from congkit.models import char_tokenizer, load_causal_lm, tiny_llama
from congkit.pipeline import Pipeline

PROMPTS = ["Add 3 and 4.", "Sort: b a c", "Reverse abc", "Count a in banana", "Say hi", "Spell cat"]


class LengthJudge:
    """A deterministic explicit reward: longer answers with more vowels score higher (no ties in practice)."""

    name = "length-judge"

    def __call__(self, prompts, responses):
        return [len(r) + 0.1 * sum(r.count(v) for v in "aeiou") for r in responses]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    tok = char_tokenizer()
    tok.save_pretrained(root / "tokenizer")
    for name, seed, size in (("weak", 1, 32), ("strong", 3, 48)):
        tiny_llama(len(tok), hidden_size=size, num_layers=2, num_heads=2, seed=seed, init_std=0.3).save_pretrained(root / name)
    return root


def _config() -> PipelineConfig:
    quick = dict(num_train_epochs=2, per_device_train_batch_size=4, warmup_steps=0.0)
    return PipelineConfig(
        seeds=[0], noise_levels=[0.0], n_preference_samples=3,
        sampling=DecodingConfig.authors(plausibility_threshold=None, repetition_penalty=1.0, max_new_tokens=8,
                                        batch_size=64),
        weak_dpo=TrainConfig(learning_rate=1e-3, beta=0.1, dpo_loss=["sigmoid", "sft"], **quick),
        strong_sft=TrainConfig(learning_rate=1e-3, **quick),
        cong_dpo=TrainConfig(learning_rate=1e-3, beta=0.5, dpo_loss=["sigmoid", "sft"], **quick),
    )  # fmt: skip


def test_run_cong_gives_the_cached_pipelines_datasets_and_weights(checkpoints, tmp_path):
    load = lambda path: load_causal_lm(path, device="cpu", dtype=torch.float32)  # noqa: E731
    weak, strong = str(checkpoints / "weak"), str(checkpoints / "strong")
    tok = char_tokenizer()
    got = run_cong(load, weak, strong, tok, PROMPTS, LengthJudge(), _config(), seed=0, output_dir=str(tmp_path / "out"))
    setting = Setting("tiny", weak, strong, Dataset.from_dict({"prompt": PROMPTS}), Dataset.from_dict({"prompt": PROMPTS}),
                      LengthJudge(), tokenizer=str(checkpoints / "tokenizer"), device="cpu", dtype=torch.float32)  # fmt: skip
    cached = Pipeline(setting, _config(), root=tmp_path / "runs", progress=False)
    assert got["pool"].to_dict() == cached.weak_pool(0).to_dict()
    assert got["pairs"].to_dict() == cached.weak_preferences(0, 0.0).to_dict()
    assert got["cd"].to_dict() == cached.cd_samples(0, 0.0).to_dict()
    assert got["cong_pairs"].to_dict() == cached.cong_pairs(0, 0.0).to_dict()
    for name, path in (("pi_r", cached.weak_aligned(0, 0.0)), ("cong_s", cached.strong("cong_s", 0)),
                       ("cong", cached.strong("cong", 0))):  # fmt: skip
        want = load(path).state_dict()
        assert all(torch.equal(value, want[key]) for key, value in got[name].state_dict().items()), name
    assert not all(torch.equal(v, load(strong).state_dict()[k]) for k, v in got["cong"].state_dict().items())
