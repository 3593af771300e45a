"""Exact contrastive decoding below two forwards a token: the lazy amateur (`DecodingConfig.lazy_amateur`) on the
study's trained weak pair, every figure a ratio against a baseline measured in the same run, cases interleaved.

    python benchmarks/lazy_cd.py --json [--seeds 0 7] [--prompts 400] [--rounds 5] [--runs runs]

The pair: the default world's weak base (pi_ref) and its DPO-aligned copy (pi_r) of replicate `seed`, built (or read
from the cache) by the study's own pipeline under `--runs`. The prompts: that world's first `--prompts` training
prompts, decoded as the study decodes CD samples (its sampling settings, alpha 0.5, head 0.1). Cases:

- `eager_b1` / `lazy_b1`: congkit's engine one prompt at a time, the amateur read every step / deferred on forced
  steps; `eager_b32` / `lazy_b32` the same at batch 32. Tokens are checked equal between eager and lazy.
- `ceiling_b1`: the strict two-forward ceiling: per prompt exactly CD's number of tokens, each step exactly the two
  models' forwards (same preallocated caches, in turn, one thread as congkit's policy gives this pair) and an argmax
  of the expert's raw logits, nothing else.

Ratios (> 1: the first is faster): `cd_vs_strict_ceiling_b1` (eager), `cd_lazy_vs_strict_ceiling_b1`,
`cd_lazy_vs_eager_b1`, `cd_lazy_vs_eager_b32`; and `forced_fraction` (steps whose head held one token at batch 1)
and `forced_fraction_b32` (steps where every row of the batch was forced). Each case's tokens/s is its best round.
The thread policy (`OMP_WAIT_POLICY=PASSIVE`) is set before torch loads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (congkit sets it too; torch is first here)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import congkit  # noqa: E402, F401
from congkit.decoding import contrastive_generate, decode_threads, new_cache  # noqa: E402
from congkit.models import n_parameters  # noqa: E402
from congkit.tokens import encode_prompt  # noqa: E402

RATIOS = {"cd_vs_strict_ceiling_b1": ("eager_b1", "ceiling_b1"), "cd_lazy_vs_strict_ceiling_b1": ("lazy_b1", "ceiling_b1"),
          "cd_lazy_vs_eager_b1": ("lazy_b1", "eager_b1"), "cd_lazy_vs_eager_b32": ("lazy_b32", "eager_b32")}  # fmt: skip


def study_pair(seed: int, runs: Path):
    """(pi_r, pi_ref, tokenizer, training prompts, the study's CD sampling, chat) of the default world's replicate."""
    from congkit.pipeline import Pipeline, PipelineConfig, Setting
    from congkit.pipeline.world_build import WorldConfig, build_world

    with contextlib.redirect_stdout(sys.stderr):  # building prints the trainers' logs; stdout holds the JSON only
        world = build_world(WorldConfig(), root=runs, progress=False)
        pipe = Pipeline(Setting.from_world(world), PipelineConfig(), root=runs / "pipeline-default", progress=False)
        pi_r, pi_ref = pipe.weak_pair(pipe.weak_aligned(seed, 0.0))
    cd = pipe.sampling(seed=seed, alpha=pipe.config.cd_alpha, plausibility_threshold=pipe.config.cd_lam)
    return pi_r.eval(), pi_ref.eval(), pipe.tokenizer, pipe.prompts("train"), cd, pipe.chat


@torch.inference_mode()
def strict_ceiling(expert, amateur, prompt_ids: list[list[int]], lengths: list[int]) -> None:
    """Per prompt, `lengths[i]` tokens: exactly the two forwards a token (preallocated caches, in turn, under congkit's
    thread policy) and the argmax of the expert's raw logits."""
    models = (expert, amateur)
    with decode_threads(expert, 1):
        for ids, n in zip(prompt_ids, lengths):
            ids = torch.tensor([ids])
            caches = [new_cache(m, "static", ids.shape[1] + n) for m in models]
            outs = [m(input_ids=ids, cache=c, use_cache=True, logits_to_keep=1) for m, c in zip(models, caches)]
            for _ in range(n - 1):
                tok = outs[0].logits[:, -1].argmax(-1, keepdim=True)
                outs = [m(input_ids=tok, cache=o.cache, use_cache=True) for m, o in zip(models, outs)]


def measure(seed: int, args) -> dict:
    pi_r, pi_ref, tok, prompts, cd, chat = study_pair(seed, Path(args.runs))
    prompts = prompts[: args.prompts]
    prompt_ids = [encode_prompt(tok, p, chat) for p in prompts]

    def decode(lazy: bool, batch: int):
        return contrastive_generate(pi_r, pi_ref, tok, prompts, cd, progress=False, apply_chat_template=chat,
                                    lazy_amateur=lazy, batch_size=batch)  # fmt: skip

    outs = {(lazy, b): decode(lazy, b) for lazy in (False, True) for b in (1, 32)}
    for b in (1, 32):
        assert outs[True, b].token_ids == outs[False, b].token_ids, f"lazy and eager tokens differ at batch {b}"
    lengths = [len(ids) for ids in outs[False, 1].token_ids]
    tokens = sum(lengths)
    cases = {"eager_b1": lambda: decode(False, 1), "lazy_b1": lambda: decode(True, 1),
             "eager_b32": lambda: decode(False, 32), "lazy_b32": lambda: decode(True, 32),
             "ceiling_b1": lambda: strict_ceiling(pi_r, pi_ref, prompt_ids, lengths)}  # fmt: skip
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved: a slow moment hits every case alike
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    rate = {name: tokens / seconds for name, seconds in best.items()}
    return {"tokens_per_s": {k: round(v, 1) for k, v in rate.items()}, "tokens": tokens, "params": n_parameters(pi_ref),
            "forced_fraction": outs[True, 1].forced_fraction, "forced_fraction_b32": outs[True, 32].forced_fraction,
            "amateur_forwards_per_token_b1": outs[True, 1].stats["amateur_forwards"] / outs[True, 1].stats["steps"],
            **{name: rate[a] / rate[b] for name, (a, b) in RATIOS.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 7])
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", default="runs", help="the study's cache folder (the pair is built there if absent)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    per_seed = {seed: measure(seed, args) for seed in args.seeds}
    first = per_seed[args.seeds[0]]
    result = {"pair": "study weak pair (default world): pi_r = DPO(weak base), pi_ref = weak base",
              "params_per_model": first["params"], "threads": torch.get_num_threads(),
              "seeds": args.seeds, "prompts": args.prompts, "rounds": args.rounds, "per_seed": per_seed}  # fmt: skip
    for key in first:
        if isinstance(first[key], float):
            values = [r[key] for r in per_seed.values()]
            result[key] = round(statistics.median(values), 3)
            result[f"{key}_range"] = [round(min(values), 3), round(max(values), 3)]
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
