"""Mapping files: read an export with its own file and column names as contract tables.

A mapping says, per contract table, which file (or database table) holds it and which
source column holds each contract column. The format is pinned (other tools write it)::

    timezone: UTC            # naive timestamps and date-only values are read in this zone
    tables:
      events:                # a contract table
        from: clicks.csv     # a file in the source folder, or a table of the database
        columns:             # contract column: source column
          customer_id: user_id
          ts: timestamp
          event: event
        constants:           # contract column: one value for every row
          channel: web
      orders:
        from: orders.csv
        columns: {customer_id: customer_id, ts: date, amount: dollar_value}

Two small extensions, for exports whose values need more than a rename (the presets use
them); plain names remain the normal case:

- a *list* of source columns takes the first non-empty one, row by row
  (``customer_id: [user_id, anonymous_id]``);
- a *dict* ``{column: NAME_OR_LIST, epoch: s|ms|us}`` reads a number of seconds,
  milliseconds or microseconds since 1970-01-01 UTC as an instant, and
  ``{column: NAME_OR_LIST, format: "%Y%m%d"}`` parses text with a ``strptime`` format
  (a parsed value without a zone is read in the mapping's ``timezone``).

A mapping may also start from a shipped preset and change only what differs:
``extends: ga4`` followed by, for example, ``tables: {events: {from: my_export.parquet}}``
(table entries are merged key by key; ``columns`` and ``constants`` entry by entry).

Presets (:func:`preset_names`) ship as package data: ``ga4`` (GA4 BigQuery export,
flattened), ``segment`` (Segment ``tracks`` table) and ``amplitude`` (Amplitude export).

Nothing here reads data; :mod:`cxanalysis.data` turns a :class:`Mapping` into views.
Every problem is a :class:`~cxanalysis.data.CXDataError` naming the mapping entry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cxanalysis.schema import TABLES

#: Units accepted by ``epoch`` and their number per second.
EPOCH_UNITS: dict[str, int] = {"s": 1, "ms": 1_000, "us": 1_000_000}

_TOP_KEYS = {"timezone", "tables", "extends"}
_TABLE_KEYS = {"from", "columns", "constants"}
_RULE_KEYS = {"column", "epoch", "format"}


def _error(msg: str) -> Exception:
    # Imported lazily: data.py imports this module.
    from cxanalysis.data import CXDataError

    return CXDataError(msg)


@dataclass(frozen=True)
class ColumnRule:
    """How one contract column is read from the source.

    Attributes
    ----------
    sources : tuple of str
        Source column(s); with several, the first non-empty value row by row.
    epoch : {"s", "ms", "us"} or None
        The value is a number of seconds / milliseconds / microseconds since 1970-01-01 UTC.
    format : str or None
        A ``strptime`` format the text value is parsed with.
    """

    sources: tuple[str, ...]
    epoch: str | None = None
    format: str | None = None

    def describe(self) -> str:
        text = " or ".join(self.sources)
        if self.epoch:
            text += f" (epoch {self.epoch})"
        if self.format:
            text += f" (format {self.format})"
        return text


@dataclass(frozen=True)
class TableMapping:
    """The mapping of one contract table.

    ``source`` is the ``from`` entry (None: the contract's own file or table name).
    """

    table: str
    source: str | None = None
    columns: dict[str, ColumnRule] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mapping:
    """A parsed, checked mapping.

    Attributes
    ----------
    name : str
        Where it came from (a file path, ``preset NAME`` or ``dict``), used in errors.
    timezone : str or None
        IANA zone in which naive timestamps and date-only values are read.
    tables : dict of str to TableMapping
        Mapped contract tables; tables not listed are found under their contract names.
    """

    name: str
    timezone: str | None = None
    tables: dict[str, TableMapping] = field(default_factory=dict)

    def entry(self, *parts: str) -> str:
        """``mapping NAME: tables.events.columns.ts`` style reference for error messages."""
        return f"mapping {self.name}: " + ".".join(parts)


def preset_names() -> list[str]:
    """Names of the presets shipped with the package (``ga4``, ``segment``, ...)."""
    folder = resources.files("cxanalysis") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The YAML text of preset ``name``."""
    if name not in preset_names():
        raise _error(f"no mapping preset {name!r} (presets: {', '.join(preset_names())}); "
                     "pass a mapping file path instead")
    return (resources.files("cxanalysis") / "presets" / f"{name}.yaml").read_text()


def _read_yaml(text: str, name: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(f"mapping {name}: not valid YAML: {exc}") from exc


def _raw(spec: str | os.PathLike[str] | MappingABC[str, Any]) -> tuple[Any, str]:
    """The unparsed mapping dict of ``spec`` and its name for messages."""
    if isinstance(spec, MappingABC):
        return dict(spec), "dict"
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return _read_yaml(path.read_text(), str(path)), str(path)
    if text in preset_names():
        return _read_yaml(preset_text(text), f"preset {text}"), f"preset {text}"
    raise _error(f"mapping {text!r}: no such file, and not a preset "
                 f"({', '.join(preset_names())})")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)  # keeps the base's own ``extends``, resolved next
    if "timezone" in over:
        out["timezone"] = over["timezone"]
    tables = {k: dict(v) if isinstance(v, MappingABC) else v
              for k, v in (base.get("tables") or {}).items()}
    for tname, entry in (over.get("tables") or {}).items():
        cur = tables.get(tname)
        if not isinstance(entry, MappingABC) or not isinstance(cur, dict):
            tables[tname] = entry  # nothing to merge: checked as it stands
            continue
        for key, value in (entry or {}).items():
            if key in ("columns", "constants") and isinstance(value, MappingABC):
                cur[key] = {**(cur.get(key) or {}), **value}
            else:
                cur[key] = value
    out["tables"] = tables
    return out


def _rule(m: Mapping, table: str, col: str, value: Any) -> ColumnRule:
    where = m.entry("tables", table, "columns", col)

    def names(v: Any) -> tuple[str, ...]:
        if isinstance(v, str) and v:
            return (v,)
        if isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
            return tuple(v)
        raise _error(f"{where}: expected a source column name or a list of names, got {v!r}")

    if isinstance(value, MappingABC):
        unknown = set(value) - _RULE_KEYS
        if unknown or "column" not in value:
            raise _error(f"{where}: a column rule holds 'column' and optionally 'epoch' or "
                         f"'format' (got keys {sorted(value)})")
        epoch, fmt = value.get("epoch"), value.get("format")
        if epoch is not None and epoch not in EPOCH_UNITS:
            raise _error(f"{where}.epoch: unit {epoch!r} is not one of "
                         f"{', '.join(EPOCH_UNITS)}")
        if fmt is not None and not isinstance(fmt, str):
            raise _error(f"{where}.format: expected a strptime format string, got {fmt!r}")
        if epoch is not None and fmt is not None:
            raise _error(f"{where}: give 'epoch' or 'format', not both")
        kind = TABLES[table].column(col).kind
        if (epoch or fmt) and kind not in ("timestamp", "date"):
            raise _error(f"{where}: 'epoch'/'format' apply to timestamp or date columns; "
                         f"{table}.{col} is {kind}")
        return ColumnRule(names(value["column"]), epoch=epoch, format=fmt)
    return ColumnRule(names(value))


def check_timezone(name: str, where: str) -> str:
    """The canonical spelling of the IANA zone ``name`` (matched case-insensitively, so
    ``utc`` is ``UTC``); a :class:`CXDataError` naming ``where`` unless DuckDB knows it."""
    import duckdb

    if not isinstance(name, str) or not name:
        raise _error(f"{where}: expected an IANA time zone name such as UTC or "
                     f"Europe/Berlin, got {name!r}")
    from cxanalysis import duckdb_settings

    with duckdb.connect() as con:
        duckdb_settings.configure(con)
        found = con.execute("SELECT min(name) FROM pg_timezone_names() "
                            "WHERE lower(name) = lower(?)", [name]).fetchone()[0]
    if found is None:
        raise _error(f"{where}: unknown time zone {name!r} (use an IANA name such as UTC, "
                     "Europe/Berlin or America/New_York)")
    return str(found)


def load_mapping(spec: str | os.PathLike[str] | MappingABC[str, Any] | Mapping | None
                 ) -> Mapping | None:
    """Read and check a mapping: a YAML file path, a preset name, a dict, or None.

    ``extends: PRESET_OR_FILE`` is resolved first (a file name relative to the extending
    file, else to the working directory): the base's tables are merged with this mapping's,
    key by key, ``columns`` and ``constants`` entry by entry; ``timezone`` is replaced.

    Raises
    ------
    CXDataError
        For a file that does not exist, invalid YAML, an unknown key, an unknown contract
        table or column, a malformed column rule or an unknown time zone — each naming the
        mapping entry.
    """
    if spec is None or isinstance(spec, Mapping):
        return spec
    data, name = _raw(spec)
    if data is None:
        data = {}
    if not isinstance(data, MappingABC):
        raise _error(f"mapping {name}: expected keys timezone/tables at the top level")
    data = dict(data)
    seen = {name}
    while data.get("extends") is not None:
        base = data.pop("extends")
        if not isinstance(base, str) or base in seen or len(seen) > 8:
            raise _error(f"mapping {name}: extends: {base!r} is not a preset or file name "
                         "(or the chain loops)")
        seen.add(base)
        near = Path(name).parent / base  # a file named relative to the extending file
        base_data, base_name = _raw(str(near) if Path(name).is_file() and near.is_file()
                                    else base)
        if not isinstance(base_data or {}, MappingABC):
            raise _error(f"mapping {base_name}: expected keys timezone/tables at the top level")
        data = _merge(dict(base_data or {}), data)
    data.pop("extends", None)
    m = Mapping(name=name)
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _error(f"mapping {name}: unknown key(s) {sorted(unknown)} "
                     f"(known: {sorted(_TOP_KEYS)})")
    tz = data.get("timezone")
    if tz is not None:
        tz = check_timezone(tz, m.entry("timezone"))
    tables_raw = data.get("tables") or {}
    if not isinstance(tables_raw, MappingABC):
        raise _error(f"{m.entry('tables')}: expected contract table: entry")
    tables: dict[str, TableMapping] = {}
    for tname, entry in tables_raw.items():
        if tname not in TABLES:
            raise _error(f"{m.entry('tables', str(tname))}: {tname!r} is not a table of the "
                         f"data contract (known: {', '.join(TABLES)})")
        entry = entry or {}
        if not isinstance(entry, MappingABC) or set(entry) - _TABLE_KEYS:
            raise _error(f"{m.entry('tables', tname)}: expected keys from/columns/constants "
                         f"(got {sorted(entry) if isinstance(entry, MappingABC) else entry!r})")
        known = {c.name for c in TABLES[tname].columns}
        cols: dict[str, ColumnRule] = {}
        for key in ("columns", "constants"):
            block = entry.get(key) or {}
            if not isinstance(block, MappingABC):
                raise _error(f"{m.entry('tables', tname, key)}: expected contract column: "
                             "value entries")
            for col in block:
                if col not in known:
                    raise _error(f"{m.entry('tables', tname, key, str(col))}: {col!r} is not "
                                 f"a column of the contract table {tname} (known: "
                                 f"{', '.join(sorted(known))}); other columns pass through "
                                 "under their own names without a mapping")
        for col, value in (entry.get("columns") or {}).items():
            cols[col] = _rule(m, tname, col, value)
        consts = dict(entry.get("constants") or {})
        both = set(cols) & set(consts)
        if both:
            raise _error(f"{m.entry('tables', tname)}: {sorted(both)} given both as columns "
                         "and constants")
        src = entry.get("from")
        if src is not None and (not isinstance(src, str) or not src):
            raise _error(f"{m.entry('tables', tname, 'from')}: expected a file or table name, "
                         f"got {src!r}")
        tables[tname] = TableMapping(tname, src, cols, consts)
    return Mapping(name=name, timezone=tz, tables=tables)


def mapping_parameter(spec: str | os.PathLike[str] | None) -> str | None:
    """The value to pass to notebooks for ``spec``: a preset name as is, a file made
    absolute (notebooks run in their own folder). Checks the mapping first."""
    if spec is None:
        return None
    load_mapping(spec)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    return str(path.resolve()) if path.is_file() else text
