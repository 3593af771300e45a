"""Batched contrastive decoding (CD) between a post-alignment "expert" pi_r and a pre-alignment "amateur" pi_ref.

At each step, over the plausibility head V_head = {v : pi_r(v) >= lambda * max_w pi_r(w)}:

    F(v) = log pi_r(v) - (1 - alpha) * log pi_ref(v)        (v in V_head),      F(v) = -inf otherwise
    p_alpha(v) = softmax(F)(v)

then, as the ConG authors did, a repetition penalty on F, temperature, top-p, and a greedy or sampled choice.
alpha = 1 is plain sampling from pi_r (with the head acting as a min-p filter); alpha = 0 samples by the token-level
implicit reward inside the head. Plain sampling from one model (`sample`) runs through this same loop.

Why a hand-written loop rather than `model.generate`: generate drives one model. CD needs two models stepping in
lock-step on the same tokens, each with its own KV cache; transformers' logits processors see only one model's
logits. Batching over prompts (left padding, position ids that skip padding) is what makes CD usable at scale; the
authors' release decoded one prompt at a time. The temperature and top-p steps are transformers' own warpers.

Randomness is per prompt: row i draws its uniforms from a generator seeded by (seed, index of the prompt), so a
prompt's sample does not depend on the batch size, on its neighbours or on how prompts are sharded across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TemperatureLogitsWarper, TopPLogitsWarper

from .inputs import as_prompts, check_int, check_number, check_same_device, check_token_ids
from .rewards import _device, check_same_vocab
from .tokens import encode_prompt, pad, pad_token_id, positions


@dataclass
class DecodingConfig:
    """Settings of one decoding run. Defaults are the ConG authors' (lambda 0.1, T 0.8, top-p 0.95, penalty 1.2)."""

    alpha: float = 0.5
    lam: float | None = 0.1  # plausibility head; None (plain sampling only) disables it
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.2
    do_sample: bool = True
    max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 32
    ignore_eos: bool = False  # always generate max_new_tokens (benchmarks)
    # The authors' release renormalises the amateur a second time (off-head entries set to -1e-3, log_softmax again),
    # which shifts every head score by (1 - alpha) log Z'. That changes nothing without a repetition penalty; with one,
    # the penalty acts on the shifted scores. Off by default: the paper's formula is the definition, and the shift
    # depends on the vocabulary size, not on the models. Turn it on to reproduce the release token for token.
    release_compatible: bool = False

    def validate(self, contrastive: bool) -> None:
        """Raise a one-line error naming the first field out of its range or of the wrong type."""
        check_number("alpha", self.alpha, 0.0, 1.0)
        if contrastive and self.lam is None:
            raise ValueError("contrastive decoding needs a plausibility head: lam must lie in (0, 1], got None")
        if self.lam is not None:
            check_number("lam (plausibility threshold lambda)", self.lam, 0.0, 1.0, low_open=True)
        check_number("temperature", self.temperature, 0.0, low_open=True)
        check_number("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_number("repetition_penalty", self.repetition_penalty, 0.0, low_open=True)
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        for name in ("do_sample", "ignore_eos", "release_compatible"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")


@dataclass
class Generation:
    """Decoded responses, in prompt order. `token_rewards[i][t] = log pi_r(y_t) - log pi_ref(y_t)` (CD only)."""

    prompts: list[str]
    texts: list[str]
    token_ids: list[list[int]]
    token_rewards: list[list[float]] | None = None
    config: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def implicit_reward(self, normalise: bool = True) -> list[float]:
        """Sequence implicit reward of each response: mean (default) or sum of its token rewards."""
        if self.token_rewards is None:
            raise ValueError("plain samples carry no implicit reward; score them with congkit.implicit_reward")
        return [(sum(r) / max(len(r), 1)) if normalise else sum(r) for r in self.token_rewards]


# --- the contrast and the choice of token: small pure functions -------------------------------------------------


def plausibility_head(expert_logp: torch.Tensor, lam: float) -> torch.Tensor:
    """Boolean mask of V_head = {v : pi_r(v) >= lam * max_w pi_r(w)}, computed from log-probabilities."""
    return expert_logp >= expert_logp.max(dim=-1, keepdim=True).values + np.log(lam)


def release_amateur_logp(amateur_logp: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """The authors' release step for the amateur: off-head entries set to -1e-3, then log_softmax a second time.

    On the head this subtracts log Z', Z' = sum_head pi_ref + (|V| - |head|) e^-0.001, from every entry.
    """
    return torch.log_softmax(amateur_logp.masked_fill(~head, -1e-3), dim=-1)


def contrastive_scores(
    expert_logp: torch.Tensor,
    amateur_logp: torch.Tensor | None,
    alpha: float,
    lam: float | None,
    release_compatible: bool = False,
) -> torch.Tensor:
    """F = log pi_r - (1 - alpha) * log pi_ref on the head, -inf elsewhere. No amateur: F = log pi_r (plain).

    `release_compatible`: use `release_amateur_logp` for log pi_ref (shifts F by (1 - alpha) log Z' on the head).
    """
    head = plausibility_head(expert_logp, lam) if lam is not None else None
    if amateur_logp is None:
        scores = expert_logp
    else:
        if release_compatible:
            if head is None:
                raise ValueError("release_compatible contrastive scores need a plausibility head (lam)")
            amateur_logp = release_amateur_logp(amateur_logp, head)
        scores = expert_logp - (1.0 - alpha) * amateur_logp
    if head is not None:
        scores = scores.masked_fill(~head, float("-inf"))
    return scores


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor on a (B, V) mask of seen tokens: s * p if s < 0 else s / p.

    Kept as a mask (updated one token a step) instead of re-gathering the whole history every step, and so that left
    padding never counts as a seen token.
    """
    if penalty == 1.0:
        return scores
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


def choose_tokens(scores: torch.Tensor, config: DecodingConfig, uniforms: torch.Tensor | None) -> torch.Tensor:
    """Next token per row from final scores: argmax, or inverse-CDF sampling with the given per-row uniforms."""
    if not config.do_sample:
        return scores.argmax(dim=-1)
    scores = TemperatureLogitsWarper(config.temperature)(None, scores)
    if config.top_p < 1.0:
        scores = TopPLogitsWarper(config.top_p)(None, scores)
    cdf = torch.softmax(scores.double(), dim=-1).cumsum(dim=-1)
    targets = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, targets, right=True).squeeze(-1).clamp(max=scores.shape[-1] - 1)


def row_uniforms(seed: int, indices: Sequence[int], steps: int) -> torch.Tensor:
    """(len(indices), steps) uniforms; row i comes from a generator seeded by (seed, indices[i]) alone."""
    rows = []
    for index in indices:
        state = int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)
        rows.append(torch.rand(steps, generator=torch.Generator().manual_seed(state), dtype=torch.float64))
    return torch.stack(rows)


# --- the loop -------------------------------------------------------------------------------------------------------


def _eos_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> set[int]:
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(value)
    return ids


class _Stepper:
    """One model's forward passes with its own KV cache: the prompt once, then only the newest token."""

    def __init__(self, model: PreTrainedModel):
        self.model, self.past = model, None

    def first(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        self.past = out.cache
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def next(self, tok: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, cache=self.past, use_cache=True)
        self.past = out.cache
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)


@torch.inference_mode()
def _decode_batch(
    expert: PreTrainedModel,
    amateur: PreTrainedModel | None,
    prompt_ids: list[list[int]],
    indices: list[int],
    config: DecodingConfig,
    pad_id: int,
    eos: set[int],
) -> tuple[list[list[int]], list[list[float]] | None]:
    device = _device(expert)
    ids, mask = pad(prompt_ids, pad_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    pos = positions(mask)
    steppers = [_Stepper(expert)] + ([_Stepper(amateur)] if amateur is not None else [])
    logps = [s.first(ids, mask, pos) for s in steppers]

    batch, vocab = ids.shape[0], logps[0].shape[-1]
    # prompt tokens count as seen (as in transformers), padding does not
    seen = torch.zeros((batch, vocab), dtype=torch.long, device=device).scatter_add_(1, ids, mask) > 0
    uniforms = row_uniforms(config.seed, indices, config.max_new_tokens).to(device) if config.do_sample else None
    eos_tensor = torch.tensor(sorted(eos) or [-1], device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    tokens, rewards = [], []
    pos = pos[:, -1:]
    for t in range(config.max_new_tokens):
        expert_logp, amateur_logp = logps[0], (logps[1] if amateur is not None else None)
        scores = contrastive_scores(expert_logp, amateur_logp, config.alpha, config.lam, config.release_compatible)
        scores = apply_repetition_penalty(scores, seen, config.repetition_penalty)
        tok = choose_tokens(scores, config, uniforms[:, t] if uniforms is not None else None)
        tok = tok.masked_fill(done, pad_id)
        tokens.append(tok)
        if amateur_logp is not None:
            picked = (expert_logp - amateur_logp).gather(-1, tok[:, None]).squeeze(-1)
            rewards.append(picked.masked_fill(done, 0.0))
        seen.scatter_(1, tok[:, None], True)
        done = done | torch.isin(tok, eos_tensor)
        if bool(done.all()) or t == config.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
        pos = pos + 1
        logps = [s.next(tok, mask, pos) for s in steppers]

    token_matrix = torch.stack(tokens, dim=1).cpu()
    reward_matrix = torch.stack(rewards, dim=1).cpu() if rewards else None
    out_ids, out_rewards = [], []
    for row in range(batch):
        row_ids = token_matrix[row].tolist()
        length = next((i + 1 for i, x in enumerate(row_ids) if x in eos), len(row_ids))
        out_ids.append(row_ids[:length])
        if reward_matrix is not None:
            out_rewards.append(reward_matrix[row, :length].tolist())
    return out_ids, (out_rewards if reward_matrix is not None else None)


def _generate(
    expert: PreTrainedModel,
    amateur: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: DecodingConfig,
    index_offset: int,
    progress: bool,
) -> Generation:
    config.validate(contrastive=amateur is not None)
    check_int("index_offset", index_offset, 0)
    names = ("expert (post-alignment)", "amateur (pre-alignment)")
    if amateur is not None:
        check_same_vocab(expert, amateur, names=names)
        check_same_device(expert, amateur, names)
    prompts = as_prompts(prompts)
    if not prompts:
        return Generation([], [], [], [] if amateur is not None else None, config=vars(config).copy())
    pad_id = pad_token_id(tokenizer)
    eos = set() if config.ignore_eos else _eos_ids(tokenizer, expert)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    check_token_ids(expert, encoded + [[pad_id]], what="the tokenizer (prompts and pad token)")
    all_ids, all_rewards = [], []
    starts = range(0, len(prompts), config.batch_size)
    label = "contrastive decoding" if amateur is not None else "sampling"
    for start in tqdm(starts, desc=label, disable=not progress or len(starts) == 1):
        chunk = encoded[start : start + config.batch_size]
        indices = [index_offset + start + i for i in range(len(chunk))]
        ids, rewards = _decode_batch(expert, amateur, chunk, indices, config, pad_id, eos)
        all_ids.extend(ids)
        if rewards is not None:
            all_rewards.extend(rewards)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in all_ids]
    return Generation(prompts, texts, all_ids, all_rewards if amateur is not None else None, vars(config).copy())


def _with_overrides(config: DecodingConfig, overrides: dict) -> DecodingConfig:
    unknown = sorted(set(overrides) - set(vars(config)))
    if unknown:
        raise TypeError(f"unknown decoding option(s) {unknown}; DecodingConfig fields: {sorted(vars(config))}")
    return DecodingConfig(**{**vars(config), **overrides})


def contrastive_generate(
    expert: PreTrainedModel,
    amateur: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: str | Sequence[str],
    config: DecodingConfig | None = None,
    index_offset: int = 0,
    progress: bool = True,
    **overrides,
) -> Generation:
    """Contrastive decoding from `expert` (pi_r) against `amateur` (pi_ref) for each prompt.

    `prompts`: a list of prompt strings; a plain string is one prompt. `overrides` set fields of `DecodingConfig`
    (alpha, lam, temperature, top_p, ...); an unknown name is an error. `index_offset` is the index of
    `prompts[0]` in the full prompt set; it seeds each prompt's randomness, so shards decoded apart merge into the
    output of one run.
    """
    config = _with_overrides(config or DecodingConfig(), overrides)
    return _generate(expert, amateur, tokenizer, prompts, config, index_offset, progress)


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: DecodingConfig | None = None,
    index_offset: int = 0,
    progress: bool = True,
    **overrides,
) -> Generation:
    """Ordinary sampling (or greedy decoding) from one model, through the same loop as `contrastive_generate`.

    No head by default (`lam=None`). With `lam` set, the head acts as a min-p filter, so `sample(lam=l)` equals
    `contrastive_generate(alpha=1, lam=l)` token for token.
    """
    config = _with_overrides(config or DecodingConfig(lam=None), overrides)
    return _generate(model, None, tokenizer, prompts, config, index_offset, progress)
