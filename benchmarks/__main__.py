"""Run every ``benchmarks/bench_*.py`` (or those named on the command line) in turn.

Each module exposes ``run()``, which prints its own figures (time, peak memory, throughput and
the ratio against its baseline or target).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    chosen = argv or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
        return 2
    for name in chosen:
        print(f"=== benchmark: {name}", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.bench_{name}").run()
        print(f"=== {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
