"""GPU check: congkit on real-size models (random weights: hub downloads may be unavailable), in under 8 minutes.

    python benchmarks/gpu_check.py [--json out.json]

- Qwen2-architecture models of Qwen2.5-0.5B and -1.5B sizes (vocabulary 151,936), Llama-architecture one of
  Llama-3.2-1B size, bf16 where supported;
- CD (0.5B expert vs 0.5B amateur) and plain sampling at batch 1 and a large batch, against `model.generate`;
- implicit-reward scoring throughput;
- one optimiser step of each training method (SFT, AuxConf, WSPO, DPO) on the 1.5B model through TRL;
- peak GPU memory of each part.
Prints one JSON object (and writes it with --json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from congkit import contrastive_generate, implicit_reward_from_ids, sample
from congkit.models import char_tokenizer, default_dtype
from congkit.pipeline.trainers import AuxConfTrainer, WSPOTrainer
from congkit.pipeline.training import TrainConfig, train_dpo, train_sft
from congkit.tokens import encode_prompt, pad

VOCAB = 151_936
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMOKE = False  # --smoke: tiny sizes on whatever device is present, to check the script itself on a CPU


def qwen2(hidden, layers, heads, kv_heads, inter, seed) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    if SMOKE:
        hidden, layers, heads, kv_heads, inter = 32, 1, 2, 1, 64
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, intermediate_size=inter, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=2)  # fmt: skip
    with torch.device(DEVICE):  # initialise on the GPU: random init of 1.5B parameters on a CPU takes long
        return Qwen2ForCausalLM(cfg)


def llama_1b(seed) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)
    if not SMOKE:
        size = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                    intermediate_size=8192)  # fmt: skip
    cfg = LlamaConfig(vocab_size=VOCAB if SMOKE else 128_256, tie_word_embeddings=True, pad_token_id=0, eos_token_id=2,
                      **size)  # fmt: skip
    with torch.device(DEVICE):
        return LlamaForCausalLM(cfg)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def clock() -> float:
    """perf_counter after the GPU finished its queued work."""
    sync()
    return time.perf_counter()


def peak_reset():
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    parser.add_argument("--big-batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--smoke", action="store_true", help="tiny models; runs on a CPU (checks the script)")
    args = parser.parse_args()
    global SMOKE
    SMOKE = args.smoke
    if not (SMOKE or torch.cuda.is_available()):
        raise SystemExit("no GPU: run with --smoke to check the script on a CPU")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = default_dtype(device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    result = {"device": name, "dtype": str(dtype), "torch": torch.__version__, "smoke": SMOKE}
    # A tokenizer whose vocabulary matches the models: characters plus filler tokens (random weights emit any id).
    tok = char_tokenizer(vocab_size=VOCAB)
    words = "explain the difference between weak and strong supervision in alignment with an example".split()

    def prompts(n):
        return [" ".join(words[: 4 + (i * 5) % len(words)]) + f" ({i})" for i in range(n)]

    expert = qwen2(896, 24, 14, 2, 4864, seed=1).to(device, dtype).eval()
    amateur = qwen2(896, 24, 14, 2, 4864, seed=2).to(device, dtype).eval()
    settings = dict(max_new_tokens=args.new_tokens, ignore_eos=True, progress=False, do_sample=True, temperature=0.8,
                    top_k=None, top_p=0.95, repetition_penalty=1.2)  # the authors' sampling
    for batch in (1, args.big_batch):
        ps = prompts(batch)
        n_tok = batch * args.new_tokens
        ids, mask = pad([encode_prompt(tok, p) for p in ps], 0, side="left")
        gen = dict(do_sample=True, temperature=0.8, top_p=0.95, repetition_penalty=1.2,
                   max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)  # fmt: skip
        # Short warm-up at this batch size (first-time kernel selection); the timed rounds below take the best of two.
        warm = {**settings, "max_new_tokens": 16}
        contrastive_generate(expert, amateur, tok, ps, alpha=0.5, batch_size=batch, **warm)
        sample(expert, tok, ps, batch_size=batch, **warm)
        expert.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            **{**gen, "max_new_tokens": 16, "min_new_tokens": 16},
        )
        # Best of two rounds, the three methods interleaved, so that a slow first call or a busy host CPU does not
        # decide the ratio.
        times = {"cd": [], "plain": [], "hf": []}
        peak_reset()
        for _ in range(2):
            t0 = clock()
            contrastive_generate(expert, amateur, tok, ps, alpha=0.5, batch_size=batch, **settings)
            times["cd"].append(clock() - t0)
            t0 = clock()
            sample(expert, tok, ps, batch_size=batch, **settings)
            times["plain"].append(clock() - t0)
            t0 = clock()
            expert.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **gen)
            times["hf"].append(clock() - t0)
        cd_mem = peak_gib()
        t_cd, t_plain, t_hf = (min(times[k]) for k in ("cd", "plain", "hf"))
        result[f"batch{batch}"] = {
            "cd_tokens_per_s": n_tok / t_cd,
            "plain_tokens_per_s": n_tok / t_plain,
            "hf_generate_tokens_per_s": n_tok / t_hf,
            "cd_vs_hf_generate": t_hf / t_cd,
            "cd_vs_plain": t_plain / t_cd,
            "seconds_all_rounds": times,
            "peak_gib": cd_mem,
        }
        print(json.dumps({f"batch{batch}": result[f"batch{batch}"]}), flush=True)

    ps = prompts(args.big_batch)
    out = contrastive_generate(expert, amateur, tok, ps, alpha=0.5, **settings)
    prompt_ids = [encode_prompt(tok, p) for p in ps]
    peak_reset()
    t0 = clock()
    implicit_reward_from_ids(expert, amateur, prompt_ids, out.token_ids, batch_size=16)
    t_ir = clock() - t0
    result["implicit_reward"] = {"tokens_per_s": sum(map(len, out.token_ids)) / t_ir, "peak_gib": peak_gib()}
    print(json.dumps({"implicit_reward": result["implicit_reward"]}), flush=True)

    big = llama_1b(seed=3).to(device, dtype).eval()
    big_tok = tok if SMOKE else char_tokenizer(vocab_size=128_256)
    t0 = clock()
    sample(big, big_tok, ps, batch_size=len(ps), **settings)
    result["llama_1b_plain_tokens_per_s"] = len(ps) * args.new_tokens / (clock() - t0)
    del big, expert, amateur
    if device == "cuda":
        torch.cuda.empty_cache()

    # One optimiser step of each training method on the 1.5B model (TRL trainers, bf16 on a GPU).
    def strong(seed):
        return qwen2(1536, 28, 12, 2, 8960, seed=seed).to(device, dtype)

    def weak(seed):
        return qwen2(896, 24, 14, 2, 4864, seed=seed).to(device, dtype)

    sft_data = Dataset.from_dict({"prompt": ps[:8], "completion": out.texts[:8]})
    pref_data = Dataset.from_dict({"prompt": ps[:8], "chosen": out.texts[:8], "rejected": out.texts[8:16]})
    cfg = TrainConfig(max_steps=1, per_device_train_batch_size=8, learning_rate=1e-5, logging_steps=1)
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("sft", "auxconf", "wspo", "dpo"):
            peak_reset()
            t0 = clock()
            if name == "sft":
                _, history = train_sft(strong(4), tok, sft_data, cfg, tmp)
            elif name == "auxconf":
                _, history = train_sft(strong(4), tok, sft_data, cfg, tmp, trainer_cls=AuxConfTrainer)
            elif name == "wspo":
                _, history = train_sft(strong(4), tok, sft_data, cfg, tmp, trainer_cls=WSPOTrainer,
                                       ref_model=strong(5), weak_model=weak(1), weak_ref_model=weak(2))  # fmt: skip
            else:
                _, history = train_dpo(strong(4), strong(4), tok, pref_data, cfg, tmp)
            steps[name] = {"seconds": clock() - t0, "peak_gib": peak_gib(),
                           "loss": next((r["loss"] for r in history if "loss" in r), None)}  # fmt: skip
            print(json.dumps({name: steps[name]}), flush=True)
    result["train_step"] = steps
    print(json.dumps(result))
    if args.json:
        json.dump(result, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
