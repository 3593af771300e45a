"""What a decoding run is asked (`DecodingConfig`: the authors' settings, CD's alpha and head, sampling, caches) and
what it returns (`Generation`: texts, token ids, per-token log-probabilities of both models)."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field

import torch

from congkit.inputs import check_int, check_number
from congkit.rewards import ImplicitReward
from congkit.tokens import UNSET


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
        lazy_amateur: defer the amateur's forward on steps whose choice is forced (every live row's head holds one
            token: that token is chosen whatever the amateur says) and read the deferred tokens in one multi-token
            forward when a step needs its scores or the batch ends (`step.LazyAmateur`). The same tokens and the
            same per-token log-ratios (up to float rounding); the forwards saved are in `Generation.stats`. Not with
            `compile` (its steps have one fixed shape). The two models then step in turn, never in two threads.
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
    # the same tokens and log-ratios (up to float rounding), so not in cache keys
    lazy_amateur: bool = field(default=True, metadata={"cache": False})
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
        for name in ("do_sample", "ignore_eos", "release_compatible", "compile", "lazy_amateur"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def lazy(self) -> bool:
        """Whether CD defers the amateur on forced steps (`lazy_amateur`; needs a head, not with `compile`)."""
        return self.lazy_amateur and self.plausibility_threshold is not None and not self.compile

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
    # CD: decoding steps, steps whose choice was forced (the lazy amateur skipped them), the amateur's forwards after
    # the prompts (eager: one a step but the first); `forced_fraction` is the second over the first
    stats: dict = field(default_factory=dict)

    @property
    def forced_fraction(self) -> float:
        """The share of CD's decoding steps whose choice was forced (NaN without CD steps)."""
        return self.stats["forced_steps"] / self.stats["steps"] if self.stats.get("steps") else float("nan")

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
