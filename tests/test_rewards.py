import pytest
import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from congkit import encode_pair, implicit_reward
from congkit.rewards import completion_logprobs
from congkit.tokens import encode_prompt

from .conftest import PROMPTS

RESPONSES = ["7", "a b c", "olleh", "6 letters, with some more words to make it longer"]


def slow_logprobs(model, prompt_ids, completion_ids):
    """One example at a time, no padding: log pi(y_t | x, y_<t) written out token by token."""
    out = []
    for p, c in zip(prompt_ids, completion_ids):
        seq = torch.tensor([list(p) + list(c)])
        with torch.no_grad():
            logits = model(seq).logits[0]
        lp = [torch.log_softmax(logits[len(p) + t - 1], -1)[c[t]].item() for t in range(len(c))]
        out.append(torch.tensor(lp))
    return out


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("tok_name", ["tokenizer", "plain_tokenizer"])
def test_batched_logprobs_match_slow_reference(request, expert, side, tok_name):
    tok = request.getfixturevalue(tok_name)
    pairs = [encode_pair(tok, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    p_ids, c_ids = [p for p, _ in pairs], [c for _, c in pairs]
    fast = completion_logprobs(expert, p_ids, c_ids, batch_size=3, padding_side=side)
    slow = slow_logprobs(expert, p_ids, c_ids)
    for a, b, c in zip(fast, slow, c_ids):
        assert a.shape == (len(c),)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_completion_ends_with_eos_and_prompt_is_masked(tokenizer, plain_tokenizer):
    for tok in (tokenizer, plain_tokenizer):
        p, c = encode_pair(tok, "Add 3 and 4.", "7")
        assert p == encode_prompt(tok, "Add 3 and 4.")
        assert c == tok("7", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_implicit_reward_forms(expert, amateur, tokenizer):
    r = implicit_reward(expert, amateur, tokenizer, PROMPTS, RESPONSES, beta=0.5)
    r1 = implicit_reward(expert, amateur, tokenizer, PROMPTS, RESPONSES, beta=1.0)
    for tok, tot, mean, tok1 in zip(r.per_token, r.total, r.mean, r1.per_token):
        assert tot == pytest.approx(sum(tok))
        assert mean == pytest.approx(sum(tok) / len(tok))
        assert tok == pytest.approx([0.5 * x for x in tok1])
    assert any(abs(t) > 1e-3 for t in r.total)  # two different models: the reward is not trivially zero
    same = implicit_reward(expert, expert, tokenizer, PROMPTS, RESPONSES)
    assert all(t == pytest.approx(0.0, abs=1e-6) for t in same.total)


@pytest.mark.parametrize("tok_name, conversational", [("tokenizer", True), ("tokenizer", False),
                                                     ("plain_tokenizer", False)])  # fmt: skip
def test_matches_trl_dpo_logged_rewards(request, expert, amateur, tok_name, conversational, tmp_path):
    """TRL's DPOTrainer logs rewards/chosen = beta * (log pi(y_w|x) - log pi_ref(y_w|x)), averaged over the batch. One
    convention for both: a string example is raw text (also with a chat-template tokenizer), a conversational one
    goes through the template."""
    tok = request.getfixturevalue(tok_name)
    beta = 0.1
    chosen, rejected = RESPONSES, RESPONSES[1:] + RESPONSES[:1]
    if conversational:
        data = {
            "prompt": [[{"role": "user", "content": p}] for p in PROMPTS],
            "chosen": [[{"role": "assistant", "content": c}] for c in chosen],
            "rejected": [[{"role": "assistant", "content": r}] for r in rejected],
        }
    else:
        data = {"prompt": PROMPTS, "chosen": chosen, "rejected": rejected}
    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=beta,
        per_device_eval_batch_size=len(PROMPTS),
        report_to=[],
        use_cpu=True,
        bf16=False,
    )
    trainer = DPOTrainer(
        model=expert, ref_model=amateur, args=args, processing_class=tok, train_dataset=Dataset.from_dict(data)
    )
    metrics = trainer.evaluate(Dataset.from_dict(data))
    ours_chosen = implicit_reward(expert, amateur, tok, data["prompt"], chosen, beta=beta)
    ours_rejected = implicit_reward(expert, amateur, tok, data["prompt"], rejected, beta=beta)
    assert metrics["eval_rewards/chosen"] == pytest.approx(sum(ours_chosen.total) / len(PROMPTS), abs=1e-4)
    assert metrics["eval_rewards/rejected"] == pytest.approx(sum(ours_rejected.total) / len(PROMPTS), abs=1e-4)
    assert abs(metrics["eval_rewards/chosen"]) > 1e-3
    if conversational:  # the keyword gives the conversational tokens from strings
        keyword = implicit_reward(expert, amateur, tok, PROMPTS, chosen, beta=beta, apply_chat_template=True)
        assert keyword.total == pytest.approx(ours_chosen.total, abs=1e-6)
