"""Behavioural personas at scale: features + k sweep + final fit on 100k and 1M customers.

Target (from the issue): the feature and clustering code handles 1,000,000 customers on this
2-core machine; a benchmark reports time and peak memory for features + k sweep + final fit at
100k and 1M customers, with 1M customers end to end in under 2 minutes and under 4 GB.

The synthetic world (:func:`cxanalysis.synth.generate`, seed 1, chunks of 50,000 customers) is
generated once per size and cached in ``data/bench/personas_<n>/`` (git-ignored; delete the
folder to rebuild); generation is timed apart and is not part of the figure.

One fresh child interpreter per size (:func:`benchmarks._child.measure`) opens the source with
``validate=False`` and times, separately,

- ``behaviour_features`` over the calibration window 2025-01-01 to 2025-09-30 (SQL on DuckDB);
- ``fit_personas(..., method="minibatch", seed=0, n_boot=10)`` end to end: features again, the
  k sweep (fitted on a sample of at most 50,000 customers), the final fit on every active
  customer and the bootstrap stability (on at most 20,000). This is the headline figure
  (with the open), and the child's peak RSS is the memory figure (an upper bound: it also
  covers the separate features call).

Quality check: the adjusted Rand index of the personas found against the hidden personas the
generator drew (``truth/personas.parquet``), over the customers clustered.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks._child import CACHE, cached, measure

TARGET_S = 120.0
TARGET_MB = 4096.0
START, END = "2025-01-01", "2025-09-30"
BUSY_LOAD = 1.5  # 1-minute load average above which the machine is flagged as busy


def world(n: int) -> tuple[Path, dict | None]:
    """The cached synthetic world with ``n`` customers, generated in a measured child if
    missing."""
    folder = CACHE / f"personas_{n}"
    return cached(folder, "truth/truth.json", f"""
        from pathlib import Path
        from cxanalysis.synth import generate
        generate({n}, seed=1, out={str(folder)!r}, chunk_size=50_000)
        result["mb_on_disk"] = sum(p.stat().st_size
                                   for p in Path({str(folder)!r}).rglob("*.parquet")) / 2**20
    """)


FIT = """
import gc, time
_t = time.perf_counter()
import pandas as pd
from sklearn.metrics import adjusted_rand_score
from cxanalysis.data import open_source
from cxanalysis.personas import behaviour_features, fit_personas
result["import_s"] = time.perf_counter() - _t
_t = time.perf_counter()
src = open_source({folder!r}, validate=False)
result["open_s"] = time.perf_counter() - _t
_t = time.perf_counter()
x, inactive = behaviour_features(src, {start!r}, {end!r})
result["features_s"] = time.perf_counter() - _t
result["features_rows"] = len(x)
result["features_cols"] = x.shape[1]
result["inactive"] = int(inactive)
del x
gc.collect()
_t = time.perf_counter()
p = fit_personas(src, {start!r}, {end!r}, method="minibatch", random_state=0, n_bootstrap=10)
result["fit_s"] = time.perf_counter() - _t
result["k"] = int(p.k)
result["clustered"] = len(p.assignments)
result["seed_ari"] = float(p.seed_ari)
result["min_jaccard"] = float(min(p.jaccard.values()))
truth = pd.read_parquet({truth!r}).set_index("customer_id")["persona"]
t = truth.reindex(p.assignments.index)
result["truth_missing"] = int(t.isna().sum())
ok = t.notna()
result["ari"] = float(adjusted_rand_score(t[ok], p.assignments[ok]))
result["true_personas"] = int(truth.nunique())
"""


def _line(n: int, r: dict) -> str:
    t = r["open_s"] + r["fit_s"]
    mb = r["peak_rss_mb"]
    ok = t < TARGET_S and mb < TARGET_MB
    return (f"personas {n:>9,} customers: {t:6.1f} s end to end (open {r['open_s']:.2f} + "
            f"fit_personas {r['fit_s']:.1f}; features alone {r['features_s']:.1f} s, imports "
            f"{r['import_s']:.1f} s apart), {n / t:>8,.0f} customers/s, peak RSS {mb:6.0f} MB, "
            f"x{t / TARGET_S:.2f} of the {TARGET_S:g} s and x{mb / TARGET_MB:.2f} of the "
            f"{TARGET_MB / 1024:g} GB targets ({'ok' if ok else 'MISSES'}); "
            f"k = {r['k']} (truth {r['true_personas']}), {r['clustered']:,} customers "
            f"clustered ({r['inactive']:,} inactive), ARI vs hidden personas {r['ari']:.3f}, "
            f"seed ARI {r['seed_ari']:.3f}, min Jaccard {r['min_jaccard']:.2f}")


def run(sizes: tuple[int, ...] = (100_000, 1_000_000)) -> list[dict]:
    """Generate (or reuse) each world, then measure features and ``fit_personas`` in a child."""
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        folder, gen = world(n)
        if gen is None:
            print(f"personas {n:>9,} customers: world cached in {folder} "
                  f"(delete it to regenerate)", flush=True)
        else:
            print(f"personas {n:>9,} customers: generated in {gen['wall_s']:6.1f} s "
                  f"({n / gen['wall_s']:>8,.0f} customers/s), peak RSS "
                  f"{gen['peak_rss_mb']:5.0f} MB, {gen['mb_on_disk']:5.0f} MB Parquet "
                  f"({time.perf_counter() - t0:.1f} s with the child; not in the figure)",
                  flush=True)
        load = os.getloadavg()[0]
        r = measure(FIT.format(folder=str(folder), start=START, end=END,
                               truth=str(folder / "truth" / "personas.parquet")))
        r.update(customers=n, folder=str(folder), end_to_end_s=r["open_s"] + r["fit_s"],
                 load_before=load)
        if gen is not None:
            r["generate"] = gen
        rows.append(r)
        print(_line(n, r), flush=True)
        if load > BUSY_LOAD:
            print(f"personas {n:>9,} customers: WARNING 1-minute load average was {load:.1f} on "
                  f"{os.cpu_count()} cores before the run; other processes compete with the "
                  "OpenMP/BLAS threads of scikit-learn and the times are inflated", flush=True)
        if r["truth_missing"]:
            print(f"personas {n:>9,} customers: {r['truth_missing']:,} clustered customers "
                  "missing from truth/personas.parquet (left out of the ARI)", flush=True)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"ratio {b['customers'] // a['customers']}x customers: end-to-end time "
              f"x{b['end_to_end_s'] / a['end_to_end_s']:.1f}, features time "
              f"x{b['features_s'] / a['features_s']:.1f}, peak memory "
              f"x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")
    return rows


if __name__ == "__main__":
    run()
