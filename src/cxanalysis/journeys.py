"""Journeys across channels: paths, transitions, flows and stage durations.

A *journey* is a customer's run of touches (events of the stages awareness, discovery and
consideration by default), ordered by time, that ends with a conversion event
(``purchase``, read whatever its stage) or with ``inactivity_days`` without a touch.

The conversion event is the journey's outcome, **not a touch**: it is not part of the path.
Nor, by default, are the other events of the purchase stage (``checkout``): they are the act
of buying. Were they touches, every converting path would end in a channel where one can
buy (web, app, store, call centre), so email and social could never close a converting path
*by construction*, while non-converting paths could end anywhere; last-touch and Markov
credit would then reward the channels of checkout, not of persuasion. Pass
``stages=PRE_PURCHASE_STAGES`` to count checkout events as touches. A conversion without any
touch before it (in its journey) gets the path ``(no touch)``. Touches at the
same instant are ordered with a conversion last, otherwise by channel then event name, so
results never depend on the input's row order. Its *path* is
the sequence of channels touched, consecutive repeats of a channel collapsed
(``social > web > web > app`` becomes ``social > web > app``).

Sessionizing and path building run in the engine (Ibis window functions and an ordered
``group_concat``, or on engines without one, such as Spark, a list collected over an ordered
window: :func:`cxanalysis.engines.supports`); only the counts of distinct paths come back to pandas, which is all that
path analysis and attribution (:mod:`cxanalysis.attribution`) need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import ibis
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from ibis import _

from cxanalysis.data import CXDataError, Labels, LabelsLike, Source, between_days, epoch_micros
from cxanalysis.engines import quantile, quantile_note, supports
from cxanalysis.errors import ParameterError
from cxanalysis.formatting import ResultMixin
from cxanalysis.plotting import display_label
from cxanalysis.plotting import palette as cb_palette
from cxanalysis.privacy import MIN_GROUP_SIZE, suppress_small_groups
from cxanalysis.schema import STAGES

SEP = " > "
START, CONVERSION, NULL = "(start)", "(conversion)", "(null)"
#: The path of a journey that is a conversion with no touch before it.
NO_TOUCH = "(no touch)"
PRE_PURCHASE_STAGES = ("awareness", "discovery", "consideration", "purchase")
#: Stages whose events are touches by default: the purchase stage (checkout, purchase) is
#: the act of buying, not a touch that leads to it.
TOUCH_STAGES = ("awareness", "discovery", "consideration")


@dataclass
class PathCounts(ResultMixin):
    """Distinct channel paths with how many journeys followed them and how many converted.

    ``frame`` holds every path (it stays in memory for attribution); what is shown —
    :meth:`table`, :meth:`summary`, :meth:`plot`, :meth:`combinations`, :meth:`plot_flow`,
    :meth:`plot_transitions` — suppresses groups of fewer than ``min_group_size`` journeys
    (the notebook's ``min_group_size`` when given to :func:`journey_paths`; each method
    also takes it as an argument): tables keep their rows with the figures missing and
    ``suppressed`` true, ranked after the others (:mod:`cxanalysis.privacy`); plots and the
    summary leave them out."""

    frame: pd.DataFrame  # path, journeys, conversions
    inactivity_days: float
    min_group_size: int = MIN_GROUP_SIZE
    #: Per channel (index): distinct customers with a converted journey whose first channel
    #: (``first_touch``), last channel (``last_touch``) or any channel (``any_touch``) it is;
    #: the group sizes behind attribution credit. None when unknown (a hand-made frame).
    support: pd.DataFrame | None = None
    #: Per customer (an integer code, never the id) and path: ``customer``, ``path``,
    #: ``journeys``, ``conversions``; lets attribution resample customers, not journeys.
    #: None when unknown (a hand-made frame).
    by_customer: pd.DataFrame | None = None

    def _k(self, min_group_size: int | None) -> int:
        return self.min_group_size if min_group_size is None else min_group_size

    def table(self, top: int | None = 15, min_group_size: int | None = None) -> pd.DataFrame:
        """The most common paths with their conversion rate; paths followed by fewer than
        ``min_group_size`` journeys are suppressed (ranked last, figures missing)."""
        f = self.frame.copy()
        f["conversion"] = f["conversions"] / f["journeys"]
        f = f.sort_values(["journeys", "path"], ascending=[False, True])
        # sorted by journeys, so the suppressed rows are already the last ones
        f = suppress_small_groups(f, "journeys", self._k(min_group_size))
        return (f.head(top) if top else f).reset_index(drop=True)

    def _shown(self, top: int | None, min_group_size: int | None) -> pd.DataFrame:
        """:meth:`table` without its suppressed rows (what plots and sentences show)."""
        f = self.table(top=None, min_group_size=min_group_size)
        f = f[~f["suppressed"]]
        return (f.head(top) if top else f).reset_index(drop=True)

    @property
    def journeys(self) -> int:
        return int(self.frame["journeys"].sum())

    @property
    def conversions(self) -> int:
        return int(self.frame["conversions"].sum())

    @property
    def channels(self) -> list[str]:
        return sorted({c for p in self.frame["path"] for c in p.split(SEP)})

    def summary(self, min_group_size: int | None = None) -> str:
        head = (f"{self.journeys:,} journeys ({self.conversions:,} converted) over "
                f"{len(self.frame):,} distinct channel paths; ")
        shown = self._shown(top=1, min_group_size=min_group_size)
        if shown.empty:
            return head + (f"no path is followed by {self._k(min_group_size)} or more "
                           "journeys.")
        top = shown.iloc[0]
        return head + (f"the most common is {top.path} ({int(top.journeys):,} journeys, "
                       f"{top.conversion:.0%} convert).")

    def plot(self, ax: plt.Axes | None = None, top: int = 12,
             min_group_size: int | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4.5))[1]
        f = self._shown(top=top, min_group_size=min_group_size).iloc[::-1]
        ax.barh(f["path"], f["journeys"], color="#90caf9", label="journeys")
        ax.barh(f["path"], f["conversions"], color="#1e88e5", label="converted")
        ax.set_xlabel("journeys")
        ax.set_ylabel("channel path")
        ax.set_title("Top channel paths")
        ax.legend(frameon=False, loc="lower right")
        return ax

    def combinations(self, min_group_size: int | None = None, top: int = 10) -> pd.DataFrame:
        """Channel sets (order ignored) with journeys, conversions and conversion rate,
        ranked by conversions: the combinations that precede conversion. Sets of fewer than
        ``min_group_size`` journeys are suppressed and ranked last."""
        f = self.frame.assign(channels=[" + ".join(sorted(set(p.split(SEP))))
                                        for p in self.frame["path"]])
        g = f.groupby("channels", as_index=False)[["journeys", "conversions"]].sum()
        g["conversion"] = g["conversions"] / g["journeys"]
        g = g.sort_values(["conversions", "channels"], ascending=[False, True])
        g = suppress_small_groups(g, "journeys", self._k(min_group_size))
        g = g.sort_values("suppressed", kind="stable")
        return g.head(top).reset_index(drop=True)

    def transitions(self) -> pd.DataFrame:
        """First-order transition counts between ``(start)``, channels, ``(conversion)`` and
        ``(null)`` (journeys that ended without converting)."""
        counts: dict[tuple[str, str], int] = {}
        for path, n, conv in self.frame[["path", "journeys", "conversions"]].itertuples(
                index=False):
            states = [START, *path.split(SEP)]
            for a, b in zip(states[:-1], states[1:], strict=True):
                counts[(a, b)] = counts.get((a, b), 0) + int(n)
            if conv:
                counts[(states[-1], CONVERSION)] = counts.get((states[-1], CONVERSION), 0) + \
                    int(conv)
            if n - conv:
                counts[(states[-1], NULL)] = counts.get((states[-1], NULL), 0) + int(n - conv)
        s = pd.Series(counts, dtype=float)
        s.index = pd.MultiIndex.from_tuples(s.index, names=["from", "to"])
        states = [START, *self.channels]
        return s.unstack(fill_value=0).reindex(index=states, columns=[*self.channels,
                                                                       CONVERSION, NULL],
                                               fill_value=0)

    def transition_matrix(self) -> pd.DataFrame:
        """Transition probabilities (rows sum to 1)."""
        t = self.transitions()
        return t.div(t.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)

    def plot_transitions(self, ax: plt.Axes | None = None,
                         min_group_size: int | None = None) -> plt.Axes:
        """Heatmap of :meth:`transition_matrix`; rows of states left fewer than
        ``min_group_size`` times are blank."""
        import seaborn as sns

        ax = ax if ax is not None else plt.subplots(figsize=(8, 5))[1]
        small = self.transitions().sum(axis=1) < self._k(min_group_size)
        probs = self.transition_matrix().mask(small, axis=0)
        probs = probs.rename(index=display_label, columns=display_label)
        sns.heatmap(probs, annot=True, fmt=".2f", cmap="Blues", ax=ax, cbar=False)
        ax.set_xlabel("next state")
        ax.set_ylabel("from state")
        ax.set_title("Channel transition probabilities (share of moves)")
        return ax

    def plot_flow(self, ax: plt.Axes | None = None, depth: int = 3,
                  min_group_size: int | None = None) -> plt.Axes:
        """A Sankey-style flow: channel at touch 1..``depth`` then the outcome; band widths
        are journeys (flows smaller than ``min_group_size`` journeys are not drawn)."""
        min_group_size = self._k(min_group_size)
        ax = ax if ax is not None else plt.subplots(figsize=(10, 5))[1]
        cols: list[dict[str, float]] = [dict() for _ in range(depth + 1)]
        links: dict[tuple[int, str, str], float] = {}
        for path, n, conv in self.frame[["path", "journeys", "conversions"]].itertuples(
                index=False):
            chans = path.split(SEP)[:depth]
            for outcome, w in ((CONVERSION, conv), (NULL, n - conv)):
                if w <= 0:
                    continue
                nodes = [*chans, outcome]
                # pad short paths so the outcome sits in the last column
                while len(nodes) < depth + 1:
                    nodes.insert(-1, nodes[-2])
                for i, node in enumerate(nodes):
                    cols[i][node] = cols[i].get(node, 0) + w
                for i in range(depth):
                    key = (i, nodes[i], nodes[i + 1])
                    links[key] = links.get(key, 0) + w
        total = sum(cols[0].values())
        gap = 0.02 * total
        pos: list[dict[str, list[float]]] = []
        names = sorted({k for c in cols for k in c})
        palette = dict(zip(names, cb_palette(len(names)), strict=True))
        for i, col in enumerate(cols):
            y = 0.0
            pos.append({})
            for node in sorted(col, key=lambda k: (-col[k], k)):
                pos[i][node] = [y, y]  # [top, running offset for links]
                if col[node] >= min_group_size:  # a small group is neither drawn nor named
                    ax.add_patch(plt.Rectangle((i - 0.04, y), 0.08, col[node],
                                               color=palette[node]))
                    ax.text(i + 0.06, y + col[node] / 2, display_label(node), va="center",
                            fontsize=8)
                y += col[node] + gap
        out_off = {(i, k): v[0] for i, p in enumerate(pos) for k, v in p.items()}
        in_off = dict(out_off)
        for (i, a, b), w in sorted(links.items(), key=lambda kv: (kv[0][0], -kv[1])):
            if w < min_group_size:
                continue
            y0, y1 = out_off[(i, a)], in_off[(i + 1, b)]
            xs = np.linspace(i + 0.04, i + 0.96, 30)
            s = (1 - np.cos(np.linspace(0, np.pi, 30))) / 2
            ax.fill_between(xs, y0 + (y1 - y0) * s, y0 + w + (y1 - y0) * s,
                            color=palette[a], alpha=0.35, linewidth=0)
            out_off[(i, a)] += w
            in_off[(i + 1, b)] += w
        ax.set_xlim(-0.2, depth + 0.6)
        ax.set_ylim(0, max(sum(c.values()) + gap * len(c) for c in cols))
        ax.invert_yaxis()
        ax.set_xticks(range(depth + 1), [f"touch {i + 1}" for i in range(depth)] + ["outcome"])
        ax.set_yticks([])
        ax.set_xlabel("position in the journey")
        ax.set_ylabel("journeys (band height)")
        ax.set_title("Flow of journeys across channels")
        for spine in ax.spines.values():
            spine.set_visible(False)
        return ax


def _journey_events(source: Source | ibis.Table, start: str | None, end: str | None,
                    stages: Sequence[str] | None, also: str | None = None) -> ibis.Table:
    """Events in the dates and ``stages`` (None: all), plus every ``also`` event (the
    conversion event, which ends journeys whatever its stage)."""
    ev = between_days(source.table("events") if isinstance(source, Source) else source,
                      start, end)
    if stages is not None:
        if "stage" not in ev.columns:
            raise CXDataError("events has no 'stage' column: pass stages=None to use every "
                              "event as a journey touch")
        keep = ev.stage.isin(list(stages))
        ev = ev.filter(keep | (ev.event == also) if also is not None else keep)
    return ev


def sessionize(source: Source | ibis.Table, start: str | None = None, end: str | None = None,
               inactivity_days: float = 7, conversion_event: str = "purchase",
               stages: Sequence[str] | None = TOUCH_STAGES) -> ibis.Table:
    """Per journey (an Ibis expression, nothing is executed): ``customer_id``, ``journey``
    (number within the customer), ``path``, ``converted``, ``started``, ``ended``,
    ``touches``."""
    ev = _journey_events(source, start, end, stages, also=conversion_event)
    is_conv = (ev.event == conversion_event).cast("int8")
    ev = ev.mutate(is_conv=is_conv, us=epoch_micros(ev.ts))
    # Touches tied on time are ordered by conversion last, then channel and event name, so
    # paths do not depend on the engine's row order; rows tied on all four are
    # interchangeable (a path uses only the channel).
    order = ["us", "is_conv", "channel", "event"]
    w = ibis.window(group_by="customer_id", order_by=order)
    ev = ev.mutate(prev_us=ev.us.lag().over(w), prev_conv=ev.is_conv.lag().over(w),
                   prev_ch=ev.channel.lag().over(w))
    gap = ev.us - ev.prev_us
    new = (ev.prev_us.isnull() | (gap > inactivity_days * 86_400 * 1_000_000)
           | (ev.prev_conv == 1))
    ev = ev.mutate(new=new.cast("int64"))
    # The conversion event is the outcome, not a touch: it is left out of the path (it is
    # always the last row of its journey, so the collapse of repeats is unaffected).
    ev = ev.mutate(journey=ev.new.sum().over(
        ibis.window(group_by="customer_id", order_by=order, rows=(None, 0))),
        keep=((ev.new == 1) | (ev.channel != ev.prev_ch)) & (ev.is_conv == 0))
    if supports(ev, "ordered_group_concat"):
        path = _.channel.group_concat(SEP, where=_.keep, order_by=[_[c] for c in order])
    else:
        # Engines without ordered aggregation (Spark, ClickHouse): the kept channels are
        # collected over the journey's window in time order (every row holds the list) and
        # one row's list is joined; the same paths (tested on Spark in tests/engines/).
        whole = ibis.window(group_by=["customer_id", "journey"], order_by=order,
                            rows=(None, None))
        ev = ev.mutate(chs=ev.channel.collect(where=ev.keep).over(whole))
        path = _.chs.arbitrary().join(SEP)
    j = ev.group_by(["customer_id", "journey"]).aggregate(
        path=path,
        converted=_.is_conv.max() == 1,
        started=_.ts.min(), ended=_.ts.max(), touches=(1 - _.is_conv).sum())
    # a conversion with no touch before it in the journey
    return j.mutate(path=ibis.ifelse(j.path.isnull() | (j.path == ""), NO_TOUCH, j.path))


def journey_paths(source: Source | ibis.Table, start: str | None = None,
                  end: str | None = None, inactivity_days: float = 7,
                  conversion_event: str = "purchase",
                  stages: Sequence[str] | None = TOUCH_STAGES,
                  min_group_size: int = MIN_GROUP_SIZE) -> PathCounts:
    """Counts of journeys and conversions per distinct channel path (see the module
    docstring for the journey definition).

    Parameters
    ----------
    source : Source or ibis.Table
    start, end : str, optional
        First and last day (ISO dates, inclusive, UTC) of touches considered.
    inactivity_days : float
        A gap longer than this ends a journey without conversion.
    conversion_event : str
        The event that converts (and ends) a journey.
    stages : sequence of str or None
        Stages whose events are touches (None: every event).
    min_group_size : int
        The smallest group of journeys the result shows (its tables, summary and plots).
    """
    j = sessionize(source, start, end, inactivity_days, conversion_event, stages)
    # per customer and path; the customer id is replaced by a code in the engine
    per = j.group_by(["customer_id", "path"]).aggregate(
        journeys=_.count(), conversions=_.converted.cast("int64").sum())
    per = per.mutate(customer=ibis.dense_rank().over(ibis.window(order_by="customer_id")))
    by_customer = per.drop("customer_id").order_by(["customer", "path"]).execute()
    if by_customer.empty:
        raise CXDataError("no journeys: the events hold no touches in the chosen stages "
                          "and dates")
    for col in ("customer", "journeys", "conversions"):
        by_customer[col] = by_customer[col].astype(int)
    by_customer = by_customer[["customer", "path", "journeys", "conversions"]]
    paths = (by_customer.groupby("path", as_index=False)[["journeys", "conversions"]].sum()
             .sort_values(["journeys", "path"], ascending=[False, True])
             .reset_index(drop=True))
    channels = sorted({c for p in paths["path"] for c in p.split(SEP)})
    return PathCounts(paths, inactivity_days, min_group_size, _support(j, channels),
                      by_customer)


def _support(journeys: ibis.Table, channels: list[str]) -> pd.DataFrame:
    """Distinct customers with a converted journey touching each channel first, last or
    anywhere (one aggregate query in the engine)."""
    conv = journeys.filter(journeys.converted)
    chans = conv.path.split(SEP)
    # the last element as length - 1: Ibis 12 compiles a literal -1 to element 0 on Spark
    kinds = {"first_touch": lambda c: chans[0] == c,
             "last_touch": lambda c: chans[chans.length() - 1] == c,
             "any_touch": lambda c: chans.contains(c)}
    aggs = {f"{kind}__{i}": conv.customer_id.nunique(where=test(c))
            for kind, test in kinds.items() for i, c in enumerate(channels)}
    row = conv.aggregate(**aggs).execute().iloc[0]
    return pd.DataFrame({kind: [int(row[f"{kind}__{i}"]) for i in range(len(channels))]
                         for kind in kinds}, index=pd.Index(channels, name="channel"))


@dataclass
class StageDurations(ResultMixin):
    """Hours a journey spends in each stage before moving on to a later one (see
    :func:`stage_durations`), by group (persona, channel, ...)."""

    frame: pd.DataFrame
    min_group_size: int = MIN_GROUP_SIZE
    #: e.g. that the hours are approximate quantiles (engines without exact ones)
    notes: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        shown = self.frame[~self.frame["suppressed"]]
        pivot = shown.assign(group=shown["group"].map(display_label)) \
            .pivot(index="stage", columns="group", values="median_hours")
        pivot = pivot.reindex([s for s in STAGES if s in pivot.index])
        pivot.plot.bar(ax=ax)
        ax.set_ylabel("median hours until a later stage")
        ax.set_xlabel("journey stage")
        ax.set_title("Time spent in each stage")
        ax.legend(frameon=False, fontsize=8, bbox_to_anchor=(1, 1))
        return ax


def stage_durations(source: Source | ibis.Table, by: str | LabelsLike = "channel",
                    column: str | None = None, start: str | None = None,
                    end: str | None = None, inactivity_days: float = 7,
                    min_group_size: int = MIN_GROUP_SIZE) -> StageDurations:
    """Median and p90 hours spent in each stage of a journey before moving on.

    Journeys here are a customer's runs of events of every stage (awareness through
    retention) separated by more than ``inactivity_days`` without an event. The time in
    stage ``s`` of a journey is the time from the journey's **first event of stage s** to its
    **first event of any later stage** (in the order of :data:`cxanalysis.schema.STAGES`) at
    or after that moment. It is never negative: an event of a later stage that happened
    *before* the customer entered ``s`` (a loyalty login before the delivery, say) does not
    count as moving on. Journeys that never reach a later stage after entering ``s`` (the
    last stage of every journey) give no time for ``s``.

    Parameters
    ----------
    source : Source or ibis.Table
        A source (its ``events``, which need a ``stage`` column) or an events table.
    by : "channel" or labels
        Group by the channel of the stage's first event (ties on time: the first channel
        name), or by per-customer labels (a :class:`cxanalysis.data.Labels` or anything
        :meth:`Labels.of <cxanalysis.data.Labels.of>` takes, with ``column`` naming the
        label column of a table); customers without a label are the group "(unknown)".
    start, end : str, optional
        First and last day (ISO dates, inclusive, UTC) of events considered.
    inactivity_days : float
        A gap longer than this (in days) starts a new journey.
    min_group_size : int
        Stage x group cells with fewer customers are suppressed (row kept, figures missing,
        ``suppressed`` true; see :mod:`cxanalysis.privacy`).

    Returns
    -------
    StageDurations
        Per stage and group: ``journeys``, ``customers``, ``median_hours``, ``p90_hours``
        (hours), ``suppressed``.
    """
    ev = _journey_events(source, start, end, stages=None)
    if "stage" not in ev.columns:
        raise CXDataError("events has no 'stage' column: stage durations need it")
    order = ibis.cases(*[(ev.stage == s, i) for i, s in enumerate(STAGES)], else_=None)
    ev = ev.filter(ev.stage.notnull()).mutate(stage_no=order, us=epoch_micros(ev.ts))
    # ties on time: the earlier stage first (so a later stage at the same instant counts as
    # moving on), then channel and event, so results do not depend on row order
    ts_order = ["us", "stage_no", "channel", "event"]
    w = ibis.window(group_by="customer_id", order_by=ts_order)
    ev = ev.mutate(prev_us=ev.us.lag().over(w))
    new = ev.prev_us.isnull() | (ev.us - ev.prev_us > inactivity_days * 86_400 * 1_000_000)
    ev = ev.mutate(journey=new.cast("int64").sum().over(
        ibis.window(group_by="customer_id", order_by=ts_order, rows=(None, 0))))
    # per event: the first event of a stage later than its own, at or after it
    ahead = ibis.window(group_by=["customer_id", "journey"], order_by=ts_order,
                        rows=(0, None))
    ev = ev.mutate(next_us=ibis.cases(*[
        (ev.stage_no == i, ibis.ifelse(ev.stage_no > i, ev.us, None).min().over(ahead))
        for i in range(len(STAGES) - 1)], else_=None))
    # the stage's first event (ties: first channel name) and when the journey moved on
    key = ["customer_id", "journey", "stage_no"]
    ev = ev.mutate(first_us=ev.us.min().over(ibis.window(group_by=key)))
    firsts = ev.filter(ev.us == ev.first_us).group_by([*key, "stage"]).aggregate(
        first_us=_.first_us.min(), channel=_.channel.min(), next_us=_.next_us.min())
    durs = firsts.filter(firsts.next_us.notnull()).mutate(
        hours=(_.next_us - _.first_us) / 3.6e9)
    if isinstance(by, str):
        if by != "channel":
            raise ParameterError(f"by must be 'channel' or per-customer labels, not {by!r}")
        durs = durs.mutate(group=durs.channel)
    else:
        durs = Labels.of(by, column).join(durs)
    agg = (durs.group_by(["stage", "stage_no", "group"])
           .aggregate(journeys=_.count(), customers=_.customer_id.nunique(),
                      median_hours=quantile(durs.hours, 0.5),
                      p90_hours=quantile(durs.hours, 0.9))
           .order_by(["stage_no", "group"]).execute())
    agg = suppress_small_groups(agg.drop(columns="stage_no").reset_index(drop=True),
                                "customers", min_group_size)
    return StageDurations(agg, min_group_size,
                          notes=quantile_note(durs, "median and p90 hours"))
