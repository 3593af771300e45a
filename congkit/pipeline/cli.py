"""Command-line stages that run unchanged on one process or under `accelerate launch` (DDP, DeepSpeed ZeRO-3).

    accelerate launch --config_file configs/accelerate/zero3.yaml -m congkit.pipeline.cli train --method sft \\
        --model Qwen/Qwen2.5-7B-Instruct --data runs/cd_samples --output runs/cong_s
    accelerate launch --num_processes 8 -m congkit.pipeline.cli generate --expert runs/pi_r --amateur Qwen/Qwen2.5-3B-Instruct \\
        --prompts prompts_folder --output runs/cd_samples --alpha 0.5

`train` reads a `save_to_disk` dataset (sft/auxconf/wspo: prompt, completion; dpo: prompt, chosen, rejected; text
columns) and writes the model with `trainer.save_model` (main process, ZeRO-3 weights gathered). `generate` shards the
prompts across processes (`congkit.pipeline.distributed`) and the main process writes (prompt, completion, implicit) to disk.

Outputs are claimed when the command starts (a lock beside `--output`: a second run on the same `--output` is
refused), built in `.NAME.partial` beside it and swapped in when complete, with a `.congkit-cli.json` mark naming the
command and its arguments. An existing `--output` is refused unless it is an earlier output of the same command and
`--overwrite` is given; one that appears while the command runs is left alone (the result stays in the partial
folder). The CLI never replaces or deletes what it did not write.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from congkit._extras import missing_extra

try:  # `python -m congkit.pipeline.cli` runs as __main__, past the import hook that names a missing extra: name it here
    from datasets import Dataset
    from filelock import FileLock, Timeout

    from congkit.pipeline import cong
    from congkit.pipeline.cache import swap_in
    from congkit.pipeline.data import load_saved_dataset
    from congkit.pipeline.distributed import process_state, sharded_generate
    from congkit.pipeline.training import TrainConfig, TrainingChangesNothing
except ModuleNotFoundError as error:
    hinted = missing_extra(error, "congkit.pipeline.cli")
    if hinted is None:
        raise
    raise SystemExit(f"error: {hinted}") from error

from congkit.decoding import DecodingConfig
from congkit.models import load_causal_lm, load_tokenizer
from congkit.tokens import has_chat_template

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
    given = Path(args.output)
    if given.is_symlink() and not given.exists():
        raise SystemExit(f"error: --output {args.output!r} is a symbolic link to nothing ({os.readlink(given)}); "
                         "choose another --output")  # fmt: skip
    if not out.exists():
        return
    if not out.is_dir():
        raise SystemExit(f"error: --output {args.output!r} is an existing file, not written by this command; "
                         "choose another --output")  # fmt: skip
    written = _read_mark(out)
    if written is None or written.get("command") != args.command:
        raise SystemExit(f"error: --output {args.output!r} already exists and was not written by "
                         f"`congkit.pipeline.cli {args.command}`; nothing is replaced. Choose another --output.")  # fmt: skip
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
    (Path(folder) / MARK).write_text(json.dumps({"command": args.command, "written_by": "congkit.pipeline.cli",
                                                 "arguments": settings}, indent=1, sort_keys=True, default=str))


PARTIAL_MARK = ".congkit-cli-partial"  # in a .NAME.partial folder this CLI made (and may therefore remove)


@dataclass
class Claim:
    """--output claimed for one run: a lock beside it (no second run may write it at the same time), whether it held
    an earlier output of this command when the run started, and the `.NAME.partial` folder the result is built in."""

    lock: FileLock | None
    existed: bool
    partial: Path


def claim_output(args: argparse.Namespace, main_process: bool = True) -> Claim:
    """Claim --output before any work: refuse when another run holds it, or when a `.NAME.partial` folder this CLI
    did not make is in the way (a killed run's own partial folder is removed). Other processes of a launch only
    learn the partial folder's name."""
    out, partial = Path(args.output), _partial(args.output)
    if not main_process:
        return Claim(None, out.exists(), partial)
    lock = FileLock(str(out.parent / f".{out.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SystemExit(f"error: another congkit.pipeline.cli run is writing --output {args.output!r} (it holds "
                         f"{lock.lock_file}); wait for it to finish or choose another --output") from None
    if partial.exists() or partial.is_symlink():
        if not (partial.is_dir() and (partial / PARTIAL_MARK).is_file()):
            lock.release()
            raise SystemExit(f"error: {str(partial)!r} is in the way of --output {args.output!r} and was not made by "
                             "congkit.pipeline.cli: nothing is deleted; move it away")  # fmt: skip
        shutil.rmtree(partial)  # a killed run's unfinished result
    partial.mkdir(parents=True)
    (partial / PARTIAL_MARK).write_text(json.dumps({"command": args.command, "output": str(out)}))
    return Claim(lock, out.exists(), partial)


def publish(claim: Claim, args: argparse.Namespace) -> None:
    """Mark the finished result as this command's output and swap it in at --output. An --output that appeared while
    the run worked, or that no longer holds this command's earlier output, is not replaced: the result stays in the
    partial folder, and the error says where."""
    out = Path(args.output)
    written = _read_mark(out) if out.is_dir() else None
    ours = claim.existed and written is not None and written.get("command") == args.command
    if (out.exists() or out.is_symlink()) and not ours:
        raise SystemExit(f"error: --output {args.output!r} appeared or changed while this run worked; it is left as "
                         f"it is and the result is kept in {str(claim.partial)!r}")  # fmt: skip
    (claim.partial / PARTIAL_MARK).unlink()
    write_mark(claim.partial, args)
    swap_in(claim.partial, args.output)
    if claim.lock is not None:
        claim.lock.release()


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


def _loaded(load, flag: str, name: str, **kw):
    """`load(name)`, or a one-line error naming the flag and the model when it cannot be loaded."""
    try:
        return load(name, **kw)
    except (OSError, ValueError, TypeError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SystemExit(f"error: {flag} {name!r} cannot be loaded: {first}") from error


def _train(args: argparse.Namespace, claim: Claim) -> None:
    columns = ("prompt", "chosen", "rejected") if args.method == "dpo" else ("prompt", "completion")
    data = read_dataset(args.data, "--data", columns)
    tok = _loaded(load_tokenizer, "--tokenizer" if args.tokenizer else "--model", args.tokenizer or args.model)
    device = process_state().device.type if args.device is None else args.device
    cfg = TrainConfig(learning_rate=args.lr, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                      gradient_accumulation_steps=args.grad_accum, beta=args.beta, seed=args.seed,
                      max_steps=args.max_steps)  # fmt: skip
    model = _loaded(load_causal_lm, "--model", args.model, device=device)
    state = process_state()
    tmp = claim.partial  # trained and saved beside the output, swapped in only when complete
    state.wait_for_everyone()
    work, save = str(tmp / "_trainer"), str(tmp)
    try:
        _train_method(args, model, tok, data, cfg, device, work, save)
    except TrainingChangesNothing as error:
        raise SystemExit(f"error: {error}") from None
    state.wait_for_everyone()
    if state.is_main_process:
        shutil.rmtree(tmp / "_trainer", ignore_errors=True)
        publish(claim, args)


def _train_method(args: argparse.Namespace, model, tok, data, cfg: TrainConfig, device: str, work: str,
                  save: str) -> None:  # fmt: skip
    if args.method == "dpo":
        reference = _loaded(load_causal_lm, "--ref-model", args.ref_model or args.model, device=device)
        cong.dpo(model, reference, tok, data, cfg, work, save)
    elif args.method == "wspo":
        if not (args.weak_model and args.weak_ref_model):
            raise SystemExit("wspo needs --weak-model and --weak-ref-model (and uses --ref-model or --model as reference)")
        frozen = [_loaded(load_causal_lm, flag, m, device=device) for flag, m in (
            ("--ref-model", args.ref_model or args.model), ("--weak-model", args.weak_model),
            ("--weak-ref-model", args.weak_ref_model))]  # fmt: skip
        cong.wspo(model, *frozen, tok, data, cfg, work_dir=work, save_to=save)
    elif args.method == "auxconf":
        cong.auxconf(model, tok, data, cfg, aux_weight=0.5, work_dir=work, save_to=save)
    else:
        cong.sft(model, tok, data, cfg, work, save)


def _partial(output: str) -> Path:
    out = Path(output)
    return out.parent / f".{out.name}.partial"


def _generate(args: argparse.Namespace, claim: Claim) -> None:
    config = DecodingConfig.authors(alpha=args.alpha, plausibility_threshold=args.plausibility_threshold
                                    if args.amateur else None, do_sample=not args.greedy, temperature=args.temperature,
                                    top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                                    repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
                                    num_return_sequences=args.samples_per_prompt, seed=args.seed,
                                    batch_size=args.batch_size)  # fmt: skip
    try:
        config.validate(contrastive=bool(args.amateur))
    except (TypeError, ValueError) as error:
        raise SystemExit(f"error: {error}") from error
    prompts = list(read_dataset(args.prompts, "--prompts", ("prompt",))["prompt"])
    state = process_state()
    tok = _loaded(load_tokenizer, "--tokenizer" if args.tokenizer else "--expert", args.tokenizer or args.expert)
    device = state.device.type if args.device is None else args.device
    expert = _loaded(load_causal_lm, "--expert", args.expert, device=device)
    amateur = _loaded(load_causal_lm, "--amateur", args.amateur, device=device) if args.amateur else None
    chat = has_chat_template(tok) if args.apply_chat_template is None else args.apply_chat_template
    try:
        out = sharded_generate(expert, amateur, tok, prompts, config, progress=state.is_main_process,
                               apply_chat_template=chat)  # fmt: skip
    except (TypeError, ValueError) as error:  # two models that do not pair, a tokenizer that is not theirs
        raise SystemExit(f"error: {error}") from error
    if state.is_main_process:
        columns = {"prompt": out.prompts, "completion": out.texts}
        if out.log_ratios is not None:
            columns["implicit"] = out.implicit_reward(beta=1.0).total  # summed log-ratio (nats)
        Dataset.from_dict(columns).save_to_disk(str(claim.partial))
        publish(claim, args)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default in --help (argparse's own defaults formatter
    shows them only for options that have a help text)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and not action.required and action.default is not argparse.SUPPRESS:
            text += " (default: %(default)s)"
        return text.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m congkit.pipeline.cli", description=__doc__, formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="one training stage (TRL trainer)", formatter_class=_HelpFormatter)
    train.add_argument("--method", choices=METHODS, required=True)
    train.add_argument("--model", required=True, help="the model to train (folder or hub id)")
    train.add_argument("--data", required=True, help="a save_to_disk dataset folder")
    train.add_argument("--output", required=True, help="a new folder (or an earlier train output, with --overwrite)")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command")
    train.add_argument("--tokenizer", help="None: the --model's")
    train.add_argument("--ref-model", help="dpo / wspo reference (None: --model)")
    train.add_argument("--weak-model", help="wspo: the aligned weak model pi_r")
    train.add_argument("--weak-ref-model", help="wspo: the weak reference pi_ref")
    train.add_argument("--lr", type=_positive, default=1e-5, help="peak learning rate (cosine, 10%% warm-up)")
    train.add_argument("--epochs", type=_positive, default=1.0, help="training epochs")
    train.add_argument("--max-steps", type=int, default=-1, help="optimiser steps (-1: set by --epochs)")
    train.add_argument("--batch-size", type=_at_least(1), default=4, help="examples per device and step")
    train.add_argument("--grad-accum", type=_at_least(1), default=1, help="gradient accumulation steps")
    train.add_argument("--beta", type=_positive, default=0.1, help="dpo / wspo beta")
    train.add_argument("--seed", type=_at_least(0), default=0, help="training seed")
    train.add_argument("--device", help="None: the process's accelerator, else cpu")
    gen = sub.add_parser("generate", formatter_class=_HelpFormatter,
                         help="CD (or plain sampling without --amateur), sharded across processes",
                         description="CD between --expert (pi_r) and --amateur (pi_ref), or plain sampling of --expert "
                                     "without --amateur. Defaults: the ConG authors' sampling (T 0.8, top-p 0.95, "
                                     "repetition penalty 1.2, head 0.1), unlike the library's `generate`-like "
                                     "defaults; string prompts are one user turn when the tokenizer has a chat "
                                     "template.")  # fmt: skip
    gen.add_argument("--expert", required=True)
    gen.add_argument("--amateur", help="the pre-alignment model; without it, plain sampling from --expert")
    gen.add_argument("--prompts", required=True, help="a save_to_disk dataset folder with a prompt column")
    gen.add_argument("--output", required=True, help="a new folder (or an earlier generate output, with --overwrite)")
    gen.add_argument("--overwrite", action="store_true", help="replace an earlier output of this command")
    gen.add_argument("--tokenizer", help="None: the --expert's")
    gen.add_argument("--alpha", type=float, default=0.5, help="CD weight: F = log pi_r - (1 - alpha) log pi_ref")
    gen.add_argument("--plausibility-threshold", "--lam", type=float, default=0.1,
                     help="the head's lambda: {v : pi_r(v) >= lambda max pi_r}, on pi_r before temperature")
    gen.add_argument("--min-p", type=float, default=None, help="transformers' MinP warper, after temperature")
    gen.add_argument("--apply-chat-template", action=argparse.BooleanOptionalAction, default=None,
                     help="make each prompt string one user turn (None: when the tokenizer has a chat template, as "
                          "`train` hands string data to TRL)")  # fmt: skip
    gen.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    gen.add_argument("--temperature", type=float, default=0.8, help="on the contrasted scores")
    gen.add_argument("--top-k", type=_at_least(0), default=None, help="None or 0: off")
    gen.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (1: off)")
    gen.add_argument("--repetition-penalty", type=float, default=1.2, help="after the contrast (1: none)")
    gen.add_argument("--max-new-tokens", type=_at_least(1), default=512, help="tokens per response at most")
    gen.add_argument("--samples-per-prompt", type=_at_least(1), default=1,
                     help="rows per prompt, each seeded apart (num_return_sequences)")
    gen.add_argument("--batch-size", type=_at_least(1), default=32, help="rows per forward batch")
    gen.add_argument("--seed", type=_at_least(0), default=0, help="row i draws from (seed, i)")
    gen.add_argument("--device", help="None: the process's accelerator, else cpu")
    args = parser.parse_args(argv)
    check_output(args)
    claim = claim_output(args, main_process=int(os.environ.get("RANK", "0")) == 0)
    try:
        (_train if args.command == "train" else _generate)(args, claim)
    finally:
        if claim.lock is not None and claim.lock.is_locked:
            claim.lock.release()


if __name__ == "__main__":
    main()
