"""The one registry of the models the study compares. Each entry is self-contained: its name, label and role, and
for a trained method its `Recipe`: the data it trains on, the model it starts from, the other models its loss reads,
its training settings and its trainer. Tables, plots, verdicts and the cached pipeline all read this registry.

Roles: `reference` (the untrained bases and the aligned weak model), `baseline` (the paper's baselines), `ours` (ConG-S,
ConG), `ceiling` (the strong model trained on gold supervision), `arm` (an ablation beyond the paper, run when a
profile asks for it). `noise`: the method is also trained on noisy weak labels (epsilon > 0), for claim 5.

Adding a strong method is its entry (`register(Method(...))`, here or in your own code) and, if its loss is new, a
`train` function calling a trainer; on new data, a source declared with `@data_source(columns)` where it is defined
(`DATA_SOURCES`: the one table of training data). The run reads the registry: verdicts, tables and the regime map
take the methods a run trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from congkit.pipeline import cong
from congkit.pipeline.runner import node


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
        data: the name of the training data the pipeline provides (a key of `DATA_SOURCES`).
        train: `TrainInputs -> (model, history)`, calling `congkit.pipeline.cong`.
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


@dataclass(frozen=True)
class DataSource:
    """Training data a recipe can name: a node `fn(pipe, seed, eps) -> Dataset` (`congkit.pipeline.runner.node`) whose
    dataset has `columns` ((prompt, completion) for SFT-like losses, (prompt, chosen, rejected) for DPO)."""

    name: str
    columns: tuple[str, ...]
    description: str


DATA_SOURCES: dict[str, DataSource] = {}  # the one table of training data, filled where each source is defined


def data_source(*columns: str, stage: bool = False):
    """Declare the decorated node function (`congkit.pipeline.runner.node`; `stage`: its dataset is a cached artifact) a
    training-data source with these columns; its docstring describes it."""

    def declare(fn: Callable) -> Callable:
        DATA_SOURCES[fn.__name__] = DataSource(fn.__name__, columns, " ".join((fn.__doc__ or "").split()))
        return node(fn, stage=stage)

    return declare


def by_sft(x: TrainInputs):
    return cong.sft(x.start, x.tokenizer, x.data, x.config, x.work_dir, x.save_to)


def by_dpo(x: TrainInputs):
    """DPO against the frozen copy of the starting model (the first declared model)."""
    return cong.dpo(x.start, x.models("reference"), x.tokenizer, x.data, x.config, x.work_dir, x.save_to)


def by_auxconf(x: TrainInputs):
    return cong.auxconf(x.start, x.tokenizer, x.data, x.config, x.options["auxconf_weight"], work_dir=x.work_dir,
                        save_to=x.save_to)  # fmt: skip


def by_wspo(x: TrainInputs):
    return cong.wspo(x.start, x.models("strong_base"), x.models("weak_aligned"), x.models("weak_base"), x.tokenizer,
                     x.data, x.config, work_dir=x.work_dir, save_to=x.save_to)  # fmt: skip


def by_wspo_sequence_mean(x: TrainInputs):
    """WSPO regressed onto the weak log-ratio's mean over each response: the control without token-level credit."""
    return cong.wspo(x.start, x.models("strong_base"), x.models("weak_aligned"), x.models("weak_base"), x.tokenizer,
                     x.data, x.config, target="sequence_mean", work_dir=x.work_dir, save_to=x.save_to)  # fmt: skip


def by_gold(x: TrainInputs):
    """SFT on gold responses, or DPO on ranked own samples when the setting has no gold responses."""
    return by_dpo(x) if "chosen" in x.data.column_names else by_sft(x)


def gold_config(config, data):
    return config.gold_dpo if "chosen" in data.column_names else config.gold_sft


WSPO_MODELS = ("strong_base", "weak_aligned", "weak_base")

METHODS: dict[str, Method] = {}  # the one registry of methods, in presentation order


def register(*entries: Method) -> None:
    """Add methods to the registry (a name already there raises)."""
    for m in entries:
        if m.name in METHODS:
            raise ValueError(f"method {m.name!r} is already registered")
        METHODS[m.name] = m


def unregister(name: str) -> None:
    """Remove a method from the registry (e.g. one a test added)."""
    METHODS.pop(name, None)


register(
    Method("weak_base", "weak base (π_ref)", "reference"),
    Method("weak_aligned", "weak aligned (π_r)", "reference", noise=True),
    Method("strong_base", "strong base", "reference"),
    Method("weaksft", "WeakSFT", "baseline", noise=True, recipe=Recipe("plain_samples", by_sft, "strong_sft")),
    Method("auxconf", "AuxConf", "baseline",
           recipe=Recipe("plain_samples", by_auxconf, "strong_sft", options=("auxconf_weight",))),
    Method("wspo", "WSPO", "baseline", recipe=Recipe("weak_chosen", by_wspo, "wspo", models=WSPO_MODELS)),
    Method("cong_s", "ConG-S", "ours", noise=True, recipe=Recipe("cd_samples", by_sft, "strong_sft")),
    Method("cong", "ConG", "ours", noise=True,
           recipe=Recipe("cong_pairs", by_dpo, "cong_dpo", start="cong_s", models=("reference",))),
    Method("gold", "gold ceiling", "ceiling", recipe=Recipe("gold", by_gold, gold_config, models=("reference",))),
    # the arms of the decomposition (analysis_plan.md): each removes one difference between ConG and WSPO
    Method("sft_chosen", "SFT on weak chosen", "arm", recipe=Recipe("weak_chosen", by_sft, "strong_sft")),
    Method("wspo_cd", "WSPO on CD samples", "arm", recipe=Recipe("cd_samples", by_wspo, "wspo", models=WSPO_MODELS)),
    Method("wspo_plain", "WSPO on π_r samples", "arm",
           recipe=Recipe("plain_samples", by_wspo, "wspo", models=WSPO_MODELS)),
    Method("wspo_b05", "WSPO, β 0.5", "arm",
           recipe=Recipe("weak_chosen", by_wspo, "wspo", models=WSPO_MODELS, overrides=(("beta", 0.5),))),
    Method("wspo_b10", "WSPO, β 1.0", "arm",
           recipe=Recipe("weak_chosen", by_wspo, "wspo", models=WSPO_MODELS, overrides=(("beta", 1.0),))),
    # beyond the paper: label-free selection with exactly ConG's information
    Method("bon_implicit", "best-of-N by implicit reward (SFT)", "arm", recipe=Recipe("bon_implicit", by_sft, "strong_sft")),
    # controls of the second plan (`analysis_plan_2.md`): token credit removed; CD samples selected by implicit reward
    Method("wspo_seqmean", "WSPO, sequence-mean target", "arm",
           recipe=Recipe("weak_chosen", by_wspo_sequence_mean, "wspo", models=WSPO_MODELS)),
    Method("bon_cd", "best-of-N CD samples by implicit reward (SFT)", "arm", recipe=Recipe("bon_cd", by_sft, "strong_sft")),
)  # fmt: skip


def with_role(*roles: str) -> tuple[str, ...]:
    """The registered methods of these roles, in registry order (e.g. "baseline", "ours": the paper's comparison)."""
    return tuple(m.name for m in METHODS.values() if m.role in roles)


def reads_beta(name: str, data_columns) -> bool:
    """Whether method `name`'s loss reads `TrainConfig.beta`: DPO and WSPO do, SFT and AuxConf do not (the gold
    ceiling is DPO only on ranked pairs, i.e. data with a "chosen" column)."""
    train = recipe(name).train
    return train in (by_dpo, by_wspo, by_wspo_sequence_mean) or (train is by_gold and "chosen" in data_columns)


def method(name: str) -> Method:
    """The registry entry of `name`; an unknown name raises, naming the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def recipe(name: str) -> Recipe:
    """How `name` is trained; a method without a recipe (a base model) cannot be trained."""
    found = method(name).recipe
    if found is None:
        raise ValueError(f"method {name!r} has no training recipe (it is a {method(name).role} model)")
    return found


def label(name: str) -> str:
    return METHODS[name].label if name in METHODS else name
