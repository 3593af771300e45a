"""The README's CPU benchmark table, rendered from the committed JSON (`benchmarks/results/decoding_cpu2.json`), so
every figure in it comes from one place; `tests/test_readme.py` checks the README holds exactly this table.

    python benchmarks/readme_table.py [results/decoding_cpu2.json]   # prints the table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "decoding_cpu2.json"
PEERS = Path(__file__).resolve().parent / "results" / "decoding_cpu2_peers.json"  # the fairer peers (issue 24)
CEILING = Path(__file__).resolve().parent / "results" / "decoding_cpu2_ceiling.json"  # the strict ceiling
LAZY = Path(__file__).resolve().parent / "results" / "lazy_cd_cpu2.json"  # the lazy amateur, the study's weak pair
# (ratio key or keys joined by " / ", what it is, target)
ROWS = [
    ("cd_vs_hf_generate", "CD, two models a step, over one model's `generate`", ">= 0.65"),
    ("two_forwards_vs_hf_generate", "the two forwards alone, stepped as CD steps them, over `generate`", ""),
    ("cd_vs_two_forwards_v101", "CD over its two forwards, vocabulary 101", ">= 0.95"),
    ("cd_vs_two_forwards_v32000", "the same, vocabulary 32,000", ">= 0.85"),
    ("cd_vs_two_forwards_v151936", "the same, vocabulary 151,936", ""),
    ("batched_vs_one_at_a_time", "batch 32 over one prompt at a time", ">= 8"),
    ("contended_vs_quiet_b1", "batch 1 with a busy Python process beside it", ">= 0.8"),
    ("static_vs_dynamic_cache_b32", "preallocated over dynamic cache, batch 32", ""),
    ("static_vs_dynamic_cache_b1", "the same, batch 1", ""),
    ("cd_b1_vs_authors_b1", "congkit batch 1 over the authors' loop (peers at torch's default threads)", ""),
    ("cd_b1_vs_proxy_b1", "congkit batch 1 over a proxy-tuning style loop (the same)", ""),
    ("cd_b32_vs_authors_b1", "congkit batch 32 over the authors' batch 1", ""),
]


PEER_ROWS = [
    ("cd_vs_generate_processor_b32", "CD over the same-work peer: `generate` + the amateur in a logits processor, batch 32",
     ">= 1.3"),
    ("cd_vs_generate_processor_b1", "the same, batch 1", ">= 1.0"),
    ("cd_b1_vs_authors_b1", "congkit batch 1 over the authors' loop, both at congkit's thread policy", ""),
    ("contended_torch_vs_quiet_b1", "batch-1 CD beside a torch process multiplying matrices on all cores", ">= 0.6"),
    ("contended_torch_vs_quiet_b32", "the same, batch 32", ">= 0.6"),
    ("hf_generate_contended_torch_vs_quiet_b32", "plain `generate` beside the same neighbour, batch 32", ""),
]


CEILING_ROWS = [
    ("cd_vs_strict_ceiling_v101", "CD over exactly its two forwards (raw-logit argmax), vocabulary 101 (overhead <= 25%)",
     ">= 0.8"),
    ("cd_vs_strict_ceiling_v32000", "the same, vocabulary 32,000 (overhead <= 15%)", ">= 0.87"),
    ("cd_vs_strict_ceiling_v151936", "the same, vocabulary 151,936 (overhead <= 15%)", ">= 0.87"),
]


LAZY_ROWS = [
    ("cd_vs_strict_ceiling_b1", "CD (lazy path off) over the strict two-forward ceiling, batch 1", ">= 0.9"),
    ("cd_lazy_vs_strict_ceiling_b1", "lazy CD over the strict two-forward ceiling, batch 1", ">= 1.0"),
    ("cd_lazy_vs_eager_b1", "lazy CD over CD with the lazy path off, batch 1", ""),
    ("cd_lazy_vs_eager_b32", "the same, batch 32", ">= 1.0"),
    ("forced_fraction", "steps whose choice was forced (a one-token head), batch 1", ""),
    ("forced_fraction_b32", "steps forced in every row of a batch of 32", ""),
    ("amateur_forwards_per_token_b1", "the amateur's forwards per token, lazy, batch 1 (eager: 1)", ""),
]


def cell(results: dict, key: str) -> str:
    """A ratio's median and range as the README shows it: "0.78 [0.73, 0.82]"."""
    lo, hi = results[f"{key}_range"]
    return f"{results[key]:.2f} [{lo:.2f}, {hi:.2f}]"


def table(results: dict, rows: list = ROWS) -> str:
    """The README's markdown table of every ratio in `rows`, from a `decoding.py --json` result."""
    lines = ["| ratio | what it is | median [range] | target |", "| --- | --- | --- | --- |"]
    lines += [f"| `{key}` | {what} | {cell(results, key)} | {target} |" for key, what, target in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(table(json.loads(Path(sys.argv[1]).read_text())))
    else:
        print(table(json.loads(RESULTS.read_text())), table(json.loads(PEERS.read_text()), PEER_ROWS),
              table(json.loads(CEILING.read_text()), CEILING_ROWS), table(json.loads(LAZY.read_text()), LAZY_ROWS),
              sep="\n\n")
