"""Numerical checks of the CD-implicit reward equivalence (Jiang et al., 2025), on real next-token distributions.

    F(v) = (1 - alpha) * log(pi_r(v) / pi_ref(v)) + alpha * log pi_r(v) = log pi_r(v) - (1 - alpha) * log pi_ref(v)

- alpha = 1: softmax(F) on the head is pi_r renormalised to the head (a min-p filtered pi_r);
- alpha = 0: F is the token-level implicit reward, so CD ranks head tokens by it;
- the head {v : pi_r(v) >= lambda max pi_r} shrinks from the whole vocabulary (lambda -> 0) to the argmax (lambda = 1).

`stepwise_identity_checks` applies them at every step of generated responses: where the head holds a single token the
alpha = 0 ranking holds trivially, so those steps are reported apart from the ones where CD makes a choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from congkit.decoding import contrastive_scores, plausibility_head
from congkit.inputs import model_device
from congkit.tokens import as_chat, encode_prompt, pad, positions


@torch.inference_mode()
def next_token_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]):
    """log pi(v | prompt) for the first response token of each prompt (string prompts as one user turn when the
    tokenizer has a chat template, as the pipeline gives them): a (len(prompts), V) tensor."""
    ids, mask = pad([encode_prompt(tokenizer, p) for p in as_chat(tokenizer, prompts)], tokenizer.pad_token_id or 0,
                    side="left")  # fmt: skip
    ids, mask = ids.to(model_device(model)), mask.to(model_device(model))
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1]
    return torch.log_softmax(logits.float(), -1).cpu()


@torch.inference_mode()
def step_logprobs(model: PreTrainedModel, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                  pad_id: int = 0) -> torch.Tensor:  # fmt: skip
    """log pi(. | x, y_<t) at every generated step t of every response, stacked: a (total steps, V) tensor."""
    seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
    ids, mask = pad(seqs, pad_id, side="right")
    ids, mask = ids.to(model_device(model)), mask.to(model_device(model))
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits.float(), -1)
    # the distribution that chose response token t sits at position len(prompt) + t - 1
    rows = [logp[i, len(p) - 1 : len(p) - 1 + len(r)] for i, (p, r) in enumerate(zip(prompt_ids, response_ids))]
    return torch.cat(rows).cpu()


def head_sizes(expert_logp: torch.Tensor, lambdas=None) -> tuple[np.ndarray, list[float]]:
    """(lambdas, mean size of the plausibility head at each) over a batch of next-token distributions."""
    lambdas = np.asarray(lambdas if lambdas is not None else np.geomspace(1e-4, 1.0, 40))
    return lambdas, [float(plausibility_head(expert_logp, lam).sum(-1).float().mean()) for lam in lambdas]


def stepwise_identity_checks(expert, amateur, tokenizer, prompts: Sequence[str], alpha: float, lam: float,
                             max_new_tokens: int = 24, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """The identities of `cd_identity_checks` at every step of CD responses generated from `prompts`, reported
    separately for steps whose head holds one token (where some identities hold trivially) and steps whose head holds
    two or more (where CD makes a choice). Columns: the checks; rows: the two groups and all steps."""
    from congkit.decoding import DecodingConfig, contrastive_generate

    prompts = as_chat(tokenizer, prompts)  # as the pipeline gives them
    config = DecodingConfig.authors(alpha=alpha, plausibility_threshold=lam, seed=seed, repetition_penalty=1.0,
                                    max_new_tokens=max_new_tokens)  # fmt: skip
    gen = contrastive_generate(expert, amateur, tokenizer, prompts, config, progress=False)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    pad_id = tokenizer.pad_token_id or 0
    e, a = (step_logprobs(m, prompt_ids, gen.token_ids, pad_id) for m in (expert, amateur))
    chosen = torch.tensor([t for ids in gen.token_ids for t in ids])
    head_size = plausibility_head(e, lam).sum(-1)
    groups = {"head of 1 token": head_size == 1, "head of >= 2 tokens": head_size >= 2,
              "all steps": torch.ones_like(head_size, dtype=torch.bool)}  # fmt: skip
    rows = {}
    for name, keep in groups.items():
        if not keep.any():
            continue
        checks = cd_identity_checks(e[keep], a[keep], alpha, lam)
        checks["generated token in the head"] = bool(plausibility_head(e[keep], lam)[torch.arange(int(keep.sum())),
                                                                                    chosen[keep]].all())  # fmt: skip
        rows[name] = {"steps": int(keep.sum()), **checks}
    return pd.DataFrame(rows).T


def cd_identity_checks(expert_logp: torch.Tensor, amateur_logp: torch.Tensor, alpha: float, lam: float) -> dict:
    """Largest deviations from each identity of the module docstring (all should be ~0), and head statistics."""
    head = plausibility_head(expert_logp, lam)
    scores = contrastive_scores(expert_logp, amateur_logp, alpha, lam)
    written_out = (1 - alpha) * (expert_logp - amateur_logp) + alpha * expert_logp
    formula_error = (scores - written_out)[head].abs().max().item()
    outside_head = bool(torch.isinf(scores[~head]).all()) if (~head).any() else True

    p_alpha1 = torch.softmax(contrastive_scores(expert_logp, amateur_logp, 1.0, lam), -1)
    renormalised = torch.where(head, expert_logp.exp(), torch.zeros_like(expert_logp))
    renormalised = renormalised / renormalised.sum(-1, keepdim=True)
    alpha1_error = (p_alpha1 - renormalised).abs().max().item()

    ratio = (expert_logp - amateur_logp).masked_fill(~head, float("-inf"))
    s0 = contrastive_scores(expert_logp, amateur_logp, 0.0, lam)
    alpha0_error = (s0 - ratio)[head].abs().max().item()
    alpha0_same_top = bool(torch.equal(s0.argmax(-1), ratio.argmax(-1)))
    return {
        "max |F - formula| on head": formula_error,
        "F = -inf outside head": outside_head,
        "max |p_(alpha=1) - pi_r on head|": alpha1_error,
        "max |F_(alpha=0) - implicit reward| on head": alpha0_error,
        "alpha=0 top token = top implicit-reward token": alpha0_same_top,
        "mean head size": head.sum(-1).float().mean().item(),
        "vocabulary": expert_logp.shape[-1],
    }
