"""Measuring models: samples judged on every reward channel, capability probes, and the weak pair's own checks
(its sample pool for claim 1, its attribute probes, the alpha sweep of claim 2). Pure functions of models and data;
`congkit.pipeline.stages` caches their results, `congkit.pipeline.evaluation` turns them into tables and verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from datasets import Dataset

from congkit.decoding import DecodingConfig, contrastive_generate, sample
from congkit.pipeline.cong import draw_row, scored_draws
from congkit.rewards import implicit_reward, implicit_reward_from_ids, mean_response_logprobs
from congkit.tokens import encode_prompt


def judged(scorer, prompts: list[str], texts: list[str]) -> dict[str, list[float]]:
    """{"scores": r*, "r_pref": ..., "r_cap": ...}: every channel the judge has (`scorer.channels`); a judge without
    channels (a reward model) is the preference judge, so r_pref = its score and there is no r_cap."""
    scores = [float(s) for s in scorer(prompts, texts)]
    channels = getattr(scorer, "channels", None)
    return {"scores": scores, "r_pref": scores} if channels is None else {"scores": scores, **channels(prompts, texts)}


def flat_draws(model, tokenizer, prompts: list[str], k: int, decoding: DecodingConfig, chat: bool) -> list[str]:
    """k samples of every prompt, flat, in `cong.draw_row`'s layout (each row seeded apart)."""
    return sample(model, tokenizer, prompts * k, decoding, progress=False, apply_chat_template=chat).texts


def evaluate_model(model, tokenizer, prompts: list[str], scorer, k: int, decoding: DecodingConfig, chat: bool,
                   capability: Callable[[object], dict] | None = None) -> dict:  # fmt: skip
    """k samples per prompt judged on every channel (lists of k rows of len(prompts)), their lengths, and
    `capability(model)` (held-out accuracy and the like)."""
    texts, n = flat_draws(model, tokenizer, prompts, k, decoding, chat), len(prompts)
    per_draw = lambda values: [[values[draw_row(i, j, n)] for i in range(n)] for j in range(k)]  # noqa: E731
    result = {name: per_draw(values) for name, values in judged(scorer, prompts * k, texts).items()}
    result["lengths"] = per_draw([len(t) for t in texts])
    return {**result, **(capability(model) if capability is not None else {})}


def heldout_capability(model, tokenizer, heldout: Dataset | None, is_correct, multiple_choice: Dataset | None,
                       greedy: DecodingConfig, chat: bool) -> dict:  # fmt: skip
    """Held-out accuracy (greedy answers judged by `is_correct`), the mean log-probability of the reference answers,
    and multiple-choice accuracy, for whichever of these sets the setting has."""
    out = {}
    if multiple_choice is not None:
        out["mc_accuracy"] = multiple_choice_accuracy(model, tokenizer, multiple_choice, apply_chat_template=chat)
    if heldout is None:
        return out
    prompts = list(heldout["prompt"])
    if is_correct is not None:
        answers = sample(model, tokenizer, prompts, greedy, progress=False, apply_chat_template=chat).texts
        out["heldout_accuracy"] = sum(is_correct(p, r) for p, r in zip(prompts, answers)) / len(prompts)
    if "reference" in heldout.column_names:
        logps = mean_response_logprobs(model, tokenizer, prompts, heldout["reference"], 256, chat)
        out["heldout_answer_logprob"] = sum(logps) / len(logps)
    return out


def multiple_choice_accuracy(model, tokenizer, questions: Dataset, batch_size: int = 16,
                             apply_chat_template: bool = False) -> float:  # fmt: skip
    """Accuracy on a multiple-choice set (columns question, choices: list[str], answer: index of the right choice).

    Each choice is scored by its mean per-token log-probability as the response to the question (length-normalised,
    as lm-eval-harness's acc_norm does per character); the highest-scoring choice is the model's answer.
    """
    missing = [c for c in ("question", "choices", "answer") if c not in questions.column_names]
    if missing:
        raise ValueError(f"multiple-choice set lacks column(s) {missing}; it has {questions.column_names}")
    if len(questions) == 0:
        raise ValueError("multiple-choice set is empty")
    flat = [(i, q, c) for i, (q, cs) in enumerate(zip(questions["question"], questions["choices"])) for c in cs]
    means = mean_response_logprobs(model, tokenizer, [q for _, q, _ in flat], [c for _, _, c in flat], batch_size,
                                   apply_chat_template)  # fmt: skip
    scores: dict[int, list[float]] = {}
    for (i, _, _), mean in zip(flat, means):
        scores.setdefault(i, []).append(mean)
    right = sum(int(np.argmax(scores[i])) == int(a) for i, a in enumerate(questions["answer"]))
    return right / len(questions)


def weak_pair_pool(pi_r, pi_ref, tokenizer, prompts: list[str], scorer, k: int, decoding: DecodingConfig,
                   chat: bool) -> Dataset:  # fmt: skip
    """pi_r's own samples (k per prompt) with the weak pair's implicit reward (sum and mean over tokens, beta 1) and
    every reward channel: claim 1 and the ranking preconditions are measured within this pool."""
    gen, implicit = scored_draws(pi_r, pi_ref, tokenizer, prompts, k, decoding, chat)
    n = len(prompts)
    order = sorted((draw_row(i, j, n), i, j) for i in range(n) for j in range(k))  # row -> (prompt i, draw j)
    rows = {"prompt": [prompts[i] for _, i, _ in order], "k": [j for _, _, j in order], "response": gen.texts,
            "implicit": implicit.total, "implicit_mean": implicit.mean}  # fmt: skip
    return Dataset.from_dict({**rows, **judged(scorer, prompts * k, gen.texts)})


def attribute_probes(pi_r, pi_ref, tokenizer, prompts: list[str],
                     probes: Callable[[str], list[tuple[str, str, str]]], chat: bool) -> Dataset:  # fmt: skip
    """Per prompt and preference attribute: the summed implicit reward of the better response and of the same
    response with that one attribute made worse."""
    rows = [(p, *probe) for p in prompts for probe in probes(p)]
    prompts_, attributes, better, worse = (list(col) for col in zip(*rows))
    good = implicit_reward(pi_r, pi_ref, tokenizer, prompts_, better, 1.0, 256, apply_chat_template=chat).total
    bad = implicit_reward(pi_r, pi_ref, tokenizer, prompts_, worse, 1.0, 256, apply_chat_template=chat).total
    return Dataset.from_dict({"prompt": prompts_, "attribute": attributes, "better": better, "worse": worse,
                              "implicit_better": good, "implicit_worse": bad})  # fmt: skip


def alpha_sweep(pi_r, pi_ref, tokenizer, prompts: list[str], scorer, alphas: Sequence[float], plausibility_threshold: float,
                decoding: DecodingConfig, chat: bool) -> Dataset:  # fmt: skip
    """Claim 2: CD samples at each alpha and naive samples of pi_r (alpha NaN), all with one seed (paired), each with
    its implicit reward (sum over tokens), length and every reward channel."""
    prompt_ids = [encode_prompt(tokenizer, p, chat) for p in prompts]
    rows = {"alpha": [], "prompt": [], "response": [], "implicit": [], "length": []}
    judged_rows: dict[str, list] = {}
    for alpha in [*alphas, float("nan")]:
        if alpha == alpha:  # CD at this alpha
            run = DecodingConfig(**{**vars(decoding), "alpha": alpha, "plausibility_threshold": plausibility_threshold})
            gen = contrastive_generate(pi_r, pi_ref, tokenizer, prompts, run, progress=False, apply_chat_template=chat)
            implicit = [sum(r) for r in gen.log_ratios]
        else:  # naive sampling from pi_r, scored by the rewards module
            gen = sample(pi_r, tokenizer, prompts, decoding, progress=False, apply_chat_template=chat)
            implicit = implicit_reward_from_ids(pi_r, pi_ref, prompt_ids, gen.token_ids, 1.0, 256).total
        for column, values in (("alpha", [alpha] * len(prompts)), ("prompt", prompts), ("response", gen.texts),
                               ("implicit", implicit), ("length", [len(t) for t in gen.texts])):  # fmt: skip
            rows[column] += values
        for name, values in judged(scorer, prompts, gen.texts).items():
            judged_rows.setdefault(name, []).extend(values)
    return Dataset.from_dict({**rows, **judged_rows})
