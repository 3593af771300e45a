"""Batched contrastive decoding (CD) between a post-alignment "expert" pi_r and a pre-alignment "amateur" pi_ref.

At each step, over the plausibility head V_head = {v : pi_r(v) >= lambda * max_w pi_r(w)}:

    F(v) = log pi_r(v) - (1 - alpha) * log pi_ref(v)        (v in V_head),      F(v) = -inf otherwise
    p_alpha(v) = softmax(F)(v)

then, as the ConG authors did, a repetition penalty on F, temperature, top-p, and a greedy or sampled choice.
alpha = 1 is plain sampling from pi_r inside the head; alpha = 0 samples by the token-level implicit reward inside
the head. Plain sampling from one model (`sample`) runs through this same loop. Each step is `cd_step`, the one CD
step that the `generate` strategy (`congkit.generation`) runs too; this module is the batched runtime around it
(caches, threads, finished rows, seeds).

Why a hand-written loop rather than `model.generate`: generate drives one model. CD needs two models stepping in
lock-step on the same tokens, each with its own KV cache; transformers' logits processors see only one model's
logits. Batching over prompts (left padding, position ids that skip padding) is what makes CD usable at scale; the
authors' release decoded one prompt at a time. The temperature and top-p steps are transformers' own warpers.

Randomness is per prompt: row i draws its uniforms from a generator seeded by (seed, index of the prompt), so a
prompt's sample does not depend on the batch size, on its neighbours or on how prompts are sharded across processes."""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from tqdm.auto import tqdm
from transformers import (
    DynamicLayer,
    LogitsProcessorList,
    MinPLogitsWarper,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from congkit.decoding import runtime
from congkit.decoding.config import DecodingConfig, Generation
from congkit.decoding.runtime import Stepper, ThreadPlan, decode_threads, new_cache, step_models
from congkit.hub.custom_generate.step import (  # the one CD step, shared with the `generate` strategy
    AMATEUR,
    EXPERT,
    LazyAmateur,
    cd_step,
    check_pair,
    chosen_log_ratio,
    forced_rows,
    require_finite,
    row_uniforms,
    seen_tokens,
)
from congkit.inputs import as_prompts, check_causal_lm, check_int, check_token_ids, model_device
from congkit.rewards import warn_unless_texts_reencode
from congkit.tokens import UNSET, chat_template_choice, encode_prompt, pad, pad_token_id, positions


def warpers(config: DecodingConfig) -> LogitsProcessorList | None:
    """transformers' own warpers for a sampled run, in `generate`'s order (temperature, top-k, top-p, min-p); None
    for greedy decoding (as `generate`, which builds no warpers then: none of them moves the argmax)."""
    if not config.do_sample:
        return None
    out = LogitsProcessorList([TemperatureLogitsWarper(config.temperature)])
    if config.top_k:
        out.append(TopKLogitsWarper(config.top_k))
    if config.top_p < 1.0:
        out.append(TopPLogitsWarper(config.top_p))
    if config.min_p is not None:
        out.append(MinPLogitsWarper(config.min_p))
    return out


def next_tokens(expert_logp: torch.Tensor, amateur_logp: torch.Tensor | None, seen: torch.Tensor | None,
                config: DecodingConfig, uniforms: torch.Tensor | None, top: torch.Tensor | None = None,
                process: LogitsProcessorList | None = None) -> torch.Tensor:  # fmt: skip
    """One decoding step's tokens: `cd_step` with `config`'s settings (`process`: `warpers(config)`, built once a
    batch). With `config.gathers_head(device)` the steps after the head run on its tokens gathered."""
    process = warpers(config) if process is None else process
    return cd_step(expert_logp, amateur_logp, alpha=config.alpha, plausibility_threshold=config.plausibility_threshold,
                   seen=seen, repetition_penalty=config.repetition_penalty,
                   process=(lambda s: process(None, s)) if process is not None else None, do_sample=config.do_sample,
                   uniforms=uniforms, gather_head=config.gathers_head(expert_logp.device),
                   release_compatible=config.release_compatible, top=top).tokens  # fmt: skip


def _eos_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> set[int]:
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(value)
    return ids


@torch.inference_mode()
def _decode_batch(
    expert: PreTrainedModel,
    amateur: PreTrainedModel | None,
    prompt_ids: list[list[int]],
    rows: list[tuple[int, int]],
    config: DecodingConfig,
    pad_id: int,
    eos: set[int],
    stats: dict | None = None,
) -> tuple[list[list[int]], list[list[float]] | None]:
    device = model_device(expert)
    ids, mask = pad(prompt_ids, pad_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    pos = positions(mask)
    length = ids.shape[1] + config.max_new_tokens
    steppers = [Stepper(m, new_cache(m, config.cache, length, config.compile), config.compile)
                for m in (expert, amateur) if m is not None]  # fmt: skip
    # no row padded (e.g. batch 1): no mask or positions, so the model takes its plain causal path (compiled steps
    # always take both: their mask is built outside the model)
    padded = config.compile or not bool(mask.all())
    plan, process = ThreadPlan(in_turn=runtime.small_step(expert, len(prompt_ids))), warpers(config)
    # the prompt's forward: in turn for a small step, else in two threads (not timed: it is no decoding step)
    logps = step_models(steppers, "first", ids, mask if padded else None, pos if padded else None,
                        plan=plan if plan.in_turn else None)  # fmt: skip

    batch, vocab = ids.shape[0], logps[0].shape[-1]
    # prompt tokens count as seen (as in transformers), padding does not; only a repetition penalty reads them
    seen = seen_tokens(ids, mask, vocab) if config.repetition_penalty != 1.0 else None
    uniforms = row_uniforms(config.seed, rows, config.max_new_tokens).to(device) if config.do_sample else None
    eos_tensor = torch.tensor(sorted(eos) or [-1], device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    live = torch.arange(batch, device=device)  # the batch rows still decoding, by their place in `prompt_ids`
    # finished rows are dropped from caches whose layers can drop rows (not a compiled step's `StaticCache`)
    droppable = all(isinstance(layer, DynamicLayer) for s in steppers for layer in getattr(s.past, "layers", [None]))
    tokens, rewards = [], {}
    pos = pos[:, -1:]

    def record(t: int, ratio: torch.Tensor, tag: tuple) -> None:  # step t's log-ratios, for the rows live then
        was_done, rows_then = tag
        ratio = ratio.masked_fill(was_done, 0.0)
        require_finite(ratio, AMATEUR, t)
        rewards[t] = ratio.new_zeros(batch).index_copy_(0, rows_then, ratio)

    lazy = LazyAmateur(logps[1], record) if amateur is not None and config.lazy() else None

    def read(chunk: torch.Tensor) -> torch.Tensor:  # the amateur reads the tokens it deferred, up to step t - 1
        back = torch.arange(chunk.shape[1] - 1, -1, -1, device=device)
        return steppers[1].feed(chunk, mask if padded else None, (pos - back) if padded else None)

    steps = forced = 0
    for t in range(config.max_new_tokens):
        steps += 1
        expert_logp, amateur_logp = logps[0], (logps[1] if amateur is not None and lazy is None else None)
        top, top_ids = expert_logp.max(dim=-1, keepdim=True)
        require_finite(top, EXPERT if amateur is not None else "model", t)
        choice_forced = False
        if lazy is not None:  # the amateur read only when some live row's choice is not forced
            choice_forced = bool((forced_rows(expert_logp, config.plausibility_threshold, top) | done).all())
            forced += choice_forced
            if not choice_forced:
                amateur_logp = lazy.current(read)
        if choice_forced:  # every head is its row's argmax alone: that is the choice, greedy or sampled (the
            tok = top_ids.squeeze(-1)  # uniforms are indexed by step, so skipping a draw changes no later one)
        else:
            tok = next_tokens(expert_logp, amateur_logp, seen, config,
                              uniforms[:, t] if uniforms is not None else None, top, process)  # fmt: skip
        tok = tok.masked_fill(done, pad_id)
        tokens.append(torch.full((batch,), pad_id, dtype=tok.dtype, device=device).index_copy_(0, live, tok))
        if lazy is not None:
            lazy.chosen(t, tok, expert_logp.gather(-1, tok[:, None]).squeeze(-1), (done, live))
        elif amateur_logp is not None:
            record(t, chosen_log_ratio(expert_logp, amateur_logp, tok), (done, live))
        if seen is not None:
            seen.scatter_(1, tok[:, None], True)
        done = done | torch.isin(tok, eos_tensor)
        finished = int(done.sum())  # one host sync a step
        if finished == len(live) or t == config.max_new_tokens - 1:
            break
        if droppable and finished >= runtime.COMPACT_FRACTION * len(live):  # drop the finished rows
            keep = (~done).nonzero().squeeze(-1)
            if lazy is not None:  # the dropped rows' deferred log-ratios first
                lazy.resolve(read)
                lazy.select(keep)
            live, tok, done, mask, pos = (x[keep] for x in (live, tok, done, mask, pos))
            seen = seen[keep] if seen is not None else None
            uniforms = uniforms[keep] if uniforms is not None else None
            for stepper in steppers:
                stepper.past.batch_select_indices(keep)
        if padded:
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], dim=1)
            pos = pos + 1
        if lazy is not None:
            logps = [steppers[0].next(tok, mask if padded else None, pos if padded else None)]
        else:
            logps = step_models(steppers, "next", tok, mask if padded else None, pos if padded else None, plan=plan)
    if lazy is not None:
        lazy.resolve(read)
    if stats is not None:
        stats["steps"] = stats.get("steps", 0) + steps
        stats["forced_steps"] = stats.get("forced_steps", 0) + forced
        stats["amateur_forwards"] = stats.get("amateur_forwards", 0) + (
            (lazy.forwards if lazy is not None else steps - 1) if amateur is not None else 0)  # fmt: skip

    token_matrix = torch.stack(tokens, dim=1).cpu()
    reward_matrix = torch.stack([rewards[t] for t in range(len(tokens))], dim=1).cpu() if rewards else None
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
    prompts,
    config: DecodingConfig,
    index_offset: int,
    progress: bool,
    apply_chat_template: bool,
) -> Generation:
    config.validate(contrastive=amateur is not None)
    check_int("index_offset", index_offset, 0)
    if amateur is not None:
        check_pair(expert, amateur)
    else:
        check_causal_lm(expert, "model")
    pad_id = pad_token_id(tokenizer)
    prompts, encoded = prompt_ids(tokenizer, prompts, pad_id=pad_id, apply_chat_template=apply_chat_template)
    if not prompts:
        return Generation([], [], [], [] if amateur is not None else None, config=vars(config).copy())
    eos = set() if config.ignore_eos else _eos_ids(tokenizer, expert)
    check_token_ids(expert, encoded + [[pad_id]], what="the tokenizer (prompts and pad token)")
    n = config.num_return_sequences  # rows prompt by prompt, as `generate` expands them
    prompts, encoded = [p for p in prompts for _ in range(n)], [e for e in encoded for _ in range(n)]
    rows = [(index_offset + i, j) for i in range(len(encoded) // n) for j in range(n)]
    all_ids, all_rewards, stats = [], [], {}
    starts = range(0, len(encoded), config.batch_size)
    label = "contrastive decoding" if amateur is not None else "sampling"
    for start in tqdm(starts, desc=label, disable=not progress or len(starts) == 1):
        chunk = encoded[start : start + config.batch_size]
        with decode_threads(expert, len(chunk)):
            ids, rewards = _decode_batch(expert, amateur, chunk, rows[start : start + len(chunk)], config, pad_id, eos,
                                         stats)  # fmt: skip
        all_ids.extend(ids)
        if rewards is not None:
            all_rewards.extend(rewards)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in all_ids]
    warn_unless_texts_reencode(tokenizer, texts, all_ids, eos)
    return Generation(prompts, texts, all_ids, all_rewards if amateur is not None else None, vars(config).copy(),
                      stats if amateur is not None else {})  # fmt: skip


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompts, templated=UNSET, pad_id: int | None = None,
               apply_chat_template: bool = False) -> tuple[list, list[list[int]]]:  # fmt: skip
    """(prompts as given or decoded, token ids per prompt) for what users hold: a string (raw text, or one user turn
    with `apply_chat_template`) or a conversation (chat template), one prompt each; a list of them; a `BatchEncoding`
    / dict with `input_ids` (and `attention_mask`), or a token tensor (1-D: one prompt; 2-D: one per row, padding =
    `pad_id` tokens outside an attention mask). `templated` is deprecated (see `congkit.tokens`)."""
    apply_chat_template = chat_template_choice(apply_chat_template, templated)
    if isinstance(prompts, Mapping) and "input_ids" in prompts:
        ids = torch.as_tensor(prompts["input_ids"])
        mask = prompts.get("attention_mask")
        mask = torch.as_tensor(mask).bool() if mask is not None else None
    elif isinstance(prompts, torch.Tensor):
        ids, mask = prompts, None
    else:
        texts = as_prompts(prompts)
        # each distinct prompt encoded once: a chat template renders in Python (~0.15 ms a prompt here) and an
        # evaluation repeats every prompt k times
        keys = [p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in texts]
        encoded = {}
        for key, p in zip(keys, texts):
            if key not in encoded:
                encoded[key] = encode_prompt(tokenizer, p, apply_chat_template)
        return texts, [list(encoded[key]) for key in keys]
    if ids.dtype not in (torch.int64, torch.int32) or ids.dim() not in (1, 2):
        raise TypeError(f"token prompts must be a 1-D or 2-D integer tensor, got {ids.dtype} of shape {tuple(ids.shape)}")
    ids = ids[None] if ids.dim() == 1 else ids
    if mask is None:
        mask = ids != pad_id if pad_id is not None else torch.ones_like(ids, dtype=torch.bool)
    rows = [row[m].tolist() for row, m in zip(ids.cpu(), mask.cpu())]
    for i, row in enumerate(rows):
        if not row:
            raise ValueError(f"prompt row {i} has no tokens outside the padding / attention mask")
    return [tokenizer.decode(r) for r in rows], rows


def _with_overrides(config: DecodingConfig, overrides: dict) -> DecodingConfig:
    """`config` with fields set by name (the removed `lam` reaches `DecodingConfig`, which says what replaced it)."""
    unknown = sorted(set(overrides) - set(vars(config)) - {"lam"})
    if unknown:
        raise TypeError(f"unknown decoding option(s) {unknown}; DecodingConfig fields: {sorted(vars(config))}")
    return DecodingConfig(**{**vars(config), **overrides})


def contrastive_generate(
    expert: PreTrainedModel,
    amateur: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts,
    config: DecodingConfig | None = None,
    index_offset: int = 0,
    progress: bool = True,
    apply_chat_template: bool = False,
    templated=UNSET,
    **overrides,
) -> Generation:
    """Contrastive decoding from `expert` (pi_r) against `amateur` (pi_ref) for each prompt, batched.

    Args:
        expert: pi_r, the post-alignment model; amateur: pi_ref, the pre-alignment model (same vocabulary, device).
        tokenizer: their tokenizer.
        prompts: what to continue. A plain string is raw text (tokenised as given, as `generate` and TRL take it);
            a conversation (list of {"role", "content"} messages, system prompt and earlier turns included) goes
            through the chat template; either is one prompt, a list of them is many; a `BatchEncoding` (or dict with
            `input_ids`, `attention_mask`) or a token tensor is used as tokenised (1-D: one prompt).
        apply_chat_template: make each plain string one user turn of a conversation (needs a chat template).
            `templated` is its deprecated predecessor.
        config: a `DecodingConfig` (default: `generate`'s defaults, head threshold 0.1); `overrides` set its fields
            by name (an unknown name is an error): alpha in [0, 1] (1 = plain sampling inside the head),
            plausibility_threshold in (0, 1] (the head, the paper's lambda 0.1), min_p (transformers' MinP), do_sample, temperature > 0, top_k, top_p in (0, 1],
            repetition_penalty > 0, max_new_tokens >= 1, num_return_sequences, seed >= 0, batch_size >= 1,
            ignore_eos, release_compatible, cache, token_choice, compile. `DecodingConfig.authors()` is the paper's.
        index_offset: the index of `prompts[0]` in the full prompt set: it seeds each prompt's randomness, so
            shards decoded apart merge into the output of one run.
        progress: a progress bar over batches.

    Returns a `Generation` (texts, token ids, per-token log-ratios; `.implicit_reward(beta)`), `num_return_sequences`
    rows per prompt. The same decoding is available inside `model.generate` as `congkit.contrastive_decoding`.
    """
    config = _with_overrides(config or DecodingConfig(), overrides)
    apply_chat_template = chat_template_choice(apply_chat_template, templated)
    return _generate(expert, amateur, tokenizer, prompts, config, index_offset, progress, apply_chat_template)


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts,
    config: DecodingConfig | None = None,
    index_offset: int = 0,
    progress: bool = True,
    apply_chat_template: bool = False,
    templated=UNSET,
    **overrides,
) -> Generation:
    """Ordinary sampling (or greedy decoding) from one model, through the same loop as `contrastive_generate`.

    Args: as `contrastive_generate`, without the amateur. No head by default (`plausibility_threshold=None`); with
    it set the head filters pi_r before temperature, so `sample(plausibility_threshold=l)` equals
    `contrastive_generate(alpha=1, plausibility_threshold=l)` token for token.
    """
    config = _with_overrides(config or DecodingConfig(plausibility_threshold=None), overrides)
    apply_chat_template = chat_template_choice(apply_chat_template, templated)
    return _generate(model, None, tokenizer, prompts, config, index_offset, progress, apply_chat_template)
