"""Bounded memory for every DuckDB connection the package opens.

DuckDB takes up to 80% of physical RAM by default and, for an in-memory database, spills to
``.tmp`` in the current folder. A 100M-event funnel then grew to 17.9 GB: an out-of-memory
error on a 16 GB laptop. Every connection opened by the package (``open_source``,
:func:`connect`) therefore gets

``memory_limit``
    :func:`default_memory_limit`: a quarter of the machine's memory (physical RAM, or the
    container's cgroup limit when lower), at least 1 GiB and at most 3 GiB, so that with
    Python, Arrow and pandas around it a job stays near 4 GB on any machine, and a 16 GB
    laptop keeps most of its memory. ``CX_DUCKDB_MEMORY_LIMIT`` (a DuckDB size such as
    ``6GB`` or ``512MiB``) overrides it.
``temp_directory``
    :func:`spill_directory`: a folder of this process under the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``, ``cxanalysis/duckdb-spill/<pid>-<random>``), not
    the system temporary folder, which is often in RAM (tmpfs) and would defeat spilling.
    It is removed when the process exits, and folders left by processes that no longer run
    are removed the next time one is made. ``CX_DUCKDB_TEMP_DIRECTORY`` overrides it (that
    folder is then left alone).

Beyond the limit DuckDB spills large joins, sorts and aggregations to that folder instead of
growing. Connections that a user opens and passes in (an Ibis backend) are theirs and left
as they are.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import ibis

MEMORY_ENV = "CX_DUCKDB_MEMORY_LIMIT"
TEMP_ENV = "CX_DUCKDB_TEMP_DIRECTORY"
#: Share of the machine's memory given to DuckDB by default, and its bounds (bytes).
MEMORY_FRACTION = 0.25
MEMORY_FLOOR = 1 * 2**30
MEMORY_CAP = 3 * 2**30
_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B|bytes)?\s*$", re.IGNORECASE)
_SPILL: Path | None = None


def physical_memory() -> int | None:
    """Bytes of memory this process may use: physical RAM, or the cgroup (container) limit
    when lower; None when the platform does not say."""
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # not POSIX (Windows): unknown
        total = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def default_memory_limit(total: int | None = None) -> str:
    """DuckDB's ``memory_limit`` for a machine with ``total`` bytes (default: this one's):
    ``MEMORY_FRACTION`` of it within ``[MEMORY_FLOOR, MEMORY_CAP]``, in whole MiB; the
    cap when the size is unknown."""
    total = physical_memory() if total is None else total
    want = MEMORY_CAP if total is None else total * MEMORY_FRACTION
    return f"{int(min(max(want, MEMORY_FLOOR), MEMORY_CAP) // 2**20)}MiB"


def memory_limit() -> str:
    """``CX_DUCKDB_MEMORY_LIMIT`` when set (checked: a size such as ``2GB``), else
    :func:`default_memory_limit`."""
    from cxanalysis.errors import ParameterError

    value = os.environ.get(MEMORY_ENV, "").strip()
    if not value:
        return default_memory_limit()
    if not _SIZE.match(value):
        raise ParameterError(f"{MEMORY_ENV}={value!r} is not a memory size; use e.g. 2GB, "
                             "512MiB or 6GB")
    return value


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxanalysis" / "duckdb-spill"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours, or the platform cannot say: keep its folder
        return True
    return True


def _remove_stale(root: Path) -> None:
    """Remove spill folders of processes that no longer run (a crash skips ``atexit``)."""
    for d in root.glob("*-*"):
        pid = d.name.split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def spill_directory() -> Path:
    """This process's spill folder (see the module docstring), created on first use."""
    global _SPILL
    override = os.environ.get(TEMP_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    if _SPILL is None:
        root = _cache_root()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:  # no writable home (some CI runners): the system temp folder
            import tempfile

            root = Path(tempfile.gettempdir()) / "cxanalysis-duckdb-spill"
            root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        _SPILL = root / f"{os.getpid()}-{secrets.token_hex(4)}"
        _SPILL.mkdir()
        atexit.register(shutil.rmtree, _SPILL, True)
    return _SPILL


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def configure(con: Any) -> None:
    """Apply ``memory_limit`` and ``temp_directory`` to ``con`` (an Ibis DuckDB backend or a
    ``duckdb`` connection)."""
    run = con.raw_sql if hasattr(con, "raw_sql") else con.execute
    run(f"SET memory_limit = {_quote(memory_limit())}")
    run(f"SET temp_directory = {_quote(str(spill_directory()))}")


def connect() -> ibis.BaseBackend:
    """A new in-memory Ibis DuckDB connection with the package's settings: bounded memory
    and spill folder (:func:`configure`) and UTC as the session time zone."""
    con = ibis.duckdb.connect()
    con.raw_sql("SET TimeZone = 'UTC'")
    configure(con)
    return con
