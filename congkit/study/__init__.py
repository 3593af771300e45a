"""The study (`pip install 'congkit[study]'`): named parameter profiles, the chapters executed by papermill, the
offline Jupyter Book, and the tables and figures the chapters show.

    python -m congkit.study --profile smoke|default|regime|real|plan [--runs runs] [--no-book]

    profiles.py    the profiles and the objects each builds (world, setting, pipeline)
    prebuild.py    a profile's stages built before the chapters, in worker processes (workers.py)
    notebooks.py   papermill execution, parameter checks, scrubbing;  chapter_setup.py: what a chapter calls
    reference.py   the default profile's committed reference results;  book.py: the offline book build
    driver.py      the command line (`main`);  paths.py: the checkout's folders and chapters
    tables.py, plots.py, regime.py, worlds.py, derivation.py   what the chapters compute and show

Modules here import the library and `congkit.pipeline`; nothing outside the study imports them. The names below are
the study's API for the chapters and the command line, loaded on first use (importing one module of the
package, such as `congkit.study.workers` in a build worker, imports no other).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "COMMITTED_CHAPTERS": "book",
    "build_book": "book",
    "fill_missing_chapters": "book",
    "remove_dead_runs_leftovers": "book",
    "PLAN2_RESULTS": "chapter_setup",
    "PLAN_RESULTS": "chapter_setup",
    "check_checkout": "chapter_setup",
    "findings": "chapter_setup",
    "notebook_setup": "chapter_setup",
    "page_parameters": "chapter_setup",
    "quiet_libraries": "chapter_setup",
    "read_plan_results": "chapter_setup",
    "regime_setup": "chapter_setup",
    "this_run": "chapter_setup",
    "glue": "tables",
    "main": "driver",
    "time_table": "driver",
    "check_notebook_parameters": "notebooks",
    "clean_executed": "notebooks",
    "kernel_environment": "notebooks",
    "notebook_parameters": "notebooks",
    "quiet_environment": "notebooks",
    "run_notebooks": "notebooks",
    "select_notebooks": "notebooks",
    "unknown_injected_parameters": "notebooks",
    "DEFAULT_RUNS": "paths",
    "REPO": "paths",
    "chapters": "paths",
    "prebuild": "prebuild",
    "prebuild_regime": "prebuild",
    "run_plan": "prebuild",
    "PROFILES": "profiles",
    "Profile": "profiles",
    "REAL_FIELD_TYPES": "profiles",
    "REGIME_CHAPTERS": "profiles",
    "RealCheckpoints": "profiles",
    "check_real": "profiles",
    "get_profile": "profiles",
    "parse_real": "profiles",
    "pipeline_root": "profiles",
    "real_pipeline_config": "profiles",
    "real_setting": "profiles",
    "regime_objects": "profiles",
    "study_objects": "profiles",
    "REFERENCE": "reference",
    "REFERENCE_FILES": "reference",
    "accept_new_reference": "reference",
    "compare_with_reference": "reference",
    "read_reference": "reference",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        try:  # a submodule (`congkit.study.driver`) not imported yet
            return importlib.import_module(f"congkit.study.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"congkit.study.{name}":
                raise
        raise AttributeError(f"module 'congkit.study' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"congkit.study.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from congkit.study.book import COMMITTED_CHAPTERS, build_book, fill_missing_chapters, remove_dead_runs_leftovers  # noqa: F401
    from congkit.study.chapter_setup import (  # noqa: F401
        PLAN2_RESULTS,
        PLAN_RESULTS,
        check_checkout,
        findings,
        notebook_setup,
        page_parameters,
        quiet_libraries,
        read_plan_results,
        regime_setup,
        this_run,
    )
    from congkit.study.driver import main, time_table  # noqa: F401
    from congkit.study.notebooks import (  # noqa: F401
        check_notebook_parameters,
        clean_executed,
        kernel_environment,
        notebook_parameters,
        quiet_environment,
        run_notebooks,
        select_notebooks,
        unknown_injected_parameters,
    )
    from congkit.study.paths import DEFAULT_RUNS, REPO, chapters  # noqa: F401
    from congkit.study.prebuild import prebuild, prebuild_regime, run_plan  # noqa: F401
    from congkit.study.profiles import (  # noqa: F401
        PROFILES,
        REAL_FIELD_TYPES,
        REGIME_CHAPTERS,
        Profile,
        RealCheckpoints,
        check_real,
        get_profile,
        parse_real,
        pipeline_root,
        real_pipeline_config,
        real_setting,
        regime_objects,
        study_objects,
    )
    from congkit.study.reference import (  # noqa: F401
        REFERENCE,
        REFERENCE_FILES,
        accept_new_reference,
        compare_with_reference,
        read_reference,
    )
