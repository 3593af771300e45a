"""Why plan 2's knob worlds failed acceptance: does the weak pair learn the length instruction at any weak-DPO budget?

    python tools/plan2_length_diagnosis.py --runs runs --out results/plan2/length_diagnosis.csv

A diagnosis after plan 2's run, not part of its pre-registered analysis. For a few drawn worlds (a knob world that
failed on the length probe, and an accepted original world beside it), it trains the weak DPO at budgets outside
plan 2's weak-DPO grid (learning rate x up to 16, epochs up to 32, DPO beta 0.5, 12 samples a prompt for the pairs
instead of 4), and a wider weak model (48 and 64 instead of 32, in the spread world and at 64 in the original one), and
measures each attribute probe on the validation prompts, the length probe split by instruction.
Every model is a cached stage (`runs/plan2-<level>-world-<seed>/`), so a rerun only reads.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from congkit.pipeline import measure
from congkit.study.plan2 import plan2_config, probe_accuracy, world_pipeline

# (level, world seed, weak model width, pool samples per prompt, learning-rate multiplier, epochs, DPO beta or None)
BUDGETS = ((4, 1.0, 8, None), (4, 4.0, 16, None), (4, 8.0, 16, None), (4, 16.0, 16, None), (4, 4.0, 32, None),
           (4, 2.0, 8, 0.5), (4, 8.0, 16, 0.5), (12, 1.0, 8, None), (12, 2.0, 8, None))  # fmt: skip
CASES = ([("spread", 5, 32, *b) for b in BUDGETS] + [("original", 1, 32, *b) for b in BUDGETS]
         + [("spread", 5, width, 4, m, 8, None) for width in (48, 64) for m in (1.0, 2.0)]
         + [("original", 1, 64, 4, m, 8, None) for m in (1.0, 2.0)])  # fmt: skip


def case_pipeline(level: str, world: int, width: int, samples: int, runs: Path):
    """The plan's world `world` of `level` with a weak model `width` wide (amendment 1's run: 32) and a pipeline on it
    (the plan's run's folder: the width is in the world's key, so no stage is shared across widths)."""
    config = dataclasses.replace(plan2_config(), n_preference_samples=samples)
    return world_pipeline(level, world, runs, config, weak_width=width)


def diagnose(runs: Path) -> pd.DataFrame:
    rows = []
    for level, world, width, n, multiplier, epochs, beta in CASES:
        pipe = case_pipeline(level, world, width, n, runs)
        base, seed = pipe.config.weak_dpo, pipe.config.seeds[0]
        cfg = dataclasses.replace(base, learning_rate=base.learning_rate * multiplier, num_train_epochs=epochs,
                                  **({"beta": beta} if beta is not None else {}))  # fmt: skip
        pair = pipe.weak_pair(pipe.weak_aligned(seed, 0.0, cfg))
        probes = measure.attribute_probes(*pair, pipe.tokenizer, list(pipe.prompts("valid")),
                                          pipe.setting.preference_probes, pipe.chat).to_pandas()  # fmt: skip
        length = probes[probes.attribute == "length"]
        right = length.implicit_better > length.implicit_worse
        rows.append({"level": level, "world": world, "weak_width": width, "samples_per_prompt": n,
                     "lr_multiplier": multiplier, "epochs": epochs, "beta": cfg.beta, **probe_accuracy(probes),
                     "length_short": float(right[length.prompt.str.endswith("length=short")].mean()),
                     "length_full": float(right[length.prompt.str.endswith("length=full")].mean())})  # fmt: skip
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--out", default="results/plan2/length_diagnosis.csv")
    args = parser.parse_args()
    table = diagnose(Path(args.runs))
    table.round(4).to_csv(args.out, index=False)
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
