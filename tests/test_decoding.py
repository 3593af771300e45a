import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import RepetitionPenaltyLogitsProcessor

from congkit import (
    DecodingConfig,
    apply_repetition_penalty,
    choose_tokens,
    contrastive_generate,
    contrastive_scores,
    implicit_reward_from_ids,
    sample,
)
from congkit.models import char_tokenizer, tiny_llama
from congkit.tokens import encode_prompt

from .conftest import PROMPTS


def reference_cd(expert, amateur, tokenizer, prompt, alpha, lam, max_new_tokens, penalty):
    """Greedy CD for one prompt, no cache, no batching: the formula of PAPER.md written out."""
    ids = encode_prompt(tokenizer, prompt)
    out = []
    for _ in range(max_new_tokens):
        x = torch.tensor([ids + out])
        with torch.no_grad():
            log_pr = torch.log_softmax(expert(x).logits[0, -1].double(), -1)
            log_pref = torch.log_softmax(amateur(x).logits[0, -1].double(), -1)
        p_r = log_pr.exp()
        best, best_score = None, -float("inf")
        for v in range(len(p_r)):
            if p_r[v] < lam * p_r.max():
                continue  # outside the plausibility head
            score = (1 - alpha) * (log_pr[v] - log_pref[v]) + alpha * log_pr[v]
            if v in ids + out:
                score = score * penalty if score < 0 else score / penalty
            if score > best_score:
                best, best_score = v, score
        out.append(best)
        if best == tokenizer.eos_token_id:
            break
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("penalty", [1.0, 1.2])
def test_batched_greedy_cd_equals_reference(expert, amateur, tokenizer, alpha, penalty):
    out = contrastive_generate(
        expert,
        amateur,
        tokenizer,
        PROMPTS,
        alpha=alpha,
        lam=0.1,
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


def test_token_rewards_equal_rewards_module(expert, amateur, tokenizer):
    out = contrastive_generate(
        expert, amateur, tokenizer, PROMPTS, alpha=0.5, max_new_tokens=16, seed=3, progress=False
    )
    prompt_ids = [encode_prompt(tokenizer, p) for p in PROMPTS]
    ref = implicit_reward_from_ids(expert, amateur, prompt_ids, out.token_ids)
    for got, want in zip(out.token_rewards, ref.per_token):
        assert len(got) == len(want)
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert out.implicit_reward() == pytest.approx(ref.mean, abs=1e-4)


def test_alpha_one_is_plain_sampling(expert, amateur, tokenizer):
    kwargs = dict(max_new_tokens=20, seed=11, lam=0.1, progress=False)
    cd = contrastive_generate(expert, amateur, tokenizer, PROMPTS, alpha=1.0, **kwargs)
    plain = sample(expert, tokenizer, PROMPTS, **kwargs)
    assert cd.token_ids == plain.token_ids
    assert cd.texts == plain.texts
    assert plain.token_rewards is None


def test_seeds(expert, amateur, tokenizer):
    kwargs = dict(alpha=0.5, max_new_tokens=20, progress=False)
    a = contrastive_generate(expert, amateur, tokenizer, PROMPTS, seed=1, **kwargs)
    b = contrastive_generate(expert, amateur, tokenizer, PROMPTS, seed=1, **kwargs)
    c = contrastive_generate(expert, amateur, tokenizer, PROMPTS, seed=2, **kwargs)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_sample_does_not_depend_on_batch_or_shard(expert, amateur, tokenizer):
    kwargs = dict(alpha=0.5, max_new_tokens=16, seed=5, progress=False)
    whole = contrastive_generate(expert, amateur, tokenizer, PROMPTS, batch_size=4, **kwargs)
    ones = contrastive_generate(expert, amateur, tokenizer, PROMPTS, batch_size=1, **kwargs)
    tail = contrastive_generate(expert, amateur, tokenizer, PROMPTS[2:], index_offset=2, **kwargs)
    assert whole.token_ids == ones.token_ids
    assert whole.token_ids[2:] == tail.token_ids


def test_rows_stop_at_eos(expert, tokenizer):
    out = sample(expert, tokenizer, PROMPTS * 4, max_new_tokens=40, temperature=2.0, top_p=1.0, seed=0, progress=False)
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
    config = DecodingConfig(alpha=alpha, lam=lam, temperature=temperature, top_p=top_p, repetition_penalty=penalty)
    scores = apply_repetition_penalty(contrastive_scores(expert_logp, amateur_logp, alpha, lam), seen, penalty)
    tok = choose_tokens(scores, config, torch.rand(batch, generator=g, dtype=torch.float64))
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
    config = DecodingConfig(temperature=1.0, top_p=1.0)
    tok = choose_tokens(scores, config, torch.rand(20000, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(tok, minlength=4).double() / 20000
    torch.testing.assert_close(freq, torch.softmax(scores[0].double(), -1), atol=0.015, rtol=0)


def test_errors(expert, amateur, tokenizer):
    small = tiny_llama(50, hidden_size=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match=r"vocabulary mismatch.*101.*50"):
        contrastive_generate(expert, small, tokenizer, PROMPTS, progress=False)
    for bad, match in [
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(lam=0.0), "lam"),
        (dict(lam=1.2), "lam"),
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
    assert len(empty) == 0 and empty.texts == [] and empty.token_rewards == []
