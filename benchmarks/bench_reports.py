"""``make reports`` on the demo against the kernel floor (issue 15, item 6).

Anchor: a bare papermill run of an empty notebook (one ``pass`` cell, kernel ``python3``),
four times in one process, as the runner runs the four notebooks: what starting and stopping
four kernels costs, with nothing imported. Figure: ``cxanalysis report --source data/demo``
(what ``make reports`` runs once the environment and the demo exist), whole process. Target:
<= 45 s wall on this machine.

Breakdown of the figure, from the executed notebooks (papermill records every cell's
duration): per notebook, the import cell (kernel-side imports of pandas, Ibis, matplotlib,
the package), the other cells (compute and figures), the rest of the notebook's run (kernel
start and stop, papermill), and the HTML export (timed again in this process on the
executed notebooks, after a warm-up export).

The machine is shared: the 1-minute load is printed; compare the ratio, not the seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cxanalysis.progress import bar

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
TARGET_S = 45.0
CLI = str(Path(sys.executable).with_name("cxanalysis"))


def _empty_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("pass")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, str(path))


def kernel_floor(runs: int = 4) -> float:
    """Wall seconds of ``runs`` papermill runs of an empty notebook in one child process."""
    with tempfile.TemporaryDirectory() as d:
        nb = Path(d) / "empty.ipynb"
        _empty_notebook(nb)
        code = ("import papermill as pm, time\n"
                "t = time.perf_counter()\n"
                f"for i in range({runs}):\n"
                f"    pm.execute_notebook({str(nb)!r}, {str(Path(d) / 'out.ipynb')!r}, "
                "kernel_name='python3', progress_bar=False, log_output=False)\n"
                "print(time.perf_counter() - t)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "CX_PROGRESS": "0"})
    return float(out.stdout.strip().splitlines()[-1])


def _first_call(source: str) -> str:
    """A short label for a cell: its first line that calls the package (else its first
    line that is not a comment)."""
    lines = [ln.strip() for ln in source.splitlines() if ln.strip()
             and not ln.strip().startswith("#")]
    calls = [ln for ln in lines if "(" in ln and not ln.startswith(("import", "from"))]
    return ((calls or lines or [""])[0])[:60]


def breakdown(out: Path) -> list[dict]:
    """Per notebook: import cell, other cells, papermill run, HTML export (seconds)."""
    import nbformat

    from cxanalysis.report import to_html

    rows = []
    pages = sorted(out.glob("[0-9][0-9]_*.ipynb"))
    if pages:
        to_html(nbformat.read(str(pages[0]), as_version=4))  # warm-up: template loading
    for page in pages:
        nb = nbformat.read(str(page), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        cells = [c.metadata.get("papermill", {}).get("duration") or 0.0 for c in code]
        record = json.loads((out / f"{page.stem}.results.json").read_text())
        t = time.perf_counter()
        to_html(nb)
        html_s = time.perf_counter() - t
        slow = sorted(((d, i) for i, d in enumerate(cells)), reverse=True)[:3]
        rows.append({"notebook": page.stem, "run_s": record["duration_s"],
                     "imports_s": cells[0] if cells else 0.0,
                     "cells_s": sum(cells[1:]), "html_s": html_s,
                     "slowest": [(round(d, 1), _first_call(code[i].source)) for d, i in slow]})
    return rows


def run() -> dict:
    if not (DEMO / "customers.parquet").exists():
        print("no demo data: run `make demo` first")
        return {}
    load = os.getloadavg()[0]
    steps = bar(total=3, desc="bench reports", unit="step")
    floor = kernel_floor()
    steps.update()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "reports"
        t = time.perf_counter()
        proc = subprocess.run([CLI, "report", "--source", str(DEMO), "--out", str(out)],
                              capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "CX_PROGRESS": "0"})
        wall = time.perf_counter() - t
        steps.update()
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
        rows = breakdown(out)
        steps.update()
    steps.close()
    print(f"reports on the demo: {wall:.1f} s (target <= {TARGET_S:.0f} s: "
          f"{'met' if wall <= TARGET_S else 'NOT met'}); kernel floor (empty notebook x4) "
          f"{floor:.1f} s; ratio {wall / floor:.1f}x; 1-min load {load:.1f} on "
          f"{os.cpu_count()} cores (shared machine)", flush=True)
    for r in rows:
        rest = r["run_s"] - r["imports_s"] - r["cells_s"]
        print(f"  {r['notebook']:<26} run {r['run_s']:5.1f} s = imports {r['imports_s']:4.1f} "
              f"+ other cells {r['cells_s']:5.1f} + kernel/papermill {rest:4.1f}; "
              f"HTML export {r['html_s']:4.1f} s; slowest cells (s, cell) {r['slowest']}")
    tot = {k: sum(r[k] for r in rows) for k in ("run_s", "imports_s", "cells_s", "html_s")}
    if rows:
        print(f"  total: notebooks {tot['run_s']:.1f} s (imports {tot['imports_s']:.1f}, "
              f"cells {tot['cells_s']:.1f}), HTML {tot['html_s']:.1f} s, the rest of the "
              f"process {wall - tot['run_s'] - tot['html_s']:.1f} s", flush=True)
    return {"wall_s": wall, "floor_s": floor, "rows": rows}


if __name__ == "__main__":
    run()
