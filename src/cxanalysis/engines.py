"""Sources that live in a database engine rather than in files: URLs and Ibis backends.

:func:`cxanalysis.data.open_source` hands a URL (``postgres://user:pass@host:5432/db``,
anything ``ibis.connect`` understands, or ``sc://host:port`` for Spark Connect) or an
``ibis.BaseBackend`` instance to
:func:`open_backend_source`. The contract tables are found by name (or by a mapping's
``from:`` names), typed as Ibis expressions (nothing is created in the database and nothing
is downloaded), and validated *in place* by :func:`validate_backend`: one aggregate query per
table plus one query each for the key and the customer reference, all Ibis expressions.

What differs from the DuckDB file path (stated, and tested in tests/engines/):

- Problems carry no example row numbers: a database table has no row order.
- Text columns are not parsed as timestamps (store instants as ``TIMESTAMP WITH TIME ZONE``;
  a text or naive timestamp column is reported, not guessed); numbers and dates held as
  text are read when they look like numbers / ISO dates.
- Mapping rules that parse (``epoch:``, ``format:``) and ``timezone:`` are read by DuckDB
  only; on another engine they raise a :class:`~cxanalysis.data.CXDataError` naming the entry.

An operation an analysis needs that the engine's Ibis compiler lacks fails, on every
connection cxanalysis reads through, as one :class:`EngineCapabilityError` naming the engine,
the operation and the table(s) (:func:`guard_operations`), not as an Ibis traceback.

Credentials never leave this module: :func:`redact` gives the URL without its password, which
is what reports, ``results.json`` and the index show. ``cxanalysis report`` passes the redacted
URL to the notebooks and the full one through the kernel's environment
(:data:`CREDENTIALS_ENV`), which :func:`resolve_url` consults.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import urllib.parse
from typing import TYPE_CHECKING, Any

import ibis
import ibis.expr.datatypes as idt

from cxanalysis.errors import ParameterError
from cxanalysis.schema import TABLES, Column

if TYPE_CHECKING:
    from cxanalysis.data import Source, ValidationReport
    from cxanalysis.mapping import Mapping

#: Environment variable holding a JSON object {redacted URL: full URL}; set by
#: ``cxanalysis report`` for its kernels so that no notebook parameter holds a password.
CREDENTIALS_ENV = "CXANALYSIS_SOURCE_URLS"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SECRET_KEYS = {"password", "pass", "pwd", "secret", "token", "access_token", "key",
                "private_key", "client_secret"}
_NUMBER = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
_ISO_DATE = r"^\s*\d{4}-\d{2}-\d{2}\s*$"


def _postgres_compiler():
    """A PostgreSQL compiler that casts booleans to BIGINT through INTEGER.

    Ibis 12 (the latest release) compiles ``bool_expr.cast("int64")`` to
    ``CAST(b AS BIGINT)``, which PostgreSQL rejects ("cannot cast type boolean to bigint";
    only boolean -> integer exists), and the analysis code counts with
    ``cond.cast("int64").sum()`` throughout. Rather than patching Ibis's compiler class for
    every program in the process, :func:`use_portable_compiler` gives the connections
    cxanalysis reads through this subclass (NULL stays NULL)."""
    from ibis.backends.sql.compilers.postgres import PostgresCompiler

    class CXPostgresCompiler(PostgresCompiler):
        def visit_Cast(self, op, *, arg, to):
            if op.arg.dtype.is_boolean() and to.is_integer() and not to.is_int32():
                return self.cast(self.cast(arg, idt.int32), to)
            return super().visit_Cast(op, arg=arg, to=to)

        visit_TryCast = visit_Cast

    return CXPostgresCompiler()


def use_portable_compiler(con: ibis.BaseBackend) -> None:
    """On a PostgreSQL connection, compile through :func:`_postgres_compiler` (an instance
    attribute: this connection only; Ibis's class and other connections are untouched)."""
    if con.name == "postgres" and not getattr(con.compiler, "_cx", False):
        con.compiler = _postgres_compiler()
        con.compiler._cx = True


# --------------------------------------------------------------------------- capabilities


class EngineCapabilityError(ParameterError):
    """The source's engine cannot run an operation an analysis needs; the message names the
    engine, the operation (and the table or analysis) and what to do instead. A
    :class:`~cxanalysis.errors.ParameterError`: the data are fine, the choice of engine or
    option is not."""


def unsupported(engine: str, operation: str, where: str, instead: str) -> EngineCapabilityError:
    """The error for an ``operation`` the ``engine`` lacks, needed by ``where``."""
    return EngineCapabilityError(
        f"the {engine} engine cannot run {operation}, which {where} needs; {instead}")


def _tables_of(expr: ibis.Expr) -> list[str]:
    """Names of the database tables an expression reads (its leaves), in order; for a table
    materialized by :func:`cxanalysis.data.materialize`, the tables it was made from."""
    import ibis.expr.operations as ops

    from cxanalysis.data import materialized_from

    names: list[str] = []
    for node in expr.op().find(ops.PhysicalTable):
        for name in materialized_from(node.name) or [node.name]:
            if name not in names:
                names.append(name)
    return names


def _operation_of(exc: BaseException) -> str:
    """The operation an Ibis compile error is about: the Ibis operation being compiled when
    it was raised (the innermost compiler frame holding an ``op``), with the error's first
    line when that says more (``TimestampTruncate (Unsupported truncate unit ...)``)."""
    import ibis.expr.operations as ops

    text = _first_line(exc)
    name = None
    tb = exc.__traceback__
    while tb is not None:  # outermost to innermost: keep the last op seen
        op = tb.tb_frame.f_locals.get("op")
        if isinstance(op, ops.Node):
            name = type(op).__name__
        tb = tb.tb_next
    if name is None:
        return text
    return name if name in text and len(text) < 2 * len(name) + 40 else f"{name} ({text})"


def capability_error(engine: str, expr: ibis.Expr, exc: BaseException
                     ) -> EngineCapabilityError:
    """The :class:`EngineCapabilityError` for an Ibis compile failure ``exc`` of ``expr``
    on ``engine``: the engine, the operation and the table(s) the expression reads."""
    try:
        tables = _tables_of(expr)
    except Exception:  # naming the tables must never hide the real error
        tables = []
    where = (f"the analysis reading table(s) {', '.join(tables)}" if tables
             else "the analysis")
    return unsupported(engine, f"the operation {_operation_of(exc)}", where,
                       "use another engine for this analysis (DuckDB runs every one), or "
                       "another option of it")


#: Ibis's errors for an operation the engine's compiler lacks (``OperationNotDefinedError``,
#: ``UnsupportedOperationError``, ``UnsupportedBackendType`` are ``TranslationError``s).
_COMPILE_ERRORS: tuple[type[BaseException], ...] = ()


def _compile_errors() -> tuple[type[BaseException], ...]:
    global _COMPILE_ERRORS
    if not _COMPILE_ERRORS:
        import ibis.common.exceptions as com
        import sqlglot.errors

        _COMPILE_ERRORS = (com.TranslationError, com.UnsupportedArgumentError,
                           sqlglot.errors.UnsupportedError)
    return _COMPILE_ERRORS


def guard_operations(con: ibis.BaseBackend) -> None:
    """Make every compile failure of an operation the engine lacks, on this connection, an
    :class:`EngineCapabilityError` naming the engine, the operation and the table(s).

    The one place every analysis query passes through: Ibis's SQL backends compile each
    expression (``execute``, ``to_pyarrow``, ``create_table``, ``cache``) with
    ``con.compile`` / ``con.compiler.to_sqlglot``, so both are wrapped, as attributes of this
    connection only (Ibis's classes and other connections are untouched; as
    :func:`use_portable_compiler`). Errors raised by the database itself are left as they
    are. Idempotent."""
    if getattr(con, "_cx_guarded", False) or not hasattr(con, "compiler"):
        return
    import functools

    def guarded(call):
        @functools.wraps(call)
        def run(expr, *args, **kwargs):
            try:
                return call(expr, *args, **kwargs)
            except EngineCapabilityError:
                raise
            except _compile_errors() as exc:
                raise capability_error(con.name, expr, exc) from exc
        return run

    base = type(con.compiler)  # Ibis's compilers are immutable: a subclass, not a patch

    class Guarded(base):
        def to_sqlglot(self, expr, *args, **kwargs):
            return guarded(super().to_sqlglot)(expr, *args, **kwargs)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    compiler = Guarded()  # this connection's own, not the shared instance
    for key, value in getattr(con.compiler, "__dict__", {}).items():
        setattr(compiler, key, value)  # e.g. the portable compiler's marker
    con.compiler = compiler
    con.compile = guarded(con.compile)
    con._cx_guarded = True


_PROBE = ibis.table({"g": "int64", "o": "int64", "s": "string", "k": "boolean",
                     "x": "float64"}, name="cx_probe")
#: Operations whose support differs between engines, each as a small expression to compile.
_PROBES = {
    "ordered_group_concat": lambda t: t.group_by("g").aggregate(
        v=t.s.group_concat(",", where=t.k, order_by=t.o)),
    "exact_quantile": lambda t: t.aggregate(v=t.x.quantile(0.5)),
}
_SUPPORT: dict[tuple[str, str], bool] = {}
#: Operations an engine compiles but not as asked: Ibis compiles an exact quantile for
#: ClickHouse to its ``quantile``, which samples (approximate beyond 8,192 values).
_NOT_REALLY = {("clickhouse", "exact_quantile")}


def _target(expr: ibis.Expr) -> ibis.BaseBackend | str | None:
    """The backend an expression runs on (None when unbound). The compile tests replace
    this to ask about a dialect instead."""
    try:
        return ibis.get_backend(expr)
    except Exception:  # unbound: no engine to ask
        return None


def supports(expr_or_target: ibis.Expr | ibis.BaseBackend | str | None, operation: str
             ) -> bool:
    """Whether the engine of an expression (or a backend, or a dialect name) compiles
    ``operation`` (a key of the probes: ``ordered_group_concat``, ``exact_quantile``).

    Found by compiling a small probe expression for that engine once per engine (compiling
    sends nothing to the database). An unbound expression answers True (the default,
    DuckDB-first code)."""
    target = (_target(expr_or_target) if isinstance(expr_or_target, ibis.Expr)
              else expr_or_target)
    if target is None:
        return True
    name = target if isinstance(target, str) else target.name
    if (name, operation) in _NOT_REALLY:
        return False
    key = (name, operation)
    if key not in _SUPPORT:
        probe = _PROBES[operation](_PROBE)
        try:
            if isinstance(target, str):
                ibis.to_sql(probe, dialect=target)
            else:
                target.compile(probe)
            _SUPPORT[key] = True
        except Exception:  # every way of failing to compile means "not here"
            _SUPPORT[key] = False
    return _SUPPORT[key]


def engine_name(expr: ibis.Expr) -> str:
    target = _target(expr)
    return "unbound" if target is None else target if isinstance(target, str) else target.name


def quantile(value: ibis.NumericValue, q: float) -> ibis.Value:
    """The exact ``q`` quantile (linear interpolation, as DuckDB's ``quantile_cont``) where
    the engine has one (DuckDB, PostgreSQL, Spark, Snowflake), else the engine's
    approximate one (BigQuery, Trino, ClickHouse); :func:`quantile_note` says which."""
    if supports(value, "exact_quantile"):
        return value.quantile(q)
    return value.approx_quantile(q)


def quantile_note(expr: ibis.Expr, what: str) -> list[str]:
    """A note (as a one-item list) when :func:`quantile` is approximate on ``expr``'s
    engine, else no note."""
    if supports(expr, "exact_quantile"):
        return []
    return [f"{what} are approximate: the {engine_name(expr)} engine has no exact quantile "
            "(its approximate quantile function is used)"]


def is_url(source: Any) -> bool:
    """Whether ``source`` is a URL string (``scheme://...``) rather than a path."""
    return isinstance(source, str) and bool(_URL.match(source))


def redact(source: Any) -> str:
    """How a source is shown: a URL without its password (and without secret query
    parameters), a path as it is, a backend as ``<name> connection``.

    >>> redact("postgres://cx:pw@127.0.0.1:5432/cx")
    'postgres://cx@127.0.0.1:5432/cx'
    """
    if isinstance(source, ibis.BaseBackend):
        return f"{source.name} connection"
    text = os.fspath(source) if not isinstance(source, str) else source
    if not is_url(text):
        return str(text)
    parts = urllib.parse.urlsplit(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{host}" if user else host
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
         if k.lower() not in _SECRET_KEYS])
    path, params = _path_params(parts.path)
    kept = [f"{k}={v}" for k, v in params if k.lower() not in _SECRET_KEYS]
    path = ";".join([path, *kept]) if kept else path
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def _path_params(path: str) -> tuple[str, list[tuple[str, str]]]:
    """A URL path and its ``;key=value`` parameters (Spark Connect puts its ``token`` and
    ``user_id`` there: ``sc://host:15002/;token=...``)."""
    head, *rest = path.split(";")
    return head, [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in rest if p]


def _secrets(url: str) -> list[str]:
    parts = urllib.parse.urlsplit(url)
    out = [parts.password] if parts.password else []
    out += [v for k, v in urllib.parse.parse_qsl(parts.query) if k.lower() in _SECRET_KEYS and v]
    out += [v for k, v in _path_params(parts.path)[1] if k.lower() in _SECRET_KEYS and v]
    return [s for s in out if s]


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` replaced by ``***`` (for error messages)."""
    for s in _secrets(url):
        text = text.replace(s, "***").replace(urllib.parse.quote(s, safe=""), "***")
    return text


#: Full URLs registered by :func:`remember` in this process, by their redacted form.
_KNOWN: dict[str, str] = {}


def remember(url: str) -> str:
    """Register ``url`` and return its redacted form, which :func:`resolve_url` maps back
    (in this process, and in kernels given :func:`credentials_env`)."""
    shown = redact(url)
    if shown != url:
        _KNOWN[shown] = url
    return shown


def forget() -> None:
    """Drop every URL :func:`remember` registered."""
    _KNOWN.clear()


def credentials_env() -> str | None:
    """Value of :data:`CREDENTIALS_ENV` for a kernel: the registered URLs, or None."""
    return json.dumps(_KNOWN) if _KNOWN else None


def resolve_url(url: str) -> str:
    """The full URL for a redacted one registered by :func:`remember` here or, in a kernel
    run by ``cxanalysis report``, passed in :data:`CREDENTIALS_ENV`; ``url`` otherwise."""
    if url in _KNOWN:
        return _KNOWN[url]
    try:
        known = json.loads(os.environ.get(CREDENTIALS_ENV) or "{}")
    except ValueError:
        return url
    return known.get(url, url) if isinstance(known, dict) else url


def _first_line(exc: BaseException, url: str | None = None) -> str:
    """The first line of an error's message (its type's name when it has none), without the
    secrets of ``url`` when given."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return scrub(line, url) if url else line


def connect(url: str) -> ibis.BaseBackend:
    """``ibis.connect(url)`` with a one-line error naming the engine and the redacted URL;
    ``sc://host:port`` (Spark Connect) through :func:`connect_spark`."""
    from cxanalysis.data import CXDataError

    full = resolve_url(url)
    engine = urllib.parse.urlsplit(full).scheme
    if engine.lower() == "sc":
        return connect_spark(full)
    try:
        return ibis.connect(full)
    except Exception as exc:  # driver errors vary by engine; all mean "cannot open"
        raise CXDataError(f"cannot connect to the {engine} source {redact(full)}: "
                          f"{_first_line(exc, full)}") from None


#: Default port of a Spark Connect server (``spark.connect.grpc.binding.port``).
SPARK_CONNECT_PORT = 15002
#: Seconds to wait for the TCP connection to a Spark Connect server before giving up.
SPARK_CONNECT_TIMEOUT_S = 10.0


def connect_spark(url: str) -> ibis.BaseBackend:
    """An Ibis PySpark backend over a new Spark Connect session to ``url``
    (``sc://host:port``, with Spark Connect's ``/;token=...;user_id=...`` parameters if any).

    Ibis's PySpark backend runs on a Spark Connect session as on a classic one (its SQL is
    sent as ``spark.sql``); the session is this source's own (``Source.close`` stops it; a
    session is released on the server, not the server). Errors, one line each (a
    :class:`~cxanalysis.data.CXDataError` naming the engine and the redacted URL): the
    client's dependencies missing (``pip install "pyspark[connect]"``), the host:port not
    accepting connections (checked with a plain TCP connection first: the Connect client
    would otherwise retry for ten minutes), or the server refusing the session."""
    from cxanalysis.data import CXDataError

    shown = redact(url)

    def fail(reason: str) -> CXDataError:
        return CXDataError(f"cannot connect to the Spark Connect source {shown}: {reason}")

    parts = urllib.parse.urlsplit(url)
    try:
        host, port = parts.hostname, parts.port or SPARK_CONNECT_PORT
    except ValueError as exc:  # a port that is not a number
        raise fail(_first_line(exc, url)) from None
    if not host:
        raise fail("no host (expected sc://host:port)")
    try:
        from pyspark.sql import SparkSession
        from pyspark.sql.connect.client.retries import DefaultPolicy
        from pyspark.sql.connect.utils import check_dependencies

        check_dependencies("pyspark.sql.connect")
    except Exception as exc:  # ImportError or pyspark's own "must be installed" error
        raise fail("the Spark Connect client is not installed (pip install "
                   f"\"pyspark[connect]>=3.5,<4.1\"): {_first_line(exc, url)}") from None
    import socket

    try:
        socket.create_connection((host, port), timeout=SPARK_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise fail(f"{host}:{port} is unreachable ({exc.strerror or exc})") from None
    session = None
    try:
        session = SparkSession.builder.remote(url).create()
        client = session.client
        default = client.get_retry_policies()
        # a port that answers but is no Connect server: fail in seconds, not minutes
        client.set_retry_policies([DefaultPolicy(max_retries=2, max_backoff=1000)])
        con = ibis.pyspark.connect(session)  # its first calls set the session's time zone
        client.set_retry_policies(default)
        return con
    except Exception as exc:  # gRPC and server errors: all mean "cannot open"
        if session is not None:
            try:
                session.stop()
            except Exception:  # the session was never established: nothing to release
                pass
        raise fail(_first_line(exc, url)) from None


# --------------------------------------------------------------------------- opening


def _lookup(con: ibis.BaseBackend, present: set[str], wanted: str) -> ibis.Table | None:
    """The table ``wanted`` (``name`` or ``schema.name``), or None when absent."""
    if "." in wanted and wanted not in present:
        database, table = wanted.rsplit(".", 1)
        try:
            return con.table(table, database=database)
        except Exception:  # absent in that schema: reported by the caller
            return None
    return con.table(wanted) if wanted in present else None


def _spark_instants(con: ibis.BaseBackend, t: ibis.Table, wanted: str) -> ibis.Table:
    """On Spark, ``t`` with its ``TIMESTAMP`` columns typed as UTC instants.

    Spark's ``TIMESTAMP`` (``TimestampType``, the default) *is* an instant (stored as UTC
    microseconds, shown in the session time zone, which Ibis's PySpark backend sets to UTC),
    but Ibis 12 types it as a naive timestamp, like ``TIMESTAMP_NTZ``; validation would then
    reject every time column. The Spark schema tells the two apart: ``TimestampType``
    columns are cast to ``timestamp('UTC')`` (a no-op ``CAST(... AS TIMESTAMP)`` in Spark
    SQL); ``TIMESTAMP_NTZ`` columns stay naive and are reported as such."""
    if con.name != "pyspark":
        return t
    from pyspark.sql import types as pt

    try:  # the private session attribute is the only way to the Spark schema
        fields = con._session.table(wanted).schema.fields
    except Exception:  # not readable through the catalog: keep Ibis's types
        return t
    instants = [f.name for f in fields if type(f.dataType) is pt.TimestampType
                and f.name in t.columns]
    if not instants:
        return t
    return t.mutate(**{c: t[c].cast(idt.Timestamp(timezone="UTC")) for c in instants})


def _text_empty(v: ibis.Value) -> ibis.Value:
    return v.cast("string").strip() == ""


def _mapped(con: ibis.BaseBackend, name: str, t: ibis.Table, mapping: Mapping | None,
            where: str) -> ibis.Table:
    """``t`` under contract names per the mapping (other columns pass through)."""
    from cxanalysis.data import CXDataError

    tm = mapping.tables.get(name) if mapping else None
    if tm is None:
        return t
    cols: dict[str, ibis.Value] = {}
    consumed: set[str] = set()
    for col, rule in tm.columns.items():
        missing = [s for s in rule.sources if s not in t.columns]
        if missing:
            raise CXDataError(
                f"{mapping.entry('tables', name, 'columns', col)}: source column "
                f"{', '.join(map(repr, missing))} not found in {where} "
                f"(columns: {', '.join(t.columns)})")
        if rule.epoch or rule.format:
            raise CXDataError(
                f"{mapping.entry('tables', name, 'columns', col)}: parsing "
                f"({'epoch' if rule.epoch else 'format'}) is done by DuckDB only; on "
                f"{con.name} store the column with its type (e.g. TIMESTAMP WITH TIME ZONE) "
                "or convert it in a view")
        refs = [t[s] for s in rule.sources]
        if len(refs) == 1:
            cols[col] = refs[0]
        elif len({r.type() for r in refs}) == 1 and not refs[0].type().is_string():
            cols[col] = ibis.coalesce(*refs)
        else:  # first non-empty value: blanks count as missing
            cols[col] = ibis.coalesce(*[r.cast("string").strip().nullif("") for r in refs])
        consumed.update(rule.sources)
    for col, value in tm.constants.items():
        cols[col] = ibis.literal(None if value is None else str(value), type="string")
    keep = {c: t[c] for c in t.columns if c not in consumed and c not in cols}
    return t.select(**cols, **keep)


def open_backend_source(con: ibis.BaseBackend, location: str, mapping: Mapping | None,
                        owned: bool) -> Source:
    """A :class:`~cxanalysis.data.Source` over the contract tables of ``con``."""
    from cxanalysis.data import _DERIVED_CHANNEL, UNSPECIFIED_CHANNEL, CXDataError, Source

    use_portable_compiler(con)
    guard_operations(con)
    if mapping is not None and mapping.timezone:
        raise CXDataError(f"{mapping.name}: `timezone:` is applied by DuckDB only; on "
                          f"{con.name} store instants as TIMESTAMP WITH TIME ZONE")
    try:
        present = set(con.list_tables())
    except Exception as exc:
        raise CXDataError(f"cannot list the tables of the {con.name} source {location}: "
                          f"{_first_line(exc)}") from None
    mapped = mapping.tables if mapping else {}
    raw: dict[str, ibis.Table] = {}
    derived: list[str] = []
    derived_cols: dict[str, set[str]] = {}
    for name in TABLES:
        tm = mapped.get(name)
        wanted = tm.source if tm and tm.source else name
        t = _lookup(con, present, wanted)
        if t is not None:
            t = _spark_instants(con, t, wanted)
        if t is None:
            if tm:
                raise CXDataError(
                    f"{mapping.entry('tables', name, 'from')}: the {con.name} source "
                    f"{location} has no table {wanted!r} "
                    f"(tables: {', '.join(sorted(present)) or 'none'})")
            continue
        t = _mapped(con, name, t, mapping, wanted)
        if name in _DERIVED_CHANNEL and "channel" not in t.columns:
            t = t.mutate(channel=ibis.literal(UNSPECIFIED_CHANNEL))
            derived.append(f"{name}.channel: {wanted} has no channel; every row is given "
                           f"channel '{UNSPECIFIED_CHANNEL}' (map a column, or set a constant "
                           "in the mapping)")
            derived_cols.setdefault(name, set()).add("channel")
        if name == "orders" and "order_id" not in t.columns:
            order = [c for c in ("customer_id", "ts") if c in t.columns] or t.columns[:1]
            t = t.mutate(order_id="row " + (ibis.row_number().over(order_by=order)
                                            ).cast("string"))
            derived.append(f"orders.order_id: {wanted} has no order id; each row is one "
                           "order, numbered in order of customer and time ('row 0', ...)")
            derived_cols.setdefault(name, set()).add("order_id")
        raw[name] = t
    if not raw:
        raise CXDataError(
            f"the {con.name} source {location} holds no table of the data contract: expected "
            f"tables named {', '.join(TABLES)} (found: {', '.join(sorted(present)) or 'none'});"
            " pass a mapping (--mapping) saying which table is which")
    source = Source(path=None, con=con, names=tuple(n for n in TABLES if n in raw),
                    mapping=mapping, derived=derived, derived_columns=derived_cols,
                    location=location, owned=owned)
    source.raw_tables = raw
    source.tables = {n: _typed(t, n) for n, t in raw.items()}
    source.raw_types = {n: {c: str(dtype) for c, dtype in t.schema().items()}
                        for n, t in raw.items()}
    if "customers" not in raw:
        _derive_customers(source)
    return source


def _derive_customers(source: Source) -> None:
    parts = []
    for name, col in (("events", "ts"), ("orders", "ts"), ("feedback", "ts"),
                      ("assignments", "assigned_at")):
        if name in source.tables and {"customer_id", col} <= set(source.tables[name].columns):
            t = source.tables[name]
            parts.append(t.filter(t.customer_id.notnull()).select(
                customer_id=t.customer_id, t=t[col]))
    if not parts:
        return
    act = ibis.union(*parts) if len(parts) > 1 else parts[0]
    cust = act.group_by("customer_id").aggregate(signup_date=act.t.min().date())
    source.tables["customers"] = cust
    source.raw_tables["customers"] = cust
    source.raw_types["customers"] = {c: str(d) for c, d in cust.schema().items()}
    source.names = tuple(n for n in TABLES if n in source.tables)
    used = [n for n in ("events", "orders", "feedback", "assignments") if n in source.tables]
    source.derived.append(
        "customers: the source has no customers table; it is derived from the customer ids "
        f"seen in {', '.join(used)}, with signup_date = the date of each customer's first "
        "activity there (day in UTC; no demographics)")
    source.derived_columns["customers"] = {"customer_id", "signup_date"}


_TARGET = {"string": "string", "category": "string", "int": "int64", "float": "float64",
           "date": "date", "timestamp": idt.Timestamp(timezone="UTC")}


def _typed_value(col: Column, v: ibis.Value) -> ibis.Value:
    """``v`` as its contract type; NULL where it cannot be read (see the module notes)."""
    dtype = v.type()
    target = _TARGET[col.kind]
    if col.kind in ("string", "category"):
        return v if dtype.is_string() else v.cast("string")
    if col.kind == "timestamp":
        if dtype.is_timestamp() and dtype.timezone is not None:
            return v if dtype.timezone == "UTC" else v.cast(target)
        return ibis.null(target)  # naive, date or text: reported by validation
    if col.kind == "date":
        if dtype.is_date():
            return v
        if dtype.is_timestamp():
            return v.date()
        if dtype.is_string():
            return ibis.ifelse(v.re_search(_ISO_DATE), v.strip().cast("date"), ibis.null("date"))
        return ibis.null("date")
    # int / float
    if dtype.is_string():
        num = ibis.ifelse(v.re_search(_NUMBER), v.strip().cast("float64"), ibis.null("float64"))
        return num.cast(target) if col.kind == "float" else num.round().cast(target)
    if dtype.is_numeric() or dtype.is_boolean():
        if col.kind == "int" and dtype.is_floating() or dtype.is_decimal():
            return v.round().cast(target) if col.kind == "int" else v.cast(target)
        return v if dtype == idt.dtype(target) else v.cast(target)
    return ibis.null(target)


def _typed(t: ibis.Table, name: str) -> ibis.Table:
    spec = TABLES[name]
    known = {c.name for c in spec.columns}
    return t.select(**{c: (_typed_value(spec.column(c), t[c]) if c in known else t[c])
                       for c in t.columns})


# --------------------------------------------------------------------------- validation


def validate_backend(source: Source, now: dt.datetime | None = None) -> ValidationReport:
    """The contract checks of :func:`cxanalysis.data.validate` as Ibis expressions, run
    in the source's engine (aggregates only come back). No example row numbers."""
    from cxanalysis.data import _HIDDEN, Problem, ValidationReport

    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    report = ValidationReport(derived=list(source.derived))
    for name in source.names:
        spec = TABLES[name]
        raw = source.raw_tables[name]
        typed = source.tables[name]
        derived = source.derived_columns.get(name, set())
        if name == "customers" and {"customer_id", "signup_date"} <= derived:
            report.row_counts[name] = int(typed.count().execute())
            continue
        for col in spec.columns:
            if col.required and col.name not in raw.columns:
                report.problems.append(Problem(
                    name, col.name, "missing required column", 0,
                    f"the table has no column {col.name!r} ({col.kind}: {col.description}); "
                    "columns found: "
                    f"{', '.join(c for c in raw.columns if not c.startswith(_HIDDEN))}; map a "
                    f"source column to it under tables.{name}.columns in a mapping"))
        known = {c.name for c in spec.columns}
        both = raw.select(*[raw[c].name(f"r__{c}") for c in raw.columns],
                          *[_typed_value(spec.column(c), raw[c]).name(f"t__{c}")
                            for c in raw.columns if c in known])
        checks: list[tuple[Column | None, str, ibis.Value, str]] = []
        for col in (c for c in spec.columns if c.name in raw.columns):
            r, tv = both[f"r__{col.name}"], both[f"t__{col.name}"]
            rtype = r.type()
            nonblank = r.notnull() & ~_text_empty(r) if rtype.is_string() else r.notnull()
            if col.kind == "timestamp":
                if rtype.is_date():
                    checks.append((col, "date without time zone", r.notnull(),
                                   "stored as DATE: a day in some time zone, not an instant; "
                                   "store TIMESTAMP WITH TIME ZONE"))
                elif rtype.is_timestamp() and rtype.timezone is None:
                    checks.append((col, "naive timestamp", r.notnull(),
                                   f"stored as {rtype} without a time zone; store UTC instants "
                                   "(TIMESTAMP WITH TIME ZONE)"))
                elif not rtype.is_timestamp():
                    checks.append((col, "unparseable value", nonblank,
                                   f"stored as {rtype}: on this engine instants must be stored "
                                   "as TIMESTAMP WITH TIME ZONE (text is parsed by DuckDB only)"))
            elif col.kind not in ("string", "category"):
                checks.append((col, "unparseable value", nonblank & tv.isnull(),
                               f"cannot be read as {col.kind}"))
            if not col.nullable and col.name not in derived:
                checks.append((col, "missing value", r.isnull() | _text_empty(r),
                               "the column may not be empty"))
            if col.kind == "int" and (rtype.is_floating() or rtype.is_decimal()
                                      or rtype.is_string()):
                num = r if not rtype.is_string() else ibis.ifelse(
                    r.re_search(_NUMBER), r.strip().cast("float64"), ibis.null("float64"))
                num = num.cast("float64")
                checks.append((col, "not an integer", num.notnull() & (num != num.round()),
                               "must be a whole number"))
            if col.min is not None or col.max is not None:
                num = (tv if col.kind in ("int", "float") else r).cast("float64")
                if col.kind == "int":  # the raw value: 2.5 against a max of 2 is out of range
                    num = (r if not rtype.is_string() else ibis.ifelse(
                        r.re_search(_NUMBER), r.strip().cast("float64"),
                        ibis.null("float64"))).cast("float64")
                cond = ibis.literal(False)
                if col.min is not None:
                    cond |= num < col.min
                if col.max is not None:
                    cond |= num > col.max
                rng = (f"[{'' if col.min is None else f'{col.min:g}'}, "
                       f"{'' if col.max is None else f'{col.max:g}'}]")
                checks.append((col, "out of range", cond, f"values must lie in {rng}"))
            if col.allowed:
                checks.append((col, "unknown value",
                               r.notnull() & ~r.cast("string").isin(list(col.allowed)),
                               f"allowed values: {', '.join(col.allowed)}"))
            if col.kind == "timestamp":
                checks.append((col, "timestamp in the future", tv > now,
                               f"later than the reference time {now:%Y-%m-%d %H:%M} UTC"))
            if col.kind == "date":
                checks.append((col, "date in the future", tv > now.date(),
                               f"later than {now:%Y-%m-%d}"))
        aggs = {"n": both.count()}
        for i, (_, _, cond, _) in enumerate(checks):
            # ifelse, not a cast: PostgreSQL cannot cast boolean to bigint
            aggs[f"c{i}"] = ibis.ifelse(cond.fill_null(False), 1, 0).sum()
        counts = both.aggregate(**aggs).execute().iloc[0]
        n = int(counts["n"])
        report.row_counts[name] = n
        if n == 0:
            report.problems.append(Problem(name, None, "empty table", 0,
                                           "the table has no rows", severity="warning"))
        for i, (col, rule, _, detail) in enumerate(checks):
            k = int(counts[f"c{i}"] or 0)
            if k:
                report.problems.append(Problem(name, col.name if col else None, rule, k,
                                               detail))
        customers_derived = "customer_id" in source.derived_columns.get("customers", set())
        if spec.customer_fk and "customers" in source.names and "customer_id" in raw.columns \
                and not customers_derived \
                and "customer_id" in source.raw_tables["customers"].columns:
            cust = source.raw_tables["customers"]
            ids = cust.filter(cust.customer_id.notnull()).select(
                cid=cust.customer_id.cast("string")).distinct()
            mine = raw.filter(raw.customer_id.notnull()).select(
                cid=raw.customer_id.cast("string"))
            k = int(mine.anti_join(ids, "cid").count().execute())
            if k:
                report.problems.append(Problem(name, "customer_id", "unknown customer", k,
                                               "customer_id not found in customers"))
        key_cols = [c for c in spec.key if c in raw.columns]
        if key_cols and len(key_cols) == len(spec.key):
            keyed = raw.select(*[raw[c].cast("string").name(c) for c in key_cols])
            dup = keyed.group_by(key_cols).aggregate(k=keyed.count()).filter(lambda t: t.k > 1)
            k = int(dup.k.sum().fill_null(0).execute() or 0)
            if k:
                report.problems.append(Problem(
                    name, key_cols[-1] if len(key_cols) == 1 else ",".join(key_cols),
                    "duplicate key", k,
                    f"({', '.join(key_cols)}) must be unique; rows sharing a key"))
    return report


def backend_fingerprint(source: Source) -> str:
    """Fingerprint of a database source: a hash of, per contract table, its name, row count
    and the latest value of its time column (``ts`` / ``assigned_at`` / ``signup_date``),
    plus the mapping's content. Cheap (one aggregate per table) and blind to edits that keep
    counts and latest times, which a file fingerprint would see; stated in the README."""
    import dataclasses

    parts = []
    for name in source.names:
        t = source.tables[name]
        tcol = next((c for c in ("ts", "assigned_at", "signup_date") if c in t.columns), None)
        aggs = {"n": t.count()}
        if tcol:
            aggs["last"] = t[tcol].max()
        row = t.aggregate(**aggs).execute().iloc[0]
        parts.append([name, int(row["n"]), str(row["last"]) if tcol else None])
    spec = None
    if source.mapping is not None:
        spec = dataclasses.asdict(source.mapping)
        spec.pop("name")
    text = json.dumps([parts, spec], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
