"""Throughput of congkit's contrastive decoding (CD), every figure a ratio against a baseline measured in the same run.

    python benchmarks/decoding.py --json [--runs 3] [--repeats 3] [--ratios NAME ...]

Each case is timed `repeats` times, all cases interleaved round by round (a slow moment hits every case alike), and
its best time kept; `--runs` repeats the whole measurement and reports each ratio's median and range. Every case
generates exactly its number of tokens (EOS ignored). Ratios (> 1: the first is faster):

- cd_vs_hf_generate: CD (two models a step) over the expert's own `model.generate` (one model; sampling, same
  batch and settings), vocabulary 101, batch 32. About 0.5 is parity per forward.
- plain_vs_hf_generate: congkit's plain sampler over `model.generate`.
- batched_vs_one_at_a_time: CD on 32 prompts at once against the same prompts decoded one at a time.
- two_forwards_vs_hf_generate: that bare loop over `model.generate`: what CD could reach at best.
- cd_vs_two_forwards_v<V>: CD against a bare loop of the two models' forwards (same cache kind, greedy token from the
  expert's logits, nothing else): the ceiling, at vocabulary 101, 32,000 and 151,936.
- contended_vs_quiet_b1: batch-1 CD while one busy process (started and stopped by the benchmark) competes for the
  cores, against the same without it.
- static_vs_dynamic_cache_b32 / _b1: CD with transformers' StaticCache against DynamicCache (grown per step).
- peers: congkit batch 1 against the authors' style (one prompt at a time, a sampling loop over two models with two
  caches, full-vocabulary filtering: `authors_b1`) and the proxy-tuning style (the amateur inside a logits processor
  of `model.generate`: `proxy_b1`); congkit batch 32 against the authors' batch-1 approach. Every peer runs under
  `inference_mode` with congkit's thread policy (one intra-op thread for a small step, `decode_threads`).
- cd_vs_strict_ceiling_v<V>: CD against `strict_ceiling` (exactly the two forwards, same caches, raw-logit argmax):
  CD's overhead over its two forwards is 1 / ratio - 1.
- cd_vs_generate_processor_b32 / _b1: the same-work peer: `generate` on the same padded batch with the amateur in a
  logits processor (`proxy_b32`, `proxy_b1`).
- contended_torch_vs_quiet_b1 / _b32: CD beside a second torch process doing matrix multiplies on all cores (as a
  second training job would), against the same without it; hf_generate_contended_torch_vs_quiet_b32 is plain
  `generate` beside the same neighbour.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # congkit's thread policy, in force before torch loads OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList  # noqa: E402

from congkit import contrastive_generate, sample  # noqa: E402
from congkit.decoding import Stepper, ThreadPlan, decode_threads, new_cache, step_models  # noqa: E402
from congkit.models import char_tokenizer, n_parameters, tiny_llama  # noqa: E402
from congkit.tokens import encode_prompt, pad, positions  # noqa: E402

WORDS = "sort these numbers then add the first two and report the count of letters in the word".split()


def make_pair(vocab: int | None, hidden: int, layers: int):
    tok = char_tokenizer(vocab_size=vocab)
    models = [tiny_llama(len(tok), hidden_size=hidden, num_layers=layers, num_heads=4, seed=s, init_std=0.1).eval()
              for s in (1, 2)]  # fmt: skip
    return tok, *models


def prompts_for(n: int) -> list[str]:
    return [" ".join(WORDS[: 3 + (i * 7) % len(WORDS)]) + f" #{i}" for i in range(n)]


# --- the baselines ------------------------------------------------------------------------------------------------


@torch.inference_mode()
def two_forwards(expert, amateur, ids, mask, new_tokens: int, cache: str) -> None:
    """The ceiling: the two models' forwards, stepped as congkit steps them (same cache, `step_models` with a
    `ThreadPlan`), and a greedy token from the expert's log-probabilities, nothing else."""
    steppers = [Stepper(m, new_cache(m, cache, ids.shape[1] + new_tokens)) for m in (expert, amateur)]
    pos = positions(mask)
    logps = step_models(steppers, "first", ids, mask, pos)
    pos = pos[:, -1:]
    plan = ThreadPlan()
    for _ in range(new_tokens - 1):
        tok = logps[0].argmax(-1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        pos = pos + 1
        logps = step_models(steppers, "next", tok, mask, pos, plan=plan)


@torch.inference_mode()
def strict_ceiling(expert, amateur, ids, mask, new_tokens: int, cache: str) -> None:
    """The strict ceiling: exactly the two models' forwards with the same caches, in turn, under congkit's thread
    policy, the next token the argmax of the expert's raw logits; no log-softmax, no head, no thread plan."""
    models = (expert, amateur)
    caches = [new_cache(m, cache, ids.shape[1] + new_tokens) for m in models]
    pos = positions(mask)
    with decode_threads(expert, ids.shape[0]):
        outs = [m(input_ids=ids, attention_mask=mask, position_ids=pos, cache=c, use_cache=True, logits_to_keep=1)
                for m, c in zip(models, caches)]  # fmt: skip
        pos = pos[:, -1:]
        for _ in range(new_tokens - 1):
            tok = outs[0].logits[:, -1].argmax(-1)
            caches = [o.cache for o in outs]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            pos = pos + 1
            outs = [m(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, cache=c, use_cache=True)
                    for m, c in zip(models, caches)]  # fmt: skip


@torch.inference_mode()
def authors_style(expert, amateur, prompt_ids: list[int], new_tokens: int, alpha=0.5, lam=0.1, temperature=0.8,
                  top_p=0.95, penalty=1.2) -> list[int]:  # fmt: skip
    """The ConG release's way, written out: one prompt, a sampling loop over two models with two DynamicCaches,
    full-vocabulary plausibility filter and amateur renormalisation, then transformers' penalty, temperature and
    top-p processors on the whole vocabulary, `torch.multinomial`."""
    from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper

    processors = [RepetitionPenaltyLogitsProcessor(penalty), TemperatureLogitsWarper(temperature),
                  TopPLogitsWarper(top_p)]  # fmt: skip
    ids = torch.tensor([prompt_ids])
    caches = [DynamicCache(), DynamicCache()]
    step = ids
    for _ in range(new_tokens):
        logp = [torch.log_softmax(m(input_ids=step, cache=c, use_cache=True).logits[:, -1].float(), -1)
                for m, c in zip((expert, amateur), caches)]  # fmt: skip
        head = logp[0] >= logp[0].max(-1, keepdim=True).values + torch.log(torch.tensor(lam))
        amateur_logp = torch.log_softmax(logp[1].masked_fill(~head, -1e-3), -1)
        scores = (logp[0] - (1 - alpha) * amateur_logp).masked_fill(~head, float("-inf"))
        for processor in processors:
            scores = processor(ids, scores)
        step = torch.multinomial(torch.softmax(scores, -1), 1)
        ids = torch.cat([ids, step], dim=1)
    return ids[0, len(prompt_ids) :].tolist()


class AmateurProcessor(LogitsProcessor):
    """The same-work peer: the amateur runs inside a logits processor of the expert's `generate`, with its own
    preallocated cache, the batch's attention mask (left padding masked, extended by one each step) and the position
    ids that skip padding, as `generate` gives the expert; it returns log pi_r - (1 - alpha) log pi_ref on the
    plausibility head. Greedy, it decodes CD's tokens (`check_peer`)."""

    def __init__(self, amateur, mask: torch.Tensor, max_new: int, alpha=0.5, lam=0.1):
        self.amateur, self.alpha, self.lam, self.mask, self.seen = amateur, alpha, lam, mask, 0
        self.cache = new_cache(amateur, "static", mask.shape[1] + max_new)

    def __call__(self, input_ids, scores):
        step = input_ids[:, self.seen :]
        if self.seen:
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], step.shape[1]))], dim=1)
        self.seen = input_ids.shape[1]
        pos = positions(self.mask)[:, -step.shape[1] :]
        out = self.amateur(input_ids=step, attention_mask=self.mask, position_ids=pos, cache=self.cache, use_cache=True,
                           logits_to_keep=1)  # fmt: skip
        self.cache = out.cache
        amateur_logp = torch.log_softmax(out.logits[:, -1].float(), -1)
        expert_logp = torch.log_softmax(scores.float(), -1)
        head = expert_logp >= expert_logp.max(-1, keepdim=True).values + torch.log(torch.tensor(self.lam))
        return (expert_logp - (1 - self.alpha) * amateur_logp).masked_fill(~head, float("-inf"))


@torch.inference_mode()
def check_peer(expert, amateur, tok, prompts: list[str], ids, mask, n: int) -> None:
    """The peer does CD's work: greedy, its tokens equal congkit's CD tokens row for row (EOS ignored by both)."""
    out = expert.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                          pad_token_id=tok.pad_token_id, top_k=None, top_p=None, temperature=None,
                          logits_processor=LogitsProcessorList([AmateurProcessor(amateur, mask, n)]))  # fmt: skip
    cd = contrastive_generate(expert, amateur, tok, prompts, alpha=0.5, do_sample=False, max_new_tokens=n,
                              ignore_eos=True, batch_size=len(prompts), progress=False)  # fmt: skip
    peer = out[:, ids.shape[1] :].tolist()
    assert peer == cd.token_ids, "the same-work peer does not decode CD's tokens: it is not the same work"


# ratio name -> (case, baseline case): tokens/s of the first over tokens/s of the second, in one run
RATIOS = {
    "cd_vs_hf_generate": ("cd_b32", "hf_generate_b32"),
    "plain_vs_hf_generate": ("plain_b32", "hf_generate_b32"),
    "batched_vs_one_at_a_time": ("cd_b32", "cd_one_at_a_time"),
    "cd_vs_two_forwards_v101": ("cd_b32", "two_forwards_b32"),
    "cd_vs_two_forwards_v32000": ("cd_v32000", "two_forwards_v32000"),
    "cd_vs_two_forwards_v151936": ("cd_v151936", "two_forwards_v151936"),
    "contended_vs_quiet_b1": ("cd_b1_contended", "cd_b1"),
    "two_forwards_vs_hf_generate": ("two_forwards_b32", "hf_generate_b32"),
    "static_vs_dynamic_cache_b32": ("cd_b32", "cd_b32_dynamic"),
    "static_vs_dynamic_cache_b1": ("cd_b1", "cd_b1_dynamic"),
    "cd_b1_vs_authors_b1": ("cd_b1", "authors_b1"),
    "cd_b1_vs_proxy_b1": ("cd_b1", "proxy_b1"),
    "cd_b32_vs_authors_b1": ("cd_b32", "authors_b1"),
    "cd_vs_strict_ceiling_v101": ("cd_b32", "ceiling_b32"),
    "cd_vs_strict_ceiling_v32000": ("cd_v32000", "ceiling_v32000"),
    "cd_vs_strict_ceiling_v151936": ("cd_v151936", "ceiling_v151936"),
    "cd_vs_generate_processor_b32": ("cd_b32", "proxy_b32"),
    "cd_vs_generate_processor_b1": ("cd_b1", "proxy_b1"),
    "contended_torch_vs_quiet_b1": ("cd_b1_torch_neighbour", "cd_b1"),
    "contended_torch_vs_quiet_b32": ("cd_b32_torch_neighbour", "cd_b32"),
    "hf_generate_contended_torch_vs_quiet_b32": ("hf_generate_b32_torch_neighbour", "hf_generate_b32"),
}


# --- one measurement ----------------------------------------------------------------------------------------------


def busy_process() -> subprocess.Popen:
    """One competing process that keeps a core busy (pure Python, no threads)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def torch_neighbour() -> subprocess.Popen:
    """A second torch process multiplying matrices on all cores (torch's default thread count), as a training job."""
    return subprocess.Popen([sys.executable, "-c", "import torch\na = torch.randn(768, 768)\nwhile True:\n    a @ a"])


def beside(neighbour, run):
    """`run()` while `neighbour()`'s process competes; the decoding's own seconds (not the process start)."""

    def timed() -> float:
        proc = neighbour()
        try:
            time.sleep(0.5)
            start = time.perf_counter()
            run()
            return time.perf_counter() - start
        finally:
            proc.kill()
            proc.wait()

    return timed


def measure(args) -> dict:
    torch.manual_seed(0)
    tok, expert, amateur = make_pair(None, args.hidden, args.layers)
    prompts = prompts_for(args.batch)
    n = args.new_tokens
    settings = dict(max_new_tokens=n, ignore_eos=True, progress=False, do_sample=True, temperature=0.8, top_k=None,
                    top_p=0.95, repetition_penalty=1.2)  # the authors' sampling (DecodingConfig.authors())
    ids, mask = pad([encode_prompt(tok, p) for p in prompts], tok.pad_token_id, side="left")

    def cd(batch_prompts, cache="auto", model_pair=(expert, amateur), tokenizer=tok, tokens=n):
        def run():
            contrastive_generate(*model_pair, tokenizer, batch_prompts, alpha=0.5, batch_size=len(batch_prompts),
                                 cache=cache, **{**settings, "max_new_tokens": tokens})  # fmt: skip
        return run

    def hf_generate():
        with torch.inference_mode():
            expert.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_p=0.95,
                            repetition_penalty=1.2, max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.pad_token_id)  # fmt: skip

    def one_at_a_time():
        for i, p in enumerate(prompts):
            contrastive_generate(expert, amateur, tok, [p], alpha=0.5, index_offset=i, batch_size=1, **settings)

    b1 = ids[:1, mask[0].bool()], mask[:1, mask[0].bool()]
    prompt0 = encode_prompt(tok, prompts[0])
    def proxy(input_ids, attention_mask):
        """The same-work peer: `generate` with the amateur in a logits processor, under congkit's thread policy."""

        def run():
            with torch.inference_mode(), decode_threads(expert, input_ids.shape[0]):
                expert.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, temperature=0.8,
                                top_p=0.95, repetition_penalty=1.2, max_new_tokens=n, min_new_tokens=n,
                                pad_token_id=tok.pad_token_id,
                                logits_processor=LogitsProcessorList([AmateurProcessor(amateur, attention_mask, n)]))  # fmt: skip

        return run

    def authors():
        with torch.inference_mode(), decode_threads(expert, 1):
            authors_style(expert, amateur, prompt0, n)

    contended = beside(busy_process, cd(prompts[:1]))
    if {"proxy_b1", "proxy_b32"} & {c for pair in (RATIOS[r] for r in (args.ratios or RATIOS)) for c in pair}:
        check_peer(expert, amateur, tok, prompts, ids, mask, min(n, 16))

    many, one = n * len(prompts), n  # tokens generated at batch 32 and at batch 1
    cases = {  # name -> (run it, tokens it generates)
        "cd_b32": (cd(prompts), many),
        "cd_b32_dynamic": (cd(prompts, cache="dynamic"), many),
        "plain_b32": (lambda: sample(expert, tok, prompts, batch_size=len(prompts), **settings), many),
        "hf_generate_b32": (hf_generate, many),
        "two_forwards_b32": (lambda: two_forwards(expert, amateur, ids, mask, n, "auto"), many),
        "ceiling_b32": (lambda: strict_ceiling(expert, amateur, ids, mask, n, "auto"), many),
        "cd_one_at_a_time": (one_at_a_time, many),
        "cd_b1": (cd(prompts[:1]), one),
        "cd_b1_dynamic": (cd(prompts[:1], cache="dynamic"), one),
        "cd_b1_contended": (contended, one),
        "authors_b1": (authors, one),
        "proxy_b1": (proxy(*b1), one),
        "proxy_b32": (proxy(ids, mask), many),
        "cd_b1_torch_neighbour": (beside(torch_neighbour, cd(prompts[:1])), one),
        "cd_b32_torch_neighbour": (beside(torch_neighbour, cd(prompts)), many),
        "hf_generate_b32_torch_neighbour": (beside(torch_neighbour, hf_generate), many),
    }
    big_tokens = args.big_vocab_tokens
    for vocab, batch in ((32_000, args.batch), (151_936, 8)):
        vtok, ve, va = make_pair(vocab, args.hidden, args.layers)
        vp = prompts_for(batch)
        vids, vmask = pad([encode_prompt(vtok, p) for p in vp], vtok.pad_token_id, side="left")
        cases[f"cd_v{vocab}"] = (cd(vp, model_pair=(ve, va), tokenizer=vtok, tokens=big_tokens), big_tokens * batch)
        cases[f"two_forwards_v{vocab}"] = ((lambda e=ve, a=va, i=vids, m=vmask:
                                            two_forwards(e, a, i, m, big_tokens, "auto")), big_tokens * batch)  # fmt: skip
        cases[f"ceiling_v{vocab}"] = ((lambda e=ve, a=va, i=vids, m=vmask:
                                       strict_ceiling(e, a, i, m, big_tokens, "auto")), big_tokens * batch)  # fmt: skip
    ratios = {name: RATIOS[name] for name in (args.ratios or RATIOS)}
    cases = {name: cases[name] for name in dict.fromkeys(c for pair in ratios.values() for c in pair)}
    # every case once to warm up, then `repeats` interleaved rounds
    best = {}
    for round_ in range(args.repeats + 1):
        for name, (fn, _) in cases.items():
            start = time.perf_counter()
            own = fn()  # a case may time itself (the contended one)
            elapsed = own if isinstance(own, float) else time.perf_counter() - start
            if round_ > 0:
                best[name] = min(best.get(name, float("inf")), elapsed)
    rate = {name: tokens / best[name] for name, (_, tokens) in cases.items()}
    return {"tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
            **{name: rate[faster] / rate[baseline] for name, (faster, baseline) in ratios.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--big-vocab-tokens", type=int, default=32, help="new tokens in the 32k / 152k cases")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per run; the best is kept")
    parser.add_argument("--runs", type=int, default=1, help="whole measurements; ratios get median and range")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--ratios", nargs="+", choices=sorted(RATIOS), help="measure only these ratios (default: all)")
    args = parser.parse_args()
    runs = [measure(args) for _ in range(args.runs)]
    result = {"threads": torch.get_num_threads(), "batch": args.batch, "new_tokens": args.new_tokens,
              "params_per_model_v101": n_parameters(make_pair(None, args.hidden, args.layers)[1]), "runs": args.runs,
              "repeats": args.repeats,  # every case's tokens/s: median over the runs, and its range
              "tokens_per_s": {case: round(statistics.median(r["tokens_per_s"][case] for r in runs), 1)
                               for case in runs[0]["tokens_per_s"]}}  # fmt: skip
    if len(runs) > 1:
        result["tokens_per_s_range"] = {case: [min(r["tokens_per_s"][case] for r in runs),
                                               max(r["tokens_per_s"][case] for r in runs)]
                                        for case in runs[0]["tokens_per_s"]}  # fmt: skip
    for key in runs[0]:
        if key != "tokens_per_s":
            values = [r[key] for r in runs]
            result[key] = round(statistics.median(values), 3)
            if len(values) > 1:
                result[f"{key}_range"] = [round(min(values), 3), round(max(values), 3)]
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
