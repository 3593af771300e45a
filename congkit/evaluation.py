"""From stage outputs to the tidy results table (method, seed, setting, metric, value), summaries and verdicts.

Metrics per model and seed (eval prompts, `eval_samples` samples each):
- reward: mean explicit reward;
- win_rate: P(r*(model sample) > r*(strong base sample)) + 0.5 P(tie), sample k against sample k of the same prompt
  (our stand-in for AlpacaEval / Arena-Hard win rates against a fixed reference);
- length: mean response length in characters (a reward gain from length alone would show here);
- heldout_accuracy / heldout_answer_logprob: capability on the held-out family; retention = method / strong base;
- pgr: (method - weak aligned) / (gold - weak aligned) on reward (Burns et al., 2023).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from datasets import Dataset
from scipy import stats

METHOD_ORDER = ["weak_base", "weak_aligned", "strong_base", "weaksft", "auxconf", "wspo", "cong_s", "cong", "gold"]
METHOD_LABELS = {
    "weak_base": "weak base (pi_ref)",
    "weak_aligned": "weak aligned (pi_r)",
    "strong_base": "strong base",
    "weaksft": "WeakSFT",
    "auxconf": "AuxConf",
    "wspo": "WSPO",
    "cong_s": "ConG-S",
    "cong": "ConG",
    "gold": "gold ceiling",
}


def win_rate(scores: list[list[float]], reference: list[list[float]]) -> float:
    """Paired win rate, ties count half."""
    a, b = np.asarray(scores, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"win rate needs paired samples: {a.shape} vs reference {b.shape}")
    return float(((a > b) + 0.5 * (a == b)).mean())


def evaluation_rows(method: str, seed: int, eps: float, result: dict, reference: dict) -> list[dict]:
    setting = f"eps={eps}"
    metrics = {
        "reward": float(np.mean(result["scores"])),
        "win_rate": win_rate(result["scores"], reference["scores"]),
        "length": float(np.mean(result["lengths"])),
    }
    for key in ("heldout_accuracy", "heldout_answer_logprob", "mc_accuracy"):
        if key in result:
            metrics[key] = result[key]
    if "heldout_accuracy" in result and reference.get("heldout_accuracy"):
        metrics["retention"] = result["heldout_accuracy"] / reference["heldout_accuracy"]
    elif "mc_accuracy" in result and reference.get("mc_accuracy"):
        metrics["retention"] = result["mc_accuracy"] / reference["mc_accuracy"]
    return [dict(method=method, seed=seed, setting=setting, metric=k, value=v) for k, v in metrics.items()]


def pgr_rows(table: pd.DataFrame) -> list[dict]:
    """PGR on reward for each method, seed and noise setting."""
    reward = table[table.metric == "reward"].pivot_table(index=["seed", "setting"], columns="method", values="value")
    rows = []
    for (seed, setting), r in reward.iterrows():
        gap = r.get("gold", math.nan) - r.get("weak_aligned", math.nan)
        for method in r.index:
            if method in ("weak_base", "weak_aligned", "gold") or not np.isfinite(gap) or gap == 0:
                continue
            rows.append(dict(method=method, seed=seed, setting=setting, metric="pgr",
                             value=(r[method] - r["weak_aligned"]) / gap))  # fmt: skip
    return rows


def claim_rows(seed: int, pool: Dataset, sweep: Dataset) -> list[dict]:
    """Claim 1 (rank correlation of implicit vs explicit reward) and claim 2 (the alpha sweep vs naive sampling)."""
    rho = stats.spearmanr(pool["implicit"], pool["explicit"]).statistic
    rows = [dict(method="weak_pair", seed=seed, setting="pool", metric="spearman_implicit_explicit", value=rho)]
    for source in sorted(set(pool["source"])):
        part = pool.filter(lambda r, s=source: r["source"] == s)
        rho = stats.spearmanr(part["implicit"], part["explicit"]).statistic
        rows.append(dict(method="weak_pair", seed=seed, setting=f"pool:{source}",
                         metric="spearman_implicit_explicit", value=rho))  # fmt: skip
    df = sweep.to_pandas()
    for alpha, part in df.groupby(df.alpha.fillna(-1.0)):
        method, setting = ("naive", "pi_r") if alpha < 0 else ("cd", f"alpha={alpha:.1f}")
        for metric, value in (
            ("implicit", part.implicit.mean()),
            ("explicit", part.explicit.mean()),
            ("length", part.length.mean()),
            ("distinct", part.response.nunique() / len(part)),
        ):
            rows.append(dict(method=method, seed=seed, setting=setting, metric=metric, value=float(value)))
    return rows


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and a t confidence interval over seeds (NaN bounds with one seed)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% interval over seeds for every (method, setting, metric)."""
    rows = []
    for (method, setting, metric), part in table.groupby(["method", "setting", "metric"]):
        mean, lo, hi = mean_ci(part.value)
        rows.append(dict(method=method, setting=setting, metric=metric, mean=mean, ci_low=lo, ci_high=hi,
                         n_seeds=part.seed.nunique()))  # fmt: skip
    return pd.DataFrame(rows)


def main_table(table: pd.DataFrame, setting: str = "eps=0.0") -> pd.DataFrame:
    """Methods x metrics at one noise setting, 'mean ± half-width' strings, in the book's order."""
    summary = summarise(table[table.setting == setting])
    metrics = ["reward", "win_rate", "pgr", "length", "heldout_accuracy", "retention"]
    out = {}
    for method in [m for m in METHOD_ORDER if m in set(summary.method)]:
        row = {}
        for metric in metrics:
            hit = summary[(summary.method == method) & (summary.metric == metric)]
            if len(hit):
                m, lo, hi = hit.iloc[0][["mean", "ci_low", "ci_high"]]
                row[metric] = f"{m:.3f}" if not np.isfinite(lo) else f"{m:.3f} ± {(hi - lo) / 2:.3f}"
        out[METHOD_LABELS.get(method, method)] = row
    return pd.DataFrame(out).T.reindex(columns=metrics).fillna("")


def metric_mean(table: pd.DataFrame, method: str, metric: str, setting: str | None = None) -> float:
    part = table[(table.method == method) & (table.metric == metric)]
    if setting is not None:
        part = part[part.setting == setting]
    return float(part.value.mean()) if len(part) else math.nan


def paired_differences(table: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], metric: str) -> list[float]:
    """Per-seed differences of `metric` between (method, setting) a and b (seeds present in both)."""

    def per_seed(key):
        part = table[(table.method == key[0]) & (table.setting == key[1]) & (table.metric == metric)]
        return part.groupby("seed").value.mean()

    x, y = per_seed(a), per_seed(b)
    common = x.index.intersection(y.index)
    return list(x[common] - y[common])


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One plain-words verdict per testable paper claim, with the numbers behind it."""
    base = "eps=0.0"
    rows = []
    rho = metric_mean(table, "weak_pair", "spearman_implicit_explicit", "pool")
    rows.append(dict(claim="1. implicit reward correlates with explicit reward", holds=bool(rho > 0.3),
                     evidence=f"Spearman rho = {rho:.3f} over pi_ref and pi_r samples on eval prompts"))  # fmt: skip

    naive_i, naive_e = (metric_mean(table, "naive", m) for m in ("implicit", "explicit"))
    alphas = sorted({s for s in table[table.method == "cd"].setting}, key=lambda s: float(s[6:]))
    significant, lines = [], []
    for setting in alphas:
        diffs = {m: paired_differences(table, ("cd", setting), ("naive", "pi_r"), m) for m in ("implicit", "explicit")}
        stats_ = {m: mean_ci(d) for m, d in diffs.items()}
        lines.append(f"{setting}: implicit {stats_['implicit'][0]:+.3f}, explicit {stats_['explicit'][0]:+.3f}")
        # alpha = 1 is pi_r with the head as a min-p filter: its gain is the head's, not the contrast's
        if float(setting[6:]) < 1 and all(np.isfinite(s[1]) and s[1] > 0 for s in stats_.values()):
            significant.append(setting)
    rows.append(dict(claim="2. CD samples beat naive pi_r samples on implicit and explicit reward",
                     holds=bool(significant),
                     evidence=f"naive pi_r: implicit {naive_i:.3f}, explicit {naive_e:.3f}; CD minus naive, mean over "
                              f"seeds: {'; '.join(lines)}; alphas < 1 better on both with 95% intervals above 0: "
                              f"{', '.join(significant) or 'none'}"))  # fmt: skip

    ours = {m: metric_mean(table, m, "reward", base) for m in ("cong_s", "cong")}
    baselines = {m: metric_mean(table, m, "reward", base) for m in ("weaksft", "auxconf", "wspo")}
    best_ours, best_base = max(ours, key=ours.get), max(baselines, key=baselines.get)
    rows.append(dict(claim="3. ConG-S / ConG beat WeakSFT, AuxConf, WSPO",
                     holds=bool(ours[best_ours] > baselines[best_base]),
                     evidence="reward: " + ", ".join(f"{METHOD_LABELS[m]} {v:.3f}" for m, v in {**ours, **baselines}.items())
                     + "; win rates: " + ", ".join(f"{METHOD_LABELS[m]} {metric_mean(table, m, 'win_rate', base):.3f}"
                                                   for m in (*ours, *baselines))))  # fmt: skip

    retention = {m: metric_mean(table, m, "retention", base) for m in ("cong_s", "cong")}
    rows.append(dict(claim="4. capabilities (held-out family) preserved", holds=bool(min(retention.values()) > 0.9),
                     evidence=", ".join(f"{METHOD_LABELS[m]} retains {v:.2f} of the strong base's accuracy"
                                        for m, v in retention.items())))  # fmt: skip

    noisy = sorted({s for s in table.setting.unique() if s.startswith("eps=")}, key=lambda s: float(s[4:]))
    if len(noisy) > 1:
        lo, hi = noisy[0], noisy[-1]
        drop = {m: metric_mean(table, m, "reward", lo) - metric_mean(table, m, "reward", hi)
                for m in ("weaksft", "cong_s", "cong")}  # fmt: skip
        rows.append(dict(claim="5. ConG is more robust to label noise than imitation (WeakSFT)",
                         holds=bool(min(drop["cong"], drop["cong_s"]) < drop["weaksft"]),
                         evidence=f"reward drop from {lo} to {hi}: "
                                  + ", ".join(f"{METHOD_LABELS[m]} {v:+.3f}" for m, v in drop.items())))  # fmt: skip
    return pd.DataFrame(rows)


def side_by_side(sweep: Dataset, alphas=(0.0, 0.5, 1.0), n: int = 6) -> pd.DataFrame:
    """A few eval prompts with the naive pi_r sample and CD samples at some alphas, explicit reward in brackets."""
    df = sweep.to_pandas()
    prompts = list(dict.fromkeys(df.prompt))[:n]
    out = []
    for prompt in prompts:
        part = df[df.prompt == prompt]
        row = {"prompt": prompt}
        naive = part[part.alpha.isna()].iloc[0]
        row["naive pi_r"] = f"{naive.response!r} [{naive.explicit:.2f}]"
        for a in alphas:
            hit = part[np.isclose(part.alpha, a)]
            if len(hit):
                row[f"CD alpha={a}"] = f"{hit.iloc[0].response!r} [{hit.iloc[0].explicit:.2f}]"
        out.append(row)
    return pd.DataFrame(out)


def multiple_choice_accuracy(model, tokenizer, questions: Dataset, batch_size: int = 16) -> float:
    """Accuracy on a multiple-choice set (columns question, choices: list[str], answer: index of the right choice).

    Each choice is scored by its mean per-token log-probability as the response to the question (length-normalised,
    as lm-eval-harness's acc_norm does per character); the highest-scoring choice is the model's answer.
    """
    from .rewards import mean_response_logprobs

    missing = [c for c in ("question", "choices", "answer") if c not in questions.column_names]
    if missing:
        raise ValueError(f"multiple-choice set lacks column(s) {missing}; it has {questions.column_names}")
    if len(questions) == 0:
        raise ValueError("multiple-choice set is empty")
    flat = [(i, q, c) for i, (q, cs) in enumerate(zip(questions["question"], questions["choices"])) for c in cs]
    means = mean_response_logprobs(model, tokenizer, [q for _, q, _ in flat], [c for _, _, c in flat], batch_size)
    scores: dict[int, list[float]] = {}
    for (i, _, _), mean in zip(flat, means):
        scores.setdefault(i, []).append(mean)
    right = sum(int(np.argmax(scores[i])) == int(a) for i, a in enumerate(questions["answer"]))
    return right / len(questions)
