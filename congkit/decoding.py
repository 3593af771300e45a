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
prompt's sample does not depend on the batch size, on its neighbours or on how prompts are sharded across processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import InitVar, dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import (
    Cache,
    DynamicLayer,
    LogitsProcessorList,
    MinPLogitsWarper,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StaticCache,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.masking_utils import create_masks_for_generate

from .hub.custom_generate.step import (  # the one CD step, shared with the `generate` strategy
    AMATEUR,
    EXPERT,
    apply_repetition_penalty,
    cd_step,
    check_pair,
    chosen_log_ratio,
    contrastive_scores,
    plausibility_head,
    require_finite,
    row_uniforms,
    seen_tokens,
)
from .inputs import as_prompts, check_causal_lm, check_int, check_number, check_token_ids, model_device
from .models import n_parameters
from .rewards import ImplicitReward, warn_unless_texts_reencode
from .tokens import UNSET, chat_template_choice, encode_prompt, pad, pad_token_id, positions

__all__ = ["DecodingConfig", "Generation", "apply_repetition_penalty", "cd_step", "contrastive_generate",
           "contrastive_scores", "plausibility_head", "prompt_ids", "sample", "warpers"]  # fmt: skip


@dataclass
class DecodingConfig:
    """Settings of one decoding run, named and defaulted as `generate`'s (greedy, temperature 1, top-k 50, top-p 1,
    no repetition penalty, one sequence per prompt); `plausibility_threshold` is CD's head (the paper's lambda, 0.1).
    `DecodingConfig.authors()` gives the ConG release's sampling (T 0.8, top-p 0.95, penalty 1.2, no top-k).

    Args:
        alpha: CD weight in [0, 1]: F = log pi_r - (1 - alpha) log pi_ref; 1 = plain sampling from pi_r in the head.
        plausibility_threshold: the head's lambda in (0, 1]: {v : pi_r(v) >= lambda max pi_r}, taken on pi_r's own
            distribution before the contrast and before temperature (the paper's definition); None = no head (plain
            sampling only). Formerly `min_p` (and before that `lam`).
        do_sample: sample (inverse CDF at per-prompt seeded uniforms) or take the argmax.
        temperature: > 0; top_k: keep the k best scores (None or 0: off); top_p: in (0, 1];
        min_p: transformers' MinP warper in (0, 1] or None (off): after temperature, as in `generate`;
        repetition_penalty: > 0 (1 = none). All act on the contrasted scores, in `generate`'s order (penalty,
            temperature, top-k, top-p, min-p), and only when sampling (as `generate`'s warpers).
        max_new_tokens: >= 1; num_return_sequences: samples per prompt, >= 1 (returned prompt by prompt, as
            `generate`); seed: >= 0; batch_size: rows per forward batch, >= 1.
        ignore_eos: always generate max_new_tokens (benchmarks).
        cache: "static" (`PreallocatedLayer`s, allocated once per batch), "dynamic" (transformers' DynamicCache,
            grown by concatenation) or "auto" (default: static on a CPU, where it measured faster, dynamic on a GPU,
            where it measured slower at batch 1). Decoded tokens are the same.
        token_choice: where the steps after the head run: "head" (the head's tokens gathered, in id order),
            "vocabulary" (the whole vocabulary, off-head scores -inf) or "auto" (head on a CPU, vocabulary on a GPU,
            where the head's size would cost a host sync a step). Both apply the head and choose the same tokens
            (tested on a CPU, forced either way).
        release_compatible: the authors' release renormalisation of the amateur (below).
        compile: run each decoding step through `torch.compile` (transformers' `StaticCache`, the step's attention
            mask built outside the compiled forward, as `generate` does, and the model's `get_compiled_call`: CUDA
            graphs on a GPU). The first batch compiles (about 27 s for a pair of 4M-parameter models on this CPU, 15 s
            more when the batch shape first changes; CD then ran 1.2-1.4x faster at batch 1-4): for long runs, and
            for the launch-bound batch 1 on a GPU.
            Compiled kernels may round differently from eager ones in the last bits.
    """

    alpha: float = 0.5
    plausibility_threshold: float | None = 0.1  # the head (lambda); None (plain sampling only) disables it
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    # transformers' MinP warper (after temperature); off by default, and then not in cache keys
    min_p: float | None = field(default=None, metadata={"cache": "unless default"})
    max_new_tokens: int = 128
    num_return_sequences: int = 1
    seed: int = 0
    batch_size: int = 32
    ignore_eos: bool = False  # always generate max_new_tokens (benchmarks)
    # KV cache per batch: "static" (allocated once), "dynamic" (grown per step) or "auto" (static on a CPU, dynamic on
    # a GPU, where static measured slower at batch 1); the same tokens, so not in cache keys
    cache: str = field(default="auto", metadata={"cache": False})
    # the head's tokens gathered or the whole vocabulary: the same tokens, so not in cache keys
    token_choice: str = field(default="auto", metadata={"cache": False})
    # The authors' release renormalises the amateur a second time (off-head entries set to -1e-3, log_softmax again),
    # which shifts every head score by (1 - alpha) log Z'. That changes nothing without a repetition penalty; with one,
    # the penalty acts on the shifted scores. Off by default: the paper's formula is the definition, and the shift
    # depends on the vocabulary size, not on the models. Turn it on to reproduce the release token for token.
    release_compatible: bool = False
    # compiled kernels may round differently, so a compiled run has its own cache keys (uncompiled keys unchanged)
    compile: bool = field(default=False, metadata={"cache": "unless default"})
    lam: InitVar[float | None] = UNSET  # removed: the head's threshold is `plausibility_threshold`

    def __post_init__(self, lam) -> None:
        if lam is not UNSET:
            raise TypeError("`lam` was removed: the plausibility head's threshold is `plausibility_threshold` "
                            "(`min_p` is transformers' MinP warper, after temperature)")  # fmt: skip

    @classmethod
    def authors(cls, **overrides) -> DecodingConfig:
        """The ConG release's sampling (Jiang et al., 2025): T 0.8, top-p 0.95, repetition penalty 1.2 after the contrast,
        head lambda 0.1, no top-k; `overrides` set other fields."""
        settings = dict(do_sample=True, temperature=0.8, top_k=None, top_p=0.95, repetition_penalty=1.2,
                        plausibility_threshold=0.1)  # fmt: skip
        return cls(**{**settings, **overrides})

    def validate(self, contrastive: bool) -> None:
        """Raise a one-line error naming the first field out of its range, not finite, or of the wrong type."""
        check_number("alpha", self.alpha, 0.0, 1.0)
        if contrastive and self.plausibility_threshold is None:
            raise ValueError("contrastive decoding needs a plausibility head: plausibility_threshold must lie in "
                             "(0, 1], got None")  # fmt: skip
        if self.plausibility_threshold is not None:
            check_number("plausibility_threshold (the head's lambda)", self.plausibility_threshold, 0.0, 1.0,
                         low_open=True)  # fmt: skip
        if self.min_p is not None:
            check_number("min_p (transformers' MinP warper)", self.min_p, 0.0, 1.0, low_open=True)
        check_number("temperature", self.temperature, 0.0, low_open=True)
        if self.top_k is not None:
            check_int("top_k", self.top_k, 0)
        check_number("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_number("repetition_penalty", self.repetition_penalty, 0.0, low_open=True)
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_int("num_return_sequences", self.num_return_sequences, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if self.cache not in ("auto", "static", "dynamic"):
            raise ValueError(f"cache must be 'auto', 'static' or 'dynamic', got {self.cache!r}")
        if self.token_choice not in ("auto", "head", "vocabulary"):
            raise ValueError(f"token_choice must be 'auto', 'head' or 'vocabulary', got {self.token_choice!r}")
        for name in ("do_sample", "ignore_eos", "release_compatible", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def gathers_head(self, device: torch.device) -> bool:
        """Whether the steps after the head run on the head's gathered tokens (`token_choice`)."""
        return self.plausibility_threshold is not None and (self.token_choice == "head" or
                                           (self.token_choice == "auto" and device.type == "cpu"))  # fmt: skip


@dataclass
class Generation:
    """Decoded responses, in prompt order. `log_ratios[i][t] = log pi_r(y_t) - log pi_ref(y_t)` of each generated
    token, its EOS included when the response ended with one (CD only; unscaled)."""

    prompts: list[str]
    texts: list[str]
    token_ids: list[list[int]]
    log_ratios: list[list[float]] | None = None
    config: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def implicit_reward(self, beta: float = 0.1) -> ImplicitReward:
        """The implicit reward of each response, in `congkit.implicit_reward`'s convention: `per_token` =
        beta * log_ratios, `total` = their sum (the sequence reward TRL's DPO logs), `mean` = total / tokens.

        Args:
            beta: the DPO temperature, > 0 (TRL's default 0.1).

        A response that ended with EOS counts it, as TRL's DPOTrainer (which appends EOS to every completion) does,
        so `implicit_reward(policy, reference, tokenizer, prompt, text)` gives the same number for it. A response cut
        at `max_new_tokens` has no EOS here; scoring its text appends one.
        """
        if self.log_ratios is None:
            raise ValueError("plain samples carry no implicit reward; score them with congkit.implicit_reward")
        check_number("beta", beta, 0.0, low_open=True)
        per_token = [[beta * x for x in row] for row in self.log_ratios]
        total = [float(sum(row)) for row in per_token]
        return ImplicitReward(per_token, total, [t / max(len(row), 1) for t, row in zip(total, per_token)])


# --- the step's processors -----------------------------------------------------------------------------------------


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


def next_tokens(expert_logp: torch.Tensor, amateur_logp: torch.Tensor | None, seen: torch.Tensor,
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



# --- the loop -------------------------------------------------------------------------------------------------------


def _eos_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> set[int]:
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(value)
    return ids


class PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values live in buffers allocated once for `capacity` tokens: each step writes
    the new entries in place and hands attention a view of the filled part.

    Why not transformers' own caches: `DynamicLayer` concatenates (re-allocating and copying the whole cache every
    step: 16% of a CD step here), and `StaticCache` attends over its full `max_cache_len` at every step. The model's
    forward is untouched: this is only where the cache keeps its tensors. Past `capacity` it grows by doubling.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._keys = key_states.new_empty((*key_states.shape[:-2], self.capacity, key_states.shape[-1]))
        self._values = value_states.new_empty((*value_states.shape[:-2], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # beyond the planned length: grow once, by doubling
            size = max(end, 2 * self._keys.shape[-2])
            self._keys, self._values = (_grown(buffer, size) for buffer in (self._keys, self._values))
        self._keys[..., self.length : end, :] = key_states
        self._values[..., self.length : end, :] = value_states
        self.length = end
        self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]
        return self.keys, self.values

    def reset(self) -> None:
        self.length = 0
        super().reset()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the batch rows `indices` (the engine drops finished rows this way)."""
        if self.is_initialized:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]


def _grown(buffer: torch.Tensor, size: int) -> torch.Tensor:
    """`buffer` (..., length, dim) with room for `size` positions, its contents kept."""
    out = buffer.new_empty((*buffer.shape[:-2], size, buffer.shape[-1]))
    out[..., : buffer.shape[-2], :] = buffer
    return out


# a decoding batch drops its finished rows once they are this fraction of it: its rows' answers end at different
# steps (the study's: 9 tokens on average, 19 for the longest of 256 rows), so finished rows decoding on were half the
# study's sampling work (dropping them: sampling 26% faster there). Every row's tokens are the same either way; its
# log-probabilities can differ in the last float32 bit (a smaller batch's matrix products round differently: 10 of
# 5,685 CD log-ratios, by <= 3.5e-7), tested to 1e-5. Each drop copies the caches' kept rows.
COMPACT_FRACTION = 0.25
SMALL_STEP = 5e7  # parameters x rows of a decoding step below which one CPU thread beats several (measured)


@contextlib.contextmanager
def decode_threads(model: PreTrainedModel, rows: int):
    """Torch's intra-op threads for one CPU decoding batch: one thread when a step is small (parameters x rows <
    `SMALL_STEP`: a 4M-parameter pair at batch 1 decoded 123-129 tokens/s on one thread against 110 on two, and
    kept that speed with a busy process beside it), torch's setting otherwise; restored afterwards. Together with
    `OMP_WAIT_POLICY=PASSIVE` (set by `import congkit`), a competing process does not collapse decoding. Set
    `CONGKIT_THREADS=keep` to leave torch's setting alone."""
    small = model_device(model).type == "cpu" and n_parameters(model) * rows < SMALL_STEP
    if not small or os.environ.get("CONGKIT_THREADS") == "keep" or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


COMPILED_LENGTH_STEP = 64  # compiled decoding: cache lengths are multiples of this (fewer shapes to compile)


def new_cache(model: PreTrainedModel, kind: str, max_length: int, compiled: bool = False):
    """A KV cache for one decoding batch. "static": `PreallocatedLayer`s sized once for `max_length` tokens, for
    models whose layers all use full attention (a model with sliding-window or other layer types, or one that
    `generate` gives no standard cache, gets its default); "dynamic": the model's default (a `DynamicCache`).
    `compiled`: transformers' `StaticCache` (fixed shapes, what a compiled forward needs) for `max_length` rounded
    up to a multiple of `COMPILED_LENGTH_STEP`, so that batches of other prompt lengths reuse the compiled step."""
    if compiled:
        if not getattr(model, "_can_compile_fullgraph", False):
            raise ValueError(f"compile=True needs a model that transformers can compile with a static cache; "
                             f"{type(model).__name__} does not declare it (_can_compile_fullgraph is False)")  # fmt: skip
        length = -(-max_length // COMPILED_LENGTH_STEP) * COMPILED_LENGTH_STEP
        return StaticCache(config=model.config, max_cache_len=length)
    if kind == "auto":
        kind = "static" if model_device(model).type == "cpu" else "dynamic"
    config = model.config.get_text_config(decoder=True)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    if (kind == "static" and type(model)._supports_default_dynamic_cache() and not model.config.is_encoder_decoder
            and set(layer_types) == {"full_attention"}):  # fmt: skip
        return Cache(layers=[PreallocatedLayer(max_length) for _ in layer_types])
    return None


class Stepper:
    """One model's forward passes with its own KV cache (a new one, or `cache`, e.g. the one `generate` prepared):
    the prompt once, then only the newest token. Returns next-token log-probabilities (and the raw logits with
    `keep_logits`). `compiled`: the steps after the prompt run the model's compiled forward on a `StaticCache`, with
    the 4-D attention mask built outside it (both as `generate` does); they need the 2-D mask and positions."""

    def __init__(self, model: PreTrainedModel, cache=None, compiled: bool = False):
        self.model, self.past, self.compiled = model, cache, compiled
        self.forward = model.get_compiled_call(None) if compiled else model

    def first(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, keep_logits: bool = False):
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.past, use_cache=True,
                         logits_to_keep=1)  # fmt: skip
        return self._read(out, keep_logits)

    def next(self, tok: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, keep_logits: bool = False):
        if self.compiled:
            shape_only = torch.empty((tok.shape[0], 1, 0), dtype=self.model.dtype, device=tok.device)
            mask = create_masks_for_generate(config=self.model.config, inputs_embeds=shape_only, attention_mask=mask,
                                             cache=self.past, position_ids=pos)  # fmt: skip
        out = self.forward(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, cache=self.past, use_cache=True)
        return self._read(out, keep_logits)

    def _read(self, out, keep_logits: bool):
        self.past = out.cache
        logits = out.logits[:, -1].float()
        if self.compiled and out.logits.dtype == torch.float32:  # a view of a CUDA graph's output, which its next
            logits = logits.clone()  # replay overwrites (`.float()` of other dtypes already copies)
        logp = torch.log_softmax(logits, dim=-1)
        return (logp, logits) if keep_logits else logp


_WORKER: tuple[int, ThreadPoolExecutor] | None = None  # (pid, the amateur's thread)


class ThreadPlan:
    """Whether each decoding step runs the two forwards in two threads or in turn, chosen by timing both.

    Two threads win on a quiet CPU (one model's Python overlaps the other's kernels: batch-1 CD 1.2-1.3x here) and
    lose when another busy process holds a core (they then share what is left: batch-1 steps took 1.12x as long as
    in turn). Which holds can change during a run, so the plan times the steps: each way `probes` times first, then
    the faster by a running mean (the newest step weighs `weight`), the other retimed once every `period` steps.
    Both ways compute the same tokens (tested); only the speed differs."""

    def __init__(self, probes: int = 2, period: int = 16, weight: float = 0.5):
        self.probes, self.period, self.weight = probes, period, weight
        self.seconds: dict[bool, float] = {}
        self.timed = {True: 0, False: 0}
        self.steps = 0

    def threaded(self) -> bool:
        """The way to run the next step."""
        self.steps += 1
        for way in (True, False):
            if self.timed[way] < self.probes:
                return way
        faster = self.seconds[True] <= self.seconds[False]
        return (not faster) if self.steps % self.period == 0 else faster

    def record(self, threaded: bool, seconds: float) -> None:
        """The step just run that way took `seconds`."""
        before = self.seconds.get(threaded)
        self.seconds[threaded] = seconds if before is None else (1 - self.weight) * before + self.weight * seconds
        self.timed[threaded] += 1


def step_models(steppers: list[Stepper], method: str, *args, plan: ThreadPlan | None = None, **kwargs) -> list:
    """`method` ("first" or "next") of every model's stepper, in order. On a CPU the amateur's forward may run in a
    worker thread while the expert's runs in this one: torch releases the GIL inside its kernels, so one model's
    Python overhead overlaps the other's compute (the pair's forwards measured 1.35-1.4x faster at batch 32 here).
    `plan` chooses two threads or one after the other step by step, timing both (`ThreadPlan`); without a plan, two
    threads. Both ways are the same computations; CONGKIT_THREADS=keep always runs the models in turn."""
    can_thread = (len(steppers) == 2 and model_device(steppers[0].model).type == "cpu"
                  and os.environ.get("CONGKIT_THREADS") != "keep")  # fmt: skip
    threaded = can_thread and (plan.threaded() if plan is not None else True)
    start = time.perf_counter()
    if threaded:
        out = _step_two_threads(steppers, method, *args, **kwargs)
    else:
        out = [getattr(s, method)(*args, **kwargs) for s in steppers]
    if can_thread and plan is not None:
        plan.record(threaded, time.perf_counter() - start)
    return out


def _step_two_threads(steppers: list[Stepper], method: str, *args, **kwargs) -> list:
    global _WORKER
    if _WORKER is None or _WORKER[0] != os.getpid():  # a forked child has no copy of the parent's thread
        _WORKER = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="congkit-amateur"))
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
    threads = torch.get_num_threads()

    def in_worker():  # autograd modes and intra-op threads are per thread: the caller's, in the worker, every call
        if torch.get_num_threads() != threads:  # (else the worker kept the setting of the batch that first used it)
            torch.set_num_threads(threads)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return getattr(steppers[1], method)(*args, **kwargs)

    pending = _WORKER[1].submit(in_worker)
    first = getattr(steppers[0], method)(*args, **kwargs)
    return [first, pending.result()]


@torch.inference_mode()
def _decode_batch(
    expert: PreTrainedModel,
    amateur: PreTrainedModel | None,
    prompt_ids: list[list[int]],
    rows: list[tuple[int, int]],
    config: DecodingConfig,
    pad_id: int,
    eos: set[int],
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
    logps = step_models(steppers, "first", ids, mask if padded else None, pos if padded else None)

    batch, vocab = ids.shape[0], logps[0].shape[-1]
    # prompt tokens count as seen (as in transformers), padding does not
    seen = seen_tokens(ids, mask, vocab)
    uniforms = row_uniforms(config.seed, rows, config.max_new_tokens).to(device) if config.do_sample else None
    eos_tensor = torch.tensor(sorted(eos) or [-1], device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    live = torch.arange(batch, device=device)  # the batch rows still decoding, by their place in `prompt_ids`
    # finished rows are dropped from caches whose layers can drop rows (not a compiled step's `StaticCache`)
    droppable = all(isinstance(layer, DynamicLayer) for s in steppers for layer in getattr(s.past, "layers", [None]))
    tokens, rewards = [], []
    pos = pos[:, -1:]
    plan, process = ThreadPlan(), warpers(config)
    for t in range(config.max_new_tokens):
        expert_logp, amateur_logp = logps[0], (logps[1] if amateur is not None else None)
        top = expert_logp.amax(dim=-1, keepdim=True)
        require_finite(top, EXPERT if amateur is not None else "model", t)
        tok = next_tokens(expert_logp, amateur_logp, seen, config, uniforms[:, t] if uniforms is not None else None,
                          top, process)  # fmt: skip
        tok = tok.masked_fill(done, pad_id)
        tokens.append(torch.full((batch,), pad_id, dtype=tok.dtype, device=device).index_copy_(0, live, tok))
        if amateur_logp is not None:
            ratio = chosen_log_ratio(expert_logp, amateur_logp, tok).masked_fill(done, 0.0)
            require_finite(ratio, AMATEUR, t)
            rewards.append(ratio.new_zeros(batch).index_copy_(0, live, ratio))
        seen.scatter_(1, tok[:, None], True)
        done = done | torch.isin(tok, eos_tensor)
        finished = int(done.sum())  # one host sync a step
        if finished == len(live) or t == config.max_new_tokens - 1:
            break
        if droppable and finished >= COMPACT_FRACTION * len(live):  # drop the finished rows
            keep = (~done).nonzero().squeeze(-1)
            live, tok, seen, done, mask, pos = (x[keep] for x in (live, tok, seen, done, mask, pos))
            uniforms = uniforms[keep] if uniforms is not None else None
            for stepper in steppers:
                stepper.past.batch_select_indices(keep)
        if padded:
            mask = torch.cat([mask, torch.ones((len(live), 1), dtype=mask.dtype, device=device)], dim=1)
            pos = pos + 1
        logps = step_models(steppers, "next", tok, mask if padded else None, pos if padded else None, plan=plan)

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
    all_ids, all_rewards = [], []
    starts = range(0, len(encoded), config.batch_size)
    label = "contrastive decoding" if amateur is not None else "sampling"
    for start in tqdm(starts, desc=label, disable=not progress or len(starts) == 1):
        chunk = encoded[start : start + config.batch_size]
        with decode_threads(expert, len(chunk)):
            ids, rewards = _decode_batch(expert, amateur, chunk, rows[start : start + len(chunk)], config, pad_id, eos)
        all_ids.extend(ids)
        if rewards is not None:
            all_rewards.extend(rewards)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in all_ids]
    warn_unless_texts_reencode(tokenizer, texts, all_ids, eos)
    return Generation(prompts, texts, all_ids, all_rewards if amateur is not None else None, vars(config).copy())


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
