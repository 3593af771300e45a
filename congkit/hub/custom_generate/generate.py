"""Contrastive decoding as a stock `generate` strategy, in transformers' `custom_generate` folder format:

    out = pi_r.generate(**tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left"),
                        custom_generate=contrastive_decoding,          # or this folder: custom_generate=<path or
                        amateur_model=pi_ref, alpha=0.5,               #   Hub repo>, trust_remote_code=True
                        plausibility_threshold=0.1, do_sample=True, temperature=0.8, top_p=0.95,
                        repetition_penalty=1.2, max_new_tokens=64, return_dict_in_generate=True, output_scores=True)
    out.sequences, out.scores, out.implicit_rewards   # per-token beta (log pi_r - log pi_ref) of each chosen token
    out.cache, out.amateur_cache                      # both models' caches: pass them back to continue a conversation

transformers prepares everything as for its own sampling (GenerationConfig and its validation, left-padded batches,
`num_return_sequences`, the expert's cache, logits processors and stopping criteria); this loop steps the amateur in
lock-step with its own cache and takes each token by `step.cd_step`, the one CD step congkit's batched engine runs:

    head   = {v : pi_r(v) >= plausibility_threshold * max_w pi_r(w)}   on pi_r itself, before temperature
    F(v)   = log pi_r(v) - (1 - alpha) log pi_ref(v)   (v in head),  -inf elsewhere
    F      = repetition penalty on the row's tokens (padding never counts), then the caller's logits processors:
             temperature, top-k, top-p, min-p (transformers' MinP, after temperature, as in stock `generate`), ...
    token  = argmax, or a sample of softmax(scores)

Names. `plausibility_threshold` is the paper's lambda (0.1): the head taken on pi_r before any processor. `min_p`
keeps transformers' meaning: the MinP warper, on the contrasted scores after temperature (a checkpoint's `min_p` is
never taken for the head). `alpha` weighs likelihood: F = alpha log pi_r + (1 - alpha) log(pi_r / pi_ref), so 1 is
plain sampling from pi_r inside the head and 0 samples by the token-level implicit reward. In Li et al.'s CD (2023),
`alpha` names the plausibility threshold (here `plausibility_threshold`) and the score is log p_exp - log p_ama
(here alpha = 0); O'Brien & Lewis's (1 + b) s_exp - b s_ama is alpha = 1 / (1 + b). `beta` is DPO's temperature: it
only scales `implicit_rewards` (beta * log(pi_r / pi_ref)), never the decoding.

Settings that persist. `alpha`, `plausibility_threshold`, `beta`, `seed` and `release_compatible` are read, in this
order, from the call's keyword, the GenerationConfig (`GenerationConfig(alpha=0.3)`, or a checkpoint's
`generation_config.json`: `model.generation_config = cd_generation_config(model.generation_config, alpha=0.3)`, then
`save_pretrained`), then the defaults (0.5, 0.1, 0.1, None, False).

Caches. A prefilled `cache=` (transformers' multi-turn reuse) continues exactly as a fresh run of the whole
conversation: only the tokens the cache does not hold are fed; `amateur_cache=` does the same for the amateur (without
it, the amateur reads the whole conversation afresh, which is exact too). Both caches come back in the output.

Randomness: `seed=None` samples with torch's global RNG, as `generate` does; `seed=s` gives row i of the (expanded)
batch its own generator seeded by (s, i), as congkit's `contrastive_generate` does, so a row's sample does not depend
on the other rows.

Streaming: `streamer=` works as in `generate`; transformers (5.24) puts the prompt into the streamer and then does not
pass it on to a *callable* strategy, so this loop takes it from the running `generate` call (`_generate_call`).
`cd_streamer=` is a streamer for this loop alone. Stop strings need the tokenizer, which `generate` does not pass to a
callable: give them as `stopping_criteria=[StopStringCriteria(tokenizer, [...])]`, or use this folder with
`tokenizer=..., stop_strings=[...]`.

Refused with a one-line error, never silently ignored or changed: beam search and group beam search, assisted
decoding (`assistant_model`, `prompt_lookup_num_tokens`), `synced_gpus`, classifier-free guidance (`guidance_scale`),
contrastive search (`penalty_alpha`), DoLa (`dola_layers`), constrained beams (`force_words_ids`, `constraints`),
`output_attentions` / `output_hidden_states`, `inputs_embeds`, encoder-decoder models, an amateur that is not a loaded
model or has another vocabulary or device. Non-finite scores from either model stop decoding with an error naming
the model and the step.

This folder imports only torch, numpy and transformers (and `step.py` beside it), so it runs from the Hub as it is.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import partial

import torch
from transformers import GenerationConfig, LogitsProcessorList, RepetitionPenaltyLogitsProcessor, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput

from .step import (
    AMATEUR,
    EXPERT,
    LazyAmateur,
    cd_step,
    check_int,
    check_number,
    check_pair,
    chosen_log_ratio,
    forced_rows,
    positions,
    require_finite,
    row_uniforms,
    seen_tokens,
)

CD_DEFAULTS = {"alpha": 0.5, "plausibility_threshold": 0.1, "beta": 0.1, "seed": None, "release_compatible": False}


@dataclass
class ContrastiveDecoderOnlyOutput(GenerateDecoderOnlyOutput):
    """`generate`'s output plus `implicit_rewards`: (batch, new tokens) beta * (log pi_r(y_t) - log pi_ref(y_t)) of each
    chosen token, 0 after a row finished (its EOS token included, as TRL counts it), and `amateur_cache`, the
    amateur's cache (pass it back as `amateur_cache=` with `cache=out.cache` to continue the conversation)."""

    implicit_rewards: torch.FloatTensor | None = None
    amateur_cache: object | None = None


def cd_settings(generation_config: GenerationConfig, **given) -> dict:
    """CD's settings: each keyword given (not None), else the GenerationConfig's attribute of that name, else
    `CD_DEFAULTS`; checked, with the source named in the error."""
    out = {}
    for name, default in CD_DEFAULTS.items():
        value, source = given.get(name), name
        if value is None and getattr(generation_config, name, None) is not None:
            value, source = getattr(generation_config, name), f"{name} (from the GenerationConfig)"
        out[name] = default if value is None else value
        if value is None:
            continue
        if name == "alpha":
            check_number(source, value, 0.0, 1.0)
        elif name == "plausibility_threshold":
            check_number(source + " (the head's lambda)", value, 0.0, 1.0, low_open=True)
        elif name == "beta":
            check_number(source, value, 0.0, low_open=True)
        elif name == "seed":
            check_int(source, value, 0)
        elif not isinstance(value, bool):
            raise TypeError(f"{source} must be a bool, got {value!r}")
    return out


def cd_generation_config(base: GenerationConfig | None = None, **settings) -> GenerationConfig:
    """A GenerationConfig that carries CD's settings (`CD_DEFAULTS`' names) into `save_pretrained`:

        model.generation_config = cd_generation_config(model.generation_config, alpha=0.3)
        model.save_pretrained(path)     # generation_config.json holds alpha; from_pretrained reads it back

    Why a new config: transformers (5.24) marks a model's default GenerationConfig as made from the model config, and
    such a config drops attributes it does not know when it is loaded again, so setting
    `model.generation_config.alpha` directly would be saved but lost on loading. `base`'s fields are kept."""
    unknown = sorted(set(settings) - set(CD_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown CD setting(s) {unknown}; known: {sorted(CD_DEFAULTS)}")
    fields = {k: v for k, v in (base.to_dict() if base is not None else {}).items()
              if not k.startswith("_") and k != "transformers_version"}  # fmt: skip
    config = GenerationConfig(**{**fields, **settings})
    cd_settings(config)  # checked now, not at the first generate
    return config


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
    alpha: float | None = None,
    plausibility_threshold: float | None = None,
    seed: int | None = None,
    beta: float | None = None,
    release_compatible: bool | None = None,
    amateur_cache=None,
    cd_streamer=None,
    lazy_amateur: bool | None = None,
    **model_kwargs,
):
    """Contrastive decoding between `model` (pi_r, the expert) and `amateur_model` (pi_ref), called by `generate`.

    Args:
        amateur_model: the pre-alignment model pi_ref; same vocabulary and device as `model`. Required.
        alpha: CD weight in [0, 1] (default 0.5): F = log pi_r - (1 - alpha) log pi_ref.
        plausibility_threshold: the head's lambda in (0, 1] (default 0.1): {v : pi_r(v) >= lambda max pi_r}.
        seed: None = torch's global RNG (as `generate`); an int = per-row generators seeded by (seed, row).
        beta: the scale of `implicit_rewards` (TRL's DPO beta, default 0.1); decoding does not depend on it.
        release_compatible: the authors' release renormalisation of the amateur (`step.release_amateur_logp`).
        amateur_cache: the amateur's cache from an earlier call (`out.amateur_cache`), to continue a conversation.
        cd_streamer: a streamer (`put`/`end`) for this loop alone; `streamer=` given to `generate` also works.
        lazy_amateur: defer the amateur's forward on steps whose choice is forced (every unfinished row's head holds
            one token) and read the deferred tokens in one forward when needed (`step.LazyAmateur`): the same tokens
            and implicit rewards (up to float rounding) with fewer amateur forwards. None (default): on where that is
            exact, i.e. without `output_scores` (a forced step's scores would lack the amateur) and with only
            logits processors and stopping criteria known to act within the head (`LAZY_SAFE`); False: off.
    The five CD settings may also come from the GenerationConfig (`cd_settings`). Everything else comes from
    `generate`. Returns what `generate` returns: the sequences, or with `return_dict_in_generate` a
    `ContrastiveDecoderOnlyOutput` with `scores` (processed scores per step), `logits` (pi_r's raw logits per step),
    `cache`, `amateur_cache` and `implicit_rewards`.
    """
    if amateur_model is None:
        raise ValueError("contrastive_decoding needs amateur_model=<the pre-alignment model pi_ref>")
    call = _generate_call()
    refuse_unsupported(generation_config, model_kwargs, synced_gpus or call.get("synced_gpus"),
                       call.get("assistant_model"))  # fmt: skip
    check_pair(model, amateur_model, ("model (post-alignment)", "amateur_model (pre-alignment)"))
    cd = cd_settings(generation_config, alpha=alpha, plausibility_threshold=plausibility_threshold, seed=seed, beta=beta,
                     release_compatible=release_compatible)  # fmt: skip
    penalty, logits_processor = _split_penalty(logits_processor)
    streamer = streamer if streamer is not None else call.get("streamer")
    if cd_streamer is not None and cd_streamer is not streamer:
        cd_streamer.put(input_ids.cpu())  # `generate` put the prompt into its own streamer only
    streamers = [s for s in (streamer, cd_streamer) if s is not None]
    streamers = [s for i, s in enumerate(streamers) if s not in streamers[:i]]

    batch, prompt_length = input_ids.shape
    device = input_ids.device
    mask = model_kwargs.get("attention_mask")
    mask = torch.ones_like(input_ids) if mask is None else mask
    pos = positions(mask)
    expert_cache = model_kwargs.get("cache")
    expert_logp, expert_logits, expert_cache = _prefill(model, expert_cache, input_ids, mask, pos, "cache")
    amateur_logp, _, amateur_cache = _prefill(amateur_model, amateur_cache, input_ids, mask, pos, "amateur_cache")
    seen = seen_tokens(input_ids, mask, expert_logp.shape[-1]) if penalty != 1.0 else None
    pad = generation_config._pad_token_tensor
    has_eos = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    max_new = generation_config.max_length - prompt_length
    uniforms = (row_uniforms(cd["seed"], range(batch), max_new).to(device)
                if generation_config.do_sample and cd["seed"] is not None else None)  # fmt: skip
    unfinished = torch.ones(batch, dtype=torch.long, device=device)
    scores, raw_logits, rewards = [], [], {}
    pos = pos[:, -1:]

    def record(t: int, reward: torch.Tensor, was_unfinished: torch.Tensor) -> None:
        require_finite(reward.masked_fill(was_unfinished == 0, 0.0), AMATEUR, t)
        rewards[t] = cd["beta"] * reward * was_unfinished

    lazy = LazyAmateur(amateur_logp, record) if _lazy(lazy_amateur, generation_config, logits_processor,
                                                      stopping_criteria) else None  # fmt: skip

    def read(chunk: torch.Tensor) -> torch.Tensor:  # the amateur reads its deferred tokens, up to the last chosen
        nonlocal amateur_cache
        back = torch.arange(chunk.shape[1] - 1, -1, -1, device=device)
        out = amateur_model(input_ids=chunk, attention_mask=mask, position_ids=pos - back, cache=amateur_cache,
                            use_cache=True)  # fmt: skip
        amateur_cache = out.cache
        return torch.log_softmax(out.logits.float(), dim=-1)

    for t in range(max_new):
        top = expert_logp.amax(dim=-1, keepdim=True)
        require_finite(top, EXPERT, t)
        if lazy is not None:  # pi_ref read only when some unfinished row's choice is not forced
            forced = forced_rows(expert_logp, cd["plausibility_threshold"], top) | (unfinished == 0)
            amateur_logp = None if bool(forced.all()) else lazy.current(read)
        step = cd_step(expert_logp, amateur_logp, alpha=cd["alpha"], plausibility_threshold=cd["plausibility_threshold"],
                       seen=seen, repetition_penalty=penalty, process=partial(logits_processor, input_ids),
                       do_sample=generation_config.do_sample, uniforms=uniforms[:, t] if uniforms is not None else None,
                       release_compatible=cd["release_compatible"], top=top)  # fmt: skip
        tok = step.tokens
        if lazy is not None:
            lazy.chosen(t, tok, expert_logp.gather(-1, tok[:, None]).squeeze(-1), unfinished)
        else:
            record(t, chosen_log_ratio(expert_logp, amateur_logp, tok), unfinished)
        if has_eos:
            tok = tok * unfinished + pad * (1 - unfinished)
        scores.append(step.scores)
        raw_logits.append(expert_logits)
        input_ids = torch.cat([input_ids, tok[:, None]], dim=-1)
        if seen is not None:
            seen.scatter_(1, tok[:, None], True)
        for each in streamers:
            each.put(tok.cpu())
        unfinished = unfinished & ~stopping_criteria(input_ids, tuple(scores))
        if unfinished.max() == 0:
            break
        mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=1)
        pos = pos + 1
        expert_logp, expert_logits, expert_cache = _forward(model, expert_cache, tok[:, None], mask, pos)
        if lazy is None:
            amateur_logp, _, amateur_cache = _forward(amateur_model, amateur_cache, tok[:, None], mask, pos)
    if lazy is not None:
        lazy.resolve(read)
    for each in streamers:
        each.end()
    if not generation_config.return_dict_in_generate:
        return input_ids
    keep = generation_config.use_cache
    return ContrastiveDecoderOnlyOutput(
        sequences=input_ids,
        scores=tuple(scores) if generation_config.output_scores else None,
        logits=tuple(raw_logits) if generation_config.output_logits else None,
        cache=expert_cache if keep else None,
        amateur_cache=amateur_cache if keep else None,
        implicit_rewards=torch.stack([rewards[t] for t in range(len(rewards))], dim=1),
    )


# what may run with the lazy amateur: processors that act within the head (a single finite score stays the choice,
# whatever its value) and stopping criteria that do not read the scores
LAZY_SAFE = ("TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper",
             "TypicalLogitsWarper", "EpsilonLogitsWarper", "EtaLogitsWarper", "MinLengthLogitsProcessor",
             "MinNewTokensLengthLogitsProcessor", "NoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor",
             "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor", "MaxLengthCriteria",
             "EosTokenCriteria", "StopStringCriteria", "MaxTimeCriteria")  # fmt: skip


def _lazy(asked: bool | None, generation_config: GenerationConfig, processors, criteria) -> bool:
    """Whether this call defers the amateur (`lazy_amateur`): None = where exact; True where it is not is an error."""
    unsafe = [type(x).__name__ for x in [*processors, *criteria] if type(x).__name__ not in LAZY_SAFE]
    if generation_config.output_scores:
        unsafe.append("output_scores=True")
    if asked is None:
        return not unsafe
    if not isinstance(asked, bool):
        raise TypeError(f"lazy_amateur must be a bool or None, got {asked!r}")
    if asked and unsafe:
        raise ValueError(f"lazy_amateur=True is not exact with {unsafe}: a forced step's scores would lack the "
                         "amateur; leave lazy_amateur unset (on where exact) or False")  # fmt: skip
    return asked


def _forward(model, cache, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor):
    """(next-token log-probabilities, raw logits, the cache) of one forward over `ids` on top of `cache`."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1].float()
    return torch.log_softmax(logits, dim=-1), logits, out.cache


def _prefill(model, cache, input_ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, name: str):
    """`_forward` over the prompt tokens that `cache` does not hold yet (all of them for an empty or no cache)."""
    held = cache.get_seq_length() if cache is not None else 0
    if held >= input_ids.shape[1]:
        raise ValueError(f"{name} already holds {held} tokens but the inputs have {input_ids.shape[1]}: pass the whole "
                         "conversation (the cached tokens and at least one new one) as input_ids")  # fmt: skip
    return _forward(model, cache, input_ids[:, held:], mask, pos[:, held:])


def _split_penalty(processors: LogitsProcessorList) -> tuple[float, LogitsProcessorList]:
    """The repetition penalty taken out of `processors` (the CD step applies it to the contrasted scores, on the
    tokens outside the padding, as transformers' processor does with `prompt_ignore_length`) and the rest."""
    found = [p for p in processors if isinstance(p, RepetitionPenaltyLogitsProcessor)]
    if len(found) > 1 or (found and isinstance(found[0].prompt_ignore_length, int)):
        raise ValueError("contrastive_decoding applies one repetition penalty, over every real token of the row; "
                         "pass repetition_penalty=... instead of a RepetitionPenaltyLogitsProcessor of your own")  # fmt: skip
    return (found[0].penalty if found else 1.0), LogitsProcessorList(p for p in processors if p not in found)


# GenerationConfig fields this strategy cannot honour, each with the value that means "off"
UNSUPPORTED = {"num_beams": 1, "num_beam_groups": 1, "diversity_penalty": 0.0, "penalty_alpha": None,
               "dola_layers": None, "guidance_scale": 1.0, "prompt_lookup_num_tokens": None, "force_words_ids": None,
               "constraints": None, "output_attentions": False, "output_hidden_states": False}  # fmt: skip


def refuse_unsupported(generation_config: GenerationConfig, model_kwargs: dict, synced_gpus=False,
                       assistant_model=None) -> None:  # fmt: skip
    """One-line errors for what this strategy does not do, instead of silently doing something else."""
    if synced_gpus:
        raise ValueError("contrastive_decoding does not support synced_gpus (DeepSpeed ZeRO-3 / FSDP across GPUs)")
    if assistant_model is not None:
        raise ValueError("contrastive_decoding does not do assisted decoding: remove assistant_model")
    if generation_config.num_beams is not None and generation_config.num_beams > 1:
        raise ValueError(f"contrastive_decoding does not do beam search: num_beams={generation_config.num_beams}; "
                         "use num_beams=1 (num_return_sequences gives several samples per prompt)")  # fmt: skip
    for name, off in UNSUPPORTED.items():
        value = getattr(generation_config, name, None)
        if value is not None and value != off and not (name == "guidance_scale" and value == 1):
            raise ValueError(f"contrastive_decoding does not support {name}={value!r} "
                             f"({'leave it unset' if off is None else f'use {off!r}'})")  # fmt: skip
    for name in ("temperature", "top_p", "repetition_penalty", "typical_p", "epsilon_cutoff", "eta_cutoff", "min_p"):
        value = getattr(generation_config, name, None)  # NaN passes transformers' own range checks
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
    if model_kwargs.get("inputs_embeds") is not None:
        raise ValueError("contrastive_decoding needs token ids (the amateur is stepped on the same tokens); "
                         "inputs_embeds is not supported")  # fmt: skip


def _generate_call() -> dict:
    """The arguments of the `generate` call that runs this strategy (its frame's locals), or {} for a direct call.

    Why by reading the caller's frame: transformers (5.24) takes `streamer`, `synced_gpus` and `assistant_model` out
    of the arguments it passes to a callable `custom_generate` (only the callable's own extra parameters reach it), so
    a `TextIteratorStreamer` would never receive `end()` and the other two would be ignored without a word. Nothing in
    transformers is changed; if no `generate` frame is found, there is nothing to read.
    """
    frame = sys._getframe(1)
    for _ in range(6):  # this function <- contrastive_decoding <- torch's no_grad wrapper <- generate
        frame = frame.f_back
        if frame is None:
            return {}
        if frame.f_code.co_name == "generate" and frame.f_globals.get("__name__") == "transformers.generation.utils":
            return frame.f_locals
    return {}


def generate(model, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None, streamer=None,
             **kwargs):  # fmt: skip
    """The folder form's entry point: `generate`'s own arguments, as transformers passes them to a folder's function,
    with `tokenizer` / `stop_strings` turned into a stopping criterion, then
    `model.generate(custom_generate=contrastive_decoding, ...)`. What the strategy cannot honour is refused."""
    from transformers import GenerationMixin, StopStringCriteria

    tokenizer = kwargs.pop("tokenizer", None)
    stop_strings = kwargs.pop("stop_strings", None) or getattr(generation_config, "stop_strings", None)
    if stop_strings:
        if tokenizer is None:
            raise ValueError("stop_strings need the model's tokenizer: pass tokenizer=... to generate")
        if generation_config is not None:
            generation_config = generation_config.__class__(**{**generation_config.to_dict(), "stop_strings": None})
        stopping_criteria = StoppingCriteriaList([*(stopping_criteria or []), StopStringCriteria(tokenizer, stop_strings)])
    for unused in ("assistant_model", "negative_prompt_ids", "negative_prompt_attention_mask", "synced_gpus"):
        if kwargs.get(unused):
            raise ValueError(f"contrastive_decoding does not support {unused}")
        kwargs.pop(unused, None)
    return GenerationMixin.generate(model, inputs, generation_config, logits_processor, stopping_criteria,
                                    streamer=streamer, custom_generate=contrastive_decoding, **kwargs)  # fmt: skip
