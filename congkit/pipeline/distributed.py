"""Contrastive decoding sharded across `accelerate` processes (GPUs, or CPU processes for tests).

    accelerate launch --multi_gpu --num_processes 8 my_script.py      # inside: sharded_generate(...)

Each process decodes one contiguous shard of the prompts; results are gathered to every process in prompt order.
Because congkit seeds each prompt's randomness by (seed, global prompt index), the merged output equals a
single-process run with the same seed, whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence

from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from congkit.decoding import DecodingConfig, Generation, contrastive_generate, sample
from congkit.models import default_device


def shard_bounds(n: int, num_processes: int, index: int) -> tuple[int, int]:
    """[start, end) of process `index`'s contiguous shard of n items (sizes differ by at most one)."""
    base, extra = divmod(n, num_processes)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def process_state(device: str | None = None) -> PartialState:
    """accelerate's process state; on a machine without CUDA, processes started by `accelerate launch --multi_gpu`
    (torchrun) join one CPU process group (gloo), as `accelerate launch --cpu` does only through an MPI launcher.
    `device` (default: `default_device()`) can be forced. Call it before loading models: `from_pretrained` may create
    the (singleton) state itself, without the CPU flag."""
    return PartialState(cpu=not (device or default_device()).startswith("cuda"))


def sharded_generate(
    expert: PreTrainedModel,
    amateur: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: DecodingConfig | None = None,
    progress: bool = False,
    **overrides,
) -> Generation:
    """CD (or plain sampling when `amateur` is None) over this process's shard, gathered in prompt order."""
    state = process_state()
    prompts = list(prompts)
    start, end = shard_bounds(len(prompts), state.num_processes, state.process_index)
    shard = prompts[start:end]
    if amateur is None:
        local = sample(expert, tokenizer, shard, config, index_offset=start, progress=progress, **overrides)
    else:
        local = contrastive_generate(
            expert, amateur, tokenizer, shard, config, index_offset=start, progress=progress, **overrides
        )
    n = local.config["num_return_sequences"]  # rows per prompt, prompt by prompt
    rows = list(zip(range(start * n, end * n), local.texts, local.token_ids, local.log_ratios or [None] * len(local)))
    merged = sorted(gather_object(rows), key=lambda r: r[0]) if state.num_processes > 1 else rows
    rewards = [r[3] for r in merged] if amateur is not None else None
    prompts = [p for p in prompts for _ in range(n)]
    return Generation(prompts, [r[1] for r in merged], [r[2] for r in merged], rewards, local.config)
