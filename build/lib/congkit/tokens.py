"""Turning prompts and responses into token ids, the way TRL's trainers do.

Every stage of congkit (scoring, decoding, training) must see the same tokens for the same text, or the implicit
reward logged by TRL and the one computed here would disagree. So the conventions are TRL's `DPOTrainer`:

- with a chat template: the prompt is `[{"role": "user", "content": prompt}]` (or the conversation given: system
  prompt, earlier turns) rendered with the generation prompt; the completion is what the full conversation (user +
  assistant) adds after the longest common prefix;
- without one: the prompt is `tokenizer(prompt)`, the completion is `tokenizer(prompt + response + eos)` after the
  common prefix.

A string that already carries the chat template is not templated twice: `templated=None` (the default) detects it by
the template's opening special token (e.g. `<|im_start|>`), `templated=True` / `False` says so explicitly.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from .inputs import Prompt, is_conversation


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def as_conversation(prompt: Prompt, response: str | None = None) -> list[dict[str, str]]:
    messages = list(prompt) if is_conversation(prompt) else [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def _ids(tokenizer: PreTrainedTokenizerBase, text_or_messages, **kwargs) -> list[int]:
    if isinstance(text_or_messages, list):
        out = tokenizer.apply_chat_template(text_or_messages, tokenize=True, return_dict=True, **kwargs)
    else:
        out = tokenizer(text=text_or_messages, **kwargs)
    return list(out["input_ids"])


def _template_parts(tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """(the template's opening text before a user message, what closes an assistant turn), from rendering a probe."""
    user, answer = "\x00U\x00", "\x00A\x00"
    rendered = tokenizer.apply_chat_template(as_conversation(user, answer), tokenize=False)
    return rendered[: rendered.index(user)], rendered[rendered.index(answer) + len(answer) :]


def is_templated(tokenizer: PreTrainedTokenizerBase, prompt: str) -> bool:
    """Does `prompt` already start the way the chat template starts a conversation (its first special token)?"""
    if not has_chat_template(tokenizer):
        return False
    opening = _template_parts(tokenizer)[0]
    specials = sorted({t for t in tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()) if t},
                      key=len, reverse=True)  # fmt: skip
    marker = next((t for t in specials if opening.startswith(t)), None)
    return marker is not None and prompt.lstrip().startswith(marker)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, templated: bool | None = None) -> list[int]:
    """Token ids a model is conditioned on for `prompt`: a conversation or a string rendered by the chat template with
    the generation prompt, or tokenised as is (no template, or a string that already carries it: `templated`)."""
    if is_conversation(prompt):
        if not has_chat_template(tokenizer):
            raise ValueError("a conversation prompt needs a tokenizer with a chat template; pass plain strings instead")
        ids = _ids(tokenizer, prompt, add_generation_prompt=True)
    elif not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"empty prompt: {prompt!r}; every prompt must contain text")
    elif has_chat_template(tokenizer) and not _templated(tokenizer, prompt, templated):
        ids = _ids(tokenizer, as_conversation(prompt), add_generation_prompt=True)
    else:
        ids = _ids(tokenizer, prompt, add_special_tokens=not has_chat_template(tokenizer))
    if not ids:
        raise ValueError(f"prompt {prompt!r} is empty after templating/tokenization")
    return ids


def _templated(tokenizer, prompt: str, templated: bool | None) -> bool:
    return is_templated(tokenizer, prompt) if templated is None else templated


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str,
                templated: bool | None = None) -> tuple[list[int], list[int]]:  # fmt: skip
    """(prompt_ids, completion_ids) for one (prompt, response), split as TRL's DPOTrainer splits them."""
    prompt_ids = encode_prompt(tokenizer, prompt, templated)
    if has_chat_template(tokenizer):
        if is_conversation(prompt) or not _templated(tokenizer, prompt, templated):
            full = _ids(tokenizer, as_conversation(prompt, response))
        else:  # the prompt text already ends with the generation prompt: the answer, then the turn's closing text
            full = _ids(tokenizer, prompt + response + _template_parts(tokenizer)[1], add_special_tokens=False)
    else:
        eos = tokenizer.eos_token or ""
        text = response if response.endswith(eos) else response + eos
        full = _ids(tokenizer, prompt + text)
    n = common_prefix_length(prompt_ids, full)
    return prompt_ids[:n], full[n:]


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id, falling back to EOS; a tokenizer with neither cannot be batched."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    raise ValueError(
        f"tokenizer {type(tokenizer).__name__} has no pad token and no EOS token; set tokenizer.pad_token before batching"
    )


def pad(seqs: list[list[int]], pad_id: int, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ragged id lists to a (B, L) tensor and its attention mask, padding on `side` ('left' or 'right')."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore padding: 0 at each row's first real token, whichever side it is padded on."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
