"""Keys change when results would: every cached stage's key holds its code version (`congkit.stages.STAGES`), and
this test fails when the code that produces a stage changes while its version stays. After a change that alters what
a stage produces, bump its version; after any change, regenerate the table:

    UPDATE_STAGE_CODE=1 .venv/bin/python -m pytest tests/test_stage_versions.py

(a change that cannot alter results, e.g. a docstring, only needs the table regenerated, with the same version).
"""

import hashlib
import inspect
import json
import os
from pathlib import Path

from congkit.methods import METHODS
from congkit.stages import STAGES

TABLE = Path(__file__).with_name("stage_code.json")


def code_hash(functions) -> str:
    return hashlib.sha256("\n".join(inspect.getsource(f) for f in functions).encode()).hexdigest()[:16]


def current() -> dict:
    table = {name: {"version": stage.version, "code": code_hash(stage.code)} for name, stage in STAGES.items()}
    for method in METHODS:  # a recipe's own version enters the strong stage's key
        if method.recipe is not None:
            table[f"recipe:{method.name}"] = {"version": method.recipe.version, "code": code_hash([method.recipe.train])}
    return table


def test_stage_code_changes_come_with_a_version_bump():
    now = current()
    if os.environ.get("UPDATE_STAGE_CODE") == "1":
        TABLE.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(TABLE.read_text())
    stale = [name for name in now if name in recorded and now[name]["code"] != recorded[name]["code"]
             and now[name]["version"] == recorded[name]["version"]]  # fmt: skip
    assert not stale, (f"the code of {stale} changed but their version did not: if what they produce changes, bump "
                       "the version (congkit.stages.STAGES or the recipe); then regenerate tests/stage_code.json "
                       "(see this file's docstring)")  # fmt: skip
    assert now == recorded, "regenerate tests/stage_code.json (see this file's docstring)"
