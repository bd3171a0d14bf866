"""Behavioural personas at scale: features + k sweep + final fit + stability, 100k and 1M.

Target (issue 15, item 3): personas on 1M customers in at most 60 s with a peak of at most
4 GB, by default (no environment variable). On a shared machine absolute times are noise, so
the figures are printed beside two anchors measured in the same child on the same file:

- *scan*: DuckDB reading the calibration window's events once, grouped by customer (a count
  per customer: the floor of any per-customer feature);
- *k-means*: scikit-learn's ``MiniBatchKMeans`` alone (the k found, 10 restarts, the same
  batch size) on the same standardised feature matrix (the floor of any clustering).

The synthetic world (:func:`cxanalysis.synth.generate`, seed 1, chunks of 50,000 customers) is
generated once per size and cached in ``data/bench/personas_<n>/`` (git-ignored; delete the
folder to rebuild); generation is timed apart and is not part of the figure.

One fresh child interpreter per size (:func:`benchmarks._child.measure`) opens the source with
``validate=False`` and times :func:`cxanalysis.personas.persona_data` (features in DuckDB) then
``PersonaModel(method="minibatch", random_state=0, n_bootstrap=10).fit`` (the k sweep on a
sample of at most 50,000 customers, the test against no structure, the final fit on every
active customer, the bootstrap stability on at most 5,000) and :class:`Personas`: open +
features + fit is the headline figure; the child's peak RSS is the memory figure, and its CPU
time is printed too (less sensitive than wall time to other processes on the machine).

Quality check: the adjusted Rand index of the personas found against the hidden personas the
generator drew (``truth/personas.parquet``), over the customers clustered.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks._child import CACHE, cached, measure

TARGET_S = 60.0
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
import time
_t = time.perf_counter()
import pandas as pd
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score
from ibis import _
from cxanalysis.data import between_days, open_source
from cxanalysis.personas import PersonaModel, Personas, _threads, persona_data
result["import_s"] = time.perf_counter() - _t
_t, _c = time.perf_counter(), time.process_time()
src = open_source({folder!r}, validate=False)
result["open_s"] = time.perf_counter() - _t
_t = time.perf_counter()
data = persona_data(src, {start!r}, {end!r})
result["features_s"] = time.perf_counter() - _t
_t = time.perf_counter()
model = PersonaModel(method="minibatch", random_state=0, n_bootstrap=10).fit(data.features)
p = Personas(model, data)
result["fit_s"] = time.perf_counter() - _t
result["cpu_s"] = time.process_time() - _c
result["features_rows"], result["features_cols"] = data.features.shape
result["k"] = int(p.k)
result["clustered"] = len(p.assignments)
result["inactive"] = int(p.inactive)
result["seed_ari"] = float(p.seed_ari)
result["min_jaccard"] = float(min(p.jaccard.values()))
# anchors, in the same process on the same data
_t = time.perf_counter()
ev = between_days(src.table("events"), {start!r}, {end!r})
result["scan_customers"] = len(ev.group_by("customer_id").aggregate(n=_.count()).execute())
result["scan_s"] = time.perf_counter() - _t
z = model.scaler_.transform(data.features[model.features_].fillna(
    data.features[model.features_].mean()).to_numpy(float))
_t = time.perf_counter()
with _threads(len(z)):
    MiniBatchKMeans(p.k, n_init=10, random_state=0, batch_size=4096).fit(z)
result["kmeans_s"] = time.perf_counter() - _t
truth = pd.read_parquet({truth!r}).set_index("customer_id")["persona"]
t = truth.reindex(p.assignments.index)
result["truth_missing"] = int(t.isna().sum())
ok = t.notna()
result["ari"] = float(adjusted_rand_score(t[ok], p.assignments[ok]))
result["true_personas"] = int(truth.nunique())
"""


def _line(n: int, r: dict) -> str:
    t = r["open_s"] + r["features_s"] + r["fit_s"]
    mb = r["peak_rss_mb"]
    ok = t <= TARGET_S and mb <= TARGET_MB
    floor = r["scan_s"] + r["kmeans_s"]
    return (f"personas {n:>9,} customers: {t:6.1f} s = x{t / floor:.1f} the anchors "
            f"(scan {r['scan_s']:.1f} s + k-means {r['kmeans_s']:.1f} s = {floor:.1f} s); "
            f"features x{r['features_s'] / r['scan_s']:.1f} the scan "
            f"({r['features_s']:.1f} s), fit x{r['fit_s'] / r['kmeans_s']:.1f} k-means "
            f"({r['fit_s']:.1f} s), open {r['open_s']:.2f} s; CPU {r['cpu_s']:.1f} s; peak "
            f"RSS {mb:6.0f} MB; x{t / TARGET_S:.2f} of the {TARGET_S:g} s and "
            f"x{mb / TARGET_MB:.2f} of the {TARGET_MB / 1024:g} GB targets "
            f"({'ok' if ok else 'MISSES'}); k = {r['k']} (truth {r['true_personas']}), "
            f"{r['clustered']:,} customers clustered ({r['inactive']:,} inactive), ARI vs "
            f"hidden personas {r['ari']:.3f}, seed ARI {r['seed_ari']:.3f}, min Jaccard "
            f"{r['min_jaccard']:.2f}")


def run(sizes: tuple[int, ...] = (100_000, 1_000_000)) -> list[dict]:
    """Generate (or reuse) each world, then measure features, fit and anchors in a child."""
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
        r.update(customers=n, folder=str(folder), load_before=load,
                 end_to_end_s=r["open_s"] + r["features_s"] + r["fit_s"])
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
