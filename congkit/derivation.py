"""Numerical checks of the CD-implicit reward equivalence (PAPER.md), on real next-token distributions.

    F(v) = (1 - alpha) * log(pi_r(v) / pi_ref(v)) + alpha * log pi_r(v) = log pi_r(v) - (1 - alpha) * log pi_ref(v)

- alpha = 1: softmax(F) on the head is pi_r renormalised to the head (a min-p filtered pi_r);
- alpha = 0: F is the token-level implicit reward, so CD ranks head tokens by it;
- the head {v : pi_r(v) >= lambda max pi_r} shrinks from the whole vocabulary (lambda -> 0) to the argmax (lambda = 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .decoding import contrastive_scores, plausibility_head
from .rewards import _device
from .tokens import encode_prompt, pad, positions


@torch.inference_mode()
def next_token_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]):
    """log pi(v | prompt) for the first response token of each prompt: a (len(prompts), V) tensor."""
    ids, mask = pad([encode_prompt(tokenizer, p) for p in prompts], tokenizer.pad_token_id or 0, side="left")
    ids, mask = ids.to(_device(model)), mask.to(_device(model))
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits[:, -1]
    return torch.log_softmax(logits.float(), -1).cpu()


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
