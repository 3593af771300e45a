"""Throughput of congkit's batched contrastive decoding, as ratios against baselines measured in the same run.

    python benchmarks/decoding.py --json

- cd_vs_hf_generate: CD tokens/s over the expert's own `model.generate` (sampling, same batch, same settings). CD runs
  two models a step, so about 0.5 is the limit for equal-size models.
- batched_vs_one_at_a_time: CD over a batch of prompts against the same prompts decoded one at a time, as the ConG
  authors' release decodes.
Every run generates exactly `--new-tokens` tokens per prompt (EOS ignored) so token counts are equal.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from congkit import contrastive_generate, sample
from congkit.models import char_tokenizer, n_parameters, tiny_llama
from congkit.tokens import encode_prompt, pad


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()

    torch.manual_seed(0)
    tok = char_tokenizer()
    expert = tiny_llama(len(tok), hidden_size=args.hidden, num_layers=args.layers, num_heads=4, seed=1, init_std=0.1)
    amateur = tiny_llama(len(tok), hidden_size=args.hidden, num_layers=args.layers, num_heads=4, seed=2, init_std=0.1)
    words = "sort these numbers then add the first two and report the count of letters in the word".split()
    prompts = [" ".join(words[: 3 + (i * 7) % len(words)]) + f" #{i}" for i in range(args.batch)]
    settings = dict(max_new_tokens=args.new_tokens, ignore_eos=True, progress=False, batch_size=args.batch)
    n_tokens = args.batch * args.new_tokens

    def cd():
        out = contrastive_generate(expert, amateur, tok, prompts, alpha=0.5, **settings)
        assert sum(len(t) for t in out.token_ids) == n_tokens

    def plain():
        sample(expert, tok, prompts, **settings)

    ids, mask = pad([encode_prompt(tok, p) for p in prompts], tok.pad_token_id, side="left")

    def hf_generate():
        with torch.inference_mode():
            out = expert.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                repetition_penalty=1.2,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=tok.pad_token_id,
            )
        assert out.shape[1] - ids.shape[1] == args.new_tokens

    def cd_one_at_a_time():
        for i, p in enumerate(prompts):
            contrastive_generate(expert, amateur, tok, [p], alpha=0.5, index_offset=i, **{**settings, "batch_size": 1})

    for fn in (cd, plain, hf_generate):  # warm-up
        fn()
    t_cd, t_plain, t_hf = (best_time(fn, args.repeats) for fn in (cd, plain, hf_generate))
    t_one = best_time(cd_one_at_a_time, 1)
    result = {
        "params_per_model": n_parameters(expert),
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "threads": torch.get_num_threads(),
        "cd_tokens_per_s": n_tokens / t_cd,
        "plain_tokens_per_s": n_tokens / t_plain,
        "hf_generate_tokens_per_s": n_tokens / t_hf,
        "cd_one_at_a_time_tokens_per_s": n_tokens / t_one,
        "cd_vs_hf_generate": t_hf / t_cd,
        "plain_vs_hf_generate": t_hf / t_plain,
        "batched_vs_one_at_a_time": t_one / t_cd,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")


if __name__ == "__main__":
    main()
