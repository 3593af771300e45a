"""Command-line stages that run unchanged on one process or under `accelerate launch` (DDP, DeepSpeed ZeRO-3).

    accelerate launch --config_file configs/accelerate/zero3.yaml -m congkit.cli train --method sft \\
        --model Qwen/Qwen2.5-7B-Instruct --data runs/cd_samples --output runs/cong_s
    accelerate launch --num_processes 8 -m congkit.cli generate --expert runs/pi_r --amateur Qwen/Qwen2.5-3B-Instruct \\
        --prompts prompts_folder --output runs/cd_samples --alpha 0.5

`train` reads a `save_to_disk` dataset (sft/auxconf/wspo: prompt, completion; dpo: prompt, chosen, rejected; text
columns) and writes the model with `trainer.save_model` (main process, ZeRO-3 weights gathered). `generate` shards the
prompts across processes (`congkit.distributed`) and the main process writes (prompt, completion, implicit) to disk.

Outputs are written beside `--output` and swapped in when complete, with a `.congkit-cli.json` mark naming the
command and its arguments. An existing `--output` is refused unless it is an earlier output of the same command and
`--overwrite` is given: the CLI never replaces or deletes what it did not write.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from datasets import Dataset

from . import cong
from .cache import swap_in
from .data import load_saved_dataset
from .decoding import DecodingConfig
from .distributed import process_state, sharded_generate
from .models import load_causal_lm, load_tokenizer
from .tokens import has_chat_template
from .training import TrainConfig

METHODS = ("sft", "auxconf", "wspo", "dpo")


INPUT_ARGS = ("data", "prompts", "model", "ref_model", "weak_model", "weak_ref_model", "expert", "amateur", "tokenizer")


MARK = ".congkit-cli.json"  # written into every output of this CLI: what it is and which command wrote it


def check_output(args: argparse.Namespace) -> None:
    """Refuse an --output that overlaps one of the inputs (writing it would destroy that input), or that already
    exists and is not an output of this command that --overwrite allows to replace: nothing the CLI did not write is
    ever replaced or deleted."""
    out = Path(args.output).resolve()
    for name in INPUT_ARGS:
        value = getattr(args, name, None)
        if not value or not Path(value).exists():
            continue
        source = Path(value).resolve()
        if out == source or source in out.parents or out in source.parents:
            raise SystemExit(f"error: --output {args.output!r} overlaps the input --{name.replace('_', '-')} "
                             f"{value!r}; writing it would destroy the input. Choose another --output.")  # fmt: skip
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise SystemExit(f"error: --output {args.output!r} is an existing file, not written by this command; "
                         "choose another --output")  # fmt: skip
    written = _read_mark(out)
    if written is None or written.get("command") != args.command:
        raise SystemExit(f"error: --output {args.output!r} already exists and was not written by "
                         f"`congkit.cli {args.command}`; nothing is replaced. Choose another --output.")  # fmt: skip
    if not args.overwrite:
        raise SystemExit(f"error: --output {args.output!r} holds an earlier `{args.command}` output; "
                         "pass --overwrite to replace it")  # fmt: skip


def _read_mark(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARK).read_text())
    except (OSError, ValueError):
        return None


def write_mark(folder: str | Path, args: argparse.Namespace) -> None:
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "overwrite")}
    (Path(folder) / MARK).write_text(json.dumps({"command": args.command, "written_by": "congkit.cli",
                                                 "arguments": settings}, indent=1, sort_keys=True, default=str))


def read_dataset(path: str, flag: str, columns: tuple[str, ...]) -> Dataset:
    """A saved dataset given on the command line, with the columns the command needs, as text, and at least one
    row."""
    try:
        data = load_saved_dataset(path)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {flag}: {error}") from error
    missing = [c for c in columns if c not in data.column_names]
    if missing:
        raise SystemExit(f"error: {flag} {path!r} lacks column(s) {missing}; it has {data.column_names}")
    if len(data) == 0:
        raise SystemExit(f"error: {flag} {path!r} is empty: nothing to do")
    for c in columns:
        dtype = getattr(data.features[c], "dtype", None)
        if dtype not in ("string", "large_string"):
            raise SystemExit(f"error: {flag} {path!r}: column {c!r} must hold text (strings), it holds "
                             f"{data.features[c]}")  # fmt: skip
    return data


def _at_least(minimum: int):
    """argparse type: an int >= minimum (argparse turns the ValueError into 'invalid value' naming the flag)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def _positive(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a finite number > 0")
    return value


_positive.__name__ = "number > 0"


def _train(args: argparse.Namespace) -> None:
    columns = ("prompt", "chosen", "rejected") if args.method == "dpo" else ("prompt", "completion")
    data = read_dataset(args.data, "--data", columns)
    tok = load_tokenizer(args.tokenizer or args.model)
    device = process_state().device.type if args.device is None else args.device
    cfg = TrainConfig(learning_rate=args.lr, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                      gradient_accumulation_steps=args.grad_accum, beta=args.beta, seed=args.seed,
                      max_steps=args.max_steps)  # fmt: skip
    model = load_causal_lm(args.model, device=device)
    state = process_state()
    tmp = _partial(args.output)  # trained and saved beside the output, swapped in only when complete
    if state.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # what a killed run left
    state.wait_for_everyone()
    work, save = str(tmp / "_trainer"), str(tmp)
    if args.method == "dpo":
        cong.dpo(model, load_causal_lm(args.ref_model or args.model, device=device), tok, data, cfg, work, save)
    elif args.method == "wspo":
        if not (args.weak_model and args.weak_ref_model):
            raise SystemExit("wspo needs --weak-model and --weak-ref-model (and uses --ref-model or --model as reference)")
        frozen = [load_causal_lm(m, device=device) for m in (args.ref_model or args.model, args.weak_model,
                                                             args.weak_ref_model)]  # fmt: skip
        cong.wspo(model, *frozen, tok, data, cfg, work_dir=work, save_to=save)
    elif args.method == "auxconf":
        cong.auxconf(model, tok, data, cfg, aux_weight=0.5, work_dir=work, save_to=save)
    else:
        cong.sft(model, tok, data, cfg, work, save)
    state.wait_for_everyone()
    if state.is_main_process:
        shutil.rmtree(tmp / "_trainer", ignore_errors=True)
        _publish(tmp, args)


def _partial(output: str) -> Path:
    out = Path(output)
    return out.parent / f".{out.name}.partial"


def _publish(tmp: Path, args: argparse.Namespace) -> None:
    """Mark `tmp` as this command's output and swap it in at --output (the earlier output, which --overwrite allowed
    to replace, is deleted only once the new one is in place)."""
    write_mark(tmp, args)
    swap_in(tmp, args.output)


def _generate(args: argparse.Namespace) -> None:
    config = DecodingConfig.authors(alpha=args.alpha, min_p=args.min_p if args.amateur else None,
                                    temperature=args.temperature, top_p=args.top_p,
                                    repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
                                    seed=args.seed, batch_size=args.batch_size)  # fmt: skip
    try:
        config.validate(contrastive=bool(args.amateur))
    except (TypeError, ValueError) as error:
        raise SystemExit(f"error: {error}") from error
    prompts = list(read_dataset(args.prompts, "--prompts", ("prompt",))["prompt"])
    state = process_state()
    tok = load_tokenizer(args.tokenizer or args.expert)
    device = state.device.type if args.device is None else args.device
    expert = load_causal_lm(args.expert, device=device)
    amateur = load_causal_lm(args.amateur, device=device) if args.amateur else None
    chat = has_chat_template(tok) if args.apply_chat_template is None else args.apply_chat_template
    out = sharded_generate(expert, amateur, tok, prompts, config, progress=state.is_main_process,
                           apply_chat_template=chat)  # fmt: skip
    if state.is_main_process:
        columns = {"prompt": prompts, "completion": out.texts}
        if out.log_ratios is not None:
            columns["implicit"] = out.implicit_reward(beta=1.0).total  # summed log-ratio (nats)
        tmp = _partial(args.output)
        shutil.rmtree(tmp, ignore_errors=True)
        Dataset.from_dict(columns).save_to_disk(str(tmp))
        _publish(tmp, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m congkit.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="one training stage (TRL trainer)")
    train.add_argument("--method", choices=METHODS, required=True)
    train.add_argument("--model", required=True)
    train.add_argument("--data", required=True, help="a save_to_disk dataset folder")
    train.add_argument("--output", required=True, help="a new folder (or an earlier train output, with --overwrite)")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command")
    train.add_argument("--tokenizer")
    train.add_argument("--ref-model")
    train.add_argument("--weak-model")
    train.add_argument("--weak-ref-model")
    train.add_argument("--lr", type=_positive, default=1e-5)
    train.add_argument("--epochs", type=_positive, default=1.0)
    train.add_argument("--max-steps", type=int, default=-1)
    train.add_argument("--batch-size", type=_at_least(1), default=4)
    train.add_argument("--grad-accum", type=_at_least(1), default=1)
    train.add_argument("--beta", type=_positive, default=0.1)
    train.add_argument("--seed", type=_at_least(0), default=0)
    train.add_argument("--device")
    gen = sub.add_parser("generate", help="CD (or plain sampling without --amateur), sharded across processes")
    gen.add_argument("--expert", required=True)
    gen.add_argument("--amateur")
    gen.add_argument("--prompts", required=True, help="a save_to_disk dataset folder with a prompt column")
    gen.add_argument("--output", required=True, help="a new folder (or an earlier generate output, with --overwrite)")
    gen.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command")
    gen.add_argument("--tokenizer")
    gen.add_argument("--alpha", type=float, default=0.5)
    gen.add_argument("--min-p", "--lam", dest="min_p", type=float, default=0.1,
                     help="the plausibility head's threshold lambda (--lam: its former name)")
    gen.add_argument("--apply-chat-template", action=argparse.BooleanOptionalAction, default=None,
                     help="make each prompt string one user turn (default: when the tokenizer has a chat template, "
                          "as `train` hands string data to TRL)")  # fmt: skip
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--repetition-penalty", type=float, default=1.2)
    gen.add_argument("--max-new-tokens", type=_at_least(1), default=512)
    gen.add_argument("--batch-size", type=_at_least(1), default=32)
    gen.add_argument("--seed", type=_at_least(0), default=0)
    gen.add_argument("--device")
    args = parser.parse_args(argv)
    check_output(args)
    (_train if args.command == "train" else _generate)(args)


if __name__ == "__main__":
    main()
