"""Aggregation of run records, the paper's tables and figures, and ``claims.md``.

Pure functions on pandas frames, one module per concern:

- ``paper``: the paper's numbers, the tolerances of claims.md, model and experiment names;
- ``aggregate``: run records (summary.json, steps.csv, pretrain.json, weight_shift.csv) ->
  tidy tables under results/summary/ (schemas in docs/architecture.md);
- ``tables``: Table 1, the time savings, the threshold summary, the ablation and the criteria
  (frames and booktabs LaTeX);
- ``figures``: Figures 2 and 3, the thresholds, Eq. 1, the ablation and the criteria
  (matplotlib Agg + seaborn);
- ``claims``: every quantitative claim of the paper checked against ours;
- ``compare``: ICE-Pick against the iterative baseline on one model (``icepick compare``):
  the table, the savings, the curves of its figure and the files.

Tables, figures and claims take aggregated tables only, so restyling never reruns training.
Units: accuracies in percent (0-100), theta in percentage points, ratio and eta fractions,
times in seconds, savings in percent.

Example:
    >>> runs, steps = aggregate_runs(["r/seed0/summary.json"], ["r/seed0/steps.csv"], group="table1")  # doctest: +SKIP
    >>> write_text("paper_figures/table1.tex", table1_latex(table1(runs)))  # doctest: +SKIP
"""

from icepick.reporting.aggregate import (
    aggregate_pretrain,
    aggregate_runs,
    aggregate_weight_shift,
    flatten_summary,
    merge_aggregates,
    write_table,
    write_text,
)
from icepick.reporting.claims import CLAIM_COLUMNS, claims, claims_markdown, spearman, verdicts, weight_shift_stats
from icepick.reporting.compare import (
    comparison_curves,
    comparison_savings,
    comparison_table,
    format_comparison,
    write_comparison,
)
from icepick.reporting.figures import (
    accuracy_curves,
    plot_ablation,
    plot_accuracy,
    plot_comparison,
    plot_criteria,
    plot_lr_schedule,
    plot_thresholds,
    plot_weight_shift,
)
from icepick.reporting.paper import (
    PAPER_MODELS,
    PAPER_TABLE1,
    PAPER_TIME_SAVED,
    RUN_COLUMNS,
    RUN_KEYS,
    display_name,
    experiment_name,
    label,
    num,
    paper_model,
)
from icepick.reporting.tables import (
    ablation_latex,
    ablation_table,
    criteria_latex,
    criteria_table,
    table1,
    table1_latex,
    tex_escape,
    threshold_summary,
    time_savings,
    time_savings_latex,
)

__all__ = [
    "RUN_KEYS", "RUN_COLUMNS", "PAPER_MODELS", "PAPER_TABLE1", "PAPER_TIME_SAVED",
    "display_name", "paper_model", "label", "num", "experiment_name",
    "flatten_summary", "aggregate_runs", "merge_aggregates", "aggregate_pretrain", "aggregate_weight_shift",
    "write_text", "write_table",
    "table1", "table1_latex", "time_savings", "time_savings_latex", "threshold_summary", "tex_escape",
    "ablation_table", "ablation_latex", "criteria_table", "criteria_latex",
    "accuracy_curves", "plot_weight_shift", "plot_accuracy", "plot_thresholds", "plot_lr_schedule",
    "plot_ablation", "plot_criteria", "plot_comparison",
    "comparison_table", "comparison_savings", "comparison_curves", "format_comparison", "write_comparison",
    "spearman", "weight_shift_stats", "claims", "claims_markdown", "verdicts", "CLAIM_COLUMNS",
]
