"""The pre-registered analysis plans: `analysis_plan.md` (plan 1: why does ConG lose?) and `analysis_plan_2.md`
(plan 2: is the verdict a property of the world?). Each one's TOML block holds every number its rules use; the code
reads them here and nowhere else; the Markdown around them says what each one decides."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import tomllib

PLAN_FILES = {1: Path(__file__).with_name("analysis_plan.md"), 2: Path(__file__).with_name("analysis_plan_2.md")}
PLAN_FILE = PLAN_FILES[1]


@functools.cache
def plan(number: int = 1) -> dict:
    """The numbers of plan `number` (the ```toml block of its file)."""
    if number not in PLAN_FILES:
        raise ValueError(f"no analysis plan {number}; the plans are {sorted(PLAN_FILES)}")
    text = PLAN_FILES[number].read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    if len(blocks) != 1:
        raise ValueError(f"{PLAN_FILES[number]}: expected one ```toml block of numbers, found {len(blocks)}")
    return tomllib.loads(blocks[0])


_numbers = plan  # `value`'s parameter is named as the plans' text writes it: value(section, name, plan=2)


def value(section: str, name: str, plan: int = 1):
    """One number of a plan; a missing one names itself and its plan's file."""
    numbers = _numbers(plan)
    try:
        return numbers[section][name]
    except KeyError:
        raise KeyError(f"{PLAN_FILES[plan]}: no [{section}] {name} in the plan") from None
