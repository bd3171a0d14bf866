"""Sources given as an Ibis backend or a duckdb:// URL (no PostgreSQL needed)."""

from __future__ import annotations

from pathlib import Path

import ibis
import pandas as pd
import pytest

from cxanalysis.data import CXDataError, open_source
from engines.conftest import NOW, load_folder


def test_duckdb_url_opens_the_database_file(engine_world: Path, tmp_path: Path) -> None:
    db = tmp_path / "cx.duckdb"
    con = ibis.duckdb.connect(str(db))
    load_folder(con, engine_world)
    con.disconnect()
    with open_source(f"duckdb://{db}", now=NOW) as src:
        assert src.path == db and src.engine == "duckdb"
        assert src.validation.row_counts["customers"] == 300
    with pytest.raises(CXDataError, match="needs a database file"):
        open_source("duckdb://")


def test_backend_without_customers_derives_them(engine_world: Path) -> None:
    """On an Ibis backend the customers table is derived from the activity, as for files,
    and the order_id / channel rules of the contract apply."""
    con = ibis.duckdb.connect()
    ev = pd.read_parquet(engine_world / "events.parquet")
    orders = pd.read_parquet(engine_world / "orders.parquet").drop(columns=["order_id"])
    con.create_table("events", ev.drop(columns=["channel"]))
    con.create_table("orders", orders)
    src = open_source(con, now=NOW)
    assert src.names == ("customers", "events", "orders")
    assert src.validation.ok, src.validation.summary()
    cust = src.table("customers").execute()
    assert set(cust.customer_id) == set(ev.customer_id) | set(orders.customer_id)
    first = pd.concat([ev[["customer_id", "ts"]], orders[["customer_id", "ts"]]]).groupby(
        "customer_id").ts.min().dt.date
    assert (cust.set_index("customer_id").signup_date.sort_index() == first.sort_index()).all()
    assert set(src.table("events").channel.execute()) == {"unspecified"}
    ids = src.table("orders").order_id.execute()
    assert ids.nunique() == len(orders) and ids.str.startswith("row ").all()
    assert any(d.startswith("customers:") for d in src.derived)
    src.close()
    assert con.list_tables()  # the caller's backend stays open


def test_backend_rejects_parsing_rules_and_text_timestamps(engine_world: Path) -> None:
    con = ibis.duckdb.connect()
    ev = pd.read_parquet(engine_world / "events.parquet")
    con.create_table("events", ev.assign(ts=ev.ts.astype(str)))
    with pytest.raises(CXDataError, match="parsing \\(format\\) is done by DuckDB only"):
        open_source(con, mapping={"tables": {"events": {"columns": {
            "ts": {"column": "ts", "format": "%Y-%m-%d"}}}}})
    with pytest.raises(CXDataError, match="timezone:` is applied by DuckDB only"):
        open_source(con, mapping={"timezone": "Europe/Paris"})
    report = open_source(con, validate=False, now=NOW)
    from cxanalysis.engines import validate_backend

    found = {(p.table, p.column, p.rule, p.rows) for p in validate_backend(report, NOW).errors}
    assert ("events", "ts", "unparseable value", len(ev)) in found
