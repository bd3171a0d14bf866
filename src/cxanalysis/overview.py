"""What a source holds (notebook 00): tables, volumes over time, channel mix, stages,
feedback scores and experiments. Every figure is aggregated in the engine (Ibis); only the
small aggregates reach pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd
from ibis import _
from matplotlib.ticker import PercentFormatter

from cxanalysis.data import Source, between_days
from cxanalysis.errors import ParameterError
from cxanalysis.formatting import ResultMixin
from cxanalysis.plotting import date_axis, display_label, palette
from cxanalysis.privacy import MIN_GROUP_SIZE, suppress_small_groups
from cxanalysis.schema import STAGES
from cxanalysis.stats import nps_score  # lives in stats; still importable from here

_TIME_COLUMN = {"events": "ts", "orders": "ts", "feedback": "ts", "assignments": "assigned_at",
                "customers": "signup_date", "experiments": "start"}


#: The scale of each feedback score, for axis labels.
_SCALES = {"nps": "0-10", "csat": "1-5", "effort": "1-7"}


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a figure draws: suppressed groups are neither drawn nor named."""
    if "suppressed" not in frame:
        return frame
    return frame[~frame["suppressed"].fillna(False).astype(bool)]


def _axes(ax: plt.Axes | None, figsize: tuple[float, float] = (8, 4)) -> plt.Axes:
    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


@dataclass
class TableSummary(ResultMixin):
    """Rows, distinct customers and time span of every table in a source."""

    frame: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = _axes(ax)
        self.frame.set_index("table")["rows"].plot.barh(ax=ax, logx=True)
        ax.set_xlabel("rows (log scale)")
        ax.set_ylabel("table")
        ax.set_title("Rows per table")
        return ax

    def summary(self) -> str:
        return "; ".join(f"{r.table}: {r.rows:,} rows" for r in self.frame.itertuples())


def table_summary(source: Source) -> TableSummary:
    """Per table: rows, distinct customers (where the table has customer_id) and the first
    and last timestamp of its time column (events/orders/feedback ``ts``, assignments
    ``assigned_at``, customers ``signup_date``)."""
    rows = []
    for name in source.names:
        t = source.table(name)
        aggs = {"rows": t.count()}
        if "customer_id" in t.columns:
            aggs["customers"] = t.customer_id.nunique()
        col = _TIME_COLUMN.get(name)
        if col in t.columns:
            aggs["first"] = t[col].min()
            aggs["last"] = t[col].max()
        got = t.aggregate(**aggs).execute().iloc[0]
        first, last = got.get("first"), got.get("last")
        rows.append({
            "table": name,
            "rows": int(got["rows"]),
            "customers": int(got["customers"]) if "customers" in got else None,
            "first": None if first is None or pd.isna(first) else pd.Timestamp(first).date(),
            "last": None if last is None or pd.isna(last) else pd.Timestamp(last).date(),
        })
    frame = pd.DataFrame(rows, columns=["table", "rows", "customers", "first", "last"])
    frame["customers"] = frame["customers"].astype("Int64")
    return TableSummary(frame)


@dataclass
class VolumeOverTime(ResultMixin):
    """Events per period and channel."""

    frame: pd.DataFrame  # period, channel, events
    freq: str

    def table(self) -> pd.DataFrame:
        return self.frame.pivot(index="period", columns="channel", values="events").fillna(0) \
            .astype(int)

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = _axes(ax, (10, 4))
        t = self.table()
        # matplotlib's own dates (not pandas' period axis) so that date_axis applies
        ax.stackplot(t.index.to_numpy(), t.T.to_numpy(), labels=[str(c) for c in t.columns],
                     colors=palette(len(t.columns)), linewidth=0)
        date_axis(ax)
        ax.set_ylabel(f"events per {self.freq}")
        ax.set_xlabel(f"{self.freq} starting (UTC)")
        ax.set_title(f"Volume by channel, per {self.freq}")
        ax.legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False)
        return ax


def volume_over_time(source: Source, freq: str = "week", start: str | None = None,
                     end: str | None = None) -> VolumeOverTime:
    """Events per ``freq`` ("day", "week" or "month", periods starting Monday / the 1st, UTC)
    and channel, between ``start`` and ``end`` (ISO dates, inclusive)."""
    units = {"day": "D", "week": "W", "month": "M"}
    if freq not in units:
        raise ParameterError(f"freq must be one of {', '.join(units)}, got {freq!r}")
    ev = between_days(source.table("events"), start, end)
    agg = (ev.mutate(period=ev.ts.truncate(units[freq]))
           .group_by(["period", "channel"]).aggregate(events=_.count())
           .order_by(["period", "channel"]).execute())
    period = pd.to_datetime(agg["period"])
    if isinstance(period.dtype, pd.DatetimeTZDtype):
        period = period.dt.tz_convert("UTC").dt.tz_localize(None)
    agg["period"] = period
    return VolumeOverTime(agg, freq)


@dataclass
class ChannelMix(ResultMixin):
    """Events, customers and orders by channel, with shares."""

    frame: pd.DataFrame
    #: groups under it are suppressed; the formatter shows them as "<min_group_size"
    min_group_size: int = MIN_GROUP_SIZE

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = _axes(ax)
        cols = [c for c in ("event_share", "customer_share", "order_share") if c in self.frame]
        f = _shown(self.frame)  # a suppressed channel gets no bar
        f = f.assign(channel=f["channel"].map(display_label)).set_index("channel")[cols]
        f.rename(columns=lambda c: c.replace("_share", "s")).plot.bar(ax=ax)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("% of events / customers / orders")
        ax.set_xlabel("channel")
        ax.set_title("Channel mix")
        return ax


def channel_mix(source: Source, start: str | None = None, end: str | None = None,
                min_group_size: int = MIN_GROUP_SIZE) -> ChannelMix:
    """Per channel: events, distinct customers, orders and revenue (when ``orders`` is
    present), and shares. Channels used by fewer than ``min_group_size`` customers are
    suppressed."""
    ev = between_days(source.table("events"), start, end)
    mix = ev.group_by("channel").aggregate(events=ev.count(),
                                           customers=ev.customer_id.nunique()).execute()
    if source.has("orders"):
        o = between_days(source.table("orders"), start, end)
        om = o.group_by("channel").aggregate(orders=o.count(), revenue=o.amount.sum()).execute()
        mix = mix.merge(om, on="channel", how="outer")
        mix["orders"] = mix["orders"].fillna(0).astype(int)
        mix["revenue"] = mix["revenue"].fillna(0.0)
        mix["order_share"] = mix["orders"] / mix["orders"].sum()
    mix["events"] = mix["events"].fillna(0).astype(int)
    mix["customers"] = mix["customers"].fillna(0).astype(int)
    mix["event_share"] = mix["events"] / mix["events"].sum()
    n_customers = ev.customer_id.nunique().execute()
    mix["customer_share"] = mix["customers"] / n_customers  # customers may use several
    mix = mix.sort_values(["events", "channel"], ascending=[False, True]).reset_index(drop=True)
    mix = suppress_small_groups(mix, "customers", min_group_size)
    return ChannelMix(mix, min_group_size)


@dataclass
class StageCoverage(ResultMixin):
    """How many events and customers each journey stage has."""

    frame: pd.DataFrame
    #: groups under it are suppressed; the formatter shows them as "<min_group_size"
    min_group_size: int = MIN_GROUP_SIZE

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = _axes(ax)
        f = _shown(self.frame)  # a suppressed stage gets no bar
        f = f.assign(stage=f["stage"].map(display_label))
        f.set_index("stage")["customer_share"].plot.bar(ax=ax, color="#1e88e5")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("% of active customers")
        ax.set_xlabel("journey stage")
        ax.set_title("Stage coverage")
        return ax


def stage_coverage(source: Source, start: str | None = None, end: str | None = None,
                   min_group_size: int = MIN_GROUP_SIZE) -> StageCoverage:
    """Events and customers per ``stage`` in journey order (unlabelled events as
    ``(none)``); empty with a note when the events table has no ``stage`` column."""
    ev = between_days(source.table("events"), start, end)
    if "stage" not in ev.columns:
        return StageCoverage(pd.DataFrame(columns=["stage", "events", "customers",
                                                   "customer_share"]), min_group_size)
    agg = (ev.mutate(stage=ev.stage.fill_null("(none)")).group_by("stage")
           .aggregate(events=_.count(), customers=_.customer_id.nunique()).execute())
    total = ev.customer_id.nunique().execute()
    order = {s: i for i, s in enumerate((*STAGES, "(none)"))}
    agg = agg.sort_values("stage", key=lambda s: s.map(order)).reset_index(drop=True)
    agg["customer_share"] = agg["customers"] / total
    return StageCoverage(suppress_small_groups(agg, "customers", min_group_size),
                         min_group_size)


@dataclass
class FeedbackDistributions(ResultMixin):
    """Counts of each score of nps / csat / effort, and the NPS."""

    frame: pd.DataFrame  # score_type, score, answers
    nps: float | None
    answers: dict[str, int]

    def table(self) -> pd.DataFrame:
        return self.frame.pivot(index="score", columns="score_type", values="answers") \
            .fillna(0).astype(int)

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        kinds = list(dict.fromkeys(self.frame["score_type"]))
        if ax is None:
            _, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4 * max(len(kinds), 1), 3))
            axes = list(axes) if len(kinds) > 1 else [axes]
        else:
            axes = [ax] * len(kinds)
        for a, kind in zip(axes, kinds, strict=False):
            part = self.frame[self.frame.score_type == kind]
            a.bar(part["score"], part["answers"], color="#546e7a")
            title = f"{kind} (NPS {self.nps:+.0f})" if kind == "nps" and self.nps is not None \
                else kind
            a.set_title(title)
            a.set_xlabel(f"{kind} score ({_SCALES.get(kind, 'points')})")
            a.set_ylabel("answers")
        return axes[0]

    def summary(self) -> str:
        parts = [f"{k}: {v:,} answers" for k, v in self.answers.items()]
        if self.nps is not None:
            parts.append(f"NPS {self.nps:+.1f}")
        return "; ".join(parts)


def feedback_distributions(source: Source, start: str | None = None, end: str | None = None
                           ) -> FeedbackDistributions:
    """Distribution of every score column present in ``feedback`` (nps 0-10, csat 1-5,
    effort 1-7) and the NPS (promoters 9-10, detractors 0-6)."""
    fb = between_days(source.table("feedback"), start, end)
    parts = []
    answers = {}
    nps = None
    for kind in ("nps", "csat", "effort"):
        if kind not in fb.columns:
            continue
        col = fb[kind]
        d = (fb.filter(col.notnull()).group_by(score=col).aggregate(answers=_.count())
             .order_by("score").execute())
        d.insert(0, "score_type", kind)
        parts.append(d)
        answers[kind] = int(d["answers"].sum())
        if kind == "nps" and answers[kind]:
            promoters = int(d.loc[d.score >= 9, "answers"].sum())
            detractors = int(d.loc[d.score <= 6, "answers"].sum())
            nps = nps_score(promoters, detractors, answers[kind])
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["score_type", "score", "answers"])
    frame["score"] = frame["score"].astype(int)
    return FeedbackDistributions(frame, nps, answers)


@dataclass
class ExperimentsPresent(ResultMixin):
    """Experiments found in ``assignments``: variants, customers and assignment span."""

    frame: pd.DataFrame
    #: groups under it are suppressed; the formatter shows them as "<min_group_size"
    min_group_size: int = MIN_GROUP_SIZE

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = _axes(ax)
        f = _shown(self.frame)  # a suppressed variant gets no bar
        pivot = f.pivot(index="experiment_id", columns="variant", values="customers")
        pivot.astype(float).plot.barh(ax=ax, stacked=True)
        ax.set_xlabel("customers")
        ax.set_ylabel("experiment")
        ax.set_title("Experiments: customers per variant")
        return ax


def experiments_present(source: Source, min_group_size: int = MIN_GROUP_SIZE
                        ) -> ExperimentsPresent:
    """Per experiment and variant: customers, first and last assignment, and the
    experiment's name when the ``experiments`` table is present."""
    a = source.table("assignments")
    agg = (a.group_by(["experiment_id", "variant"])
           .aggregate(customers=a.customer_id.nunique(), first=a.assigned_at.min(),
                      last=a.assigned_at.max())
           .order_by(["experiment_id", "variant"]).execute())
    for col in ("first", "last"):
        agg[col] = pd.to_datetime(agg[col]).dt.date
    if source.has("experiments"):
        ex = source.table("experiments")
        if "name" in ex.columns:
            names = ex.select("experiment_id", "name").execute()
            agg = agg.merge(names, on="experiment_id", how="left")
    return ExperimentsPresent(suppress_small_groups(agg, "customers", min_group_size,
                                                    columns=["customers"]), min_group_size)
