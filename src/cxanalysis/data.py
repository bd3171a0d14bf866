"""Open a data source as Ibis tables on embedded DuckDB, and validate it against the contract.

A *source* is either

- a folder holding ``NAME.parquet``, ``NAME.csv`` or a folder ``NAME/`` of Parquet files for
  each table of :data:`cxanalysis.schema.TABLES`, or
- a DuckDB database file (``*.duckdb`` / ``*.db``) holding tables with those names.

Files are scanned in place by DuckDB (nothing is loaded into pandas) and are never modified;
a database file is attached read-only. Every table is exposed as a *typed view*: contract
columns are cast to their contract types (timestamps as UTC instants), other columns pass
through. Validation runs one aggregate query per table, so it scales with the engine.

Example
-------
>>> src = open_source("data/demo", require=["customers", "events"])  # doctest: +SKIP
>>> src.table("events").count().execute()                              # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import ibis.expr.datatypes as idt
import pandas as pd

from cxanalysis.schema import TABLES, Column, Table

_DB_SUFFIXES = (".duckdb", ".db", ".ddb")
_MAX_EXAMPLES = 5
_ROW = "__cx_row"  # 0-based row number within the file, for error messages


class CXDataError(ValueError):
    """Input data breaks the data contract.

    Attributes
    ----------
    problems : list of Problem
        Every error found (not just the first), each naming table, column, rule, the number
        of rows affected and example row numbers.
    """

    def __init__(self, problems: Sequence[Problem] | str):
        if isinstance(problems, str):
            self.problems: list[Problem] = []
            super().__init__(problems)
            return
        self.problems = list(problems)
        lines = [f"{len(self.problems)} data contract error(s):"]
        lines += [f"  - {p.message}" for p in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Problem:
    """One broken rule.

    ``rows`` is how many rows break it; ``examples`` are 0-based row numbers within the
    file (or table) where it is broken.
    """

    table: str
    column: str | None
    rule: str
    rows: int
    detail: str
    severity: str = "error"  # "error" or "warning"
    examples: tuple[int, ...] = ()

    @property
    def message(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        ex = f" (e.g. rows {', '.join(map(str, self.examples))})" if self.examples else ""
        return f"{where}: {self.rule} — {self.rows:,} row(s): {self.detail}{ex}"


@dataclass
class ValidationReport:
    """Everything validation found; ``ok`` is False when any error was found."""

    problems: list[Problem] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def table(self) -> pd.DataFrame:
        """One row per problem (empty with the same columns when the source is clean)."""
        cols = ["severity", "table", "column", "rule", "rows", "detail", "example_rows"]
        rows = [
            [p.severity, p.table, p.column or "", p.rule, p.rows, p.detail,
             ", ".join(map(str, p.examples))]
            for p in self.problems
        ]
        return pd.DataFrame(rows, columns=cols)

    def summary(self) -> str:
        if not self.problems:
            tables = ", ".join(f"{t} ({n:,} rows)" for t, n in self.row_counts.items())
            return f"OK: {tables}"
        return "\n".join(p.message if p.severity == "error" else f"warning: {p.message}"
                         for p in self.problems)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise CXDataError(self.errors)


@dataclass
class Source:
    """An opened source: typed Ibis tables on one DuckDB connection.

    Attributes
    ----------
    path : Path
        The folder or database file.
    con : ibis.BaseBackend
        The DuckDB backend every table lives on (session time zone UTC).
    names : tuple of str
        Contract tables present in the source.
    validation : ValidationReport or None
        The report of :func:`validate`, when the source was validated on open.
    """

    path: Path
    con: ibis.BaseBackend
    names: tuple[str, ...]
    validation: ValidationReport | None = None

    def has(self, name: str) -> bool:
        return name in self.names

    def table(self, name: str) -> ibis.Table:
        """The typed table ``name``; a clear error if the source does not hold it."""
        if name not in TABLES:
            raise CXDataError(f"{name!r} is not a table of the data contract "
                              f"(known: {', '.join(TABLES)})")
        if name not in self.names:
            raise CXDataError(
                f"source {self.path} has no table {name!r}: expected {name}.parquet, "
                f"{name}.csv or a folder {name}/ of Parquet files"
                + (" (or a table in the database)" if self.is_database else "")
                + f". Tables found: {', '.join(self.names) or 'none'}."
            )
        return self.con.table(name)

    def require(self, *names: str) -> None:
        """Raise one :class:`CXDataError` listing every required table that is missing."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise CXDataError(
                f"source {self.path} lacks required table(s) {', '.join(missing)} "
                f"(found: {', '.join(self.names) or 'none'}); see docs/data-model.md"
            )

    @property
    def is_database(self) -> bool:
        return self.path.is_file()

    @property
    def truth_dir(self) -> Path | None:
        """The synthetic world's ground truth folder, if this source has one."""
        truth = (self.path if self.path.is_dir() else self.path.parent) / "truth"
        return truth if (truth / "truth.json").exists() else None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.path)

    def close(self) -> None:
        """Release the DuckDB connection (and the read-only attachment of a database)."""
        self.con.disconnect()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sql(self, query: str) -> pd.DataFrame:
        """Run SQL on the source's connection and return a (small) DataFrame."""
        return self.con.raw_sql(query).df()


# --------------------------------------------------------------------------- opening


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _raw_relation(path: Path, name: str) -> str | None:
    """SQL for the raw relation of table ``name`` in folder ``path``, with a row number."""
    parquet, csv, folder = path / f"{name}.parquet", path / f"{name}.csv", path / name
    if parquet.exists():
        return f"SELECT *, file_row_number AS {_ROW} FROM read_parquet({_sql_str(str(parquet))}, file_row_number=true)"
    if folder.is_dir() and any(folder.glob("*.parquet")):
        glob = _sql_str(str(folder / "*.parquet"))
        return f"SELECT *, file_row_number AS {_ROW} FROM read_parquet({glob}, file_row_number=true)"
    if csv.exists():
        # all_varchar: types are decided by the contract, not by a sniffer's guess, so that a
        # bad value is reported by column and row rather than failing the whole scan.
        return (f"SELECT *, (row_number() OVER () - 1) AS {_ROW} "
                f"FROM read_csv({_sql_str(str(csv))}, header=true, all_varchar=true)")
    return None


def _connect(path: Path) -> tuple[ibis.BaseBackend, dict[str, str]]:
    con = ibis.duckdb.connect()
    con.raw_sql("SET TimeZone = 'UTC'")
    # DuckDB takes up to 80% of RAM by default; a cap makes large jobs spill to disk instead
    # (e.g. CX_DUCKDB_MEMORY_LIMIT=2GB keeps 1M-customer persona features under 3 GB).
    limit = os.environ.get("CX_DUCKDB_MEMORY_LIMIT")
    if limit:
        con.raw_sql(f"SET memory_limit = {_sql_str(limit)}")
    raw: dict[str, str] = {}
    if path.is_file():
        if path.suffix not in _DB_SUFFIXES:
            raise CXDataError(f"source {path} is a file but not a DuckDB database "
                              f"({', '.join(_DB_SUFFIXES)}); pass a folder of Parquet/CSV "
                              "files or a database file")
        con.raw_sql(f"ATTACH {_sql_str(str(path))} AS src (READ_ONLY)")
        present = set(con.raw_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src'"
        ).df()["table_name"])
        for name in TABLES:
            if name in present:
                raw[name] = f"SELECT *, (rowid) AS {_ROW} FROM src.main.{name}"
    elif path.is_dir():
        for name in TABLES:
            rel = _raw_relation(path, name)
            if rel is not None:
                raw[name] = rel
    else:
        raise CXDataError(f"source {path} does not exist (expected a folder of Parquet/CSV "
                          "files or a DuckDB database file)")
    for name, rel in raw.items():
        con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "__raw_{name}" AS {rel}')
    return con, raw


def _column_types(con: ibis.BaseBackend, view: str) -> dict[str, str]:
    df = con.raw_sql(f'DESCRIBE SELECT * FROM "{view}"').df()
    return dict(zip(df["column_name"], df["column_type"].str.upper(), strict=True))


_TYPED_SQL = {
    "string": "VARCHAR",
    "category": "VARCHAR",
    "date": "DATE",
    "float": "DOUBLE",
    "int": "BIGINT",
    "timestamp": "TIMESTAMPTZ",
}
_TZ_SUFFIX = r"(Z|z|[+-]\d\d(:?\d\d)?)$"


def _typed_expr(col: Column, raw_type: str) -> str:
    """SQL that casts raw column ``col`` to its contract type (NULL where unparseable)."""
    q = f'"{col.name}"'
    if col.kind == "timestamp":
        if raw_type.startswith("TIMESTAMP WITH TIME ZONE"):
            return q
        if raw_type.startswith("TIMESTAMP") or raw_type == "DATE":
            return "CAST(NULL AS TIMESTAMPTZ)"  # naive: rejected by validation
        return (f"CASE WHEN regexp_matches(trim(CAST({q} AS VARCHAR)), '{_TZ_SUFFIX}') "
                f"THEN TRY_CAST(trim(CAST({q} AS VARCHAR)) AS TIMESTAMPTZ) END")
    if raw_type == _TYPED_SQL[col.kind]:
        return q  # already the contract type: a cast would still cost a pass over the values
    if col.kind == "int":
        return f"TRY_CAST(TRY_CAST({q} AS DOUBLE) AS BIGINT)"
    return f"TRY_CAST({q} AS {_TYPED_SQL[col.kind]})"


def _create_typed_views(con: ibis.BaseBackend, raw: dict[str, str]) -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = {}
    for name in raw:
        spec = TABLES[name]
        raw_types = _column_types(con, f"__raw_{name}")
        types[name] = raw_types
        select = []
        for col_name in raw_types:
            if col_name == _ROW:
                continue
            if col_name in {c.name for c in spec.columns}:
                col = spec.column(col_name)
                select.append(f'{_typed_expr(col, raw_types[col_name])} AS "{col_name}"')
            else:
                select.append(f'"{col_name}"')
        con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "{name}" AS SELECT {", ".join(select)} '
                    f'FROM "__raw_{name}"')
    return types


def open_source(
    path: str | os.PathLike[str],
    require: Iterable[str] = (),
    validate: bool = True,
    now: dt.datetime | None = None,
) -> Source:
    """Open ``path`` as typed Ibis tables on DuckDB, check required tables, and validate.

    Parameters
    ----------
    path : path-like
        A folder of Parquet/CSV files named after the tables, or a DuckDB database file.
    require : iterable of str
        Tables the caller needs; a missing one raises :class:`CXDataError` naming it.
    validate : bool
        Run :func:`validate` and raise :class:`CXDataError` on errors (warnings are kept in
        ``source.validation``).
    now : datetime, optional
        Reference instant for the "timestamp in the future" rule (default: the current time).

    Returns
    -------
    Source
    """
    path = Path(path).expanduser().resolve()
    con, raw = _connect(path)
    source = Source(path=path, con=con, names=tuple(n for n in TABLES if n in raw))
    source.require(*require)
    types = _create_typed_views(con, raw)
    if validate:
        source.validation = _validate(source, types, now=now)
        source.validation.raise_for_errors()
    return source


# --------------------------------------------------------------------------- validation


def validate(path: str | os.PathLike[str], now: dt.datetime | None = None) -> ValidationReport:
    """Validate a source against the contract and return the report (never raises on bad
    data; raises :class:`CXDataError` only when the source cannot be opened at all)."""
    with open_source(path, validate=False) as source:
        types = {n: _column_types(source.con, f"__raw_{n}") for n in source.names}
        return _validate(source, types, now=now)


def _examples(con: ibis.BaseBackend, name: str, condition: str) -> tuple[int, ...]:
    df = con.raw_sql(
        f'SELECT r.{_ROW} AS row FROM "__raw_{name}" r '
        f"WHERE {condition} ORDER BY r.{_ROW} LIMIT {_MAX_EXAMPLES}"
    ).df()
    return tuple(int(x) for x in df["row"])


def _typed_ref(col: Column, raw_type: str) -> str:
    """``_typed_expr`` with column references qualified by the raw alias ``r``."""
    return _typed_expr(col, raw_type).replace(f'"{col.name}"', f'r."{col.name}"')


def _validate(source: Source, types: dict[str, dict[str, str]],
              now: dt.datetime | None = None) -> ValidationReport:
    con = source.con
    now = now or dt.datetime.now(dt.UTC)
    now_sql = f"TIMESTAMPTZ {_sql_str(now.astimezone(dt.UTC).isoformat())}"
    report = ValidationReport()
    for name in source.names:
        spec: Table = TABLES[name]
        raw_types = types[name]
        present = [c for c in spec.columns if c.name in raw_types]
        for col in spec.columns:
            if col.required and col.name not in raw_types:
                report.problems.append(Problem(
                    name, col.name, "missing required column", 0,
                    f"the table has no column {col.name!r} ({col.kind}: {col.description}); "
                    f"columns found: {', '.join(c for c in raw_types if c != _ROW)}"))
        # One aggregate query per table: a named condition per rule, counted with FILTER.
        checks: list[tuple[Column | None, str, str, str]] = []  # col, rule, condition, detail
        for col in present:
            raw = f'r."{col.name}"'
            typed = _typed_ref(col, raw_types[col.name])
            rtype = raw_types[col.name]
            if col.kind == "timestamp" and (rtype.startswith("TIMESTAMP")
                                            and "TIME ZONE" not in rtype or rtype == "DATE"):
                checks.append((col, "naive timestamp", f"{raw} IS NOT NULL",
                               f"stored as {rtype} without a time zone; store UTC instants "
                               "(TIMESTAMP WITH TIME ZONE, or text ending in Z/+00:00)"))
            elif col.kind == "timestamp" and not rtype.startswith("TIMESTAMP WITH TIME ZONE"):
                checks.append((col, "naive timestamp",
                               f"{raw} IS NOT NULL AND trim(CAST({raw} AS VARCHAR)) <> '' AND "
                               f"NOT regexp_matches(trim(CAST({raw} AS VARCHAR)), '{_TZ_SUFFIX}')",
                               "text timestamps must carry a UTC offset (e.g. "
                               "2025-03-01T10:00:00Z)"))
                checks.append((col, "unparseable value",
                               f"{raw} IS NOT NULL AND trim(CAST({raw} AS VARCHAR)) <> '' AND "
                               f"regexp_matches(trim(CAST({raw} AS VARCHAR)), '{_TZ_SUFFIX}') "
                               f"AND {typed} IS NULL",
                               f"cannot be read as {col.kind}"))
            elif col.kind not in ("string", "category"):
                blank = (f" AND trim(CAST({raw} AS VARCHAR)) <> ''"
                         if rtype == "VARCHAR" else "")
                checks.append((col, "unparseable value",
                               f"{raw} IS NOT NULL{blank} AND {typed} IS NULL",
                               f"cannot be read as {col.kind}"))
            if not col.nullable:
                checks.append((col, "missing value",
                               f"({raw} IS NULL OR trim(CAST({raw} AS VARCHAR)) = '')",
                               "the column may not be empty"))
            if col.kind == "int" and rtype in ("DOUBLE", "FLOAT", "VARCHAR") or \
                    rtype.startswith("DECIMAL") and col.kind == "int":
                checks.append((col, "not an integer",
                               f"TRY_CAST({raw} AS DOUBLE) IS NOT NULL AND "
                               f"TRY_CAST({raw} AS DOUBLE) <> round(TRY_CAST({raw} AS DOUBLE))",
                               "must be a whole number"))
            if col.min is not None or col.max is not None:
                num = f"TRY_CAST({raw} AS DOUBLE)"
                parts = []
                if col.min is not None:
                    parts.append(f"{num} < {col.min}")
                if col.max is not None:
                    parts.append(f"{num} > {col.max}")
                rng = f"[{'' if col.min is None else f'{col.min:g}'}, " \
                      f"{'' if col.max is None else f'{col.max:g}'}]"
                checks.append((col, "out of range", " OR ".join(parts),
                               f"values must lie in {rng}"))
            if col.allowed:
                allowed = ", ".join(_sql_str(a) for a in col.allowed)
                checks.append((col, "unknown value",
                               f"{raw} IS NOT NULL AND CAST({raw} AS VARCHAR) NOT IN ({allowed})",
                               f"allowed values: {', '.join(col.allowed)}"))
            if col.kind == "timestamp":
                checks.append((col, "timestamp in the future", f"{typed} > {now_sql}",
                               f"later than the reference time {now:%Y-%m-%d %H:%M} UTC"))
            if col.kind == "date":
                checks.append((col, "date in the future", f"{typed} > CAST({now_sql} AS DATE)",
                               f"later than {now:%Y-%m-%d}"))
        if spec.customer_fk and source.has("customers") and "customer_id" in raw_types:
            cust_types = _column_types(con, "__raw_customers")
            if "customer_id" in cust_types:
                checks.append((spec.column("customer_id"), "unknown customer",
                               "r.customer_id IS NOT NULL AND CAST(r.customer_id AS VARCHAR) "
                               "NOT IN (SELECT CAST(customer_id AS VARCHAR) FROM "
                               '"__raw_customers" WHERE customer_id IS NOT NULL)',
                               "customer_id not found in customers"))
        key_cols = [k for k in spec.key if k in raw_types]
        if key_cols and len(key_cols) == len(spec.key):
            key = ", ".join(f'CAST(r."{k}" AS VARCHAR)' for k in key_cols)
            checks.append((spec.column(key_cols[-1]) if len(key_cols) == 1 else None,
                           "duplicate key",
                           f"count(*) OVER (PARTITION BY {key}) > 1",
                           f"({', '.join(key_cols)}) must be unique; rows sharing a key"))

        window_checks = [c for c in checks if " OVER " in c[2]]
        plain_checks = [c for c in checks if " OVER " not in c[2]]
        aggs = ["count(*) AS n"] + [
            f"count(*) FILTER (WHERE {cond}) AS c{i}" for i, (_, _, cond, _) in
            enumerate(plain_checks)
        ]
        counts = con.raw_sql(f'SELECT {", ".join(aggs)} FROM "__raw_{name}" r').fetchone()
        report.row_counts[name] = int(counts[0])
        if counts[0] == 0:
            report.problems.append(Problem(name, None, "empty table", 0,
                                           "the table has no rows", severity="warning"))
        for i, (col, rule, cond, detail) in enumerate(plain_checks):
            n = int(counts[i + 1])
            if n:
                report.problems.append(Problem(
                    name, col.name if col else None, rule, n, detail,
                    examples=_examples(con, name, cond)))
        for col, rule, cond, detail in window_checks:
            q = (f"SELECT {_ROW} AS row FROM (SELECT r.{_ROW}, {cond} AS bad "
                 f'FROM "__raw_{name}" r) WHERE bad ORDER BY row')
            n = int(con.raw_sql(f"SELECT count(*) FROM ({q})").fetchone()[0])
            if n:
                ex = tuple(int(x) for x in
                           con.raw_sql(f"{q} LIMIT {_MAX_EXAMPLES}").df()["row"])
                report.problems.append(Problem(name, col.name if col else ",".join(key_cols),
                                               rule, n, detail, examples=ex))
    return report


# --------------------------------------------------------------------------- fingerprint


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A short content fingerprint of a source (file names, sizes and sampled bytes).

    Reads at most 2 MiB per file so it is cheap on large sources; two sources with the
    same fingerprint hold, with overwhelming probability, the same data.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and "truth" not in p.relative_to(path).parts
    )
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


@ibis.udf.scalar.builtin(name="epoch_us")
def _epoch_us(ts: idt.Timestamp(timezone="UTC")) -> idt.int64:  # type: ignore[empty-body]
    """DuckDB's builtin ``epoch_us``: microseconds since 1970-01-01 UTC of an instant."""


def _on_duckdb(expr: ibis.Value) -> bool:
    try:
        return expr._find_backend().name == "duckdb"
    except Exception:  # unbound expressions have no backend: stay portable
        return False


def epoch_seconds(ts: ibis.Value) -> ibis.Value:
    """Seconds since 1970-01-01 UTC (float64) of a UTC timestamp expression.

    On DuckDB this uses ``epoch_us`` directly: Ibis's ``epoch_seconds()`` compiles through a
    cast to a naive timestamp, a time-zone conversion per row that is several times slower on
    tens of millions of rows. Other backends get ``epoch_seconds()``."""
    if _on_duckdb(ts):
        return _epoch_us(ts).cast("float64") / 1e6
    return ts.epoch_seconds().cast("float64")


def epoch_micros(ts: ibis.Value) -> ibis.Value:
    """Microseconds since 1970-01-01 UTC (int64) of a UTC timestamp expression: exact, and
    cheaper than float seconds to compare and join on (see :func:`epoch_seconds`). Other
    backends get whole seconds x 10^6."""
    if _on_duckdb(ts):
        return _epoch_us(ts)
    return ts.epoch_seconds().cast("int64") * 1_000_000


def window_end(end: str) -> pd.Timestamp:
    """Exclusive end instant of the inclusive ISO day ``end`` (UTC)."""
    return pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)


def in_days(ts: ibis.Value, start: str | None, end: str | None) -> ibis.Value:
    """Whether ``ts`` falls on the ISO days ``start`` to ``end`` (inclusive, UTC); a missing
    bound is open (NULL for a NULL ``ts`` when a bound is given, true otherwise)."""
    cond = ibis.literal(True)
    if start is not None:
        cond &= ts >= pd.Timestamp(start, tz="UTC")
    if end is not None:
        cond &= ts < window_end(end)
    return cond


def between_days(table: ibis.Table, start: str | None, end: str | None) -> ibis.Table:
    """Rows of ``table`` whose ``ts`` falls on the ISO days ``start`` to ``end`` (inclusive,
    UTC); a missing bound is open."""
    if start is None and end is None:
        return table
    return table.filter(in_days(table.ts, start, end))
