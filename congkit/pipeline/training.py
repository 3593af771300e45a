"""Thin, shared wrappers around TRL's trainers: one place that maps a `TrainConfig` to TRL's configs.

Data is always a `datasets.Dataset`. With a chat template it is passed in TRL's conversational format
(`prompt` = [user message], `completion` / `chosen` / `rejected` = [assistant message]); without one, as plain text.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from congkit.inputs import check_int, check_number, is_conversation
from congkit.models import default_device, default_dtype
from congkit.pipeline.data import content_key
from congkit.tokens import as_conversation, has_chat_template


@dataclass
class TrainConfig:
    """Optimisation settings of one training stage, in TRL's / transformers' names, from which `train_sft` and
    `train_dpo` build TRL's `SFTConfig` / `DPOConfig` (`_common_args`).

    Why a thin dataclass of our own rather than an `SFTConfig` / `DPOConfig`: one set of settings serves SFT, DPO and
    the custom-loss trainers (AuxConf, WSPO) alike, and it enters cache keys whole (`cache_view`), which TRL's
    configs cannot (they carry an output folder, devices, logging and dozens of defaults that change between TRL
    releases without changing results). Fields that cannot change a result are marked `{"cache": False}`."""

    learning_rate: float = 1e-3
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.1  # a float in [0, 1) is a fraction of the steps
    weight_decay: float = 0.0
    seed: int = 0
    # enough logged points for a training curve (runs here are tens of steps); not part of any cache key
    logging_steps: int = field(default=2, metadata={"cache": False})
    beta: float = 0.1  # DPO / WSPO only
    dpo_loss: list[str] = field(default_factory=lambda: ["sigmoid"])  # TRL loss_type; ["sigmoid", "sft"] = RPO
    dpo_loss_weights: list[float] | None = None
    # recompute activations in the backward pass to save memory (TRL's SFT/DPO default on): on CPU the recomputation
    # gives the same numbers (tested), so not part of any cache key; off here, where it cost 17% of a strong training
    activation_checkpointing: bool = field(default=False, metadata={"cache": False})

    def validate(self, name: str = "TrainConfig") -> None:
        """One-line errors for settings that cannot train: a learning rate or epochs that are not positive (without
        `max_steps`), batch sizes below one, a negative warm-up (a fraction below 1, or a step count)."""
        check_number(f"{name}.learning_rate", self.learning_rate, 0.0, low_open=True)
        check_int(f"{name}.max_steps", self.max_steps)
        if self.max_steps <= 0:
            check_number(f"{name}.num_train_epochs", self.num_train_epochs, 0.0, low_open=True)
        check_int(f"{name}.per_device_train_batch_size", self.per_device_train_batch_size, 1)
        check_int(f"{name}.gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        check_number(f"{name}.warmup_steps", self.warmup_steps, 0.0)


class TrainingChangesNothing(ValueError):
    """The training asked for would leave every weight as it is (no optimiser step at a learning rate above 0)."""


def optimiser_steps(batches_per_epoch: int, args) -> tuple[int, int]:
    """(optimiser steps, warm-up steps) a transformers `Trainer` takes with `args` over `batches_per_epoch` batches:
    ceil(batches / accumulation) steps an epoch, ceil(epochs x that) in all (or `max_steps`)."""
    per_epoch = max(math.ceil(batches_per_epoch / args.gradient_accumulation_steps), 1)
    total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
    return total, args.get_warmup_steps(total)


def require_training(batches_per_epoch: int, args) -> None:
    """Refuse a training that changes no weight: transformers' schedules start a linear warm-up at a learning rate
    of 0, so with w >= 1 warm-up steps the first step moves nothing and at least two steps are needed (one without
    warm-up); no data or a learning rate of 0 never trains."""
    total, warmup = optimiser_steps(batches_per_epoch, args)
    if batches_per_epoch == 0 or args.learning_rate <= 0 or total < (2 if warmup >= 1 else 1):
        raise TrainingChangesNothing(
            f"this training would change no weight: {batches_per_epoch} batches an epoch, {total} optimiser step(s), "
            f"{warmup} of them warm-up from a learning rate of 0 (learning_rate {args.learning_rate}, epochs "
            f"{args.num_train_epochs}, max_steps {args.max_steps}); train longer, on more data, or without warm-up")


class LossHistory(TrainerCallback):
    """Keeps every logged training metric (for the book's training curves), but not wall-clock ones (runtime,
    samples per second): a retrained model then has a byte-identical history, so its artifact's content digest, and
    every key downstream of it, stay the same."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            kept = {k: float(v) for k, v in logs.items() if _number(v) and not _wall_clock(k)}
            self.rows.append({"step": state.global_step, **kept})


def _wall_clock(name: str) -> bool:
    return name.endswith("runtime") or name.endswith("per_second")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _common_args(cfg: TrainConfig, output_dir: str, device: str | None = None,
                 bf16_supported: bool | None = None) -> dict:  # fmt: skip
    """TRL / transformers arguments shared by every trainer. `device` (default: `default_device()`) decides CPU or
    GPU training, and `default_dtype` whether a GPU trains in bf16; both can be forced (the tests run both)."""
    device = device or default_device()
    return dict(
        output_dir=output_dir,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to=[],
        bf16=default_dtype(device, bf16_supported) == torch.bfloat16,
        use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0,
        disable_tqdm=quiet(),
        activation_checkpointing=cfg.activation_checkpointing,
    )


def to_trl_format(tokenizer: PreTrainedTokenizerBase, ds: Dataset, columns: tuple[str, ...]) -> Dataset:
    """(prompt, <columns>) text columns -> TRL's conversational format when the tokenizer has a chat template."""
    missing = [c for c in ("prompt",) + columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"dataset lacks column(s) {missing}; it has {ds.column_names}")
    ds = ds.select_columns(["prompt", *columns])
    for column in ("prompt", *columns):
        bad = next((i for i, v in enumerate(ds[column]) if not isinstance(v, str) and not is_conversation(v)), None)
        if bad is not None:
            raise ValueError(f"training data row {bad}: {column} must be text (or a conversation for the prompt), "
                             f"got {ds[column][bad]!r:.40}")  # fmt: skip
    if not has_chat_template(tokenizer):
        return ds

    def convert(row):
        out = {"prompt": as_conversation(row["prompt"])}
        for c in columns:
            out[c] = [{"role": "assistant", "content": row[c]}]
        return out

    return ds.map(convert)


def _quiet_transformers():
    logging.getLogger("transformers").setLevel(logging.ERROR)


def quiet() -> bool:
    """CONGKIT_QUIET=1 (notebook runs, CI): no progress bars and no printed training logs; LossHistory still records."""
    return os.environ.get("CONGKIT_QUIET") == "1"


def _fit(trainer, history: LossHistory, save_to: str | None) -> tuple[PreTrainedModel, list[dict]]:
    args = trainer.args  # batches an epoch as the trainer's sampler forms them (no last batch dropped)
    require_training(math.ceil(len(trainer.train_dataset) / (args.per_device_train_batch_size * args.world_size)), args)
    if quiet():  # with tqdm disabled, Trainer prints every log dict instead: drop that printer too
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    if save_to is not None:
        trainer.save_model(save_to)
    return trainer.model.eval(), history.rows


# SFT-ready datasets this process has tokenised, by (content, tokenizer): SFTTrainer (and its subclasses here) skips
# its tokenisation for a dataset that already has `input_ids`, so methods sharing training data tokenise it once
# (the same trained weights, tested; the tokenisation was ~6% of a strong training)
_TOKENISED: dict[tuple, tuple] = {}


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: Dataset,
    cfg: TrainConfig,
    output_dir: str,
    trainer_cls: type[SFTTrainer] = SFTTrainer,
    save_to: str | None = None,
    **trainer_kwargs,
) -> tuple[PreTrainedModel, list[dict]]:
    """Supervised fine-tuning on (prompt, completion) with TRL's SFTTrainer; loss on completion tokens only.

    `save_to`: write the trained model and tokenizer there with `trainer.save_model` (main process only, ZeRO-3
    weights gathered), so the same call works under `accelerate launch`.
    """
    _quiet_transformers()
    cfg.validate()
    args = SFTConfig(**_common_args(cfg, output_dir), completion_only_loss=True, max_length=None)
    history = LossHistory()
    key = (content_key(data), id(tokenizer))
    known = _TOKENISED.get(key)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=known[1] if known and known[0] is tokenizer else to_trl_format(tokenizer, data, ("completion",)),
        processing_class=tokenizer,
        callbacks=[history],
        **trainer_kwargs,
    )
    _TOKENISED[key] = (tokenizer, trainer.train_dataset)
    while len(_TOKENISED) > 8:  # the most recent few: a study replicate reuses each dataset within a few trainings
        del _TOKENISED[next(iter(_TOKENISED))]
    return _fit(trainer, history, save_to)


def train_dpo(
    model: PreTrainedModel,
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: Dataset,
    cfg: TrainConfig,
    output_dir: str,
    save_to: str | None = None,
) -> tuple[PreTrainedModel, list[dict]]:
    """DPO with TRL's DPOTrainer on (prompt, chosen, rejected), `ref_model` frozen; `save_to` as in `train_sft`."""
    _quiet_transformers()
    cfg.validate()
    args = DPOConfig(
        **_common_args(cfg, output_dir),
        beta=cfg.beta,
        max_length=None,
        loss_type=list(cfg.dpo_loss),
        loss_weights=cfg.dpo_loss_weights,
    )
    history = LossHistory()
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=to_trl_format(tokenizer, data, ("chosen", "rejected")),
        processing_class=tokenizer,
        callbacks=[history],
    )
    return _fit(trainer, history, save_to)
