"""Contrastive decoding as a stock `generate` strategy: `model.generate(..., custom_generate=contrastive_decoding)`.

    out = pi_r.generate(**tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left"),
                        custom_generate=congkit.contrastive_decoding, amateur_model=pi_ref, alpha=0.5, min_p=0.1,
                        do_sample=True, temperature=0.8, top_p=0.95, repetition_penalty=1.2, max_new_tokens=64,
                        return_dict_in_generate=True, output_scores=True)
    out.sequences, out.scores, out.implicit_rewards      # per-token log pi_r - log pi_ref of each chosen token

transformers prepares everything as for its own sampling (GenerationConfig and its validation, left-padded batches,
`num_return_sequences`, the expert's cache, logits processors and stopping criteria); this loop then steps the amateur
in lock-step with its own cache and, at each step,

    head   = {v : pi_r(v) >= min_p * max_w pi_r(w)}                 on pi_r's own distribution, before the contrast
    F(v)   = log pi_r(v) - (1 - alpha) log pi_ref(v)   (v in head),  -inf elsewhere          (`contrastive_scores`)
    scores = logits_processor(input_ids, F)            transformers' repetition penalty, temperature, top-k, top-p, ...

then picks argmax(scores) or samples softmax(scores). So `min_p` here *names the head*: it is taken out of
transformers' hands (its MinP warper would act on contrasted scores), whether given as a keyword or in the
GenerationConfig.

Randomness: with `seed=None` sampling uses torch's global RNG, as `generate` does. With `seed=s`, row i of the
(expanded) batch draws its uniforms from a generator seeded by (s, i) alone, as `contrastive_generate` does, so a
row's sample does not depend on the other rows.

Differences from `contrastive_generate` (the batched engine congkit's pipeline uses): transformers' repetition
penalty also penalises left-padding tokens that sit in `input_ids` (congkit's counts real tokens only), so the two
agree token for token when the penalty is 1, when no row is padded, or when the pad token never competes.

Streaming: `streamer=` works as in `generate` (the prompt first, then each token, `end()` once). transformers (5.24)
puts the prompt into the streamer and then does not pass it on to a *callable* strategy, so this loop takes it from
the running `generate` call (`_streamer_of_generate`). `cd_streamer=` is a streamer for this loop alone (it receives
the prompt here). Stop strings need the tokenizer, which `generate` does not pass to a callable either: give them as
`stopping_criteria=[StopStringCriteria(tokenizer, [...])]`, or use the folder form,
`generate(custom_generate=congkit.CUSTOM_GENERATE_DIR, trust_remote_code=True, tokenizer=..., stop_strings=[...])`.

Refused with a one-line error (not silently changed): beam search (`num_beams > 1`), `output_attentions` /
`output_hidden_states`, `inputs_embeds`, encoder-decoder models, an amateur that is not a loaded model, and
`synced_gpus`. Non-finite scores from either model stop decoding with an error naming the model and the step.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, LogitsProcessorList, MinPLogitsWarper, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput

from .decoding import (
    AMATEUR,
    EXPERT,
    Stepper,
    ThreadPlan,
    chosen_log_ratio,
    contrastive_scores,
    plausibility_head,
    require_finite,
    row_uniforms,
    sample_from_scores,
    step_models,
)
from .inputs import check_causal_lm, check_int, check_number, check_same_device
from .rewards import check_same_vocab
from .tokens import positions

CUSTOM_GENERATE_DIR = str(Path(__file__).with_name("hub"))  # holds custom_generate/generate.py


@dataclass
class ContrastiveDecoderOnlyOutput(GenerateDecoderOnlyOutput):
    """`generate`'s output plus `implicit_rewards`: (batch, new tokens) beta * (log pi_r(y_t) - log pi_ref(y_t)) of each
    chosen token, 0 after a row finished (its EOS token included, as TRL counts it). Sum over a row = the sequence
    implicit reward that `congkit.implicit_reward` gives the same response."""

    implicit_rewards: torch.FloatTensor | None = None


@torch.no_grad()
def contrastive_decoding(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    streamer=None,
    amateur_model=None,
    alpha: float = 0.5,
    min_p: float | None = None,
    seed: int | None = None,
    beta: float = 0.1,
    cd_streamer=None,
    release_compatible: bool = False,
    **model_kwargs,
):
    """Contrastive decoding between `model` (pi_r, the expert) and `amateur_model` (pi_ref), called by `generate`.

    Args:
        amateur_model: the pre-alignment model pi_ref; same vocabulary and device as `model`. Required.
        alpha: CD weight in [0, 1]: F = log pi_r - (1 - alpha) log pi_ref; 1 = plain sampling from pi_r inside the
            head, 0 = the token-level implicit reward alone.
        min_p: plausibility threshold lambda in (0, 1] of the head {v : pi_r(v) >= min_p max pi_r}; default 0.1 (the
            paper's), or the GenerationConfig's `min_p` if it sets one.
        seed: None = torch's global RNG (as `generate`); an int = per-row generators seeded by (seed, row).
        beta: the scale of `implicit_rewards` (TRL's DPO beta, default 0.1); decoding does not depend on it.
        cd_streamer: a streamer (`put`/`end`) for this loop alone; `streamer=` given to `generate` also works.
        release_compatible: the authors' release renormalisation of the amateur (see `DecodingConfig`).

    Everything else comes from `generate` (GenerationConfig fields: do_sample, temperature, top_k, top_p,
    repetition_penalty, max_new_tokens / max_length, eos_token_id, num_return_sequences, return_dict_in_generate,
    output_scores, output_logits). Returns what `generate` returns: the sequences (prompt + new tokens), or with
    `return_dict_in_generate` a `ContrastiveDecoderOnlyOutput` with `scores` (processed contrasted scores per
    step), `logits` (pi_r's raw logits per step), the expert's `cache` and `implicit_rewards`.
    """
    if amateur_model is None:
        raise ValueError("contrastive_decoding needs amateur_model=<the pre-alignment model pi_ref>")
    if synced_gpus:
        raise NotImplementedError("contrastive_decoding does not support synced_gpus (DeepSpeed ZeRO-3 / FSDP)")
    check_causal_lm(model, "model (post-alignment)")
    check_causal_lm(amateur_model, "amateur_model (pre-alignment)")
    check_same_vocab(model, amateur_model, ("model (post-alignment)", "amateur_model (pre-alignment)"))
    check_same_device(model, amateur_model, ("model (post-alignment)", "amateur_model (pre-alignment)"))
    refuse_unsupported(generation_config, model_kwargs)
    check_number("alpha", alpha, 0.0, 1.0)
    check_number("beta", beta, 0.0, low_open=True)
    name = "min_p (plausibility threshold lambda)"
    if min_p is None:  # the head's threshold: the GenerationConfig's min_p, taken away from its MinP warper
        if generation_config.min_p is not None:
            min_p = generation_config.min_p
            name += " from the GenerationConfig (the checkpoint's generation_config.json, or the one passed)"
        else:
            min_p = 0.1
    check_number(name, min_p, 0.0, 1.0, low_open=True)
    logits_processor = LogitsProcessorList(p for p in logits_processor if not isinstance(p, MinPLogitsWarper))
    if seed is not None:
        check_int("seed", seed, 0)
    streamer = streamer if streamer is not None else _streamer_of_generate()
    if cd_streamer is not None and cd_streamer is not streamer:
        cd_streamer.put(input_ids.cpu())  # `generate` put the prompt into its own streamer only
    streamers = [s for s in (streamer, cd_streamer) if s is not None]
    streamers = [s for i, s in enumerate(streamers) if s not in streamers[:i]]

    batch, prompt_length = input_ids.shape
    device = input_ids.device
    mask = model_kwargs.get("attention_mask")
    mask = torch.ones_like(input_ids) if mask is None else mask
    pos = positions(mask)
    expert, amateur = Stepper(model, model_kwargs.get("cache")), Stepper(amateur_model)
    (expert_logp, expert_logits), (amateur_logp, _) = step_models([expert, amateur], "first", input_ids, mask, pos,
                                                             keep_logits=True)  # fmt: skip

    pad = generation_config._pad_token_tensor
    has_eos = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    max_new = generation_config.max_length - prompt_length
    uniforms = (row_uniforms(seed, range(batch), max_new).to(device)
                if generation_config.do_sample and seed is not None else None)  # fmt: skip
    unfinished = torch.ones(batch, dtype=torch.long, device=device)
    scores, raw_logits, rewards = [], [], []
    pos = pos[:, -1:]
    plan = ThreadPlan()
    for t in range(max_new):
        top = expert_logp.amax(dim=-1, keepdim=True)
        require_finite(top, EXPERT, t)
        head = plausibility_head(expert_logp, min_p, top)
        contrast = contrastive_scores(expert_logp, amateur_logp, alpha, min_p, release_compatible, head)
        processed = logits_processor(input_ids, contrast)
        if generation_config.do_sample:
            tok = sample_from_scores(processed, uniforms[:, t] if uniforms is not None else None)
        else:
            tok = processed.argmax(dim=-1)
        reward = chosen_log_ratio(expert_logp, amateur_logp, tok)
        require_finite(reward.masked_fill(unfinished == 0, 0.0), AMATEUR, t)
        if has_eos:
            tok = tok * unfinished + pad * (1 - unfinished)
        rewards.append(beta * reward * unfinished)
        scores.append(processed)
        raw_logits.append(expert_logits)
        input_ids = torch.cat([input_ids, tok[:, None]], dim=-1)
        for each in streamers:
            each.put(tok.cpu())
        unfinished = unfinished & ~stopping_criteria(input_ids, tuple(scores))
        if unfinished.max() == 0:
            break
        mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=1)
        pos = pos + 1
        (expert_logp, expert_logits), (amateur_logp, _) = step_models([expert, amateur], "next", tok, mask, pos,
                                                                 keep_logits=True, plan=plan)  # fmt: skip
    for each in streamers:
        each.end()
    if not generation_config.return_dict_in_generate:
        return input_ids
    return ContrastiveDecoderOnlyOutput(
        sequences=input_ids,
        scores=tuple(scores) if generation_config.output_scores else None,
        logits=tuple(raw_logits) if generation_config.output_logits else None,
        cache=expert.past if generation_config.use_cache else None,
        implicit_rewards=torch.stack(rewards, dim=1),
    )


def refuse_unsupported(generation_config: GenerationConfig, model_kwargs: dict) -> None:
    """One-line errors for what this strategy does not do, instead of silently doing something else."""
    if generation_config.num_beams is not None and generation_config.num_beams > 1:
        raise ValueError(f"contrastive_decoding does not do beam search: num_beams={generation_config.num_beams}; "
                         "use num_beams=1 (num_return_sequences gives several samples per prompt)")  # fmt: skip
    for name in ("output_attentions", "output_hidden_states"):
        if getattr(generation_config, name, False):
            raise ValueError(f"contrastive_decoding does not return {name.removeprefix('output_')}: {name}=True")
    for name in ("temperature", "top_p", "repetition_penalty", "typical_p", "epsilon_cutoff", "eta_cutoff"):
        value = getattr(generation_config, name, None)  # NaN passes transformers' own range checks
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if model_kwargs.get("inputs_embeds") is not None:
        raise ValueError("contrastive_decoding needs token ids (the amateur is stepped on the same tokens); "
                         "inputs_embeds is not supported")  # fmt: skip


def _streamer_of_generate():
    """The `streamer` of the `generate` call that runs this strategy, or None.

    Why by reading the caller's frame: transformers (5.24) puts the prompt into `streamer` and then calls a callable
    `custom_generate` without it (only the callable's own extra parameters are passed on), so without this a
    `TextIteratorStreamer` never receives `end()` and its consumer waits forever. Nothing in transformers is
    changed; if the frame is not `generate`'s (a direct call), there is no streamer.
    """
    frame = sys._getframe(1)
    for _ in range(6):  # this function <- contrastive_decoding <- torch's no_grad wrapper <- generate
        frame = frame.f_back
        if frame is None:
            return None
        if frame.f_code.co_name == "generate" and frame.f_globals.get("__name__") == "transformers.generation.utils":
            return frame.f_locals.get("streamer")
    return None


def generate(model, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None, streamer=None,
             **kwargs):  # fmt: skip
    """The folder form's entry point (`custom_generate/generate.py` re-exports it): `generate`'s own arguments, as
    transformers passes them to a folder's function, with `tokenizer` / `stop_strings` turned into a stopping
    criterion and `streamer` forwarded, then `model.generate(custom_generate=contrastive_decoding, ...)`."""
    from transformers import GenerationMixin, StopStringCriteria

    tokenizer = kwargs.pop("tokenizer", None)
    stop_strings = kwargs.pop("stop_strings", None) or getattr(generation_config, "stop_strings", None)
    if stop_strings:
        if tokenizer is None:
            raise ValueError("stop_strings need the model's tokenizer: pass tokenizer=... to generate")
        if generation_config is not None:
            generation_config = generation_config.__class__(**{**generation_config.to_dict(), "stop_strings": None})
        stopping_criteria = StoppingCriteriaList([*(stopping_criteria or []), StopStringCriteria(tokenizer, stop_strings)])
    for unused in ("assistant_model", "negative_prompt_ids", "negative_prompt_attention_mask", "prefix_allowed_tokens_fn",
                   "synced_gpus"):  # fmt: skip
        if kwargs.get(unused) is not None:
            raise ValueError(f"contrastive_decoding does not support {unused}")
        kwargs.pop(unused, None)
    return GenerationMixin.generate(model, inputs, generation_config, logits_processor, stopping_criteria,
                                    streamer=streamer, custom_generate=contrastive_decoding, **kwargs)  # fmt: skip
