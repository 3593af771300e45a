"""Writes notebooks/*.ipynb from the cell lists below (kept as code so the notebooks stay reviewable in diffs).

python tools/make_notebooks.py
"""

from pathlib import Path

import nbformat as nbf

OUT = Path(__file__).resolve().parent.parent / "notebooks"

PARAMS = """profile = "default"  # smoke | default | real
runs_dir = "../runs"  # stage cache (shared by all notebooks)
seed = 0  # the seed whose artifacts are shown in detail
real = {}  # profile "real" only: RealCheckpoints fields, e.g. {"weak_model": "/models/Qwen2.5-0.5B-Instruct"}"""

SETUP = """import warnings

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

import congkit
from congkit import plots
from congkit.study import check_notebook_parameters, study_objects

check_notebook_parameters(profile, runs_dir, seed, real EXTRA)  # stops here, naming the parameter, on a bad value
pd.set_option("display.max_colwidth", 80)
world, setting, pipe = study_objects(profile, runs_dir, real=real)
print(f"profile={profile}, setting={setting.name}, seeds={pipe.config.seeds}, noise levels={pipe.config.noise_levels}")"""


def md(text):
    return nbf.v4.new_markdown_cell(text.strip())


def code(text, tags=None):
    cell = nbf.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = tags
    return cell


NOTEBOOKS = {
    "01_implicit_reward_and_cd.ipynb": [
        md(r"""
# 1. Implicit reward and contrastive decoding

A DPO-aligned policy $\pi_r$ and its reference $\pi_{ref}$ define an **implicit reward** (Rafailov et al., 2023):

$$\hat r(x, y) = \beta \log \frac{\pi_r(y\mid x)}{\pi_{ref}(y\mid x)} = \beta \sum_t \Big[\log \pi_r(y_t\mid x, y_{<t}) - \log \pi_{ref}(y_t \mid x, y_{<t})\Big].$$

Each summand is a **token-level implicit reward**. ConG's contrastive decoding (CD) scores the next token $v$, inside the
plausibility head $V_{head} = \{v : \pi_r(v\mid\cdot) \ge \lambda \max_w \pi_r(w\mid\cdot)\}$, by

$$F(v) = (1-\alpha)\log\frac{\pi_r(v\mid\cdot)}{\pi_{ref}(v\mid\cdot)} + \alpha \log \pi_r(v\mid\cdot) = \log\pi_r(v\mid\cdot) - (1-\alpha)\log\pi_{ref}(v\mid\cdot),$$

and samples from $p_\alpha = \mathrm{softmax}(F)$, with $F = -\infty$ outside the head. Three consequences:

* $\alpha = 1$: $F = \log \pi_r$ on the head, so $p_1$ is $\pi_r$ renormalised to the head: ordinary sampling from the
  aligned model (with a min-$p$ filter).
* $\alpha = 0$: $F$ *is* the token-level implicit reward, so CD picks head tokens by implicit reward; summed over a
  sequence that is $\hat r / \beta$. Intermediate $\alpha$ trade likelihood against implicit reward token by token:
  the **CD-implicit reward equivalence**.
* The head keeps CD away from tokens that are implausible under $\pi_r$ but happen to have a large ratio (tokens
  $\pi_{ref}$ considers nearly impossible).

Below, each identity is checked numerically on the study's weak pair: the pre-alignment weak model ($\pi_{ref}$) and
its DPO-aligned version ($\pi_r$, built by the pipeline and cached).
"""),
        code(PARAMS + "\nalpha = 0.5\nlam = 0.1\nn_prompts = 64", tags=["parameters"]),
        code(SETUP.replace(" EXTRA", ", alpha=alpha, lam=lam, n_prompts=n_prompts")),
        code("""from congkit.derivation import cd_identity_checks, next_token_logprobs

tok = pipe.tokenizer
pi_ref = pipe.load(setting.weak_base)
pi_r = pipe.load(pipe.weak_aligned(seed, 0.0))
prompts = list(setting.eval_prompts["prompt"][:n_prompts])
expert_logp = next_token_logprobs(pi_r, tok, prompts)
amateur_logp = next_token_logprobs(pi_ref, tok, prompts)
pd.Series(cd_identity_checks(expert_logp, amateur_logp, alpha, lam), name="value").to_frame()"""),
        md("""
Each check compares congkit's decoding scores with the formula written out: the first and third rows are the largest
absolute deviations over all prompts and head tokens (floating-point round-off is ~1e-6), the second and fourth are
exact properties. The head size depends on $\\lambda$:
"""),
        code("""fig = plots.head_size_vs_lambda(expert_logp)
plt.show()"""),
        md("""
The same identities hold at every step of generation, since CD applies them to each next-token distribution. congkit's
batched decoder also returns each generated token's implicit reward $\\log \\pi_r - \\log \\pi_{ref}$ at no extra cost.
A few responses from the two extremes and the middle of the $\\alpha$ range, same seed:
"""),
        code("""rows = {}
for a in (0.0, 0.5, 1.0):
    out = congkit.contrastive_generate(pi_r, pi_ref, tok, prompts[:6], alpha=a, lam=lam, seed=seed,
                                       repetition_penalty=1.0, max_new_tokens=48, progress=False)
    rows[f"alpha={a}"] = [f"{t!r} (implicit {r:+.2f})" for t, r in zip(out.texts, out.implicit_reward())]
pd.DataFrame(rows, index=prompts[:6])"""),
    ],
    "02_weak_alignment.ipynb": [
        md("""
# 2. Weak alignment

The weak side of the pipeline: the world the models live in, the weak model's preference data, its DPO alignment, and
claim 1 of the paper: *the implicit reward of the weak pair correlates with the explicit reward*.

## The world card

On the synthetic default every quantity is measured, not assumed: the corpus's noise rates, both base models' rates when
sampled at the evaluation decoding (temperature 0.8, top-p 0.95) on evaluation prompts, both reward channels
($R_{pref}$, $R_{cap}$), and the models' capabilities (greedy accuracy and the log-probability of the correct answer, on
evaluation prompts and on the held-out task family that alignment never sees).
"""),
        code(PARAMS, tags=["parameters"]),
        code(SETUP.replace(" EXTRA", "")),
        code("""if world is not None:
    display(congkit.card_table(world.card).round(3))
    corpus = world.card["corpus"]
    print(f"explicit reward: clean corpus responses {corpus['reward_clean']:.3f}, noisy ones {corpus['reward_noisy']:.3f}; "
          f"world built in {world.card['build_seconds']} s")
else:
    print("real checkpoints: no world card")"""),
        md("""
## Weak preference data

For each training prompt the weak base model draws several samples (temperature 0.8, top-p 0.95); the explicit reward
$r^* = 0.8 R_{pref} + 0.2 R_{cap}$ (what a reward model would score) ranks them; best = chosen, worst = rejected; ties
are dropped. With label noise $\\epsilon$, a seeded fraction of the
pairs is flipped (used for claim 5).
"""),
        code("""pairs = pipe.weak_preferences(seed, 0.0)
print(f"{len(pairs)} pairs from {len(setting.train_prompts)} prompts; "
      f"mean chosen reward {sum(pairs['chosen_score']) / len(pairs):.3f}, rejected {sum(pairs['rejected_score']) / len(pairs):.3f}")
pairs.to_pandas()[["prompt", "chosen", "rejected", "chosen_score", "rejected_score"]].head(8)"""),
        md("## DPO of the weak model: training curves (TRL `DPOTrainer`, one run per seed)"),
        code("""histories = {f"seed {s}, eps={e}": plots.load_history(pipe.weak_aligned(s, e))
             for s in pipe.config.seeds for e in pipe.config.noise_levels}
fig = plots.training_curves(histories, "loss")
plt.show()
fig = plots.training_curves({k: v for k, v in histories.items() if k.endswith("eps=0.0")}, "rewards/margins")
plt.show()"""),
        md("""
## Claim 1: the implicit reward ranks $\\pi_r$'s own samples by preference

Eight samples of $\\pi_r$ per *evaluation* prompt (not the ones DPO trained on), each scored by the weak pair's
implicit reward (the sum of $\\log \\pi_r/\\pi_{ref}$ over response tokens) and by $R_{pref}$. The claim is judged
within each prompt's samples, where CD makes its choices, not across a pool of two models.
"""),
        code("""pool = pipe.weak_pair_pool(seed).to_pandas()
fig = plots.implicit_vs_r_pref(pool)
plt.show()
claims = pipe.claims()
weak_pair = claims[claims.method == "weak_pair"].pivot_table(index="seed", columns="metric", values="value")
weak_pair.round(3)"""),
    ],
    "03_contrastive_sampling.ipynb": [
        md("""
# 3. Contrastive sampling

CD between $\\pi_r$ and $\\pi_{ref}$ across $\\alpha$ (claim 2: CD samples carry higher implicit *and* explicit reward
than naive samples from $\\pi_r$; the sweep shows the trade-off). Each point is the mean over the evaluation prompts
(one sample each), then over seeds with a 95% interval; the dashed line is naive sampling from $\\pi_r$ (same
temperature and top-p, no head).
"""),
        code(PARAMS, tags=["parameters"]),
        code(SETUP.replace(" EXTRA", "")),
        code("""claims = pipe.claims()
fig = plots.alpha_sweep(claims)
plt.show()"""),
        code("""sweep = claims[claims.method.isin(["cd", "naive"])]
summary = sweep.groupby(["method", "alpha"], dropna=False).apply(
    lambda g: g.groupby("metric").value.mean(), include_groups=False)
summary.round(3)"""),
        md("### Sample responses side by side ($R_{pref}$ in brackets)"),
        code("""from congkit.evaluation import side_by_side

side_by_side(pipe.alpha_sweep(seed), alphas=(0.0, pipe.config.cd_alpha, 1.0))"""),
        md("""
The pipeline's CD samples for the strong model use the $\\alpha$ fixed in the configuration before any run (0.5) and
$\\lambda$ = 0.1 on the *training* prompts; the next notebook trains on them.
"""),
    ],
    "04_strong_training.ipynb": [
        md("""
# 4. Training the strong model

Every method starts from the same strong base model and the same training prompts:

| method | trains on | loss |
|---|---|---|
| WeakSFT | $\\pi_r$'s ordinary samples | SFT (TRL `SFTTrainer`) |
| AuxConf | $\\pi_r$'s ordinary samples | Burns et al.'s auxiliary confidence: per token, CE to the weak token mixed with CE to the strong model's own argmax, weight warmed up |
| WSPO | the chosen responses of the weak preference set (as the authors' release) | per-token squared error between $\\beta\\log(\\pi_s/\\pi_{s,ref})$ and $\\log(\\pi_r/\\pi_{ref})$ |
| ConG-S | CD samples | SFT |
| ConG | CD sample (chosen) vs ConG-S's own sample (rejected) | DPO from ConG-S |
| gold | the ideal response of every training prompt (gold supervision) | SFT (the ceiling for PGR) |
"""),
        code(PARAMS, tags=["parameters"]),
        code(SETUP.replace(" EXTRA", "")),
        code("""import time

start = time.perf_counter()
paths = {(s, e): pipe.model_paths(s, e) for s in pipe.config.seeds for e in pipe.config.noise_levels}
print(f"all strong models ready ({time.perf_counter() - start:.0f} s in this cell; cached stages are reused)")"""),
        md("## Training curves (seed shown in the parameters, no label noise)"),
        code("""from congkit.methods import METHOD_LABELS

shown = paths[(seed, pipe.config.noise_levels[0])]
sft_like = {METHOD_LABELS[m]: plots.load_history(shown[m]) for m in ("weaksft", "auxconf", "cong_s", "gold")}
fig = plots.training_curves(sft_like, "loss")
plt.show()
fig = plots.training_curves({"WSPO": plots.load_history(shown["wspo"])}, "loss")
plt.show()
fig = plots.training_curves({"ConG": plots.load_history(shown["cong"])}, "rewards/margins")
plt.show()"""),
        md("## What each method saw (first training prompts)"),
        code("""pipe.training_views(seed, 0.0, n=6)"""),
    ],
    "05_results.ipynb": [
        md(r"""
# 5. Results

Every model is judged on the held-out evaluation prompts, eight samples each at the evaluation decoding (temperature 0.8,
top-p 0.95), on both reward channels: $R_{pref}$ (the preference reward, our stand-in for AlpacaEval / Arena-Hard) and
$R_{cap}$ (the correct rate); by its win rate on $R_{pref}$ against the untouched strong base model (ties count half);
by the performance gap recovered, both from the weak aligned model as Burns et al. define it,
$\mathrm{PGR} = (m - \pi_r) / (\text{gold} - \pi_r)$, and from the strong base,
$\mathrm{PGR}_{strong} = (m - \text{strong base}) / (\text{gold} - \text{strong base})$; and by its greedy accuracy on
the held-out task family. Means over the seeds (paired replicates of the whole pipeline) with 95% t-intervals.
"""),
        code(PARAMS, tags=["parameters"]),
        code(SETUP.replace(" EXTRA", "")),
        code("""from congkit.evaluation import main_table, preconditions, verdicts

table = pipe.run()
print(f"{len(table)} rows; {len(pipe.config.seeds)} seeds; noise levels {pipe.config.noise_levels}")
main_table(table).round(3)"""),
        md(r"""
## Preconditions: is this a fair test?

Before any verdict, the conditions under which a test of ConG is fair are measured on the same runs. A claim whose
preconditions are not met is reported as **untestable here**, never as "does not hold". `met` judges the mean over
seeds against the requirement, fixed in `congkit.evaluation.conditions_for` before the runs.
"""),
        code("""conditions = preconditions(table, pipe.config)
conditions.round(3)"""),
        md(r"""
## Verdicts

Three-way verdicts (holds / does not hold / inconclusive, or untestable here), by rules fixed in code before the run
(`congkit.evaluation.CLAIMS`), each printed with its rule:
"""),
        code("""v = verdicts(table, conditions, pipe.config)
display(Markdown("\\n".join(
    f"* **{r.claim}**: **{r.verdict}** (estimate {r.estimate:+.3f}, 95% CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}])"
    + (f"; unmet: {r.unmet}" if r.unmet else "") + f".  \\n  *Rule:* {r.rule}." for r in v.itertuples())))
v.drop(columns=["rule"]).round(3)"""),
        code("""for metric, label in (("r_pref", "R_pref"), ("win_rate", "win rate vs strong base (R_pref)"),
                      ("r_cap", "R_cap (correct rate)"), ("pgr", "PGR from weak aligned"),
                      ("pgr_strong", "PGR from strong base"), ("heldout_accuracy", "held-out family accuracy")):
    if (table.metric == metric).any():
        fig = plots.method_bars(table, metric, ylabel=label)
        plt.show()"""),
        md("## Robustness to noisy weak supervision (claim 5)"),
        code("""fig = plots.noise_curves(table, "r_pref")
plt.show()"""),
        md(r"""
How to read these against the paper: the paper's models are 0.5-8B instruction-tuned LLMs judged by AlpacaEval 2 and
Arena-Hard; here the models are tiny word-level transformers in a world whose rewards are exact. A verdict here says
whether the mechanism works as described in a world built so that it can; it is reported as measured.
"""),
    ],
}


def main():
    OUT.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbf.write(nb, OUT / name)
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()
