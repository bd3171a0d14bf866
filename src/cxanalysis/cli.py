"""Command line: ``cxanalysis synth | validate | report | pin``.

Each subcommand imports its module lazily so that ``cxanalysis validate`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from cxanalysis.synth import generate, world_with_personas

    try:
        world = world_with_personas(args.personas)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = generate(args.customers, seed=args.seed, out=args.out, chunk_size=args.chunk_size,
                   progress=not args.quiet, world=world)
    print(f"wrote synthetic world ({args.customers:,} customers, {args.personas} hidden "
          f"persona(s), seed {args.seed}) to {out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from cxanalysis.data import CXDataError, validate

    try:
        report = validate(args.source, mapping=args.mapping)
    except CXDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


def _report(args: argparse.Namespace) -> int:
    from cxanalysis.report import main as report_main

    return report_main(args)


def _pin(args: argparse.Namespace) -> int:
    import tempfile

    from cxanalysis.notebooks import pin

    # One side-file folder for the whole call, in the order given (as nbval runs them):
    # 02 and 03 then reuse the persona assignments 01 wrote.
    with tempfile.TemporaryDirectory(prefix="cxanalysis-pin-") as out_dir:
        for nb in sorted(args.notebooks, key=lambda p: Path(p).name):
            print(f"pinned {pin(nb, out_dir=out_dir)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxanalysis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the seeded synthetic CX world")
    p.add_argument("--customers", type=int, default=5000, help="number of customers")
    p.add_argument("--seed", type=int, default=42, help="random seed (same seed, same bytes)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--chunk-size", type=int, default=50_000, help="customers per chunk")
    p.add_argument("--personas", type=int, default=5,
                   help="hidden personas, 1-5 (default 5, the demo world; 1: no persona "
                        "structure, one blended persona)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synth)

    p = sub.add_parser("validate", help="validate a source against the data contract")
    p.add_argument("source", help="folder of Parquet/CSV files, a DuckDB database file, or "
                   "a database URL (postgres://user@host:5432/db, duckdb:///path/cx.duckdb)")
    p.add_argument("--mapping", help="mapping YAML file, or a preset (ga4, segment, "
                   "amplitude): which file is which table, which column is which")
    p.set_defaults(func=_validate)

    p = sub.add_parser("report", help="run notebooks headlessly into HTML reports")
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default: all)")
    p.add_argument("--source", help="data source for every notebook: a folder, a DuckDB "
                   "file or a database URL (its password is never written into reports)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a notebook parameter (YAML value); repeatable")
    p.add_argument("--params-file", help="YAML file of parameters")
    p.add_argument("--mapping", help="mapping YAML file or preset for --source (sets every "
                   "notebook's `mapping` parameter)")
    p.add_argument("--out", default="reports", help="output folder")
    p.add_argument("--notebooks-dir", default=None,
                   help="where notebooks live (default: ./notebooks, else the notebooks "
                   "folder of the project the package is installed from)")
    p.set_defaults(func=_report)

    p = sub.add_parser("pin", help="execute notebooks on the demo data and keep only the "
                       "outputs of cells marked # NBVAL_CHECK_OUTPUT (storage policy)")
    p.add_argument("notebooks", nargs="+")
    p.set_defaults(func=_pin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
