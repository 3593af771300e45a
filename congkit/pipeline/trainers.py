"""The two baselines whose losses differ from SFT and DPO, as small subclasses of TRL's SFTTrainer.

Both reuse SFTTrainer's data handling (conversational prompt/completion, completion mask -> labels = -100 on prompt
and padding); only `compute_loss` changes, through a pure per-token loss function.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from trl import SFTTrainer


def auxconf_loss(logits: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
    """Burns et al.'s auxiliary-confidence loss, adapted to generation, per completion token:

        L = (1 - w) * CE(p_strong, y_weak) + w * CE(p_strong, argmax p_strong)

    `logits` (B, T, V) predict `labels` (B, T) (already shifted); label -100 is ignored. The hardened prediction is
    the strong model's own argmax at the same position (detached) - the generation analogue of Burns et al.'s
    thresholded binary prediction. `w` is warmed up by the trainer.
    """
    mask = labels != -100
    logp = torch.log_softmax(logits.float(), dim=-1)
    ce_weak = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    hardened = logp.detach().argmax(dim=-1, keepdim=True)
    ce_self = -logp.gather(-1, hardened).squeeze(-1)
    per_token = (1.0 - weight) * ce_weak + weight * ce_self
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def auxconf_weight(step: int, max_steps: int, final_weight: float, warmup_fraction: float) -> float:
    """AuxConf's weight w at optimiser step `step` of `max_steps`, warmed up linearly over the first
    `warmup_fraction` of training (Burns et al.: 20%), then held:

        w(step) = final_weight * min(1, step / (warmup_fraction * max_steps))
    """
    return final_weight * min(1.0, step / max(warmup_fraction * max(max_steps, 1), 1e-9))


def wspo_loss(
    strong_logp: torch.Tensor,
    strong_ref_logp: torch.Tensor,
    weak_logp: torch.Tensor,
    weak_ref_logp: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """WSPO (Zhu et al., 2024), per response token, averaged over tokens:

        L = mean_t ( beta * (log pi_s(y_t) - log pi_s_ref(y_t)) - (log pi_w(y_t) - log pi_w_ref(y_t)) )^2

    i.e. the strong model's scaled log-ratio is regressed onto the weak pair's log-ratio on the same response.
    """
    diff = beta * (strong_logp - strong_ref_logp) - (weak_logp - weak_ref_logp)
    return (diff.pow(2) * mask).sum() / mask.sum().clamp(min=1)


def sequence_mean_target(weak_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The weak pair's per-token log-ratio r_t = log pi_w(y_t) - log pi_w_ref(y_t) replaced by its mean over each
    response's tokens (the control that keeps WSPO's total target and removes its token-level credit):

        r'_t = (1 / |y|) sum_s r_s     for every response token t      (0 elsewhere)
    """
    mean = (weak_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)
    return mean.expand_as(weak_ratio) * mask


def _token_logp(model: PreTrainedModel, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
    """log p(label_t) under `model` for shifted labels (B, T-1); ignored positions get 0."""
    kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
    logits = model(**kwargs, use_cache=False).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logp * (labels != -100)


class AuxConfTrainer(SFTTrainer):
    """SFT on weak samples with the auxiliary-confidence loss; w rises linearly from 0 to `aux_weight` over the
    first `warmup_fraction` of the steps (Burns et al. warm it up over the first 20%)."""

    def __init__(self, *args, aux_weight: float = 0.5, warmup_fraction: float = 0.2, **kwargs):
        super().__init__(*args, **kwargs)
        self.aux_weight, self.warmup_fraction = aux_weight, warmup_fraction

    def current_weight(self) -> float:
        return auxconf_weight(self.state.global_step, self.state.max_steps, self.aux_weight, self.warmup_fraction)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"][:, 1:]
        kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
        outputs = model(**kwargs, use_cache=False)
        loss = auxconf_loss(outputs.logits[:, :-1], labels, self.current_weight())
        return (loss, outputs) if return_outputs else loss


class WSPOTrainer(SFTTrainer):
    """Weak-to-strong preference optimisation: SFTTrainer data, `wspo_loss` objective.

    `ref_model` is the frozen strong base; `weak_model` / `weak_ref_model` are the aligned and base weak models.
    All three must share the strong model's tokenizer (the WSPO setting: within a model family). `target`: "token"
    (WSPO) or "sequence_mean" (the control without token-level credit, `sequence_mean_target`).
    """

    TARGETS = ("token", "sequence_mean")

    def __init__(self, *args, ref_model, weak_model, weak_ref_model, beta: float = 0.1, target: str = "token",
                 **kwargs):  # fmt: skip
        if target not in self.TARGETS:
            raise ValueError(f"WSPO target must be one of {self.TARGETS}, got {target!r}")
        super().__init__(*args, **kwargs)
        self.beta, self.target = beta, target
        self.frozen = [m.to(self.accelerator.device).eval() for m in (ref_model, weak_model, weak_ref_model)]
        for m in self.frozen:
            m.requires_grad_(False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"][:, 1:]
        strong = _token_logp(model, inputs, labels)
        mask = (labels != -100).float()
        with torch.no_grad():
            strong_ref, weak, weak_ref = (_token_logp(m, inputs, labels) for m in self.frozen)
            if self.target == "sequence_mean":
                weak, weak_ref = sequence_mean_target(weak - weak_ref, mask), torch.zeros_like(weak_ref)
        loss = wspo_loss(strong, strong_ref, weak, weak_ref, mask, self.beta)
        return (loss, None) if return_outputs else loss
