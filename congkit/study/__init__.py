"""The study (`pip install 'congkit[study]'`): named parameter profiles, the chapters executed by papermill, the
offline Jupyter Book, and the tables and figures the chapters show.

    python -m congkit.study --profile smoke|default|regime|real|plan [--runs runs] [--no-book]

    profiles.py    the profiles and the objects each builds (world, setting, pipeline)
    prebuild.py    a profile's stages built before the chapters, in worker processes (workers.py)
    notebooks.py   papermill execution, parameter checks, scrubbing;  chapters.py: what a chapter calls
    reference.py   the default profile's committed reference results;  book.py: the offline book build
    driver.py      the command line (`main`);  paths.py: the checkout's folders and chapters
    tables.py, plots.py, regime.py, worlds.py, derivation.py   what the chapters compute and show

Modules here import the library and `congkit.pipeline`; nothing outside the study imports them. The names below are
the study's API for the chapters and the command line.
"""

from congkit.study.book import COMMITTED_CHAPTERS, build_book, fill_missing_chapters, remove_dead_runs_leftovers  # noqa: F401
from congkit.study.chapters import (  # noqa: F401
    PLAN_RESULTS,
    check_checkout,
    findings,
    notebook_setup,
    parameter_table,
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
