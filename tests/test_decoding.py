import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import RepetitionPenaltyLogitsProcessor

from congkit import (
    DecodingConfig,
    apply_repetition_penalty,
    cd_step,
    contrastive_generate,
    contrastive_scores,
    implicit_reward_from_ids,
    sample,
    warpers,
)
from congkit.models import char_tokenizer, tiny_llama
from congkit.pipeline import cong
from congkit.tokens import encode_prompt

from .conftest import PROMPTS


def _choose(scores, config, uniforms):
    """The token choice after the contrast and the penalty, as `cd_step` makes it: warpers, then argmax or CDF."""
    return cd_step(scores, None, alpha=1.0, plausibility_threshold=None, seen=None, repetition_penalty=1.0,
                   process=(lambda s: warpers(config)(None, s)) if config.do_sample else None,
                   do_sample=config.do_sample, uniforms=uniforms).tokens


def reference_cd(expert, amateur, tokenizer, prompt, alpha, lam, max_new_tokens, penalty):
    """Greedy CD of one prompt by the definition (`congkit.pipeline.cong.reference_cd`: no cache, no batching, float64)."""
    return cong.reference_cd(expert, amateur, encode_prompt(tokenizer, prompt), alpha=alpha, plausibility_threshold=lam,
                             repetition_penalty=penalty, max_new_tokens=max_new_tokens, eos=[tokenizer.eos_token_id])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("penalty", [1.0, 1.2])
def test_batched_greedy_cd_equals_reference(expert, amateur, tokenizer, alpha, penalty):
    out = contrastive_generate(
        expert,
        amateur,
        tokenizer,
        PROMPTS,
        alpha=alpha,
        plausibility_threshold=0.1,
        do_sample=False,
        max_new_tokens=12,
        repetition_penalty=penalty,
        batch_size=4,
        progress=False,
    )
    for prompt, got in zip(PROMPTS, out.token_ids):
        assert got == reference_cd(expert, amateur, tokenizer, prompt, alpha, 0.1, 12, penalty)


def test_alpha_matters(expert, amateur, tokenizer):
    outs = [
        contrastive_generate(
            expert, amateur, tokenizer, PROMPTS, alpha=a, do_sample=False, max_new_tokens=12, progress=False
        ).token_ids
        for a in (0.0, 1.0)
    ]
    assert outs[0] != outs[1]


def test_log_ratios_equal_rewards_module(expert, amateur, tokenizer):
    out = contrastive_generate(
        expert, amateur, tokenizer, PROMPTS, alpha=0.5, max_new_tokens=16, seed=3, progress=False
    )
    prompt_ids = [encode_prompt(tokenizer, p) for p in PROMPTS]
    ref = implicit_reward_from_ids(expert, amateur, prompt_ids, out.token_ids, beta=1.0)
    for got, want in zip(out.log_ratios, ref.per_token):
        assert len(got) == len(want)
        np.testing.assert_allclose(got, want, atol=1e-4)
    scaled = implicit_reward_from_ids(expert, amateur, prompt_ids, out.token_ids)  # beta 0.1, both sides
    assert out.implicit_reward().total == pytest.approx(scaled.total, abs=1e-4)
    assert out.implicit_reward().mean == pytest.approx(scaled.mean, abs=1e-5)
    assert out.implicit_reward(beta=1.0).total == pytest.approx(ref.total, abs=1e-4)


def test_one_reward_convention_for_decoded_and_text_responses(expert, amateur, plain_tokenizer):
    """A response that ended with EOS, scored from the decoder and as text (TRL's tokenisation, EOS appended), gives
    the same beta-scaled sum and mean over the same number of tokens."""
    from congkit import implicit_reward

    tok = plain_tokenizer
    prompts = PROMPTS * 4
    out = contrastive_generate(expert, amateur, tok, prompts, max_new_tokens=40, seed=1, progress=False)
    finished = [i for i, ids in enumerate(out.token_ids) if ids and ids[-1] == tok.eos_token_id]
    assert finished, "no response ended with EOS: the test compares nothing"
    decoded = out.implicit_reward()
    text = implicit_reward(expert, amateur, tok, [prompts[i] for i in finished], [out.texts[i] for i in finished])
    for j, i in enumerate(finished):
        if len(text.per_token[j]) != len(out.token_ids[i]):  # the text does not re-tokenise to the same ids
            continue
        assert text.total[j] == pytest.approx(decoded.total[i], abs=1e-4)
        assert text.mean[j] == pytest.approx(decoded.mean[i], abs=1e-5)


def test_alpha_one_is_plain_sampling(expert, amateur, tokenizer):
    kwargs = dict(max_new_tokens=20, seed=11, plausibility_threshold=0.1, do_sample=True, progress=False)
    cd = contrastive_generate(expert, amateur, tokenizer, PROMPTS, alpha=1.0, **kwargs)
    plain = sample(expert, tokenizer, PROMPTS, **kwargs)
    assert cd.token_ids == plain.token_ids
    assert cd.texts == plain.texts
    assert plain.log_ratios is None


def test_seeds(expert, amateur, tokenizer):
    kwargs = dict(alpha=0.5, max_new_tokens=20, do_sample=True, progress=False)
    a = contrastive_generate(expert, amateur, tokenizer, PROMPTS, seed=1, **kwargs)
    b = contrastive_generate(expert, amateur, tokenizer, PROMPTS, seed=1, **kwargs)
    c = contrastive_generate(expert, amateur, tokenizer, PROMPTS, seed=2, **kwargs)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_sample_does_not_depend_on_batch_or_shard(expert, amateur, tokenizer):
    kwargs = dict(alpha=0.5, max_new_tokens=16, seed=5, do_sample=True, progress=False)
    whole = contrastive_generate(expert, amateur, tokenizer, PROMPTS, batch_size=4, **kwargs)
    ones = contrastive_generate(expert, amateur, tokenizer, PROMPTS, batch_size=1, **kwargs)
    tail = contrastive_generate(expert, amateur, tokenizer, PROMPTS[2:], index_offset=2, **kwargs)
    assert whole.token_ids == ones.token_ids
    assert whole.token_ids[2:] == tail.token_ids


def test_rows_stop_at_eos(expert, tokenizer):
    out = sample(expert, tokenizer, PROMPTS * 4, max_new_tokens=40, do_sample=True, temperature=2.0, seed=0,
                 progress=False)
    eos = tokenizer.eos_token_id
    for ids in out.token_ids:
        assert eos not in ids[:-1]
        assert len(ids) == 40 or ids[-1] == eos
    assert any(ids[-1] == eos for ids in out.token_ids) and any(len(ids) == 40 for ids in out.token_ids)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    alpha=st.floats(0, 1),
    lam=st.floats(0.01, 1.0),
    scale=st.floats(0.1, 10),
    temperature=st.floats(0.1, 3),
    top_p=st.floats(0.05, 1.0),
    penalty=st.floats(0.5, 2.0),
)
def test_sampled_token_is_in_plausibility_head(seed, alpha, lam, scale, temperature, top_p, penalty):
    g = torch.Generator().manual_seed(seed)
    batch, vocab = 8, 50
    expert_logp = torch.log_softmax(scale * torch.randn(batch, vocab, generator=g), -1)
    amateur_logp = torch.log_softmax(scale * torch.randn(batch, vocab, generator=g), -1)
    seen = torch.rand(batch, vocab, generator=g) < 0.3
    config = DecodingConfig(alpha=alpha, plausibility_threshold=lam, do_sample=True, top_k=None, temperature=temperature, top_p=top_p, repetition_penalty=penalty)
    scores = apply_repetition_penalty(contrastive_scores(expert_logp, amateur_logp, alpha, lam), seen, penalty)
    tok = _choose(scores, config, torch.rand(batch, generator=g, dtype=torch.float64))
    p = expert_logp.exp()
    chosen = p.gather(-1, tok[:, None]).squeeze(-1)
    assert torch.all(chosen >= lam * p.max(-1).values * (1 - 1e-6))


def test_repetition_penalty_matches_transformers():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 20, generator=g)
    history = torch.randint(0, 20, (3, 7), generator=g)
    seen = torch.zeros(3, 20, dtype=torch.bool).scatter_(1, history, True)
    want = RepetitionPenaltyLogitsProcessor(1.3)(history, scores.clone())
    torch.testing.assert_close(apply_repetition_penalty(scores, seen, 1.3), want)


def test_sampling_follows_the_distribution():
    """Inverse-CDF sampling: empirical frequencies match softmax(F / T) on a small vocabulary."""
    scores = torch.tensor([[0.0, 1.0, 2.0, float("-inf")]]).repeat(20000, 1)
    config = DecodingConfig(do_sample=True)
    tok = _choose(scores, config, torch.rand(20000, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(tok, minlength=4).double() / 20000
    torch.testing.assert_close(freq, torch.softmax(scores[0].double(), -1), atol=0.015, rtol=0)


def test_errors(expert, amateur, tokenizer):
    small = tiny_llama(50, hidden_size=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match=r"vocabulary mismatch.*101.*50"):
        contrastive_generate(expert, small, tokenizer, PROMPTS, progress=False)
    for bad, match in [
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(min_p=0.0), "min_p"),
        (dict(min_p=1.2), "min_p"),
        (dict(plausibility_threshold=0.0), "plausibility_threshold"),
        (dict(plausibility_threshold=1.2), "plausibility_threshold"),
        (dict(max_new_tokens=0), "max_new_tokens"),
    ]:
        with pytest.raises(ValueError, match=match):
            contrastive_generate(expert, amateur, tokenizer, PROMPTS, progress=False, **bad)
    with pytest.raises(ValueError, match=r"prompts\[1\] is empty"):
        contrastive_generate(expert, amateur, tokenizer, ["fine", "  "], progress=False)
    plain = char_tokenizer(chat_template=False)
    plain.pad_token, plain.eos_token = None, None
    with pytest.raises(ValueError, match="no pad token and no EOS"):
        sample(expert, plain, PROMPTS, progress=False)
    empty = contrastive_generate(expert, amateur, tokenizer, [], progress=False)
    assert len(empty) == 0 and empty.texts == [] and empty.log_ratios == []


def release_step(expert_logits, amateur_logits, input_ids, alpha, lam, penalty):
    """A port of the authors' CD step (their transformers fork: `_relative_top_filter`, then the contrast, then the
    logits processors): off-head amateur entries set to -1e-3 and log-softmaxed a second time."""
    scores_normalized = expert_logits.float().log_softmax(dim=-1)
    baseline_scores_normalized = amateur_logits.float().log_softmax(dim=-1)
    sorted_logits, _ = torch.sort(scores_normalized, descending=True)
    min_thresh = sorted_logits[..., 0]
    probs_thresh = torch.min(min_thresh, torch.max(scores_normalized, dim=-1).values + np.log(lam)).unsqueeze(-1)
    baseline_scores_normalized[scores_normalized < probs_thresh] = -1e-3
    scores_normalized[scores_normalized < probs_thresh] = -float("inf")
    base_logits = baseline_scores_normalized.log_softmax(dim=-1)
    next_token_logits = scores_normalized - (1 - alpha) * base_logits
    return RepetitionPenaltyLogitsProcessor(penalty=penalty)(input_ids, next_token_logits)


def congkit_step(expert_logits, amateur_logits, input_ids, alpha, lam, penalty, release):
    seen = torch.zeros(expert_logits.shape, dtype=torch.bool).scatter_(1, input_ids, True)
    scores = contrastive_scores(expert_logits.float().log_softmax(-1), amateur_logits.float().log_softmax(-1),
                                alpha, lam, release_compatible=release)  # fmt: skip
    return apply_repetition_penalty(scores, seen, penalty)


def test_release_compatible_step_equals_the_authors_step_on_random_logits():
    g = torch.Generator().manual_seed(0)
    expert, amateur = torch.randn(64, 1000, generator=g) * 3, torch.randn(64, 1000, generator=g) * 3
    head_ids = expert.topk(8, dim=-1).indices
    input_ids = torch.cat([head_ids[:, :3], torch.randint(0, 1000, (64, 5), generator=g)], dim=1)  # some head seen
    for alpha in (0.0, 0.5, 0.9):
        want = release_step(expert, amateur, input_ids, alpha, 0.1, 1.2)
        got = congkit_step(expert, amateur, input_ids, alpha, 0.1, 1.2, release=True)
        assert torch.equal(torch.isinf(got), torch.isinf(want))
        torch.testing.assert_close(got[torch.isfinite(got)], want[torch.isfinite(want)], rtol=0, atol=1e-5)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
        # the paper's formula differs from the release only through the penalty: equal without one ...
        plain = congkit_step(expert, amateur, input_ids, alpha, 0.1, 1.0, release=False)
        shifted = congkit_step(expert, amateur, input_ids, alpha, 0.1, 1.0, release=True)
        torch.testing.assert_close(torch.softmax(plain, -1), torch.softmax(shifted, -1), rtol=0, atol=1e-6)
    # ... and with one, the release picks other tokens in some rows (what makes the option necessary)
    plain = congkit_step(expert, amateur, input_ids, 0.5, 0.1, 1.2, release=False)
    assert (plain.argmax(-1) != release_step(expert, amateur, input_ids, 0.5, 0.1, 1.2).argmax(-1)).any()


def test_release_compatible_greedy_cd_matches_a_port_of_the_release(expert, amateur, tokenizer):
    out = contrastive_generate(expert, amateur, tokenizer, PROMPTS, alpha=0.5, plausibility_threshold=0.1, do_sample=False,
                               repetition_penalty=1.2, release_compatible=True, max_new_tokens=12, progress=False)  # fmt: skip
    for prompt, got in zip(PROMPTS, out.token_ids):
        ids = encode_prompt(tokenizer, prompt)
        want = []
        for _ in range(12):
            x = torch.tensor([ids + want])
            with torch.no_grad():
                scores = release_step(expert(x).logits[:, -1], amateur(x).logits[:, -1], x, 0.5, 0.1, 1.2)
            want.append(int(scores.argmax(-1)))
            if want[-1] == tokenizer.eos_token_id:
                break
        assert got == want


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("release", [False, True])
def test_token_choice_over_the_head_equals_the_whole_vocabulary(do_sample, release):
    """The engine's step (`next_tokens`: penalty, temperature, top-p and CDF on the gathered head, or on the whole
    vocabulary with the head masked) picks the same token as the formula's operations on the whole vocabulary, on
    random logits of a real vocabulary size, on either path, and never a token outside the head."""
    from congkit.decoding import next_tokens, plausibility_head

    gen = torch.Generator().manual_seed(0)
    batch, vocab = 64, 32_000
    for scale, lam, alpha, top_p, penalty in [(3.0, 0.1, 0.5, 0.95, 1.2), (8.0, 0.01, 0.0, 0.8, 1.0),
                                              (1.0, 0.3, 1.0, 1.0, 1.5)]:  # fmt: skip
        expert = torch.log_softmax(scale * torch.randn(batch, vocab, generator=gen), -1)
        amateur = torch.log_softmax(scale * torch.randn(batch, vocab, generator=gen), -1)
        seen = torch.rand(batch, vocab, generator=gen) < 0.001
        uniforms = torch.rand(batch, generator=gen, dtype=torch.float64)
        config = DecodingConfig(alpha=alpha, plausibility_threshold=lam, temperature=0.8, top_p=top_p, repetition_penalty=penalty,
                                do_sample=do_sample, release_compatible=release)  # fmt: skip
        full = contrastive_scores(expert, amateur, alpha, lam, release)
        want = _choose(apply_repetition_penalty(full, seen, penalty), config, uniforms)
        for token_choice in ("head", "vocabulary"):  # "vocabulary" is what "auto" takes on a GPU
            got = next_tokens(expert, amateur, seen, dataclasses.replace(config, token_choice=token_choice), uniforms)
            assert torch.equal(got, want)
            assert plausibility_head(expert, lam)[torch.arange(batch), got].all()  # no token outside the head


def test_head_tokens_are_each_rows_head_in_id_order():
    from congkit.hub.custom_generate.step import head_tokens, plausibility_head

    gen = torch.Generator().manual_seed(3)
    logp = torch.log_softmax(torch.randn(6, 300, generator=gen) * torch.tensor([0.5, 1, 2, 4, 8, 16])[:, None], -1)
    head = plausibility_head(logp, 0.1)
    ids, in_head = head_tokens(head)
    assert ids.shape[1] == int(head.sum(-1).max()) and len(set(head.sum(-1).tolist())) > 1  # rows of unequal heads
    for row in range(6):
        assert ids[row][in_head[row]].tolist() == torch.nonzero(head[row]).squeeze(-1).tolist()
        assert not in_head[row][int(head[row].sum()) :].any()  # padding only after the row's head


@pytest.mark.parametrize("vocab,block", [(300, 128), (256, 128), (101, 128), (1000, 7), (64, 1), (32_000, 128)])
def test_head_ids_by_blocks_equal_the_full_mask_reference(vocab, block):
    """`head_ids` (block maxima, then the hit blocks compared entry by entry) gives exactly the reference's ids and
    padding: vocabularies with and without a partial last block, smaller than one block, one id per block; rows of
    very unequal heads, an exact tie at the threshold, -inf entries and a row whose head is its whole vocabulary."""
    from congkit.hub.custom_generate.step import head_ids, head_tokens, plausibility_head

    gen = torch.Generator().manual_seed(vocab + block)
    scales = torch.tensor([0.0, 0.5, 2.0, 8.0, 30.0, 3.0])[:, None]
    logp = torch.log_softmax(torch.randn(6, vocab, generator=gen) * scales, -1)
    logp[3, : vocab // 2] = float("-inf")
    logp[5, vocab - 1] = logp[5].max() + np.log(0.1)  # on the threshold: in the head (>=)
    for lam in (0.1, 0.5, 1.0):
        want_ids, want_in = head_tokens(plausibility_head(logp, lam))
        got_ids, got_in = head_ids(logp, lam, block=block)
        assert torch.equal(got_in, want_in) and torch.equal(got_ids, want_ids)
        for row in range(len(logp)):  # one row at a time: its own path, the same ids
            one_ids, one_in = head_ids(logp[row : row + 1], lam, block=block)
            ref_ids, ref_in = head_tokens(plausibility_head(logp[row : row + 1], lam))
            assert torch.equal(one_ids, ref_ids) and torch.equal(one_in, ref_in) and bool(one_in.all())
    assert bool(plausibility_head(logp, 0.1)[0].all())  # row 0 (constant): its head is the whole vocabulary
    assert bool(plausibility_head(logp, 0.1)[5, vocab - 1])


def test_a_small_step_is_stepped_in_turn_without_timing(expert, amateur, tokenizer, monkeypatch):
    """Below `SMALL_STEP` the eager path never hands the amateur to a second thread (`ThreadPlan(in_turn=True)`)."""
    from congkit.decoding import runtime

    calls = []
    real = runtime._step_two_threads
    monkeypatch.setattr(runtime, "_step_two_threads", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert runtime.small_step(expert, 4) and not runtime.ThreadPlan(in_turn=True).threaded()
    contrastive_generate(expert, amateur, tokenizer, PROMPTS, max_new_tokens=6, lazy_amateur=False, progress=False)
    assert not calls


def test_thread_plan_times_both_ways_then_keeps_the_faster_and_follows_a_change():
    from congkit.decoding import ThreadPlan

    plan = ThreadPlan(probes=2, period=4, weight=0.5)
    seconds = {True: 1.0, False: 2.0}  # two threads faster first, then (contention) slower
    ways = []
    for step in range(40):
        if step == 20:
            seconds = {True: 3.0, False: 2.0}
        way = plan.threaded()
        ways.append(way)
        plan.record(way, seconds[way])
    assert ways[:4] == [True, True, False, False]  # each way timed `probes` times first
    assert ways[4:20].count(False) == 4 and ways[4:20].count(True) == 12  # the other retimed once every 4 steps
    assert ways[-10:].count(False) >= 7  # after the change, mostly in turn


def test_plausibility_head_is_what_transformers_min_p_keeps():
    from transformers import MinPLogitsWarper

    from congkit import plausibility_head

    gen = torch.Generator().manual_seed(1)
    for lam in (0.01, 0.1, 0.5):
        logp = torch.log_softmax(4 * torch.randn(16, 500, generator=gen), -1)
        kept = torch.isfinite(MinPLogitsWarper(min_p=lam)(None, logp.clone()))
        assert torch.equal(plausibility_head(logp, lam), kept)


@pytest.mark.parametrize("do_sample", [False, True])
def test_models_stepped_in_two_threads_decode_what_one_thread_decodes(expert, amateur, tokenizer, monkeypatch,
                                                                       do_sample):  # fmt: skip
    from congkit.decoding import runtime

    kw = dict(alpha=0.5, do_sample=do_sample, max_new_tokens=12, seed=4, batch_size=4, progress=False,
              lazy_amateur=False)  # the eager path: the lazy one steps the models in turn  # fmt: skip
    monkeypatch.setattr(runtime, "SMALL_STEP", 0)  # a small step is stepped in turn: force the thread plan here
    calls = []
    real = runtime._step_two_threads
    monkeypatch.setattr(runtime, "_step_two_threads", lambda *a, **k: calls.append(1) or real(*a, **k))
    threaded = contrastive_generate(expert, amateur, tokenizer, PROMPTS, **kw)
    assert calls  # two threads ran (the plan probes them first)
    monkeypatch.setenv("CONGKIT_THREADS", "keep")
    serial = contrastive_generate(expert, amateur, tokenizer, PROMPTS, **kw)
    assert threaded.token_ids == serial.token_ids
    np.testing.assert_allclose(np.concatenate(threaded.log_ratios), np.concatenate(serial.log_ratios), atol=1e-5)


def test_preallocated_cache_layer_holds_what_concatenation_holds_and_grows_past_its_capacity():
    from transformers import DynamicLayer

    from congkit.decoding import PreallocatedLayer

    gen = torch.Generator().manual_seed(0)
    grown, concatenated = PreallocatedLayer(capacity=2), DynamicLayer()
    for length in (3, 1, 1):  # the prompt overflows the capacity, then one token at a time
        k, v = (torch.randn(2, 4, length, 8, generator=gen) for _ in range(2))
        got, want = grown.update(k, v), concatenated.update(k, v)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert grown.get_seq_length() == 5


@pytest.mark.slow
def test_compiled_decoding_decodes_what_eager_decoding_decodes(expert, amateur, tokenizer):
    """compile=True (StaticCache, mask built outside, the model's compiled forward) against the eager engine: the same
    greedy and seeded-sampling tokens, log-ratios equal up to kernel rounding. Compiles each model once (~1 min)."""
    for do_sample in (False, True):
        kw = dict(alpha=0.5, do_sample=do_sample, max_new_tokens=10, seed=2, batch_size=4, progress=False)
        eager = contrastive_generate(expert, amateur, tokenizer, PROMPTS, **kw)
        compiled = contrastive_generate(expert, amateur, tokenizer, PROMPTS, compile=True, **kw)
        assert compiled.token_ids == eager.token_ids
        np.testing.assert_allclose(np.concatenate(compiled.log_ratios), np.concatenate(eager.log_ratios), atol=1e-4)


def test_compile_on_a_model_transformers_cannot_compile_is_named(expert, amateur, tokenizer, monkeypatch):
    monkeypatch.setattr(type(expert), "_can_compile_fullgraph", False)
    with pytest.raises(ValueError, match="compile=True needs a model .* LlamaForCausalLM"):
        contrastive_generate(expert, amateur, tokenizer, PROMPTS[:1], compile=True, max_new_tokens=2, progress=False)


def test_the_amateurs_worker_thread_takes_the_callers_thread_count_at_every_step(monkeypatch):
    """Intra-op threads are a per-thread setting: the worker must not keep the count of the batch that first used
    it (a batch-1 step asks for one thread, a batch-32 step for torch's setting)."""
    from congkit.decoding import step_models

    monkeypatch.delenv("CONGKIT_THREADS", raising=False)

    class Recorder:
        model = tiny_llama(50, hidden_size=16, num_layers=1, num_heads=2)

        def __init__(self):
            self.seen = []

        def next(self):
            self.seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    expert, amateur = Recorder(), Recorder()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            step_models([expert, amateur], "next")
    finally:
        torch.set_num_threads(before)
    assert amateur.seen == expert.seen == [1, 2, 1]


def test_prompt_ids_encodes_each_distinct_prompt_once_in_order(tokenizer, monkeypatch):
    """Repeated prompts (an evaluation's k draws) are encoded once each, and every row still gets its own prompt's ids,
    strings and conversations alike."""
    from congkit import decoding

    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 3 and 4."}]
    prompts = [*PROMPTS, conversation] * 3
    want = [encode_prompt(tokenizer, p, True) for p in prompts]
    calls = []
    real = decoding.engine.encode_prompt
    monkeypatch.setattr(decoding.engine, "encode_prompt", lambda *a: calls.append(a[1]) or real(*a))
    texts, got = decoding.prompt_ids(tokenizer, prompts, apply_chat_template=True)
    assert got == want and texts == prompts
    assert len(calls) == len(PROMPTS) + 1
    got[0].append(-1)  # rows are separate lists: changing one changes no other
    assert got[len(PROMPTS) + 1] == want[0]


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_dropping_finished_rows_keeps_every_row_the_same(expert, amateur, tokenizer, monkeypatch, cache):
    """A batch drops its finished rows (`COMPACT_FRACTION`); every row's tokens are the same as when finished rows
    decode on, and its log-ratios equal to float32 rounding (a row computed in a smaller batch can differ in the last
    bit), for plain sampling and CD, greedy and sampled, on both cache kinds."""
    from congkit import decoding

    drops = []
    real = decoding.PreallocatedLayer.batch_select_indices
    monkeypatch.setattr(decoding.PreallocatedLayer, "batch_select_indices",
                        lambda self, keep: drops.append(len(keep)) or real(self, keep))  # fmt: skip
    prompts = PROMPTS * 6
    settings_ = dict(max_new_tokens=40, temperature=2.0, seed=0, progress=False, batch_size=24, cache=cache)
    for do_sample in (True, False):
        outs = {}
        for fraction in (2.0, 0.0, 0.25):  # never, at every finished row, at a quarter of the batch
            monkeypatch.setattr(decoding.runtime, "COMPACT_FRACTION", fraction)
            plain = sample(expert, tokenizer, prompts, do_sample=do_sample, **settings_)
            cd = contrastive_generate(expert, amateur, tokenizer, prompts, alpha=0.5, plausibility_threshold=0.05, do_sample=do_sample,
                                      **settings_)  # fmt: skip
            outs[fraction] = plain, cd
        for fraction in (0.0, 0.25):
            assert outs[fraction][0].token_ids == outs[2.0][0].token_ids
            assert outs[fraction][1].token_ids == outs[2.0][1].token_ids
            for got, want in zip(outs[fraction][1].log_ratios, outs[2.0][1].log_ratios):
                assert got == pytest.approx(want, abs=1e-5)
        lengths = {len(ids) for ids in outs[2.0][0].token_ids + outs[2.0][1].token_ids}
        assert len(lengths) >= 2  # rows end at different steps
    if cache == "static":
        assert drops and min(drops) < 24  # rows were dropped


@pytest.mark.parametrize("cache", ["static", "dynamic"])
@pytest.mark.parametrize("do_sample,penalty", [(False, 1.0), (True, 1.0), (True, 1.3), (False, 1.3)])
def test_the_lazy_amateur_decodes_what_the_eager_one_decodes(peaky_expert, amateur, tokenizer, monkeypatch, cache,
                                                               do_sample, penalty):  # fmt: skip
    """The amateur deferred on forced steps (every live row's head a single token) and read later in one forward:
    the same tokens and per-token log-ratios as reading it every step, greedy and sampled, with and without a
    penalty, padded batches of mixed lengths and batch 1, rows ending (EOS) inside a backlog, `max_new_tokens`
    reached inside a backlog, finished rows dropped mid-backlog, both cache kinds; it ran fewer amateur forwards."""
    from congkit import decoding

    prompts, early = PROMPTS * 3, 0
    for fraction, batch_size, max_new in ((2.0, 12, 40), (0.25, 12, 40), (2.0, 1, 9), (0.25, 5, 17)):
        monkeypatch.setattr(decoding.runtime, "COMPACT_FRACTION", fraction)
        runs = {lazy: contrastive_generate(peaky_expert, amateur, tokenizer, prompts, alpha=0.3, plausibility_threshold=0.3,
                                           do_sample=do_sample, temperature=1.5, repetition_penalty=penalty, seed=3,
                                           max_new_tokens=max_new, batch_size=batch_size, cache=cache, progress=False,
                                           lazy_amateur=lazy) for lazy in (False, True)}  # fmt: skip
        assert runs[True].token_ids == runs[False].token_ids
        for got, want in zip(runs[True].log_ratios, runs[False].log_ratios):
            assert len(got) == len(want) and got == pytest.approx(want, abs=1e-5)
        eager, lazy = runs[False].stats, runs[True].stats
        assert eager["forced_steps"] == 0 and eager["amateur_forwards"] == eager["steps"] - len(range(0, len(prompts),
                                                                                                    batch_size))  # fmt: skip
        assert 0 < runs[True].forced_fraction < 1 and lazy["steps"] == eager["steps"]
        assert lazy["amateur_forwards"] < eager["amateur_forwards"]
        lengths = {len(ids) for ids in runs[True].token_ids}
        assert max_new in lengths  # some rows reached max_new_tokens
        early += len(lengths) > 1  # and some ended (EOS) before it
    assert early


def test_the_lazy_amateur_matches_the_reference_definition(peaky_expert, amateur, tokenizer):
    """Greedy lazy CD equals the slow definition (`cong.reference_cd`) prompt by prompt."""
    out = contrastive_generate(peaky_expert, amateur, tokenizer, PROMPTS, alpha=0.0, plausibility_threshold=0.3,
                               max_new_tokens=15, batch_size=3, progress=False, repetition_penalty=1.2)  # fmt: skip
    assert 0 < out.forced_fraction < 1
    for prompt, got in zip(PROMPTS, out.token_ids):
        assert got == reference_cd(peaky_expert, amateur, tokenizer, prompt, 0.0, 0.3, 15, 1.2)
