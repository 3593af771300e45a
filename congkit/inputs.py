"""Inputs checked at the door: every public entry point validates its arguments here, with one-line errors that name
the argument and what was expected, before any work (or any file) is touched.

One documented convention for prompts, the same in every function: **a plain string is one prompt** (never a sequence
of one-character prompts), and so is a **conversation**, a list of `{"role": ..., "content": ...}` messages (system
prompt and earlier turns included; it goes through the tokenizer's chat template); otherwise a list of prompts, each
a non-empty string or a conversation. Token tensors are accepted by the decoding functions (`decoding.prompt_ids`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

# the argument checks the CD step's folder carries (it runs from the Hub without congkit), used everywhere
from congkit.hub.custom_generate.step import (  # noqa: F401
    check_causal_lm,
    check_int,
    check_number,
    check_same_device,
    model_device,
)


def as_texts(values: Any, name: str, allow_empty: bool = False) -> list[str]:
    """`values` as a list of strings: a str is one item; a sequence must hold only str (non-blank unless
    `allow_empty`). Raises TypeError / ValueError naming `name` and the offending index."""
    if isinstance(values, str):
        values = [values]
    if isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be text (a str or a list of str), got a tensor; decode token ids first")
    if isinstance(values, (bytes, dict)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a str or a list of str, got {type(values).__name__}")
    out = list(values)
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(value).__name__} ({value!r:.40})")
        if not allow_empty and not value.strip():
            raise ValueError(f"{name}[{i}] is empty: every prompt must contain text")
    return out


Prompt = str | list[dict]  # a text, or a conversation: [{"role": "system" | "user" | "assistant", "content": str}]


def is_conversation(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(m, dict) for m in value)


def check_conversation(messages: list[dict], name: str) -> list[dict]:
    for j, m in enumerate(messages):
        if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"{name}[{j}] must be a message {{'role': str, 'content': str}}, got {m!r:.60}")
    if messages[-1]["role"] == "assistant":
        raise ValueError(f"{name} ends with an assistant turn: a prompt conversation must end with the turn the model "
                         "answers (user, system or tool)")  # fmt: skip
    if not any(m["content"].strip() for m in messages):
        raise ValueError(f"{name} is empty: every message's content is blank")
    return messages


def as_prompts(prompts: Any, name: str = "prompts") -> list[Prompt]:
    """Prompts as a list of non-empty strings or conversations (a plain string, or one conversation, is one
    prompt)."""
    if isinstance(prompts, dict):
        raise TypeError(f"{name}: a single message dict is not a prompt; pass a conversation, [{{'role': 'user', "
                        "'content': ...}}], or a string")  # fmt: skip
    if is_conversation(prompts):
        return [check_conversation(prompts, name)]
    if isinstance(prompts, list) and any(is_conversation(p) for p in prompts):
        texts = as_texts([p for p in prompts if not is_conversation(p)], f"{name} (the strings among them)")
        it = iter(texts)
        return [check_conversation(p, f"{name}[{i}]") if is_conversation(p) else next(it) for i, p in enumerate(prompts)]
    return as_texts(prompts, name)


def as_responses(responses: Any, n_prompts: int, name: str = "responses") -> list[str]:
    """Responses (strings, may be empty) paired one to one with `n_prompts` prompts."""
    out = as_texts(responses, name, allow_empty=True)
    if len(out) != n_prompts:
        raise ValueError(f"{n_prompts} prompts but {len(out)} {name}: they must pair one to one")
    return out


def model_vocab_size(model) -> int:
    return model.get_input_embeddings().weight.shape[0]


def check_token_ids(model, ids: Sequence[Sequence[int]], what: str = "tokenizer") -> None:
    """Every id must index the model's embedding table (a tokenizer larger than the model's vocabulary fails here,
    not with torch's `index out of range in self`)."""
    size = model_vocab_size(model)
    top = max((max(row) for row in ids if len(row)), default=-1)
    if top >= size:
        raise ValueError(f"{what} produced token id {top}, but the model's embedding has only {size} rows: "
                         "the tokenizer does not belong to this model")  # fmt: skip
