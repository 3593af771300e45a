"""The decoding runtime: key-value caches preallocated and compacted as rows finish, one `Stepper` per model, and
the thread plan that steps the expert and the amateur (in turn on one thread, or side by side on two)."""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from transformers import (
    Cache,
    DynamicLayer,
    PreTrainedModel,
    StaticCache,
)
from transformers.masking_utils import create_masks_for_generate

from congkit.inputs import model_device
from congkit.models import n_parameters


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


def small_step(model: PreTrainedModel, rows: int) -> bool:
    """A CPU decoding step below `SMALL_STEP` (parameters x rows): one thread runs it fastest, and the two models are
    stepped in turn (a second thread's hand-off costs more than such a forward: the study's 39k-parameter weak pair
    at batch 1 decoded 1.44x faster in turn than in two threads)."""
    return model_device(model).type == "cpu" and n_parameters(model) * rows < SMALL_STEP


@contextlib.contextmanager
def decode_threads(model: PreTrainedModel, rows: int):
    """Torch's intra-op threads for one CPU decoding batch: one thread when a step is small (parameters x rows <
    `SMALL_STEP`: a 4M-parameter pair at batch 1 decoded 123-129 tokens/s on one thread against 110 on two, and
    kept that speed with a busy process beside it), torch's setting otherwise; restored afterwards. Together with
    `OMP_WAIT_POLICY=PASSIVE` (set by `import congkit`), a competing process does not collapse decoding. Set
    `CONGKIT_THREADS=keep` to leave torch's setting alone."""
    if not small_step(model, rows) or os.environ.get("CONGKIT_THREADS") == "keep" or torch.get_num_threads() == 1:
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

    def feed(self, ids: torch.Tensor, mask: torch.Tensor | None, pos: torch.Tensor | None) -> torch.Tensor:
        """(B, W, V) next-token log-probabilities after each of `ids`' W tokens, read in one forward on top of the
        cache (the lazy amateur's catch-up; uncompiled)."""
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.past, use_cache=True)
        self.past = out.cache
        return torch.log_softmax(out.logits.float(), dim=-1)

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

    def __init__(self, probes: int = 2, period: int = 16, weight: float = 0.5, in_turn: bool = False):
        self.probes, self.period, self.weight, self.in_turn = probes, period, weight, in_turn
        self.seconds: dict[bool, float] = {}
        self.timed = {True: 0, False: 0}
        self.steps = 0

    def threaded(self) -> bool:
        """The way to run the next step (`in_turn`: always in turn, never timed)."""
        if self.in_turn:
            return False
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
    threads. Both ways are the same computations; CONGKIT_THREADS=keep always runs the models in turn, as does a plan
    made with `in_turn` (a `small_step`)."""
    can_thread = (len(steppers) == 2 and model_device(steppers[0].model).type == "cpu"
                  and os.environ.get("CONGKIT_THREADS") != "keep")  # fmt: skip
    threaded = can_thread and (plan.threaded() if plan is not None else True)
    start = time.perf_counter()
    if threaded:
        out = _step_two_threads(steppers, method, *args, **kwargs)
    else:
        out = [getattr(s, method)(*args, **kwargs) for s in steppers]
    if can_thread and plan is not None and not plan.in_turn:
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
