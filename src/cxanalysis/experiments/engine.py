"""Engine side of an experiment: units, windows, per-customer activity and moments.

Everything event- or order-level runs in the SQL engine, and only per-variant sufficient
statistics (count, sum, sum of squares, covariate sums and cross-products) come back. The
rows of every table the metrics read are joined once to the assigned customers and
aggregated per customer as each metric declares (:meth:`Metric.aggregates`); customers
without any row have all metrics 0, so they add to the counts and nothing to the sums, and
the moments are taken over the active customers only (:func:`moments` with ``activity``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ibis
import pandas as pd
from ibis import _

from cxanalysis.data import CXDataError, Source, epoch_micros
from cxanalysis.experiments.metrics import EVENTS, FEEDBACK, ORDERS, Metric, metric_spec

_US = 1_000_000  # microseconds per second
_DAY_US = 86_400 * _US


def us(days: float) -> int:
    """A duration in days as whole microseconds (window arithmetic is exact integer math)."""
    return int(round(days * _DAY_US))


def epoch_us_of(t: Any) -> int:
    """Epoch microseconds of an instant (a UTC timestamp)."""
    return int(pd.Timestamp(t).value // 1000)


def assignments(source: Source, experiment_id: str) -> ibis.Table:
    return source.table("assignments").filter(_.experiment_id == experiment_id)


def keys_validated(source: Source) -> bool:
    """Whether the source was validated on open, so the contract's keys are unique."""
    v = source.validation
    return v is not None and not v.errors


def per_customer_assignment(a: ibis.Table) -> ibis.Table:
    """One row per assigned customer: number of variants, variant, first assignment time."""
    # min != max instead of a distinct count: same answer, several times faster
    per = a.group_by("customer_id").aggregate(
        v_min=_.variant.min(), v_max=_.variant.max(), assigned_at=_.assigned_at.min())
    return per.select("customer_id", variant=per.v_min, assigned_at=per.assigned_at,
                      n_variants=ibis.ifelse(per.v_min == per.v_max, 1, 2))


def single_variant_units(per: ibis.Table) -> ibis.Table:
    """The customers of :func:`per_customer_assignment` with a single variant and an
    assignment time."""
    return per.filter((per.n_variants == 1) & per.assigned_at.notnull()).drop("n_variants")


def with_window(u: ibis.Table, window_days: float) -> ibis.Table:
    """Add ``t0`` (assignment, epoch microseconds) and ``close_day`` (the day the analysis
    window closes, as days since 1970-01-01 UTC)."""
    u = u.mutate(t0=epoch_micros(u.assigned_at))
    return u.mutate(close_day=((u.t0 + us(window_days)) // _DAY_US).cast("int32"))


def metric_rows(source: Source, specs: Sequence[Metric]) -> ibis.Table:
    """The rows of every table the metrics read, as one narrow union: ``customer_id``,
    ``te`` (epoch microseconds), ``src`` (table code), ``v1``/``v2`` (orders: amount; feedback:
    NPS points and CSAT, NULL when not answered) and, when an events metric is asked for,
    ``ev`` (the event name). One join with the units then serves every metric; keeping
    the rows narrow is what keeps that join cheap at millions of rows."""
    needed = {t for s in specs for t in s.tables}
    with_events = "events" in needed
    parts = []

    def part(t: ibis.Table, code: int, v1: ibis.Value | None = None,
             v2: ibis.Value | None = None, ev: ibis.Value | None = None) -> ibis.Table:
        null = ibis.null().cast("float64")
        cols = dict(customer_id=t.customer_id, te=epoch_micros(t.ts),
                    src=ibis.literal(code, type="int8"),
                    v1=null if v1 is None else v1.cast("float64"),
                    v2=null if v2 is None else v2.cast("float64"))
        if with_events:
            cols["ev"] = ibis.null().cast("string") if ev is None else ev.cast("string")
        return t.select(**cols)

    if "orders" in needed:
        o = source.table("orders")
        parts.append(part(o, ORDERS, v1=o.amount))
    if "feedback" in needed:
        f = source.table("feedback")
        cols = {s.feedback_column for s in specs if "feedback" in s.tables}
        for s in specs:
            col = s.feedback_column
            if "feedback" in s.tables and col is not None and col not in f.columns:
                raise CXDataError(f"metric {s.name!r} needs feedback column {col!r}, which "
                                  "the feedback table lacks")
        nps = (ibis.cases((f.nps >= 9, 100.0), (f.nps <= 6, -100.0), (f.nps.notnull(), 0.0),
                          else_=None) if "nps" in cols else None)
        parts.append(part(f, FEEDBACK, v1=nps, v2=f.csat if "csat" in cols else None))
    if with_events:
        e = source.table("events")
        parts.append(part(e, EVENTS, ev=e.event))
    return ibis.union(*parts) if len(parts) > 1 else parts[0]


def activity(source: Source, units: ibis.Table, metrics: Sequence[str], window_days: float,
             pre_days: float, t0_span: tuple[int, int] | None = None) -> ibis.Table:
    """Per unit with at least one row of the metric tables in its pre-period or window:
    ``customer_id``, ``variant``, ``close_day`` and every metric column. Units absent from
    it have every metric column equal to 0, which is what makes the moments sparse: their
    sums are 0 and they only add to the counts (see :func:`moments`).

    ``t0_span`` (first and last assignment, epoch microseconds) lets rows that no unit can
    count be dropped before the join (the history before the first pre-period and after the
    last window).
    """
    specs = [metric_spec(m) for m in metrics]
    source.require(*sorted({t for s in specs for t in s.tables}))
    win, pre = us(window_days), us(pre_days)
    rows = metric_rows(source, specs)
    if t0_span is not None:
        rows = rows.filter((rows.te >= t0_span[0] - pre) & (rows.te < t0_span[1] + win))
    keys = units.select("customer_id", "variant", "t0", "close_day")
    j = keys.join(rows, keys.customer_id == rows.customer_id)
    j = j.filter((j.te >= j.t0 - pre) & (j.te < j.t0 + win))
    aggs: dict[str, ibis.Value] = {}
    for s in specs:  # metrics sharing an aggregate (orders, revenue) declare the same one
        aggs.update(s.aggregates(j))
    act = j.group_by(["customer_id", "variant", "close_day"]).aggregate(**aggs)
    derived: dict[str, ibis.Value] = {}
    for s in specs:
        derived.update(s.derived(act))
    return act.mutate(**derived) if derived else act


def all_units(units: ibis.Table, act: ibis.Table) -> ibis.Table:
    """Every unit with its metric columns: the sparse activity joined on, zeros elsewhere."""
    vals = [c for c in act.columns if c not in ("customer_id", "variant", "close_day")]
    out = units.left_join(act.select("customer_id", *vals), "customer_id")
    return out.drop("customer_id_right").fill_null(dict.fromkeys(vals, 0)).drop("t0")


def moment_aggs(t: ibis.Table, metrics: Sequence[str]) -> dict[str, ibis.Value]:
    aggs: dict[str, ibis.Value] = {}
    for name in metrics:
        aggs.update(metric_spec(name).sums(t))
    return aggs


def moments(per_customer: ibis.Table, metrics: Sequence[str],
            by: Sequence[str] = ("variant",), activity: ibis.Table | None = None
            ) -> pd.DataFrame:
    """Per group (default: variant) sufficient statistics of every metric, computed in
    the engine: ``n`` and, per metric ``m``, ``m__sy``, ``m__syy``, ``m__sx``, ``m__sxx``,
    ``m__sxy`` (``x`` = covariate, or the denominator of a ratio; zero when none).

    With ``activity`` (the sparse per-customer table of :func:`activity`, carrying the
    ``by`` columns), ``per_customer`` only supplies the counts and every sum is taken over
    the active customers: a customer without activity contributes 0 to every sum, so the
    result is the same without joining all units to their metrics.
    """
    by = list(by)
    t = per_customer
    if activity is None:
        df = t.group_by(by).aggregate(n=t.count(), **moment_aggs(t, metrics)).execute()
        return df.fillna(0.0).sort_values(by).reset_index(drop=True)
    return with_sums(t.group_by(by).aggregate(n=t.count()).execute(), activity, metrics, by)


def with_sums(counts: pd.DataFrame, act: ibis.Table, metrics: Sequence[str],
              by: list[str]) -> pd.DataFrame:
    """Counts per group (a DataFrame with the ``by`` columns and ``n``) completed with the
    metric sums of the active customers of each group."""
    sums = act.group_by(by).aggregate(**moment_aggs(act, metrics)).execute()
    df = counts.merge(sums, on=by, how="left")
    return df.fillna(0.0).sort_values(by).reset_index(drop=True)


def experiment_ids(source: Source) -> list[str]:
    """Experiments present in ``assignments``."""
    source.require("assignments")
    ids = source.table("assignments").select("experiment_id").distinct().execute()
    return sorted(map(str, ids.experiment_id))
