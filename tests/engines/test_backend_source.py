"""Sources given as an Ibis backend or a duckdb:// URL (no PostgreSQL needed)."""

from __future__ import annotations

from pathlib import Path

import ibis
import numpy as np
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


def test_fallbacks_give_the_same_paths_and_state_approximate_quantiles(
        engine_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallbacks for engines without ordered group_concat / exact quantiles, run on
    DuckDB: the window-collected journey paths equal the ordered group_concat ones, and the
    approximate step times are close to the exact ones and said to be approximate."""
    from cxanalysis import engines, funnel, journeys

    steps = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]
    with open_source(engine_world, now=NOW) as src:
        exact_paths = journeys.journey_paths(src)
        exact_funnel = funnel.funnel(src, steps)
        assert exact_funnel.notes == []
        monkeypatch.setattr(engines, "supports", lambda expr, op: False)
        monkeypatch.setattr(journeys, "supports", lambda expr, op: False)
        window_paths = journeys.journey_paths(src)
        approx_funnel = funnel.funnel(src, steps)
        durations = journeys.stage_durations(src)
    assert exact_paths.frame.path.str.contains(" > ").any()
    pd.testing.assert_frame_equal(exact_paths.frame, window_paths.frame)
    pd.testing.assert_frame_equal(exact_paths.by_customer, window_paths.by_customer)
    assert approx_funnel.notes == ["median and p90 hours are approximate: the duckdb engine "
                                   "has no exact quantile (its approximate quantile function "
                                   "is used)"]
    assert durations.notes and "approximate" in durations.notes[0]
    counts = ["customers", "dropped", "in_progress"]
    pd.testing.assert_frame_equal(exact_funnel.frame[counts], approx_funnel.frame[counts])
    med = "median_hours_from_previous"
    np.testing.assert_allclose(approx_funnel.frame[med].iloc[1:],
                               exact_funnel.frame[med].iloc[1:], rtol=0.25)


def test_unreachable_url_and_unknown_engine_give_one_clear_error() -> None:
    """Nothing listens on the port: one line naming the engine and the URL without its
    password (no driver traceback); a scheme no Ibis backend knows is named too."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgres://cx:hunter2@127.0.0.1:{port}/cx"
    with pytest.raises(CXDataError) as exc:
        open_source(url)
    text = str(exc.value)
    assert text.startswith(f"cannot connect to the postgres source postgres://cx@127.0.0.1:"
                           f"{port}/cx: ")
    assert "hunter2" not in text and "\n" not in text
    with pytest.raises(CXDataError, match=r"^cannot connect to the nosuchdb source "
                                          r"nosuchdb://u@h/x: "):
        open_source("nosuchdb://u:pw@h/x")


def test_attempts_unit_off_duckdb_and_postgres_names_engine_and_operation(
        engine_world: Path) -> None:
    """The attempts unit needs WITH RECURSIVE over a temporary table; an engine other than
    DuckDB or PostgreSQL is refused up front with the engine, operation and table named
    (checked on Spark for real in test_spark.py; here an SQLite backend stands in)."""
    from cxanalysis import funnel
    from cxanalysis.engines import EngineCapabilityError
    from cxanalysis.errors import ParameterError

    con = ibis.sqlite.connect() if hasattr(ibis, "sqlite") else None
    if con is None:
        pytest.skip("no SQLite backend in this Ibis install")
    ev = pd.read_parquet(engine_world / "events.parquet")
    con.create_table("events", ev.assign(ts=ev.ts.astype(str)))
    events = con.table("events").mutate(ts=ibis._.ts.cast("timestamp('UTC')"))
    with pytest.raises(EngineCapabilityError) as exc:
        funnel.funnel(events, ["visit", "purchase"], unit="attempts")
    assert str(exc.value).startswith("the sqlite engine cannot run a recursive query")
    assert "funnel unit='attempts' (events table)" in str(exc.value)
    assert isinstance(exc.value, ParameterError)
