"""Ordered funnel against ClickHouse ``windowFunnel`` (chDB), side by side on the same file.

Targets (issue 15, ratios measured in the same run, never absolute times on a shared machine):
``cxanalysis.funnel.funnel(...).table()`` with steps visit > product_view > add_to_cart >
checkout > purchase and a 7-day window (``mode="ordered"``, ``windowFunnel`` semantics) — the
full per-step table: customers per step, in progress, median and p90 step times — within
**1.5x the wall time** of ClickHouse's ``windowFunnel`` run through chDB on the same Parquet
file (per-level counts), with **peak memory <= chDB's** at 10M events and **<= 4 GB** by
default at 100M. The customers per step must equal chDB's (checked here). chDB is a
benchmark-only dependency (``pip install -e .[bench]``); without it the anchor is skipped.
Each size prints one line with the anchor, both figures and the ratios (wall, CPU seconds,
peak memory); CPU seconds (user + system of the whole child) are steadier than wall when
the machine is shared. With ``repeats`` > 1 the two run alternately and medians are shown.

The package side opens its connection like every notebook does
(:func:`cxanalysis.duckdb_settings.connect`: bounded ``memory_limit`` and a spill folder by
default), so the memory figure is the default one, with no environment variable.

What is timed: in a fresh child process, from ``ibis.duckdb.connect()`` and
``read_parquet`` to the per-step table (``funnel(...).table()``); interpreter start and library
imports are excluded from that figure (they are in ``wall``), including Ibis's DuckDB backend
module, which Ibis imports on the first connect (about 0.3 s; before 2026-12-02 it fell inside
the timed section). The pandas figure likewise runs
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
#: issue 15: wall <= 1.5x chDB's windowFunnel; peak memory <= chDB's (10M) / <= 4 GB (100M)
TARGET_RATIO = 1.5
MEMORY_CAP_MB = {100_000_000: 4096}
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
from cxanalysis.duckdb_settings import connect
import cxanalysis.funnel as fm
from cxanalysis.funnel import funnel
# Ibis loads its DuckDB backend module (and its SQL compilers: about 0.3 s) on the first
# connect; it is a library import, outside the timed section like chDB's ``import chdb``
import ibis.backends.duckdb  # noqa: F401
if {portable!r}:  # the window recursion that other engines run, for comparison
    fm._ASOF_BACKENDS = ()
t0 = time.perf_counter()
con = connect()  # the package's connection: UTC, bounded memory, spill folder
events = con.read_parquet({path!r})
ts_type = events.schema()["ts"]
assert ts_type.is_timestamp() and ts_type.timezone == "UTC", ts_type
res = funnel(events, {steps!r}, window_seconds={window})
tab = res.table()
result["funnel_s"] = time.perf_counter() - t0
result["counts"] = [int(x) for x in tab["customers"]]
result["in_progress"] = [int(x) for x in tab["in_progress"]]
result["threads"] = con.raw_sql("SELECT current_setting('threads')").fetchone()[0]
result["memory_limit"] = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
result["median_h"] = [float(x) for x in tab["median_hours_from_previous"].iloc[1:]]
"""

# The anchor: ClickHouse's windowFunnel through chDB (in-process ClickHouse), per-level
# counts from the same Parquet file; timestamps as epoch microseconds (UInt64) so the window
# is compared in whole microseconds, as in cxanalysis.
CHDB_CODE = """
import time
import chdb
steps = {steps!r}
conds = ", ".join("event = '%s'" % s for s in steps)
names = ", ".join("'%s'" % s for s in steps)
sql = ("SELECT level, count() FROM (SELECT customer_id, windowFunnel({window_us})("
       "toUInt64(toUnixTimestamp64Micro(ts)), " + conds + ") AS level "
       "FROM file('{path}', Parquet) WHERE event IN (" + names + ") GROUP BY customer_id) "
       "GROUP BY level ORDER BY level")
t0 = time.perf_counter()
out = str(chdb.query(sql, "CSV"))
result["funnel_s"] = time.perf_counter() - t0
by = dict(tuple(int(x) for x in line.split(",")) for line in out.strip().splitlines())
result["counts"] = [sum(v for k, v in by.items() if k >= j) for j in range(1, len(steps) + 1)]
result["version"] = chdb.__version__
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


def _have_chdb() -> bool:
    import importlib.util

    return importlib.util.find_spec("chdb") is not None


def _median(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def _verdict(ratio: float, target: float) -> str:
    return f"x{ratio:.2f} (target <= {target:g}: {'met' if ratio <= target else 'NOT met'})"


def run(sizes: tuple[int, ...] = (10_000_000, 100_000_000), repeats: int = 1,
        floor: bool = False, pandas: bool = False, portable: bool = False) -> list[dict]:
    """Per size: chDB's ``windowFunnel`` (the anchor) and ``funnel(...).table()``, run
    ``repeats`` times alternately in fresh children (medians); optionally the engine's floor
    passes, the pandas baseline of the earlier issue and the portable window recursion
    (what runs on other engines) on DuckDB."""
    from tqdm import tqdm

    rows = []
    anchor = _have_chdb()
    if not anchor:
        print("chDB is not installed (pip install -e '.[bench]'): no windowFunnel anchor",
              flush=True)
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
        ours, theirs = [], []
        jobs = [("chdb", k) for k in range(repeats) if anchor] + [("ours", k)
                                                                  for k in range(repeats)]
        jobs.sort(key=lambda j: (j[1], j[0]))  # alternate: chdb, ours, chdb, ours, ...
        for who, _k in tqdm(jobs, desc=f"funnel {n:,} events", unit="run", leave=False):
            if who == "chdb":
                theirs.append(measure(CHDB_CODE.format(path=str(path), steps=STEPS,
                                                       window_us=WINDOW_S * 10**6)))
            else:
                ours.append(measure(ENGINE_CODE.format(path=str(path), steps=STEPS,
                                                       window=WINDOW_S, portable=False)))
        r = ours[-1]
        row = {"events": n, "generate_s": gen_s, "parquet_mb": parquet_mb, "data_mb": data_mb,
               "repeats": repeats, "funnel_s": _median(ours, "funnel_s"),
               "wall_s": _median(ours, "wall_s"), "cpu_s": _median(ours, "cpu_s"),
               "peak_rss_mb": _median(ours, "peak_rss_mb"), "counts": r["counts"],
               "in_progress": r["in_progress"], "threads": r["threads"],
               "memory_limit": r["memory_limit"]}
        cap = MEMORY_CAP_MB.get(n)
        line = (f"funnel  {n:>11,} events: cxanalysis {row['funnel_s']:.1f} s, "
                f"{row['cpu_s']:.1f} CPU s, peak {row['peak_rss_mb']:,.0f} MB "
                f"(DuckDB memory_limit {row['memory_limit']}, threads {row['threads']})")
        if theirs:
            c = theirs[-1]
            ch = {"chdb_s": _median(theirs, "funnel_s"), "chdb_cpu_s": _median(theirs, "cpu_s"),
                  "chdb_peak_rss_mb": _median(theirs, "peak_rss_mb"),
                  "chdb_counts": c["counts"], "chdb_version": c["version"]}
            ch["counts_match"] = all(x["counts"] == c["counts"] for x in ours + theirs)
            ch["ratio_wall"] = row["funnel_s"] / ch["chdb_s"]
            ch["ratio_cpu"] = row["cpu_s"] / ch["chdb_cpu_s"]
            ch["ratio_memory"] = row["peak_rss_mb"] / ch["chdb_peak_rss_mb"]
            row.update(ch)
            line = (f"funnel  {n:>11,} events: anchor chDB windowFunnel {ch['chdb_s']:.1f} s, "
                    f"{ch['chdb_cpu_s']:.1f} CPU s, peak {ch['chdb_peak_rss_mb']:,.0f} MB | "
                    f"cxanalysis full table {row['funnel_s']:.1f} s, {row['cpu_s']:.1f} CPU s, "
                    f"peak {row['peak_rss_mb']:,.0f} MB | ratio wall "
                    f"{_verdict(ch['ratio_wall'], TARGET_RATIO)}, CPU x{ch['ratio_cpu']:.2f}, "
                    f"memory " + (f"{_verdict(ch['ratio_memory'], 1.0)}" if cap is None else
                                  f"x{ch['ratio_memory']:.2f}")
                    + " | counts " + ("equal" if ch["counts_match"] else
                                      f"DIFFER: chDB {c['counts']}")
                    + f" (median of {repeats}, chDB {c['version']}, DuckDB memory_limit "
                    f"{row['memory_limit']}, threads {row['threads']})")
        if cap is not None:
            line += (f" | peak {row['peak_rss_mb']:,.0f} MB vs {cap:,} MB cap: "
                     + ("met" if row["peak_rss_mb"] <= cap else "NOT met"))
        print(line, flush=True)
        print("        customers per step: "
              + " > ".join(f"{s} {c:,}" for s, c in zip(STEPS, r["counts"], strict=True))
              + "; in progress " + ", ".join(f"{x:,}" for x in r["in_progress"]), flush=True)

        if portable:
            w = measure(ENGINE_CODE.format(path=str(path), steps=STEPS, window=WINDOW_S,
                                           portable=True))
            row.update(portable_s=w["funnel_s"], portable_cpu_s=w["cpu_s"],
                       portable_peak_rss_mb=w["peak_rss_mb"])
            vs = (f" | ratio to chDB wall x{w['funnel_s'] / row['chdb_s']:.2f}, memory "
                  f"x{w['peak_rss_mb'] / row['chdb_peak_rss_mb']:.2f}" if theirs else "")
            print(f"portable {n:>10,} events: window recursion (other engines) "
                  f"{w['funnel_s']:.1f} s, {w['cpu_s']:.1f} CPU s, peak "
                  f"{w['peak_rss_mb']:,.0f} MB | ASOF chain is x{w['funnel_s'] / row['funnel_s']:.2f} "
                  f"faster, CPU x{w['cpu_s'] / row['cpu_s']:.2f}" + vs + " | counts "
                  + ("equal" if w["counts"] == r["counts"] else f"DIFFER: {w['counts']}"),
                  flush=True)
        if floor:
            f = measure(FLOOR_CODE.format(queries=floor_queries(path)))
            floor_s = {k: f[f"{k}_s"] for k in FLOOR_LABELS}
            row.update(floor_s=floor_s, floor_peak_rss_mb=f["peak_rss_mb"])
            print(f"floor   {n:>11,} events (DuckDB alone, threads {f['threads']}): "
                  + "; ".join(f"{label} {floor_s[k]:.2f} s" for k, label in FLOOR_LABELS.items()),
                  flush=True)
        if pandas and n <= PANDAS_MAX_EVENTS:
            p = measure(PANDAS_CODE.format(path=str(path), steps=STEPS, window=WINDOW_S))
            match = p["counts"] == r["counts"]
            ratio = p["pandas_s"] / row["funnel_s"]
            row.update(pandas_s=p["pandas_s"], pandas_peak_rss_mb=p["peak_rss_mb"],
                       pandas_counts_match=match, pandas_ratio=ratio)
            print(f"pandas  {n:>11,} events: baseline {p['pandas_s']:.1f} s | cxanalysis "
                  f"{row['funnel_s']:.1f} s | pandas/cxanalysis x{ratio:.1f}; counts "
                  + ("match" if match else f"DIFFER: pandas {p['counts']}"), flush=True)
        rows.append(row)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"ratio {b['events'] // a['events']}x events: time "
              f"x{b['funnel_s'] / a['funnel_s']:.1f}, "
              f"peak memory x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")
    return rows


if __name__ == "__main__":
    import sys

    run(tuple(int(a) for a in sys.argv[1:]) or (10_000_000, 100_000_000))
