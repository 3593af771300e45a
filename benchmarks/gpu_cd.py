"""Contrastive decoding on a GPU at a real model size: a Qwen2.5-0.5B-size pair (random weights, bf16, vocabulary
151,936), batch 1 and 64, 128 new tokens (EOS ignored), every case timed in interleaved rounds, best kept.

    python benchmarks/gpu_cd.py [--json out.json] [--rounds 2]

Cases: CD as congkit runs it by default on a GPU (`cache="auto"`: DynamicCache; full-vocabulary token choice; the
lazy amateur on), with the lazy amateur off (`cd_eager`: random weights rarely give a one-token head, so
`cd_lazy_vs_eager` measures the lazy path's cost there, not its gain),
the preallocated cache (`cache="static"`) and compiled (`compile=True`: StaticCache, CUDA graphs), congkit's plain
sampler (eager and compiled), and `model.generate` sampling, at batch 1 (the launch-bound regime) and 64. The warm-up
round compiles. Prints one JSON object with the card's name, tokens/s per case and the ratios.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import congkit  # noqa: F401
from congkit import contrastive_generate, sample
from congkit.models import char_tokenizer
from congkit.tokens import encode_prompt, pad

VOCAB = 151_936


def qwen_05b(seed: int) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=2)  # fmt: skip
    with torch.device("cuda"):
        return Qwen2ForCausalLM(cfg).to(torch.bfloat16).eval()


def paths_agree(expert, amateur, tok, prompts) -> dict:
    """On the GPU: the two token-choice paths (the head's tokens gathered, or the whole vocabulary with the head
    masked) decode the same tokens, greedy and sampled (on a CPU both are also checked against the slow reference)."""
    out = {}
    for name, settings in (("greedy", dict(do_sample=False)), ("sampled", dict(do_sample=True, seed=3))):
        runs = {path: contrastive_generate(expert, amateur, tok, prompts, alpha=0.0, plausibility_threshold=0.1, max_new_tokens=32,
                                           repetition_penalty=1.2, token_choice=path, progress=False, **settings)
                for path in ("head", "vocabulary")}  # fmt: skip
        out[name] = runs["head"].token_ids == runs["vocabulary"].token_ids
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    tok = char_tokenizer(vocab_size=VOCAB)
    expert, amateur = qwen_05b(1), qwen_05b(2)
    n = args.new_tokens
    prompts = [f"Write a short story about the number {i} and a cat." for i in range(64)]
    common = dict(max_new_tokens=n, ignore_eos=True, progress=False, do_sample=True, temperature=0.8, top_k=None,
                  top_p=0.95, repetition_penalty=1.2)  # the authors' sampling

    def cd(batch: int, cache: str, compiled: bool = False, lazy: bool = True):
        return lambda: contrastive_generate(expert, amateur, tok, prompts[:batch], alpha=0.5, plausibility_threshold=0.1,
                                            batch_size=batch, cache=cache, compile=compiled, lazy_amateur=lazy,
                                            **common)  # fmt: skip

    def plain(batch: int, compiled: bool = False):
        return lambda: sample(expert, tok, prompts[:batch], batch_size=batch, compile=compiled, **common)

    def hf(batch: int):
        ids, mask = pad([encode_prompt(tok, p) for p in prompts[:batch]], tok.pad_token_id, side="left")
        ids, mask = ids.cuda(), mask.cuda()
        return lambda: expert.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_p=0.95,
                                       repetition_penalty=1.2, max_new_tokens=n, min_new_tokens=n,
                                       pad_token_id=tok.pad_token_id)  # fmt: skip

    cases = {f"{name}_b{b}": fn for b in (1, 64) for name, fn in
             (("cd", cd(b, "auto")), ("cd_eager", cd(b, "auto", lazy=False)), ("cd_static", cd(b, "static")),
              ("cd_compiled", cd(b, "auto", True)),
              ("plain", plain(b)), ("plain_compiled", plain(b, True)), ("hf_generate", hf(b)))}  # fmt: skip
    best = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up (allocator growth, kernels)
        for name, fn in cases.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.inference_mode():
                fn()
            torch.cuda.synchronize()
            if round_:
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    rate = {k: n * int(k.rsplit("_b", 1)[1]) / v for k, v in best.items()}
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "new_tokens": n,
           "tokens_per_s": {k: round(v, 1) for k, v in rate.items()}}  # fmt: skip
    for b in (1, 64):
        out[f"cd_vs_plain_b{b}"] = round(rate[f"cd_b{b}"] / rate[f"plain_b{b}"], 3)
        out[f"cd_vs_hf_generate_b{b}"] = round(rate[f"cd_b{b}"] / rate[f"hf_generate_b{b}"], 3)
        # random weights rarely give a one-token head, so this measures the lazy path's bookkeeping, not its gain
        out[f"cd_lazy_vs_eager_b{b}"] = round(rate[f"cd_b{b}"] / rate[f"cd_eager_b{b}"], 3)
        out[f"static_vs_dynamic_cache_b{b}"] = round(rate[f"cd_static_b{b}"] / rate[f"cd_b{b}"], 3)
        out[f"compiled_vs_eager_cd_b{b}"] = round(rate[f"cd_compiled_b{b}"] / rate[f"cd_b{b}"], 3)
        out[f"cd_compiled_vs_plain_compiled_b{b}"] = round(rate[f"cd_compiled_b{b}"] / rate[f"plain_compiled_b{b}"], 3)
        out[f"cd_compiled_vs_plain_b{b}"] = round(rate[f"cd_compiled_b{b}"] / rate[f"plain_b{b}"], 3)
    out["token_choice_paths_agree"] = paths_agree(expert, amateur, tok, prompts[:16])
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
