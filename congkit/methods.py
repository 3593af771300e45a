"""The one registry of the models the study compares. Each entry is self-contained: its name, label and role, and
for a trained method its `Recipe`: the data it trains on, the model it starts from, the other models its loss reads,
its training settings and its trainer. Tables, plots, verdicts and the cached pipeline all read this registry.

Roles: `reference` (the untrained bases and the aligned weak model), `baseline` (the paper's baselines), `ours` (ConG-S,
ConG), `ceiling` (the strong model trained on gold supervision), `arm` (an ablation beyond the paper, run when a
profile asks for it). `noise`: the method is also trained on noisy weak labels (epsilon > 0), for claim 5.

Adding a strong method is one entry here (plus a trainer in `congkit.trainers` if its loss is new): its data source
names a dataset the pipeline caches (`DATA`), its `train` function calls `congkit.cong`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import cong


@dataclass(frozen=True)
class TrainInputs:
    """What a recipe's `train` receives: the starting model, the tokenizer, the training data, the settings, the
    other models it declared (loaded on first use), where the trainer may write, and where to save the result."""

    start: object
    tokenizer: object
    data: object
    config: object
    models: Callable[[str], object]
    options: dict
    work_dir: str
    save_to: str


@dataclass(frozen=True)
class Recipe:
    """How a strong method is trained.

    Args:
        data: the name of the training data the pipeline provides (a key of `DATA`).
        train: `TrainInputs -> (model, history)`, calling `congkit.cong`.
        config: the `PipelineConfig` field that holds its `TrainConfig`, or `(PipelineConfig, data) -> TrainConfig`.
        start: the model training starts from (a method name: "strong_base", or e.g. "cong_s").
        models: other models its loss reads, frozen (method names), passed through `TrainInputs.models`.
        options: `PipelineConfig` fields the trainer also takes (e.g. AuxConf's weight), by name.
        overrides: `TrainConfig` fields set for this recipe only, e.g. (("beta", 0.5),) for a WSPO variant.
        version: bump when the recipe's results would change (part of the cache key).
    """

    data: str
    train: Callable[[TrainInputs], tuple]
    config: str | Callable
    start: str = "strong_base"
    models: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    overrides: tuple[tuple[str, object], ...] = ()
    version: int = 1


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    role: str
    noise: bool = False
    recipe: Recipe | None = field(default=None, compare=False)


# --- the training data a recipe can name: (prompt, completion) for SFT-like losses, (prompt, chosen, rejected) for DPO
DATA = {
    "plain_samples": "one ordinary sample of pi_r per training prompt",
    "cd_samples": "one CD sample (pi_r against pi_ref, alpha = cd_alpha) per training prompt",
    "weak_chosen": "the weak preference set's chosen responses",
    "gold": "gold responses (SFT), or the strong base's own samples ranked by the explicit reward (DPO)",
    "cong_pairs": "CD sample (chosen) vs ConG-S's own sample (rejected)",
    "bon_implicit": "the best of N pi_r samples per training prompt by the weak pair's implicit reward (no labels)",
}


def _sft(x: TrainInputs):
    return cong.sft(x.start, x.tokenizer, x.data, x.config, x.work_dir, x.save_to)


def _dpo(x: TrainInputs):
    """DPO against the frozen copy of the starting model (the first declared model)."""
    return cong.dpo(x.start, x.models("reference"), x.tokenizer, x.data, x.config, x.work_dir, x.save_to)


def _auxconf(x: TrainInputs):
    return cong.auxconf(x.start, x.tokenizer, x.data, x.config, x.options["auxconf_weight"], work_dir=x.work_dir,
                        save_to=x.save_to)  # fmt: skip


def _wspo(x: TrainInputs):
    return cong.wspo(x.start, x.models("strong_base"), x.models("weak_aligned"), x.models("weak_base"), x.tokenizer,
                     x.data, x.config, work_dir=x.work_dir, save_to=x.save_to)  # fmt: skip


def _gold(x: TrainInputs):
    """SFT on gold responses, or DPO on ranked own samples when the setting has no gold responses."""
    return _dpo(x) if "chosen" in x.data.column_names else _sft(x)


def _gold_config(config, data):
    return config.gold_dpo if "chosen" in data.column_names else config.gold_sft


WSPO_MODELS = ("strong_base", "weak_aligned", "weak_base")

METHODS: tuple[Method, ...] = (
    Method("weak_base", "weak base (π_ref)", "reference"),
    Method("weak_aligned", "weak aligned (π_r)", "reference", noise=True),
    Method("strong_base", "strong base", "reference"),
    Method("weaksft", "WeakSFT", "baseline", noise=True, recipe=Recipe("plain_samples", _sft, "strong_sft")),
    Method("auxconf", "AuxConf", "baseline",
           recipe=Recipe("plain_samples", _auxconf, "strong_sft", options=("auxconf_weight",))),
    Method("wspo", "WSPO", "baseline", recipe=Recipe("weak_chosen", _wspo, "wspo", models=WSPO_MODELS)),
    Method("cong_s", "ConG-S", "ours", noise=True, recipe=Recipe("cd_samples", _sft, "strong_sft")),
    Method("cong", "ConG", "ours", noise=True,
           recipe=Recipe("cong_pairs", _dpo, "cong_dpo", start="cong_s", models=("reference",))),
    Method("gold", "gold ceiling", "ceiling", recipe=Recipe("gold", _gold, _gold_config, models=("reference",))),
    # the arms of the decomposition (analysis_plan.md): each removes one difference between ConG and WSPO
    Method("sft_chosen", "SFT on weak chosen", "arm", recipe=Recipe("weak_chosen", _sft, "strong_sft")),
    Method("wspo_cd", "WSPO on CD samples", "arm", recipe=Recipe("cd_samples", _wspo, "wspo", models=WSPO_MODELS)),
    Method("wspo_plain", "WSPO on π_r samples", "arm",
           recipe=Recipe("plain_samples", _wspo, "wspo", models=WSPO_MODELS)),
    Method("wspo_b05", "WSPO, β 0.5", "arm",
           recipe=Recipe("weak_chosen", _wspo, "wspo", models=WSPO_MODELS, overrides=(("beta", 0.5),))),
    Method("wspo_b10", "WSPO, β 1.0", "arm",
           recipe=Recipe("weak_chosen", _wspo, "wspo", models=WSPO_MODELS, overrides=(("beta", 1.0),))),
    # beyond the paper: label-free selection with exactly ConG's information
    Method("bon_implicit", "best-of-N by implicit reward (SFT)", "arm", recipe=Recipe("bon_implicit", _sft, "strong_sft")),
)  # fmt: skip
BY_NAME = {m.name: m for m in METHODS}
METHOD_ORDER = [m.name for m in METHODS]
METHOD_LABELS = {m.name: m.label for m in METHODS}
BASELINES = tuple(m.name for m in METHODS if m.role == "baseline")
OURS = tuple(m.name for m in METHODS if m.role == "ours")
ARMS = tuple(m.name for m in METHODS if m.role == "arm")
STRONG_METHODS = BASELINES + OURS  # trained from the strong base on weak supervision: the paper's comparison


def reads_beta(name: str, data_columns) -> bool:
    """Whether method `name`'s loss reads `TrainConfig.beta`: DPO and WSPO do, SFT and AuxConf do not (the gold
    ceiling is DPO only on ranked pairs, i.e. data with a "chosen" column)."""
    train = recipe(name).train
    return train in (_dpo, _wspo) or (train is _gold and "chosen" in data_columns)


def method(name: str) -> Method:
    """The registry entry of `name`; an unknown name raises, naming the known ones."""
    if name not in BY_NAME:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHOD_ORDER)}")
    return BY_NAME[name]


def recipe(name: str) -> Recipe:
    """How `name` is trained; a method without a recipe (a base model) cannot be trained."""
    found = method(name).recipe
    if found is None:
        raise ValueError(f"method {name!r} has no training recipe (it is a {method(name).role} model)")
    return found


def label(name: str) -> str:
    return METHOD_LABELS.get(name, name)
