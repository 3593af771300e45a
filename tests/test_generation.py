"""Contrastive decoding inside `model.generate` (congkit.generation) against the batched engine and the slow reference;
prompts as users hold them (conversations, templated strings, tensors)."""

import math

import pytest
import torch
from transformers import GenerationConfig, StoppingCriteriaList, StopStringCriteria
from transformers.generation.streamers import BaseStreamer

from congkit import CUSTOM_GENERATE_DIR, contrastive_decoding, contrastive_generate, implicit_reward_from_ids
from congkit.models import char_tokenizer
from congkit.tokens import encode_prompt, pad

from .conftest import PROMPTS
from .test_decoding import reference_cd


def _batch(tokenizer, prompts):
    ids, mask = pad([encode_prompt(tokenizer, p) for p in prompts], tokenizer.pad_token_id, side="left")
    return {"input_ids": ids, "attention_mask": mask}


def _new_tokens(out, batch, eos):
    """Generated ids per row, cut after the first EOS (generate pads finished rows)."""
    rows = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def _cd_generate(expert, amateur, batch, **kw):
    return expert.generate(**batch, custom_generate=contrastive_decoding, amateur_model=amateur, **kw)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("lam", [0.05, 0.3])
@pytest.mark.parametrize("n_prompts", [1, 3])
def test_generate_greedy_equals_engine_and_reference(expert, amateur, tokenizer, alpha, lam, n_prompts):
    prompts = PROMPTS[:n_prompts]  # prompts of different lengths: left padding when n_prompts > 1
    batch = _batch(tokenizer, prompts)
    out = _cd_generate(expert, amateur, batch, alpha=alpha, plausibility_threshold=lam, do_sample=False, repetition_penalty=1.0,
                       max_new_tokens=10)  # fmt: skip
    engine = contrastive_generate(expert, amateur, tokenizer, prompts, alpha=alpha, plausibility_threshold=lam, do_sample=False,
                                  repetition_penalty=1.0, max_new_tokens=10, progress=False)  # fmt: skip
    got = _new_tokens(out, batch, tokenizer.eos_token_id)
    assert got == engine.token_ids
    for prompt, ids in zip(prompts, got):
        assert ids == reference_cd(expert, amateur, tokenizer, prompt, alpha, lam, 10, 1.0)


def test_generate_greedy_with_repetition_penalty_equals_reference_without_padding(expert, amateur, tokenizer):
    for prompt in PROMPTS:
        batch = _batch(tokenizer, [prompt])
        out = _cd_generate(expert, amateur, batch, alpha=0.3, plausibility_threshold=0.1, do_sample=False, repetition_penalty=1.2,
                           max_new_tokens=10)  # fmt: skip
        assert _new_tokens(out, batch, tokenizer.eos_token_id)[0] == reference_cd(
            expert, amateur, tokenizer, prompt, 0.3, 0.1, 10, 1.2)  # fmt: skip


def test_generation_config_carries_the_head_and_min_p_is_transformers_min_p(expert, amateur, tokenizer):
    """plausibility_threshold in a GenerationConfig is the head, as the keyword is; min_p stays transformers' MinP
    (a warper on the contrasted scores, greedy decoding unchanged by it)."""
    batch = _batch(tokenizer, PROMPTS)
    config = GenerationConfig(do_sample=False, max_new_tokens=8, plausibility_threshold=0.3, repetition_penalty=1.0,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    via_config = _cd_generate(expert, amateur, batch, generation_config=config, alpha=0.0)
    via_kwargs = _cd_generate(expert, amateur, batch, alpha=0.0, plausibility_threshold=0.3, do_sample=False,
                              max_new_tokens=8, repetition_penalty=1.0)  # fmt: skip
    assert torch.equal(via_config, via_kwargs)
    engine = contrastive_generate(expert, amateur, tokenizer, PROMPTS, alpha=0.0, plausibility_threshold=0.3,
                                  do_sample=False, max_new_tokens=8, repetition_penalty=1.0, progress=False)  # fmt: skip
    assert _new_tokens(via_config, batch, tokenizer.eos_token_id) == engine.token_ids
    with_min_p = _cd_generate(expert, amateur, batch, alpha=0.0, plausibility_threshold=0.3, do_sample=False,
                              max_new_tokens=8, repetition_penalty=1.0, min_p=0.9)  # fmt: skip
    assert torch.equal(with_min_p, via_kwargs)


def test_sampled_tokens_stay_in_the_head_and_rewards_are_the_log_ratios(expert, amateur, tokenizer):
    batch = _batch(tokenizer, PROMPTS)
    out = _cd_generate(expert, amateur, batch, alpha=0.5, plausibility_threshold=0.2, do_sample=True, temperature=1.5, top_k=0,
                       top_p=1.0, max_new_tokens=12, return_dict_in_generate=True, output_scores=True,
                       output_logits=True, seed=0, beta=0.1)  # fmt: skip
    width = batch["input_ids"].shape[1]
    new = out.sequences[:, width:]
    finished = torch.zeros(len(PROMPTS), dtype=torch.bool)
    for t, (logits, scores) in enumerate(zip(out.logits, out.scores)):
        logp = torch.log_softmax(logits, -1)
        chosen = logp.gather(-1, new[:, t : t + 1]).squeeze(-1)
        in_head = chosen >= logp.max(-1).values + math.log(0.2) - 1e-6
        assert bool((in_head | finished).all()), t
        assert bool(torch.isinf(scores[~(logp >= logp.max(-1, keepdim=True).values + math.log(0.2))]).all())
        finished |= new[:, t] == tokenizer.eos_token_id
    rows = _new_tokens(out.sequences, batch, tokenizer.eos_token_id)
    prompt_ids = [encode_prompt(tokenizer, p) for p in PROMPTS]
    want = implicit_reward_from_ids(expert, amateur, prompt_ids, rows, beta=0.1)
    for i, row in enumerate(rows):
        assert out.implicit_rewards[i, : len(row)].sum().item() == pytest.approx(want.total[i], abs=1e-4)
        assert out.implicit_rewards[i, len(row) :].abs().sum().item() == 0


def test_seeded_sampling_matches_the_engine_and_num_return_sequences(expert, amateur, tokenizer):
    """With seed=s, row i is seeded by (s, i) as in contrastive_generate: three return sequences of one prompt are
    the engine's samples of that prompt repeated three times (top-p 1, no penalty: the same operations)."""
    batch = _batch(tokenizer, PROMPTS[:1])
    kw = dict(alpha=0.5, do_sample=True, temperature=0.9, repetition_penalty=1.0, max_new_tokens=12)
    out = _cd_generate(expert, amateur, batch, plausibility_threshold=0.1, top_p=1.0, top_k=0, num_return_sequences=3, seed=7, **kw)
    assert out.shape[0] == 3
    engine = contrastive_generate(expert, amateur, tokenizer, PROMPTS[:1] * 3, plausibility_threshold=0.1, top_p=1.0, seed=7,
                                  progress=False, **kw)  # fmt: skip
    assert _new_tokens(out, batch, tokenizer.eos_token_id) == engine.token_ids
    again = _cd_generate(expert, amateur, batch, plausibility_threshold=0.1, top_p=1.0, top_k=0, num_return_sequences=3, seed=7, **kw)
    assert torch.equal(out, again)


class Collect(BaseStreamer):
    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, value):
        self.puts.append(value)

    def end(self):
        self.ended = True


def test_streamer_and_stop_strings_through_the_folder(expert, amateur, tokenizer):
    batch = _batch(tokenizer, PROMPTS[:1])
    common = dict(custom_generate=CUSTOM_GENERATE_DIR, trust_remote_code=True, amateur_model=amateur, alpha=0.5,
                  plausibility_threshold=0.1, do_sample=False, repetition_penalty=1.0, max_new_tokens=16)  # fmt: skip
    streamer = Collect()
    free = expert.generate(**batch, streamer=streamer, **common)
    new = free[0, batch["input_ids"].shape[1] :].tolist()
    assert streamer.ended and len(streamer.puts) == 1 + len(new)  # the prompt, then one put per new token
    assert torch.equal(torch.cat([p.reshape(-1) for p in streamer.puts[1:]]), torch.tensor(new))
    text = tokenizer.decode(new, skip_special_tokens=True)
    stop = text[3:5]  # a string that first appears mid-way
    assert len(stop) == 2 and stop not in text[:4]
    cut = expert.generate(**batch, tokenizer=tokenizer, stop_strings=[stop], **common)
    cut_text = tokenizer.decode(cut[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert cut_text.endswith(stop) and text.startswith(cut_text) and len(cut_text) < len(text)
    # the callable form: stop strings as a stopping criterion, the streamer as cd_streamer
    streamer = Collect()
    cut2 = _cd_generate(expert, amateur, batch, alpha=0.5, plausibility_threshold=0.1, do_sample=False, repetition_penalty=1.0,
                        max_new_tokens=16, cd_streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([StopStringCriteria(tokenizer, [stop])]))  # fmt: skip
    assert torch.equal(cut2, cut) and streamer.ended


def test_generate_errors_name_the_problem(expert, amateur, tokenizer):
    batch = _batch(tokenizer, PROMPTS[:1])
    with pytest.raises(ValueError, match="needs amateur_model"):
        expert.generate(**batch, custom_generate=contrastive_decoding, max_new_tokens=2)
    with pytest.raises(ValueError, match="alpha must lie in"):
        _cd_generate(expert, amateur, batch, alpha=2.0, max_new_tokens=2)
    with pytest.raises(ValueError, match="plausibility_threshold .* must lie in"):
        _cd_generate(expert, amateur, batch, plausibility_threshold=0.0, max_new_tokens=2)


# --- prompts as users hold them ------------------------------------------------------------------------------------


ROLE_TEMPLATE = ("{% for m in messages %}{% if m.role == 'assistant' %}<|assistant|>{{ m.content }}<|end|>"
                 "{% else %}<|user|>{{ m.role }}: {{ m.content }}{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")  # fmt: skip


def test_conversations_templated_strings_and_tensors_are_one_prompt_each(expert, amateur, tokenizer):
    tok = tokenizer
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Add 3 and 4."}]
    greedy = dict(do_sample=False, max_new_tokens=6, progress=False)
    # one string = one prompt; one conversation = one prompt
    assert len(contrastive_generate(expert, amateur, tok, "Hello", **greedy)) == 1
    one = contrastive_generate(expert, amateur, tok, conversation, **greedy)
    assert len(one) == 1
    # a plain string is raw text, tokenised as given (as generate and TRL take it); apply_chat_template makes it a
    # user turn, the same ids as the conversation; the deprecated `templated` still maps onto that keyword
    user_turn = [{"role": "user", "content": "Add 3 and 4."}]
    templated = tok.apply_chat_template(user_turn, tokenize=False, add_generation_prompt=True)
    assert encode_prompt(tok, "Add 3 and 4.") == tok("Add 3 and 4.")["input_ids"]
    assert encode_prompt(tok, "Add 3 and 4.", apply_chat_template=True) == encode_prompt(tok, user_turn)
    assert encode_prompt(tok, templated) == encode_prompt(tok, user_turn)  # a templated string, as given
    with pytest.warns(DeprecationWarning, match="templated"):
        assert encode_prompt(tok, "Add 3 and 4.", templated=False) == encode_prompt(tok, user_turn)
    as_turn = contrastive_generate(expert, amateur, tok, "Add 3 and 4.", apply_chat_template=True, **greedy)
    assert contrastive_generate(expert, amateur, tok, user_turn, **greedy).token_ids == as_turn.token_ids
    assert contrastive_generate(expert, amateur, tok, templated, **greedy).token_ids == as_turn.token_ids
    with pytest.raises(ValueError, match="apply_chat_template=True needs a tokenizer with a chat template"):
        encode_prompt(char_tokenizer(chat_template=False), "hi", apply_chat_template=True)
    # tensors and BatchEncodings as generate takes them
    batch = _batch(tok, PROMPTS)
    engine = contrastive_generate(expert, amateur, tok, PROMPTS, **greedy)
    assert contrastive_generate(expert, amateur, tok, batch, **greedy).token_ids == engine.token_ids
    single = torch.tensor(encode_prompt(tok, PROMPTS[0]))
    assert contrastive_generate(expert, amateur, tok, single, **greedy).token_ids == engine.token_ids[:1]
    assert contrastive_generate(expert, amateur, tok, batch["input_ids"], **greedy).token_ids == engine.token_ids


def test_system_prompt_and_turns_reach_the_model(tokenizer):
    tok = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, pad_token="<pad>", unk_token="<unk>",
                              eos_token="<|end|>")  # fmt: skip
    tok.chat_template = ROLE_TEMPLATE
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"}]  # fmt: skip
    text = tok.decode(encode_prompt(tok, conversation))
    assert text == "<|user|>system: be brief<|user|>user: hi<|assistant|>yo<|end|><|user|>user: again<|assistant|>"


@pytest.mark.parametrize("do_sample,penalty,seed", [(False, 1.0, None), (True, 1.2, 3), (True, 1.0, None)])
def test_the_lazy_amateur_in_generate_decodes_what_the_eager_one_decodes(peaky_expert, amateur, tokenizer, do_sample,
                                                                        penalty, seed):  # fmt: skip
    """`generate` with the amateur deferred on forced steps (on by default where exact) against lazy_amateur=False:
    the same sequences and implicit rewards (to float rounding), padded batches, rows ending inside a backlog, the
    streamer fed the same tokens; torch's global RNG (seed None) draws the same stream (forced steps still draw)."""
    batch = _batch(tokenizer, PROMPTS * 2)
    kw = dict(alpha=0.3, plausibility_threshold=0.3, do_sample=do_sample, temperature=1.5, top_k=0,
              repetition_penalty=penalty, max_new_tokens=30, return_dict_in_generate=True, seed=seed)  # fmt: skip
    runs = {}
    for lazy in (None, False):
        torch.manual_seed(0)
        streamer = Collect()
        runs[lazy] = _cd_generate(peaky_expert, amateur, batch, lazy_amateur=lazy, cd_streamer=streamer, **kw), streamer
    (lazy_out, lazy_stream), (eager_out, eager_stream) = runs[None], runs[False]
    assert torch.equal(lazy_out.sequences, eager_out.sequences)
    torch.testing.assert_close(lazy_out.implicit_rewards, eager_out.implicit_rewards, atol=1e-6, rtol=0)
    assert all(torch.equal(a, b) for a, b in zip(lazy_stream.puts, eager_stream.puts)) and lazy_stream.ended
    rows = _new_tokens(lazy_out.sequences, batch, tokenizer.eos_token_id)
    assert len({len(r) for r in rows}) > 1  # rows end at different steps
    if not do_sample:  # greedy: the engine's lazy path decodes the same tokens
        engine = contrastive_generate(peaky_expert, amateur, tokenizer, PROMPTS * 2, alpha=0.3, plausibility_threshold=0.3,
                                      repetition_penalty=penalty, max_new_tokens=30, progress=False)  # fmt: skip
        assert rows == engine.token_ids and engine.forced_fraction > 0


def test_the_lazy_amateur_in_generate_stays_off_where_it_would_not_be_exact(peaky_expert, amateur, tokenizer):
    """With output_scores (a forced step's scores would lack the amateur) the default is the eager path (the same
    scores as lazy_amateur=False), and lazy_amateur=True is refused with the reason."""
    batch = _batch(tokenizer, PROMPTS[:2])
    kw = dict(alpha=0.3, plausibility_threshold=0.3, do_sample=False, max_new_tokens=8, return_dict_in_generate=True,
              output_scores=True)  # fmt: skip
    auto, eager = (_cd_generate(peaky_expert, amateur, batch, lazy_amateur=x, **kw) for x in (None, False))
    assert all(torch.equal(a, b) for a, b in zip(auto.scores, eager.scores))
    with pytest.raises(ValueError, match="lazy_amateur=True is not exact with .*output_scores"):
        _cd_generate(peaky_expert, amateur, batch, lazy_amateur=True, **kw)
