"""ConG in one file: Contrastive Weak-to-Strong Generalization (Jiang et al., 2025) as pure functions of models and
`datasets`, top to bottom, with no cache. `congkit.stages` runs these same functions cached; `run_cong` chains them.

    pool   = sample_pool(weak_base, tok, prompts, judge, n=4, ...)       # 1. n weak samples per prompt, judged
    pairs  = preference_pairs(pool, flip_fraction=0.0, seed=0)           #    best = chosen, worst = rejected
    pi_r   = dpo(weak_base, weak_base_copy, tok, pairs, config)          # 2. weak alignment: pi_ref -> pi_r
    cd     = contrastive_samples(pi_r, weak_base, tok, prompts, decoding)  # 3. CD between pi_r and pi_ref
    cong_s = sft(strong_base, tok, cd, config)                           # 4. ConG-S: SFT on the CD samples
    cong   = dpo(cong_s, cong_s_copy, tok, cong_pairs(cong_s, tok, cd, decoding), config)  # 5. ConG

Contrastive decoding, at each step, on the head V = {v : pi_r(v) >= min_p max pi_r}:
    F(v) = log pi_r(v) - (1 - alpha) log pi_ref(v)  =  (1 - alpha) log(pi_r / pi_ref)(v) + alpha log pi_r(v)
so alpha trades the token-level implicit reward log(pi_r / pi_ref) against pi_r's likelihood (`congkit.decoding`).

Baselines, from the same strong base: WeakSFT (SFT on pi_r's plain samples), AuxConf (Burns et al.'s
auxiliary-confidence loss on them), WSPO (Zhu et al.: regress beta * log(pi_s / pi_s_ref) onto log(pi_r / pi_ref),
per token, on the preference set's chosen responses); the losses are in `congkit.trainers`.
"""

from __future__ import annotations

import contextlib
import copy
import random
import tempfile
from collections.abc import Callable, Sequence

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .decoding import DecodingConfig, contrastive_generate, sample
from .rewards import implicit_reward_from_ids
from .tokens import encode_prompt
from .trainers import AuxConfTrainer, WSPOTrainer
from .training import TrainConfig, train_dpo, train_sft

Judge = Callable[[list[str], list[str]], Sequence[float]]  # (prompts, responses) -> explicit rewards
Trained = tuple[PreTrainedModel, list[dict]]  # a trained model and its logged training metrics


def draws(model, tokenizer, prompts: list[str], n: int, decoding: DecodingConfig, chat: bool) -> list[list[str]]:
    """`n` samples of every prompt in one batched run: draw j of prompt i is row j * len(prompts) + i, seeded by
    (decoding.seed, row), so every draw is independent. Returned per prompt."""
    texts = sample(model, tokenizer, prompts * n, decoding, progress=False, apply_chat_template=chat).texts
    return [[texts[j * len(prompts) + i] for j in range(n)] for i in range(len(prompts))]


def sample_pool(model, tokenizer, prompts: list[str], judge: Judge, n: int, decoding: DecodingConfig,
                chat: bool) -> Dataset:  # fmt: skip
    """Step 1's pool: n samples per prompt from `model` and their explicit rewards (columns prompt, samples, scores)."""
    samples = draws(model, tokenizer, prompts, n, decoding, chat)
    flat = [float(s) for s in judge([p for p in prompts for _ in range(n)], [t for row in samples for t in row])]
    return Dataset.from_dict({"prompt": prompts, "samples": samples,
                              "scores": [flat[i * n : (i + 1) * n] for i in range(len(prompts))]})  # fmt: skip


def preference_pairs(pool: Dataset, flip_fraction: float, seed: int) -> Dataset:
    """Best-vs-worst pairs per prompt (ties dropped); a seeded `flip_fraction` of pairs swapped (label noise).
    Columns prompt, chosen, rejected, chosen_score, rejected_score, flipped."""
    rows = {"prompt": [], "chosen": [], "rejected": [], "chosen_score": [], "rejected_score": [], "flipped": []}
    for prompt, texts, s in zip(pool["prompt"], pool["samples"], pool["scores"]):
        best, worst = max(range(len(texts)), key=lambda i: s[i]), min(range(len(texts)), key=lambda i: s[i])
        if s[best] == s[worst] or texts[best] == texts[worst]:
            continue
        for column, value in zip(rows, (prompt, texts[best], texts[worst], s[best], s[worst], False)):
            rows[column].append(value)
    n = len(rows["prompt"])
    if n == 0:
        raise ValueError("no preference pair survived: every prompt's samples tied on the explicit reward")
    for i in random.Random(seed).sample(range(n), round(flip_fraction * n)):
        rows["chosen"][i], rows["rejected"][i] = rows["rejected"][i], rows["chosen"][i]
        rows["chosen_score"][i], rows["rejected_score"][i] = rows["rejected_score"][i], rows["chosen_score"][i]
        rows["flipped"][i] = True
    return Dataset.from_dict(rows)


def dpo(policy: PreTrainedModel, reference: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Dataset,
        config: TrainConfig, work_dir: str | None = None, save_to: str | None = None) -> Trained:  # fmt: skip
    """DPO (TRL's DPOTrainer) of `policy` against the frozen `reference` on (prompt, chosen, rejected):
    loss = -log sigmoid(beta [log(pi / pi_ref)(y_w) - log(pi / pi_ref)(y_l)]). Step 2 (weak alignment) and step 5."""
    with _work_dir(work_dir) as work:
        return train_dpo(policy, reference, tokenizer, pairs, config, work, save_to=save_to)


def sft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: Dataset, config: TrainConfig,
        work_dir: str | None = None, save_to: str | None = None, trainer_cls=None, **trainer_kwargs) -> Trained:  # fmt: skip
    """Supervised fine-tuning (TRL's SFTTrainer, or `trainer_cls`) on (prompt, completion), loss on the completion:
    ConG-S (step 4, on CD samples), WeakSFT (on pi_r's plain samples), the gold ceiling (on gold responses)."""
    extra = {"trainer_cls": trainer_cls} if trainer_cls is not None else {}
    with _work_dir(work_dir) as work:
        return train_sft(model, tokenizer, data, config, work, save_to=save_to, **extra, **trainer_kwargs)


def contrastive_samples(pi_r, pi_ref, tokenizer, prompts: list[str], decoding: DecodingConfig, chat: bool) -> Dataset:
    """Step 3: one CD sample of pi_r against pi_ref per prompt (columns prompt, completion, implicit: the mean
    per-token log pi_r - log pi_ref of the sample)."""
    out = contrastive_generate(pi_r, pi_ref, tokenizer, prompts, decoding, progress=False, apply_chat_template=chat)
    return Dataset.from_dict({"prompt": prompts, "completion": out.texts,
                              "implicit": out.implicit_reward(beta=1.0).mean})  # fmt: skip


def plain_samples(model, tokenizer, prompts: list[str], decoding: DecodingConfig, chat: bool) -> Dataset:
    """One ordinary sample of `model` per prompt (columns prompt, completion): WeakSFT's and AuxConf's data."""
    out = sample(model, tokenizer, prompts, decoding, progress=False, apply_chat_template=chat)
    return Dataset.from_dict({"prompt": prompts, "completion": out.texts})


def cong_pairs(cong_s: PreTrainedModel, tokenizer, cd: Dataset, decoding: DecodingConfig, chat: bool) -> Dataset:
    """Step 5's data: chosen = the CD sample, rejected = ConG-S's own sample of the same prompt (identical pairs
    dropped)."""
    own = sample(cong_s, tokenizer, list(cd["prompt"]), decoding, progress=False, apply_chat_template=chat).texts
    keep = [i for i, (c, r) in enumerate(zip(cd["completion"], own)) if c != r]
    return Dataset.from_dict({"prompt": [cd["prompt"][i] for i in keep], "chosen": [cd["completion"][i] for i in keep],
                              "rejected": [own[i] for i in keep]})  # fmt: skip


def scored_draws(pi_r, pi_ref, tokenizer, prompts: list[str], n: int, decoding: DecodingConfig, chat: bool):
    """`n` pi_r samples of every prompt (draw j of prompt i at row j * len(prompts) + i) and the weak pair's implicit
    reward of each (beta 1): (the `Generation`, an `ImplicitReward`)."""
    gen = sample(pi_r, tokenizer, prompts * n, decoding, progress=False, apply_chat_template=chat)
    prompt_ids = [encode_prompt(tokenizer, p, chat) for p in prompts] * n
    return gen, implicit_reward_from_ids(pi_r, pi_ref, prompt_ids, gen.token_ids, beta=1.0, batch_size=256)


def best_of_n_by_implicit_reward(pi_r, pi_ref, tokenizer, prompts: list[str], n: int, decoding: DecodingConfig,
                                 chat: bool) -> Dataset:  # fmt: skip
    """Beyond the paper, with exactly ConG's information: per prompt, the one of `n` pi_r samples with the largest
    summed implicit reward log(pi_r / pi_ref)(y) (no labels). Columns prompt, completion, implicit."""
    gen, scored = scored_draws(pi_r, pi_ref, tokenizer, prompts, n, decoding, chat)
    implicit = scored.total
    best = [max(range(n), key=lambda j, i=i: implicit[j * len(prompts) + i]) for i in range(len(prompts))]
    rows = [b * len(prompts) + i for i, b in enumerate(best)]
    return Dataset.from_dict({"prompt": prompts, "completion": [gen.texts[r] for r in rows],
                              "implicit": [implicit[r] for r in rows]})  # fmt: skip


def auxconf(strong, tokenizer, data: Dataset, config: TrainConfig, aux_weight: float, **kw) -> Trained:
    """AuxConf (Burns et al., 2023): (1 - w) CE(weak labels) + w CE(own hardened predictions), w warmed up."""
    return sft(strong, tokenizer, data, config, trainer_cls=AuxConfTrainer, aux_weight=aux_weight, **kw)


def wspo(strong, strong_ref, pi_r, pi_ref, tokenizer, data: Dataset, config: TrainConfig, **kw) -> Trained:
    """WSPO (Zhu et al., 2024): mean over response tokens of
    (beta (log pi_s - log pi_s_ref) - (log pi_r - log pi_ref))^2, on `data` (prompt, completion)."""
    return sft(strong, tokenizer, data, config, trainer_cls=WSPOTrainer, ref_model=strong_ref, weak_model=pi_r,
               weak_ref_model=pi_ref, beta=config.beta, **kw)  # fmt: skip


def run_cong(load: Callable[[str], PreTrainedModel], weak_base: str, strong_base: str, tokenizer, prompts: list[str],
             judge: Judge, weak_dpo: TrainConfig, strong_sft: TrainConfig, cong_dpo: TrainConfig,
             decoding: DecodingConfig, alpha: float = 0.5, n: int = 4, chat: bool = True) -> dict:  # fmt: skip
    """The whole algorithm on real checkpoints, no cache: {"pi_r", "cd", "cong_s", "cong"}. `load(name)` returns a
    fresh model each call (e.g. `lambda n: congkit.models.load_causal_lm(n, device="cuda")`)."""
    pool = sample_pool(load(weak_base), tokenizer, prompts, judge, n, decoding, chat)
    pi_r, _ = dpo(load(weak_base), load(weak_base), tokenizer, preference_pairs(pool, 0.0, 0), weak_dpo)
    cd = contrastive_samples(pi_r, load(weak_base), tokenizer, prompts, DecodingConfig(**{**vars(decoding),
                                                                                      "alpha": alpha}), chat)  # fmt: skip
    cong_s, _ = sft(load(strong_base), tokenizer, cd, strong_sft)
    pairs = cong_pairs(cong_s, tokenizer, cd, decoding, chat)
    cong, _ = dpo(copy.deepcopy(cong_s), copy.deepcopy(cong_s), tokenizer, pairs, cong_dpo)  # reference: ConG-S
    return {"pi_r": pi_r, "cd": cd, "cong_s": cong_s, "cong": cong}


@contextlib.contextmanager
def _work_dir(path: str | None):
    """A trainer's scratch folder: `path` as given, or a temporary folder removed afterwards."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="congkit-train-") as tmp:
        yield tmp
