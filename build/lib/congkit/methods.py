"""The one registry of the models the study compares: name, label, role. Every table, plot and verdict reads it.

Roles: `reference` (the untrained bases and the aligned weak model), `baseline` (the paper's baselines), `ours` (ConG-S,
ConG), `ceiling` (the strong model trained on gold supervision). `noise`: the method is also trained on noisy weak
labels (epsilon > 0), for claim 5.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    role: str
    noise: bool = False


METHODS: tuple[Method, ...] = (
    Method("weak_base", "weak base (π_ref)", "reference"),
    Method("weak_aligned", "weak aligned (π_r)", "reference", noise=True),
    Method("strong_base", "strong base", "reference"),
    Method("weaksft", "WeakSFT", "baseline", noise=True),
    Method("auxconf", "AuxConf", "baseline"),
    Method("wspo", "WSPO", "baseline"),
    Method("cong_s", "ConG-S", "ours", noise=True),
    Method("cong", "ConG", "ours", noise=True),
    Method("gold", "gold ceiling", "ceiling"),
)
BY_NAME = {m.name: m for m in METHODS}
METHOD_ORDER = [m.name for m in METHODS]
METHOD_LABELS = {m.name: m.label for m in METHODS}
BASELINES = tuple(m.name for m in METHODS if m.role == "baseline")
OURS = tuple(m.name for m in METHODS if m.role == "ours")
STRONG_METHODS = BASELINES + OURS  # trained from the strong base on weak supervision


def label(name: str) -> str:
    return METHOD_LABELS.get(name, name)
