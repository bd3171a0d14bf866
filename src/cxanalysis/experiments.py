"""Experiment evaluation: metrics relative to assignment, sanity checks, effects, decision.

Everything event- or order-level runs in the SQL engine, and only per-variant sufficient
statistics (count, sum, sum of squares, covariate sums and cross-products) come back: the
statistics of :mod:`cxanalysis.stats` are computed from those few numbers, so the code is the
same for 2,000 or 20 million customers. The rows of every table the metrics read are joined
once to the assigned customers and summed per customer; customers without any row have all
metrics 0, so they add to the counts and nothing to the sums, and the moments are taken over
the active customers only (:func:`moments` with ``activity``).
:meth:`ExperimentResult.per_customer` gives the per-customer table with every unit, for
inspection and independent checks.

Metric definitions (the single place they are declared: :data:`METRICS`)
------------------------------------------------------------------------
Each assigned customer is one unit. With ``t0`` = the customer's ``assigned_at`` (their first
one), the *analysis window* is ``[t0, t0 + window_days)`` and the *pre-period* is
``[t0 - pre_days, t0)``. Metrics whose window has not closed by the end of the data are not
computed for that customer (the customer is excluded and counted in the checks).

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

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from ibis import _

from cxanalysis import stats as st
from cxanalysis.data import CXDataError, Source, epoch_micros, materialize
from cxanalysis.formatting import ResultMixin, format_table
from cxanalysis.plotting import date_axis
from cxanalysis.privacy import MIN_GROUP_SIZE
from cxanalysis.results import to_jsonable

SRM_ALPHA = 0.001
#: Event names that count as a service contact (the demo world and most CX logs use one).
SUPPORT_EVENTS = ("support_contact",)


@dataclass(frozen=True)
class MetricSpec:
    """A metric: how it is computed per customer and how it is compared.

    Attributes
    ----------
    name : str
    kind : {"proportion", "mean", "ratio"}
    y : str
        Per-customer column of the value (the numerator for a ratio).
    x : str or None
        Pre-period covariate column (CUPED), or the denominator column of a ratio.
    tables : tuple of str
        Contract tables the metric needs.
    description : str
    """

    name: str
    kind: str
    y: str
    x: str | None
    tables: tuple[str, ...]
    description: str

    @property
    def has_covariate(self) -> bool:
        return self.kind != "ratio" and self.x is not None

    @property
    def columns(self) -> tuple[str, ...]:
        """Contract columns (``"table.column"``) the metric reads beyond required ones: a
        survey metric's feedback score column."""
        col = _FEEDBACK_COLUMN.get(self.name)
        return (f"feedback.{col}",) if col else ()


METRICS: dict[str, MetricSpec] = {m.name: m for m in [
    MetricSpec("conversion", "proportion", "converted", "pre_converted", ("orders",),
               "share of customers with at least one order in the window"),
    MetricSpec("revenue", "mean", "revenue", "pre_revenue", ("orders",),
               "order amount per customer in the window (currency units)"),
    MetricSpec("orders", "mean", "orders", "pre_orders", ("orders",),
               "orders per customer in the window"),
    MetricSpec("revenue_per_order", "ratio", "revenue", "orders", ("orders",),
               "order amount per order (delta method, customers as units)"),
    MetricSpec("nps", "ratio", "nps_points", "nps_answers", ("feedback",),
               "Net Promoter Score of the answers given in the window (points, -100..100)"),
    MetricSpec("csat", "ratio", "csat_sum", "csat_answers", ("feedback",),
               "mean CSAT (1-5) of the answers given in the window"),
    MetricSpec("support_contacts", "mean", "support", "pre_support", ("events",),
               "service contacts (events named support_contact, any channel) per customer in the window"),
    MetricSpec("response_rate", "proportion", "responded", "pre_responded", ("feedback",),
               "share of assigned customers with any feedback (survey answer) in the window"),
    MetricSpec("nps_assigned", "mean", "nps_cust", "pre_nps_cust", ("feedback",),
               "NPS points per assigned customer: mean points (+100/0/-100) of the customer's "
               "answers in the window, 0 without an answer (causal, mixes response and score)"),
    MetricSpec("csat_satisfied", "proportion", "csat_sat", "pre_csat_sat", ("feedback",),
               "share of assigned customers who answered with a mean CSAT of 4-5 in the window "
               "(no answer counts as not satisfied; causal, mixes response and score)"),
]}

#: The feedback column each survey metric reads (None: any feedback row).
_FEEDBACK_COLUMN: dict[str, str | None] = {
    "nps": "nps", "csat": "csat", "nps_assigned": "nps", "csat_satisfied": "csat",
    "response_rate": None}


def metric_spec(name: str) -> MetricSpec:
    """The spec of ``name``: a registered metric or ``event:<event name>``."""
    if name in METRICS:
        return METRICS[name]
    if name.startswith("event:") and len(name) > 6:
        col = "ev_" + "".join(ch if ch.isalnum() else "_" for ch in name[6:])
        return MetricSpec(name, "proportion", col, "pre_" + col, ("events",),
                          f"share of customers with a {name[6:]!r} event in the window")
    raise CXDataError(f"unknown metric {name!r}: use one of {', '.join(METRICS)} or "
                      "'event:<event name>'")


def metric_definitions() -> pd.DataFrame:
    """The metric registry as a table (for reports)."""
    return pd.DataFrame([{"metric": m.name, "kind": m.kind, "definition": m.description,
                          "covariate": (m.x if m.has_covariate else None),
                          "tables": ", ".join(m.tables)} for m in METRICS.values()])


# --------------------------------------------------------------------------- engine side


def _assignments(source: Source, experiment_id: str) -> ibis.Table:
    return source.table("assignments").filter(_.experiment_id == experiment_id)


def _epoch_us_of(t: Any) -> int:
    """Epoch microseconds of an instant (a UTC timestamp)."""
    return int(pd.Timestamp(t).value // 1000)


def _keys_validated(source: Source) -> bool:
    """Whether the source was validated on open, so the contract's keys are unique."""
    v = source.validation
    return v is not None and not v.errors


def _per_customer_assignment(a: ibis.Table) -> ibis.Table:
    """One row per assigned customer: number of variants, variant, first assignment time."""
    # min != max instead of a distinct count: same answer, several times faster
    per = a.group_by("customer_id").aggregate(
        v_min=_.variant.min(), v_max=_.variant.max(), assigned_at=_.assigned_at.min())
    return per.select("customer_id", variant=per.v_min, assigned_at=per.assigned_at,
                      n_variants=ibis.ifelse(per.v_min == per.v_max, 1, 2))


def _units(per: ibis.Table) -> ibis.Table:
    """The customers of :func:`_per_customer_assignment` with a single variant and an
    assignment time."""
    return per.filter((per.n_variants == 1) & per.assigned_at.notnull()).drop("n_variants")


_US = 1_000_000  # microseconds per second
_DAY_US = 86_400 * _US


def _us(days: float) -> int:
    """A duration in days as whole microseconds (window arithmetic is exact integer math)."""
    return int(round(days * _DAY_US))


def _with_window(u: ibis.Table, window_days: float) -> ibis.Table:
    """Add ``t0`` (assignment, epoch microseconds) and ``close_day`` (the day the analysis
    window closes, as days since 1970-01-01 UTC)."""
    u = u.mutate(t0=epoch_micros(u.assigned_at))
    return u.mutate(close_day=((u.t0 + _us(window_days)) // _DAY_US).cast("int32"))


_ORDERS, _FEEDBACK, _EVENTS = 0, 1, 2  # table codes of the metric rows


def _metric_rows(source: Source, specs: Sequence[MetricSpec]) -> ibis.Table:
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
        parts.append(part(o, _ORDERS, v1=o.amount))
    if "feedback" in needed:
        f = source.table("feedback")
        cols = {_FEEDBACK_COLUMN.get(s.name, s.name) for s in specs if "feedback" in s.tables}
        for s in specs:
            col = _FEEDBACK_COLUMN.get(s.name, s.name)
            if "feedback" in s.tables and col is not None and col not in f.columns:
                raise CXDataError(f"metric {s.name!r} needs feedback column {col!r}, which "
                                  "the feedback table lacks")
        nps = (ibis.cases((f.nps >= 9, 100.0), (f.nps <= 6, -100.0), (f.nps.notnull(), 0.0),
                          else_=None) if "nps" in cols else None)
        parts.append(part(f, _FEEDBACK, v1=nps, v2=f.csat if "csat" in cols else None))
    if with_events:
        e = source.table("events")
        parts.append(part(e, _EVENTS, ev=e.event))
    return ibis.union(*parts) if len(parts) > 1 else parts[0]


def _activity(source: Source, units: ibis.Table, metrics: Sequence[str], window_days: float,
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
    needed = {t for s in specs for t in s.tables}
    source.require(*sorted(needed))
    names = {s.name for s in specs}
    win, pre = _us(window_days), _us(pre_days)
    rows = _metric_rows(source, specs)
    if t0_span is not None:
        rows = rows.filter((rows.te >= t0_span[0] - pre) & (rows.te < t0_span[1] + win))
    keys = units.select("customer_id", "variant", "t0", "close_day")
    j = keys.join(rows, keys.customer_id == rows.customer_id)
    j = j.filter((j.te >= j.t0 - pre) & (j.te < j.t0 + win))
    post, before = j.te >= j.t0, j.te < j.t0
    is_order, is_fb, is_ev = j.src == _ORDERS, j.src == _FEEDBACK, j.src == _EVENTS

    aggs: dict[str, ibis.Value] = {}
    if "orders" in needed:
        aggs.update(orders=j.src.count(where=is_order & post),
                    pre_orders=j.src.count(where=is_order & before),
                    revenue=j.v1.sum(where=is_order & post).fill_null(0.0),
                    pre_revenue=j.v1.sum(where=is_order & before).fill_null(0.0))
    for col, v, metric in (("nps", j.v1, "nps_assigned"), ("csat", j.v2, "csat_satisfied")):
        if names & {col, metric}:
            aggs.update({f"{col}_{'points' if col == 'nps' else 'sum'}":
                         v.sum(where=is_fb & post).fill_null(0.0),
                         f"{col}_answers": v.count(where=is_fb & post)})
        if metric in names:
            aggs.update({f"pre_{col}_{'points' if col == 'nps' else 'sum'}":
                         v.sum(where=is_fb & before).fill_null(0.0),
                         f"pre_{col}_answers": v.count(where=is_fb & before)})
    if "response_rate" in names:
        aggs.update(responded=(j.src.count(where=is_fb & post) > 0).cast("int64"),
                    pre_responded=(j.src.count(where=is_fb & before) > 0).cast("int64"))
    if "support_contacts" in names:
        sup = is_ev & j.ev.isin(list(SUPPORT_EVENTS))
        aggs.update(support=j.src.count(where=sup & post),
                    pre_support=j.src.count(where=sup & before))
    for s in specs:
        if s.name.startswith("event:"):
            hit = is_ev & (j.ev == s.name[6:])
            aggs.update({s.y: (j.src.count(where=hit & post) > 0).cast("int64"),
                         s.x: (j.src.count(where=hit & before) > 0).cast("int64")})
    act = j.group_by(["customer_id", "variant", "close_day"]).aggregate(**aggs)
    if "orders" in needed:
        act = act.mutate(converted=(act.orders > 0).cast("int64"),
                         pre_converted=(act.pre_orders > 0).cast("int64"))
    for pre in ("", "pre_"):
        # per assigned customer: a customer without an answer counts 0 (see the module doc)
        if "nps_assigned" in names:
            pts, n = act[f"{pre}nps_points"], act[f"{pre}nps_answers"]
            act = act.mutate(**{f"{pre}nps_cust": ibis.ifelse(n > 0, pts / n, 0.0)})
        if "csat_satisfied" in names:
            tot, n = act[f"{pre}csat_sum"], act[f"{pre}csat_answers"]
            act = act.mutate(**{f"{pre}csat_sat": ibis.ifelse((n > 0) & (tot >= 4 * n), 1, 0)
                                .cast("int64")})
    return act


def _all_units(units: ibis.Table, activity: ibis.Table) -> ibis.Table:
    """Every unit with its metric columns: the sparse activity joined on, zeros elsewhere."""
    vals = [c for c in activity.columns if c not in ("customer_id", "variant", "close_day")]
    out = units.left_join(activity.select("customer_id", *vals), "customer_id")
    return out.drop("customer_id_right").fill_null(dict.fromkeys(vals, 0)).drop("t0")


def _moment_aggs(t: ibis.Table, metrics: Sequence[str]) -> dict[str, ibis.Value]:
    aggs: dict[str, ibis.Value] = {}
    for name in metrics:
        s = metric_spec(name)
        y = t[s.y].cast("float64")
        aggs[f"{name}__sy"] = y.sum()
        aggs[f"{name}__syy"] = (y * y).sum()
        if s.x is not None:
            x = t[s.x].cast("float64")
            aggs[f"{name}__sx"] = x.sum()
            aggs[f"{name}__sxx"] = (x * x).sum()
            aggs[f"{name}__sxy"] = (x * y).sum()
    return aggs


def moments(per_customer: ibis.Table, metrics: Sequence[str],
            by: Sequence[str] = ("variant",), activity: ibis.Table | None = None
            ) -> pd.DataFrame:
    """Per group (default: variant) sufficient statistics of every metric, computed in
    the engine: ``n`` and, per metric ``m``, ``m__sy``, ``m__syy``, ``m__sx``, ``m__sxx``,
    ``m__sxy`` (``x`` = covariate, or the denominator of a ratio; zero when none).

    With ``activity`` (the sparse per-customer table of :func:`_activity`, carrying the
    ``by`` columns), ``per_customer`` only supplies the counts and every sum is taken over
    the active customers: a customer without activity contributes 0 to every sum, so the
    result is the same without joining all units to their metrics.
    """
    by = list(by)
    t = per_customer
    if activity is None:
        df = t.group_by(by).aggregate(n=t.count(), **_moment_aggs(t, metrics)).execute()
        return df.fillna(0.0).sort_values(by).reset_index(drop=True)
    return _with_sums(t.group_by(by).aggregate(n=t.count()).execute(), activity, metrics, by)


def _with_sums(counts: pd.DataFrame, activity: ibis.Table, metrics: Sequence[str],
               by: list[str]) -> pd.DataFrame:
    """Counts per group (a DataFrame with the ``by`` columns and ``n``) completed with the
    metric sums of the active customers of each group."""
    sums = activity.group_by(by).aggregate(**_moment_aggs(activity, metrics)).execute()
    df = counts.merge(sums, on=by, how="left")
    return df.fillna(0.0).sort_values(by).reset_index(drop=True)


def _moments_of(row: Mapping[str, Any], name: str) -> st.Moments:
    g = row.get
    return st.Moments(float(row["n"]), float(g(f"{name}__sy", 0.0)),
                      float(g(f"{name}__syy", 0.0)), float(g(f"{name}__sx", 0.0)),
                      float(g(f"{name}__sxx", 0.0)), float(g(f"{name}__sxy", 0.0)))


def compare(spec: MetricSpec, t: st.Moments, c: st.Moments, alpha: float = 0.05,
            adjust: bool = False, theta: float | None = None
            ) -> tuple[st.Effect, float]:
    """Treatment versus control for one metric: (effect, variance reduction).

    Proportions: pooled two-proportion z-test and Newcombe-Wilson interval; means: Welch;
    ratios: delta method. ``adjust=True`` applies CUPED (Welch on adjusted values, theta
    pooled across the arms compared, or ``theta`` when given)."""
    if adjust:
        if not spec.has_covariate:
            raise ValueError(f"metric {spec.name!r} has no pre-period covariate")
        ce = st.cuped(t, c, alpha, theta)
        return ce.effect, ce.variance_reduction
    if spec.kind == "proportion":
        return st.two_proportions(t, c, alpha), 0.0
    if spec.kind == "ratio":
        return st.ratio(t, c, alpha), 0.0
    return st.welch(t, c, alpha), 0.0


# --------------------------------------------------------------------------- results


#: Columns of :meth:`Sequential.table` (present even when no look could be computed).
_SEQ_COLS = ["variant", "day", "n_control", "n_treatment", "abs_diff", "se", "ci_low",
             "ci_high", "fixed_p", "always_valid_p", "cs_low", "cs_high"]


@dataclass
class Sequential(ResultMixin):
    """Always-valid monitoring of the primary metric at daily looks.

    A look on day ``d`` uses the customers whose analysis window had closed by ``d`` (what
    a team looking that day could have analysed). The normal-mixture mSPRT with mixing
    N(0, tau^2) gives an always-valid p-value and confidence sequence."""

    metric: str
    tau: float
    alpha: float
    frame: pd.DataFrame
    #: which estimate the looks track, in words (e.g. "conversion, unadjusted")
    estimate: str = ""
    #: why the monitor was not run or is incomplete (None when it ran normally)
    note: str | None = None

    def table(self) -> pd.DataFrame:
        return self.frame

    def first_significant_day(self, variant: str | None = None) -> str | None:
        """First look whose always-valid p-value is below ``alpha`` (None: never, or the
        monitor was not run)."""
        f = self.frame.reindex(columns=_SEQ_COLS)
        f = f if variant is None else f[f.variant == variant]
        hit = f[f["always_valid_p"] < self.alpha]
        return None if hit.empty else str(hit["day"].iloc[0])

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 3.5))[1]
        for v, f in self.frame.reindex(columns=_SEQ_COLS).groupby("variant", sort=False):
            x = pd.to_datetime(f["day"])
            ax.fill_between(x, f["cs_low"], f["cs_high"], alpha=0.25,
                            label=f"{v}: always-valid {1 - self.alpha:.0%} sequence")
            ax.plot(x, f["abs_diff"], marker=".", label=f"{v}: estimate")
            ax.plot(x, f["ci_low"], ls=":", color="grey")
            ax.plot(x, f["ci_high"], ls=":", color="grey")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel(f"{self.metric}: treatment - control")
        date_axis(ax)  # daily looks: concise labels that never overlap
        ax.set_title("Sequential monitoring (dotted: fixed-horizon interval, not valid "
                     "under peeking)")
        if len(self.frame):
            ax.legend(fontsize=8)
        else:  # say why the axes are empty instead of drawing nothing silently
            ax.text(0.5, 0.5, self.note or "no looks", ha="center", va="center",
                    transform=ax.transAxes, wrap=True)
        return ax


@dataclass
class Segmented(ResultMixin):
    """Effect of each treatment on one metric within the groups of a breakdown.

    Cochran's Q tests whether the effect differs between groups (treatment x group
    interaction); group p-values are Holm-corrected over all groups and treatments of the
    breakdown. Groups with fewer than ``min_group_size`` customers in an arm are
    suppressed (figures blanked). ``rel_lift`` follows the rule of :func:`analyze`: NaN
    when the group's control level is zero or negative
    (:func:`cxanalysis.stats.relative_defined`).

    Reporting rule (issue 16, item 9): group differences are reported only when the
    interaction test rejects homogeneity (Cochran's Q p < ``alpha``); otherwise the summary
    says the effect does not detectably differ between groups and names no group.
    ``shrunk_diff`` (with ``shrunk_ci_low``/``shrunk_ci_high``) is each group's effect
    shrunk towards the common effect by empirical Bayes
    (:func:`cxanalysis.stats.eb_shrink`, normal-normal with the method-of-moments tau^2):
    the estimate to read for a single group, since the raw group estimates of the largest
    and smallest groups are the most exaggerated."""

    by: str
    metric: str
    frame: pd.DataFrame
    heterogeneity: pd.DataFrame
    alpha: float = 0.05

    def differs(self, variant: str | None = None) -> bool:
        """Whether the interaction test says the effect differs between groups."""
        h = self.heterogeneity
        h = h if variant is None else h[h.variant == variant]
        return bool((h.p_value < self.alpha).any())

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        f = self.frame.dropna(subset=["abs_diff"])
        ax = ax if ax is not None else plt.subplots(figsize=(7, 0.45 * len(f) + 1.2))[1]
        labels = [f"{g} ({v})" if self.frame.variant.nunique() > 1 else str(g)
                  for g, v in zip(f["group"], f["variant"], strict=True)]
        y = np.arange(len(f))[::-1]
        ax.errorbar(f["abs_diff"], y, xerr=[f["abs_diff"] - f["ci_low"],
                                           f["ci_high"] - f["abs_diff"]],
                    fmt="o", capsize=3, color="#1e88e5", label="group estimate")
        if f["shrunk_diff"].notna().any():
            ax.errorbar(f["shrunk_diff"], y - 0.25,
                        xerr=[f["shrunk_diff"] - f["shrunk_ci_low"],
                              f["shrunk_ci_high"] - f["shrunk_diff"]],
                        fmt="s", capsize=3, color="#d81b60",
                        label="shrunk (empirical Bayes)")
            ax.legend(fontsize=8)
        ax.set_yticks(y, labels)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"{self.metric}: treatment - control")
        ax.set_title(f"Effect by {self.by}")
        return ax

    def summary(self) -> str:
        """The breakdown in words, under the reporting rule of the class: groups are named
        only when Cochran's Q says the effect differs."""
        parts = []
        for _i, h in self.heterogeneity.iterrows():
            q = f"Cochran's Q {h.q:.1f} on {int(h.df)} df, p = {h.p_value:.2g}"
            f = self.frame[self.frame.variant == h.variant]
            if not (h.p_value < self.alpha):
                parts.append(f"{h.variant}: no evidence that the effect differs by "
                             f"{self.by} ({q} >= {self.alpha:g}); read the overall effect, "
                             "not the groups one by one")
                continue
            sig = f[f.significant.fillna(False).astype(bool)]
            top = f.dropna(subset=["shrunk_diff"]).sort_values("shrunk_diff")
            ends = (f"; shrunk effects range from {top.shrunk_diff.iloc[0]:+.3g} "
                    f"({top.group.iloc[0]}) to {top.shrunk_diff.iloc[-1]:+.3g} "
                    f"({top.group.iloc[-1]})" if len(top) > 1 else "")
            parts.append(f"{h.variant}: the effect differs by {self.by} ({q} < "
                         f"{self.alpha:g}){ends}; significant after Holm in "
                         f"{', '.join(map(str, sig.group)) or 'no group'}")
        if not parts:
            return f"Effect on {self.metric} by {self.by}: fewer than two testable groups."
        return f"Effect on {self.metric} by {self.by}: " + "; ".join(parts) + "."


@dataclass
class Decision:
    verdict: str  # "ship", "don't ship", "keep testing", "keep running" or "not testable"
    variant: str | None
    reason: str


@dataclass
class ExperimentResult(ResultMixin):
    """The evaluation of one experiment (see :func:`analyze`)."""

    experiment_id: str
    name: str | None
    hypothesis: str | None
    control: str
    variants: list[str]
    primary_metric: str
    alpha: float
    correction: str
    effects: pd.DataFrame
    checks: pd.DataFrame
    balance: pd.DataFrame
    srm_chi2: float
    srm_p_value: float
    counts: dict[str, int]
    planned_split: dict[str, float]
    guardrails: pd.DataFrame
    bayes: pd.DataFrame
    planning: pd.DataFrame
    decision: Decision
    sequential: Sequential | None
    data_end: pd.Timestamp
    window_days: float
    pre_days: float
    notes: list[str] = field(default_factory=list)
    #: why the primary metric cannot be tested (None when it can); the decision is then
    #: "not testable" and monitoring, planning and the Bayesian view are not computed
    not_testable_reason: str | None = None
    #: metric -> why CUPED was not applied to it although ``variance_reduction`` was on
    cuped_not_applied: dict[str, str] = field(default_factory=dict)
    #: where the test stands against its planned horizon (see :func:`analyze`)
    horizon: dict[str, Any] = field(default_factory=lambda: {"reached": True, "text": ""})
    #: the analysis parameters (recorded in the learning log)
    parameters: dict[str, Any] = field(default_factory=dict)
    #: the first assignment (UTC)
    first_assigned: pd.Timestamp | None = None
    #: threats to validity found after the analysis (e.g. a persona calibration window that
    #: overlaps the assignments), published as ``warnings`` in results.json
    warnings: list[str] = field(default_factory=list)
    _units: ibis.Table | None = None
    _activity: ibis.Table | None = None
    _activity_stored: bool = False
    _min_group_size: int = MIN_GROUP_SIZE

    @property
    def srm_flagged(self) -> bool:
        return bool(self.srm_p_value < SRM_ALPHA)

    @property
    def primary_testable(self) -> bool:
        return self.not_testable_reason is None

    @property
    def treatments(self) -> list[str]:
        return [v for v in self.variants if v != self.control]

    def table(self) -> pd.DataFrame:
        """Every metric x treatment: means, absolute and relative differences with
        intervals, p-values, corrected p-values (``p_adjusted``, within ``family``) and
        whether the row is the reported one (``reported``: the CUPED row when variance
        reduction is used, else the unadjusted one). ``label`` names the estimate as
        readers do ("conversion, CUPED-adjusted"); ``not_testable`` holds the reason when
        a row could not be tested."""
        return self.effects

    def reported(self) -> pd.DataFrame:
        return self.effects[self.effects.reported].reset_index(drop=True)

    #: the columns of the formatted table (:meth:`_repr_html_`): the reported estimates
    _SHOWN = ("label", "variant", "role", "control_mean", "treatment_mean", "abs_diff",
              "abs_ci_low", "abs_ci_high", "rel_lift", "rel_ci_low", "rel_ci_high", "p_value",
              "p_adjusted", "significant")

    def to_dict(self) -> dict[str, Any]:
        """The headline figures (:meth:`results`)."""
        return to_jsonable(self.results())

    def _repr_html_(self) -> str:
        r = self.reported()
        shown = r[[c for c in self._SHOWN if c in r.columns]]
        if len(self.treatments) <= 1:
            shown = shown.drop(columns=["variant"], errors="ignore")
        return format_table(shown, min_group_size=self._min_group_size,
                            labels={"label": "metric", "role": "role"},
                            caption=self.summary(), notes=[*self.warnings, *self.notes])

    def variance_reduction_table(self) -> pd.DataFrame:
        """What CUPED bought, per adjusted metric and treatment: ``theta``, the variance
        reduction and the width of the absolute-difference interval without and with it."""
        key = ["base_metric", "variant"]
        e = self.effects
        width = e.abs_ci_high - e.abs_ci_low
        adj = e[e.adjusted].assign(ci_width_cuped=width)
        raw = e[~e.adjusted].assign(ci_width_unadjusted=width)
        out = adj[[*key, "theta", "variance_reduction"]].merge(
            raw[[*key, "ci_width_unadjusted"]], on=key)
        return out.merge(adj[[*key, "ci_width_cuped"]], on=key)

    def primary(self, variant: str | None = None) -> pd.Series:
        r = self.reported()
        r = r[r.role == "primary"]
        if variant is not None:
            r = r[r.variant == variant]
        return r.sort_values("p_adjusted").iloc[0]

    def summary(self) -> str:
        d = self.decision
        lines = [f"Decision for {self.experiment_id}: {d.verdict.upper()}"
                 + (f" ({d.variant})" if d.variant and d.verdict == "ship" else "")
                 + f". {d.reason}"]
        if self.srm_flagged:
            lines.insert(0, f"WARNING: sample ratio mismatch (p = {self.srm_p_value:.2g} < "
                            f"{SRM_ALPHA}): assignment is broken and NO effect below can be "
                            "trusted.")
        return "\n".join(lines)

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        """Forest plot of relative lifts (reported rows) with their intervals."""
        r = self.reported()
        ax = ax if ax is not None else plt.subplots(figsize=(8, 0.45 * len(r) + 1.2))[1]
        y = np.arange(len(r))[::-1]
        labels = [f"{m} ({v})" if len(self.treatments) > 1 else m
                  for m, v in zip(r.label, r.variant, strict=True)]
        colors = ["#d81b60" if s else "#1e88e5" for s in r.significant.fillna(False)]
        for yi, (_i, row), col in zip(y, r.iterrows(), colors, strict=True):
            if pd.isna(row.rel_lift):
                continue
            ax.errorbar([row.rel_lift], [yi], xerr=[[row.rel_lift - row.rel_ci_low],
                                                    [row.rel_ci_high - row.rel_lift]],
                        fmt="o", color=col, capsize=3)
        ax.set_yticks(y, labels)
        ax.axvline(0, color="black", lw=0.8)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:+.0%}"))
        ax.set_xlabel(f"relative lift vs {self.control} ({1 - self.alpha:.0%} delta-method "
                      "interval; red: significant after correction)")
        ax.set_title(self.experiment_id)
        return ax

    def breakdown(self, by: str | pd.DataFrame, metric: str | None = None,
                  source: Source | None = None) -> Segmented:
        """Effects within groups: ``by`` is a column of ``customers`` (pass ``source``) or
        a DataFrame with ``customer_id`` and one group column (e.g. personas)."""
        metric = metric or self.primary_metric
        spec = metric_spec(metric)
        units, activity = self._per_customer_tables()
        if isinstance(by, str):
            if source is None:
                raise ValueError("pass source= to break down by a customers column")
            cust = source.table("customers")
            if by not in cust.columns:
                raise CXDataError(f"customers has no column {by!r} to break down by "
                                  f"(columns: {', '.join(cust.columns)})")
            groups = cust.select("customer_id", group=cust[by].cast("string"))
            label = by
        else:
            cols = [c for c in by.columns if c != "customer_id"]
            if "customer_id" not in by.columns or len(cols) != 1:
                raise ValueError("a breakdown DataFrame needs customer_id and one group column")
            label = cols[0]
            # a memtable goes to whichever engine the units live on (any backend)
            groups = ibis.memtable(by.rename(columns={label: "group"})
                                   .astype({"customer_id": str, "group": str}))

        def grouped(t: ibis.Table) -> ibis.Table:
            j = t.left_join(groups, "customer_id").drop("customer_id_right")
            return j.mutate(group=j.group.fill_null("(unknown)"))

        mom = moments(grouped(units), [metric], by=("group", "variant"),
                      activity=grouped(activity))
        rows = []
        for g, f in mom.groupby("group", sort=True):
            arms = {r.variant: r for _i, r in f.iterrows()}
            c = arms.get(self.control)
            for v in self.treatments:
                t = arms.get(v)
                n_c = int(c["n"]) if c is not None else 0
                n_t = int(t["n"]) if t is not None else 0
                row: dict[str, Any] = {"group": g, "variant": v, "n_control": n_c,
                                       "n_treatment": n_t}
                small = min(n_c, n_t) < self._min_group_size
                if not small:
                    try:
                        e, _vr = compare(spec, _moments_of(t, metric), _moments_of(c, metric),
                                         self.alpha)
                        row.update(control_mean=e.control_mean, treatment_mean=e.treatment_mean,
                                   abs_diff=e.abs_diff, se=e.se, ci_low=e.abs_ci[0],
                                   ci_high=e.abs_ci[1], rel_lift=e.rel_lift, p_value=e.p_value)
                    except ValueError:
                        pass
                row["suppressed"] = small
                rows.append(row)
        cols = ["group", "variant", "n_control", "n_treatment", "control_mean", "treatment_mean",
                "abs_diff", "se", "ci_low", "ci_high", "rel_lift", "p_value"]
        frame = pd.DataFrame(rows).reindex(columns=cols + ["suppressed"])
        ok = frame.p_value.notna()
        frame["p_holm"] = st.adjust_pvalues(frame.p_value, "holm")
        frame["significant"] = frame.p_holm < self.alpha
        frame.loc[frame.suppressed, ["n_control", "n_treatment"]] = np.nan
        frame[["n_control", "n_treatment"]] = frame[["n_control", "n_treatment"]].astype("Int64")
        het = []
        z = st.stats.norm.isf(self.alpha / 2)
        for c in ("shrunk_diff", "shrunk_se", "shrunk_ci_low", "shrunk_ci_high"):
            frame[c] = np.nan
        for v, f in frame[ok].groupby("variant", sort=False):
            f = f[f.se > 0]
            q, p, df = st.cochran_q(f.abs_diff.to_numpy(), f.se.to_numpy())
            het.append({"variant": v, "groups": len(f), "q": q, "df": df, "p_value": p})
            if len(f) >= 2:
                est, se, tau2, _mu = st.eb_shrink(f.abs_diff.to_numpy(), f.se.to_numpy())
                frame.loc[f.index, "shrunk_diff"] = est
                frame.loc[f.index, "shrunk_se"] = se
                frame.loc[f.index, "shrunk_ci_low"] = est - z * se
                frame.loc[f.index, "shrunk_ci_high"] = est + z * se
                het[-1]["tau2"] = tau2
        heterogeneity = pd.DataFrame(het, columns=["variant", "groups", "q", "df", "p_value",
                                                   "tau2"])
        return Segmented(label, metric, frame, heterogeneity, self.alpha)

    def check_persona_calibration(self, calibration: Sequence[Any] | None) -> str | None:
        """Warn when the persona calibration window ends after the first assignment.

        Personas fitted on behaviour after assignment can be changed by the treatment (a
        post-treatment, "bad" control): a persona breakdown then compares groups the
        treatment helped form. The window ``[start, end]`` is in ISO dates, ``end``
        inclusive (the whole day). The warning is added to :attr:`warnings` (published as
        ``warnings`` in results.json) and returned; None when the window ends before the
        first assignment (or is not known).
        """
        if calibration is None or self.first_assigned is None:
            return None
        end = pd.Timestamp(calibration[1])
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        first = pd.Timestamp(self.first_assigned)
        first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
        # a date means the whole day: the window reaches up to the next midnight
        stop = end.normalize() + pd.Timedelta(days=1) if end == end.normalize() else end
        if stop <= first:
            return None
        msg = (f"Persona calibration ends {end:%Y-%m-%d}, after the first assignment "
               f"({first:%Y-%m-%d %H:%M} UTC): personas built on post-assignment behaviour "
               "can be shaped by the treatment (a bad control), so the persona breakdown may "
               "be biased; calibrate personas on a window that ends before the test starts.")
        if msg not in self.warnings:
            self.warnings.append(msg)
        return msg

    def per_customer(self) -> ibis.Table:
        """The analysed customers, one row each with every metric column (an Ibis
        expression over all units: inspect or sample it; :func:`analyze` itself only
        aggregates the active customers)."""
        return _all_units(*self._per_customer_tables())

    def _per_customer_tables(self) -> tuple[ibis.Table, ibis.Table]:
        """The units and their sparse activity. The activity is a query over every metric
        table; :func:`analyze` aggregates it once in passing, and the first breakdown or
        per-customer view stores it as a temporary table so later ones do not re-run it."""
        if self._units is None or self._activity is None:
            raise ValueError("this result holds no per-customer tables")
        if not self._activity_stored:
            self._activity = materialize(self._activity, "activity")
            self._activity_stored = True
        return self._units, self._activity

    def results(self) -> dict[str, Any]:
        """Headline figures for ``results.json``.

        ``metrics`` holds every estimate side by side under the name of its row in
        :meth:`table`: ``conversion`` (unadjusted) next to ``conversion_cuped`` (CUPED),
        each with ``reported`` (the one the decision and the corrections use) and ``label``
        (its name in words); ``@variant`` is appended with more than one treatment."""
        many = len(self.treatments) > 1
        metrics: dict[str, Any] = {}
        for _i, r in self.effects.iterrows():
            key = f"{r.metric}@{r.variant}" if many else r.metric
            metrics[key] = {
                "role": r.role, "estimate": r.metric, "base_metric": r.base_metric,
                "label": r.label, "method": r.method,
                "control_mean": r.control_mean,
                "treatment_mean": r.treatment_mean, "abs_diff": r.abs_diff,
                "abs_ci": [r.abs_ci_low, r.abs_ci_high], "rel_lift": r.rel_lift,
                "rel_ci": [r.rel_ci_low, r.rel_ci_high], "p_value": r.p_value,
                "p_adjusted": r.p_adjusted, "adjusted": bool(r.adjusted),
                "reported": bool(r.reported), "variance_reduction": r.variance_reduction,
                "not_testable": r.not_testable}
        return {
            "experiment_id": self.experiment_id, "control": self.control,
            "variants": {v: self.counts.get(v, 0) for v in self.variants},
            "srm_p_value": self.srm_p_value, "srm_flagged": self.srm_flagged,
            "decision": self.decision.verdict, "decision_variant": self.decision.variant,
            "reason": self.decision.reason, "primary_metric": self.primary_metric,
            "correction": self.correction, "metrics": metrics,
            "guardrails": {f"{g.metric}@{g.variant}" if many else g.metric: g.status
                           for g in self.guardrails.itertuples()},
            "primary_testable": self.primary_testable,
            "primary_not_testable_reason": self.not_testable_reason,
            "cuped_not_applied": self.cuped_not_applied,
            **({"sequential_first_significant_day": self.sequential.first_significant_day(),
                "sequential_estimate": self.sequential.estimate,
                "sequential_note": self.sequential.note}
               if self.sequential is not None else {}),
            **({"p_treatment_better": dict(zip(self.bayes.variant,
                                               self.bayes.p_treatment_better, strict=True))}
               if len(self.bayes) else {}),
            "notes": list(self.notes),
            "guardrail_details": {
                f"{g.metric}@{g.variant}" if many else g.metric: {
                    "status": g.status, "bad_direction": g.bad_direction,
                    "margin": g.margin, "margin_abs": g.margin_abs,
                    "abs_ci": [g.abs_ci_low, g.abs_ci_high], "worst_harm": g.worst_harm,
                    "statement": g.statement}
                for g in self.guardrails.itertuples()},
            "horizon": dict(self.horizon),
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- analysis


def _planned_split(source: Source, experiment_id: str, variants: list[str]
                   ) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """Planned split, experiment row (name, hypothesis, control, start, end) and notes."""
    notes: list[str] = []
    info: dict[str, Any] = {}
    if source.has("experiments"):
        ex = source.table("experiments")
        row = ex.filter(ex.experiment_id == experiment_id).limit(1).execute()
        if len(row):
            info = {k: (None if pd.isna(v) else v) for k, v in row.iloc[0].items()}
    split: dict[str, float] = {}
    text = info.get("planned_split")
    if text:
        try:
            for part in str(text).split(","):
                k, w = part.split(":")
                split[k.strip()] = float(w)
        except ValueError as err:
            raise CXDataError(f"experiments.planned_split of {experiment_id!r} is {text!r}; "
                              "expected 'variant:weight,...'") from err
    if not split:
        split = {v: 1.0 for v in variants}
        notes.append("No planned split recorded: the SRM check assumes an equal split.")
    return split, info, notes


#: Default non-inferiority margin of a guardrail: harm of 5% of the control level.
GUARDRAIL_MARGIN = 0.05


@dataclass(frozen=True)
class Guardrail:
    """A guardrail: the metric, the direction that is bad and the non-inferiority margin
    (relative to the control level, or absolute in the metric's units)."""

    metric: str
    bad: str
    margin: float | None = GUARDRAIL_MARGIN
    margin_abs: float | None = None

    def margin_for(self, control_level: float) -> float:
        """The margin in the metric's units (NaN when a relative margin has no positive
        control level to be relative to)."""
        if self.margin_abs is not None:
            return float(self.margin_abs)
        if not st.relative_defined(control_level):
            return float("nan")
        return float(self.margin) * float(control_level)

    def margin_text(self) -> str:
        return (f"{self.margin_abs:g} (absolute)" if self.margin_abs is not None
                else f"{self.margin:.1%} of the control level")


def guardrail_specs(guardrails: Mapping[str, Any], default_margin: float = GUARDRAIL_MARGIN
                    ) -> dict[str, Guardrail]:
    """Parse the ``guardrails`` parameter: ``{metric: "increase" | "decrease"}`` (the bad
    direction, margin ``default_margin`` of the control level) or ``{metric: {"direction":
    ..., "margin": relative}}`` / ``{"direction": ..., "margin_abs": absolute}``."""
    out = {}
    for m, v in guardrails.items():
        spec = {"direction": v} if isinstance(v, str) else dict(v)
        d = spec.pop("direction", None)
        if d not in ("increase", "decrease"):
            raise ValueError(f"guardrail {m!r}: the bad direction must be 'increase' or "
                             f"'decrease', not {d!r}")
        rel, ab = spec.pop("margin", None), spec.pop("margin_abs", None)
        if spec:
            raise ValueError(f"guardrail {m!r}: unknown keys {', '.join(map(str, spec))} (use "
                             "direction, margin or margin_abs)")
        if rel is not None and ab is not None:
            raise ValueError(f"guardrail {m!r}: give margin (relative) or margin_abs, not both")
        for name, x in (("margin", rel), ("margin_abs", ab), ("guardrail_margin",
                                                             default_margin)):
            if x is not None and not (isinstance(x, int | float) and x >= 0):
                raise ValueError(f"guardrail {m!r}: {name} must be a number >= 0, not {x!r}")
        out[m] = Guardrail(m, d, None if ab is not None else
                           float(default_margin if rel is None else rel),
                           None if ab is None else float(ab))
    return out


def _guardrail_rows(effects: pd.DataFrame, specs: Mapping[str, Guardrail], alpha: float,
                    power: float = 0.8) -> pd.DataFrame:
    """Status of every guardrail x treatment (:func:`cxanalysis.stats.guardrail_status`)
    from the reported row's ``1 - alpha`` interval, with the statement in words.

    ``customers_per_arm_needed``: customers per arm for the interval to exclude harm of the
    margin ``M`` with probability ``power`` when there is no true harm. The standard error
    scales as ``1 / sqrt(n)``, so ``n = n_now * ((z_{1-alpha/2} + z_power) * se / M)^2``
    with ``n_now`` the smaller arm."""
    zz = st.stats.norm.isf(alpha / 2) + st.stats.norm.isf(1 - power)
    rows = []
    for m, g in specs.items():
        for _i, r in effects[effects.reported & (effects.base_metric == m)].iterrows():
            level = r.control_mean if "control_mean" in r else np.nan
            margin = g.margin_for(level)
            sign = 1 if g.bad == "increase" else -1
            # the worst harm the interval still allows, in units and relative to control
            worst = max(sign * r.abs_ci_low, sign * r.abs_ci_high)
            rel = (f" ({worst / level:+.1%} of the control level)"
                   if st.relative_defined(level) and np.isfinite(worst) else "")
            if pd.isna(r.p_value):
                status = "inconclusive"
                text = f"not testable ({r.not_testable}): no harm could be ruled out"
            elif not np.isfinite(margin):
                status = st.guardrail_status(r.abs_ci_low, r.abs_ci_high, g.bad, np.nan)
                text = (f"significant harm: the whole {1 - alpha:.0%} interval is on the bad "
                        f"side ({g.bad})" if status == "fail" else
                        "a relative margin needs a positive control level (give margin_abs): "
                        f"the interval allows harm up to {worst:+.4g}")
            else:
                status = st.guardrail_status(r.abs_ci_low, r.abs_ci_high, g.bad, margin)
                text = {"pass": f"no harm beyond {margin:.4g} ({g.margin_text()}) detected",
                        "fail": f"significant harm: the whole {1 - alpha:.0%} interval is on "
                                f"the bad side ({g.bad})",
                        "inconclusive": f"the interval still allows harm up to {worst:+.4g}"
                                        f"{rel}, beyond the margin {margin:.4g} "
                                        f"({g.margin_text()})"}[status]
            n_now = min(r.n_control, r.n_treatment)
            need = (math.ceil(n_now * (zz * r.se / margin) ** 2)
                    if np.isfinite(margin) and margin > 0 and np.isfinite(r.se) else None)
            rows.append({"metric": m, "variant": r.variant, "bad_direction": g.bad,
                         "abs_diff": r.abs_diff, "abs_ci_low": r.abs_ci_low,
                         "abs_ci_high": r.abs_ci_high, "p_value": r.p_value,
                         "margin": g.margin if g.margin_abs is None else np.nan,
                         "margin_abs": margin, "worst_harm": worst, "status": status,
                         "statement": text, "customers_per_arm_needed": need})
    return pd.DataFrame(rows, columns=_GUARD_COLS)


_GUARD_COLS = ["metric", "variant", "bad_direction", "abs_diff", "abs_ci_low", "abs_ci_high",
               "p_value", "margin", "margin_abs", "worst_harm", "status", "statement",
               "customers_per_arm_needed"]


def analyze(
    source: Source,
    experiment_id: str,
    control: str | None = None,
    primary_metric: str = "conversion",
    secondary_metrics: Sequence[str] = ("revenue", "orders", "revenue_per_order", "nps"),
    guardrails: Mapping[str, Any] | None = None,
    guardrail_margin: float = GUARDRAIL_MARGIN,
    planned_customers: int | None = None,
    window_days: float = 14,
    pre_days: float = 90,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float = 0.05,
    variance_reduction: bool = True,
    correction: str = "holm",
    sequential: bool = True,
    bayesian: bool = True,
    seed: int = 0,
    min_group_size: int = MIN_GROUP_SIZE,
) -> ExperimentResult:
    """Evaluate one experiment.

    Parameters
    ----------
    source : Source
        Needs ``assignments`` and the tables of the metrics (``experiments`` optional).
    experiment_id : str
    control : str, optional
        Control variant; default: ``experiments.control``, else ``"control"``.
    primary_metric, secondary_metrics : str
        Names from :data:`METRICS` or ``event:<name>``.
    guardrails : mapping metric -> "increase" | "decrease" | dict
        The direction that is *bad*, or ``{"direction": ..., "margin": relative}`` /
        ``{"direction": ..., "margin_abs": absolute}`` with the non-inferiority margin of
        that guardrail. Default ``{"support_contacts": "increase"}`` when the source has
        events.
    guardrail_margin : float
        Margin of the guardrails that do not state their own, relative to the control
        level (0.05: harm of 5 % of the control's level is tolerated). See the guardrail
        rule below.
    planned_customers : int, optional
        Planned sample size (customers across all arms with a closed analysis window): the
        planned horizon. None: the horizon is ``experiments.end`` + ``window_days`` (every
        customer assigned by the end has a closed window); when neither is known the end
        of the data is taken as the horizon and a note says so.
    window_days, pre_days : float
        Analysis window after ``assigned_at`` and pre-period before it, in days.
    alpha, power : float
        Two-sided significance level and power for planning.
    mde : float
        Smallest relative lift of the primary metric worth detecting (0.05 = +5 %); also
        the mSPRT mixing scale (tau = mde x control mean).
    variance_reduction : bool
        CUPED with the pre-period value of each metric as covariate (one theta pooled
        across all arms); reported beside the unadjusted result (rows ``<metric>`` and
        ``<metric>_cuped``); the CUPED row is the one the decision uses.
    correction : {"holm", "bh"}
        Multiple-comparison correction. Families: (1) the primary metric across all
        treatments; (2) the secondary metrics across metrics and treatments. Guardrails are
        not corrected (a harm signal should not be diluted).
    sequential, bayesian : bool
        Add always-valid monitoring and the Bayesian view of the primary metric.
    seed : int
        Seed of the Monte Carlo draws of the Bayesian view.
    min_group_size : int
        Breakdown groups with fewer customers in an arm are suppressed.

    Guardrail rule
    --------------
    Each guardrail gets a status from the reported row's ``1 - alpha`` interval (uncorrected:
    a harm signal is not diluted) against its margin ``M`` (in the metric's units), with the
    difference oriented so that positive is harm (:func:`cxanalysis.stats.guardrail_status`):
    ``fail`` when the whole interval shows harm (significant harm, of any size);
    ``pass`` when the interval excludes harm of ``M`` or more ("no harm beyond M detected";
    never "safe"); ``inconclusive`` otherwise (and when the guardrail cannot be tested).

    Decision rule
    -------------
    At any look: ``don't ship`` when the sample ratio mismatches (p < 0.001) or a guardrail
    fails. Before the planned horizon (see ``planned_customers``) only the always-valid
    (mSPRT) test of the primary metric may decide, at ``alpha`` divided by the number of
    treatments: ``don't ship`` when its confidence sequence lies below 0, ``ship`` when it
    lies above 0 and every guardrail passes; otherwise ``keep running``, with "running — N
    of M customers". At the horizon, on the fixed-horizon test: ``don't ship`` when the best
    treatment's primary effect is significantly negative; ``ship`` (the treatment with the
    smallest corrected p) when its primary effect is significantly positive and every
    guardrail passes, ``keep testing`` when it is positive but a guardrail is inconclusive
    (harm beyond the margin not ruled out); otherwise ``don't ship`` when the interval
    already rules out a lift of ``mde``, else ``keep testing`` with the days needed.

    ``not testable`` (after the SRM and guardrail checks) when the primary metric cannot
    be tested: it has no variance in any arm, its control level is 0 (relative lift, the
    ``mde`` target and the monitoring scale are undefined), or no comparison could be
    computed. The reason is in ``decision.reason`` and ``not_testable_reason``; monitoring,
    planning and the Bayesian view are then not computed.

    CUPED falls back to the unadjusted estimate when a metric's pre-period covariate has
    no variance (``pre_days=0``, or no pre-period data); ``notes`` and
    ``cuped_not_applied`` say so. Relative lifts are NaN when the control level is not
    positive (:func:`cxanalysis.stats.relative_defined`, also used by breakdowns).
    """
    if correction not in ("holm", "bh"):
        raise ValueError("correction must be 'holm' or 'bh'")
    source.require("assignments")
    if guardrails is None:
        guardrails = {"support_contacts": "increase"} if source.has("events") else {}
    gspecs = guardrail_specs(guardrails, guardrail_margin)
    if planned_customers is not None and (isinstance(planned_customers, bool) or not (
            isinstance(planned_customers, int) and planned_customers > 0)):
        raise ValueError(f"planned_customers must be a positive integer or None, not "
                         f"{planned_customers!r}")
    secondary = [m for m in secondary_metrics if m != primary_metric]
    guard = [m for m in guardrails if m not in secondary and m != primary_metric]
    all_metrics = list(dict.fromkeys([primary_metric, *secondary, *guard]))
    specs = {m: metric_spec(m) for m in all_metrics}

    a = _assignments(source, experiment_id)
    # end of observation: the last timestamp of the tables the metrics read
    tables = sorted({t for s in specs.values() for t in s.tables})
    ends = [source.table(t).ts.max().execute() for t in tables]
    ends = [pd.Timestamp(e) for e in ends if e is not None and not pd.isna(e)]
    if not ends:
        raise CXDataError(f"the tables the metrics read ({', '.join(tables)}) have no rows "
                          "with a time")
    data_end = max(ends)
    cutoff = _epoch_us_of(data_end) - _us(window_days)  # a later t0: window still open

    def count_per_day(units: ibis.Table) -> pd.DataFrame:
        """Counts per variant and closing day, open windows among them, assignment span."""
        return units.group_by(["close_day", "variant"]).aggregate(
            n_all=_.count(), n_open=(_.t0 > cutoff).cast("int64").sum(),
            lo=_.assigned_at.min(), hi=_.assigned_at.max()).execute()

    # One row per customer is what the contract's key (experiment_id, customer_id) promises;
    # a validated source has had it checked on open, otherwise one distinct count checks it.
    unique = _keys_validated(source)
    if not unique:
        raw = a.aggregate(rows=_.count(), customers=_.customer_id.nunique(),
                          no_time=_.assigned_at.isnull().cast("int64").sum()).execute().iloc[0]
        raw = {k: int(raw[k]) for k in ("rows", "customers", "no_time")}
        unique = raw["rows"] == raw["customers"]
    if unique:
        # nobody can be in two variants and no per-customer pass is needed: one scan counts
        # everything (rows without a time form the group without a close_day)
        n_multi = 0
        units = _with_window(a.select("customer_id", "variant", "assigned_at"), window_days)
        per_day = count_per_day(units)
        untimed = per_day.close_day.isna()
        raw = {"rows": int(per_day.n_all.sum()), "no_time": int(per_day.n_all[untimed].sum())}
        per_day = per_day[~untimed].reset_index(drop=True)
        units = units.filter(units.assigned_at.notnull())
    else:  # a broken key means rows > customers >= 0, so there are rows
        # one pass over the assignments, materialised: every check below reads this table
        per_all = materialize(_per_customer_assignment(a), "assigned")
        n_multi = int(per_all.filter(per_all.n_variants > 1).count().execute())
        units = materialize(_with_window(_units(per_all), window_days), "units")
        per_day = count_per_day(units)
    if raw["rows"] == 0:
        raise CXDataError(f"assignments has no rows for experiment {experiment_id!r} "
                          f"(experiments present: {', '.join(experiment_ids(source))})")
    per_day["n"] = per_day.n_all - per_day.n_open
    counts = {str(v): int(n) for v, n in per_day.groupby("variant").n_all.sum().items()}
    open_n = int(per_day.n_open.sum())
    first_assigned, last_assigned = per_day.lo.min(), per_day.hi.max()
    days_assigning = max((pd.Timestamp(last_assigned) - pd.Timestamp(first_assigned))
                         .total_seconds() / 86400, 1.0)
    variants_seen = sorted(counts)
    split, info, notes = _planned_split(source, experiment_id, variants_seen)
    control = control or info.get("control") or "control"
    if control not in counts:
        raise CXDataError(f"control variant {control!r} has no customers in experiment "
                          f"{experiment_id!r} (variants: {', '.join(variants_seen)})")
    variants = [control] + [v for v in list(split) + variants_seen
                            if v != control and v in counts]
    variants = list(dict.fromkeys(variants))
    if len(variants) < 2:
        raise CXDataError(f"experiment {experiment_id!r} has only variant {control!r}")
    unplanned = [v for v in variants_seen if v not in split]
    if unplanned:
        notes.append(f"Variants not in the planned split: {', '.join(unplanned)}.")
        split = {**split, **{v: 0.0 for v in unplanned}}
    srm_chi2, srm_p = st.srm_test({v: counts.get(v, 0) for v in split}, split)

    outside = 0
    start, end = info.get("start"), info.get("end")
    if start is not None or end is not None:
        cond = ibis.literal(False)
        if start is not None:
            cond = cond | (a.assigned_at < pd.Timestamp(start).to_pydatetime())
        if end is not None:
            cond = cond | (a.assigned_at > pd.Timestamp(end).to_pydatetime())
        outside = int(a.filter(cond).count().execute())

    closed = units.filter(units.t0 <= cutoff)
    span = (_epoch_us_of(first_assigned), _epoch_us_of(last_assigned))
    activity = _activity(source, closed, all_metrics, window_days, pre_days, t0_span=span)
    # one aggregation of the metrics, per closing day and variant; the totals are its sums
    by = ["close_day", "variant"]
    daily = _with_sums(per_day.loc[per_day.n > 0, [*by, "n"]], activity, all_metrics, by)
    mom = daily.drop(columns="close_day").groupby("variant", as_index=False).sum()
    arm = {str(r["variant"]): r for _i, r in mom.iterrows()}
    if control not in arm or len(arm) < 2:
        raise CXDataError(f"experiment {experiment_id!r}: no customer's {window_days:g}-day "
                          f"window has closed by the end of the data ({data_end:%Y-%m-%d})")
    treatments = [v for v in variants if v != control and v in arm]

    rows = []
    cuped_not_applied: dict[str, str] = {}
    for m in all_metrics:
        s = specs[m]
        role = ("primary" if m == primary_metric else "secondary" if m in secondary
                else "guardrail")
        c = _moments_of(arm[control], m)
        theta = None
        if s.has_covariate and variance_reduction:
            arms_m = [_moments_of(arm[v], m) for v in [control, *treatments]]
            try:
                theta = st.cuped_theta(*arms_m)
            except ValueError:
                # the covariate is constant (no pre-period data, or pre_days = 0): CUPED
                # cannot reduce anything, so the unadjusted estimate is reported, and said so
                theta = None
                cuped_not_applied[m] = _no_cuped_reason(s, arms_m, pre_days)
        for v in treatments:
            t = _moments_of(arm[v], m)
            for adj in ([False, True] if theta is not None else [False]):
                base = {"metric": f"{m}_cuped" if adj else m, "base_metric": m,
                        "label": f"{m}, CUPED-adjusted" if adj else m, "role": role,
                        "variant": v, "kind": s.kind, "adjusted": adj,
                        "n_control": int(c.n), "n_treatment": int(t.n)}
                try:
                    e, vr = compare(s, t, c, alpha, adjust=adj, theta=theta)
                except ValueError as err:
                    notes.append(f"{base['label']} ({v}): {err}")
                    rows.append({**base, "method": "not testable", "not_testable": str(err)})
                    continue
                rows.append({**base, "method": e.method, "control_mean": e.control_mean,
                             "treatment_mean": e.treatment_mean, "abs_diff": e.abs_diff,
                             "se": e.se, "abs_ci_low": e.abs_ci[0], "abs_ci_high": e.abs_ci[1],
                             "rel_lift": e.rel_lift, "rel_ci_low": e.rel_ci[0],
                             "rel_ci_high": e.rel_ci[1], "p_value": e.p_value,
                             "variance_reduction": vr,
                             "theta": theta if adj else np.nan, "not_testable": None})
    effects = pd.DataFrame(rows)
    for c in ["control_mean", "treatment_mean", "abs_diff", "se", "abs_ci_low", "abs_ci_high",
              "rel_lift", "rel_ci_low", "rel_ci_high", "p_value", "variance_reduction",
              "theta"]:
        if c not in effects:
            effects[c] = np.nan
    effects["not_testable"] = effects["not_testable"].astype(object).where(
        effects["not_testable"].notna(), None)
    notes.extend(_cuped_notes(cuped_not_applied, specs, pre_days))
    # a relative lift against a base that is zero or negative (e.g. an NPS of -40) reads
    # backwards: st.relative_defined blanks it in every comparison (here and in breakdowns)
    neg = effects.control_mean.notna() & ~effects.control_mean.map(st.relative_defined)
    if neg.any():
        notes.append("Relative lifts are not shown for metrics whose control value is zero "
                     "or negative: " + ", ".join(sorted(set(effects.loc[neg, "base_metric"])))
                     + ".")
    among = [m for m in all_metrics if m in ("nps", "csat")]
    if among:
        # treatment can change who answers a survey (issue 16, item 7)
        notes.append(f"{', '.join(among)} average the answers of respondents, a group the "
                     "treatment can change: read them beside response_rate and the "
                     "per-assigned-customer nps_assigned / csat_satisfied.")
    has_adj = effects.groupby("base_metric")["adjusted"].transform("any")
    effects["reported"] = effects["adjusted"] | ~has_adj
    effects["family"] = effects.role
    effects["p_adjusted"] = np.nan
    for fam in ("primary", "secondary"):
        sel = effects.reported & (effects.family == fam)
        effects.loc[sel, "p_adjusted"] = st.adjust_pvalues(effects.loc[sel, "p_value"], correction)
    g = effects.reported & (effects.family == "guardrail")
    effects.loc[g, "p_adjusted"] = effects.loc[g, "p_value"]
    effects["significant"] = effects.p_adjusted < alpha

    # guardrails: pass / inconclusive / fail against the non-inferiority margin
    guard_df = _guardrail_rows(effects, gspecs, alpha, power)

    balance = _balance(arm, control, treatments, specs)
    checks = _checks(raw, n_multi, outside, open_n, counts, split, srm_chi2, srm_p, balance,
                     start, end, window_days, data_end)

    prim = effects[effects.reported & (effects.role == "primary")]
    c_prim = _moments_of(arm[control], primary_metric)
    spec_p = specs[primary_metric]
    why_not = _not_testable(spec_p, arm, control, treatments, prim, window_days, mde)
    bayes = pd.DataFrame()
    planning = pd.DataFrame(columns=_PLAN_COLS)
    seq = None
    if why_not is None:
        if bayesian:
            bayes = _bayes(prim, arm, control, primary_metric, spec_p, seed)
        planning = _planning(prim, c_prim, spec_p, arm, treatments, alpha, power, mde,
                             days_assigning, variance_reduction)
        if sequential:
            seq = _sequential(daily, primary_metric, spec_p, control, treatments, alpha,
                              tau=abs(mde * _control_level(spec_p, c_prim)))
            if prim.adjusted.any():
                # the looks re-test the raw values: a CUPED theta re-estimated at every
                # look would make the sequence depend on the pre-period fit of each day
                seq.note = (f"The monitor tracks {primary_metric}, unadjusted, at each look; "
                            f"the decision uses {primary_metric}, CUPED-adjusted (the final "
                            "look equals the unadjusted row of the effects table).")
                notes.append(f"Sequential monitoring uses {primary_metric}, unadjusted; the "
                             f"decision uses {primary_metric}, CUPED-adjusted.")
    else:
        notes.append(f"The primary metric ({primary_metric}) is not testable (see the "
                     "decision): monitoring, planning and the Bayesian view are not computed.")
        if sequential:
            seq = Sequential(primary_metric, 0.0, alpha, pd.DataFrame(columns=_SEQ_COLS),
                             estimate=f"{primary_metric}, unadjusted",
                             note="Not run: the primary metric is not testable (see the "
                                  "decision).")
    horizon = _horizon(planned_customers, end, window_days, data_end, int(per_day.n.sum()))
    if horizon["basis"] == "none":
        notes.append(f"No planned horizon: {horizon['text']}; a decision read at an arbitrary "
                     "date is a peek, so record experiments.end or pass planned_customers.")
    decision = _decide(prim, guard_df, srm_p, alpha, mde, planning, why_not, primary_metric,
                       horizon, seq)
    parameters = {"primary_metric": primary_metric, "secondary_metrics": list(secondary),
                  "guardrails": {m: {"direction": g.bad, "margin": g.margin,
                                     "margin_abs": g.margin_abs} for m, g in gspecs.items()},
                  "window_days": window_days, "pre_days": pre_days, "alpha": alpha,
                  "power": power, "mde": mde, "variance_reduction": variance_reduction,
                  "correction": correction, "sequential": sequential,
                  "planned_customers": planned_customers}
    return ExperimentResult(
        experiment_id=experiment_id, name=info.get("name"), hypothesis=info.get("hypothesis"),
        control=control, variants=variants, primary_metric=primary_metric, alpha=alpha,
        correction=correction, effects=effects, checks=checks, balance=balance,
        srm_chi2=srm_chi2, srm_p_value=srm_p, counts=counts, planned_split=split,
        guardrails=guard_df, bayes=bayes, planning=planning, decision=decision,
        sequential=seq, data_end=data_end, window_days=window_days, pre_days=pre_days,
        notes=notes, not_testable_reason=why_not, cuped_not_applied=cuped_not_applied,
        horizon=horizon, parameters=parameters, first_assigned=pd.Timestamp(first_assigned),
        _units=closed, _activity=activity, _min_group_size=min_group_size)


def _no_cuped_reason(spec: MetricSpec, arms: Sequence[st.Moments], pre_days: float) -> str:
    """Why the pre-period covariate of ``spec`` cannot serve CUPED (it has no variance)."""
    if pre_days <= 0:
        return f"pre_days = {pre_days:g} leaves no pre-period"
    pooled = arms[0]
    for a in arms[1:]:
        pooled = pooled + a
    if pooled.sx == 0 and pooled.sxx == 0:
        return (f"no pre-period data: {spec.x} is 0 for every customer in the {pre_days:g} "
                "days before assignment")
    return (f"{spec.x} is {pooled.mean_x:.4g} for every customer in the {pre_days:g} days "
            "before assignment")


def _cuped_notes(skipped: Mapping[str, str], specs: Mapping[str, MetricSpec],
                 pre_days: float) -> list[str]:
    """The CUPED fallbacks in words, one note per kind of reason, naming the metrics."""
    groups: dict[str, list[str]] = {}
    for m, why in skipped.items():
        # "no pre-period data: <covariate> is 0 ..." of several metrics makes one note
        key = "no pre-period data" if why.startswith("no pre-period data") else why
        groups.setdefault(key, []).append(m)
    out = []
    for why, ms in groups.items():
        detail = skipped[ms[0]]
        if why == "no pre-period data" and len(ms) > 1:
            detail = (f"no pre-period data: {', '.join(str(specs[m].x) for m in ms)} are 0 "
                      f"for every customer in the {pre_days:g} days before assignment")
        many = len(ms) > 1
        out.append(f"CUPED not applied to {', '.join(ms)}: {detail}; the unadjusted "
                   f"estimate{'s are' if many else ' is'} reported.")
    return out


def _not_testable(spec: MetricSpec, arm: Mapping[str, Any], control: str,
                  treatments: list[str], prim: pd.DataFrame, window_days: float, mde: float
                  ) -> str | None:
    """Why the primary metric cannot be tested (a sentence without figures that could be
    NaN), or None when it can.

    Not testable: the metric has no variance in any arm (nothing to compare); the control
    level is 0 or undefined (the relative lift, the ``mde`` target and the monitoring scale
    are all relative to it, and a control arm without any outcome usually means the outcome
    is not recorded for it); or no treatment's comparison could be computed."""
    name = spec.name
    ms = [_moments_of(arm[v], name) for v in [control, *treatments]]
    c = ms[0]
    if spec.kind != "ratio" and all(m.var == 0 for m in ms):
        return (f"{name} has no variance: it is {c.mean:.4g} for every customer in every arm "
                f"over the {window_days:g}-day window, so there is nothing to compare")
    if spec.kind == "ratio" and c.sx == 0:
        return (f"no control customer has any {spec.x} in the {window_days:g}-day window, so "
                f"the control's {name} is undefined")
    level = _control_level(spec, c)
    if level == 0:
        return (f"the control's {name} is 0 (all {int(c.n):,} control customers have 0 in the "
                f"{window_days:g}-day window): the relative lift, the {mde:+.0%} target and "
                "the monitoring scale are undefined, and a control arm without any outcome "
                "usually means it is not recorded for that arm; check the data")
    if prim.p_value.isna().all():
        why = "; ".join(dict.fromkeys(str(w) for w in prim.not_testable.dropna()))
        return f"no comparison could be computed ({why or 'no closed window'})"
    return None


def _control_level(spec: MetricSpec, m: st.Moments) -> float:
    """Level of a metric in one arm: its mean, or the ratio of sums for a ratio metric."""
    if spec.kind == "ratio":
        return m.sy / m.sx if m.sx else float("nan")
    return m.mean


def _balance(arm: Mapping[str, Any], control: str, treatments: list[str],
             specs: Mapping[str, MetricSpec]) -> pd.DataFrame:
    """A/A test on the pre-period covariates (Welch), Holm-corrected across them."""
    rows = []
    for m, s in specs.items():
        if not s.has_covariate:
            continue
        c = _moments_of(arm[control], m)
        for v in treatments:
            t = _moments_of(arm[v], m)
            tx, cx = st.Moments(t.n, t.sx, t.sxx), st.Moments(c.n, c.sx, c.sxx)
            try:
                e = st.welch(tx, cx)
            except ValueError:
                continue
            rows.append({"covariate": s.x, "variant": v, "control_mean": e.control_mean,
                         "treatment_mean": e.treatment_mean, "abs_diff": e.abs_diff,
                         "p_value": e.p_value})
    out = pd.DataFrame(rows, columns=["covariate", "variant", "control_mean", "treatment_mean",
                                      "abs_diff", "p_value"])
    out["p_holm"] = st.adjust_pvalues(out.p_value, "holm")
    return out


def _checks(raw: Mapping[str, int], n_multi: int, outside: int, open_n: int, counts: dict[str, int],
            split: dict[str, float], chi2: float, p: float, balance: pd.DataFrame,
            start: Any, end: Any, window_days: float, data_end: pd.Timestamp) -> pd.DataFrame:
    total_w = sum(split.values())
    n = sum(counts.values())
    obs = ", ".join(f"{v} {counts.get(v, 0):,} ({counts.get(v, 0) / n:.1%} vs planned "
                    f"{w / total_w:.1%})" for v, w in split.items())
    min_bal = balance.p_holm.min() if len(balance) else np.nan
    rows = [
        ("sample ratio mismatch", f"chi2 = {chi2:.2f}, p = {p:.2g}",
         "FAIL" if p < SRM_ALPHA else "ok", obs + f"; flagged when p < {SRM_ALPHA}"),
        ("customers in more than one variant", f"{n_multi:,}",
         "warn" if n_multi else "ok", "excluded from the analysis"),
        ("assignments without a time", f"{raw['no_time']:,}",
         "warn" if raw["no_time"] else "ok", "excluded (a customer with another, timed "
                                                  "assignment keeps it)"),
        ("assignments outside the experiment dates", f"{outside:,}",
         "warn" if outside else "ok",
         f"{start:%Y-%m-%d} to {end:%Y-%m-%d}" if start is not None and end is not None
         else "no dates recorded"),
        ("analysis window still open", f"{open_n:,}", "info" if open_n else "ok",
         f"customers assigned less than {window_days:g} days before the end of the data "
         f"({data_end:%Y-%m-%d}) are excluded"),
        ("pre-period balance (A/A)", "n/a" if pd.isna(min_bal) else
         f"smallest Holm p = {min_bal:.2g}",
         "warn" if (not pd.isna(min_bal) and min_bal < 0.01) else "ok",
         "Welch test of each pre-period covariate between arms"),
    ]
    return pd.DataFrame(rows, columns=["check", "value", "status", "detail"])


def _bayes(prim: pd.DataFrame, arm: Mapping[str, Any], control: str, metric: str,
           spec: MetricSpec, seed: int) -> pd.DataFrame:
    rows = []
    c = _moments_of(arm[control], metric)
    for _i, r in prim.iterrows():
        if pd.isna(r.abs_diff):
            continue
        if spec.kind == "proportion" and not r.adjusted:
            pb, ls, lk = st.bayes_proportions(_moments_of(arm[r.variant], metric), c, seed=seed)
            prior = "Beta(1, 1) on each arm's rate (uniform); 200,000 Monte Carlo draws"
        else:
            pb, ls, lk = st.bayes_normal(r.abs_diff, r.se)
            prior = ("flat prior on the difference, normal likelihood of the "
                     + ("CUPED-adjusted " if r.adjusted else "") + "estimate")
        rows.append({"variant": r.variant, "metric": r.metric, "p_treatment_better": pb,
                     "expected_loss_if_ship": ls, "expected_loss_if_keep": lk,
                     "prior": prior})
    return pd.DataFrame(rows)


def _planning(prim: pd.DataFrame, c: st.Moments, spec: MetricSpec, arm: Mapping[str, Any],
              treatments: list[str], alpha: float, power: float, mde: float, days: float,
              variance_reduction: bool) -> pd.DataFrame:
    """MDE reachable with the traffic seen, customers and days needed for ``mde``."""
    base = _control_level(spec, c)
    if spec.kind == "ratio":
        _r, var_mean = st.ratio_mean_var(c)
        unit_var = var_mean * c.n
    else:
        unit_var = c.var
    reduction = 0.0
    if variance_reduction:
        vr = prim["variance_reduction"].dropna()
        reduction = float(vr.mean()) if len(vr) else 0.0
    adj_var = unit_var * (1 - reduction)
    rows = []
    target = abs(mde * base)
    for v in treatments:
        nt = float(arm[v]["n"])
        mde_abs = st.mde(adj_var, adj_var, nt, c.n, alpha, power)
        need = st.sample_size_per_arm(adj_var, target, alpha, power) if target > 0 else np.nan
        per_day = min(nt, c.n) / days
        rows.append({"variant": v, "customers_per_arm": int(min(nt, c.n)),
                     "control_mean": base, "variance_reduction": reduction,
                     "mde_abs_now": mde_abs,
                     "mde_rel_now": mde_abs / base if st.relative_defined(base) else np.nan,
                     "target_rel_mde": mde, "customers_per_arm_needed": math.ceil(need)
                     if np.isfinite(need) else None,
                     "customers_per_arm_per_day": per_day,
                     "days_needed": need / per_day if per_day > 0 else np.nan})
    return pd.DataFrame(rows, columns=_PLAN_COLS)


_PLAN_COLS = ["variant", "customers_per_arm", "control_mean", "variance_reduction",
              "mde_abs_now", "mde_rel_now", "target_rel_mde", "customers_per_arm_needed",
              "customers_per_arm_per_day", "days_needed"]


def _sequential(daily: pd.DataFrame, metric: str, spec: MetricSpec, control: str,
                treatments: list[str], alpha: float, tau: float) -> Sequential:
    """mSPRT at each closing day; ``daily`` holds the moments by close_day and variant."""
    cols = [c for c in daily.columns if c.startswith(f"{metric}__")] + ["n"]
    rows = []
    for v in treatments:
        both = daily[daily.variant.isin([control, v])]
        wide = both.pivot_table(index="close_day", columns="variant", values=cols,
                                aggfunc="sum", fill_value=0.0).sort_index().cumsum()
        for day, r in wide.iterrows():
            t, c = (_moments_of(r.xs(name, level="variant"), metric) for name in (v, control))
            if min(t.n, c.n) < 2:
                continue
            try:
                e, _vr = compare(spec, t, c, alpha)
            except (ValueError, ZeroDivisionError):
                continue
            rows.append({"variant": v, "day": str((pd.Timestamp(0, tz="UTC")
                                                   + pd.Timedelta(days=int(day))).date()),
                         "n_control": int(c.n), "n_treatment": int(t.n),
                         "abs_diff": e.abs_diff, "se": e.se, "ci_low": e.abs_ci[0],
                         "ci_high": e.abs_ci[1], "fixed_p": e.p_value})
    frame = pd.DataFrame(rows, columns=_SEQ_COLS[:9])
    note = None
    if not len(frame):
        note = "No look had two customers per arm with a testable comparison."
    elif not tau > 0:
        note = ("Not run: the mixing scale tau = mde x control level is 0, so no always-valid "
                "p-value exists.")
    if len(frame) and tau > 0:
        parts = []
        for _v, f in frame.groupby("variant", sort=False):
            f = f[f.se > 0].copy()
            p, lo, hi = st.msprt(f.abs_diff.to_numpy(), f.se.to_numpy() ** 2, tau**2, alpha)
            f["always_valid_p"], f["cs_low"], f["cs_high"] = p, lo, hi
            # a confidence sequence is intersected over time: it never widens again
            f["cs_low"] = f["cs_low"].cummax()
            f["cs_high"] = f["cs_high"].cummin()
            parts.append(f)
        frame = pd.concat(parts, ignore_index=True)
    return Sequential(metric, tau, alpha, frame.reindex(columns=_SEQ_COLS),
                      estimate=f"{metric}, unadjusted", note=note)


def _describe(r: pd.Series, alpha: float) -> str:
    """One effect row in words, the metric named as readers do ("conversion,
    CUPED-adjusted"): means, relative lift with interval (the absolute difference with
    its interval when no relative lift is defined), corrected p."""
    ci = f"{1 - alpha:.0%} CI"
    if pd.isna(r.rel_lift):
        lift = f"{r.abs_diff:+.4g}, {ci} {r.abs_ci_low:+.4g} to {r.abs_ci_high:+.4g}"
    else:
        lift = f"{r.rel_lift:+.1%}, {ci} {r.rel_ci_low:+.1%} to {r.rel_ci_high:+.1%}"
    return (f"{r.label}: {r.control_mean:.4g} -> {r.treatment_mean:.4g} "
            f"({lift}; corrected p = {r.p_adjusted:.2g})")


def _horizon(planned_customers: int | None, end: Any, window_days: float,
             data_end: pd.Timestamp, analysed: int) -> dict[str, Any]:
    """Where the test stands against its planned horizon (see :func:`analyze`)."""
    out: dict[str, Any] = {"analysed_customers": int(analysed),
                           "planned_customers": planned_customers, "horizon_date": None}
    if planned_customers is not None:
        reached = analysed >= planned_customers
        out.update(basis="planned_customers", reached=reached,
                   text=(f"{'planned horizon reached' if reached else 'running'} — "
                         f"{analysed:,} of {planned_customers:,} customers"))
    elif end is not None:
        day = pd.Timestamp(end)
        # a naive end (a date) is read as UTC, like every instant of the data contract
        day = (day.tz_localize("UTC") if day.tzinfo is None else day) + pd.Timedelta(
            days=window_days)
        end_ts = pd.Timestamp(data_end)
        reached = (end_ts.tz_localize("UTC") if end_ts.tzinfo is None else end_ts) >= day
        out.update(basis="experiments.end", reached=reached, horizon_date=str(day.date()),
                   text=(f"planned horizon reached ({day:%Y-%m-%d}: experiments.end + "
                         f"{window_days:g} days, when the window of every customer assigned "
                         f"by the end has closed); {analysed:,} customers analysed"
                         if reached else
                         f"running — {analysed:,} customers with a closed window so far; "
                         f"the planned horizon is {day:%Y-%m-%d} (experiments.end + "
                         f"{window_days:g} days), the data end on {data_end:%Y-%m-%d}"))
    else:
        out.update(basis="none", reached=True,
                   text=(f"no planned horizon recorded (experiments.end or planned_customers): "
                         f"the end of the data ({data_end:%Y-%m-%d}) is taken as the horizon"))
    return out


def _guard_text(guard: pd.DataFrame, status: str) -> str:
    rows = guard[guard.status == status]
    return "; ".join(f"{g.metric} ({g.variant}): {g.statement}" for g in rows.itertuples())


def _decide(prim: pd.DataFrame, guard: pd.DataFrame, srm_p: float, alpha: float, mde: float,
            planning: pd.DataFrame, not_testable: str | None = None,
            metric: str = "the primary metric", horizon: Mapping[str, Any] | None = None,
            seq: Sequential | None = None) -> Decision:
    """The decision rule of :func:`analyze` (documented there)."""
    horizon = horizon or {"reached": True, "text": ""}
    if srm_p < SRM_ALPHA:
        return Decision("don't ship", None,
                        f"Sample ratio mismatch (p = {srm_p:.2g}): the assignment is broken, so "
                        "no effect can be trusted. Fix the assignment and re-run the test.")
    failed = guard[guard.status == "fail"]
    unsure = guard[guard.status == "inconclusive"]
    harm = (f"Guardrail failed: {_guard_text(guard, 'fail')}." if len(failed) else "")
    testable = prim.dropna(subset=["p_adjusted"])
    if not_testable is None and testable.empty:
        not_testable = "no comparison could be computed"
    if not_testable is not None:
        untested = f"The primary metric ({metric}) is not testable: {not_testable}."
        if len(failed):  # a harm signal is reported whatever the primary metric does
            return Decision("don't ship", None, f"{harm} {untested}")
        return Decision("not testable", None,
                        f"{untested} No decision can be drawn from this test: make the "
                        "primary metric measurable (or choose one that varies) and re-run.")
    best = testable.sort_values(["p_adjusted", "abs_diff"], ascending=[True, False]).iloc[0]
    effect = _describe(best, alpha)
    if len(failed):
        return Decision("don't ship", None, f"{harm} Primary: {effect}.")
    guards_ok = (f"every guardrail passed: {_guard_text(guard, 'pass')}" if len(guard)
                 else "no guardrails were set")
    if not horizon["reached"]:
        return _decide_early(testable, guard, alpha, horizon, seq, metric, effect, guards_ok)
    pos = testable[(testable.p_adjusted < alpha) & (testable.abs_diff > 0)]
    if len(pos):
        win = pos.sort_values("abs_diff", ascending=False).iloc[0]
        if len(unsure):
            return Decision("keep testing", None,
                            f"{win.variant} improves {_describe(win, alpha)}, but not every "
                            f"guardrail rules out harm beyond its margin: "
                            f"{_guard_text(guard, 'inconclusive')}. Ship only once no harm "
                            "beyond the margins is detected: extend the test or run a "
                            "follow-up sized for the guardrail (or accept that risk "
                            "explicitly).")
        return Decision("ship", str(win.variant), f"{win.variant} improves "
                                                  f"{_describe(win, alpha)}; {guards_ok}.")
    if best.p_adjusted < alpha and best.abs_diff < 0:
        return Decision("don't ship", None, f"The treatment is significantly worse: {effect}.")
    if best.rel_ci_high < mde:
        return Decision("don't ship", None,
                        f"No significant effect, and the interval rules out a lift of "
                        f"{mde:+.0%} or more: {effect}.")
    days = planning.loc[planning.variant == best.variant, "days_needed"]
    more = (f" About {float(days.iloc[0]):,.0f} days of traffic in total would detect a "
            f"{mde:+.0%} lift with the planned power." if len(days) and
            np.isfinite(days.iloc[0]) else "")
    return Decision("keep testing", None,
                    f"Not significant, and the interval still allows a lift of {mde:+.0%}: "
                    f"{effect}.{more}")


def _decide_early(testable: pd.DataFrame, guard: pd.DataFrame, alpha: float,
                  horizon: Mapping[str, Any], seq: Sequential | None, metric: str,
                  effect: str, guards_ok: str) -> Decision:
    """Before the planned horizon: only the always-valid test may stop the test (at
    ``alpha`` / number of treatments), the fixed-horizon p-value is shown for information
    only."""
    k = max(len(testable), 1)
    level = alpha / k
    running = f"Running — {horizon['text'].removeprefix('running — ')}."
    info = (f" The fixed-horizon estimate so far ({effect}) is not a decision: a p-value "
            "read before the planned horizon is a peek.")
    if seq is None or not len(seq.frame.dropna(subset=["always_valid_p"])):
        return Decision("keep running", None,
                        f"{running} The always-valid test is not available"
                        f"{' (' + seq.note + ')' if seq is not None and seq.note else ''}, so "
                        f"the test runs to its horizon.{info}")
    last = seq.frame.dropna(subset=["always_valid_p"]).groupby("variant").tail(1)
    hits = last[last.always_valid_p < level]
    worse = hits[hits.cs_high < 0]
    better = hits[hits.cs_low > 0]
    where = f"always-valid p below {level:.3g} (alpha / {k} treatment{'s' if k > 1 else ''})"
    if len(worse):
        w = worse.iloc[0]
        return Decision("don't ship", None,
                        f"Stopped early on the always-valid test: {w.variant} is worse on "
                        f"{metric} ({where}: p = {w.always_valid_p:.2g}, confidence sequence "
                        f"{w.cs_low:+.4g} to {w.cs_high:+.4g}). {running}")
    if len(better):
        b = better.sort_values("abs_diff", ascending=False).iloc[0]
        sure = (f"{where}: p = {b.always_valid_p:.2g}, confidence sequence {b.cs_low:+.4g} "
                f"to {b.cs_high:+.4g}")
        if (guard.status == "inconclusive").any():
            return Decision("keep running", None,
                            f"{running} {b.variant} is better on {metric} ({sure}), but not "
                            f"every guardrail rules out harm beyond its margin yet: "
                            f"{_guard_text(guard, 'inconclusive')}.")
        return Decision("ship", str(b.variant),
                        f"Stopped early on the always-valid test: {b.variant} improves "
                        f"{metric} ({sure}); {guards_ok}. {running}")
    p = float(last.always_valid_p.min())
    return Decision("keep running", None,
                    f"{running} Before the horizon only the always-valid test can decide; its "
                    f"p = {p:.2g} (needs < {level:.3g}).{info}")


# --------------------------------------------------------------------------- learning log

LOG_COLUMNS = ["experiment_id", "source_fingerprint", "looked_at", "name", "hypothesis",
               "decision", "variant", "primary_metric", "abs_diff", "abs_ci_low", "abs_ci_high",
               "rel_lift", "rel_ci_low", "rel_ci_high", "p_adjusted", "srm_p_value",
               "customers", "data_end", "horizon", "guardrails", "parameters", "reason"]
#: The key of a log row: one look at one experiment on one source.
LOG_KEY = ["experiment_id", "source_fingerprint", "looked_at"]


def log_learning(result: ExperimentResult, path: str | Path | None = None,
                 fingerprint: str | None = None, looked_at: Any = None) -> pd.DataFrame:
    """Append this look at the experiment to a CSV learning log (append-only).

    Every look is kept, so the log shows how often and when a test was read (peeking is
    visible) and what each look concluded. A row is keyed by experiment id, source
    fingerprint and look time (``looked_at``); only a row with the same key is replaced (the
    same look written twice), no row is ever removed. Each row records the decision, the
    primary effect, ``data_end`` (end of the data analysed), ``horizon`` (where the test
    stood against its planned horizon), ``guardrails`` (JSON: per guardrail its status,
    margin and interval) and ``parameters`` (JSON: the analysis parameters). Rows of a log
    written before these columns existed are kept with the new columns empty. Written
    atomically.

    Parameters
    ----------
    result : ExperimentResult
        The evaluated experiment.
    path : path-like, optional
        The CSV file; default ``learning_log.csv`` in :func:`cxanalysis.results.output_dir`
        (the run's ``--out`` folder under ``cxanalysis report``, else ``../reports``).
    fingerprint : str, optional
        The source's fingerprint (``Source.fingerprint``); empty when not given.
    looked_at : timestamp-like, optional
        Time of the look (UTC); default now. Pass it to make a write reproducible.

    Returns
    -------
    DataFrame
        The whole log, sorted by experiment id, fingerprint and look time.
    """
    import json

    from cxanalysis.files import atomic_write
    from cxanalysis.results import dumps, output_dir

    path = Path(path) if path is not None else output_dir() / "learning_log.csv"
    fp = fingerprint or ""
    when = pd.Timestamp.now(tz="UTC") if looked_at is None else pd.Timestamp(looked_at)
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    look = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    p = result.primary(result.decision.variant) if result.decision.variant else result.primary()
    guards = getattr(result, "guardrails", pd.DataFrame())
    guard_json = {f"{g.metric}@{g.variant}": {
        "status": g.status, "bad_direction": g.bad_direction,
        "margin_abs": g.margin_abs, "abs_ci": [g.abs_ci_low, g.abs_ci_high]}
        for g in guards.itertuples()} if len(guards) else {}
    horizon = getattr(result, "horizon", {}) or {}
    row = {"experiment_id": result.experiment_id, "source_fingerprint": fp,
           "looked_at": look, "name": result.name, "hypothesis": result.hypothesis,
           "decision": result.decision.verdict,
           "variant": p.variant, "primary_metric": p.metric, "abs_diff": p.abs_diff,
           "abs_ci_low": p.abs_ci_low, "abs_ci_high": p.abs_ci_high, "rel_lift": p.rel_lift,
           "rel_ci_low": p.rel_ci_low, "rel_ci_high": p.rel_ci_high,
           "p_adjusted": p.p_adjusted, "srm_p_value": result.srm_p_value,
           "customers": sum(result.counts.values()),
           "data_end": str(result.data_end.date()), "horizon": horizon.get("text", ""),
           "guardrails": json.dumps(json.loads(dumps(guard_json)), sort_keys=True),
           "parameters": json.dumps(json.loads(dumps(getattr(result, "parameters", {}))),
                                    sort_keys=True),
           "reason": result.decision.reason}
    if path.exists():
        log = pd.read_csv(path, dtype=str, keep_default_na=False)
        # A log written before these columns existed keeps its rows, with them empty (an
        # unknown source or look time): they never share a key with a new row.
        log = log.reindex(columns=LOG_COLUMNS, fill_value="")
        same = ((log.experiment_id == result.experiment_id) & (log.source_fingerprint == fp)
                & (log.looked_at == look))
        log = log[~same]
    else:
        log = pd.DataFrame(columns=LOG_COLUMNS)
    buf = io.StringIO()
    pd.DataFrame([row], columns=LOG_COLUMNS).to_csv(buf, index=False, float_format="%.6g")
    new = pd.read_csv(io.StringIO(buf.getvalue()), dtype=str, keep_default_na=False)
    log = new if log.empty else pd.concat([log, new], ignore_index=True)
    log = log.sort_values(LOG_KEY, kind="mergesort").reset_index(drop=True)
    buf = io.StringIO()
    log.to_csv(buf, index=False)
    atomic_write(path, buf.getvalue())
    for c in _LOG_NUMERIC:  # the file holds text; the returned table holds numbers
        log[c] = pd.to_numeric(log[c].replace("", np.nan))
    return log


_LOG_NUMERIC = ["abs_diff", "abs_ci_low", "abs_ci_high", "rel_lift", "rel_ci_low",
                "rel_ci_high", "p_adjusted", "srm_p_value", "customers"]


def experiment_ids(source: Source) -> list[str]:
    """Experiments present in ``assignments``."""
    source.require("assignments")
    ids = source.table("assignments").select("experiment_id").distinct().execute()
    return sorted(map(str, ids.experiment_id))


def next_test(result: ExperimentResult, breakdowns: Sequence[Segmented] = ()) -> str:
    """A suggestion for the next iteration, from the decision, the planning figures and
    the breakdowns (a rule, stated in the text, not a model)."""
    d = result.decision
    plan = result.planning
    lines = []
    if result.srm_flagged:
        return ("Fix the assignment (the split does not match the plan) and re-run the same "
                "test before drawing any conclusion.")
    if not result.primary_testable:
        return (f"Make {result.primary_metric} measurable in every arm (or choose a primary "
                f"metric that varies), then re-run {result.experiment_id}: this run cannot "
                "support a decision.")
    hetero = [(s, h) for s in breakdowns for h in s.heterogeneity.itertuples()
              if not pd.isna(h.p_value) and h.p_value < result.alpha]
    if d.verdict == "ship":
        lines.append(f"Ship {d.variant}, then test the next change on the same primary metric.")
    elif d.verdict == "keep running":
        lines.append(f"Keep {result.experiment_id} running to its planned horizon "
                     f"({result.horizon.get('text', '')}); decide then, or earlier only on the "
                     "always-valid test.")
    elif d.verdict == "keep testing" and (result.guardrails.status == "inconclusive").any() \
            and not result.effects.query("role == 'primary' and reported and "
                                         "p_adjusted < @result.alpha and abs_diff > 0").empty:
        g = result.guardrails[result.guardrails.status == "inconclusive"]
        need = [f"{r.metric} about {int(r.customers_per_arm_needed):,} customers per arm"
                for r in g.itertuples() if pd.notna(r.customers_per_arm_needed)]
        pw = result.parameters.get("power", 0.8)
        lines.append("The primary metric improved, but harm beyond the guardrail margin is not "
                     "ruled out for " + ", ".join(g.metric.unique()) + "."
                     + (f" To rule it out (if there is no true harm, with power {pw:.0%}): "
                        + "; ".join(need) + "." if need else ""))
    elif d.verdict == "keep testing" and len(plan):
        p = plan.iloc[0]
        # a relative MDE needs a positive control level, the days a finite sample size
        now = (f"the detectable lift is {p.mde_rel_now:+.1%}" if pd.notna(p.mde_rel_now)
               else f"the detectable difference is {p.mde_abs_now:+.4g}")
        need = (f"; {p.customers_per_arm_needed:,} per arm (about {p.days_needed:,.0f} days "
                f"at the current traffic) are needed for {p.target_rel_mde:+.0%}"
                if pd.notna(p.customers_per_arm_needed) and pd.notna(p.days_needed) else "")
        lines.append(f"Keep {result.experiment_id} running: with {p.customers_per_arm:,} "
                     f"customers per arm {now}{need}"
                     + (f", after a {p.variance_reduction:.0%} variance reduction."
                        if p.variance_reduction > 0.005 else "."))
    else:
        lines.append("Drop this change; record the learning and test a different hypothesis.")
    for s, h in hetero:
        # only where the interaction test says so, and on the shrunk estimates
        best = s.frame[(s.frame.variant == h.variant)].dropna(subset=["shrunk_diff"])
        if len(best):
            top = best.sort_values("shrunk_diff", ascending=False).iloc[0]
            lines.append(f"The effect differs by {s.by} (Cochran's Q p = {h.p_value:.2g}); it "
                         f"is largest for {top.group} ({top.shrunk_diff:+.3g}, shrunk): a "
                         f"follow-up targeted at that group is worth testing.")
    return " ".join(lines)
