"""The one contrastive-decoding (CD) step, shared by congkit's batched engine (`congkit.decoding`) and its `generate`
strategy (`generate.py` beside this file). At each step, from the expert pi_r (post-alignment) and the amateur pi_ref
(pre-alignment) next-token log-probabilities:

    head   = {v : pi_r(v) >= plausibility_threshold * max_w pi_r(w)}         on pi_r itself, before anything else
    F(v)   = log pi_r(v) - (1 - alpha) log pi_ref(v)   on the head,  -inf elsewhere           (no amateur: log pi_r)
    F(v)   = F(v) * p if F(v) < 0 else F(v) / p         for tokens already in the row (repetition penalty p)
    scores = process(F)                                 temperature, top-k, top-p, min-p, other logits processors
    token  = argmax(scores), or the inverse CDF of softmax(scores) at a uniform draw

`congkit.pipeline.cong.reference_cd` is the slow, obviously correct definition both users of this step are tested against.

The lazy amateur (`forced_rows`, `LazyAmateur`): where every row's head holds one token, that token is the choice
whatever pi_ref says, so pi_ref's forward is deferred and run later over the deferred tokens in one multi-token
forward (like a prefill), which still gives log pi_ref of every token for the implicit rewards.

Why this lives in the Hub folder: transformers loads `custom_generate/generate.py` and its relative imports from a
local folder or a Hub repository, where `congkit` is not installable. So this file imports only torch, numpy and
transformers, and congkit imports the step from here: the Hub form and the library run one file.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

EXPERT, AMATEUR = "expert (post-alignment model pi_r)", "amateur (pre-alignment model pi_ref)"
HEAD_BLOCK = 128  # vocabulary block of `head_ids`: 64-128 measured fastest at 32,000 and 151,936 tokens


# --- checks at the door ---------------------------------------------------------------------------------------------


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer (not a bool, not a float such as 2.5) that is >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:  # fmt: skip
    """A finite real number (not a bool, a string, NaN or infinity) within [low, high] ((low, high] when
    `low_open`). NaN compares False with everything, so without the `isfinite` test it would pass any range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    below = value <= low if low_open else value < low if low is not None else False
    if below or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{name} must lie in {bounds}, got {value}")
    return float(value)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def check_causal_lm(model, name: str) -> None:
    """A loaded decoder-only model: not a hub id or path (load it first), not an encoder-decoder model."""
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"{name} must be a loaded transformers model, got {type(model).__name__} {model!r:.60}; "
                        "load it first (congkit.models.load_causal_lm or AutoModelForCausalLM.from_pretrained)")  # fmt: skip
    if getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"{name} is an encoder-decoder model ({type(model).__name__}); contrastive decoding here "
                         "steps decoder-only causal LMs")  # fmt: skip


def check_pair(expert, amateur, names: tuple[str, str] = (EXPERT, AMATEUR)) -> None:
    """Two loaded causal LMs with one output vocabulary, on one device."""
    check_causal_lm(expert, names[0])
    check_causal_lm(amateur, names[1])
    check_same_vocab(expert, amateur, names)
    check_same_device(expert, amateur, names)


def check_same_vocab(a, b, names: tuple[str, str] = ("policy", "reference")) -> None:
    va, vb = a.get_output_embeddings().weight.shape[0], b.get_output_embeddings().weight.shape[0]
    if va != vb:
        raise ValueError(f"vocabulary mismatch: {names[0]} has {va} output tokens, {names[1]} has {vb}; "
                         "contrastive scores need two models that share one tokenizer")  # fmt: skip


def check_same_device(a, b, names: tuple[str, str]) -> None:
    da, db = model_device(a), model_device(b)
    if da != db:
        raise ValueError(f"{names[0]} is on {da} but {names[1]} is on {db}: put both models on one device")


def require_finite(values: torch.Tensor, model: str, step: int) -> None:
    """Stop decoding when a model's scores are not finite (NaN or infinite weights or activations), naming the model
    and the step, instead of emitting tokens chosen from NaN or NaN rewards. `values`: one number per row that is
    NaN when the row's log-softmax is (the expert's row max; the amateur's log-probability of the chosen token)."""
    if not bool(torch.isfinite(values).all()):
        raise FloatingPointError(f"the {model} gave non-finite log-probabilities at generated token {step} "
                                 "(NaN or infinite weights or activations?)")  # fmt: skip


# --- tokens and positions -------------------------------------------------------------------------------------------


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore padding: 0 at each row's first real token, whichever side it is padded on."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def seen_tokens(ids: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """(B, vocab) bool: the tokens each row holds outside its padding (what the repetition penalty counts)."""
    counts = torch.zeros((ids.shape[0], vocab), dtype=torch.long, device=ids.device)
    return counts.scatter_add_(1, ids, mask.long()) > 0


def row_uniforms(seed: int, rows: Sequence[int | tuple[int, int]], steps: int) -> torch.Tensor:
    """(len(rows), steps) uniforms; each row's come from a generator seeded by (seed, its key) alone. A key is a
    prompt's index, or (prompt index, sample j) for the j-th of several samples of one prompt ((i, 0) is i)."""
    out = []
    for row in rows:
        index, j = row if isinstance(row, tuple) else (row, 0)
        entropy = [seed, index] if j == 0 else [seed, index, j]
        state = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
        out.append(torch.rand(steps, generator=torch.Generator().manual_seed(state), dtype=torch.float64))
    return torch.stack(out)


# --- the head, the contrast, the penalty, the choice: small pure functions -----------------------------------------


def plausibility_head(expert_logp: torch.Tensor, threshold: float, top: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of V_head = {v : pi_r(v) >= threshold * max_w pi_r(w)}, computed from pi_r's log-probabilities
    before any temperature (the paper's lambda). `top`: each row's max log-probability, if already computed."""
    top = expert_logp.amax(dim=-1, keepdim=True) if top is None else top
    return expert_logp >= top + np.log(threshold)


def release_amateur_logp(amateur_logp: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """The authors' release step for the amateur: off-head entries set to -1e-3, then log_softmax a second time.

    On the head this subtracts log Z', Z' = sum_head pi_ref + (|V| - |head|) e^-0.001, from every entry.
    """
    return torch.log_softmax(amateur_logp.masked_fill(~head, -1e-3), dim=-1)


def contrast(expert_logp: torch.Tensor, amateur_logp: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """F = log pi_r - (1 - alpha) * log pi_ref, entry by entry (no amateur: F = log pi_r). The one place the
    contrast is formed: on the whole vocabulary or on the head's gathered tokens alike."""
    return expert_logp if amateur_logp is None else expert_logp - (1.0 - alpha) * amateur_logp


def contrastive_scores(expert_logp: torch.Tensor, amateur_logp: torch.Tensor | None, alpha: float,
                       threshold: float | None, release_compatible: bool = False,
                       head: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """F = log pi_r - (1 - alpha) * log pi_ref on the head, -inf elsewhere. No amateur: F = log pi_r (plain).

    `head`: the head's mask, if already computed (else from `threshold`; None and no mask: no head).
    `release_compatible`: use `release_amateur_logp` for log pi_ref (shifts F by (1 - alpha) log Z' on the head).
    """
    if head is None and threshold is not None:
        head = plausibility_head(expert_logp, threshold)
    if release_compatible and amateur_logp is not None:
        if head is None:
            raise ValueError("release_compatible contrastive scores need a plausibility head (plausibility_threshold)")
        amateur_logp = release_amateur_logp(amateur_logp, head)
    scores = contrast(expert_logp, amateur_logp, alpha)
    return scores if head is None else scores.masked_fill(~head, float("-inf"))


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor on a (B, V) mask of seen tokens: s * p if s < 0 else s / p.

    Kept as a mask (updated one token a step) instead of re-gathering the whole history every step, and so that left
    padding never counts as a seen token.
    """
    if penalty == 1.0:
        return scores
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


def sample_from_scores(scores: torch.Tensor, uniforms: torch.Tensor | None) -> torch.Tensor:
    """One token per row from softmax(scores): inverse CDF at the given per-row uniforms, or torch's global RNG
    (`torch.multinomial`, as `generate`) when `uniforms` is None."""
    if uniforms is None:
        return torch.multinomial(torch.softmax(scores.float(), dim=-1), num_samples=1).squeeze(-1)
    cdf = torch.softmax(scores.double(), dim=-1).cumsum(dim=-1)
    targets = (uniforms.double() * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, targets, right=True).squeeze(-1).clamp(max=scores.shape[-1] - 1)


def chosen_log_ratio(expert_logp: torch.Tensor, amateur_logp: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
    """log pi_r(y) - log pi_ref(y) of each row's chosen token y: the token-level implicit reward before beta."""
    return (expert_logp.gather(-1, tok[:, None]) - amateur_logp.gather(-1, tok[:, None])).squeeze(-1)


def head_tokens(head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, in_head) of a (B, V) head mask (`plausibility_head`): per row, the token ids of that row's head in
    ascending id order, padded on the right to the largest head in the batch (padding: id 0, `in_head` False). The
    slow, obviously correct reference of `head_ids` (one `nonzero` over the whole mask)."""
    rows, cols = head.nonzero(as_tuple=True)
    return _padded_ids(rows, cols, head.shape[0])


def head_ids(expert_logp: torch.Tensor, threshold: float, top: torch.Tensor | None = None,
             block: int = HEAD_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`head_tokens(plausibility_head(expert_logp, threshold, top))`, found without a full-vocabulary mask.

    The vocabulary is cut into blocks of `block` ids; a block holds a head token iff its max reaches the threshold
    top + log(threshold), so one `amax` pass over the blocks finds the few blocks to compare entry by entry (the same
    comparison as `plausibility_head`, so the same tokens, tested). A full mask and its `nonzero` cost 4-5x as much at
    32,000 and 151,936 tokens (`nonzero` alone was 3x a log-softmax); ids beyond the last whole block are compared
    directly."""
    top = expert_logp.amax(dim=-1, keepdim=True) if top is None else top
    cut = top + np.log(threshold)
    if expert_logp.shape[0] == 1:  # one row: its head's ids in order, no padding (4 operations instead of ~20)
        ids = (expert_logp[0] >= cut[0]).nonzero().T
        return ids, torch.ones_like(ids, dtype=torch.bool)
    vocab = expert_logp.shape[-1]
    whole = vocab - vocab % block
    rows, cols = [], []
    if whole:
        blocks = expert_logp[:, :whole].unflatten(-1, (whole // block, block))  # a view: (B, blocks, block)
        block_rows, block_ids = (blocks.amax(dim=-1) >= cut).nonzero(as_tuple=True)
        hit_rows, offsets = (blocks[block_rows, block_ids] >= cut[block_rows]).nonzero(as_tuple=True)
        rows.append(block_rows[hit_rows])
        cols.append(block_ids[hit_rows] * block + offsets)
    if whole < vocab:
        tail_rows, tail_cols = (expert_logp[:, whole:] >= cut).nonzero(as_tuple=True)
        rows.append(tail_rows)
        cols.append(tail_cols + whole)
    rows, cols = torch.cat(rows), torch.cat(cols)
    if 0 < whole < vocab:  # row-major, ascending ids: the tail's ids go after each row's block ids
        order = (rows * vocab + cols).argsort()
        rows, cols = rows[order], cols[order]
    return _padded_ids(rows, cols, expert_logp.shape[0])


def _padded_ids(rows: torch.Tensor, cols: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, width) ids and in_head from a head's (row, id) pairs in row-major, ascending-id order."""
    counts = torch.bincount(rows, minlength=batch)
    slots = torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[rows]
    width = int(counts.max())
    ids = torch.zeros((batch, width), dtype=torch.long, device=rows.device)
    ids.index_put_((rows, slots), cols)
    return ids, torch.arange(width, device=rows.device) < counts[:, None]


# --- the step -------------------------------------------------------------------------------------------------------


class Step(NamedTuple):
    """One step's choice: `tokens` (B,), and the processed `scores` the choice was made from: over the whole
    vocabulary, or over `ids` (B, width) when the head was gathered (`ids` None otherwise)."""

    tokens: torch.Tensor
    scores: torch.Tensor
    ids: torch.Tensor | None = None


def cd_step(expert_logp: torch.Tensor, amateur_logp: torch.Tensor | None, *, alpha: float,
            plausibility_threshold: float | None, seen: torch.Tensor | None, repetition_penalty: float,
            process: Callable[[torch.Tensor], torch.Tensor] | None, do_sample: bool, uniforms: torch.Tensor | None,
            gather_head: bool = False, release_compatible: bool = False, top: torch.Tensor | None = None) -> Step:  # fmt: skip
    """One step of contrastive decoding (this module's docstring has the formula), batched over rows.

    Args:
        expert_logp, amateur_logp: (B, V) next-token log-softmax of pi_r and of pi_ref (None: plain sampling).
        alpha: in [0, 1]; plausibility_threshold: the head's lambda in (0, 1], or None for no head.
        seen: (B, V) bool, the tokens the repetition penalty counts (None with a penalty of 1).
        process: scores -> scores after the penalty (temperature, top-k, top-p, min-p, a caller's processors).
        do_sample: inverse-CDF sampling at `uniforms` (per row; None: torch's global RNG), else argmax.
        gather_head: run everything after the head on the head's tokens gathered (in id order, so ties and the
            CDF's order are those of the full vocabulary): the same tokens without a 150k-entry sort for top-p.
        release_compatible: the authors' release renormalisation of the amateur (`release_amateur_logp`).
        top: each row's max of `expert_logp`, if already computed.
    """
    top = expert_logp.amax(dim=-1, keepdim=True) if top is None else top
    ids = None
    if gather_head and plausibility_threshold is not None:
        ids, in_head = head_ids(expert_logp, plausibility_threshold, top)
        if amateur_logp is not None:
            if release_compatible:  # the release renormalises over the whole vocabulary: it needs the mask
                amateur_logp = release_amateur_logp(amateur_logp, plausibility_head(expert_logp, plausibility_threshold, top))
            amateur_logp = amateur_logp.gather(-1, ids)
        scores = contrast(expert_logp.gather(-1, ids), amateur_logp, alpha).masked_fill(~in_head, float("-inf"))
        seen = seen.gather(-1, ids) if seen is not None else None
    else:
        head = plausibility_head(expert_logp, plausibility_threshold, top) if plausibility_threshold is not None else None
        scores = contrastive_scores(expert_logp, amateur_logp, alpha, None, release_compatible, head)
    if repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, seen, repetition_penalty)
    if process is not None:
        scores = process(scores)
    choice = sample_from_scores(scores, uniforms) if do_sample else scores.argmax(dim=-1)
    tokens = choice if ids is None else ids.gather(-1, choice[:, None]).squeeze(-1)
    return Step(tokens, scores, ids)


# --- the lazy amateur -----------------------------------------------------------------------------------------------


def forced_rows(expert_logp: torch.Tensor, threshold: float, top: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) bool: the rows whose plausibility head holds exactly one token. CD's choice there is that token whatever
    the amateur says: the contrast, the repetition penalty and the warpers (temperature, top-k, top-p, min-p) act
    inside the head, where a single finite score takes all the probability (greedy or sampled alike)."""
    top = expert_logp.amax(dim=-1, keepdim=True) if top is None else top
    return (expert_logp >= top + np.log(threshold)).sum(dim=-1) == 1


class LazyAmateur:
    """The amateur's forward, deferred while a step's choice is forced (`forced_rows` of every row), run over the
    deferred tokens in one multi-token forward when a step needs its scores (`current`) or the caller needs the
    deferred tokens' log-ratios (`resolve`). That forward gives log pi_ref of every deferred token as one-token
    forwards would (equal up to float rounding: other matrix shapes), so per-token implicit rewards stay exact.

    Why by hand: transformers' `generate` steps one model; no library defers a second model's forward this way.

    Each step the caller reports its choice (`chosen`: the token and pi_r's log-probability of it) and the token is
    queued for the amateur (the expert reads it at once). `on_ratio(step, log pi_r(y) - log pi_ref(y), tag)` receives
    every step's log-ratio once it is known, in step order. `read(ids)` is the caller's forward of the amateur over
    (B, W) tokens on top of its cache, returning (B, W, V) log-probabilities after each of them; it is passed at each
    call, as the caller's mask and positions move.

    Args:
        logp: the amateur's next-token log-probabilities after the prompt (B, V).
        on_ratio: the callback above."""

    def __init__(self, logp: torch.Tensor, on_ratio: Callable[[int, torch.Tensor, Any], None]):
        self.logp, self.on_ratio = logp, on_ratio
        self.read_upto = 0  # generated tokens the amateur has read; `logp` is its distribution for the next one
        self.unread: list[torch.Tensor] = []  # (B,) tokens chosen after those
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor, Any]] = []  # (step, token, log pi_r(token), tag)
        self.forwards = 0  # multi-token forwards run (the prompt's not counted)

    def current(self, read: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The amateur's next-token log-probabilities for the step about to be chosen: every queued token read."""
        self._read(read, len(self.unread))
        return self.logp

    def chosen(self, step: int, tokens: torch.Tensor, expert_logp_of_tokens: torch.Tensor, tag: Any = None) -> None:
        """Step `step` chose `tokens`; its log-ratio is known now if the amateur is current, else once it is read."""
        self.pending.append((step, tokens, expert_logp_of_tokens, tag))
        if step == self.read_upto:  # the amateur's `logp` is this step's distribution
            self._resolve_ready()
        self.unread.append(tokens)

    def resolve(self, read: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Every chosen step's log-ratio delivered: the queued tokens read up to the last chosen one (exclusive: its
        own log-ratio needs only the tokens before it)."""
        if self.pending:
            self._read(read, self.pending[-1][0] - self.read_upto)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (the caller drops finished rows; resolve first, their ratios are owed)."""
        if self.pending:
            raise RuntimeError("LazyAmateur.select with log-ratios still owed: call resolve first")
        self.logp, self.unread = self.logp[rows], [t[rows] for t in self.unread]

    def _read(self, read: Callable[[torch.Tensor], torch.Tensor], width: int) -> None:
        if width <= 0:
            return
        after = read(torch.stack(self.unread[:width], dim=1))  # (B, W, V): the distributions of the next W steps
        self.forwards += 1
        for k in range(width):  # each pending step's distribution was `logp` when the amateur had read it
            self.read_upto += 1
            self.unread.pop(0)
            self.logp = after[:, k]
            self._resolve_ready()

    def _resolve_ready(self) -> None:
        while self.pending and self.pending[0][0] == self.read_upto:
            step, tokens, expert_lp, tag = self.pending.pop(0)
            self.on_ratio(step, expert_lp - self.logp.gather(-1, tokens[:, None]).squeeze(-1), tag)
