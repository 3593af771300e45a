"""The ConG pipeline on TRL and `datasets` (`pip install 'congkit[train]'`): the algorithm, its baselines, the
synthetic world, and the cached runner that trains and measures them.

    cong.py        ConG in one file: pure functions of models and datasets, top to bottom, no cache
    methods.py     the one registry of compared methods and their recipes; the training-data sources
    training.py, trainers.py   TRL's trainers (AuxConf and WSPO as small subclasses)
    world.py, world_build.py   the synthetic world: prompts, the exact judge, the pretrained bases
    runner.py      the cached graph: nodes declared where they are defined, each run once per arguments
    settings.py    `Setting` (models, prompts, judge) and `PipelineConfig` (every knob)
    stages.py      `cong`'s steps as cached nodes;  results.py: the measurements and `run()`
    measure.py, evaluation/   judged samples; metrics, statistics and the pre-registered verdicts
    cache.py, code_key.py, data.py, plan.py, provenance.py, distributed.py, cli.py

Modules here import the library (`congkit.decoding`, `rewards`, `tokens`, ...) and each other, never `congkit.study`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> its module, loaded on first use: importing one module of the package (`congkit.pipeline.cache`, the
# CLI) does not import the whole pipeline, and a missing extra is named by the module that needs it
_WHERE = {"Pipeline": "runner", "PipelineConfig": "settings", "Setting": "settings",
          "smoke_pipeline_config": "settings", "RESULT_COLUMNS": "results", "record_timings": "results"}  # fmt: skip
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'congkit.pipeline' has no attribute {name!r}")
    importlib.import_module("congkit.pipeline.results")  # declares every node a `Pipeline` runs
    value = getattr(importlib.import_module(f"congkit.pipeline.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from congkit.pipeline.results import RESULT_COLUMNS, record_timings  # noqa: F401
    from congkit.pipeline.runner import Pipeline  # noqa: F401
    from congkit.pipeline.settings import PipelineConfig, Setting, smoke_pipeline_config  # noqa: F401
