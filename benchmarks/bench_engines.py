"""The same analyses on local Spark beside DuckDB: the 10M-event funnel and the
10M-customer experiment (issue 14, item 4).

Data: the funnel's events file of :mod:`benchmarks.bench_funnel` (seeded, ~10 events per
customer, 5 steps among 7 events) and the experiment world of
:mod:`benchmarks.bench_experiments` (one experiment, 50/50, orders and feedback), both
generated once and cached in ``data/bench/`` (git-ignored).

What is timed, each in a fresh child process (:func:`benchmarks._child.measure`):

- **DuckDB**: from opening the source (the events file through ``read_parquet`` as in
  bench_funnel; the experiment folder through ``open_source(validate=False)``) to the result
  table (``funnel(...).table()``; ``analyze(...).effects``).
- **Spark**: a local-mode session (``local[2]``, the machine's 2 cores, 4 GiB driver, no UI,
  8 shuffle partitions) started first and timed apart (``session_s``: JVM start); then from
  registering the Parquet files as views and ``open_source(ibis.pyspark.connect(session),
  validate=False)`` to the same result table. The analysis code is the same; only the
  source differs.

Both runs must give the same funnel counts and the same experiment effects (to 1e-9,
checked here as in tests/engines/); the ratio Spark time / DuckDB time is printed. Local
Spark on one machine is expected to be slower than DuckDB (JVM, a query planner built for
clusters, one process standing in for executors): the figure says what a team pays when it
moves to Spark before it needs to, and that the code runs there unchanged. Sizes: set
``CX_BENCH_ENGINES_EVENTS`` / ``CX_BENCH_ENGINES_CUSTOMERS`` (default 10,000,000 each) to run
smaller on a loaded machine, and ``CX_BENCH_ENGINES_PARTS=experiment`` (or ``funnel``) to run
one of the two.
"""

from __future__ import annotations

import os
import time

from benchmarks._child import ROOT, measure

STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]
METRICS = ["revenue", "orders", "revenue_per_order", "nps", "csat"]

SPARK_START = """
import os, sys, time
sys.path.insert(0, {tests!r})
from engines.conftest import java_home
if java_home():
    os.environ["JAVA_HOME"] = java_home()
_t = time.perf_counter()
from pyspark.sql import SparkSession
session = (SparkSession.builder.master("local[2]").appName("cxanalysis-bench")
           .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
           .config("spark.driver.memory", "4g").config("spark.sql.shuffle.partitions", "8")
           .config("spark.sql.warehouse.dir", __import__("tempfile").mkdtemp())
           .getOrCreate())
session.sparkContext.setLogLevel("ERROR")
session.range(1).count()
result["session_s"] = time.perf_counter() - _t
import ibis
con = ibis.pyspark.connect(session)
"""

FUNNEL_DUCKDB = """
import time
import ibis
from cxanalysis.funnel import funnel
t0 = time.perf_counter()
con = ibis.duckdb.connect()
con.raw_sql("SET TimeZone = 'UTC'")
events = con.read_parquet({path!r})
tab = funnel(events, {steps!r}).table()
result["funnel_s"] = time.perf_counter() - t0
result["counts"] = [int(x) for x in tab["customers"]]
result["median_hours"] = [float(x) for x in tab["median_hours_from_previous"].iloc[1:]]
"""

FUNNEL_SPARK = SPARK_START + """
from cxanalysis.data import open_source
from cxanalysis.funnel import funnel
t0 = time.perf_counter()
session.read.parquet({path!r}).createOrReplaceTempView("events")
src = open_source(con, validate=False)
res = funnel(src, {steps!r})
tab = res.table()
result["funnel_s"] = time.perf_counter() - t0
result["counts"] = [int(x) for x in tab["customers"]]
result["median_hours"] = [float(x) for x in tab["median_hours_from_previous"].iloc[1:]]
result["notes"] = list(res.notes)
session.stop()
"""

# The same analysis on either engine: the child opens ``src`` first, then runs this.
ANALYZE = """
res = analyze(src, "exp", primary_metric="conversion", secondary_metrics={metrics!r},
              guardrails={{}}, variance_reduction=True, sequential=False, bayesian=False)
eff = res.effects
result["analyze_s"] = time.perf_counter() - t0
num = eff.select_dtypes("number")
result["effects"] = num.to_numpy(float).tolist()
result["customers"] = int(sum(res.counts.values()))
"""

EXPERIMENT_DUCKDB = """
import time
from cxanalysis.data import open_source
from cxanalysis.experiments import analyze
t0 = time.perf_counter()
src = open_source({folder!r}, validate=False)
""" + ANALYZE

EXPERIMENT_SPARK = SPARK_START + """
from pathlib import Path
from cxanalysis.data import open_source
from cxanalysis.experiments import analyze
t0 = time.perf_counter()
for f in sorted(Path({folder!r}).glob("*.parquet")):
    session.read.parquet(str(f)).createOrReplaceTempView(f.stem)
src = open_source(con, validate=False)
""" + ANALYZE + "session.stop()\n"


def _same(a: list, b: list, rel: float = 1e-9) -> bool:
    import numpy as np

    return bool(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=rel, atol=1e-12,
                            equal_nan=True))


def _env_size(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def run(events: int | None = None, customers: int | None = None,
        parts: tuple[str, ...] | None = None) -> dict:
    """Measure the funnel on ``events`` rows and the experiment on ``customers`` customers,
    on DuckDB and on local Spark; print both and their ratio. ``parts`` (or
    ``CX_BENCH_ENGINES_PARTS``, comma-separated): ``funnel``, ``experiment`` (default both)."""
    events = events or _env_size("CX_BENCH_ENGINES_EVENTS", 10_000_000)
    customers = customers or _env_size("CX_BENCH_ENGINES_CUSTOMERS", 10_000_000)
    parts = parts or tuple(os.environ.get("CX_BENCH_ENGINES_PARTS", "funnel,experiment")
                           .split(","))
    tests = str(ROOT / "tests")
    out: dict = {}
    if "funnel" in parts:
        out["funnel"] = _funnel(events, tests)
    if "experiment" in parts:
        out["experiment"] = _experiment(customers, tests)
    return out


def _funnel(events: int, tests: str) -> dict:
    from benchmarks.bench_funnel import events_parquet

    path, gen = events_parquet(events)
    if gen is not None:
        print(f"engines: generated {events:,} events in {gen:.1f} s", flush=True)
    duck = measure(FUNNEL_DUCKDB.format(path=str(path), steps=STEPS))
    spark = measure(FUNNEL_SPARK.format(path=str(path), steps=STEPS, tests=tests))
    same = duck["counts"] == spark["counts"] and _same(duck["median_hours"],
                                                      spark["median_hours"], 1e-12)
    out = {"duckdb": duck, "spark": spark, "same": same}
    print(f"funnel {events:>11,} events  DuckDB {duck['funnel_s']:7.1f} s "
          f"(peak RSS {duck['peak_rss_mb']:,.0f} MB) | local Spark {spark['funnel_s']:7.1f} s "
          f"+ {spark['session_s']:.1f} s session start (driver RSS {spark['peak_rss_mb']:,.0f}"
          f" MB, JVM apart) | Spark/DuckDB x{spark['funnel_s'] / duck['funnel_s']:.1f} | "
          f"same counts and step times: {same} {duck['counts']}", flush=True)
    return out


def _experiment(customers: int, tests: str) -> dict:
    from benchmarks.bench_experiments import world

    t0 = time.perf_counter()
    folder, gen = world(customers)
    if gen is not None:
        print(f"engines: generated the {customers:,}-customer experiment world in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    duck = measure(EXPERIMENT_DUCKDB.format(folder=str(folder), metrics=METRICS))
    spark = measure(EXPERIMENT_SPARK.format(folder=str(folder), metrics=METRICS, tests=tests))
    same = duck["customers"] == spark["customers"] and _same(duck["effects"], spark["effects"])
    out = {"duckdb": duck, "spark": spark, "same": same}
    print(f"experiment {customers:>11,} customers  DuckDB {duck['analyze_s']:7.1f} s "
          f"(peak RSS {duck['peak_rss_mb']:,.0f} MB) | local Spark {spark['analyze_s']:7.1f} s "
          f"+ {spark['session_s']:.1f} s session start | Spark/DuckDB "
          f"x{spark['analyze_s'] / duck['analyze_s']:.1f} | same effects (1e-9): {same}",
          flush=True)
    return out


if __name__ == "__main__":
    run()
