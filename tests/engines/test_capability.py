"""A backend without an operation an analysis needs: one named error (issue 14, "Bad input").

Every query cxanalysis runs on a source is compiled by the source's connection, which
:func:`cxanalysis.engines.guard_operations` wraps: an Ibis compile failure (an operation the
engine's compiler lacks) becomes one :class:`EngineCapabilityError` naming the engine, the
operation and the table(s), raised before anything is computed or published. Checked on a
real engine that lacks operations (SQLite, through Ibis's own SQLite backend: nothing to
install), end to end through ``cxanalysis report``, and on DuckDB with Ibis's compiler made
to lack the quantile the funnel needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import ibis
import pandas as pd
import pytest

from cxanalysis import funnel
from cxanalysis.cli import main
from cxanalysis.data import open_source
from cxanalysis.engines import EngineCapabilityError
from cxanalysis.errors import ParameterError
from engines.conftest import NOW

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]


@pytest.fixture(scope="module")
def sqlite_url(engine_world: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The engine world in a SQLite file (timestamps as UTC instants, as Ibis stores them)."""
    path = tmp_path_factory.mktemp("sqlite") / "cx.db"
    con = ibis.sqlite.connect(str(path))
    for f in sorted(engine_world.glob("*.parquet")):
        con.create_table(f.stem, pd.read_parquet(f))
    con.disconnect()
    return f"sqlite:///{path}"


def test_operation_sqlite_lacks_is_one_error_naming_engine_operation_and_table(
        sqlite_url: str) -> None:
    """SQLite passes validation (so the data are fine) but cannot truncate instants to the
    second, which the funnel's exact microseconds need: the error says so, in one line."""
    with open_source(sqlite_url, now=NOW) as src:
        assert src.validation.ok and src.engine == "sqlite"
        with pytest.raises(EngineCapabilityError) as exc:
            funnel.funnel(src, STEPS)
    text = str(exc.value)
    assert text.startswith("the sqlite engine cannot run the operation TimestampTruncate "
                           "(Unsupported truncate unit IntervalUnit.SECOND), which the "
                           "analysis reading table(s) events needs;"), text
    assert "\n" not in text and isinstance(exc.value, ParameterError)
    # the Ibis error stays attached for whoever debugs it
    assert isinstance(exc.value.__cause__, ibis.common.exceptions.TranslationError)


def test_report_on_an_engine_lacking_an_operation_publishes_nothing_as_ok(
        sqlite_url: str, tmp_path: Path, capsys) -> None:
    code = main(["report", "02_journey_funnel", "--source", sqlite_url, "--out",
                 str(tmp_path), "--notebooks-dir", str(ROOT / "notebooks")])
    assert code != 0
    record = json.loads((tmp_path / "02_journey_funnel.results.json").read_text())
    assert record["status"] == "FAILED"
    assert "EngineCapabilityError: the sqlite engine cannot run the operation " \
        "TimestampTruncate" in record["error"]
    assert "table(s) events" in record["error"]
    capsys.readouterr()


def test_missing_operation_on_a_materialized_table_names_the_source_table(
        engine_world: Path, monkeypatch) -> None:
    """DuckDB's compiler made to lack ``Quantile`` (as Ibis marks an operation a backend
    does not define): the funnel fails on its step-time quantiles, computed over its
    session-temporary per-customer table; the error names the table that came from
    (``events``), not the temporary one."""
    from ibis.backends.sql.compilers.base import SQLGlotCompiler
    from ibis.backends.sql.compilers.duckdb import DuckDBCompiler

    with open_source(engine_world, now=NOW) as src:
        fine = funnel.funnel(src, STEPS)  # before: the funnel runs
        assert fine.frame.customers.iloc[0] > 200
        monkeypatch.setattr(DuckDBCompiler, "visit_Quantile", SQLGlotCompiler.visit_Undefined)
        with pytest.raises(EngineCapabilityError) as exc:
            funnel.funnel(src, STEPS)
    text = str(exc.value)
    assert text.startswith("the duckdb engine cannot run the operation Quantile "), text
    assert "reading table(s) events needs" in text and "__funnel" not in text
