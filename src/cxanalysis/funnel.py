"""Ordered funnels with a conversion window, with ClickHouse ``windowFunnel`` semantics.

Semantics (full text with examples: ``docs/funnel.md``)
--------------------------------------------------------
Each customer's events are ordered by ``(ts, step index)`` (step index 0 for non-step
events): at equal timestamps a later step counts as after an earlier one, and in
``strict_order`` a non-step event as before the steps. Times are compared in whole
microseconds, so a gap equal to a fractional window is inside it. With steps ``s1..sn`` and
window ``W`` seconds (default 7 days):

``ordered`` (default, ClickHouse's default mode)
    The customer reaches step ``k`` iff there are events ``e1 < e2 < ... < ek`` matching steps
    ``1..k`` with ``ts(ek) - ts(e1) <= W``. The window runs from step 1 (not between
    consecutive steps); other events in between are ignored; a later step-1 event may start
    a better attempt.
``strict_order`` (ClickHouse's ``'strict_order'``)
    As ``ordered``, but after the first step-1 event any event that is not a step, or a step
    whose previous step has not been reached, stops the scan (no retry after that point).
``strict_steps``
    As ``strict_order`` but only step events can stop the scan (other events are ignored):
    what users usually mean by "strict".
``unordered``
    The customer reaches step ``k`` iff events of all of steps ``1..k`` occur, in any order,
    within some ``W``-second span.

Customers reaching step ``k`` = customers whose level is at least ``k``. A customer who has
not converted is *in progress* when they could still get further without a new step-1
event: the window from their last step-1 event is still open at the end of the data and, in
the strict modes, their scan has not stopped at a break (a stopped scan can never change
level). In-progress customers are counted at the step reached, but not as dropped.

The *attempt* of a customer is the earliest attempt that reached the customer's level; its
step events (the first event of each step that validly continued it) give the step times
``t{k}`` and fix the breakdown values (first touch = channel of its step 1, last touch =
channel of its last step reached), so a breakdown never splits a sequence.

Implementation. ``ordered`` mode on DuckDB (the default case; :func:`_asof_capable`) is an
ASOF-join chain: for step ``k`` events, the attempt start is that of the latest valid
step-``k-1`` event at or before them (an ASOF join on an integer key per customer and the
time), kept if within ``W`` — the same per-level state ClickHouse keeps — so each level is
one join carrying only (key, time, start). Each event's time in microseconds is packed with
a code of its channel into one integer (codes in name order), so that the chosen attempt's
step times and channels are integer minima over the levels, with nothing read back from the
events (:func:`_customers_asof`; peak memory below chDB's ``windowFunnel`` on the benchmark,
see ``benchmarks/bench_funnel.py``). The key is a 64-bit hash of ``customer_id``, checked to
be one-to-one on every run; on a collision, with more than 255 channel names or times
beyond the packing's range (:func:`_channel_codes`), on other backends and in the other
modes it is an Ibis window recursion: for step ``k`` events, the attempt
start is the latest valid step-``k-1`` start among preceding events (``max(...) over (...
rows between unbounded preceding and 1 preceding)``), kept if within ``W``. In ``ordered``
mode each level's pass reads only the valid step-``k-1`` events and the step-``k`` events
of the customers who have one, so later passes shrink; the strict modes need every event in
one pass per level. It runs on any Ibis backend with window functions. Both give the same
per-customer table (``tests/test_funnel.py``); it is materialised as a temporary table on
the source's connection (by the chain in its packed form, integers and the id, under a view
that decodes times and channels query by query: storing the decoded strings and timestamps
cost more than decoding them), and the chain's intermediate tables are dropped afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import ibis
import ibis.expr.datatypes as dt
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from ibis import _
from scipy import stats

from cxanalysis import data as _data
from cxanalysis.breakdowns import Breakdown
from cxanalysis.data import (
    CXDataError,
    Labels,
    LabelsLike,
    Source,
    between_days,
    epoch_micros,
    in_days,
    materialize,
    window_end,
)
from cxanalysis.engines import quantile, quantile_note, unsupported
from cxanalysis.errors import ParameterError
from cxanalysis.formatting import ResultMixin, format_duration
from cxanalysis.plotting import display_label
from cxanalysis.privacy import MIN_GROUP_SIZE, suppress_small_groups
from cxanalysis.stats import adjust_pvalues, two_proportion_z, wilson_interval

#: Kept importable from here (they live in :mod:`cxanalysis.stats` and
#: :mod:`cxanalysis.breakdowns`).
__all__ = ["Breakdown", "FunnelResult", "PainPoints", "funnel", "two_proportion_z",
           "wilson_interval"]

MODES = ("ordered", "strict_order", "strict_steps", "unordered")
#: What the funnel counts: each customer once (best attempt) or every attempt.
UNITS = ("customers", "attempts")
DEFAULT_WINDOW_SECONDS = 7 * 86_400
_COUNTER = itertools.count()


def _check_steps(steps: Sequence[str], window_seconds: float, mode: str) -> list[str]:
    steps = list(steps)
    if len(steps) < 2:
        raise ParameterError(f"a funnel needs at least two steps, got {steps!r}")
    dupes = sorted({s for s in steps if steps.count(s) > 1})
    if dupes:
        raise ParameterError(f"duplicate step name(s) {dupes}: each step must be a distinct event")
    if not window_seconds or window_seconds <= 0:
        raise ParameterError(f"window_seconds must be positive, got {window_seconds!r}")
    if mode not in MODES:
        raise ParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return steps


def _levels_sequential(ev: ibis.Table, n: int, window: int, mode: str) -> ibis.Table:
    """Per event: ``lvl`` (step reached validly by this event, else NULL), ``att`` (start of
    its attempt, epoch microseconds) and ``stopped`` (the customer's scan has ended at a
    strict-mode break, so their level can never change); rows from the break on are
    dropped. ``window`` is in microseconds."""
    w = ibis.window(group_by="customer_id", order_by=["us", "step"], rows=(None, -1))
    t = ev.mutate(s1=ibis.ifelse(ev.step == 1, ev.us, None))
    cand_cols = []
    for k in range(2, n + 1):
        prev = t[f"s{k - 1}"]
        cand = ibis.ifelse(t.step == k, prev.max().over(w), None)
        t = t.mutate(**{f"c{k}": cand})
        t = t.mutate(**{f"s{k}": ibis.ifelse(t.us - t[f"c{k}"] <= window, t[f"c{k}"], None)})
        cand_cols.append(f"c{k}")
    starts = [t[f"s{k}"] for k in range(1, n + 1)]
    t = t.mutate(att=ibis.coalesce(*starts),
                 lvl=ibis.cases(*[(t[f"s{k}"].notnull(), k) for k in range(n, 0, -1)],
                                else_=None))
    if mode in ("strict_order", "strict_steps"):
        seen1 = (t.step == 1).cast("int8").max().over(w).fill_null(0) > 0
        out_of_order = ibis.or_(*[(t.step == k) & t[f"c{k}"].isnull() for k in range(2, n + 1)])
        breaking = out_of_order if mode == "strict_steps" else (out_of_order | (t.step == 0))
        t = t.mutate(brk=seen1 & breaking)
        # rank of each row in (us, step) order; rows from the first break on are ignored
        t = t.mutate(rn=ibis.row_number().over(
            ibis.window(group_by="customer_id", order_by=["us", "step"])))
        t = t.mutate(first_brk=ibis.ifelse(t.brk, t.rn, None).min().over(
            ibis.window(group_by="customer_id")))
        t = t.filter(t.first_brk.isnull() | (t.rn < t.first_brk))
        stopped = t.first_brk.notnull()
    else:
        stopped = ibis.literal(False)
    return t.filter(t.lvl.notnull()).select("customer_id", "ts", "us", "channel", "step",
                                            "lvl", "att", stopped=stopped)


def _levels_ordered(ev: ibis.Table, n: int, window: int) -> ibis.Table:
    """``ordered`` mode, same output as :func:`_levels_sequential`, computed level by level
    on shrinking inputs: the valid step-``k`` events are found among the step-``k`` events
    of customers with a valid step-``k-1`` event, each with the latest valid step-``k-1``
    start before it. Each pass sorts only those two kinds of rows, not the whole log."""
    w = ibis.window(group_by="customer_id", order_by=["us", "step"], rows=(None, -1))
    cols = ["customer_id", "ts", "us", "channel", "step"]
    valid = ev.filter(ev.step == 1).select(*cols, lvl=ibis.literal(1, type="int64"),
                                           att=ev.us)
    parts = [valid]
    for k in range(2, n + 1):
        prev = valid.select(*cols, s=valid.att)
        steps_k = ev.filter(ev.step == k).semi_join(prev.select("customer_id"), "customer_id")
        both = ibis.union(prev, steps_k.select(*cols, s=ibis.null().cast("int64")))
        both = both.mutate(c=both.s.max().over(w))
        valid = both.filter((both.step == k) & both.c.notnull()
                            & (both.us - both.c <= window)).select(
            *cols, lvl=ibis.literal(k, type="int64"), att=_.c)
        if _inlines_ctes(valid):
            valid = materialize(valid, "funnel_level")
        parts.append(valid)
    return ibis.union(*parts).mutate(stopped=ibis.literal(False))


#: Engines that inline every CTE into each place it is used. There each level of
#: :func:`_levels_ordered` is stored (``data.materialize``: a Spark local checkpoint) before
#: the next is built: otherwise level ``k`` repeats the plans of all earlier levels, once
#: for the next level and once for the union, and the per-customer query grows to 79 window
#: operators and 164 shuffles for 5 steps (measured on Spark 4.0) instead of 4 windows.
_CTE_INLINING = ("pyspark",)


def _inlines_ctes(expr: ibis.Table) -> bool:
    return _data._engine_of(expr) in _CTE_INLINING


#: Backends on which ``ordered`` mode runs as an ASOF-join chain (:func:`_customers_asof`);
#: elsewhere the portable window recursion (:func:`_levels_ordered`) is used.
_ASOF_BACKENDS = ("duckdb",)
#: Most channel names the chain packs into its keys (:func:`_channel_codes`).
_MAX_CODES = 255


@ibis.udf.scalar.builtin(name="hash")
def _hash_u64(value: dt.string) -> dt.uint64:  # type: ignore[empty-body]
    """DuckDB's builtin ``hash`` as it is (unsigned 64-bit). Ibis's ``hash()`` converts it
    to a signed integer through a bit string, which costs more than the hash itself."""


def _customer_key(customer_id: ibis.Value) -> ibis.Value:
    """A 64-bit integer key per customer (a hash: integer joins and sorts are several times
    cheaper than string ones). Collisions are checked, never assumed away (see
    :func:`_customers_asof`)."""
    return _hash_u64(customer_id.cast("string"))


@ibis.udf.scalar.builtin(name="make_timestamptz")
def _timestamp_us(us: dt.int64) -> dt.Timestamp(timezone="UTC"):  # type: ignore[empty-body]
    """DuckDB's builtin ``make_timestamptz``: the instant ``us`` microseconds after
    1970-01-01 UTC (no calendar arithmetic: about 30 times cheaper than adding an interval
    to the epoch, which goes through the time-zone library)."""


def _asof_capable(ev: ibis.Table) -> bool:
    """Whether the backend of ``ev`` runs the ASOF-join chain (a capability check, by backend
    name: the plan's speed and the ``hash`` semantics are checked on these engines only). It
    follows the package's switch for DuckDB-only shortcuts (``data._on_duckdb``), so forcing
    the portable paths (tests/engines/test_compile.py) forces the window recursion too."""
    # looked up on the module at call time, so that the switch can be turned off
    return _data._on_duckdb(ev.us) and ibis.get_backend(ev).name in _ASOF_BACKENDS


def _channel_codes(all_events: ibis.Table, ev: ibis.Table, span: tuple[pd.Timestamp, pd.Timestamp]
                   ) -> tuple[list[str], int] | None:
    """The channel dictionary of the chain and its width in bits: the distinct channel names
    of ``all_events`` in the engine's order (a superset of the funnel's is harmless), code
    ``i`` for the ``i``-th name and ``len(names)`` for a missing channel, so that comparing
    codes compares names with missing last, as ``min(channel)`` does. None when the chain's
    packed keys (:func:`_customers_asof`) cannot hold them: a channel that is not text, more
    than 255 names, or instants (``span``: the first and last of ``all_events``) beyond
    about the years 829-3111."""
    if not ev.channel.type().is_string():
        return None
    d = all_events.select("channel").distinct()
    # one name more than the packing holds is enough to know that it does not
    names = [str(x) for x in d.filter(d.channel.notnull()).order_by("channel")
             .limit(_MAX_CODES + 1).channel.to_pyarrow().to_pylist()]
    if len(names) > _MAX_CODES:
        return None
    bits = max(1, len(names).bit_length())
    lim = 2 ** (62 - bits)  # |us| * 2**bits + code stays within a signed 64-bit integer
    for x in span:
        if pd.isna(x) or not -lim <= pd.Timestamp(x).value // 1000 < lim:
            return None
    return names, bits


def _customers_asof(ev: ibis.Table, all_events: ibis.Table,
                    span: tuple[pd.Timestamp, pd.Timestamp], n: int, window: int,
                    scratch: list[ibis.Table]) -> ibis.Table | None:
    """``ordered`` mode per customer, as an ASOF-join chain; the same table as the portable
    path (``customer_id``, ``level``, ``att``, ``last_step1``, ``halted``, ``first_ts``,
    ``t{k}``, ``ch{k}``), or None when it cannot be exact here (two customers share a key,
    or the channels and times do not fit the packed keys, :func:`_channel_codes`); then the
    caller falls back.

    Why it is exact: the valid step-``k`` events and their attempt starts (``att``, the
    latest valid step-``k-1`` start before them, windowFunnel's per-level state) are those of
    :func:`_levels_ordered`. Among a customer's valid step-``k-1`` events, ``att`` never
    decreases with time (each is a running maximum), so the latest such event at or before a
    step-``k`` event — an ASOF join on (customer, time) — carries that maximum; events at
    one instant share it. Each level is one ASOF join of the step-``k`` events with the
    previous level's valid events, carrying only (key, time, start). Then, as on the
    portable path, the chosen attempt is the earliest ``att`` at the customer's level, and
    ``t{k}`` / ``ch{k}`` the first step-``k`` event carrying it (ties at one instant: the
    first channel name).

    Every time is packed with its channel into one integer, ``us * 2**bits + code`` (codes
    in name order, missing last), so that "first event, then first channel name" is one
    integer minimum and no channel is read back from the events. The ASOF probe of a
    step-``k`` event is its instant with the highest code (a previous step at the same
    instant counts as before it, whatever its channel); step-1 keys carry the code
    reversed, so that of several step-1 events at one instant the join takes the first
    channel name and ``att`` (the packed start) holds it. The per-customer table is stored
    packed; the returned view decodes it. Every table stored is appended to ``scratch``, the
    per-customer one last (the caller keeps it for the result and drops the others)."""
    def keep(expr: ibis.Table, prefix: str) -> ibis.Table:
        t = materialize(expr, prefix)
        scratch.append(t)
        return t

    codes = _channel_codes(all_events, ev, span)
    if codes is None:
        return None
    names, bits = codes
    low = 2 ** bits - 1  # the code's bits
    code = (ev.channel.cases(*[(name, i) for i, name in enumerate(names)], else_=len(names))
            if names else ibis.literal(0))
    packed = ev.us * (low + 1) + code.cast("int64")
    slim = keep(ev.select(h=_customer_key(ev.customer_id), v=packed, step=ev.step),
                "funnel_slim")
    s1 = slim.filter(slim.step == 1)
    # step 1: the attempt starts at the event; key with the code reversed (see above)
    prev = s1.select("h", key=s1.v + low - 2 * (s1.v & low), att=s1.v)
    levels = []
    for k in range(2, n + 1):
        e = slim.filter(slim.step == k)
        e = e.select("h", "v", probe=e.v | low)
        j = e.asof_join(prev, on=e.probe >= prev.key, predicates=e.h == prev.h)
        prev = keep(j.filter(j.att.notnull() & ((j.v >> bits) - (j.att >> bits) <= window))
                    .select("h", key=j.v, att=j.att), "funnel_level")
        levels.append(prev.mutate(k=ibis.literal(k, type="int64")))
    # per customer with a step-1 event: the first (packed) and the last (us) of them; then
    # the chain's events are no longer needed: freed before the next aggregation
    g1 = keep(s1.group_by("h").aggregate(first1=_.v.min(), last1=(_.v >> bits).max()),
              "funnel_first")
    _drop_scratch([slim])
    # exact or not at all: every distinct customer must have its own key (distinct ids
    # first, then their keys: one string aggregation instead of one over (key, id) pairs)
    ids = ev.select("customer_id").distinct()
    ids = keep(ids.mutate(h=_customer_key(ids.customer_id)), "funnel_ids")
    check = ids.aggregate(ids=_.count(), keys=_.h.nunique()).execute().iloc[0]
    if int(check["ids"]) != int(check["keys"]):
        return None
    # per customer in the funnel: the level and the earliest start that reached it
    up = ibis.union(*levels)
    top = up.group_by("h").aggregate(**{f"m{k}": _.att.min(where=_.k == k)
                                        for k in range(2, n + 1)})
    best = g1.left_join(top, g1.h == top.h)
    best = keep(best.select(
        h=best.h,
        level=ibis.cases(*[(best[f"m{k}"].notnull(), k) for k in range(n, 1, -1)],
                         else_=1).cast("int64"),
        a=ibis.coalesce(*[best[f"m{k}"] for k in range(n, 1, -1)], best.first1),
        last1=best.last1), "funnel_best")
    # per step k >= 2 reached: the first event (and first channel) of the chosen attempt
    firsts = up.join(best, [up.h == best.h, up.att == best.a]).group_by("h").aggregate(
        **{f"v{k}": _.key.min(where=_.k == k) for k in range(2, n + 1)})
    per = best.left_join(firsts, best.h == firsts.h).join(ids, best.h == ids.h)
    # stored packed (integers and the id); decoded by the view below, query by query
    per = keep(per.select("customer_id", "level", "a", "last1",
                          *[f"v{k}" for k in range(2, n + 1)]), "funnel")
    packed = {1: per.a} | {k: per[f"v{k}"] for k in range(2, n + 1)}
    # times back from exact microseconds, in the type of ``ts``; channels from their codes
    dictionary = ibis.literal(names, type="array<string>")
    cols = {}
    for k in range(1, n + 1):
        cols[f"t{k}"] = _timestamp_us(packed[k] >> bits).cast(ev.ts.type())
        cols[f"ch{k}"] = dictionary[(packed[k] & low).cast("int64")]
    return per.select("customer_id", "level", att=per.a >> bits, last_step1=per.last1,
                      halted=ibis.literal(False), first_ts=cols["t1"], **cols)


def _drop_scratch(scratch: list[ibis.Table]) -> None:
    """Drop the intermediate tables of :func:`_customers_asof` (their memory is freed)."""
    for t in scratch:
        if t.get_name().startswith("temp."):
            ibis.get_backend(t).raw_sql(f"DROP TABLE IF EXISTS {t.get_name()}")


def _levels_unordered(ev: ibis.Table, n: int, window: int) -> ibis.Table:
    """Per event as a window start: how many of steps 1..k occur within ``window``
    microseconds after."""
    w = ibis.window(group_by="customer_id", order_by="us", range=(0, None))
    t = ev.mutate(**{f"n{j}": ibis.ifelse(ev.step == j, ev.us, None).min().over(w)
                     for j in range(1, n + 1)})
    present = [(t[f"n{j}"].notnull() & (t[f"n{j}"] - t.us <= window)) for j in range(1, n + 1)]
    cases = []
    for k in range(n, 0, -1):
        cases.append((ibis.and_(*present[:k]), k))
    t = t.mutate(lvl=ibis.cases(*cases, else_=None), att=t.us)
    return t.filter(t.lvl.notnull()).select("customer_id", "ts", "us", "channel", "step",
                                            "lvl", "att", stopped=ibis.literal(False))


def _attempt_starts(ev: ibis.Table, window: int, con: ibis.BaseBackend) -> ibis.Table:
    """Per customer, the start (``att``, epoch microseconds) of every attempt: the first
    step-1 event starts one; the next starts at the first step-1 event more than ``window``
    microseconds after the current start (step-1 events inside an open attempt belong to
    it). The chain is a recursive CTE over the step-1 instants, each carrying a pointer to
    the first step-1 instant after its window (a range window), so the engine follows the
    pointers; the number of iterations is the largest number of attempts of a customer."""
    inst = ev.filter(ev.step == 1).select("customer_id", "us").distinct()
    after = ibis.window(group_by="customer_id", order_by="us", range=(window + 1, None))
    inst = inst.mutate(nxt=inst.us.min().over(after),
                       first=inst.us.min().over(ibis.window(group_by="customer_id")))
    name = f"__attempt_instants_{next(_COUNTER)}"
    con.create_table(name, inst, temp=True)
    q = f'"{name}"'
    return con.sql(
        f"WITH RECURSIVE chain(customer_id, att, nxt) AS ("
        f" SELECT customer_id, us, nxt FROM {q} WHERE us = first"
        f" UNION ALL"
        f" SELECT i.customer_id, i.us, i.nxt FROM chain c JOIN {q} i"
        f"  ON i.customer_id = c.customer_id AND i.us = c.nxt)"
        f" SELECT customer_id, att FROM chain")


def _attempts(ev: ibis.Table, n: int, window: int, con: ibis.BaseBackend) -> ibis.Table:
    """Per attempt (see :func:`_attempt_starts`): ``customer_id``, ``att``, ``level`` (the
    furthest step reached within ``window`` of the start, steps in ``(ts, step index)``
    order, each step after the previous one), and per step ``k`` reached the time ``t{k}``
    and channel ``ch{k}`` of the earliest step-``k`` event that continues the attempt
    (ties on time: the first channel name). Earliest-first is optimal for an in-order
    match, so one pass per step suffices."""
    starts = _attempt_starts(ev, window, con)
    cols = ["customer_id", "ts", "us", "channel", "step"]
    # each step event belongs to the attempt whose start is the latest at or before it (an
    # attempt's start row sorts before the events of its instant), if within the window
    marks = starts.select("customer_id", ts=ibis.null().cast(ev.ts.type()), us=starts.att,
                          channel=ibis.null().cast("string"),
                          step=ibis.literal(-1, type=ev.step.type()), a=starts.att)
    both = ibis.union(marks, ev.select(*cols, a=ibis.null().cast("int64")))
    upto = ibis.window(group_by="customer_id", order_by=["us", "step"], rows=(None, 0))
    both = both.mutate(att=both.a.max().over(upto))
    tagged = both.filter((both.step >= 1) & both.att.notnull()
                         & (both.us - both.att <= window)).drop("a")
    # materialised: each pass below reads them, and the per-attempt state is read twice
    # per pass (as an unmaterialised expression its size would double with every step)
    tagged = materialize(tagged, "attempt_events")
    keys = ["customer_id", "att"]
    cur = starts.select(*keys)
    for k in range(1, n + 1):
        ek = tagged.filter(tagged.step == k)
        if k == 1:
            cand = ek.filter(ek.us == ek.att)
        else:
            prev = cur.select(*keys, prev=cur[f"u{k - 1}"])
            cand = ek.join(prev, keys).filter(_.us >= _.prev)
        cand = cand.mutate(first=cand.us.min().over(ibis.window(group_by=keys)))
        got = cand.filter(cand.us == cand.first).group_by(keys).aggregate(
            **{f"u{k}": _.us.min(), f"t{k}": _.ts.min(), f"ch{k}": _.channel.min()})
        got = got.select(ck=got.customer_id, ak=got.att, **{c: got[c] for c in
                                                             (f"u{k}", f"t{k}", f"ch{k}")})
        cur = cur.left_join(got, (cur.customer_id == got.ck) & (cur.att == got.ak)) \
            .drop("ck", "ak")
        cur = materialize(cur, "attempt_state")
    level = ibis.cases(*[(cur[f"u{k}"].notnull(), k) for k in range(n, 0, -1)], else_=0)
    return cur.mutate(level=level).drop(*[f"u{k}" for k in range(1, n + 1)])


@dataclass
class FunnelResult(ResultMixin):
    """A computed funnel: per-step figures, with the per-customer result kept in the engine.

    Attributes
    ----------
    steps : list of str
    window_seconds : float
    mode : str
    frame : DataFrame
        One row per step (see :meth:`table`).
    customers : ibis.Table
        Per customer in the funnel: ``level``, ``start`` (attempt start, UTC),
        ``first_channel``, ``last_channel``, ``in_progress``, and per step ``k`` the time
        ``t{k}`` and channel ``ch{k}`` of the attempt's first step-``k`` event.
    data_end : pandas.Timestamp
        End of observation used for "in progress".
    """

    steps: list[str]
    window_seconds: float
    mode: str
    frame: pd.DataFrame
    customers: ibis.Table
    data_end: pd.Timestamp
    excluded_customers: int = 0
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)
    #: "customers" (each customer once, best attempt) or "attempts" (every attempt).
    unit: str = "customers"

    @property
    def unit_label(self) -> str:
        """How the unit reads in a sentence."""
        return ("customers (each counted once, at their best attempt)"
                if self.unit == "customers" else "attempts (every attempt counted)")

    def table(self) -> pd.DataFrame:
        """Per step: customers (or attempts, in column ``attempts``) reaching it, conversion from step 1 and from the previous
        step with Wilson intervals, dropped and in-progress customers, and median / p90 hours
        from the previous step and from step 1."""
        return self.frame

    @property
    def entered(self) -> int:
        """Customers (or attempts) at step 1."""
        return int(self.frame[self.unit].iloc[0])

    @property
    def in_progress(self) -> int:
        return int(self.frame["in_progress"].sum())

    def summary(self) -> str:
        f = self.frame
        last = f.iloc[-1]
        worst = f.iloc[1:].sort_values("step_conversion").iloc[0]
        u = self.unit
        who = (f" by {int(f['customers'].iloc[0]):,} customers" if u == "attempts" else "")
        return (f"Unit: {self.unit_label}. {self.entered:,} {u}{who} entered the funnel "
                f"({self.steps[0]}); {int(last[u]):,} {u} reached {self.steps[-1]} within "
                f"{format_duration(self.window_seconds)} ({last.conversion_from_first:.1%} of "
                f"{u}); {self.in_progress:,} {u} are still in progress. The weakest step is "
                f"{f.iloc[int(worst.name) - 1].event} -> {worst.event} "
                f"({worst.step_conversion:.1%} of {u} continue). Mode: {self.mode}.")

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        f = self.frame
        u = self.unit
        y = np.arange(len(f))[::-1]
        ax.barh(y, f[u], color="#1e88e5")
        ax.barh(y, f["in_progress"], left=f[u] - f["in_progress"], color="#90caf9",
                label="in progress")
        for yi, cnt, conv in zip(y, f[u], f["conversion_from_first"], strict=True):
            ax.text(cnt, yi, f"  {cnt:,} ({conv:.0%})", va="center")
        ax.set_yticks(y, [display_label(e) for e in f["event"]])
        ax.set_xlabel(f"{u} reaching the step (count)")
        ax.set_ylabel("funnel step")
        ax.set_title(f"Funnel ({self.mode}, {u}, window {format_duration(self.window_seconds)})")
        ax.legend(loc="lower right", frameon=False)
        ax.set_xlim(0, f[u].max() * 1.25)
        return ax

    # ------------------------------------------------------------------ breakdowns

    def breakdown(self, by: str | LabelsLike = "first_channel",
                  min_group_size: int = MIN_GROUP_SIZE, *,
                  column: str | None = None) -> Breakdown:
        """Conversion (reaching the last step) by a per-customer group.

        Parameters
        ----------
        by : str or labels
            ``"first_channel"`` / ``"last_channel"`` (channel of the attempt's first / last
            step), or per-customer labels: a :class:`cxanalysis.data.Labels`, or anything
            :meth:`Labels.of <cxanalysis.data.Labels.of>` takes (persona labels, a
            segments Series, ``Labels.of(source.table("customers"), "region")``).
            Customers without a label are the group ``"(unknown)"``.
        min_group_size : int
            Groups with fewer units are suppressed and left out of the tests.
        column : str, optional
            Old form ``breakdown(table, column=...)``, kept working: the label column of a
            table ``by`` (same as ``by=Labels.of(table, column)``).
        """
        c = self.customers
        n = len(self.steps)
        if isinstance(by, str):
            if by not in ("first_channel", "last_channel"):
                raise ParameterError("by must be 'first_channel', 'last_channel' or "
                                     f"per-customer labels, not {by!r}")
            grouped = c.mutate(group=c[by])
            label = by
        else:
            labels = Labels.of(by, column)
            grouped = labels.join(c)
            label = labels.name
        agg = (grouped.filter(~grouped.in_progress | (grouped.level == n))
               .group_by("group").aggregate(customers=_.count(),
                                            converted=(_.level == n).sum())
               .order_by("group").execute())
        agg["group"] = agg["group"].astype(str)
        out = Breakdown.from_counts(label, agg, self.alpha, min_group_size)
        out.unit = self.unit
        return out

    def over_time(self, freq: str = "week") -> pd.DataFrame:
        """Conversion by period (``"day"``, ``"week"`` from Monday, ``"month"``; UTC) of the
        attempt's start (customers still in progress excluded): ``period``, ``customers``,
        ``converted``, ``conversion`` with its Wilson interval ``ci_low`` / ``ci_high``."""
        units = {"day": "D", "week": "W", "month": "M"}
        if freq not in units:
            raise ParameterError(f"freq must be one of {', '.join(units)}, got {freq!r}")
        unit = units[freq]
        c = self.customers
        n = len(self.steps)
        agg = (c.filter(~c.in_progress | (c.level == n))
               .mutate(period=c.start.truncate(unit))
               .group_by("period").aggregate(customers=_.count(), converted=(_.level == n).sum())
               .order_by("period").execute())
        agg["conversion"] = agg["converted"] / agg["customers"]
        lo, hi = wilson_interval(agg["converted"], agg["customers"], self.alpha)
        agg["ci_low"], agg["ci_high"] = lo, hi
        return agg

    def dropoff(self, by: str | LabelsLike = "channel",
                labels: LabelsLike | None = None, column: str | None = None,
                min_group_size: int = MIN_GROUP_SIZE) -> PainPoints:
        """Drop-off at each step by the channel of the step event where customers stopped
        (``by="channel"``) or by per-customer labels (``by`` = a
        :class:`cxanalysis.data.Labels` or anything :meth:`Labels.of
        <cxanalysis.data.Labels.of>` takes; unlabelled customers are ``"(unknown)"``),
        against the overall drop-off rate of that step; see :class:`PainPoints`.

        The old form ``dropoff(by=name, labels=table, column=col)`` still works (same as
        ``dropoff(Labels.of(table, col))``)."""
        c = self.customers
        if labels is not None:
            by = Labels.of(labels, column)
        if isinstance(by, str):
            if by != "channel":
                raise ParameterError("by must be 'channel' or per-customer labels, not "
                                     f"{by!r}")
            name = "channel"
        else:
            lab = Labels.of(by, column)
            c = lab.join(c)
            name = lab.name
        n = len(self.steps)
        parts = []
        for k in range(1, n):
            at_risk = c.filter((c.level >= k) & ~((c.level == k) & c.in_progress))
            if name == "channel" and isinstance(by, str):
                at_risk = at_risk.mutate(group=at_risk[f"ch{k}"])
            agg = at_risk.group_by("group").aggregate(at_risk=_.count(),
                                                      dropped=(_.level == k).sum())
            parts.append(agg.mutate(step=k))
        df = ibis.union(*parts).execute() if len(parts) > 1 else parts[0].execute()
        df["event"] = [self.steps[k - 1] for k in df["step"]]
        df["next_event"] = [self.steps[k] for k in df["step"]]
        return PainPoints.from_counts(df, name, self.alpha, min_group_size, unit=self.unit)


def _with_group(customers: ibis.Table, labels: LabelsLike | None,
                column: str | None) -> ibis.Table:
    """``customers`` with ``group`` from per-customer ``labels`` ("(unknown)" without a
    label). Kept for old callers: use ``Labels.of(labels, column).join(customers)``."""
    if labels is None:
        raise ParameterError("give per-customer labels (a Labels, a Series indexed by "
                             "customer_id, or a table with customer_id and its group column)")
    return Labels.of(labels, column).join(customers)


@dataclass
class PainPoints(ResultMixin):
    """Drop-off by step and group against the step's overall rate, ranked by excess
    customers lost (``dropped - at_risk x overall rate``). A cell is flagged when its rate is
    significantly worse than the rest of its step (one-sided two-proportion z-test, Holm
    across every cell of the table)."""

    by: str
    frame: pd.DataFrame
    #: what ``at_risk``, ``dropped`` and ``excess_lost`` count: customers or attempts
    unit: str = "customers"
    min_group_size: int = MIN_GROUP_SIZE

    @classmethod
    def from_counts(cls, df: pd.DataFrame, by: str, alpha: float, min_group_size: int,
                    unit: str = "customers") -> PainPoints:
        df = df.copy()
        tot = df.groupby("step")[["at_risk", "dropped"]].transform("sum")
        df["rate"] = df["dropped"] / df["at_risk"]
        df["overall_rate"] = tot["dropped"] / tot["at_risk"]
        df["excess_lost"] = df["dropped"] - df["at_risk"] * df["overall_rate"]
        rest_n = tot["at_risk"] - df["at_risk"]
        rest_x = tot["dropped"] - df["dropped"]
        pvals = []
        for row, rn, rx in zip(df.itertuples(), rest_n, rest_x, strict=True):
            if rn <= 0 or row.at_risk < min_group_size:
                pvals.append(np.nan)
                continue
            z, _ = two_proportion_z(row.dropped, row.at_risk, rx, rn)
            pvals.append(float(stats.norm.sf(z)) if np.isfinite(z) else np.nan)
        df["p_value"] = pvals
        df["p_holm"] = adjust_pvalues(df["p_value"].to_numpy(float), "holm")
        df["worse"] = (df["p_holm"] < alpha) & (df["rate"] > df["overall_rate"])
        df = df.rename(columns={"group": by})
        df = df.sort_values(["excess_lost", "step", by], ascending=[False, True, True])
        df = suppress_small_groups(df.reset_index(drop=True), "at_risk", min_group_size,
                                   columns=["at_risk", "dropped", "rate", "excess_lost"])
        cols = ["step", "event", "next_event", by, "at_risk", "dropped", "rate",
                "overall_rate", "excess_lost", "p_holm", "worse", "suppressed"]
        return cls(by, df[cols], unit, min_group_size)

    #: ``worse`` marks the significant rows (their p-value cells are marked)
    _format = {"significant": "worse"}

    def table(self) -> pd.DataFrame:
        return self.frame

    @property
    def biggest(self) -> pd.Series:
        """The cell costing the most customers (among unsuppressed cells)."""
        return self.frame[~self.frame["suppressed"]].iloc[0]

    def summary(self) -> str:
        b = self.biggest
        u = self.unit
        return (f"The biggest leak (ranked by excess {u} lost) is {b.event} -> "
                f"{b.next_event} in {self.by} {b[self.by]}: {b.rate:.0%} of "
                f"{int(b.at_risk):,} {u} stop there against {b.overall_rate:.0%} overall, "
                f"about {b.excess_lost:,.0f} {u} more than the step's usual rate.")

    def plot(self, ax: plt.Axes | None = None, top: int = 10) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        f = self.frame[~self.frame["suppressed"]].head(top).iloc[::-1]
        labels = [f"{r.event}→{r.next_event} · {r[self.by]}" for _, r in f.iterrows()]
        colors = ["#e53935" if w else "#90a4ae" for w in f["worse"]]
        ax.barh(labels, f["excess_lost"], color=colors)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"{self.unit} lost beyond the step's overall rate (count)")
        ax.set_ylabel(f"step → next step · {self.by}")
        ax.set_title(f"Pain points by step × {self.by} (red: significantly worse, Holm; "
                     "unadjusted)")
        return ax


def _step_events(events: ibis.Table, steps: list[str], mode: str,
                 start: str | None, end: str | None) -> tuple[ibis.Table, ibis.Table]:
    for col in ("customer_id", "ts", "event", "channel"):
        if col not in events.columns:
            raise CXDataError(f"events has no column {col!r}")
    events = between_days(events, start, end)
    step_of = ibis.cases(*[(events.event == s, i) for i, s in enumerate(steps, 1)], else_=0)
    # integer microseconds: exact, so a gap equal to a fractional window is inside it
    ev = events.mutate(step=step_of, us=epoch_micros(events.ts))
    if mode != "strict_order":
        ev = ev.filter(ev.step > 0)
    return events, ev.select("customer_id", "ts", "us", "channel", "event", "step")


def _check_step_events(events: ibis.Table, steps: list[str], mode: str,
                       start: str | None, end: str | None
                       ) -> tuple[pd.Timestamp, pd.Timestamp]:
    """One pass over the events: every step must occur in the date range, and no event the
    funnel reads may lack a timestamp (it could be neither ordered nor windowed, and a date
    filter would drop it silently): ``strict_order`` reads every event, since any event can
    break a sequence; the other modes only the step events. Returns the first and last
    instant of all events (the same pass: the chain's range check and "in progress" need
    them)."""
    in_range = events.ts.notnull() & in_days(events.ts, start, end)
    per_event = events.group_by("event").aggregate(
        n=events.count(), in_range=in_range.cast("int64").sum(),
        no_ts=events.ts.isnull().cast("int64").sum(), lo=events.ts.min(),
        hi=events.ts.max()).execute()
    span = (per_event["lo"].min(), per_event["hi"].max())
    counts = (per_event if mode == "strict_order"
              else per_event[per_event.event.isin(steps)])
    no_ts = int(counts["no_ts"].sum())
    if no_ts:
        which = "events" if mode == "strict_order" else "step events"
        names = ", ".join(sorted(map(str, counts.event[counts.no_ts > 0])))
        raise CXDataError(f"events: {no_ts:,} row(s) of the funnel's {which} ({names}) have no "
                          "time in column 'ts'; give every event a time, or filter those rows "
                          "out first")
    present = set(counts.event[counts.in_range > 0])
    missing = [s for s in steps if s not in present]
    if missing:
        # name what the source does have, so that `steps` can be fixed from the message
        top = per_event.sort_values(["n", "event"], ascending=[False, True]).head(10)
        have = ", ".join(f"{e} ({n:,})" for e, n in zip(top["event"], top["n"], strict=True))
        raise CXDataError(f"funnel step event(s) {missing} never occur in events"
                          + (f" between {start} and {end}" if start or end else "")
                          + f"; the most frequent events are: {have or 'none'}. Set `steps` "
                          "to events the source has")
    return span


def funnel(
    source: Source | ibis.Table,
    steps: Sequence[str],
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    mode: str = "ordered",
    start: str | None = None,
    end: str | None = None,
    exclude: Sequence[str] = (),
    alpha: float = 0.05,
    unit: str = "customers",
) -> FunnelResult:
    """Compute an ordered funnel; see the module docstring for the exact semantics.

    Parameters
    ----------
    source : Source or ibis.Table
        A source (its ``events`` table) or an events table.
    steps : sequence of str
        Event names, in order (distinct, at least two).
    window_seconds : float
        Conversion window measured from step 1, in seconds (default 7 days); fractions are
        allowed and compared in whole microseconds (a gap equal to the window is inside).
    mode : {"ordered", "strict_order", "strict_steps", "unordered"}
    start, end : str, optional
        First and last day (ISO dates, inclusive, UTC) of events considered.
    exclude : sequence of str
        Exclusion events: customers with such an event between the start of their attempt
        and the last step it reached are removed.
    alpha : float
        For the Wilson intervals (1 - alpha coverage).
    unit : {"customers", "attempts"}
        What is counted. ``customers`` (default): each customer once, at the level of their
        best attempt (windowFunnel). ``attempts`` (``ordered`` mode only): every attempt
        counted — an attempt starts at a step-1 event outside an open attempt of the same
        customer (the window from its start), and its level is the furthest step reached
        within that window (Mixpanel's "totals" against "uniques").
    """
    steps = _check_steps(steps, window_seconds, mode)
    if unit not in UNITS:
        raise ParameterError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if unit == "attempts" and mode != "ordered":
        raise ParameterError(f"unit='attempts' is defined for mode='ordered' only, got {mode!r}")
    n = len(steps)
    all_events = source.table("events") if isinstance(source, Source) else source
    events, ev = _step_events(all_events, steps, mode, start, end)
    span = _check_step_events(all_events, steps, mode, start, end)
    # the window in whole microseconds (0.7 s is 700000 us, not 0.69999...)
    window = int(round(float(window_seconds) * 1_000_000))
    con = ibis.get_backend(all_events)
    data_end_ts = pd.Timestamp(span[1])
    if end is not None:
        data_end_ts = min(data_end_ts, window_end(end))
    data_end = int(data_end_ts.value // 1000)  # ns -> us since the epoch
    if unit == "attempts":
        if con.name not in ("duckdb", "postgres"):
            raise unsupported(con.name, "a recursive query (WITH RECURSIVE) over a "
                              "session-temporary table", "funnel unit='attempts' (events "
                              "table)", "use unit='customers', or a DuckDB or PostgreSQL "
                              "source")
        per = _attempts(ev, n, window, con)
        per = per.mutate(
            start=per.t1,
            # an attempt's window is fixed: it can progress only while it is still open
            in_progress=(per.level < n) & (per.att + window > data_end),
            first_channel=per.ch1,
            last_channel=ibis.cases(*[(per.level == k, per[f"ch{k}"])
                                      for k in range(1, n + 1)]))
        return _finish(per, events, steps, n, float(window_seconds), mode, unit, exclude,
                       alpha, con, data_end_ts)
    scratch: list[ibis.Table] = []
    # ordered mode on DuckDB: the ASOF-join chain (same result, less time and memory); None
    # when it cannot be exact here (a key collision, channels or times the packing cannot hold)
    try:
        per = (_customers_asof(ev, all_events, span, n, window, scratch)
               if mode == "ordered" and _asof_capable(ev) else None)
    except Exception:
        _drop_scratch(scratch)
        raise
    # the chain's per-customer table is stored already (the last of ``scratch``, under a
    # view that decodes it): the result reads it, unless exclusions make a new one
    stored = per is not None and not exclude
    if per is None:
        per = _customers_windowed(ev, n, window, mode)
    per = per.mutate(
        start=ibis.cases(*[(per.level >= 1, per.t1)], else_=None) if mode != "unordered"
        else per.first_ts,  # the attempt's start event: its earliest event
        # an unconverted customer can still progress only while the window from their last
        # step-1 event is open and (strict modes) their scan has not stopped at a break
        in_progress=(per.level < n) & ~per.halted & (per.last_step1 + window > data_end),
        first_channel=per.ch1,
        last_channel=ibis.cases(*[(per.level == k, per[f"ch{k}"]) for k in range(1, n + 1)]),
    ).drop("first_ts")
    try:
        res = _finish(per, events, steps, n, float(window_seconds), mode, unit, exclude,
                      alpha, con, data_end_ts, stored=stored)
    except Exception:
        _drop_scratch(scratch)
        raise
    _drop_scratch(scratch[:-1] if stored else scratch)
    return res


def _customers_windowed(ev: ibis.Table, n: int, window: int, mode: str) -> ibis.Table:
    """Per customer (any mode, any backend with window functions): ``customer_id``,
    ``level``, ``att``, ``last_step1``, ``halted``, ``first_ts`` and per step ``t{k}``,
    ``ch{k}`` of the chosen attempt."""
    lv = (_levels_unordered(ev, n, window) if mode == "unordered"
          else _levels_ordered(ev, n, window) if mode == "ordered"
          else _levels_sequential(ev, n, window, mode))
    # The customer's level, and the earliest attempt that reached it; the last step-1 event
    # the scan read (in the strict modes: before the break) and whether the scan stopped,
    # for "in progress".
    best = lv.group_by("customer_id").aggregate(
        level=_.lvl.max(), last_step1=ibis.ifelse(_.step == 1, _.us, None).max(),
        halted=_.stopped.any())
    top = lv.join(best, [lv.customer_id == best.customer_id, lv.lvl == best.level])
    chosen = top.group_by("customer_id").aggregate(
        level=_.level.max(), att=_.att.min(), last_step1=_.last_step1.max(),
        halted=_.halted.any())
    chain_src = lv.join(chosen, [lv.customer_id == chosen.customer_id, lv.att == chosen.att])
    if mode == "unordered":
        # the start event plus, per step, the first event of that step within the window
        chain_src = ev.join(chosen, ev.customer_id == chosen.customer_id).filter(
            lambda t: (t.us >= t.att) & (t.us - t.att <= window) & (t.step <= t.level))
    aggs = {"level": _.level.max(), "att": _.att.min(), "last_step1": _.last_step1.max(),
            "halted": _.halted.any(), "first_ts": _.ts.min()}
    # each step's first event; of several at the same instant, the first channel name, so
    # the breakdown values do not depend on the engine's row order
    chain_src = chain_src.mutate(first_us=chain_src.us.min().over(
        ibis.window(group_by=[chain_src.customer_id, chain_src.step])))
    first_of = chain_src.us == chain_src.first_us
    for k in range(1, n + 1):
        aggs[f"t{k}"] = ibis.ifelse(_.step == k, _.ts, None).min()
        aggs[f"ch{k}"] = ibis.ifelse((_.step == k) & first_of, _.channel, None).min()
    per = chain_src.group_by("customer_id").aggregate(**aggs)
    return per


def _finish(per: ibis.Table, events: ibis.Table, steps: list[str], n: int,
            window_seconds: float, mode: str, unit: str, exclude: Sequence[str],
            alpha: float, con: ibis.BaseBackend, data_end_ts: pd.Timestamp,
            stored: bool = False) -> FunnelResult:
    """Remove excluded attempts, materialise the per-unit table (unless ``stored``: a view of
    cheap per-row expressions over a stored table, with nothing to exclude) and count the
    steps."""
    excluded = 0
    if exclude:
        ex = events.filter(_.event.isin(list(exclude)))  # already within the dates
        ex = ex.select(xc=ex.customer_id, xs=epoch_micros(ex.ts))
        last_t = ibis.cases(*[(per.level == k, per[f"t{k}"]) for k in range(1, n + 1)])
        spans = per.select("customer_id", "att", lt=epoch_micros(last_t))
        hit = spans.join(ex, spans.customer_id == ex.xc).filter(
            lambda t: (t.xs > t.att) & (t.xs < t.lt)).select("customer_id", "att").distinct()
        excluded = int(hit.count().execute())
        per = per.anti_join(hit, ["customer_id", "att"])
    # a temp table, or .cache() off DuckDB/PostgreSQL
    customers = per if stored else materialize(per, "funnel")
    frame = _step_table(customers, steps, alpha, unit)
    return FunnelResult(steps, float(window_seconds), mode, frame, customers, data_end_ts,
                        excluded, alpha, unit=unit,
                        notes=quantile_note(customers, "median and p90 hours"))


def _step_table(customers: ibis.Table, steps: list[str], alpha: float,
                unit: str = "customers") -> pd.DataFrame:
    """Per step, counts in ``unit`` (column named after it; with ``attempts`` also the
    distinct ``customers`` with an attempt reaching the step)."""
    n = len(steps)
    c = customers
    aggs = {}
    for k in range(1, n + 1):
        aggs[f"reach{k}"] = (c.level >= k).sum()
        if unit == "attempts":
            aggs[f"who{k}"] = c.customer_id.nunique(where=c.level >= k)
        aggs[f"prog{k}"] = ((c.level == k) & c.in_progress).sum()
        if k > 1:
            # exact microseconds (Ibis's epoch_seconds() truncates to whole seconds on DuckDB)
            gap = (epoch_micros(c[f"t{k}"]) - epoch_micros(c[f"t{k - 1}"])) / 3.6e9
            tot = (epoch_micros(c[f"t{k}"]) - epoch_micros(c.t1)) / 3.6e9
            aggs[f"gap_med{k}"] = quantile(gap, 0.5)  # exact, or stated approximate
            aggs[f"gap_p90{k}"] = quantile(gap, 0.9)
            aggs[f"tot_med{k}"] = quantile(tot, 0.5)
            aggs[f"tot_p90{k}"] = quantile(tot, 0.9)
    r = c.aggregate(**aggs).execute().iloc[0]
    rows = []
    first = float(r["reach1"])
    for k in range(1, n + 1):
        reach = int(r[f"reach{k}"])
        prev = int(r[f"reach{k - 1}"]) if k > 1 else reach
        nxt = int(r[f"reach{k + 1}"]) if k < n else reach
        prog = int(r[f"prog{k}"]) if k < n else 0
        rows.append({
            "step": k, "event": steps[k - 1], unit: reach,
            **({"customers": int(r[f"who{k}"])} if unit == "attempts" else {}),
            "conversion_from_first": reach / first if first else np.nan,
            "step_conversion": reach / prev if prev else np.nan,
            "dropped": reach - nxt - prog if k < n else 0,
            "in_progress": prog,
            "median_hours_from_previous": float(r[f"gap_med{k}"]) if k > 1 else np.nan,
            "p90_hours_from_previous": float(r[f"gap_p90{k}"]) if k > 1 else np.nan,
            "median_hours_from_first": float(r[f"tot_med{k}"]) if k > 1 else np.nan,
            "p90_hours_from_first": float(r[f"tot_p90{k}"]) if k > 1 else np.nan,
        })
    f = pd.DataFrame(rows)
    f["ci_low"], f["ci_high"] = wilson_interval(f[unit], first, alpha)
    prev = f[unit].shift(1).fillna(f[unit].iloc[0])
    f["step_ci_low"], f["step_ci_high"] = wilson_interval(f[unit], prev, alpha)
    return f
