"""Every DuckDB connection the package opens has bounded memory and a spill folder (issue 15
item 2), overridable by CX_DUCKDB_MEMORY_LIMIT."""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import pytest

from cxanalysis import duckdb_settings as ds
from cxanalysis.data import open_source
from cxanalysis.errors import ParameterError

GIB = 2**30
_UNITS = {"b": 1, "bytes": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _bytes(setting: str) -> float:
    """DuckDB's printed size ('2.9 GiB', '953.6 MiB') in bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]+)\s*", setting)
    assert m, setting
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


@pytest.fixture
def fresh_spill(tmp_path: Path, monkeypatch) -> Path:
    """A cache folder of the test's own, and no spill folder made yet in this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(ds.MEMORY_ENV, raising=False)
    monkeypatch.delenv(ds.TEMP_ENV, raising=False)
    monkeypatch.setattr(ds, "_SPILL", None)
    return tmp_path / "cache" / "cxanalysis" / "duckdb-spill"


def _settings(con) -> tuple[str, str]:
    row = con.raw_sql("SELECT current_setting('memory_limit'), "
                      "current_setting('temp_directory')").fetchone()
    return row[0], row[1]


def test_default_limit_is_a_bounded_share_of_the_machine() -> None:
    # a quarter of the memory, at least 1 GiB, at most 3 GiB (a 16 GB laptop keeps 13 GB)
    assert ds.default_memory_limit(16 * GIB) == "3072MiB"
    assert ds.default_memory_limit(8 * GIB) == "2048MiB"
    assert ds.default_memory_limit(2 * GIB) == "1024MiB"
    assert ds.default_memory_limit(256 * GIB) == "3072MiB"
    total = ds.physical_memory()
    assert total is None or total > 256 * 2**20  # this machine's figure is plausible


def test_open_source_applies_limit_and_spill_folder(world_path: Path, fresh_spill: Path
                                                    ) -> None:
    src = open_source(world_path, validate=False)
    try:
        limit, temp = _settings(src.con)
    finally:
        src.close()
    want = int(ds.default_memory_limit().removesuffix("MiB")) * 2**20
    assert _bytes(limit) == pytest.approx(want, rel=0.01)
    assert _bytes(limit) <= 3 * GIB * 1.001
    # the spill folder is this process's, under the cache folder (not the RAM-backed /tmp)
    assert Path(temp).parent == fresh_spill
    assert Path(temp).name.startswith(f"{os.getpid()}-") and Path(temp).is_dir()


def test_memory_limit_override_and_check(world_path: Path, fresh_spill: Path,
                                         monkeypatch) -> None:
    monkeypatch.setenv(ds.MEMORY_ENV, "1GB")
    src = open_source(world_path, validate=False)
    try:
        limit, _ = _settings(src.con)
    finally:
        src.close()
    assert _bytes(limit) == pytest.approx(1e9, rel=0.01)
    monkeypatch.setenv(ds.MEMORY_ENV, "lots")
    with pytest.raises(ParameterError, match="CX_DUCKDB_MEMORY_LIMIT='lots' is not a memory"):
        ds.connect()


def test_temp_directory_override(tmp_path: Path, fresh_spill: Path, monkeypatch) -> None:
    monkeypatch.setenv(ds.TEMP_ENV, str(tmp_path / "spill here"))
    con = ds.connect()
    assert _settings(con)[1] == str(tmp_path / "spill here")
    assert (tmp_path / "spill here").is_dir()


def test_raw_connections_get_the_settings_too(fresh_spill: Path) -> None:
    with duckdb.connect() as con:
        ds.configure(con)
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert _bytes(limit) <= 3 * GIB * 1.001


def test_stale_spill_folders_are_removed(fresh_spill: Path) -> None:
    fresh_spill.mkdir(parents=True)
    stale = fresh_spill / "999999999-deadbeef"  # no such process
    stale.mkdir()
    (stale / "duckdb_temp_block-1.block").write_bytes(b"x")
    ours = ds.spill_directory()
    assert not stale.exists() and ours.is_dir() and ours.parent == fresh_spill
    assert ds.spill_directory() == ours  # one folder per process
