"""ConG in one file: Contrastive Weak-to-Strong Generalization (Jiang et al., 2025) as pure functions of models and
`datasets`, top to bottom, with no cache. `congkit.pipeline.stages` runs these same functions cached; `run_cong` chains them.

    pool   = sample_pool(weak_base, tok, prompts, judge, n=4, ...)       # 1. n weak samples per prompt, judged
    pairs  = preference_pairs(pool, flip_fraction=0.0, seed=0)           #    best = chosen, worst = rejected
    pi_r   = dpo(weak_base, weak_base_copy, tok, pairs, config)          # 2. weak alignment: pi_ref -> pi_r
    cd     = contrastive_samples(pi_r, weak_base, tok, prompts, decoding)  # 3. CD between pi_r and pi_ref
    cong_s = sft(strong_base, tok, cd, config)                           # 4. ConG-S: SFT on the CD samples
    cong   = dpo(cong_s, cong_s_copy, tok, cong_pairs(cong_s, tok, cd, decoding), config)  # 5. ConG

Contrastive decoding, at each step, on the head V = {v : pi_r(v) >= lambda max pi_r} (`plausibility_threshold`):
    F(v) = log pi_r(v) - (1 - alpha) log pi_ref(v)  =  (1 - alpha) log(pi_r / pi_ref)(v) + alpha log pi_r(v)
so alpha trades the token-level implicit reward log(pi_r / pi_ref) against pi_r's likelihood. `reference_cd` writes
one prompt's decoding out in full; `congkit.decoding` batches it, `congkit.contrastive_decoding` runs it in `generate`.

Baselines, from the same strong base: WeakSFT (SFT on pi_r's plain samples), AuxConf (Burns et al.'s
auxiliary-confidence loss on them), WSPO (Zhu et al.: regress beta * log(pi_s / pi_s_ref) onto log(pi_r / pi_ref),
per token, on the preference set's chosen responses); the losses are in `congkit.pipeline.trainers`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import tempfile
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from congkit.decoding import DecodingConfig, contrastive_generate, sample
from congkit.pipeline.trainers import AuxConfTrainer, WSPOTrainer
from congkit.pipeline.training import TrainConfig, train_dpo, train_sft
from congkit.rewards import implicit_reward_from_ids
from congkit.tokens import encode_prompt

Judge = Callable[[list[str], list[str]], Sequence[float]]  # (prompts, responses) -> explicit rewards
Trained = tuple[PreTrainedModel, list[dict]]  # a trained model and its logged training metrics


@torch.no_grad()
def reference_cd(expert, amateur, prompt_ids: list[int], *, alpha: float = 0.5, plausibility_threshold: float = 0.1,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
                 min_p: float | None = None, repetition_penalty: float = 1.0, max_new_tokens: int = 16,
                 uniforms: Sequence[float] | None = None, eos: Sequence[int] = ()) -> list[int]:  # fmt: skip
    """Contrastive decoding of one prompt, written out: the executable definition that the batched engine and the
    `generate` strategy are tested against. No cache, no batch, float64; both models re-read the whole sequence at
    every step. `amateur=None` is plain sampling from `expert`. Sampling takes token min{v : CDF(v) > u_t} at the
    given uniforms (the engine's per-row draws, `row_uniforms`), in token-id order."""
    out: list[int] = []
    for t in range(max_new_tokens):
        x = torch.tensor([list(prompt_ids) + out], device=next(expert.parameters()).device)
        log_r = torch.log_softmax(expert(x).logits[0, -1].double(), -1)
        f = log_r if amateur is None else log_r - (1 - alpha) * torch.log_softmax(amateur(x).logits[0, -1].double(), -1)
        if plausibility_threshold is not None:  # the head: pi_r(v) >= lambda * max pi_r
            f = f.masked_fill(log_r.exp() < plausibility_threshold * log_r.exp().max(), -math.inf)
        for v in set(prompt_ids) | set(out):  # repetition penalty on every token of the row
            f[v] = f[v] * repetition_penalty if f[v] < 0 else f[v] / repetition_penalty
        if do_sample:
            f = f / temperature
            if top_k:
                f = f.masked_fill(f < f.topk(min(top_k, len(f))).values[-1], -math.inf)
            p = torch.softmax(f, -1)
            if top_p < 1.0:  # keep the most probable tokens until their mass reaches top_p
                order = p.argsort(descending=True)
                before = p[order].cumsum(0) - p[order]
                p[order[before >= top_p]] = 0.0
            if min_p is not None:
                p = p.masked_fill(p < min_p * p.max(), 0.0)
            cdf = p.cumsum(0)
            token = int((cdf <= uniforms[t] * cdf[-1]).sum().clamp(max=len(p) - 1))
        else:
            token = int(f.argmax())
        out.append(token)
        if token in eos:
            break
    return out


def draw_row(i: int, j: int, n_prompts: int) -> int:
    """The row of draw j of prompt i when `n` draws of `n_prompts` prompts run as one batch over `prompts * n`:
    j * n_prompts + i. Each row is seeded by (decoding.seed, row), so every draw is independent."""
    return j * n_prompts + i


def by_prompt(flat: Sequence, n_prompts: int, n: int) -> list[list]:
    """A batched run's rows (`draw_row` layout) regrouped per prompt: [prompt i][draw j]."""
    return [[flat[draw_row(i, j, n_prompts)] for j in range(n)] for i in range(n_prompts)]


def draws(model, tokenizer, prompts: list[str], n: int, decoding: DecodingConfig, chat: bool) -> list[list[str]]:
    """`n` samples of every prompt in one batched run (`draw_row` layout), returned per prompt."""
    texts = sample(model, tokenizer, prompts * n, decoding, progress=False, apply_chat_template=chat).texts
    return by_prompt(texts, len(prompts), n)


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
    """`n` pi_r samples of every prompt (`draw_row` layout) and the weak pair's implicit reward of each (beta 1):
    (the `Generation`, an `ImplicitReward`)."""
    gen = sample(pi_r, tokenizer, prompts * n, decoding, progress=False, apply_chat_template=chat)
    prompt_ids = [encode_prompt(tokenizer, p, chat) for p in prompts] * n
    return gen, implicit_reward_from_ids(pi_r, pi_ref, prompt_ids, gen.token_ids, beta=1.0, batch_size=256)


def best_of_n_by_implicit_reward(pi_r, pi_ref, tokenizer, prompts: list[str], n: int, decoding: DecodingConfig,
                                 chat: bool) -> Dataset:  # fmt: skip
    """Beyond the paper, with exactly ConG's information: per prompt, the one of `n` pi_r samples with the largest
    summed implicit reward log(pi_r / pi_ref)(y) (no labels). Columns prompt, completion, implicit."""
    gen, scored = scored_draws(pi_r, pi_ref, tokenizer, prompts, n, decoding, chat)
    return best_by_implicit_reward(prompts, gen.texts, scored.total, n)


def best_of_n_cd(pi_r, pi_ref, tokenizer, prompts: list[str], n: int, decoding: DecodingConfig,
                 chat: bool) -> Dataset:  # fmt: skip
    """Beyond the paper: per prompt, the one of `n` CD samples (`decoding`'s alpha and head) with the largest summed
    implicit reward log(pi_r / pi_ref)(y) (no labels). Columns prompt, completion, implicit."""
    gen = contrastive_generate(pi_r, pi_ref, tokenizer, prompts * n, decoding, progress=False, apply_chat_template=chat)
    return best_by_implicit_reward(prompts, gen.texts, gen.implicit_reward(beta=1.0).total, n)


def best_by_implicit_reward(prompts: list[str], texts: list[str], implicit: Sequence[float], n: int) -> Dataset:
    """Per prompt, the draw (`draw_row` layout) with the largest implicit reward; ties go to the first draw.
    Columns prompt, completion, implicit."""
    per_prompt = by_prompt(implicit, len(prompts), n)
    rows = [draw_row(i, max(range(n), key=per_prompt[i].__getitem__), len(prompts)) for i in range(len(prompts))]
    return Dataset.from_dict({"prompt": prompts, "completion": [texts[r] for r in rows],
                              "implicit": [implicit[r] for r in rows]})  # fmt: skip


def auxconf(strong, tokenizer, data: Dataset, config: TrainConfig, aux_weight: float, **kw) -> Trained:
    """AuxConf (Burns et al., 2023): (1 - w) CE(weak labels) + w CE(own hardened predictions), w warmed up."""
    return sft(strong, tokenizer, data, config, trainer_cls=AuxConfTrainer, aux_weight=aux_weight, **kw)


def wspo(strong, strong_ref, pi_r, pi_ref, tokenizer, data: Dataset, config: TrainConfig, target: str = "token",
         **kw) -> Trained:  # fmt: skip
    """WSPO (Zhu et al., 2024): mean over response tokens of
    (beta (log pi_s - log pi_s_ref) - (log pi_r - log pi_ref))^2, on `data` (prompt, completion). `target`
    "sequence_mean" regresses onto the weak log-ratio's mean over the response instead (no token-level credit)."""
    return sft(strong, tokenizer, data, config, trainer_cls=WSPOTrainer, ref_model=strong_ref, weak_model=pi_r,
               weak_ref_model=pi_ref, beta=config.beta, target=target, **kw)  # fmt: skip


def stream_seed(seed: int, purpose: str, k: int = 0) -> int:
    """The seed of draw `k` of the named random stream `purpose` in pipeline replicate `seed` (independent streams,
    stable across runs and machines): every random draw of the pipeline takes its seed from one named stream."""
    state = np.random.SeedSequence([seed, zlib.crc32(purpose.encode()), k]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> 34)


def seeded(config: TrainConfig, seed: int) -> TrainConfig:
    """`config` with the replicate's seed (TRL's data order and initialisations)."""
    return dataclasses.replace(config, seed=seed)


def run_cong(load: Callable[[str], PreTrainedModel], weak_base: str, strong_base: str, tokenizer, prompts: list[str],
             judge: Judge, config, seed: int = 0, eps: float = 0.0, chat: bool = True,
             output_dir: str | None = None) -> dict:  # fmt: skip
    """The whole algorithm on real checkpoints, no cache: the cached pipeline's steps 1-5 with its seeds and decoding
    streams, so one seed gives exactly the datasets and weights `congkit.Pipeline` caches for it (tested).

    Args:
        load: name or folder -> a freshly loaded model, each call (e.g. `lambda p: congkit.models.load_causal_lm(p)`).
        weak_base, strong_base: the pre-alignment weak model and the strong base (folders or hub ids).
        prompts: the training prompts; judge: (prompts, responses) -> explicit rewards (step 1's preferences).
        config: a `congkit.PipelineConfig`: `sampling`, `n_preference_samples`, `cd_alpha`, `cd_lam`, `weak_dpo`,
            `strong_sft`, `cong_dpo` are read.
        seed, eps: the replicate and its label-noise rate (the fraction of weak pairs flipped).
        chat: string prompts are one user turn of the chat template (as the pipeline does when there is one).
        output_dir: where pi_r, ConG-S and ConG are saved (`save_pretrained`); a temporary folder by default.
    Returns {"pool", "pairs", "pi_r", "cd", "cong_s", "cong_pairs", "cong"}: datasets, and models loaded with `load`
    from where they were saved.
    """

    def sampling(purpose: str, **settings) -> DecodingConfig:
        return dataclasses.replace(config.sampling, seed=stream_seed(seed, purpose), **settings)

    def trained(name: str, train: Callable[[str, str], Trained]) -> PreTrainedModel:
        set_seed(seed)  # as the cached pipeline seeds every training stage
        with tempfile.TemporaryDirectory(prefix="congkit-train-") as work:
            train(work, f"{out}/{name}")
        return load(f"{out}/{name}")

    with _work_dir(output_dir) as out:
        pool = sample_pool(load(weak_base), tokenizer, prompts, judge, config.n_preference_samples,
                           sampling("weak_pool"), chat)  # fmt: skip
        pairs = preference_pairs(pool, eps, stream_seed(seed, "label_noise"))
        pi_r = trained("pi_r", lambda work, save: dpo(load(weak_base), load(weak_base), tokenizer, pairs,
                                                      seeded(config.weak_dpo, seed), work, save))  # fmt: skip
        cd = contrastive_samples(pi_r, load(weak_base), tokenizer, prompts, sampling(
            "cd_samples", alpha=config.cd_alpha, plausibility_threshold=config.cd_lam), chat)  # fmt: skip
        cd = cd.select_columns(["prompt", "completion"])
        cong_s = trained("cong_s", lambda work, save: sft(load(strong_base), tokenizer, cd,
                                                          seeded(config.strong_sft, seed), work, save))  # fmt: skip
        own = cong_pairs(cong_s, tokenizer, cd, sampling("cong_own_samples"), chat)
        cong = trained("cong", lambda work, save: dpo(load(f"{out}/cong_s"), load(f"{out}/cong_s"), tokenizer, own,
                                                      seeded(config.cong_dpo, seed), work, save))  # fmt: skip
    return {"pool": pool, "pairs": pairs, "pi_r": pi_r, "cd": cd, "cong_s": cong_s, "cong_pairs": own, "cong": cong}


@contextlib.contextmanager
def _work_dir(path: str | None):
    """A trainer's scratch folder: `path` as given, or a temporary folder removed afterwards."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="congkit-train-") as tmp:
        yield tmp
