"""Metrics of an experiment: each metric object owns its aggregation and its test.

A metric says which contract tables it reads (:attr:`Metric.tables`), which per-customer
aggregates it needs over the rows of a customer's window and pre-period
(:meth:`Metric.aggregates`, in the spirit of tea-tasting's ``aggr_cols``), which
per-customer columns it derives from them (:meth:`Metric.derived`), the sufficient
statistics it sums per arm (:meth:`Metric.sums`) and how two arms are compared
(:meth:`Metric.compare`, like tea-tasting's ``analyze_aggregates``). Adding a metric is
one class and one line in :data:`METRICS`.

Definitions (the unit is the assigned customer; ``t0`` = their first ``assigned_at``; the
*window* is ``[t0, t0 + window_days)``, the *pre-period* ``[t0 - pre_days, t0)``):

========================  ==========  ==========================================================
metric                    kind        per customer (window)              covariate (pre-period)
========================  ==========  ==========================================================
conversion                proportion  1 if any order, else 0             same in the pre-period
revenue                   mean        sum of order amounts               same in the pre-period
orders                    mean        number of orders                   same in the pre-period
revenue_per_order         ratio       sum amount / number of orders      (none; delta method)
nps                       ratio       NPS points of answers: promoters   (none; delta method)
                                      (9-10) +100, detractors (0-6) -100,
                                      passives 0; per answer
csat                      ratio       mean CSAT (1-5) per answer         (none; delta method)
response_rate             proportion  1 if any feedback row (a survey    same in the pre-period
                                      answer), else 0
nps_assigned              mean        mean NPS points of the customer's  same in the pre-period
                                      answers; 0 when none
csat_satisfied            proportion  1 if the mean of the customer's    same in the pre-period
                                      CSAT answers is 4 or more, else 0
                                      (no answer: 0)
support_contacts          mean        ``support_contact`` events         same in the pre-period
event:<name>              proportion  1 if the customer did event <name> same in the pre-period
========================  ==========  ==========================================================

Ratio metrics treat the customer as the unit (numerator and denominator summed per customer,
delta-method variance), so customers with many orders or answers are not over-counted.
See :mod:`cxanalysis.experiments` for why survey metrics come in two flavours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import ibis
import pandas as pd

from cxanalysis import stats as st
from cxanalysis.errors import ParameterError

#: Event names that count as a service contact (the demo world and most CX logs use one).
SUPPORT_EVENTS = ("support_contact",)

#: Table codes of the narrow union of metric rows (see ``engine.metric_rows``).
ORDERS, FEEDBACK, EVENTS = 0, 1, 2
_CODE = {"orders": ORDERS, "feedback": FEEDBACK, "events": EVENTS}
#: Which column of the union holds a table's value: orders.amount and feedback NPS points in
#: ``v1``, feedback CSAT in ``v2``, the event name in ``ev``.
_VALUE = {("orders", "amount"): "v1", ("feedback", "nps"): "v1", ("feedback", "csat"): "v2",
          ("events", "event"): "ev"}


class Period:
    """The metric rows of the units (joined on ``customer_id``) in one period: the window
    (``te >= t0``) or the pre-period (``te < t0``). The helpers build the aggregate
    expressions the metrics declare."""

    def __init__(self, j: ibis.Table, pre: bool) -> None:
        self.j = j
        self.prefix = "pre_" if pre else ""
        self.when = j.te < j.t0 if pre else j.te >= j.t0

    def rows(self, table: str, where: ibis.Value | None = None) -> ibis.Value:
        cond = (self.j.src == _CODE[table]) & self.when
        return cond if where is None else cond & where

    def value(self, table: str, column: str) -> ibis.Value:
        return self.j[_VALUE[(table, column)]]

    def count(self, table: str, where: ibis.Value | None = None) -> ibis.Value:
        """Rows of ``table`` in the period (int)."""
        return self.j.src.count(where=self.rows(table, where))

    def any(self, table: str, where: ibis.Value | None = None) -> ibis.Value:
        """1 when the customer has a row of ``table`` in the period, else 0."""
        return (self.count(table, where) > 0).cast("int64")

    def total(self, table: str, column: str) -> ibis.Value:
        """Sum of a value in the period, 0 without rows."""
        return self.value(table, column).sum(where=self.rows(table)).fill_null(0.0)

    def answered(self, table: str, column: str) -> ibis.Value:
        """Rows of ``table`` in the period whose ``column`` is not NULL."""
        return self.value(table, column).count(where=self.rows(table))


@dataclass(frozen=True)
class Metric:
    """A metric: how it is aggregated per customer and how two arms are compared.

    Attributes
    ----------
    name : str
    y : str
        Per-customer column of the value (the numerator of a ratio).
    x : str or None
        Pre-period covariate column (CUPED), or the denominator column of a ratio.
    tables : tuple of str
        Contract tables the metric reads.
    description : str
    feedback_column : str or None
        The feedback score column a survey metric reads (None: none, or any feedback row).
    """

    name: str
    y: str
    x: str | None
    tables: tuple[str, ...]
    description: str
    feedback_column: str | None = None
    kind: ClassVar[str] = ""

    # ------------------------------------------------------------------ declaration
    @property
    def has_covariate(self) -> bool:
        return self.kind != "ratio" and self.x is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """Contract columns (``"table.column"``) the metric reads beyond required ones: a
        survey metric's feedback score column."""
        return (f"feedback.{self.feedback_column}",) if self.feedback_column else ()

    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        """Per-customer aggregates over the rows of one period, named with ``p.prefix``."""
        raise NotImplementedError

    def period_derived(self, act: ibis.Table, prefix: str) -> dict[str, ibis.Value]:
        """Per-customer columns computed from the aggregates of one period."""
        return {}

    def aggregates(self, j: ibis.Table) -> dict[str, ibis.Value]:
        """Every per-customer aggregate the metric needs: the window's, and the pre-period's
        when it has a covariate."""
        out = self.period_aggregates(Period(j, pre=False))
        if self.has_covariate:
            out.update(self.period_aggregates(Period(j, pre=True)))
        return out

    def derived(self, act: ibis.Table) -> dict[str, ibis.Value]:
        out = self.period_derived(act, "")
        if self.has_covariate:
            out.update(self.period_derived(act, "pre_"))
        return out

    # ------------------------------------------------------------------ statistics
    def sums(self, t: ibis.Table) -> dict[str, ibis.Value]:
        """The sufficient statistics of the metric over the rows of ``t`` (one arm)."""
        y = t[self.y].cast("float64")
        out = {f"{self.name}__sy": y.sum(), f"{self.name}__syy": (y * y).sum()}
        if self.x is not None:
            x = t[self.x].cast("float64")
            out.update({f"{self.name}__sx": x.sum(), f"{self.name}__sxx": (x * x).sum(),
                        f"{self.name}__sxy": (x * y).sum()})
        return out

    def moments(self, row: Mapping[str, Any]) -> st.Moments:
        """The :class:`~cxanalysis.stats.Moments` of the metric in one row of sums."""
        g, n = row.get, self.name
        return st.Moments(float(row["n"]), float(g(f"{n}__sy", 0.0)),
                          float(g(f"{n}__syy", 0.0)), float(g(f"{n}__sx", 0.0)),
                          float(g(f"{n}__sxx", 0.0)), float(g(f"{n}__sxy", 0.0)))

    def level(self, m: st.Moments) -> float:
        """Level of the metric in one arm (its mean)."""
        return m.mean

    def unit_variance(self, m: st.Moments) -> float:
        """Variance of one customer's contribution in one arm (planning's variance)."""
        return m.var

    def test(self, t: st.Moments, c: st.Moments, alpha: float) -> st.Effect:
        raise NotImplementedError

    def compare(self, t: st.Moments, c: st.Moments, alpha: float = 0.05,
                adjust: bool = False, theta: float | None = None) -> tuple[st.Effect, float]:
        """Treatment versus control: (effect, variance reduction). ``adjust=True`` applies
        CUPED (Welch on adjusted values, theta pooled across the arms compared, or
        ``theta`` when given)."""
        if adjust:
            if not self.has_covariate:
                raise ParameterError(f"metric {self.name!r} has no pre-period covariate")
            ce = st.cuped(t, c, alpha, theta)
            return ce.effect, ce.variance_reduction
        return self.test(t, c, alpha), 0.0


class Proportion(Metric):
    """0/1 per customer: pooled two-proportion z-test, Newcombe-Wilson interval."""

    kind = "proportion"

    def test(self, t: st.Moments, c: st.Moments, alpha: float) -> st.Effect:
        return st.two_proportions(t, c, alpha)


class Mean(Metric):
    """A per-customer value: Welch's t-test."""

    kind = "mean"

    def test(self, t: st.Moments, c: st.Moments, alpha: float) -> st.Effect:
        return st.welch(t, c, alpha)


class Ratio(Metric):
    """Sum of ``y`` over sum of ``x``, customers as units: delta method."""

    kind = "ratio"

    def level(self, m: st.Moments) -> float:
        return m.sy / m.sx if m.sx else float("nan")

    def unit_variance(self, m: st.Moments) -> float:
        """The delta-method variance of the ratio times n (the influence function's)."""
        _r, var_mean = st.ratio_mean_var(m)
        return var_mean * m.n

    def test(self, t: st.Moments, c: st.Moments, alpha: float) -> st.Effect:
        return st.ratio(t, c, alpha)


# ---------------------------------------------------------------------- the metrics


class Conversion(Proportion):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return {f"{p.prefix}orders": p.count("orders")}

    def period_derived(self, act: ibis.Table, prefix: str) -> dict[str, ibis.Value]:
        return {f"{prefix}converted": (act[f"{prefix}orders"] > 0).cast("int64")}


class OrderCount(Mean):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return {f"{p.prefix}orders": p.count("orders")}


class OrderRevenue(Mean):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return {f"{p.prefix}revenue": p.total("orders", "amount")}


class RevenuePerOrder(Ratio):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return {f"{p.prefix}revenue": p.total("orders", "amount"),
                f"{p.prefix}orders": p.count("orders")}


def _nps_aggregates(p: Period) -> dict[str, ibis.Value]:
    return {f"{p.prefix}nps_points": p.total("feedback", "nps"),
            f"{p.prefix}nps_answers": p.answered("feedback", "nps")}


def _csat_aggregates(p: Period) -> dict[str, ibis.Value]:
    return {f"{p.prefix}csat_sum": p.total("feedback", "csat"),
            f"{p.prefix}csat_answers": p.answered("feedback", "csat")}


class NpsOfAnswers(Ratio):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return _nps_aggregates(p)


class CsatOfAnswers(Ratio):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return _csat_aggregates(p)


class ResponseRate(Proportion):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return {f"{p.prefix}responded": p.any("feedback")}


class NpsAssigned(Mean):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return _nps_aggregates(p)

    def period_derived(self, act: ibis.Table, prefix: str) -> dict[str, ibis.Value]:
        # per assigned customer: a customer without an answer counts 0 (see the package doc)
        pts, n = act[f"{prefix}nps_points"], act[f"{prefix}nps_answers"]
        return {f"{prefix}nps_cust": ibis.ifelse(n > 0, pts / n, 0.0)}


class CsatSatisfied(Proportion):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        return _csat_aggregates(p)

    def period_derived(self, act: ibis.Table, prefix: str) -> dict[str, ibis.Value]:
        tot, n = act[f"{prefix}csat_sum"], act[f"{prefix}csat_answers"]
        return {f"{prefix}csat_sat": ibis.ifelse((n > 0) & (tot >= 4 * n), 1, 0)
                .cast("int64")}


class SupportContacts(Mean):
    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        ev = p.value("events", "event")
        return {f"{p.prefix}support": p.count("events", ev.isin(list(SUPPORT_EVENTS)))}


@dataclass(frozen=True)
class EventDone(Proportion):
    """1 if the customer did the event ``event`` (``event:<name>`` metrics)."""

    event: str = ""

    def period_aggregates(self, p: Period) -> dict[str, ibis.Value]:
        col = self.x if p.prefix else self.y
        return {col: p.any("events", p.value("events", "event") == self.event)}


METRICS: dict[str, Metric] = {m.name: m for m in [
    Conversion("conversion", "converted", "pre_converted", ("orders",),
               "share of customers with at least one order in the window"),
    OrderRevenue("revenue", "revenue", "pre_revenue", ("orders",),
                 "order amount per customer in the window (currency units)"),
    OrderCount("orders", "orders", "pre_orders", ("orders",),
               "orders per customer in the window"),
    RevenuePerOrder("revenue_per_order", "revenue", "orders", ("orders",),
                    "order amount per order (delta method, customers as units)"),
    NpsOfAnswers("nps", "nps_points", "nps_answers", ("feedback",),
                 "Net Promoter Score of the answers given in the window (points, -100..100)",
                 feedback_column="nps"),
    CsatOfAnswers("csat", "csat_sum", "csat_answers", ("feedback",),
                  "mean CSAT (1-5) of the answers given in the window",
                  feedback_column="csat"),
    SupportContacts("support_contacts", "support", "pre_support", ("events",),
                    "service contacts (events named support_contact, any channel) per "
                    "customer in the window"),
    ResponseRate("response_rate", "responded", "pre_responded", ("feedback",),
                 "share of assigned customers with any feedback (survey answer) in the window"),
    NpsAssigned("nps_assigned", "nps_cust", "pre_nps_cust", ("feedback",),
                "NPS points per assigned customer: mean points (+100/0/-100) of the "
                "customer's answers in the window, 0 without an answer (causal, mixes "
                "response and score)", feedback_column="nps"),
    CsatSatisfied("csat_satisfied", "csat_sat", "pre_csat_sat", ("feedback",),
                  "share of assigned customers who answered with a mean CSAT of 4-5 in the "
                  "window (no answer counts as not satisfied; causal, mixes response and "
                  "score)", feedback_column="csat"),
]}

#: Kept for code written against the passive spec of before: a metric is its spec.
MetricSpec = Metric


def metric_spec(name: str) -> Metric:
    """The metric ``name``: a registered one or ``event:<event name>``."""
    if name in METRICS:
        return METRICS[name]
    if isinstance(name, str) and name.startswith("event:") and len(name) > 6:
        col = "ev_" + "".join(ch if ch.isalnum() else "_" for ch in name[6:])
        return EventDone(name, col, "pre_" + col, ("events",),
                         f"share of customers with a {name[6:]!r} event in the window",
                         event=name[6:])
    raise ParameterError(f"unknown metric {name!r}: use one of {', '.join(METRICS)} or "
                         "'event:<event name>'")


def metric_definitions() -> pd.DataFrame:
    """The metric registry as a table (for reports)."""
    return pd.DataFrame([{"metric": m.name, "kind": m.kind, "definition": m.description,
                          "covariate": (m.x if m.has_covariate else None),
                          "tables": ", ".join(m.tables)} for m in METRICS.values()])


def compare(spec: Metric, t: st.Moments, c: st.Moments, alpha: float = 0.05,
            adjust: bool = False, theta: float | None = None) -> tuple[st.Effect, float]:
    """Treatment versus control for one metric: (effect, variance reduction); see
    :meth:`Metric.compare`. Proportions: pooled two-proportion z-test and Newcombe-Wilson
    interval; means: Welch; ratios: delta method; ``adjust=True``: CUPED."""
    return spec.compare(t, c, alpha, adjust, theta)


#: The canonical columns of one effect in every table of the package (effects, breakdowns,
#: sequential looks): the single conversion is :func:`effect_row`.
EFFECT_COLUMNS = ["control_mean", "treatment_mean", "abs_diff", "se", "abs_ci_low",
                  "abs_ci_high", "rel_lift", "rel_ci_low", "rel_ci_high", "p_value"]


def effect_row(e: st.Effect) -> dict[str, Any]:
    """One :class:`~cxanalysis.stats.Effect` as a table row (:data:`EFFECT_COLUMNS` and
    ``method``)."""
    return {"control_mean": e.control_mean, "treatment_mean": e.treatment_mean,
            "abs_diff": e.abs_diff, "se": e.se, "abs_ci_low": e.abs_ci[0],
            "abs_ci_high": e.abs_ci[1], "rel_lift": e.rel_lift, "rel_ci_low": e.rel_ci[0],
            "rel_ci_high": e.rel_ci[1], "p_value": e.p_value, "method": e.method}
