"""Evaluation: what each model is scored on, the statistics, and the pre-registered verdicts.

    metrics.py     the metric registry, tidy result rows, PGR, summaries and the main table
    statistics.py  intervals over seeds, the hierarchical bootstrap over worlds, Holm's correction
    rules.py       the pre-registered rules: preconditions, claims and their verdicts, the sign rule, the walk
"""

from congkit.pipeline.evaluation.metrics import (  # noqa: F401
    CAPABILITY_METRICS,
    MAIN_METRICS,
    METRICS,
    Metric,
    claim_rows,
    evaluation_rows,
    is_difference,
    main_table,
    pgr_rows,
    side_by_side,
    summarise,
    win_rate,
    within_prompt_ranking,
)
from congkit.pipeline.evaluation.rules import (  # noqa: F401
    CAPABILITY,
    CEILING,
    CLAIMS,
    CONDITIONS,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    NON_INFERIORITY_MARGIN,
    PROBE,
    RANKING,
    THRESHOLD,
    UNTESTABLE,
    Claim,
    Condition,
    all_of,
    capability_metrics,
    claim_text,
    conditions_for,
    decomposition_rows,
    in_run,
    missing_methods,
    preconditions,
    rule_text,
    sign_rule,
    smallest_detectable_effect,
    three_way,
    verdicts,
    walk,
    walk_steps,
    world_preconditions,
    world_verdicts,
)
from congkit.pipeline.evaluation.statistics import (  # noqa: F401
    BOUNDED,
    CONFIDENCE,
    clean_eps,
    hierarchical_bootstrap,
    holm_intervals,
    mean_ci,
    metric_mean,
    model_rows,
    paired_differences,
    per_seed,
    value_range,
    world_signs,
)
