"""Implicit reward of a (policy, reference) pair of causal LMs.

    r_hat(x, y) = beta * sum_t [ log pi_r(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t) ]

One convention everywhere in congkit: beta defaults to TRL's 0.1; `per_token` is beta times the token's log-ratio,
`total` their sum (the sequence reward), `mean` the sum divided by the number of response tokens (the
length-normalised score the ConG authors rank samples with). Tokens are split into prompt and completion as TRL's
`DPOTrainer` splits them, the EOS token appended and counted (see `congkit.tokens`: a plain string is raw text, a
conversation is templated), so `total` equals the `rewards/chosen` TRL logs for string and conversational examples,
with and without a chat template (tested against a `DPOTrainer` step). `Generation.implicit_reward(beta)` gives the same numbers for decoded responses.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from congkit.hub.custom_generate.step import check_same_vocab
from congkit.inputs import (
    as_prompts,
    as_responses,
    check_int,
    check_number,
    check_same_device,
    check_token_ids,
    model_device,
)
from congkit.tokens import encode_pair, pad, positions


@dataclass
class ImplicitReward:
    """Per-response implicit rewards: `per_token[i]` (beta-scaled), `total[i]` = sum, `mean[i]` = sum / length."""

    per_token: list[list[float]]
    total: list[float]
    mean: list[float]


@torch.inference_mode()
def completion_logprobs(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    batch_size: int = 16,
    padding_side: str = "right",
    progress: bool = False,
) -> list[torch.Tensor]:
    """log pi(y_t | x, y_<t) for every completion token, one float tensor per example.

    Prompt tokens are masked out; padding (either side) is neutralised by the attention mask and by position ids that
    count real tokens only, so the result does not depend on the batch it was computed in.
    """
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
    check_int("batch_size", batch_size, 1)
    check_token_ids(model, [*prompt_ids, *completion_ids], "the token ids to score")
    device, out = model_device(model), []
    for start in tqdm(range(0, len(prompt_ids), batch_size), desc="log-probs", disable=not progress):
        p_batch = prompt_ids[start : start + batch_size]
        c_batch = completion_ids[start : start + batch_size]
        if any(len(c) == 0 for c in c_batch):
            raise ValueError("a completion has no tokens; nothing to score")
        seqs = [list(p) + list(c) for p, c in zip(p_batch, c_batch)]
        ids, mask = pad(seqs, pad_id=0, side=padding_side)
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        width = ids.shape[1]
        for row, (c, s) in enumerate(zip(c_batch, seqs)):
            end = width if padding_side == "left" else len(s)  # index one past the row's last real token
            # logp[:, j] scores token j + 1, so the completion's tokens sit at [end - 1 - len(c), end - 1).
            out.append(logp[row, end - 1 - len(c) : end - 1].cpu())
    return out


def mean_response_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 16,
    apply_chat_template: bool = False,
) -> list[float]:
    """Mean per-token log pi(y | x) of each text response, tokenised as TRL tokenises it (length-normalised
    likelihood: capability probes and multiple-choice scoring); `apply_chat_template` as in `implicit_reward`."""
    prompts = as_prompts(prompts)
    responses = as_responses(responses, len(prompts))
    pairs = [encode_pair(tokenizer, p, r, apply_chat_template) for p, r in zip(prompts, responses)]
    logps = completion_logprobs(model, [p for p, _ in pairs], [c for _, c in pairs], batch_size)
    return [float(lp.mean()) for lp in logps]


def implicit_reward_from_ids(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    beta: float = 0.1,
    batch_size: int = 16,
    progress: bool = False,
) -> ImplicitReward:
    """Implicit reward of already-tokenised completions (e.g. the token ids that decoding returned), scored as given
    (no EOS appended).

    Args:
        policy, reference: pi_r and pi_ref, one vocabulary, one device.
        prompt_ids, completion_ids: token ids, paired one to one; every completion non-empty.
        beta: the DPO temperature, > 0 (TRL's default 0.1).
        batch_size: sequences per forward pass, >= 1.
    """
    check_same_vocab(policy, reference)
    check_same_device(policy, reference, ("policy", "reference"))
    check_number("beta", beta, 0.0, low_open=True)
    lp = completion_logprobs(policy, prompt_ids, completion_ids, batch_size, progress=progress)
    lr = completion_logprobs(reference, prompt_ids, completion_ids, batch_size, progress=progress)
    for name, logps in (("policy (pi_r)", lp), ("reference (pi_ref)", lr)):
        bad = next((i for i, row in enumerate(logps) if not bool(torch.isfinite(row).all())), None)
        if bad is not None:  # as decoding stops on non-finite scores, instead of returning NaN rewards
            raise FloatingPointError(f"the {name} gave non-finite log-probabilities on completion {bad} "
                                     "(NaN or infinite weights or activations?)")  # fmt: skip
    per_token = [(beta * (a - b)).tolist() for a, b in zip(lp, lr)]
    total = [float(sum(t)) for t in per_token]
    mean = [tot / len(t) for tot, t in zip(total, per_token)]
    return ImplicitReward(per_token, total, mean)


def implicit_reward(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: str | Sequence[str],
    responses: str | Sequence[str],
    beta: float = 0.1,
    batch_size: int = 16,
    progress: bool = False,
    apply_chat_template: bool = False,
) -> ImplicitReward:
    """Implicit reward `beta * log(pi_r(y|x) / pi_ref(y|x))` of text responses, tokenised as TRL tokenises them.

    Args:
        policy, reference: pi_r (post-alignment) and pi_ref (pre-alignment), one vocabulary, one device.
        tokenizer: their tokenizer.
        prompts, responses: paired one to one; a plain string is one prompt (one response). A string prompt is raw
            text (as TRL takes a string example), a conversation goes through the chat template (as TRL takes a
            conversational example).
        apply_chat_template: make each string prompt one user turn (TRL's conversational format).
        beta: the DPO temperature, > 0 (TRL's default 0.1).
        batch_size: sequences per forward pass, >= 1.
    """
    prompts = as_prompts(prompts)
    responses = as_responses(responses, len(prompts))
    warn_unless_round_trip(tokenizer, responses)
    pairs = [encode_pair(tokenizer, p, r, apply_chat_template) for p, r in zip(prompts, responses)]
    return implicit_reward_from_ids(
        policy, reference, [p for p, _ in pairs], [c for _, c in pairs], beta, batch_size, progress
    )


def warn_unless_round_trip(tokenizer: PreTrainedTokenizerBase, responses: Sequence[str]) -> list[int]:
    """Warn when a response's text does not survive the tokenizer (decode(encode(text)) != text: characters it cannot
    represent, normalisation, special-token text): its score is then the score of other tokens than were written.
    Decoded samples can also re-encode to other tokens than were generated (byte-level merges, a special token
    dropped by `skip_special_tokens`), which no text check sees. Either way, score token ids: `Generation` carries
    them (`Generation.implicit_reward`, or `implicit_reward_from_ids` with `Generation.token_ids`). Returns the
    indices of the responses that fail."""
    failing = [i for i, text in enumerate(responses)
               if tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) != text]  # fmt: skip
    if failing:
        warnings.warn(f"{len(failing)} of {len(responses)} responses (first: {failing[0]}) do not round-trip through "
                      "the tokenizer (decode(encode(text)) != text), so their implicit reward scores other tokens "
                      "than the text's; score token ids instead (Generation.implicit_reward, or "
                      "implicit_reward_from_ids with Generation.token_ids)", stacklevel=3)  # fmt: skip
    return failing


def warn_unless_texts_reencode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                               token_ids: Sequence[Sequence[int]], eos: set[int]) -> list[int]:  # fmt: skip
    """Warn when decoded responses re-encode to other tokens than were generated (byte-level BPE merges a model did not
    make, a partial UTF-8 character, a special token dropped by `skip_special_tokens`): scoring such a text with
    `implicit_reward` scores other tokens than `Generation.implicit_reward` does, so say so when decoding, where the
    ids are known. Returns the rows that differ (a final EOS is not part of the text)."""
    body = [list(ids[:-1]) if ids and ids[-1] in eos else list(ids) for ids in token_ids]
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    failing = [i for i, (got, want) in enumerate(zip(encoded, body)) if got != want]
    if failing:
        warnings.warn(f"{len(failing)} of {len(texts)} decoded responses (first: row {failing[0]}) re-encode to other "
                      "tokens than were generated, so implicit_reward(text) would score other tokens than "
                      "Generation.implicit_reward: score them by ids (Generation.implicit_reward, or "
                      "implicit_reward_from_ids with Generation.token_ids)", stacklevel=4)  # fmt: skip
    return failing
