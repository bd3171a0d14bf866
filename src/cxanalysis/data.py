"""Open a data source as Ibis tables on embedded DuckDB, and validate it against the contract.

A *source* is either

- a folder holding ``NAME.parquet``, ``NAME.csv`` or a folder ``NAME/`` of Parquet files for
  each table of :data:`cxanalysis.schema.TABLES`, or
- a DuckDB database file (``*.duckdb`` / ``*.db``) holding tables with those names, or
- a database URL (``postgres://user:pass@host:5432/db``) or an Ibis backend: see
  :mod:`cxanalysis.engines` (tables typed and validated in place as Ibis expressions).

Files are scanned in place by DuckDB (nothing is loaded into pandas) and are never modified;
a database file is attached read-only. Every table is exposed as a *typed view*: contract
columns are cast to their contract types (timestamps as UTC instants), other columns pass
through. Validation counts every rule in SQL on the engine (one aggregate per table, or for
Parquet files and database tables one filtered count per column that row-group statistics can
settle), so it scales with the engine.

Example
-------
>>> src = open_source("data/demo", require=["customers", "events"])  # doctest: +SKIP
>>> src.table("events").count().execute()                              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ibis
import ibis.expr.datatypes as idt
import pandas as pd

from cxanalysis.errors import ParameterError
from cxanalysis.mapping import EPOCH_UNITS, ColumnRule, Mapping, TableMapping, load_mapping
from cxanalysis.schema import TABLES, Column, Table

_DB_SUFFIXES = (".duckdb", ".db", ".ddb")
_MAX_EXAMPLES = 5
_ROW = "__cx_row"  # 0-based row number within the file, for error messages
_HIDDEN = "__cx_"  # prefix of helper columns that never reach the typed views
#: Value given to a ``channel`` column an export does not have (see ``Source.derived``).
UNSPECIFIED_CHANNEL = "unspecified"
#: Tables whose ``channel`` the contract derives when absent (schema ``Column.derived``).
_DERIVED_CHANNEL = tuple(n for n, t in TABLES.items()
                         if any(c.name == "channel" and c.derived for c in t.columns))
_FILE_SUFFIXES = (".parquet", ".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz",
                  ".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")


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
    #: What the source lacks and was derived (``Source.derived``), shown as notes.
    derived: list[str] = field(default_factory=list)

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
        notes = [f"derived: {d}" for d in self.derived]
        if not self.problems:
            tables = ", ".join(f"{t} ({n:,} rows)" for t, n in self.row_counts.items())
            return "\n".join([f"OK: {tables}", *notes])
        return "\n".join([*(p.message if p.severity == "error" else f"warning: {p.message}"
                            for p in self.problems), *notes])

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
    mapping : Mapping or None
        The mapping the source was opened with (:mod:`cxanalysis.mapping`).
    derived : list of str
        One sentence per table or column that the source does not hold and that was derived
        (e.g. the ``customers`` table from the ids seen elsewhere); reports show them.
    """

    path: Path | None
    con: ibis.BaseBackend
    names: tuple[str, ...]
    validation: ValidationReport | None = None
    mapping: Mapping | None = None
    derived: list[str] = field(default_factory=list)
    #: table -> contract columns that were derived rather than read (validation skips their
    #: "missing value" rule: a customer with no activity has no first-activity date).
    derived_columns: dict[str, set[str]] = field(default_factory=dict)
    #: table -> raw column types of the (mapped) raw view, as validated.
    raw_types: dict[str, dict[str, str]] = field(default_factory=dict)
    #: table -> (contract column, what was expected) of mapped expressions (epoch/format).
    expressions: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    #: Tables whose raw view is a plain scan of Parquet files or a database table (no
    #: mapping, no window, no join), so that DuckDB pushes a filter on one of its columns into
    #: the scan: validation counts such a table's rules column by column with a WHERE, which
    #: the row groups' min/max/null statistics often settle without decoding the values (see
    #: ``_count_checks``).
    plain_scans: set[str] = field(default_factory=set)
    #: How the source is shown (a URL without its password); the path for files.
    location: str = ""
    #: Whether ``close`` disconnects (False for a backend the caller passed in).
    owned: bool = True
    #: Engine sources (:mod:`cxanalysis.engines`): typed and raw Ibis tables by name.
    tables: dict[str, ibis.Table] | None = None
    raw_tables: dict[str, ibis.Table] | None = None

    def __post_init__(self) -> None:
        if not self.location:
            self.location = str(self.path)

    @property
    def engine(self) -> str:
        """Name of the Ibis backend the tables live on (``duckdb``, ``postgres``, ...)."""
        return self.con.name

    def has(self, name: str) -> bool:
        return name in self.names

    def table(self, name: str) -> ibis.Table:
        """The typed table ``name``; a clear error if the source does not hold it."""
        if name not in TABLES:
            raise CXDataError(f"{name!r} is not a table of the data contract "
                              f"(known: {', '.join(TABLES)})")
        if name not in self.names:
            raise CXDataError(
                f"source {self.location} has no table {name!r}: expected {name}.parquet, "
                f"{name}.csv or a folder {name}/ of Parquet files"
                + (" (or a table in the database)" if self.is_database else "")
                + f", or a mapping entry tables.{name}.from"
                + f". Tables found: {', '.join(self.names) or 'none'}."
            )
        if self.tables is not None:
            return self.tables[name]
        return self.con.table(name)

    def require(self, *names: str) -> None:
        """Raise one :class:`CXDataError` listing every required table that is missing."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise CXDataError(
                f"source {self.location} lacks required table(s) {', '.join(missing)} "
                f"(found: {', '.join(self.names) or 'none'}); see docs/data-model.md"
            )

    @property
    def is_database(self) -> bool:
        return self.path is None or self.path.is_file()

    @property
    def truth_dir(self) -> Path | None:
        """The synthetic world's ground truth folder, if this source has one."""
        if self.path is None:
            return None
        truth = (self.path if self.path.is_dir() else self.path.parent) / "truth"
        return truth if (truth / "truth.json").exists() else None

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of the files, combined with the mapping's content when the
        source was opened with one (the same files read through another mapping are other
        data); the mapping's file name does not count. A database source: see
        :func:`cxanalysis.engines.backend_fingerprint`."""
        if self.path is None:
            from cxanalysis.engines import backend_fingerprint

            return backend_fingerprint(self)
        if self.mapping is None:
            return fingerprint(self.path)
        spec = dataclasses.asdict(self.mapping)
        spec.pop("name")
        text = fingerprint(self.path) + json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def close(self) -> None:
        """Release the connection (and the read-only attachment of a database); a backend
        the caller passed in stays open."""
        if self.owned:
            self.con.disconnect()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sql(self, query: str) -> pd.DataFrame:
        """Run SQL on the source's connection and return a (small) DataFrame."""
        if self.con.name != "duckdb":
            return self.con.sql(query).execute()
        return self.con.raw_sql(query).df()


# --------------------------------------------------------------------------- opening


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _file_relation(file: Path) -> str:
    """SQL for the raw relation of one file (or folder of Parquet/CSV files), with a row
    number; a CXDataError for a kind of file DuckDB is not asked to read."""
    lower = file.name.lower()
    if file.is_dir():
        if any(file.glob("*.parquet")):
            glob = _sql_str(str(file / "*.parquet"))
            return (f"SELECT * EXCLUDE (file_row_number), file_row_number AS {_ROW} "
                    f"FROM read_parquet({glob}, file_row_number=true)")
        if any(file.glob("*.csv")):
            glob = _sql_str(str(file / "*.csv"))
            return (f"SELECT *, (row_number() OVER () - 1) AS {_ROW} "
                    f"FROM read_csv({glob}, header=true, all_varchar=true)")
        raise CXDataError(f"folder {file} holds no .parquet or .csv files")
    if lower.endswith(".parquet"):
        return (f"SELECT * EXCLUDE (file_row_number), file_row_number AS {_ROW} "
                f"FROM read_parquet({_sql_str(str(file))}, file_row_number=true)")
    if lower.endswith((".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")):
        # all_varchar: types are decided by the contract, not by a sniffer's guess, so that a
        # bad value is reported by column and row rather than failing the whole scan.
        return (f"SELECT *, (row_number() OVER () - 1) AS {_ROW} "
                f"FROM read_csv({_sql_str(str(file))}, header=true, all_varchar=true)")
    if lower.endswith((".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")):
        return (f"SELECT *, (row_number() OVER () - 1) AS {_ROW} "
                f"FROM read_json_auto({_sql_str(str(file))})")
    raise CXDataError(f"cannot read {file.name}: expected one of "
                      f"{', '.join(_FILE_SUFFIXES)} or a folder of Parquet/CSV files")


def _find(path: Path, name: str) -> Path | None:
    """The file holding ``name`` in folder ``path``: ``name`` itself when it has a known
    suffix (or is a folder), else ``name.parquet``, a folder ``name/``, or ``name.csv``."""
    exact = path / name
    if exact.is_file() and exact.name.lower().endswith(_FILE_SUFFIXES):
        return exact
    parquet, csv, folder = path / f"{name}.parquet", path / f"{name}.csv", path / name
    if parquet.exists():
        return parquet
    if folder.is_dir() and any(folder.glob("*.parquet")):
        return folder
    if csv.exists():
        return csv
    if exact.is_dir() and any(exact.glob("*.csv")):
        return exact
    return None


def _listing(path: Path) -> str:
    if path.is_file():
        return ""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()
                   if not p.name.startswith("."))
    return ", ".join(names) or "nothing"


def _connect(path: Path, mapping: Mapping | None = None
             ) -> tuple[ibis.BaseBackend, dict[str, str]]:
    """A DuckDB connection with a view ``__src_NAME`` per contract table found (the file
    as it is, plus a row number); returns the relations by table name."""
    from cxanalysis import duckdb_settings

    # UTC, and bounded memory with a spill folder by default (CX_DUCKDB_MEMORY_LIMIT
    # overrides): DuckDB alone would take up to 80% of RAM (see cxanalysis.duckdb_settings)
    con = duckdb_settings.connect()
    mapped = mapping.tables if mapping else {}
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
            tm = mapped.get(name)
            wanted = tm.source if tm and tm.source else name
            if wanted in present:
                raw[name] = f"SELECT *, (rowid) AS {_ROW} FROM src.main.{_ident(wanted)}"
            elif tm:  # the mapping describes this table: it must be there
                raise CXDataError(
                    f"{mapping.entry('tables', name, 'from')}: the database {path} has no "
                    f"table {wanted!r} (tables: {', '.join(sorted(present)) or 'none'})")
    elif path.is_dir():
        for name in TABLES:
            tm = mapped.get(name)
            wanted = tm.source if tm and tm.source else name
            found = _find(path, wanted) if not Path(wanted).is_absolute() else (
                Path(wanted) if Path(wanted).exists() else None)
            if found is not None:
                try:
                    raw[name] = _file_relation(found)
                except CXDataError as exc:
                    if tm and tm.source:
                        raise CXDataError(f"{mapping.entry('tables', name, 'from')}: "
                                          f"{exc}") from exc
                    raise
            elif tm:  # the mapping describes this table: it must be there
                raise CXDataError(
                    f"{mapping.entry('tables', name, 'from')}: no file or folder "
                    f"{wanted!r}" + ("" if tm.source else
                                     f" ({wanted}.parquet, {wanted}/ or {wanted}.csv)")
                    + f" in {path} (found: {_listing(path)})")
    else:
        raise CXDataError(f"source {path} does not exist (expected a folder of Parquet/CSV "
                          "files or a DuckDB database file)")
    for name, rel in raw.items():
        con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "__src_{name}" AS {rel}')
    return con, raw


def _no_tables_error(path: Path) -> CXDataError:
    expected = ", ".join(f"{n}.parquet/.csv" for n in TABLES)
    if path.is_file():
        return CXDataError(f"source {path} holds no table of the data contract: expected "
                           f"tables named {', '.join(TABLES)}; pass --mapping to read "
                           "tables with other names")
    return CXDataError(
        f"source {path} holds no table of the data contract: expected files named "
        f"{expected} (or a folder NAME/ of Parquet files; names are case-sensitive), "
        f"found: {_listing(path)}. Rename the files, or pass a mapping "
        "(--mapping FILE, or a preset: ga4, segment, amplitude) saying which file is which "
        "table.")


def _column_types(con: ibis.BaseBackend, view: str) -> dict[str, str]:
    df = con.raw_sql(f'DESCRIBE SELECT * FROM "{view}"').df()
    return dict(zip(df["column_name"], df["column_type"].str.upper(), strict=True))


def _rule_sql(rule: ColumnRule, src_types: dict[str, str], kind: str) -> tuple[str, str]:
    """(SQL for the contract value, SQL for "the source held a value") of a mapped column."""
    refs = [_ident(s) for s in rule.sources]
    if len(refs) == 1:
        value = refs[0]
        present = f"({value} IS NOT NULL AND trim(CAST({value} AS VARCHAR)) <> '')"
    else:
        # First non-empty value: blanks count as missing (CSV exports write '' for NULL).
        texts = [f"NULLIF(trim(CAST({r} AS VARCHAR)), '')" for r in refs]
        types = {src_types[s] for s in rule.sources}
        value = (f"coalesce({', '.join(refs)})" if len(types) == 1 and types != {"VARCHAR"}
                 else f"coalesce({', '.join(texts)})")
        present = f"(coalesce({', '.join(texts)}) IS NOT NULL)"
    if rule.epoch:
        per_s = EPOCH_UNITS[rule.epoch]
        text = f"trim(CAST({value} AS VARCHAR))"
        # Whole numbers are converted exactly in integers; fractions through a double.
        micros = (f"coalesce(TRY_CAST(CASE WHEN regexp_matches({text}, '^-?\\d+$') THEN {text} "
                  f"END AS BIGINT) * {1_000_000 // per_s}, CAST(round(TRY_CAST({text} AS DOUBLE)"
                  f" * {1_000_000 / per_s!r}) AS BIGINT))")
        value = f"timezone('UTC', make_timestamp({micros}))"
    elif rule.format:
        value = f"try_strptime(trim(CAST({value} AS VARCHAR)), {_sql_str(rule.format)})"
        if kind == "date":
            value = f"CAST({value} AS DATE)"
    return value, present


def _mapped_select(con: ibis.BaseBackend, name: str, tm: TableMapping | None,
                   mapping: Mapping | None) -> tuple[str, list[tuple[str, str]]]:
    """SELECT list of ``__raw_NAME`` over ``__src_NAME``: contract names per the mapping,
    other columns passed through; and the (column, expectation) of parsed expressions."""
    if tm is None:
        return "*", []
    src_types = _column_types(con, f"__src_{name}")
    src_cols = [c for c in src_types if c != _ROW]
    spec = TABLES[name]
    select: list[str] = []
    exprs: list[tuple[str, str]] = []
    consumed: set[str] = set()
    for col, rule in tm.columns.items():
        missing = [s for s in rule.sources if s not in src_types]
        if missing:
            raise CXDataError(
                f"{mapping.entry('tables', name, 'columns', col)}: source column "
                f"{', '.join(map(repr, missing))} not found in {tm.source or name} "
                f"(columns: {', '.join(src_cols)})")
        value, present = _rule_sql(rule, src_types, spec.column(col).kind)
        select.append(f"{value} AS {_ident(col)}")
        consumed.update(rule.sources)
        if rule.epoch or rule.format:
            what = (f"epoch {rule.epoch} since 1970-01-01" if rule.epoch
                    else f"format {rule.format}")
            select.append(f"({present} AND {value} IS NULL) AS {_ident(_HIDDEN + 'bad_' + col)}")
            exprs.append((col, f"cannot be read with {what} ({rule.describe()})"))
    for col, value in tm.constants.items():
        lit = "NULL" if value is None else _sql_str(str(value))
        select.append(f"CAST({lit} AS VARCHAR) AS {_ident(col)}")
    replaced = set(tm.columns) | set(tm.constants)
    # Columns the mapping does not mention pass through unchanged; a source column named
    # like a mapped contract column is replaced by the mapped value.
    passthrough = [_ident(c) for c in src_cols if c not in consumed and c not in replaced]
    return ", ".join([*select, *passthrough, _ROW]), exprs


def _create_raw_views(source: Source, raw: dict[str, str]) -> None:
    """``__raw_NAME``: the source table under contract names (mapping applied, derivable
    columns derived), still untyped; validation reads it, typed views are built on it."""
    con, mapping = source.con, source.mapping
    for name in raw:
        tm = mapping.tables.get(name) if mapping else None
        select, exprs = _mapped_select(con, name, tm, mapping)
        if exprs:
            source.expressions[name] = exprs
        con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "__mapped_{name}" AS '
                    f'SELECT {select} FROM "__src_{name}"')
        cols = set(_column_types(con, f"__mapped_{name}"))
        extra: list[str] = []
        where = f"{tm.source or name}" if tm else name
        if name in _DERIVED_CHANNEL and "channel" not in cols:
            extra.append(f"{_sql_str(UNSPECIFIED_CHANNEL)} AS channel")
            source.derived.append(
                f"{name}.channel: {where} has no channel; every row is given channel "
                f"'{UNSPECIFIED_CHANNEL}' (map a column, or set a constant in the mapping)")
            source.derived_columns.setdefault(name, set()).add("channel")
        if name == "orders" and "order_id" not in cols:
            # A file's row number identifies its row; a folder of Parquet files numbers rows
            # per file, so there the scan order numbers them.
            parts = "file_row_number" in raw[name] and "*.parquet" in raw[name]
            rownum = "(row_number() OVER () - 1)" if parts else _ROW
            extra.append(f"'row ' || CAST({rownum} AS VARCHAR) AS order_id")
            source.derived.append(
                f"orders.order_id: {where} has no order id; each row is one order, "
                "identified by its row number ('row 0', 'row 1', ...)")
            source.derived_columns.setdefault(name, set()).add("order_id")
        tail = (", " + ", ".join(extra)) if extra else ""
        con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "__raw_{name}" AS '
                    f'SELECT *{tail} FROM "__mapped_{name}"')
        if tm is None and " OVER " not in raw[name] + tail:
            # read_parquet or a database table, with at most constant or row-number columns
            # added: a filter on a column reaches the scan (CSV and JSON number their rows
            # with a window, which a filter cannot pass)
            source.plain_scans.add(name)


def _first_activity_sql(source: Source) -> str | None:
    """SQL of (customer_id, date of first activity) over the typed tables, or None; the date
    is taken in the mapping's time zone (the day the customer saw), else in UTC."""
    parts = []
    for name, col in (("events", "ts"), ("orders", "ts"), ("feedback", "ts"),
                      ("assignments", "assigned_at")):
        if name in source.names:
            cols = _column_types(source.con, name)
            if "customer_id" in cols and col in cols:
                parts.append(f'SELECT customer_id, {col} AS t FROM "{name}" '
                             "WHERE customer_id IS NOT NULL")
    if not parts:
        return None
    tz = source.mapping.timezone if source.mapping else None
    day = f"CAST(timezone({_sql_str(tz)}, min(t)) AS DATE)" if tz else "CAST(min(t) AS DATE)"
    return (f"SELECT customer_id, {day} AS signup_date FROM ("
            + " UNION ALL ".join(parts) + ") GROUP BY customer_id")


def _zone(source: Source) -> str:
    tz = source.mapping.timezone if source.mapping else None
    return f"day in {tz}" if tz else "day in UTC"


def _derive_customers(source: Source) -> None:
    """The customers table, or its signup_date, from the activity in the other tables."""
    con = source.con
    first = _first_activity_sql(source)
    if first is None:
        return
    tables = [n for n in ("events", "orders", "feedback", "assignments") if n in source.names]
    if "customers" not in source.names:
        con.raw_sql(
            'CREATE OR REPLACE TEMP VIEW "__raw_customers" AS SELECT customer_id, signup_date, '
            f"(row_number() OVER (ORDER BY customer_id) - 1) AS {_ROW} FROM ({first})")
        source.names = tuple(n for n in TABLES if n in source.names or n == "customers")
        source.derived.append(
            "customers: the source has no customers table; it is derived from the customer "
            f"ids seen in {', '.join(tables)}, with signup_date = the date of each "
            f"customer's first activity there ({_zone(source)}; no demographics)")
        source.derived_columns["customers"] = {"customer_id", "signup_date"}
        _create_typed_view(source, "customers")
    elif "signup_date" not in _column_types(con, "__raw_customers"):
        source.plain_scans.discard("customers")  # now a join
        con.raw_sql(
            'CREATE OR REPLACE TEMP VIEW "__raw_customers" AS SELECT c.*, f.signup_date '
            f'FROM "__mapped_customers" c LEFT JOIN ({first}) f '
            "ON CAST(c.customer_id AS VARCHAR) = f.customer_id")
        source.derived.append(
            "customers.signup_date: not in the source; derived as the date of each "
            f"customer's first activity in {', '.join(tables)} ({_zone(source)}; empty for "
            "customers with none)")
        source.derived_columns.setdefault("customers", set()).add("signup_date")
        _create_typed_view(source, "customers")


_TYPED_SQL = {
    "string": "VARCHAR",
    "category": "VARCHAR",
    "date": "DATE",
    "float": "DOUBLE",
    "int": "BIGINT",
    "timestamp": "TIMESTAMPTZ",
}
# A UTC offset or zone name after a time of day. Requiring the time keeps the day of a
# date-only value (1997-01-01: its "-01") from being read as an offset.
_TZ_SUFFIX = r"\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|z|UTC|GMT|[+-]\d\d(:?\d\d)?)$"
_DATE_ONLY = r"^\d{4}-\d{1,2}-\d{1,2}$"


def _typed_expr(col: Column, raw_type: str, tz: str | None = None) -> str:
    """SQL that casts raw column ``col`` to its contract type (NULL where unparseable).

    Timestamps without a zone (naive values, dates, text without an offset) are read in
    ``tz`` when given, else NULL (validation rejects them)."""
    q = f'"{col.name}"'
    if col.kind == "timestamp":
        if raw_type.startswith("TIMESTAMP WITH TIME ZONE"):
            return q
        if raw_type.startswith("TIMESTAMP") or raw_type == "DATE":
            if tz is None:
                return "CAST(NULL AS TIMESTAMPTZ)"  # naive: rejected by validation
            return f"timezone({_sql_str(tz)}, CAST({q} AS TIMESTAMP))"
        text = f"trim(CAST({q} AS VARCHAR))"
        zoned = f"TRY_CAST({text} AS TIMESTAMPTZ)"
        local = ("NULL" if tz is None else
                 f"timezone({_sql_str(tz)}, TRY_CAST({text} AS TIMESTAMP))")
        return (f"CASE WHEN regexp_matches({text}, '{_TZ_SUFFIX}') THEN {zoned} "
                f"ELSE {local} END")
    if raw_type == _TYPED_SQL[col.kind]:
        return q  # already the contract type: a cast would still cost a pass over the values
    if col.kind == "int":
        return f"TRY_CAST(TRY_CAST({q} AS DOUBLE) AS BIGINT)"
    return f"TRY_CAST({q} AS {_TYPED_SQL[col.kind]})"


def _create_typed_view(source: Source, name: str) -> None:
    con = source.con
    spec = TABLES[name]
    tz = source.mapping.timezone if source.mapping else None
    raw_types = _column_types(con, f"__raw_{name}")
    source.raw_types[name] = raw_types
    known = {c.name for c in spec.columns}
    select = []
    for col_name in raw_types:
        if col_name.startswith(_HIDDEN):
            continue
        if col_name in known:
            col = spec.column(col_name)
            select.append(f'{_typed_expr(col, raw_types[col_name], tz)} AS "{col_name}"')
        else:
            select.append(_ident(col_name))
    con.raw_sql(f'CREATE OR REPLACE TEMP VIEW "{name}" AS SELECT {", ".join(select)} '
                f'FROM "__raw_{name}"')


def open_source(
    path: str | os.PathLike[str] | ibis.BaseBackend,
    require: Iterable[str] = (),
    validate: bool = True,
    now: dt.datetime | None = None,
    mapping: str | os.PathLike[str] | dict | Mapping | None = None,
) -> Source:
    """Open ``path`` as typed Ibis tables on DuckDB, check required tables, and validate.

    Parameters
    ----------
    path : path-like, URL or ibis.BaseBackend
        A folder of Parquet/CSV files named after the tables, a DuckDB database file, a URL
        that ``ibis.connect`` understands (``postgres://user:pass@host:5432/db``;
        ``duckdb:///path/cx.duckdb`` opens that file as above; ``sc://host:port`` a Spark
        Connect session, :func:`cxanalysis.engines.connect_spark`), or an Ibis backend (e.g.
        ``ibis.pyspark.connect(spark)``; left open by ``close``). Database engines are read
        through :mod:`cxanalysis.engines`: tables found by name, validated in place.
    require : iterable of str
        Tables the caller needs; a missing one raises :class:`CXDataError` naming it.
    validate : bool
        Run :func:`validate` and raise :class:`CXDataError` on errors (warnings are kept in
        ``source.validation``).
    now : datetime, optional
        Reference instant for the "timestamp in the future" rule (default: the current time).
    mapping : path-like, str, dict or Mapping, optional
        A mapping file, a preset name (``ga4``, ``segment``, ``amplitude``) or a mapping
        dict saying which file holds which table and which column is which
        (:mod:`cxanalysis.mapping`). Without one, files and columns carry contract names.

    Returns
    -------
    Source
        With ``derived`` listing what was derived rather than read (a ``customers`` table
        from the ids seen elsewhere, a missing ``order_id`` or ``channel``).

    Raises
    ------
    CXDataError
        When the source holds no contract table at all, lacks a required one, the mapping is
        wrong (naming the entry), or (with ``validate``) the data breaks the contract.
    """
    from cxanalysis import engines

    mp = load_mapping(mapping)
    if isinstance(path, str) and path.lower().startswith("duckdb://"):
        path = path[len("duckdb://"):]  # a DuckDB file: the file path, read-only attached
        if not path:
            raise CXDataError("duckdb:// needs a database file (duckdb:///path/cx.duckdb)")
    if isinstance(path, ibis.BaseBackend) or engines.is_url(path):
        owned = not isinstance(path, ibis.BaseBackend)
        con = engines.connect(path) if owned else path
        try:
            source = engines.open_backend_source(con, engines.redact(path), mp, owned)
            source.require(*require)
        except Exception:
            if owned:
                con.disconnect()
            raise
        if validate:
            source.validation = engines.validate_backend(source, now=now)
            source.validation.raise_for_errors()
        return source
    path = Path(path).expanduser().resolve()
    con, raw = _connect(path, mp)
    engines.guard_operations(con)
    if not raw:
        con.disconnect()
        raise _no_tables_error(path)
    source = Source(path=path, con=con, names=tuple(n for n in TABLES if n in raw),
                    mapping=mp)
    try:
        _create_raw_views(source, raw)
        for name in source.names:
            _create_typed_view(source, name)
        _derive_customers(source)
        source.require(*require)
    except Exception:
        con.disconnect()
        raise
    if validate:
        source.validation = _validate_cached(source, now=now)
        source.validation.raise_for_errors()
    return source


# --------------------------------------------------------------------------- validation


def validate(path: str | os.PathLike[str] | ibis.BaseBackend, now: dt.datetime | None = None,
             mapping: str | os.PathLike[str] | dict | Mapping | None = None
             ) -> ValidationReport:
    """Validate a source against the contract and return the report (never raises on bad
    data; raises :class:`CXDataError` when the source cannot be opened at all: it does not
    exist, holds no contract table, or the mapping is wrong)."""
    with open_source(path, validate=False, mapping=mapping) as source:
        if source.tables is not None:
            from cxanalysis.engines import validate_backend

            return validate_backend(source, now=now)
        report = _validate_cached(source, now=now)
        report.derived = list(source.derived)
        return report


def _examples(con: ibis.BaseBackend, name: str, condition: str,
              pushdown: bool = True) -> tuple[int, ...]:
    """The first row numbers of ``__raw_NAME`` (alias ``r``) meeting ``condition``.

    ``pushdown=False`` for a condition on a floating-point column: the rows are then picked
    by an aggregate, which DuckDB does not push into the scan, because the scan would skip a
    row group whose statistics (NaN left out) say no row matches, and miss a NaN that does."""
    if not pushdown:
        rows = con.raw_sql(f"SELECT min(r.{_ROW}, {_MAX_EXAMPLES}) FILTER (WHERE {condition}) "
                           f'FROM "__raw_{name}" r').fetchone()[0]
        return tuple(int(x) for x in rows or ())
    df = con.raw_sql(
        f'SELECT r.{_ROW} AS row FROM "__raw_{name}" r '
        f"WHERE {condition} ORDER BY r.{_ROW} LIMIT {_MAX_EXAMPLES}"
    ).df()
    return tuple(int(x) for x in df["row"])


def _typed_ref(col: Column, raw_type: str, tz: str | None = None) -> str:
    """``_typed_expr`` with column references qualified by the raw alias ``r``."""
    return _typed_expr(col, raw_type, tz).replace(f'"{col.name}"', f'r."{col.name}"')


#: SQL of the customer ids a foreign key may take.
_KNOWN_CUSTOMERS = ('(SELECT CAST(customer_id AS VARCHAR) FROM "__raw_customers" '
                    "WHERE customer_id IS NOT NULL)")
#: Raw column types that cannot hold blank text (the "missing value" rule checks NULL only).
_NOT_TEXT = ("TIMESTAMP", "DATE", "TIME", "BIGINT", "INTEGER", "SMALLINT", "TINYINT",
             "HUGEINT", "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT", "UHUGEINT", "DOUBLE",
             "FLOAT", "REAL", "DECIMAL", "BOOLEAN")


def _blank(raw: str) -> str:
    """SQL: the text value ``raw`` is blank (``trim`` leaves nothing). ``trim`` runs only on
    values whose first character is below ``!`` or not ASCII (byte order), since only those
    can be blank: trimming every value of a large table was a large share of validation."""
    text = f"CAST({raw} AS VARCHAR)"
    return (f"CASE WHEN {text} < '!' OR {text} >= chr(128) THEN trim({text}) = '' "
            "ELSE false END")


#: Sources of at least this many bytes on disk show a progress bar while they are validated.
_BAR_BYTES = 100 * 2**20


def _validation_bar(source: Source):
    """The tables of ``source``, with a progress bar (per table) for a large file source."""
    from cxanalysis.progress import bar

    big = False
    if source.path is not None and source.tables is None:
        with contextlib.suppress(OSError):
            big = sum(f.stat().st_size for f in _read_files(source)) >= _BAR_BYTES
    return bar(source.names, desc="validate", unit="table", enable=None if big else False)


#: Raw floating-point types (may hold NaN, which Parquet statistics do not describe).
_FLOATS = ("DOUBLE", "FLOAT", "REAL")


def _count_checks(con: ibis.BaseBackend, name: str, conditions: list[str],
                  by_column: list[str | None] | None = None) -> list[int]:
    """[rows of ``__raw_NAME``, rows meeting each condition], the conditions in SQL over the
    alias ``r``.

    Without ``by_column``: one aggregate query, every condition counted with FILTER in one
    pass over the table (the way for CSV, JSON and mapped tables, where each query would
    parse the file or compute the mapping again). With ``by_column`` (the column each
    condition reads; a plain scan, see ``Source.plain_scans``): one query per column,
    ``WHERE c1 OR c2 ...``, which DuckDB pushes into the scan. It then skips the row groups
    whose min/max/null statistics prove that no row matches (no NULL where none may be, the
    latest instant before the reference time, every value within its range, no text that
    begins with a space or a non-ASCII character, so none can be blank) and reads only that
    column of the others, so a clean Parquet table is checked without decoding most of its
    values. Same conditions, same counts: only the
    work differs. Conditions whose column is None are counted in the one aggregate (with
    the row count).
    """
    table = f'"__raw_{name}" r'
    by_column = by_column or [None] * len(conditions)
    whole = [i for i, column in enumerate(by_column) if column is None]
    aggs = ["count(*)"] + [f"count(*) FILTER (WHERE {conditions[i]})" for i in whole]
    row = con.raw_sql(f"SELECT {', '.join(aggs)} FROM {table}").fetchone()
    counts = [int(row[0])] + [0] * len(conditions)
    for i, n in zip(whole, row[1:], strict=True):
        counts[i + 1] = int(n)
    groups: dict[str, list[int]] = {}
    for i, column in enumerate(by_column):
        if column is not None:
            groups.setdefault(column, []).append(i)
    for idx in groups.values():
        aggs = ", ".join(f"count(*) FILTER (WHERE {conditions[i]})" for i in idx)
        where = " OR ".join(f"({conditions[i]})" for i in idx)
        row = con.raw_sql(f"SELECT {aggs} FROM {table} WHERE {where}").fetchone()
        for i, n in zip(idx, row, strict=True):
            counts[i + 1] = int(n)
    return counts


#: Rows per customer from which a table's customer ids are aggregated before the lookup.
_GROUP_IDS_FROM = 4


def _fk_tables(source: Source, types: dict[str, dict[str, str]]) -> list[str]:
    """Tables whose ``customer_id`` is checked against ``customers`` (not when customers is
    derived: it holds every id seen by construction)."""
    if not source.has("customers") or "customer_id" in source.derived_columns.get(
            "customers", set()) or "customer_id" not in _column_types(source.con,
                                                                       "__raw_customers"):
        return []
    return [n for n in source.names if TABLES[n].customer_fk and "customer_id" in types[n]]


def _unknown_customers(con: ibis.BaseBackend, names: list[str],
                       plain_scans: Iterable[str] = ()) -> dict[str, int]:
    """Rows per table whose ``customer_id`` is not in ``customers`` (tables without any are
    left out).

    One query serves every table, so the hash table of the known ids is built once rather
    than once per table. A table with many rows per customer (events) has its distinct ids
    looked up once, their rows counted by a hash aggregate (about half the time of looking
    up every row's id); a table with about one row per customer (orders, assignments) has
    each row's id looked up directly, which is cheaper than aggregating it first. The row
    counts that decide come from the files' metadata (plain scans); without them every
    table is aggregated."""
    plain_scans = set(plain_scans)

    def rows(name: str) -> int | None:
        if name not in plain_scans:
            return None
        return int(con.raw_sql(f'SELECT count(*) FROM "__raw_{name}"').fetchone()[0])

    known = rows("customers")
    parts = []
    for n in names:
        table_rows = rows(n) if known is not None else None
        per_id = table_rows is not None and table_rows < _GROUP_IDS_FROM * max(known, 1)
        parts.append(f"SELECT {_sql_str(n)} AS t, CAST(customer_id AS VARCHAR) AS id, "
                     + ("1 AS n " if per_id else "count(*) AS n ")
                     + f'FROM "__raw_{n}" WHERE customer_id IS NOT NULL'
                     + ("" if per_id else " GROUP BY 2"))
    found = con.raw_sql(
        f"SELECT t, sum(n) FROM ({' UNION ALL '.join(parts)}) e "
        f"WHERE e.id NOT IN {_KNOWN_CUSTOMERS} GROUP BY t").fetchall()
    return {t: int(n) for t, n in found}


#: SQL function hashing a key for the duplicate-key check (a test replaces it to collide).
_KEY_HASH = "hash"


def _duplicate_rows(con: ibis.BaseBackend, name: str, key: str) -> int:
    """Rows of ``__raw_NAME`` (alias ``r``) sharing the value of ``key`` (SQL) with another.

    Rows are first grouped by a 64-bit hash of the key: equal keys have equal hashes, so no
    hash shared by two rows proves the key unique, and a fixed-width group key is much
    cheaper to aggregate than one or two strings. Only when some hash is shared (duplicates,
    or, rarely, a collision) are the keys themselves counted."""
    def shared(group: str) -> int:
        return int(con.raw_sql(
            f'SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM "__raw_{name}" r '
            f"GROUP BY {group} HAVING count(*) > 1)").fetchone()[0])

    return shared(f"{_KEY_HASH}({key})") and shared(key)


def _validate(source: Source, types: dict[str, dict[str, str]],
              now: dt.datetime | None = None) -> ValidationReport:
    con = source.con
    now = now or dt.datetime.now(dt.UTC)
    now_sql = f"TIMESTAMPTZ {_sql_str(now.astimezone(dt.UTC).isoformat())}"
    report = ValidationReport(derived=list(source.derived))
    tz = source.mapping.timezone if source.mapping else None
    fk_tables = _fk_tables(source, types)
    unknown: dict[str, int] | None = None
    for name in _validation_bar(source):
        spec: Table = TABLES[name]
        raw_types = types[name]
        derived = source.derived_columns.get(name, set())
        if name == "customers" and {"customer_id", "signup_date"} <= derived:
            # Derived from the validated tables, unique and complete by construction:
            # checking it would only rescan them.
            report.row_counts[name] = int(
                con.raw_sql('SELECT count(*) FROM "__raw_customers"').fetchone()[0])
            continue
        present = [c for c in spec.columns if c.name in raw_types]
        for col in spec.columns:
            if col.required and col.name not in raw_types:
                hint = (f"; map a source column to it under tables.{name}.columns in the "
                        "mapping" if source.mapping else
                        "; rename the column or pass a mapping (--mapping)")
                report.problems.append(Problem(
                    name, col.name, "missing required column", 0,
                    f"the table has no column {col.name!r} ({col.kind}: {col.description}); "
                    f"columns found: "
                    f"{', '.join(c for c in raw_types if not c.startswith(_HIDDEN))}{hint}"))
        # One aggregate query per table: a named condition per rule, counted with FILTER.
        checks: list[tuple[Column | None, str, str, str]] = []  # col, rule, condition, detail
        for col in present:
            raw = f'r."{col.name}"'
            typed = _typed_ref(col, raw_types[col.name], tz)
            rtype = raw_types[col.name]
            text = f"trim(CAST({raw} AS VARCHAR))"
            if col.kind == "timestamp" and tz is not None and not (
                    rtype.startswith("TIMESTAMP") or rtype == "DATE"):
                checks.append((col, "unparseable value",
                               f"{raw} IS NOT NULL AND {text} <> '' AND {typed} IS NULL",
                               f"cannot be read as {col.kind}"))
            elif col.kind == "timestamp" and tz is not None:
                pass  # typed values, naive ones read in the mapping's time zone
            elif col.kind == "timestamp" and rtype == "DATE":
                checks.append((col, "date without time zone", f"{raw} IS NOT NULL",
                               "stored as DATE: a day in some time zone, not an instant; set "
                               "`timezone:` in a mapping (--mapping) to read it as midnight "
                               "there"))
            elif col.kind == "timestamp" and (rtype.startswith("TIMESTAMP")
                                              and "TIME ZONE" not in rtype):
                checks.append((col, "naive timestamp", f"{raw} IS NOT NULL",
                               f"stored as {rtype} without a time zone; store UTC instants "
                               "(TIMESTAMP WITH TIME ZONE, or text ending in Z/+00:00), or "
                               "set `timezone:` in a mapping (--mapping)"))
            elif col.kind == "timestamp" and not rtype.startswith("TIMESTAMP WITH TIME ZONE"):
                checks.append((col, "naive timestamp",
                               f"{raw} IS NOT NULL AND {text} <> '' AND "
                               f"NOT regexp_matches({text}, '{_TZ_SUFFIX}') AND "
                               f"NOT regexp_matches({text}, '{_DATE_ONLY}')",
                               "text timestamps must carry a UTC offset (e.g. "
                               "2025-03-01T10:00:00Z), or be read in a zone: set `timezone:` "
                               "in a mapping (--mapping)"))
                checks.append((col, "date without time zone",
                               f"{raw} IS NOT NULL AND regexp_matches({text}, '{_DATE_ONLY}')",
                               "a date-only value (e.g. 1997-01-01) is a day in some time "
                               "zone, not an instant: set `timezone:` in a mapping "
                               "(--mapping) to read it as midnight there"))
                checks.append((col, "unparseable value",
                               f"{raw} IS NOT NULL AND trim(CAST({raw} AS VARCHAR)) <> '' AND "
                               f"regexp_matches(trim(CAST({raw} AS VARCHAR)), '{_TZ_SUFFIX}') "
                               f"AND {typed} IS NULL",
                               f"cannot be read as {col.kind}"))
            elif col.kind not in ("string", "category") and typed == raw:
                pass  # stored in the contract type already: nothing can fail to parse
            elif col.kind not in ("string", "category"):
                blank = (f" AND trim(CAST({raw} AS VARCHAR)) <> ''"
                         if rtype == "VARCHAR" else "")
                checks.append((col, "unparseable value",
                               f"{raw} IS NOT NULL{blank} AND {typed} IS NULL",
                               f"cannot be read as {col.kind}"))
            if not col.nullable and col.name not in derived:
                # Only text can be blank; casting every timestamp or number to text just to
                # find none was most of the validation time of a large events table.
                blank = "" if rtype.startswith(_NOT_TEXT) else f" OR {_blank(raw)}"
                checks.append((col, "missing value", f"({raw} IS NULL{blank})",
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
                # list_contains: one lookup per value (NOT IN a list of literals compares each
                # value with every literal, several times slower on a large events table)
                checks.append((col, "unknown value",
                               f"{raw} IS NOT NULL AND NOT list_contains([{allowed}], "
                               f"CAST({raw} AS VARCHAR))",
                               f"allowed values: {', '.join(col.allowed)}"))
            if col.kind == "timestamp":
                checks.append((col, "timestamp in the future", f"{typed} > {now_sql}",
                               f"later than the reference time {now:%Y-%m-%d %H:%M} UTC"))
            if col.kind == "date":
                checks.append((col, "date in the future", f"{typed} > CAST({now_sql} AS DATE)",
                               f"later than {now:%Y-%m-%d}"))
        for col_name, detail in source.expressions.get(name, []):
            checks.append((spec.column(col_name), "unparseable value",
                           f'r."{_HIDDEN}bad_{col_name}"', detail))
        if name in fk_tables:
            checks.append((spec.column("customer_id"), "unknown customer",
                           "r.customer_id IS NOT NULL AND CAST(r.customer_id AS VARCHAR) "
                           f"NOT IN {_KNOWN_CUSTOMERS}",
                           "customer_id not found in customers"))
        key_cols = [k for k in spec.key if k in raw_types]
        if key_cols and len(key_cols) == len(spec.key):
            key = ", ".join(f'CAST(r."{k}" AS VARCHAR)' for k in key_cols)
            checks.append((spec.column(key_cols[-1]) if len(key_cols) == 1 else None,
                           "duplicate key",
                           f"count(*) OVER (PARTITION BY {key}) > 1",
                           f"({', '.join(key_cols)}) must be unique; rows sharing a key"))

        window_checks = [c for c in checks if " OVER " in c[2]]
        fk_checks = [c for c in checks if c[1] == "unknown customer"]
        plain_checks = [c for c in checks if " OVER " not in c[2] and c not in fk_checks]
        # Floating-point columns are counted without a pushed-down filter: Parquet statistics
        # leave NaN out, so DuckDB would skip a row group whose only value above a range is
        # NaN (which the aggregate counts as out of range, DuckDB ordering NaN above all).
        counts = _count_checks(con, name, [cond for _, _, cond, _ in plain_checks],
                               by_column=[None if raw_types[c.name].startswith(_FLOATS)
                                          else c.name for c, _, _, _ in plain_checks]
                               if name in source.plain_scans else None)
        report.row_counts[name] = int(counts[0])
        if counts[0] == 0:
            report.problems.append(Problem(name, None, "empty table", 0,
                                           "the table has no rows", severity="warning"))
        for i, (col, rule, cond, detail) in enumerate(plain_checks):
            n = int(counts[i + 1])
            if n:
                floating = col is not None and raw_types.get(col.name, "").startswith(_FLOATS)
                report.problems.append(Problem(
                    name, col.name if col else None, rule, n, detail,
                    examples=_examples(con, name, cond, pushdown=not floating)))
        for col, rule, cond, detail in fk_checks:
            if unknown is None:  # every table's count in one query, at the first table
                unknown = _unknown_customers(con, fk_tables, source.plain_scans)
            n = unknown.get(name, 0)
            if n:
                report.problems.append(Problem(name, col.name, rule, n, detail,
                                               examples=_examples(con, name, cond)))
        for col, rule, cond, detail in window_checks:
            q = (f"SELECT {_ROW} AS row FROM (SELECT r.{_ROW}, {cond} AS bad "
                 f'FROM "__raw_{name}" r) WHERE bad ORDER BY row')
            # Rows sharing a key, counted with a hash aggregate (no sort of the table); the
            # window query above only runs to find examples when there are some.
            n = _duplicate_rows(con, name, key)
            if n:
                ex = tuple(int(x) for x in
                           con.raw_sql(f"{q} LIMIT {_MAX_EXAMPLES}").df()["row"])
                report.problems.append(Problem(name, col.name if col else ",".join(key_cols),
                                               rule, n, detail, examples=ex))
    return report


# --------------------------------------------------------------------------- validation cache

#: Folder of cxanalysis's caches (default ``$XDG_CACHE_HOME/cxanalysis``, else
#: ``~/.cache/cxanalysis``); validation verdicts are kept in its ``validation/`` folder.
CACHE_ENV = "CX_CACHE_DIR"
#: ``CX_VALIDATION_CACHE=0`` validates on every open (nothing read from or written to the cache).
VALIDATION_CACHE_ENV = "CX_VALIDATION_CACHE"
_RULES: list[str] = []  # digest of the validation code, computed once per process


def cache_dir() -> Path:
    """The folder of cxanalysis's caches (see :data:`CACHE_ENV`)."""
    folder = os.environ.get(CACHE_ENV)
    if folder:
        return Path(folder).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxanalysis"


def _rules_digest() -> str:
    """Digest of the code that decides a verdict (this module, the contract, mappings) and
    the package version: a changed rule invalidates every cached verdict."""
    if not _RULES:
        import cxanalysis
        from cxanalysis import mapping, schema

        h = hashlib.sha256(cxanalysis.__version__.encode())
        for mod in (__file__, schema.__file__, mapping.__file__):
            h.update(Path(mod).read_bytes())
        _RULES.append(h.hexdigest())
    return _RULES[0]


def _read_files(source: Source) -> list[Path]:
    """The files a file source is read from: every file of the folder (as
    :func:`fingerprint`) or the database file, plus files a mapping names by absolute path."""
    path = source.path
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and "truth" not in p.relative_to(path).parts)
    for tm in (source.mapping.tables.values() if source.mapping else ()):
        if tm.source and Path(tm.source).is_absolute() and Path(tm.source).exists():
            extra = Path(tm.source)
            files += [extra] if extra.is_file() else sorted(p for p in extra.rglob("*")
                                                           if p.is_file())
    return files


def _validation_key(source: Source) -> str | None:
    """Cache key of a source's verdict: its fingerprint (content sampled, mapping), the
    size and modification time (ns) of every file read (so that any rewrite, also in the
    middle of a file the fingerprint does not sample, invalidates it) and the rules' digest.
    None for database URLs and backends (they are validated on every open)."""
    if source.path is None or source.tables is not None:
        return None
    try:
        stats = [(str(f), st.st_size, st.st_mtime_ns)
                 for f in _read_files(source) for st in [f.stat()]]
        parts = [source.fingerprint, stats, _rules_digest()]
    except OSError:
        return None
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _cache_enabled() -> bool:
    return os.environ.get(VALIDATION_CACHE_ENV, "").strip().lower() not in ("0", "false",
                                                                            "no", "off")


def _load_verdict(key: str, now: dt.datetime) -> ValidationReport | None:
    """The cached report for ``key`` when it still holds at ``now``: it was reached at a
    reference time no later than ``now`` (with no error then, none of the "in the future"
    rules can fail later)."""
    try:
        data = json.loads((cache_dir() / "validation" / f"{key}.json").read_text())
        if data.get("key") != key or now < dt.datetime.fromisoformat(data["now"]):
            return None
        problems = [Problem(**{**p, "examples": tuple(p["examples"])})
                    for p in data["problems"]]
        return ValidationReport(problems=problems,
                                row_counts={k: int(v) for k, v in data["row_counts"].items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no verdict, or an unreadable one: validate


def _store_verdict(key: str, now: dt.datetime, report: ValidationReport) -> None:
    from cxanalysis.files import atomic_write

    data = {"key": key, "now": now.astimezone(dt.UTC).isoformat(),
            "problems": [dataclasses.asdict(p) for p in report.problems],
            "row_counts": report.row_counts}
    with contextlib.suppress(OSError):  # a read-only cache folder only costs the next open
        atomic_write(cache_dir() / "validation" / f"{key}.json", json.dumps(data) + "\n")


def _validate_cached(source: Source, now: dt.datetime | None = None) -> ValidationReport:
    """:func:`_validate`, skipped when the same source (same fingerprint, same files, same
    rules) was found free of errors before at a reference time no later than ``now``.

    Only verdicts without errors are kept: a broken source is validated on every open, so
    that its :class:`CXDataError` always names the problems found now.
    """
    now = now or dt.datetime.now(dt.UTC)
    key = _validation_key(source) if _cache_enabled() else None
    if key is not None:
        cached = _load_verdict(key, now)
        if cached is not None:
            cached.derived = list(source.derived)
            return cached
    report = _validate(source, source.raw_types, now=now)
    if key is not None and report.ok:
        _store_verdict(key, now, report)
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


@ibis.udf.scalar.builtin(name="unix_micros")
def _unix_micros(ts: idt.Timestamp(timezone="UTC")) -> idt.int64:  # type: ignore[empty-body]
    """Spark's builtin ``unix_micros``: microseconds since 1970-01-01 UTC of an instant
    (Ibis 12's PySpark backend cannot extract microseconds, so the portable formula fails
    there)."""


def _engine_of(expr: ibis.Value) -> str | None:
    try:
        return ibis.get_backend(expr).name
    except Exception:  # unbound expressions have no backend: stay portable
        return None


def _on_duckdb(expr: ibis.Value) -> bool:
    return _engine_of(expr) == "duckdb"


_TEMP_COUNTER = itertools.count()
#: Backends whose Ibis driver creates session-temporary tables.
_TEMP_TABLES = ("duckdb", "postgres")


#: Name of each table :func:`materialize` created -> the database tables it was made from
#: (so that an error about a query over it names the tables the user knows).
_MATERIALIZED: dict[str, list[str]] = {}


def materialized_from(name: str) -> list[str] | None:
    """The tables a table created by :func:`materialize` was made from, else None."""
    return _MATERIALIZED.get(name)


def materialize(expr: ibis.Table, prefix: str = "tmp") -> ibis.Table:
    """Store ``expr`` once so that several later queries read it instead of re-running it.

    A session-temporary table on DuckDB and PostgreSQL (as before); on Spark a session
    temporary view over the result computed once (:func:`_spark_checkpoint`); elsewhere
    (warehouses) ``expr.cache()``, which each backend implements its own way. Works on
    unbound expressions too (returned as they are)."""
    try:
        con = ibis.get_backend(expr)
    except Exception:  # an unbound expression: nothing to store it in
        return expr
    name = f"__{prefix}_{next(_TEMP_COUNTER)}"
    from cxanalysis.engines import _tables_of

    _MATERIALIZED[name] = _tables_of(expr)
    if con.name in _TEMP_TABLES:
        return con.create_table(name, expr, temp=True)
    if con.name == "pyspark":
        return _spark_checkpoint(con, expr, name)
    cached = expr.cache()
    _MATERIALIZED[getattr(cached.op(), "name", name)] = _MATERIALIZED[name]
    return cached


def _spark_checkpoint(con: ibis.BaseBackend, expr: ibis.Table, name: str) -> ibis.Table:
    """``expr`` computed once into a Spark local checkpoint, as the temporary view ``name``.

    Why not Ibis's ``.cache()`` (Spark's ``DataFrame.cache()``): on a Spark Connect session
    it fails for any query Ibis compiles with a CTE (Ibis asserts ``is_cached``, and Spark
    Connect re-analyses the SQL for every call, so the CTE ids differ and the cached plan is
    never found again: "AssertionError" from ``_create_cached_table``); and on a classic
    session every later query over the cached table still analyses and optimises the whole
    plan it came from to find the cache (a funnel's per-customer table is a deep plan). A
    local checkpoint is computed eagerly, holds the rows (memory, spilling to disk) and
    stands for them as a leaf of the plan on both kinds of session. The view lives as long
    as the session, like a session-temporary table.

    The view is typed as ``expr`` was (Spark reads its ``TIMESTAMP`` back as a naive
    timestamp and small integers as ``INT``; the casts are no-ops in Spark SQL), so that it
    stands in for ``expr`` in unions and comparisons."""
    session = con._session  # the private attribute is the only way to the SparkSession
    df = session.sql(con.compile(expr)).localCheckpoint(eager=True)
    df.createOrReplaceTempView(name)
    t = con.table(name)
    schema = expr.schema()
    return t.select(**{c: t[c] if t[c].type() == dtype else t[c].cast(dtype)
                       for c, dtype in schema.items()})


def epoch_seconds(ts: ibis.Value) -> ibis.Value:
    """Seconds since 1970-01-01 UTC (float64) of a UTC timestamp expression.

    On DuckDB this uses ``epoch_us`` directly: Ibis's ``epoch_seconds()`` compiles through a
    cast to a naive timestamp, a time-zone conversion per row that is several times slower on
    tens of millions of rows. Other backends get :func:`epoch_micros` / 10^6."""
    if _on_duckdb(ts):
        return _epoch_us(ts).cast("float64") / 1e6
    return epoch_micros(ts).cast("float64") / 1e6  # same formula: same doubles as DuckDB


def epoch_micros(ts: ibis.Value) -> ibis.Value:
    """Microseconds since 1970-01-01 UTC (int64) of a UTC timestamp expression: exact, and
    cheaper than float seconds to compare and join on (see :func:`epoch_seconds`). Spark
    uses its builtin ``unix_micros``. Other backends get whole seconds of the instant
    truncated to the second, x 10^6, plus its microseconds: exact too (checked against
    DuckDB on PostgreSQL and Spark in tests/engines/)."""
    if _on_duckdb(ts):
        return _epoch_us(ts)
    if _engine_of(ts) == "pyspark":
        return _unix_micros(ts)
    whole = ts.truncate("s").epoch_seconds().cast("int64") * 1_000_000
    return whole + ts.microsecond().cast("int64")


#: How a customer without a label reads in every breakdown (one spelling for the package).
UNKNOWN = "(unknown)"


@dataclass(frozen=True)
class DayWindow:
    """Inclusive ISO days ``[start, end]`` in UTC; a missing bound is open.

    The one time window of the package: every ``start`` / ``end`` parameter (ISO dates,
    inclusive) is read through it, and :func:`between_days` is the one filter. ``end`` covers
    its whole day: the exclusive upper instant is midnight UTC of the next day.

    Raises :class:`cxanalysis.errors.ParameterError` for a bound that is not a date or an
    ``end`` before ``start``.
    """

    start: str | None = None
    end: str | None = None

    def __post_init__(self) -> None:
        try:
            lo, hi = self.lower, self.upper
        except (ValueError, TypeError) as exc:
            raise ParameterError(f"a day window needs ISO dates (YYYY-MM-DD), got start="
                                 f"{self.start!r}, end={self.end!r}") from exc
        if lo is not None and hi is not None and hi <= lo:
            raise ParameterError(f"day window: end {self.end} is before start {self.start}")

    @classmethod
    def of(cls, window: DayWindow | Sequence[str | None] | None) -> DayWindow:
        """A window from a ``DayWindow``, a pair ``(start, end)`` or None (all days)."""
        if isinstance(window, DayWindow):
            return window
        if window is None:
            return cls()
        start, end = window
        return cls(start, end)

    @property
    def lower(self) -> pd.Timestamp | None:
        """First instant inside the window (UTC), or None when open."""
        return None if self.start is None else pd.Timestamp(self.start, tz="UTC")

    @property
    def upper(self) -> pd.Timestamp | None:
        """First instant after the window (midnight UTC after ``end``), or None when open."""
        return None if self.end is None else window_end(self.end)

    @property
    def is_open(self) -> bool:
        """Whether both bounds are missing (the window holds every day)."""
        return self.start is None and self.end is None

    def contains(self, ts: ibis.Value) -> ibis.Value:
        """Whether ``ts`` falls in the window (NULL for a NULL ``ts`` when a bound is given,
        true otherwise)."""
        cond = ibis.literal(True)
        if self.start is not None:
            cond &= ts >= self.lower
        if self.end is not None:
            cond &= ts < self.upper
        return cond


def window_end(end: str) -> pd.Timestamp:
    """Exclusive end instant of the inclusive ISO day ``end`` (UTC)."""
    return pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)


def in_days(ts: ibis.Value, start: str | None, end: str | None) -> ibis.Value:
    """Whether ``ts`` falls on the ISO days ``start`` to ``end`` (inclusive, UTC); a missing
    bound is open (NULL for a NULL ``ts`` when a bound is given, true otherwise). Same as
    ``DayWindow(start, end).contains(ts)``."""
    return DayWindow(start, end).contains(ts)


def between_days(table: ibis.Table, start: str | None | DayWindow = None,
                 end: str | None = None, column: str = "ts") -> ibis.Table:
    """Rows of ``table`` whose ``column`` (default ``ts``) falls on the ISO days ``start`` to
    ``end`` (inclusive, UTC); a missing bound is open. ``start`` may be a
    :class:`DayWindow` (then ``end`` is not given).

    The one day-window filter of the package (overview, pain points, journeys, funnels,
    segments, personas and the comparison all read their dates through it)."""
    window = start if isinstance(start, DayWindow) else DayWindow(start, end)
    if window.is_open:
        return table
    return table.filter(window.contains(table[column]))


# ------------------------------------------------------------------------------- labels


@dataclass(frozen=True, eq=False)
class Labels:
    """One group label per customer: the one shape every breakdown takes.

    Persona labels, segments and customer attributes all become a ``Labels``: a name (the
    grouping, e.g. ``"persona"``) and an Ibis table with ``customer_id`` and ``group``
    (both strings), so that breakdowns join it in the engine. Customers without a label
    fall in the group :data:`UNKNOWN` (``"(unknown)"``) when joined (:meth:`join`).

    Build one with :meth:`of` from a Series indexed by ``customer_id`` (as
    :class:`cxanalysis.segments.Segments.labels`), a DataFrame or an Ibis table with
    ``customer_id`` and the label column (as persona labels or the ``customers`` table).
    """

    name: str
    table: ibis.Table

    @classmethod
    def of(cls, labels: Labels | pd.Series | pd.DataFrame | ibis.Table,
           column: str | None = None) -> Labels:
        """Labels from any per-customer grouping.

        Parameters
        ----------
        labels : Labels, Series, DataFrame or ibis.Table
            A Series is indexed by customer id (its name, or ``column``, names the
            grouping); a DataFrame or table has ``customer_id`` and the label column.
        column : str, optional
            The label column of a DataFrame or table; may be left out when it has exactly
            one column besides ``customer_id``.
        """
        if isinstance(labels, Labels):
            return labels
        if isinstance(labels, pd.Series):
            name = column or (str(labels.name) if labels.name is not None else "group")
            # a missing label stays missing (NULL), so that join() names it UNKNOWN
            labels = pd.DataFrame({"customer_id": labels.index.to_numpy(),
                                   name: labels.to_numpy()})
            column = name
        if not isinstance(labels, (pd.DataFrame, ibis.Table)):
            raise ParameterError("labels must be a Series indexed by customer_id, or a "
                                 "DataFrame or table with customer_id and a label column, "
                                 f"not {type(labels).__name__}")
        cols = list(labels.columns)
        if column is None:
            others = [c for c in cols if c != "customer_id"]
            if len(others) != 1:
                raise ParameterError(f"name the label column (column=...): the labels have "
                                     f"columns {cols}")
            column = others[0]
        if "customer_id" not in cols or column not in cols:
            raise ParameterError(f"labels need customer_id and {column!r}, got columns {cols}")
        if isinstance(labels, pd.DataFrame):
            # a memtable goes to whichever engine it is joined with
            labels = ibis.memtable(labels[["customer_id", column]])
        return cls(column, labels.select(customer_id=labels.customer_id.cast("string"),
                                         group=labels[column].cast("string")))

    def join(self, table: ibis.Table) -> ibis.Table:
        """``table`` (with ``customer_id``) with a column ``group``: the customer's label,
        :data:`UNKNOWN` for customers without one (no row is dropped)."""
        j = table.left_join(self.table, "customer_id")
        if "customer_id_right" in j.columns:
            j = j.drop("customer_id_right")
        return j.mutate(group=j.group.fill_null(UNKNOWN))

    def series(self) -> pd.Series:
        """The labels as a Series indexed by ``customer_id``, named after the grouping."""
        df = self.table.execute()
        return pd.Series(df["group"].to_numpy(), index=pd.Index(df["customer_id"],
                                                                name="customer_id"),
                         name=self.name)


#: Anything :meth:`Labels.of` turns into per-customer labels.
LabelsLike = Labels | pd.Series | pd.DataFrame | ibis.Table
