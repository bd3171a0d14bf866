"""Experiment evaluation: metrics relative to assignment, sanity checks, effects, decision.

The package, by concept (each module's docstring says more):

- :mod:`~cxanalysis.experiments.metrics` — the metric objects: each owns its per-customer
  aggregation, its sufficient statistics and its test; :data:`METRICS` is the registry and
  the table of definitions. :func:`effect_row` is the one conversion of an effect to a row.
- :mod:`~cxanalysis.experiments.engine` — units, windows, the per-customer activity and the
  moments, computed in the SQL engine (only per-variant sums come back).
- :mod:`~cxanalysis.experiments.analysis` — :func:`analyze`, the pipeline as named steps.
- :mod:`~cxanalysis.experiments.checks` — planned split and SRM, pre-period balance, the
  checks table, CUPED fallbacks, whether the primary metric is testable.
- :mod:`~cxanalysis.experiments.guardrails` — guardrail parameters, margins and statuses.
- :mod:`~cxanalysis.experiments.planning` — planning (MDE, sample size, days), always-valid
  sequential monitoring and the Bayesian view.
- :mod:`~cxanalysis.experiments.decision` — the decision rule, the horizon, the next test.
- :mod:`~cxanalysis.experiments.results` — the result classes (evaluation, monitor,
  breakdown, decision); :mod:`~cxanalysis.experiments.breakdown` computes breakdowns.
- :mod:`~cxanalysis.experiments.learning_log` — the append-only learning log.

Each assigned customer is one unit. With ``t0`` = the customer's ``assigned_at`` (their first
one), the *analysis window* is ``[t0, t0 + window_days)`` and the *pre-period* is
``[t0 - pre_days, t0)``. Metrics whose window has not closed by the end of the data are not
computed for that customer (the customer is excluded and counted in the checks). The metric
definitions are in :mod:`~cxanalysis.experiments.metrics`.
:meth:`ExperimentResult.per_customer` gives the per-customer table with every unit, for
inspection and independent checks.

Survey metrics and who answers (issue 16, item 7). ``nps`` and ``csat`` are averaged over
the customers who answered, and the treatment can change who answers: they compare
*respondents*, a group selected after treatment, and estimate the effect on the experience
of those who answer only when the response rate does not differ between arms. The
per-assigned-customer variants compare the randomised groups as assigned, so they estimate a
causal effect, of a combined quantity: ``nps_assigned`` is the net promoter balance per
assigned customer (share of assigned customers whose answers are on average promoter minus
detractor, weighted: a non-respondent counts 0, like a passive), i.e. roughly the response
rate times the respondents' NPS; ``csat_satisfied`` is the share of assigned customers who
answered and were satisfied (mean CSAT 4-5: top-two box). ``response_rate`` (share of
assigned customers who gave any feedback in the window) is reported as its own metric so a
change of either variant can be read as a change of who answers or of what they say.

Statistics, corrections and the decision rule are documented in :func:`analyze`.
"""

from __future__ import annotations

from cxanalysis.experiments.analysis import (
    CORRECTIONS,
    DEFAULT_GUARDRAILS,
    DEFAULT_SECONDARY,
    analyze,
    default_guardrails,
)
from cxanalysis.experiments.breakdown import UNKNOWN_GROUP, breakdown
from cxanalysis.experiments.checks import SRM_ALPHA, balance, checks_table, not_testable
from cxanalysis.experiments.decision import decide, describe, horizon, next_test
from cxanalysis.experiments.engine import activity, all_units, experiment_ids, moments
from cxanalysis.experiments.guardrails import (
    GUARDRAIL_MARGIN,
    Guardrail,
    guardrail_rows,
    guardrail_specs,
)
from cxanalysis.experiments.learning_log import LOG_COLUMNS, LOG_KEY, log_learning
from cxanalysis.experiments.metrics import (
    EFFECT_COLUMNS,
    METRICS,
    SUPPORT_EVENTS,
    Mean,
    Metric,
    MetricSpec,
    Proportion,
    Ratio,
    compare,
    effect_row,
    metric_definitions,
    metric_spec,
)
from cxanalysis.experiments.planning import PLAN_COLS, bayes, planning, sequential
from cxanalysis.experiments.results import (
    SEQ_COLS,
    Decision,
    ExperimentResult,
    Segmented,
    Sequential,
)

__all__ = [
    "CORRECTIONS", "DEFAULT_GUARDRAILS", "DEFAULT_SECONDARY", "EFFECT_COLUMNS",
    "GUARDRAIL_MARGIN", "LOG_COLUMNS", "LOG_KEY", "METRICS", "PLAN_COLS", "SEQ_COLS",
    "SRM_ALPHA", "SUPPORT_EVENTS", "UNKNOWN_GROUP", "Decision", "ExperimentResult",
    "Guardrail", "Mean", "Metric", "MetricSpec", "Proportion", "Ratio", "Segmented",
    "Sequential", "activity", "all_units", "analyze", "balance", "bayes", "breakdown",
    "checks_table", "compare", "decide", "default_guardrails", "describe", "effect_row",
    "experiment_ids", "guardrail_rows", "guardrail_specs", "horizon", "log_learning",
    "metric_definitions", "metric_spec", "moments", "next_test", "not_testable", "planning",
    "sequential",
]
