import random
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from congkit import sample
from congkit.training import TrainConfig
from congkit.world import (
    ALIGNMENT_FAMILIES,
    FAMILIES,
    HELDOUT_FAMILY,
    NoiseRates,
    Task,
    WorldData,
    build_corpus,
    build_prompt_sets,
    canonical_response,
    judge,
    make_task,
    wrong_answer,
)
from congkit.world_build import ModelSize, WorldConfig, build_world, card_table

TASKS = [make_task(f, random.Random(i)) for i in range(20) for f in FAMILIES]


def test_canonical_response_scores_one_and_each_noise_costs():
    for task in TASKS:
        assert judge(task, canonical_response(task)).score == 1.0
        a = task.answer
        worse = [
            f"Answer: {wrong_answer(task, random.Random(0))}",
            f"Sure! Answer: {a}",
            f"The answer is {a}.",
            f"Answer: {a}\nAnswer: {a}",
            f"Answer: {a} I hope this helps!",
        ]
        for response in worse:
            j = judge(task, response)
            assert j.well_formed and 0 < j.score < 1, (task, response, j)
        assert judge(task, f"Answer: {wrong_answer(task, random.Random(0))}").score <= 0.5


@pytest.mark.parametrize("response", ["", "   ", "Answer: é", "x" * 500, "Answer:" + "1" * 300, "!!!", "\n\n"])
def test_garbage_scores_zero(response):
    for task in TASKS[:5]:
        j = judge(task, response)
        assert j.score == 0.0 and not j.well_formed


def test_attributes_are_detected():
    task = make_task("add", random.Random(3))
    j = judge(task, f"Okay, so The answer is {task.answer}.\nThe answer is {task.answer}. That is all.")
    assert j.correct and j.filler and j.repetition and j.trailing and not j.format_ok


def test_wrong_answers_are_never_the_truth():
    rng = random.Random(0)
    for _ in range(2000):
        task = make_task(rng.choice(FAMILIES), rng)
        assert wrong_answer(task, rng) != task.answer


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), family=st.sampled_from(FAMILIES), seed=st.integers(0, 1000))
def test_reward_never_raises_and_stays_in_range(text, family, seed):
    task = make_task(family, random.Random(seed))
    for response in (text, "Answer: " + text, text + canonical_response(task)):
        assert 0.0 <= judge(task, response).score <= 1.0


def test_noise_rates_are_what_the_config_says():
    rates = NoiseRates(wrong=0.4, filler=0.1, format_slip=0.0, repetition=0.5, verbose=0.2)
    corpus = build_corpus(WorldData(corpus_size=4000, noise=rates))
    for name, rate in vars(rates).items():
        assert sum(corpus[f"noise_{name}"]) / len(corpus) == pytest.approx(rate, abs=0.03)
    for row in corpus.select(range(300)):
        task = Task(row["family"], row["prompt"], row["answer"])
        j = judge(task, row["completion"])
        assert j.correct == (not row["noise_wrong"])
        assert j.format_ok == (not row["noise_format_slip"])
        assert j.filler == row["noise_filler"]
        assert j.repetition == row["noise_repetition"]


def test_prompt_sets_are_disjoint_seeded_and_hold_out_a_family():
    cfg = WorldData(n_train_prompts=100, n_eval_prompts=60, n_heldout_prompts=30)
    sets = build_prompt_sets(cfg)
    assert sets["train"].to_dict() == build_prompt_sets(cfg)["train"].to_dict()
    assert sets["train"].to_dict() != build_prompt_sets(WorldData(seed=1))["train"].to_dict()
    assert not set(sets["train"]["prompt"]) & set(sets["eval"]["prompt"])
    assert set(sets["train"]["family"]) == set(sets["eval"]["family"]) == set(ALIGNMENT_FAMILIES)
    assert set(sets["heldout"]["family"]) == {HELDOUT_FAMILY}
    corpus = build_corpus(cfg, exclude_prompts=set(sets["eval"]["prompt"]))
    assert not set(corpus["prompt"]) & set(sets["eval"]["prompt"])
    assert HELDOUT_FAMILY in corpus["family"]  # the capability exists in pretraining, never in alignment


def test_tokenizer_round_trip_and_chat_template(tmp_path):
    from congkit.models import char_tokenizer

    char_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = string.printable[:94] + "\nAnswer: 12"
    assert tok.decode(tok(text)["input_ids"]) == text
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Add 1 and 2."}, {"role": "assistant", "content": "Answer: 3"}], tokenize=False
    )
    assert rendered == "<|user|>Add 1 and 2.<|assistant|>Answer: 3<|end|>"
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>hi<|assistant|>"
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<pad>"


def test_smoke_world_card_invariants(smoke_world):
    card = smoke_world.card
    weak, strong = card["models"]["weak_base"], card["models"]["strong_base"]
    assert strong["parameters"] > 5 * weak["parameters"]
    # capability gap, on held-out prompts of both kinds
    for split in ("eval", "heldout"):
        assert strong[split]["answer_logprob"] > weak[split]["answer_logprob"] + 0.1
    assert strong["eval"]["sampled_reward"] > weak["eval"]["sampled_reward"]
    # the explicit reward separates clean from noisy corpus responses
    assert card["corpus"]["reward_clean"] > card["corpus"]["reward_noisy"] + 0.2
    # the strong base reproduces the corpus noise (40 prompts: a loose tolerance)
    for attr in ("filler", "format_slip", "repetition", "trailing"):
        assert abs(strong["eval"]["sampled_rates"][attr] - card["corpus"]["rates"][attr]) < 0.2, attr
    table = card_table(card)
    assert {"corpus", "weak_base", "strong_base"} <= set(table.columns)


def test_saved_models_reload_and_generate(smoke_world):
    tok = AutoTokenizer.from_pretrained(smoke_world.path / "tokenizer")
    for name in ("weak_base", "strong_base"):
        model = AutoModelForCausalLM.from_pretrained(smoke_world.path / name)
        prompts = smoke_world.prompts("eval")["prompt"][:4]
        out = sample(model, tok, prompts, max_new_tokens=8, do_sample=False, progress=False)
        for prompt, ids in zip(prompts, out.token_ids):  # the reloaded model decodes as transformers' generate does
            x = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)  # fmt: skip
            ref = model.generate(**x, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            want = ref[0, x["input_ids"].shape[1] :].tolist()
            assert ids == want[: len(ids)] and (len(ids) == 8 or ids[-1] == tok.eos_token_id)


def test_second_build_reuses_the_cache(smoke_world):
    again = build_world(smoke_world.config, root=smoke_world.path.parent, progress=False)
    assert again.path == smoke_world.path
    assert again.card["build_seconds"] == smoke_world.card["build_seconds"]


def test_same_config_same_weights(tmp_path):
    micro = WorldConfig(
        data=WorldData(corpus_size=200, n_train_prompts=8, n_eval_prompts=8, n_heldout_prompts=4),
        weak=ModelSize(16, 1, 2),
        strong=ModelSize(16, 1, 2),
        weak_train=TrainConfig(num_train_epochs=1),
        strong_train=TrainConfig(num_train_epochs=1),
        card_max_new_tokens=4,
    )
    a = build_world(micro, root=tmp_path / "a", progress=False)
    b = build_world(micro, root=tmp_path / "b", progress=False)
    assert a.corpus().to_dict() == b.corpus().to_dict()
    wa, wb = a.load("weak_base").state_dict(), b.load("weak_base").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
