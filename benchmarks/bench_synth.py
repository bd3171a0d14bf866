"""Generator throughput: customers and events per second and peak memory, at 100k and 1M.

Baseline: the issue's requirement that 1,000,000 customers (tens of millions of events)
generate on a 2-core machine with bounded memory; memory should stay roughly flat from 100k
to 1M because customers are streamed in chunks of 50,000.
"""

from __future__ import annotations

from benchmarks._child import measure

CODE = """
import tempfile, pyarrow.parquet as pq
from pathlib import Path
from cxanalysis.synth import generate
with tempfile.TemporaryDirectory() as d:
    out = generate({n}, seed=1, out=d, chunk_size=50_000)
    result["events"] = pq.ParquetFile(Path(d) / "events.parquet").metadata.num_rows
    result["orders"] = pq.ParquetFile(Path(d) / "orders.parquet").metadata.num_rows
    result["mb_on_disk"] = sum(p.stat().st_size for p in Path(d).rglob("*.parquet")) / 2**20
"""


def run(sizes: tuple[int, ...] = (100_000, 1_000_000)) -> list[dict]:
    rows = []
    for n in sizes:
        r = measure(CODE.format(n=n))
        r["customers"] = n
        rows.append(r)
        print(f"synth {n:>9,} customers: {r['wall_s']:7.1f} s, {n / r['wall_s']:>9,.0f} "
              f"customers/s, {r['events']:>11,} events ({r['events'] / r['wall_s']:>11,.0f}/s), "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB, {r['mb_on_disk']:6.0f} MB Parquet",
              flush=True)
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"ratio {b['customers'] // a['customers']}x customers: time x"
              f"{b['wall_s'] / a['wall_s']:.1f}, peak memory x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}"
              " (bounded memory means ~1)")
    return rows


if __name__ == "__main__":
    run()
