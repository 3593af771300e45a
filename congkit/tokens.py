"""Turning prompts and responses into token ids, the way TRL's trainers do.

Every stage of congkit (scoring, decoding, training) must see the same tokens for the same text, or the implicit
reward logged by TRL and the one computed here would disagree. So the conventions are TRL's `DPOTrainer`:

- with a chat template: the prompt is `[{"role": "user", "content": prompt}]` rendered with the generation prompt;
  the completion is what the full conversation (user + assistant) adds after the longest common prefix;
- without one: the prompt is `tokenizer(prompt)`, the completion is `tokenizer(prompt + response + eos)` after the
  common prefix.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return getattr(tokenizer, "chat_template", None) is not None


def as_conversation(prompt: str, response: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def _ids(tokenizer: PreTrainedTokenizerBase, text_or_messages, **kwargs) -> list[int]:
    if isinstance(text_or_messages, list):
        out = tokenizer.apply_chat_template(text_or_messages, tokenize=True, return_dict=True, **kwargs)
    else:
        out = tokenizer(text=text_or_messages)
    return list(out["input_ids"])


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids a model is conditioned on for `prompt` (chat template with generation prompt, or plain text)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"empty prompt: {prompt!r}; every prompt must contain text")
    if has_chat_template(tokenizer):
        ids = _ids(tokenizer, as_conversation(prompt), add_generation_prompt=True)
    else:
        ids = _ids(tokenizer, prompt)
    if not ids:
        raise ValueError(f"prompt {prompt!r} is empty after templating/tokenization")
    return ids


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) for one (prompt, response), split as TRL's DPOTrainer splits them."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    if has_chat_template(tokenizer):
        full = _ids(tokenizer, as_conversation(prompt, response))
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
