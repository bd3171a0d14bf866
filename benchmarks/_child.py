"""Run a callable in a fresh Python process and report its wall time and peak RSS.

Peak resident memory of a child process (``ru_maxrss``) is the honest figure for "how much
memory does this take": it includes numpy, Arrow and DuckDB allocations that tracemalloc
would miss.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


def measure(code: str, timeout: float = 3600) -> dict:
    """Execute ``code`` (which must set a dict ``result``) in a child interpreter; return
    ``result`` plus ``wall_s`` (time of ``code`` alone), ``peak_rss_mb`` and ``cpu_s`` (user +
    system CPU seconds of the whole child, imports included)."""
    wrapper = textwrap.dedent("""
        import json, resource, sys, time
        result = {}
        _t0 = time.perf_counter()
        exec(compile(sys.argv[1], "<bench>", "exec"))
        result["wall_s"] = time.perf_counter() - _t0
        _ru = resource.getrusage(resource.RUSAGE_SELF)
        result["peak_rss_mb"] = _ru.ru_maxrss / 1024
        # CPU seconds of the whole child (all threads): steadier than wall on a shared machine
        result["cpu_s"] = _ru.ru_utime + _ru.ru_stime
        print("__RESULT__" + json.dumps(result))
    """)
    proc = subprocess.run([sys.executable, "-c", wrapper, textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("__RESULT__"))
    return json.loads(line.removeprefix("__RESULT__"))


#: Generated benchmark data, cached between runs (git-ignored; delete to regenerate).
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "data" / "bench"


def cached(folder: Path, marker: str, generate_code: str) -> tuple[Path, dict | None]:
    """``folder`` if ``folder / marker`` exists, else run ``generate_code`` (which writes the
    folder) in a measured child; returns the folder and the generation figures (None when
    cached)."""
    if (folder / marker).exists():
        return folder, None
    return folder, measure(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                           + textwrap.dedent(generate_code))
