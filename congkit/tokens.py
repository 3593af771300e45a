"""Turning prompts and responses into token ids, the way TRL's trainers and `generate` do.

Every stage of congkit (scoring, decoding, training) must see the same tokens for the same text, or the implicit
reward logged by TRL and the one computed here would disagree. One convention, TRL's `DPOTrainer`'s and `generate`'s:

- **a conversation** (a list of `{"role", "content"}` messages) is rendered by the tokenizer's chat template: the
  prompt with the generation prompt; the completion is what the full conversation (prompt + assistant turn) adds
  after the longest common prefix;
- **a plain string is raw text**, tokenised as given (`tokenizer(text)`), whether or not the tokenizer has a chat
  template; the completion is `tokenizer(prompt + response + eos)` after the common prefix.

One keyword overrides it in every entry point: `apply_chat_template=True` makes each plain string one user turn of a
conversation (what the world's pipeline does with its string prompts). The old keyword `templated` (which detected
an already-templated string and wrapped every other one) is deprecated.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from congkit.hub.custom_generate.step import positions  # noqa: F401  (position ids that skip padding; re-exported)
from congkit.inputs import Prompt, is_conversation


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


UNSET = object()  # a deprecated keyword that was not passed


def chat_template_choice(apply_chat_template: bool, templated=UNSET) -> bool:
    """`apply_chat_template`, checked, or what the deprecated `templated` meant (True: the string already carries the
    template, so no templating; False: template it)."""
    if templated is not UNSET:
        warnings.warn("`templated` is deprecated: a plain string is now raw text unless apply_chat_template=True "
                      "(templated=False -> apply_chat_template=True)", DeprecationWarning, stacklevel=3)  # fmt: skip
        return templated is False
    if not isinstance(apply_chat_template, bool):
        raise TypeError(f"apply_chat_template must be a bool, got {apply_chat_template!r}")
    return apply_chat_template


def as_chat(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]) -> list[Prompt]:
    """Each plain-string prompt as a one-user-turn conversation when the tokenizer has a chat template (as
    `to_trl_format` hands them to TRL), unchanged otherwise."""
    if not has_chat_template(tokenizer):
        return list(prompts)
    return [p if is_conversation(p) else as_conversation(p) for p in prompts]


def _templates(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, apply_chat_template: bool) -> bool:
    if not (is_conversation(prompt) or apply_chat_template):
        return False
    if not has_chat_template(tokenizer):
        what = "a conversation prompt" if is_conversation(prompt) else "apply_chat_template=True"
        raise ValueError(f"{what} needs a tokenizer with a chat template; this one has none (pass plain strings)")
    return True


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, apply_chat_template: bool = False,
                  templated=UNSET) -> list[int]:  # fmt: skip
    """Token ids a model is conditioned on for `prompt`: a conversation (or, with `apply_chat_template`, a string as
    one user turn) rendered by the chat template with the generation prompt; a plain string tokenised as given."""
    template = _templates(tokenizer, prompt, chat_template_choice(apply_chat_template, templated))
    if not template and (not isinstance(prompt, str) or not prompt.strip()):
        raise ValueError(f"empty prompt: {prompt!r}; every prompt must contain text")
    ids = _ids(tokenizer, as_conversation(prompt), add_generation_prompt=True) if template else _ids(tokenizer, prompt)
    if not ids:
        raise ValueError(f"prompt {prompt!r} is empty after templating/tokenization")
    return ids


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str, apply_chat_template: bool = False,
                templated=UNSET) -> tuple[list[int], list[int]]:  # fmt: skip
    """(prompt_ids, completion_ids) for one (prompt, response), split as TRL's DPOTrainer splits them."""
    apply_chat_template = chat_template_choice(apply_chat_template, templated)
    prompt_ids = encode_prompt(tokenizer, prompt, apply_chat_template)
    if _templates(tokenizer, prompt, apply_chat_template):
        full = _ids(tokenizer, as_conversation(prompt, response))
    else:  # TRL appends EOS to a plain-text completion that does not end with it
        eos = tokenizer.eos_token or ""
        full = _ids(tokenizer, prompt + (response if eos and response.endswith(eos) else response + eos))
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
