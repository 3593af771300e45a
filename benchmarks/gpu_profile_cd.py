"""Where CD's time goes on a GPU: warmed-up timings of CD vs plain sampling at one batch size, and a torch.profiler
table of one CD run (top operators by CUDA time). Diagnostic companion of gpu_check.py."""

import json
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from gpu_check import VOCAB, qwen2  # noqa: E402

from congkit import contrastive_generate, sample  # noqa: E402
from congkit.models import char_tokenizer  # noqa: E402


def main(batch: int = 64, new_tokens: int = 64) -> None:
    tok = char_tokenizer(vocab_size=VOCAB)
    expert = qwen2(896, 24, 14, 2, 4864, seed=1).to(torch.bfloat16).eval()
    amateur = qwen2(896, 24, 14, 2, 4864, seed=2).to(torch.bfloat16).eval()
    prompts = [f"explain weak to strong generalization number {i}" for i in range(batch)]
    kw = dict(max_new_tokens=new_tokens, ignore_eos=True, progress=False, batch_size=batch, do_sample=True,
              temperature=0.8, top_k=None, top_p=0.95, repetition_penalty=1.2)
    out = {}
    for rep in range(2):  # the first round warms every shape up
        for name, fn in (
            ("cd", lambda: contrastive_generate(expert, amateur, tok, prompts, alpha=0.5, **kw)),
            ("plain", lambda: sample(expert, tok, prompts, **kw)),
            ("cd_no_head", lambda: contrastive_generate(expert, amateur, tok, prompts, alpha=0.5, plausibility_threshold=1e-9, **kw)),
        ):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out[f"{name}_round{rep}_s"] = time.perf_counter() - t
    print(json.dumps(out), flush=True)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as prof:
        contrastive_generate(expert, amateur, tok, prompts, alpha=0.5, **{**kw, "max_new_tokens": 16})
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
