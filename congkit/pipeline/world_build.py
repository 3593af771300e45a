"""Building the synthetic world's artifacts: prompt sets, corpus, tokenizer, weak and strong base models, world card.

    world = build_world(WorldConfig(), root="runs")      # cached by a fingerprint of the configuration
    tok, weak = world.tokenizer(), world.load("weak_base")

Both base models are Llama-architecture causal LMs pretrained (TRL SFT) on the same noisy corpus; the strong one is
about ten times larger. They are saved with `save_pretrained` and load with `AutoModelForCausalLM` like any checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import set_seed

from congkit.decoding import DecodingConfig, sample
from congkit.models import load_causal_lm, load_tokenizer, n_parameters, tiny_llama, word_tokenizer
from congkit.pipeline.cache import build_once, fingerprint, read_json
from congkit.pipeline.code_key import code_key
from congkit.pipeline.data import load_saved_dataset
from congkit.pipeline.training import TrainConfig, train_sft
from congkit.pipeline.world import (
    TASK_COLUMNS,
    ExplicitReward,
    WorldData,
    build_corpus,
    build_prompt_sets,
    canonical_response,
    dataset_tasks,
    task_index,
    world_vocabulary,
)
from congkit.rewards import mean_response_logprobs


@dataclass
class ModelSize:
    hidden_size: int
    num_layers: int
    num_heads: int = 4


@dataclass
class WorldConfig:
    data: WorldData = field(default_factory=WorldData)
    weak: ModelSize = field(default_factory=lambda: ModelSize(32, 2, 4))
    strong: ModelSize = field(default_factory=lambda: ModelSize(96, 2, 4))
    weak_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(learning_rate=3e-3, num_train_epochs=2, per_device_train_batch_size=64)
    )
    strong_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(learning_rate=3e-3, num_train_epochs=8, per_device_train_batch_size=64)
    )
    card_max_new_tokens: int = 24


def smoke_world_config() -> WorldConfig:
    """A world small enough for tests (well under 30 s to build), with the same structure."""
    return WorldConfig(
        data=WorldData(corpus_size=1600, n_train_prompts=48, n_eval_prompts=40, n_heldout_prompts=20, n_valid_prompts=16),
        weak=ModelSize(32, 1),
        strong=ModelSize(64, 2),
        weak_train=TrainConfig(learning_rate=5e-3, num_train_epochs=3, per_device_train_batch_size=64),
        strong_train=TrainConfig(learning_rate=5e-3, num_train_epochs=3, per_device_train_batch_size=64),
        card_max_new_tokens=32,
    )


@dataclass
class World:
    """A built world: its folder, prompt sets, explicit reward and card."""

    path: Path
    config: WorldConfig

    def tokenizer(self):
        return load_tokenizer(self.path / "tokenizer")

    def load(self, name: str, device: str | None = None):
        """'weak_base' or 'strong_base' as a causal LM."""
        return load_causal_lm(self.path / name, device=device, dtype=torch.float32)

    def model_path(self, name: str) -> Path:
        return self.path / name

    def prompts(self, split: str) -> Dataset:
        """'train', 'eval', 'heldout' or (when the world has them) 'valid' prompts (columns prompt, answer, family)."""
        return load_saved_dataset(self.path / "prompts" / split)

    @property
    def splits(self) -> list[str]:
        return sorted(p.name for p in (self.path / "prompts").iterdir() if p.is_dir())

    def corpus(self) -> Dataset:
        return load_saved_dataset(self.path / "corpus")

    def reward(self) -> ExplicitReward:
        return ExplicitReward(task_index(*(self.prompts(s) for s in self.splits)), self.config.data.shape)

    @property
    def card(self) -> dict:
        return read_json(self.path / "card.json")


def pretrain(size: ModelSize, tokenizer, corpus: Dataset, cfg: TrainConfig, seed: int, out: Path):
    set_seed(seed)
    model = tiny_llama(
        len(tokenizer),
        hidden_size=size.hidden_size,
        num_layers=size.num_layers,
        num_heads=size.num_heads,
        seed=seed,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model, history = train_sft(model, tokenizer, corpus, cfg, output_dir=str(out / "_trainer"))
    model.save_pretrained(out)
    (out / "train_history.json").write_text(json.dumps(history))
    return model


def build_world(config: WorldConfig | None = None, root: str | Path = "runs", progress: bool = True) -> World:
    """Build (or reuse) the world for `config` under `root/world-<fingerprint>`."""
    config = config or WorldConfig()
    # absolute: its path enters later cache keys; the generator's code (`code_key`) is part of the world's name
    path = Path(root).resolve() / f"world-{fingerprint(config, code_key(build_world))}"

    def build(tmp: Path) -> None:
        start = time.perf_counter()
        prompt_sets = build_prompt_sets(config.data)
        for split, ds in prompt_sets.items():
            ds.save_to_disk(str(tmp / "prompts" / split))
        held_back = {p for split in ("eval", "heldout", "valid") if split in prompt_sets for p in prompt_sets[split]["prompt"]}
        corpus = build_corpus(config.data, exclude_prompts=held_back)
        corpus.save_to_disk(str(tmp / "corpus"))
        tokenizer = word_tokenizer(world_vocabulary(config.data.shape))
        tokenizer.save_pretrained(tmp / "tokenizer")
        models = {}
        for name, size, cfg, offset in (
            ("weak_base", config.weak, config.weak_train, 1),
            ("strong_base", config.strong, config.strong_train, 2),
        ):
            if progress:
                print(f"[world] pretraining {name} on {len(corpus)} corpus rows", flush=True)
            models[name] = pretrain(size, tokenizer, corpus, cfg, config.data.seed + offset, tmp / name)
        card = world_card(models, tokenizer, prompt_sets, corpus, config)  # no wall-clock field: the world's bytes
        (tmp / "card.json").write_text(json.dumps(card, indent=2))  # (and every key after it) are deterministic
        if progress:
            print(f"[world] built in {time.perf_counter() - start:.0f} s", flush=True)

    build_once(path, build, meta=asdict(config), label=f"world {path.name}")
    return World(path, config)


# --- the world card -----------------------------------------------------------------------------------------------

NOISE_ATTRIBUTES = ("wrong", "filler", "format_slip", "repetition", "verbose")


def attribute_rates(judgements) -> dict[str, float]:
    """Rates of each kind of noise among well-formed responses (`NoiseRates` names), and the well-formed rate."""
    formed = [j for j in judgements if j.well_formed]
    n = max(len(formed), 1)
    return {
        "well_formed": len(formed) / max(len(judgements), 1),
        "wrong": sum(not j.correct for j in formed) / n,
        "filler": sum(j.filler for j in formed) / n,
        "format_slip": sum(not j.format_ok for j in formed) / n,
        "repetition": sum(j.repetition for j in formed) / n,
        "verbose": sum(not j.length_ok for j in formed) / n,
    }


def corpus_rates(corpus: Dataset, reward: ExplicitReward) -> dict[str, float]:
    """The same attribute rates, measured by the reward's judge on the corpus itself."""
    return attribute_rates(reward.judge(corpus["prompt"], corpus["completion"]))


def world_card(models: dict, tokenizer, prompt_sets: dict[str, Dataset], corpus: Dataset, config: WorldConfig) -> dict:
    """Measured facts about the world (module docstring of `congkit.pipeline.world`): capability gap, noise, reward."""
    reward = ExplicitReward(task_index(*prompt_sets.values(), corpus.select_columns(list(TASK_COLUMNS))),
                            config.data.shape)  # fmt: skip
    noisy = [any(row[f"noise_{k}"] for k in asdict(config.data.noise)) for row in corpus]
    scores = reward(corpus["prompt"], corpus["completion"])
    clean = [s for s, n in zip(scores, noisy) if not n]
    dirty = [s for s, n in zip(scores, noisy) if n]
    card = {
        "shape": config.data.shape.describe(),
        "corpus": {
            "size": len(corpus),
            "clean_fraction": len(clean) / len(corpus),
            "reward_clean": sum(clean) / max(len(clean), 1),
            "reward_noisy": sum(dirty) / max(len(dirty), 1),
            "rates": corpus_rates(corpus, reward),
        },
        "models": {},
    }
    for name, model in models.items():
        entry = {"parameters": n_parameters(model)}
        for split in ("eval", "heldout"):
            prompts = prompt_sets[split]["prompt"]
            run = DecodingConfig.authors(plausibility_threshold=None, repetition_penalty=1.0,
                                         max_new_tokens=config.card_max_new_tokens)
            common = dict(progress=False, apply_chat_template=True)  # string prompts are user turns, as in the pipeline
            greedy = reward.judge(prompts, sample(model, tokenizer, prompts, run, do_sample=False, **common).texts)
            sampled_texts = sample(model, tokenizer, prompts, run, seed=0, **common).texts
            sampled = reward.judge(prompts, sampled_texts)
            answers = [canonical_response(t, config.data.shape) for t in dataset_tasks(prompt_sets[split])]
            logps = mean_response_logprobs(model, tokenizer, prompts, answers, apply_chat_template=True)
            entry[split] = {
                "answer_logprob": sum(logps) / len(logps),
                "greedy_accuracy": sum(j.correct for j in greedy) / len(greedy),
                "sampled_accuracy": sum(j.correct for j in sampled) / len(sampled),
                "sampled_r_pref": sum(j.r_pref for j in sampled) / len(sampled),
                "sampled_reward": sum(j.score for j in sampled) / len(sampled),
                "sampled_rates": attribute_rates(sampled),
            }
        card["models"][name] = entry
    return card


def card_table(card: dict):
    """The world card as a pandas table: one row per quantity, a column per model (and the corpus)."""
    import pandas as pd

    rows = []
    corpus = card["corpus"]
    for attr in ("well_formed",) + NOISE_ATTRIBUTES:
        row = {"quantity": f"rate: {attr} (sampled at T=0.8, eval prompts)", "corpus": corpus["rates"][attr]}
        for name, m in card["models"].items():
            row[name] = m["eval"]["sampled_rates"][attr]
        rows.append(row)
    for split, label in (("eval", "alignment families"), ("heldout", "held-out family")):
        row = {
            "quantity": f"greedy accuracy, {label}",
            "corpus": 1 - corpus["rates"]["wrong"] if split == "eval" else None,
        }
        for name, m in card["models"].items():
            row[name] = m[split]["greedy_accuracy"]
        rows.append(row)
    for split, label in (("eval", "alignment families"), ("heldout", "held-out family")):
        row = {"quantity": f"log-prob per token of the correct answer, {label}", "corpus": None}
        for name, m in card["models"].items():
            row[name] = m[split]["answer_logprob"]
        rows.append(row)
    for key, label in (("sampled_accuracy", "R_cap: correct rate"), ("sampled_r_pref", "R_pref"),
                       ("sampled_reward", "r* = 0.8 R_pref + 0.2 R_cap")):  # fmt: skip
        rows.append({"quantity": f"{label} (sampled at T=0.8, eval prompts)", "corpus": None,
                     **{name: m["eval"][key] for name, m in card["models"].items()}})  # fmt: skip
    rows.append({"quantity": "parameters", "corpus": None, **{n: m["parameters"] for n, m in card["models"].items()}})
    return pd.DataFrame(rows).set_index("quantity")
