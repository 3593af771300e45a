import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from congkit import sample
from congkit.pipeline.training import TrainConfig
from congkit.pipeline.world import (
    ALIGNMENT_FAMILIES,
    FAMILIES,
    HELDOUT_FAMILY,
    PREFERENCE_ATTRIBUTES,
    TASK_COLUMNS,
    NoiseRates,
    Task,
    WorldData,
    build_corpus,
    build_prompt_sets,
    canonical_response,
    judge,
    make_task,
    noisy_response,
    one_attribute_worse,
    world_vocabulary,
    wrong_answer,
)
from congkit.pipeline.world_build import ModelSize, WorldConfig, build_world, card_table

TASKS = [make_task(f, random.Random(i)) for i in range(20) for f in FAMILIES]


def test_canonical_response_scores_one_and_each_attribute_costs_a_quarter():
    for task in TASKS:
        best = judge(task, canonical_response(task))
        assert (best.score, best.r_pref, best.r_cap) == (1.0, 1.0, 1.0)
        for attribute in PREFERENCE_ATTRIBUTES:
            j = judge(task, one_attribute_worse(task, attribute))
            assert j.well_formed and j.r_pref == 0.75 and j.r_cap == 1.0, (task, attribute, j)
        wrong = canonical_response(task).replace(f" {task.answer}", f" {wrong_answer(task, random.Random(0))}", 1)
        j = judge(task, wrong)
        assert (j.r_pref, j.r_cap, j.score) == (1.0, 0.0, 0.8)


def test_instructions_decide_format_and_length():
    tag_short = Task("add", "Add 1 and 2 . style=tag length=short", "3", "tag", "short")
    sentence_full = Task("add", "Add 1 and 2 . style=sentence length=full", "3", "sentence", "full")
    assert judge(tag_short, "Answer: 3").r_pref == 1.0 and judge(sentence_full, "Answer: 3").r_pref == 0.5
    assert judge(sentence_full, "The answer is 3 . Glad to help!").r_pref == 1.0
    assert judge(tag_short, "The answer is 3 . Glad to help!").r_pref == 0.5


@pytest.mark.parametrize("response", ["", "   ", "Answer: é", "x " * 50, "Answer:", "!!!", "Answer: 3 banana",
                                      "The answer is 3", "Answer: a b"])  # fmt: skip
def test_garbage_scores_zero(response):
    task = Task("add", "Add 1 and 2 . style=tag length=short", "3", "tag", "short")
    j = judge(task, response)
    assert (j.score, j.r_pref, j.r_cap) == (0.0, 0.0, 0.0) and not j.well_formed


def test_attributes_are_detected():
    task = Task("add", "Add 1 and 2 . style=tag length=short", "3", "tag", "short")
    j = judge(task, "Okay, The answer is 3 . Answer: 3 Hope this helps!")
    assert j.correct and j.filler and j.repetition and not j.length_ok and not j.format_ok and j.r_pref == 0.0


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
        j = judge(task, response)
        assert 0.0 <= j.score <= 1.0 and j.r_pref in (0, 0.25, 0.5, 0.75, 1.0) and j.r_cap in (0.0, 1.0)


def test_noise_rates_are_what_the_config_says():
    rates = NoiseRates(wrong=0.4, filler=0.1, format_slip=0.0, repetition=0.5, verbose=0.2)
    corpus = build_corpus(WorldData(corpus_size=4000, noise=rates))
    for name, rate in vars(rates).items():
        assert sum(corpus[f"noise_{name}"]) / len(corpus) == pytest.approx(rate, abs=0.03)
    for row in corpus.select(range(300)):
        task = Task(*(row[c] for c in TASK_COLUMNS))
        j = judge(task, row["completion"])
        assert j.correct == (not row["noise_wrong"])
        assert j.format_ok == (not row["noise_format_slip"])
        assert j.length_ok == (not row["noise_verbose"])
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


def test_word_tokenizer_makes_each_decision_one_token_and_round_trips(tmp_path):
    from congkit.models import word_tokenizer
    from congkit.tokens import encode_pair

    word_tokenizer(world_vocabulary()).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    rng = random.Random(0)
    for _ in range(200):
        task = make_task(rng.choice(FAMILIES), rng)
        response, _ = noisy_response(task, NoiseRates(), rng)
        prompt_ids, completion = encode_pair(tok, task.prompt, response, apply_chat_template=True)
        assert tok.unk_token_id not in prompt_ids + completion
        assert tok.decode(completion, skip_special_tokens=True) == response
        assert len(completion) == len(response.split()) + 1  # one token per word, then EOS
    for phrase in ("Sure!", "Answer:", "style=tag", "length=full", "12"):
        assert len(tok(phrase)["input_ids"]) == 1, phrase
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Add 1 and 2 ."}, {"role": "assistant", "content": "Answer: 3"}], tokenize=False
    )
    assert rendered == "<|user|>Add 1 and 2 .<|assistant|>Answer: 3<|end|>"
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<pad>"


def test_smoke_world_card_invariants(smoke_world):
    card = smoke_world.card
    weak, strong = card["models"]["weak_base"], card["models"]["strong_base"]
    assert strong["parameters"] > 5 * weak["parameters"]
    # capability gap, on held-out prompts of both kinds
    for split in ("eval", "heldout"):
        assert strong[split]["answer_logprob"] > weak[split]["answer_logprob"] + 0.1
    # the explicit reward separates clean from noisy corpus responses
    assert card["corpus"]["reward_clean"] > card["corpus"]["reward_noisy"] + 0.2
    # the strong base reproduces the corpus noise (40 prompts: a loose tolerance)
    for attr in ("filler", "format_slip", "repetition", "verbose"):
        assert abs(strong["eval"]["sampled_rates"][attr] - card["corpus"]["rates"][attr]) < 0.25, attr
    table = card_table(card)
    assert {"corpus", "weak_base", "strong_base"} <= set(table.columns)


def test_saved_models_reload_and_generate(smoke_world):
    tok = AutoTokenizer.from_pretrained(smoke_world.path / "tokenizer")
    for name in ("weak_base", "strong_base"):
        model = AutoModelForCausalLM.from_pretrained(smoke_world.path / name)
        prompts = smoke_world.prompts("eval")["prompt"][:4]
        out = sample(model, tok, prompts, max_new_tokens=8, apply_chat_template=True, progress=False)
        for prompt, ids in zip(prompts, out.token_ids):  # the reloaded model decodes as transformers' generate does
            x = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)  # fmt: skip
            ref = model.generate(**x, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
            want = ref[0, x["input_ids"].shape[1] :].tolist()
            assert ids == want[: len(ids)] and (len(ids) == 8 or ids[-1] == tok.eos_token_id)


def test_second_build_reuses_the_cache(smoke_world):
    again = build_world(smoke_world.config, root=smoke_world.path.parent, progress=False)
    assert again.path == smoke_world.path
    assert again.card == smoke_world.card
    assert "build_seconds" not in again.card  # no wall-clock field in what keys read: a rebuild gives the same bytes


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


# --- the world's shape: preferences spread over a span, a length with an optimum inside its range -------------------


def test_the_default_shape_is_the_original_world_and_keeps_its_key():
    from congkit.pipeline.cache import fingerprint
    from congkit.pipeline.world import DEFAULT_SHAPE, WorldShape

    assert WorldData().shape == DEFAULT_SHAPE == WorldShape(1, 0)
    assert fingerprint(WorldConfig()) == fingerprint(WorldConfig(data=WorldData(shape=WorldShape())))
    assert fingerprint(WorldConfig()) != fingerprint(WorldConfig(data=WorldData(shape=WorldShape(3, 0))))
    assert world_vocabulary() == world_vocabulary(DEFAULT_SHAPE)  # the same tokenizer, hence the same models
    with pytest.raises(ValueError, match="odd number"):
        WorldShape(format_span=2)


def test_a_spread_format_is_decided_by_the_majority_of_its_lead_words():
    from congkit.pipeline.world import SENTENCE_LEAD, TAG_LEAD, WorldShape

    shape = WorldShape(format_span=3)
    for task in TASKS:
        assert judge(task, canonical_response(task, shape), shape).r_pref == 1.0
        for attribute in PREFERENCE_ATTRIBUTES:
            worse = judge(task, one_attribute_worse(task, attribute, shape), shape)
            assert worse.r_pref == 0.75 and worse.correct, (task, attribute)
    tag = Task("add", "Add 1 and 2 . style=tag length=short", "3", "tag", "short")
    majority = {f"{TAG_LEAD[1]} {SENTENCE_LEAD[0]} {TAG_LEAD[2]} 3": True, f"{SENTENCE_LEAD[2]} {TAG_LEAD[0]} "
                f"{SENTENCE_LEAD[1]} 3": False, f"{TAG_LEAD[0]} {TAG_LEAD[1]} {TAG_LEAD[2]} 3": True}  # fmt: skip
    for response, format_ok in majority.items():
        j = judge(tag, response, shape)
        assert j.well_formed and j.correct and j.format_ok == format_ok, response
    assert not judge(tag, "Answer: 3", shape).well_formed  # a span of 3 is what this world's statements have
    rng, rates = random.Random(0), NoiseRates()
    slips = [noisy_response(TASKS[i % len(TASKS)], rates, rng, shape)[1]["format_slip"] for i in range(4000)]
    p = rates.format_slip  # each word slips apart: the majority slips with P(at least 2 of 3)
    assert sum(slips) / len(slips) == pytest.approx(3 * p**2 * (1 - p) + p**3, abs=0.03)
    assert set(TAG_LEAD + SENTENCE_LEAD) <= set(world_vocabulary(shape))


def test_a_closing_target_scores_length_with_an_optimum_inside_the_range():
    from congkit.pipeline.world import CLOSINGS, WorldShape

    shape = WorldShape(closing_target=2)
    full = Task("add", "Add 1 and 2 . style=tag length=full", "3", "tag", "full")
    short = Task("add", "Add 1 and 2 . style=tag length=short", "3", "tag", "short")
    scores = {c: judge(full, " ".join(["Answer: 3", *[CLOSINGS[0]] * c]), shape).r_pref for c in range(5)}
    assert scores == {0: 0.75, 1: 0.875, 2: 1.0, 3: 0.875, 4: 0.75}  # more helps up to the target, then hurts
    assert judge(full, canonical_response(full, shape), shape).r_pref == 1.0
    assert judge(short, "Answer: 3 " + CLOSINGS[1], shape).r_pref == 0.75
    assert judge(full, "Answer: 3 " + CLOSINGS[0]).r_pref == 1.0  # the original world: any closing will do
    rng = random.Random(1)
    counts = set()
    for _ in range(500):
        response, noise = noisy_response(full, NoiseRates(), rng, shape)
        counts.add(sum(response.count(c) for c in CLOSINGS))
    assert counts == {0, 1, 2}  # the corpus says 1..m closings (0 when it slips to short): never more than m


def test_the_second_plan_names_registered_arms_world_levels_and_a_grid_that_can_bracket():
    from congkit.pipeline import plan
    from congkit.pipeline.methods import recipe
    from congkit.pipeline.world import WorldShape

    levels = plan.value("study", "levels", plan=2)
    shapes = {name: WorldShape(**plan.value("levels", name, plan=2)) for name in levels}
    assert shapes["original"] == WorldShape() and shapes["spread"].format_span >= 3 and shapes["overshoot"].closing_target
    arms = plan.value("arms", "methods", plan=2)
    for name in arms:
        recipe(name)  # registered and trainable
    named = {m for pair in plan.value("comparisons", "primary", plan=2) + plan.value("comparisons", "secondary", plan=2)
             for m in pair}  # fmt: skip
    assert named <= set(arms)
    steps = plan.value("tuning", "extend_steps", plan=2)  # the adaptive grid reaches at least x0.5..x8, 2..16 epochs
    multipliers, epochs = plan.value("tuning", "learning_rate_multipliers", plan=2), plan.value("tuning", "epochs", plan=2)
    assert min(multipliers) / 2**steps <= 0.5 and max(multipliers) * 2**steps >= 8
    assert min(epochs) / 2**steps <= 2 and max(epochs) * 2**steps >= 16
    assert plan.value("study", "accepted_per_level", plan=2) >= 3
    with pytest.raises(KeyError, match="analysis_plan_2.md: no \\[study\\] nothing"):
        plan.value("study", "nothing", plan=2)
