"""Experiment evaluation at scale: ``cxanalysis.experiments.analyze`` on 1M and 10M customers.

Target (from the issue): one experiment with 10 million customers and 6 metrics (conversion,
revenue, orders, revenue per order, NPS, CSAT) with variance reduction (CUPED), read from
Parquet, in under 5 s on this 2-core machine; report time and peak memory.

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

Every measured call runs in a fresh child interpreter (:func:`benchmarks._child.measure`).
The headline time is ``analyze`` on a source validated on open (``open_source(validate=True)``,
timed apart as a one-off contract check): the validated key (experiment_id, customer_id) lets
``analyze`` skip its own per-customer pass over the assignments. The same call on an
unvalidated source (``validate=False``: ``analyze`` then checks for customers in several
variants itself) and the full call (sequential monitoring and the Bayesian view added) are
timed too. Imports are reported apart.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._child import CACHE, cached, measure

TARGET_S = 5.0
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


ANALYZE = """
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
              guardrails={{}}, variance_reduction=True, sequential={full}, bayesian={full})
result["analyze_s"] = time.perf_counter() - _t
prim = res.primary()
result["decision"] = res.decision.verdict
result["primary_estimate"] = str(prim.metric)
result["primary_p_value"] = float(prim.p_value)
result["primary_rel_lift"] = float(prim.rel_lift)
result["variance_reduction"] = float(prim.variance_reduction)
result["metrics"] = int(res.effects.base_metric.nunique())
result["customers_analysed"] = int(sum(res.counts.values()))
result["srm_p_value"] = float(res.srm_p_value)
"""

VALIDATE = """
import time
_t = time.perf_counter()
from cxanalysis.data import validate
result["import_s"] = time.perf_counter() - _t
_t = time.perf_counter()
rep = validate({folder!r})
result["validate_s"] = time.perf_counter() - _t
result["errors"] = len(rep.errors)
result["warnings"] = len(rep.warnings)
result["problems"] = [f"{{p.severity}} {{p.table}}.{{p.column}} {{p.rule}}: {{p.rows}} rows"
                      for p in rep.problems][:5]
"""


def _line(label: str, n: int, r: dict) -> str:
    t = r["analyze_s"]
    return (f"experiments {n:>10,} customers {label}: analyze {t:6.2f} s (open "
            f"{r['open_s']:.2f} s and imports {r['import_s']:.1f} s apart), "
            f"{n / t:>11,.0f} customers/s, peak RSS {r['peak_rss_mb']:6.0f} MB, "
            f"x{t / TARGET_S:.2f} of the {TARGET_S:g} s target "
            f"({'ok' if t < TARGET_S else 'MISSES'}); {r['metrics']} metrics, decision "
            f"{r['decision']!r}, primary {r['primary_estimate']} p = {r['primary_p_value']:.3g}, "
            f"lift {r['primary_rel_lift']:+.1%}, variance reduction "
            f"{r['variance_reduction']:.0%}")


def run(sizes: tuple[int, ...] = (1_000_000, 10_000_000), validate: bool = True,
        full: bool = True) -> list[dict]:
    """Generate (or reuse) each world, then measure ``analyze`` (6 metrics, CUPED, no
    sequential/Bayesian), optionally contract validation and the full call."""
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
            print(f"experiments {n:>10,} customers: generated in {gen['wall_s']:6.1f} s "
                  f"({n / gen['wall_s']:>9,.0f} customers/s), {gen['orders']:,} orders, "
                  f"{gen['feedback']:,} answers, peak RSS {gen['peak_rss_mb']:5.0f} MB, "
                  f"{gen['mb_on_disk']:5.0f} MB Parquet "
                  f"({time.perf_counter() - t0:.1f} s with the child)", flush=True)
        r = measure(ANALYZE.format(folder=str(folder), full=False, validated=True))
        row["analyze"] = r
        print(_line("6 metrics+CUPED, validated source (open = validation)", n, r), flush=True)
        r = measure(ANALYZE.format(folder=str(folder), full=False, validated=False))
        row["analyze_unvalidated"] = r
        print(_line("6 metrics+CUPED, unvalidated source", n, r), flush=True)
        if full:
            try:
                r = measure(ANALYZE.format(folder=str(folder), full=True, validated=True))
                row["analyze_full"] = r
                print(_line("+sequential+bayes", n, r), flush=True)
            except RuntimeError as err:
                row["analyze_full_error"] = str(err)
                print(f"experiments {n:>10,} customers +sequential+bayes FAILED: {err}",
                      flush=True)
        if validate:
            try:
                r = measure(VALIDATE.format(folder=str(folder)))
                row["validate"] = r
                print(f"experiments {n:>10,} customers contract validation: "
                      f"{r['validate_s']:6.2f} s, peak RSS {r['peak_rss_mb']:6.0f} MB, "
                      f"{r['errors']} errors, {r['warnings']} warnings"
                      + (f" {r['problems']}" if r["problems"] else ""), flush=True)
            except RuntimeError as err:
                row["validate_error"] = str(err)
                print(f"experiments {n:>10,} customers contract validation FAILED: {err}",
                      flush=True)
        rows.append(row)
    if len(rows) > 1:
        a, b = rows[0]["analyze"], rows[-1]["analyze"]
        ta, tb = a["analyze_s"], b["analyze_s"]
        print(f"ratio {rows[-1]['customers'] // rows[0]['customers']}x customers: analyze time "
              f"x{tb / ta:.1f}, peak memory x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")
    return rows


if __name__ == "__main__":
    run()
