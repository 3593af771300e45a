"""What `import congkit` costs on top of `import transformers` (issue: <= 0.3 s), measured in fresh interpreters.

    python benchmarks/import_time.py [--repeats 7] [--json]

Each statement runs in a new `python -c` process, the cases interleaved, best of `repeats` (the machine is shared and
noisy; the best run is the least disturbed). Reported: seconds per case and the differences that matter.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CASES = {
    "python": "pass",
    "transformers": "import transformers",
    "congkit": "import transformers, congkit",
    "congkit_decoding": "import congkit.decoding",
    "transformers_model_classes": "from transformers import PreTrainedModel, GenerationConfig",
    "congkit_pipeline": "import congkit.pipeline",
}


def best_times(repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in CASES}
    for _ in range(repeats):
        for name, statement in CASES.items():  # interleaved: a slow moment hits every case alike
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", statement], check=True)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    t = best_times(args.repeats)
    out = {f"{k}_s": round(v, 3) for k, v in t.items()}
    out["import_congkit_over_transformers_s"] = round(t["congkit"] - t["transformers"], 3)
    out["congkit_decoding_over_transformers_model_classes_s"] = round(
        t["congkit_decoding"] - t["transformers_model_classes"], 3)  # fmt: skip
    out["import_congkit_ratio_to_transformers"] = round(t["congkit"] / t["transformers"], 3)
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
