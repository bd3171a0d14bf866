"""Experiment evaluation at scale: ``cxanalysis.experiments.analyze`` against tea-tasting.

Target (issue 15, item 5): one experiment with 10 million customers and 6 metrics
(conversion, revenue, orders, revenue per order, NPS, CSAT) with variance reduction (CUPED)
in at most 1.0x the time of tea-tasting, given the per-customer metrics it needs built with
Ibis from the same contract tables (the way a tea-tasting user would do it), in the same run;
also on the unvalidated path. tea-tasting is a benchmark-only dependency (the ``bench``
extra), never a runtime one.

The world is generated once per size and cached in ``data/bench/experiments_<n>/`` (git-ignored;
delete the folder to rebuild). It is written in chunks of customers with numpy and pyarrow, so
generation memory is bounded by the chunk, not by ``n``:

- ``customers``: ids ``C00000001``..., signup dates in 2023-2025;
- ``assignments``: one experiment ``exp``, 50/50 control/treatment, assigned uniformly over the
  30 days of October 2025;
- ``orders``: ~0.5 per customer spread over July-December 2025 (a 90-day pre-period and every
  14-day window are covered), customer-level purchase rates (gamma) so the pre-period predicts
  the window, and a real lift: treatment customers buy ~15 % more inside their window;
- ``feedback``: ~0.1 answers per customer with NPS (0-10) and CSAT (1-5), each sometimes missing;
- ``experiments``: the experiment row with its planned split.

Three measured calls per round, each in a fresh child interpreter
(:func:`benchmarks._child.measure`), rounds interleaved so machine load hits all alike, the
median of the rounds reported:

- **anchor, tea-tasting**: DuckDB through Ibis reads the Parquet files; the per-customer table
  (window and pre-period orders, revenue and conversion, window NPS points/answers and CSAT
  sum/answers; customers whose 14-day window has closed) is an Ibis expression, and
  ``tt.Experiment(...).analyze`` aggregates it in DuckDB (one ``group by variant``) and runs
  its tests: Mean with covariate (CUPED) for conversion, revenue and orders, RatioOfMeans
  (delta method) for revenue per order, NPS and CSAT.
- **cxanalysis, validated source**: ``open_source(validate=True)`` (the contract check, timed
  apart: issue 15, item 4) then ``analyze`` with the same metrics (sequential monitoring and
  the Bayesian view off: tea-tasting has neither). The validated key lets ``analyze`` skip its
  own per-customer pass over the assignments.
- **cxanalysis, unvalidated source**: ``open_source(validate=False)`` then ``analyze``, which
  then checks the assignment key itself (one distinct count).

Once per size the anchor is also split (``split=True``): the Ibis per-customer table stored
by DuckDB, then tea-tasting alone on the stored table, to show where its time goes.

The figure compared is the analysis call (``analyze`` / building the per-customer expression
and ``analyze``); the open is printed beside it. The estimates of both are compared (the
absolute differences must agree: same data, same definitions). cxanalysis additionally
reports every unadjusted estimate beside the CUPED one, the checks (SRM, balance, windows
still open) and the decision.

Run: ``python -m benchmarks experiments`` (1M and 10M customers) or
``python benchmarks/bench_experiments.py 1000000``; needs the ``bench`` extra.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._child import CACHE, cached, measure

CHUNK = 500_000
SEED = 20251001
LIFT = 0.15  # relative extra purchases of treatment customers inside their window

_DAY = 86_400
_JUL1 = int(np.datetime64("2025-07-01T00:00:00", "s").astype(np.int64))
_OCT1 = int(np.datetime64("2025-10-01T00:00:00", "s").astype(np.int64))
_JAN1 = int(np.datetime64("2026-01-01T00:00:00", "s").astype(np.int64))
_SPAN = _JAN1 - _JUL1  # seconds of order and feedback history (184 days)
_TS = pa.timestamp("us", tz="UTC")

SCHEMAS = {
    "customers": pa.schema([("customer_id", pa.string()), ("signup_date", pa.date32())]),
    "assignments": pa.schema([("experiment_id", pa.string()), ("customer_id", pa.string()),
                              ("variant", pa.string()), ("assigned_at", _TS)]),
    "orders": pa.schema([("order_id", pa.string()), ("customer_id", pa.string()),
                         ("ts", _TS), ("channel", pa.string()), ("amount", pa.float64())]),
    "feedback": pa.schema([("customer_id", pa.string()), ("ts", _TS), ("channel", pa.string()),
                           ("event", pa.string()), ("nps", pa.int64()), ("csat", pa.int64())]),
}


def _ids(prefix: str, start: int, stop: int, width: int) -> pa.Array:
    """Strings ``prefix`` + zero-padded numbers ``start..stop-1``, built from Arrow buffers
    (no Python string per row)."""
    k = stop - start
    if k == 0:
        return pa.array([], pa.string())
    num = np.arange(start, stop, dtype=np.int64)
    p = prefix.encode()
    row = len(p) + width
    buf = np.empty((k, row), dtype=np.uint8)
    buf[:, :len(p)] = np.frombuffer(p, dtype=np.uint8)
    for j in range(width):
        buf[:, len(p) + j] = num // 10 ** (width - 1 - j) % 10 + 48
    offsets = np.arange(0, (k + 1) * row, row, dtype=np.int32)
    return pa.StringArray.from_buffers(k, pa.py_buffer(offsets), pa.py_buffer(buf))


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds.astype(np.int64) * 1_000_000, type=_TS)


def _pick(rng: np.random.Generator, words: list[str], k: int,
          p: list[float] | None = None) -> pa.Array:
    idx = rng.choice(len(words), size=k, p=p).astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(words)).cast(pa.string())


def _nullable_int(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), mask=missing, type=pa.int64())


def _chunk(rng: np.random.Generator, lo: int, hi: int, order_base: int) -> dict[str, pa.Table]:
    k = hi - lo
    cid = _ids("C", lo + 1, hi + 1, 8)
    signup = rng.integers(np.datetime64("2023-01-01", "D").astype(np.int64),
                          np.datetime64("2025-06-30", "D").astype(np.int64), k)
    treat = rng.random(k) < 0.5
    assigned = _OCT1 + np.floor(rng.random(k) * 30 * _DAY).astype(np.int64)

    # orders: customer-level expected orders over the whole history (mean 0.5, skewed)
    lam = rng.gamma(0.4, 0.5 / 0.4, k)
    spend = rng.gamma(4.0, 0.25, k)  # customer-level basket size factor (mean 1)
    n_base = rng.poisson(lam)
    n_extra = rng.poisson(lam * (14 * _DAY / _SPAN) * LIFT * treat)
    own = np.concatenate([np.repeat(np.arange(k), n_base), np.repeat(np.arange(k), n_extra)])
    m_base, m = int(n_base.sum()), len(own)
    ts = np.empty(m, dtype=np.int64)
    ts[:m_base] = _JUL1 + np.floor(rng.random(m_base) * _SPAN)
    ts[m_base:] = assigned[own[m_base:]] + np.floor(rng.random(m - m_base) * 14 * _DAY)
    amount = np.round(rng.gamma(2.0, 30.0, m) * spend[own], 2)
    orders = pa.table({
        "order_id": _ids("O", order_base, order_base + m, 10),
        "customer_id": cid.take(pa.array(own)),
        "ts": _ts(ts),
        "channel": _pick(rng, ["web", "app", "store"], m, [0.5, 0.3, 0.2]),
        "amount": amount,
    }, schema=SCHEMAS["orders"])

    # feedback: ~0.1 answers per customer; treatment answers after assignment a bit happier
    n_fb = rng.poisson(0.1, k)
    fown = np.repeat(np.arange(k), n_fb)
    f = len(fown)
    fts = _JUL1 + np.floor(rng.random(f) * _SPAN).astype(np.int64)
    happy = treat[fown] & (fts >= assigned[fown])
    nps = np.clip(np.round(rng.normal(7.0 + 0.4 * happy, 2.2)), 0, 10)
    csat = np.clip(np.round(rng.normal(3.8 + 0.15 * happy, 1.0)), 1, 5)
    feedback = pa.table({
        "customer_id": cid.take(pa.array(fown)),
        "ts": _ts(fts),
        "channel": _pick(rng, ["web", "app", "store", "call_centre"], f),
        "event": _pick(rng, ["purchase", "delivery", "support_contact"], f),
        "nps": _nullable_int(nps, rng.random(f) < 0.3),
        "csat": _nullable_int(csat, rng.random(f) < 0.2),
    }, schema=SCHEMAS["feedback"])

    return {
        "customers": pa.table({"customer_id": cid,
                               "signup_date": pa.array(signup.astype(np.int32), pa.date32())},
                              schema=SCHEMAS["customers"]),
        "assignments": pa.table({
            "experiment_id": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(k, np.int32)), pa.array(["exp"])).cast(pa.string()),
            "customer_id": cid,
            "variant": pa.DictionaryArray.from_arrays(
                pa.array(treat.astype(np.int32)),
                pa.array(["control", "treatment"])).cast(pa.string()),
            "assigned_at": _ts(assigned),
        }, schema=SCHEMAS["assignments"]),
        "orders": orders,
        "feedback": feedback,
    }


def generate(n: int, out: Path, seed: int = SEED, chunk: int = CHUNK) -> dict[str, int]:
    """Write the benchmark world with ``n`` customers to ``out`` (replaced); return row counts."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    writers = {name: pq.ParquetWriter(tmp / f"{name}.parquet", schema)
               for name, schema in SCHEMAS.items()}
    rows = dict.fromkeys(SCHEMAS, 0)
    try:
        for lo in range(0, n, chunk):
            tables = _chunk(rng, lo, min(lo + chunk, n), rows["orders"])
            for name, t in tables.items():
                writers[name].write_table(t)
                rows[name] += t.num_rows
    finally:
        for w in writers.values():
            w.close()
    pq.write_table(pa.table({
        "experiment_id": ["exp"], "name": ["benchmark experiment"],
        "hypothesis": ["treatment raises conversion"], "control": ["control"],
        "start": pa.array([_OCT1 * 1_000_000], _TS),
        "end": pa.array([(_OCT1 + 30 * _DAY) * 1_000_000], _TS),
        "planned_split": ["control:0.5,treatment:0.5"]}), tmp / "experiments.parquet")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return rows


def world(n: int) -> tuple[Path, dict | None]:
    """The cached folder for ``n`` customers, generated in a measured child if missing."""
    folder = CACHE / f"experiments_{n}"
    return cached(folder, "experiments.parquet", f"""
        from pathlib import Path
        from benchmarks.bench_experiments import generate
        result.update(generate({n}, Path({str(folder)!r})))
        result["mb_on_disk"] = sum(p.stat().st_size for p in Path({str(folder)!r}).glob("*"))
        result["mb_on_disk"] /= 2**20
    """)


CX = """
import time
_t = time.perf_counter()
from cxanalysis.data import open_source
from cxanalysis.experiments import analyze
result["import_s"] = time.perf_counter() - _t
_t = time.perf_counter()
src = open_source({folder!r}, validate={validated})
result["open_s"] = time.perf_counter() - _t
_t = time.perf_counter()
res = analyze(src, "exp", primary_metric="conversion",
              secondary_metrics=["revenue", "orders", "revenue_per_order", "nps", "csat"],
              guardrails={{}}, variance_reduction=True, sequential=False, bayesian=False)
result["analyze_s"] = time.perf_counter() - _t
rep = res.reported()
result["effects"] = {{r.base_metric: [float(r.abs_diff), float(r.se), float(r.p_value)]
                     for r in rep.itertuples()}}
result["decision"] = res.decision.verdict
result["customers"] = int(rep.n_control.iloc[0] + rep.n_treatment.iloc[0])
result["variance_reduction"] = float(rep.variance_reduction.iloc[0])
"""

TEA = """
import datetime as dt
import time
_t = time.perf_counter()
import ibis
import tea_tasting as tt
from ibis import _
result["import_s"] = time.perf_counter() - _t
_t = time.perf_counter()
con = ibis.duckdb.connect()
a, o, f = (con.read_parquet({folder!r} + f"/{{t}}.parquet")
           for t in ("assignments", "orders", "feedback"))
result["open_s"] = time.perf_counter() - _t
_t = time.perf_counter()
# the end of observation; customers whose 14-day window has not closed by then are left out
end = max(o.ts.max().execute(), f.ts.max().execute())
day = ibis.interval(days=1)
u = a.filter((_.experiment_id == "exp") & (_.assigned_at <= end - dt.timedelta(days=14)))
u = u.select("customer_id", "variant", t0=u.assigned_at)
jo = u.join(o, "customer_id").filter(lambda t: (t.ts >= t.t0 - 90 * day)
                                     & (t.ts < t.t0 + 14 * day))
post, pre = jo.ts >= jo.t0, jo.ts < jo.t0
og = jo.group_by("customer_id").aggregate(
    orders=jo.order_id.count(where=post), pre_orders=jo.order_id.count(where=pre),
    revenue=jo.amount.sum(where=post), pre_revenue=jo.amount.sum(where=pre))
jf = u.join(f, "customer_id").filter(lambda t: (t.ts >= t.t0) & (t.ts < t.t0 + 14 * day))
points = ibis.cases((jf.nps >= 9, 100.0), (jf.nps <= 6, -100.0), (jf.nps.notnull(), 0.0),
                    else_=None)
fg = jf.group_by("customer_id").aggregate(
    nps_points=points.sum(), nps_answers=jf.nps.count(),
    csat_sum=jf.csat.sum().cast("float64"), csat_answers=jf.csat.count())
per = (u.left_join(og, "customer_id").drop("customer_id_right")
       .left_join(fg, "customer_id").drop("customer_id_right"))
zero = ["orders", "pre_orders", "revenue", "pre_revenue", "nps_points", "nps_answers",
        "csat_sum", "csat_answers"]
per = per.fill_null(dict.fromkeys(zero, 0))
per = per.mutate(converted=(per.orders > 0).cast("int64"),
                 pre_converted=(per.pre_orders > 0).cast("int64"))
exp = tt.Experiment(
    conversion=tt.Mean("converted", "pre_converted"),
    revenue=tt.Mean("revenue", "pre_revenue"),
    orders=tt.Mean("orders", "pre_orders"),
    revenue_per_order=tt.RatioOfMeans("revenue", "orders"),
    nps=tt.RatioOfMeans("nps_points", "nps_answers"),
    csat=tt.RatioOfMeans("csat_sum", "csat_answers"),
)
res = exp.analyze(per, control="control")
result["analyze_s"] = time.perf_counter() - _t
result["effects"] = {{m: [float(r.effect_size),
                         float((r.effect_size_ci_upper - r.effect_size_ci_lower) / 2 / 1.959964),
                         float(r.pvalue)] for m, r in res.items()}}
"""

#: The anchor split in two: the per-customer table stored by DuckDB, then tea-tasting's
#: aggregation and tests alone on the stored table (where the anchor's time goes).
TEA_SPLIT = TEA.replace(
    "exp = tt.Experiment(",
    "_t2 = time.perf_counter()\n"
    "per = con.create_table('per_customer', per)\n"
    "result['per_customer_s'] = time.perf_counter() - _t2\n"
    "_t2 = time.perf_counter()\n"
    "exp = tt.Experiment(", 1).replace(
    'result["analyze_s"] = time.perf_counter() - _t',
    'result["analyze_s"] = time.perf_counter() - _t\n'
    'result["tea_only_s"] = time.perf_counter() - _t2', 1)

VALIDATE = """
import time
_t = time.perf_counter()
from cxanalysis.data import validate
result["import_s"] = time.perf_counter() - _t
_t = time.perf_counter()
rep = validate({folder!r})
result["validate_s"] = time.perf_counter() - _t
result["errors"] = len(rep.errors)
"""

#: The cxanalysis figure may take at most this multiple of the tea-tasting anchor.
TARGET_RATIO = 1.0


def _median(runs: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in runs]))


def _agreement(cx: dict, tea: dict) -> tuple[float, float]:
    """Largest relative difference of the absolute effects and of their standard errors
    (tea-tasting's standard error recovered from its interval; it uses t quantiles, so the
    standard errors agree to the t/z quantile ratio, ~1e-6 at these sizes)."""
    d = [abs(cx[m][0] - tea[m][0]) / max(abs(tea[m][0]), 1e-12) for m in tea]
    s = [abs(cx[m][1] - tea[m][1]) / tea[m][1] for m in tea]
    return max(d), max(s)


def run(sizes: tuple[int, ...] = (1_000_000, 10_000_000), rounds: int = 3,
        split: bool = True, validate: bool = False) -> list[dict]:
    """Generate (or reuse) each world, then measure tea-tasting and ``analyze`` (validated
    and unvalidated source) in ``rounds`` interleaved rounds; print the medians and ratios.
    ``split``: also time the anchor's two parts once; ``validate``: the contract check."""
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        folder, gen = world(n)
        row: dict = {"customers": n, "folder": str(folder)}
        if gen is None:
            print(f"experiments {n:>10,} customers: world cached in {folder} "
                  f"(delete it to regenerate)", flush=True)
        else:
            row["generate"] = gen
            print(f"experiments {n:>10,} customers: generated in {gen['wall_s']:6.1f} s, "
                  f"{gen['orders']:,} orders, {gen['feedback']:,} answers, "
                  f"{gen['mb_on_disk']:5.0f} MB Parquet "
                  f"({time.perf_counter() - t0:.1f} s with the child)", flush=True)
        runs: dict[str, list[dict]] = {"tea": [], "cx_validated": [], "cx_unvalidated": []}
        for i in range(rounds):
            runs["tea"].append(measure(TEA.format(folder=str(folder))))
            runs["cx_validated"].append(measure(CX.format(folder=str(folder), validated=True)))
            runs["cx_unvalidated"].append(measure(CX.format(folder=str(folder),
                                                            validated=False)))
            print(f"experiments {n:>10,} customers round {i + 1}/{rounds}: "
                  + ", ".join(f"{k} {v[-1]['analyze_s']:.2f} s" for k, v in runs.items()),
                  flush=True)
        row["runs"] = runs
        tea = _median(runs["tea"], "analyze_s")
        tea_open = _median(runs["tea"], "open_s")
        tea_mb = _median(runs["tea"], "peak_rss_mb")
        for key, label in (("cx_validated", "validated source"),
                           ("cx_unvalidated", "unvalidated source")):
            cx = _median(runs[key], "analyze_s")
            cx_open = _median(runs[key], "open_s")
            cx_mb = _median(runs[key], "peak_rss_mb")
            d, s = _agreement(runs[key][-1]["effects"], runs["tea"][-1]["effects"])
            row[key] = {"analyze_s": cx, "ratio": cx / tea}
            print(f"experiments {n:>10,} customers x 6 metrics + CUPED, {label}: anchor "
                  f"tea-tasting (Ibis per-customer + analyze) {tea:6.2f} s, cxanalysis "
                  f"analyze {cx:6.2f} s, ratio x{cx / tea:.2f} (target <= "
                  f"x{TARGET_RATIO:g}: {'ok' if cx / tea <= TARGET_RATIO else 'MISSES'}); "
                  f"open {tea_open:.2f} s vs {cx_open:.2f} s; peak RSS {tea_mb:.0f} MB vs "
                  f"{cx_mb:.0f} MB; effects agree to {d:.1e} (se {s:.1e}); median of "
                  f"{rounds}, machine shared", flush=True)
        if split:
            r = measure(TEA_SPLIT.format(folder=str(folder)))
            row["tea_split"] = r
            print(f"experiments {n:>10,} customers, where the anchor's time goes: the Ibis "
                  f"per-customer table stored {r['per_customer_s']:.2f} s, tea-tasting alone "
                  f"on it {r['tea_only_s']:.2f} s (once, machine shared)", flush=True)
        if validate:
            r = measure(VALIDATE.format(folder=str(folder)))
            print(f"experiments {n:>10,} customers contract validation alone: "
                  f"{r['validate_s']:6.2f} s, {r['errors']} errors", flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    import sys

    run(tuple(int(a) for a in sys.argv[1:]) or (1_000_000, 10_000_000))
