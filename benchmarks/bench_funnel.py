"""Ordered funnel: time and peak memory of a 5-step, 7-day funnel over 10M and 100M events.

Baseline and targets (from the issue): ``cxanalysis.funnel.funnel`` with steps visit >
product_view > add_to_cart > checkout > purchase, a 7-day window (``mode="ordered"``, ClickHouse
``windowFunnel`` semantics) over an events table of 10 million and 100 million rows read from
Parquet must take **under 2 s at 10M and under 20 s at 100M** on the 2-core development
machine, with peak memory **well under the data size** (the in-memory Arrow size of the
events, estimated from the first row group and printed next to the Parquet size on disk). The engine is compared in the same run with a
straightforward pandas implementation of the same semantics (10M only: at 100M pandas would
not fit in memory); the two must give the same customers per step, and the ratio
pandas time / engine time is reported.

What is timed: in a fresh child process, from ``ibis.duckdb.connect()`` and
``read_parquet`` to the per-step table (``funnel(...).table()``); interpreter start and library
imports are excluded from that figure (they are in ``wall``). The pandas figure likewise runs
from ``read_parquet`` to the per-step counts. Peak RSS is the whole child's.

The engine's floor is measured beside it (see ``FLOOR_CODE``): DuckDB alone, in raw SQL, reading
the step events, grouping them by customer once, and bringing order into each customer's events
in the cheapest ways available (a window pass, an ASOF join, a hash join of event pairs, sorted
per-customer lists). Every exact ``windowFunnel`` plan needs at least one of those order-aware
passes, so when the cheapest of them alone exceeds the target, the target is below what this
engine can do on this machine, whatever the funnel code does.

Data: seeded (``np.random.default_rng(0)``), ~10 events per customer (n / 10 customers) spread
over 21 days from a start uniform over 2025 (step j drifts j x 1.5 days later, so some customers
convert), events drawn from the five steps plus ``search`` and ``support_contact``, four
channels; rows are written in 2M-row chunks (shuffled within the chunk, so the file is not
grouped by customer) as 1M-row Parquet row groups, and cached in ``data/bench/``
(git-ignored). Generating is timed separately and is not part of the figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks._child import CACHE, measure

STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]
EVENTS = [*STEPS, "search", "support_contact"]
EVENT_P = [0.30, 0.25, 0.15, 0.08, 0.05, 0.10, 0.07]
CHANNELS = ["web", "app", "email", "store"]
CHANNEL_P = [0.5, 0.3, 0.1, 0.1]
WINDOW_S = 7 * 86_400
TARGET_S = {10_000_000: 2.0, 100_000_000: 20.0}
PANDAS_MAX_EVENTS = 10_000_000  # beyond this the pandas baseline would exhaust memory
EVENTS_PER_CUSTOMER = 10
CHUNK_ROWS = 2_000_000
ROW_GROUP_ROWS = 1_000_000
SPREAD_US = 21 * 86_400 * 10**6  # a customer's events fall within 21 days of their start
DRIFT_US = 36 * 3600 * 10**6
YEAR_START_US = 1_735_689_600 * 10**6  # 2025-01-01T00:00:00Z
YEAR_END_US = 1_767_225_600 * 10**6  # 2026-01-01T00:00:00Z
SCHEMA = pa.schema([("customer_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                    ("channel", pa.string()), ("event", pa.string())])


def _chunk(rng: np.random.Generator, first_row: int, rows: int) -> pa.Table:
    """``rows`` events of the customers ``first_row // 10 ...`` (disjoint across chunks)."""
    n_cust = max(1, rows // EVENTS_PER_CUSTOMER)
    first_cust = first_row // EVENTS_PER_CUSTOMER
    local = rng.integers(0, n_cust, rows)  # ~Poisson(10) events per customer
    start = rng.integers(YEAR_START_US, YEAR_END_US - SPREAD_US, n_cust)
    event = rng.choice(len(EVENTS), rows, p=EVENT_P)
    # later steps tend to come later (step j drifts j * 1.5 days), so some customers convert
    drift = np.where(event < len(STEPS), event * DRIFT_US, 0)
    ts = start[local] + drift + rng.integers(0, SPREAD_US - (len(STEPS) - 1) * DRIFT_US, rows)
    channel = rng.choice(len(CHANNELS), rows, p=CHANNEL_P)
    order = rng.permutation(rows)
    ids = pa.array(local[order] + first_cust)
    cid = pc.binary_join_element_wise(
        "C", pc.utf8_lpad(pc.cast(ids, pa.string()), width=10, padding="0"), "")
    return pa.table([cid, pa.array(ts[order], pa.timestamp("us", tz="UTC")),
                     pc.take(pa.array(CHANNELS), pa.array(channel[order])),
                     pc.take(pa.array(EVENTS), pa.array(event[order]))], schema=SCHEMA)


def events_parquet(n: int) -> tuple[Path, float | None]:
    """The cached events file of ``n`` rows, and the seconds spent generating it (None when
    it was already there)."""
    path = CACHE / f"funnel_events_{n}.parquet"
    if path.exists():
        return path, None
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with pq.ParquetWriter(tmp, SCHEMA, compression="snappy") as writer:
        for first in range(0, n, CHUNK_ROWS):
            writer.write_table(_chunk(rng, first, min(CHUNK_ROWS, n - first)),
                               row_group_size=ROW_GROUP_ROWS)
    tmp.replace(path)
    return path, time.perf_counter() - t0


ENGINE_CODE = """
import time
import ibis
from cxanalysis.funnel import funnel
t0 = time.perf_counter()
con = ibis.duckdb.connect()
con.raw_sql("SET TimeZone = 'UTC'")
events = con.read_parquet({path!r})
ts_type = events.schema()["ts"]
assert ts_type.is_timestamp() and ts_type.timezone == "UTC", ts_type
res = funnel(events, {steps!r}, window_seconds={window})
tab = res.table()
result["funnel_s"] = time.perf_counter() - t0
result["counts"] = [int(x) for x in tab["customers"]]
result["in_progress"] = [int(x) for x in tab["in_progress"]]
result["threads"] = con.raw_sql("SELECT current_setting('threads')").fetchone()[0]
"""

# Same semantics as the engine (module docstring of cxanalysis.funnel), vectorised per
# customer: events sorted by (customer, ts, step); for step k, the attempt start is the latest
# valid step-(k-1) start among the customer's earlier rows, kept if ts - start <= window.
PANDAS_CODE = """
import time
import numpy as np
import pandas as pd
steps = {steps!r}
window_us = {window} * 10**6
t0 = time.perf_counter()
df = pd.read_parquet({path!r}, columns=["customer_id", "ts", "event"])
df["step"] = pd.Categorical(df["event"], categories=steps).codes.astype("int8") + 1
df = df[df["step"] > 0]
df["t"] = df["ts"].dt.as_unit("us").astype("int64")
df = df.sort_values(["customer_id", "t", "step"], ignore_index=True)
key = pd.factorize(df["customer_id"])[0]
first_row = np.r_[True, key[1:] != key[:-1]]
t = df["t"].to_numpy()
step = df["step"].to_numpy()
none = np.iinfo(np.int64).min
start = np.where(step == 1, t, none)
level = (step == 1).astype("int8")
for k in range(2, len(steps) + 1):
    running = pd.Series(start).groupby(key).cummax().to_numpy()
    before = np.r_[none, running[:-1]]
    before[first_row] = none
    ok = (step == k) & (before != none) & (t - before <= window_us)
    start = np.where(ok, before, none)
    level[ok] = k
cust_level = pd.Series(level).groupby(key).max()
result["counts"] = [int((cust_level >= k).sum()) for k in range(1, len(steps) + 1)]
result["pandas_s"] = time.perf_counter() - t0
"""


# The engine's floor: what DuckDB itself takes on this machine for the passes any exact
# windowFunnel needs, timed one by one in the same kind of child. Reading the step events is
# unavoidable; a per-customer result needs at least one group-by on customer; and the level
# depends on the order of each customer's events, so at least one order-aware pass is needed
# (the first level: for each step-2 event, the latest step-1 event before it). Three ways
# to get that first level are timed (a window pass, an ASOF join, a hash join of pairs), and
# the sorted per-customer lists a one-pass list_reduce plan would start from. Each figure
# includes its own read of the file.
FLOOR_CODE = """
import time
import duckdb
con = duckdb.connect()
queries = {queries!r}
for name, sql in queries.items():
    t0 = time.perf_counter()
    result[name + "_rows"] = con.sql(sql).fetchone()[0]
    result[name + "_s"] = time.perf_counter() - t0
result["threads"] = con.sql("SELECT current_setting('threads')").fetchone()[0]
"""
FLOOR_LABELS = {
    "read": "read + filter the step events",
    "group_by": "one group-by on customer",
    "window": "one ordered window pass",
    "asof": "first level by ASOF join",
    "pairs": "first level by hash join of pairs",
    "lists": "sorted per-customer lists (input of a list_reduce scan)",
}


def floor_queries(path: Path) -> dict[str, str]:
    """SQL for each floor pass over the events file at ``path`` (counts, so nothing big is
    fetched)."""
    step = ("CASE event " + " ".join(f"WHEN '{s}' THEN {i}" for i, s in enumerate(STEPS, 1))
            + " END")
    ev = (f"(SELECT customer_id, epoch_us(ts) AS t, channel, {step} AS step "
          f"FROM read_parquet('{path}') WHERE event IN ({', '.join(repr(s) for s in STEPS)}))")
    window_us = WINDOW_S * 10**6
    return {
        "read": f"SELECT count(*) + max(t) * 0 + length(max(customer_id)) * 0 "
                f"+ length(max(channel)) * 0 FROM {ev}",
        "group_by": f"SELECT count(*) FROM (SELECT customer_id, min(t) FROM {ev} "
                    "GROUP BY customer_id)",
        "window": "SELECT count(s1) FROM (SELECT max(t) FILTER (WHERE step = 1) OVER ("
                  "PARTITION BY customer_id ORDER BY t, step ROWS BETWEEN UNBOUNDED PRECEDING "
                  f"AND 1 PRECEDING) AS s1 FROM {ev}) WHERE s1 IS NOT NULL",
        "asof": f"SELECT count(*) FROM (SELECT customer_id, t FROM {ev} WHERE step = 2) b "
                f"ASOF JOIN (SELECT customer_id, t AS t1 FROM {ev} WHERE step = 1) a "
                f"ON a.customer_id = b.customer_id AND a.t1 <= b.t WHERE b.t - a.t1 <= {window_us}",
        # every (step-1, step-2) pair of a customer within the window: no sort, but the
        # rows grow with the square of a customer's events, so it is a floor, not a plan
        "pairs": f"SELECT count(*) FROM (SELECT b.customer_id, b.t, max(a.t1) FROM "
                 f"(SELECT customer_id, t FROM {ev} WHERE step = 2) b JOIN "
                 f"(SELECT customer_id, t AS t1 FROM {ev} WHERE step = 1) a "
                 f"ON a.customer_id = b.customer_id AND a.t1 <= b.t AND b.t - a.t1 <= {window_us} "
                 "GROUP BY b.customer_id, b.t)",
        # a single-pass plan would scan each customer's sorted events with list_reduce;
        # building those lists alone:
        "lists": f"SELECT sum(len(l)) FROM (SELECT customer_id, list_sort(list(t * 8 + step)) "
                 f"AS l FROM {ev} GROUP BY customer_id)",
    }


def _fmt_target(seconds: float, target: float | None) -> str:
    if target is None:
        return "no target at this size"
    verdict = "met" if seconds < target else "NOT met"
    return f"target < {target:g} s: x{seconds / target:.2f} ({verdict})"


def run(sizes: tuple[int, ...] = (10_000_000, 100_000_000)) -> list[dict]:
    rows = []
    for n in sizes:
        path, gen_s = events_parquet(n)
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        assert meta.num_rows == n, (meta.num_rows, n)
        parquet_mb = path.stat().st_size / 2**20
        first_rg = pf.read_row_group(0)
        data_mb = first_rg.nbytes / first_rg.num_rows * n / 2**20  # in-memory Arrow size
        print(f"data    {n:>11,} events: "
              + (f"generated in {gen_s:.1f} s" if gen_s is not None else "cached")
              + f", {parquet_mb:,.0f} MB Parquet, {data_mb:,.0f} MB in memory (Arrow) ({path})",
              flush=True)

        r = measure(ENGINE_CODE.format(path=str(path), steps=STEPS, window=WINDOW_S))
        target = TARGET_S.get(n)
        row = {"events": n, "generate_s": gen_s, "parquet_mb": parquet_mb, "data_mb": data_mb,
               "wall_s": r["wall_s"], "funnel_s": r["funnel_s"],
               "peak_rss_mb": r["peak_rss_mb"], "counts": r["counts"],
               "in_progress": r["in_progress"], "threads": r["threads"], "target_s": target,
               "target_ratio": r["funnel_s"] / target if target else None}
        print(f"funnel  {n:>11,} events: {r['funnel_s']:7.1f} s "
              f"(wall incl. imports {r['wall_s']:.1f} s), {n / r['funnel_s']:>12,.0f} events/s, "
              f"peak RSS {r['peak_rss_mb']:7,.0f} MB "
              f"({r['peak_rss_mb'] / data_mb:.2f} x data in memory), "
              f"{_fmt_target(r['funnel_s'], target)}, DuckDB threads {r['threads']}",
              flush=True)
        print("        customers per step: "
              + " > ".join(f"{s} {c:,}" for s, c in zip(STEPS, r["counts"], strict=True)),
              flush=True)

        f = measure(FLOOR_CODE.format(queries=floor_queries(path)))
        floor_s = {k: f[f"{k}_s"] for k in FLOOR_LABELS}
        row.update(floor_s=floor_s, floor_peak_rss_mb=f["peak_rss_mb"])
        print(f"floor   {n:>11,} events (DuckDB alone, threads {f['threads']}): "
              + "; ".join(f"{label} {floor_s[k]:.2f} s" for k, label in FLOOR_LABELS.items()),
              flush=True)
        if target:
            first = min(floor_s[k] for k in ("window", "asof", "pairs", "lists"))
            print(f"        the cheapest order-aware pass alone: {first:.2f} s "
                  f"(x{first / target:.2f} of the {target:g} s target), before the other "
                  "levels, the chosen attempt and the per-step table", flush=True)

        if n <= PANDAS_MAX_EVENTS:
            p = measure(PANDAS_CODE.format(path=str(path), steps=STEPS, window=WINDOW_S))
            match = p["counts"] == r["counts"]
            ratio = p["pandas_s"] / r["funnel_s"]
            row.update(pandas_s=p["pandas_s"], pandas_wall_s=p["wall_s"],
                       pandas_peak_rss_mb=p["peak_rss_mb"], pandas_counts=p["counts"],
                       counts_match=match, pandas_ratio=ratio)
            print(f"pandas  {n:>11,} events: {p['pandas_s']:7.1f} s "
                  f"(wall incl. imports {p['wall_s']:.1f} s), "
                  f"{n / p['pandas_s']:>12,.0f} events/s, peak RSS {p['peak_rss_mb']:7,.0f} MB; "
                  f"pandas/engine time x{ratio:.1f}, memory "
                  f"x{p['peak_rss_mb'] / r['peak_rss_mb']:.1f}; counts "
                  + ("match" if match else f"DIFFER: pandas {p['counts']}"), flush=True)
        rows.append(row)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"ratio {b['events'] // a['events']}x events: time "
              f"x{b['funnel_s'] / a['funnel_s']:.1f}, "
              f"peak memory x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")
    return rows


if __name__ == "__main__":
    run()
