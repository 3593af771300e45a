"""Explicit-reward scorers: anything that maps (prompts, responses) to one float per response.

The study's scorer is the synthetic world's exact reward (`congkit.pipeline.world.ExplicitReward`); on real checkpoints it is
a Hugging Face sequence-classification reward model (`RewardModelScorer`), the role ArmoRM plays in the paper.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification

from congkit.models import default_device, load_tokenizer, offline_hint, resolve_name
from congkit.tokens import as_conversation, has_chat_template


class Scorer(Protocol):
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]: ...


class RewardModelScorer:
    """A sequence-classification reward model (one logit) as the explicit reward.

    Each (prompt, response) is rendered with the reward model's own chat template when it has one, else as
    "prompt\\n\\nresponse"; the score is the model's first logit.
    """

    def __init__(self, name_or_path: str | os.PathLike, device: str | None = None, batch_size: int = 16):
        name = resolve_name(name_or_path)
        self.name, self.batch_size = str(name_or_path), batch_size
        self.device = device or default_device()
        self.tokenizer = load_tokenizer(name)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(name).to(self.device).eval()
        except (OSError, ValueError) as error:
            raise offline_hint(name, error) from error
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _render(self, prompt: str, response: str) -> str:
        if has_chat_template(self.tokenizer):
            return self.tokenizer.apply_chat_template(as_conversation(prompt, response), tokenize=False)
        return f"{prompt}\n\n{response}"

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        texts = [self._render(p, r) for p, r in zip(prompts, responses)]
        scores: list[float] = []
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="reward model", disable=len(starts) < 4):
            batch = self.tokenizer(
                texts[start : start + self.batch_size], padding=True, return_tensors="pt", add_special_tokens=False
            ).to(self.device)
            scores.extend(self.model(**batch).logits[:, 0].float().cpu().tolist())
        return scores
