"""Loading and creating causal LMs and tokenizers: real checkpoints and the tiny ones the world and tests build.

Everything goes through `AutoTokenizer` / `AutoModelForCausalLM`, so a folder written here loads exactly like a
checkpoint from the hub, and a hub id works wherever a folder does.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ["<pad>", "<unk>", "<|end|>", "<|user|>", "<|assistant|>"]
# a system message is rendered as a user turn (no special token of its own, so the vocabulary stays as it is)
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] in ['system', 'user'] %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def char_tokenizer(chat_template: bool = True, vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII and newline, built with the `tokenizers` library.

    Special tokens: <pad>, <unk>, <|end|> (EOS, closes an assistant turn), <|user|>, <|assistant|>. Characters outside
    the alphabet map to <unk>. Character level keeps prompt/response boundaries exact: text tokenised in pieces equals
    text tokenised whole, so what decoding generates and what training reads are the same tokens.
    `vocab_size` pads the vocabulary with filler tokens "<tN>" (to drive random models of real vocabulary sizes).
    """
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    tokens = SPECIAL_TOKENS + chars
    if vocab_size is not None:
        tokens += [f"<t{i}>" for i in range(len(tokens), vocab_size)]
    return _word_level(tokens, pre_tokenizers.Split(Regex("."), behavior="isolated"), decoders.Fuse(), chat_template)


def word_tokenizer(words: list[str], chat_template: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: text is split on whitespace and every word in `words` is one token.

    Built with the `tokenizers` library (WordLevel model, whitespace pre-tokenizer); decoding joins words with single
    spaces, so text that is words separated by single spaces round-trips exactly, and a response tokenised alone
    equals the same response tokenised after its prompt. Special tokens as in `char_tokenizer`.
    """
    tokens = SPECIAL_TOKENS + [w for w in words if w not in SPECIAL_TOKENS]
    return _word_level(tokens, pre_tokenizers.WhitespaceSplit(), None, chat_template)


def _word_level(tokens: list[str], pre_tokenizer, decoder, chat_template: bool) -> PreTrainedTokenizerFast:
    """A `tokenizers` WordLevel tokenizer over `tokens` (special tokens first) wrapped for transformers."""
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizer
    if decoder is not None:  # none: tokens are joined with single spaces
        backend.decoder = decoder
    backend.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<|end|>")
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
    pad_token_id: int = 0,
    eos_token_id: int = 2,
    init_std: float = 0.02,
) -> LlamaForCausalLM:
    """A randomly initialised Llama-architecture causal LM (seeded), for the synthetic world and tests."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.eos_token_id = eos_token_id
    return model.eval()


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_device(cuda: bool | None = None) -> str:
    """"cuda" where a GPU is usable, else "cpu". `cuda` overrides the detection (the tests force both branches)."""
    return "cuda" if (torch.cuda.is_available() if cuda is None else cuda) else "cpu"


def default_dtype(device: str, bf16_supported: bool | None = None) -> torch.dtype:
    """bf16 on a GPU that supports it, float32 otherwise (CPU included). The one precision rule: training's mixed
    precision follows it too. `bf16_supported` overrides the detection (the tests force both branches)."""
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if device.startswith("cuda") and bf16_supported else torch.float32


def resolve_name(name_or_path: str | os.PathLike) -> str:
    path = Path(name_or_path)
    if path.exists():
        return str(path)
    text = str(name_or_path)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"model folder {text!r} does not exist")
    return text


def offline_hint(name: str, error: Exception) -> OSError:
    return OSError(
        f"cannot load {name!r}: it is not a local folder and could not be resolved from the hub "
        f"(offline or unknown id). Download it where the hub is reachable and pass its local path instead. ({error})"
    )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def _check_local_folder(path: Path, what: str) -> None:
    """A local folder must hold what `from_pretrained` reads; name what is missing instead of blaming the hub."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {str(path)!r} is a file, not a checkpoint folder")
    if what == "tokenizer folder":
        if not any((path / name).exists() for name in TOKENIZER_FILES):
            raise FileNotFoundError(f"tokenizer folder {str(path)!r} has no tokenizer files (none of {TOKENIZER_FILES})")
    elif not (path / "config.json").exists():
        raise FileNotFoundError(f"{what} {str(path)!r} has no config.json: not a saved transformers model")


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """AutoTokenizer from a folder or hub id; a clear error when an id cannot be resolved offline."""
    name = resolve_name(name_or_path)
    local = Path(name).exists()
    if local:
        _check_local_folder(Path(name), "tokenizer folder")
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as error:
        if local:
            raise OSError(f"cannot read the tokenizer in {name!r}: {error}") from error
        raise offline_hint(name, error) from error
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    name_or_path: str | os.PathLike, device: str | None = None, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """AutoModelForCausalLM from a folder or hub id, placed on `device` (auto: cuda if present) in `dtype` (auto)."""
    name = resolve_name(name_or_path)
    local = Path(name).exists()
    if local:
        _check_local_folder(Path(name), "model folder")
    device = device or default_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or default_dtype(device))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        if local:
            weights = sorted(p.name for p in Path(name).glob("*.safetensors")) or sorted(
                p.name for p in Path(name).glob("*.bin"))  # fmt: skip
            raise OSError(f"cannot load the model in {name!r} (weight files {weights}): "
                          f"{type(error).__name__}: {error}") from error  # fmt: skip
        if isinstance(error, (OSError, ValueError)):
            raise offline_hint(name, error) from error
        raise
    return model.to(device).eval()
