"""The pre-registered analysis plan: `congkit/pipeline/analysis_plan.md`, whose TOML block holds every number the study's
rules use (worlds, seeds, confidence, margins, thresholds, the tuning grid and criterion, the decomposition). The code
reads them here and nowhere else; the Markdown around them says what each one decides."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import tomllib

PLAN_FILE = Path(__file__).with_name("analysis_plan.md")


@functools.cache
def plan() -> dict:
    """The plan's numbers (the ```toml block of analysis_plan.md)."""
    text = PLAN_FILE.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    if len(blocks) != 1:
        raise ValueError(f"{PLAN_FILE}: expected one ```toml block of numbers, found {len(blocks)}")
    return tomllib.loads(blocks[0])


def value(section: str, name: str):
    """One number of the plan; a missing one names itself."""
    try:
        return plan()[section][name]
    except KeyError:
        raise KeyError(f"{PLAN_FILE}: no [{section}] {name} in the plan") from None
