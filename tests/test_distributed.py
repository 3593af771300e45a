import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from congkit import contrastive_generate
from congkit.pipeline.distributed import shard_bounds, sharded_generate

from .conftest import PROMPTS


@pytest.mark.parametrize("n,k", [(10, 3), (3, 4), (0, 2), (8, 8), (7, 1)])
def test_shards_are_contiguous_and_cover_everything(n, k):
    bounds = [shard_bounds(n, k, i) for i in range(k)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [e - s for s, e in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_single_process_sharded_equals_plain(expert, amateur, tokenizer):
    a = sharded_generate(expert, amateur, tokenizer, PROMPTS, alpha=0.4, seed=7, max_new_tokens=16)
    b = contrastive_generate(expert, amateur, tokenizer, PROMPTS, alpha=0.4, seed=7, max_new_tokens=16, progress=False)
    assert a.token_ids == b.token_ids


@pytest.mark.slow
def test_two_processes_merge_to_the_single_process_run(expert, amateur, tokenizer, tmp_path):
    """`accelerate launch` with 2 CPU processes: each decodes a shard; the merge equals one process."""
    for name, model in (("expert", expert), ("amateur", amateur)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    prompts = PROMPTS + [f"Add {i} and {i + 1}." for i in range(5)]  # 9 prompts: shards of 5 and 4
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    worker = Path(__file__).with_name("sharded_cd_worker.py")
    run = _launch([str(worker), str(tmp_path), str(tmp_path / "out.json"), str(tmp_path / "prompts.json")])
    assert run.returncode == 0, run.stderr[-3000:]
    merged = json.loads((tmp_path / "out.json").read_text())
    assert merged["processes"] == 2, run.stdout[-2000:] + run.stderr[-2000:]
    single = contrastive_generate(
        expert, amateur, tokenizer, prompts, alpha=0.4, seed=7, max_new_tokens=16, batch_size=3, progress=False
    )
    assert merged["ids"] == single.token_ids
    for got, want in zip(merged["rewards"], single.log_ratios):
        np.testing.assert_allclose(got, want, atol=1e-5)


def _launch(args, timeout=300):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    # `accelerate launch --cpu` starts one process unless an MPI launcher is installed; `--multi_gpu` starts the
    # processes with torchrun, and on a machine without CUDA they form one CPU (gloo) group (congkit.pipeline.distributed).
    flags = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd = [launcher, "launch", *flags, "--dynamo_backend", "no", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_training_stage_runs_under_accelerate_launch(tokenizer, tmp_path):
    """`python -m congkit.pipeline.cli train` under `accelerate launch` with 2 CPU processes (data parallel) saves a model."""
    import torch

    from congkit.models import load_causal_lm, tiny_llama

    model = tiny_llama(len(tokenizer), hidden_size=16, num_layers=1, num_heads=2, seed=3)
    model.save_pretrained(tmp_path / "start")
    tokenizer.save_pretrained(tmp_path / "start")
    from datasets import Dataset

    Dataset.from_dict({"prompt": PROMPTS * 2, "completion": ["Answer: 7"] * 8}).save_to_disk(str(tmp_path / "data"))
    run = _launch(
        [
            "-m",
            "congkit.pipeline.cli",
            "train",
            "--method",
            "sft",
            "--model",
            str(tmp_path / "start"),
            "--data",
            str(tmp_path / "data"),
            "--output",
            str(tmp_path / "out"),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--lr",
            "1e-2",
            "--device",
            "cpu",
        ]
    )
    assert run.returncode == 0, run.stderr[-3000:]
    trained = load_causal_lm(tmp_path / "out", device="cpu").state_dict()
    start = model.state_dict()
    assert any(not torch.equal(start[k], trained[k]) for k in start)
