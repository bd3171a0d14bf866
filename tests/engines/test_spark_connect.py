"""Spark Connect sources by URL (``sc://host:port``), on a real local Connect server (issue 14).

The server (tests/engines/sparkconnect.py) holds the engine world's tables in its catalog;
``open_source("sc://127.0.0.1:PORT")`` opens its own Connect session, validates the tables
in place and runs the funnel there, with the same counts and step times as DuckDB. The
error cases (unreachable server, client not installed) need no server.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest

from cxanalysis import funnel
from cxanalysis.cli import main
from cxanalysis.data import CXDataError, open_source
from engines.conftest import NOW

STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]


def test_spark_connect_url_is_validated_in_place_with_duckdb_funnel_counts(
        engine_world: Path, spark_connect_url: str) -> None:
    """The funnel's per-customer table is materialized on the server (a local checkpoint:
    Ibis's ``.cache()`` fails on Spark Connect for queries with a CTE) and counted there."""
    url = spark_connect_url + "/;user_id=cx"  # (a token would make the client use TLS)
    duck = open_source(engine_world, now=NOW)
    with open_source(url, now=NOW) as sc:
        assert sc.engine == "pyspark" and sc.location == url
        assert sc.names == duck.names
        assert sc.validation is not None and sc.validation.ok, sc.validation.summary()
        assert sc.validation.row_counts == duck.validation.row_counts
        fd, fs = funnel.funnel(duck, STEPS), funnel.funnel(sc, STEPS)
        assert fd.frame.customers.iloc[0] > 200
        assert fs.notes == []
        pd.testing.assert_frame_equal(fd.frame, fs.frame, check_dtype=False, rtol=1e-12)
        # the materialized table is read again (a breakdown), not recomputed wrongly
        assert fs.customers.count().execute() == fd.customers.count().execute()
    duck.close()


def test_notebook_02_through_report_on_spark_connect_equals_duckdb(
        engine_world: Path, spark_connect_url: str, tmp_path: Path, capsys) -> None:
    """``cxanalysis report --source sc://...``: the kernel opens the URL it is given (the
    notebook's ``source`` parameter) and publishes the same results as on DuckDB."""
    import json

    from engines.test_postgres_reports import ROOT, _differences

    runs = {}
    for engine, source in (("spark", spark_connect_url), ("duckdb", str(engine_world))):
        out = tmp_path / engine
        code = main(["report", "02_journey_funnel", "--source", source, "--out", str(out),
                     "--notebooks-dir", str(ROOT / "notebooks")])
        assert code == 0, capsys.readouterr().err
        runs[engine] = json.loads((out / "02_journey_funnel.results.json").read_text())
    sc, duck = runs["spark"], runs["duckdb"]
    assert sc["status"] == duck["status"] == "OK" and sc["results"]
    assert sc["source"] == sc["parameters"]["source"] == spark_connect_url
    assert _differences(sc["results"], duck["results"]) == []


def test_validate_command_takes_a_spark_connect_url(spark_connect_url: str, capsys) -> None:
    assert main(["validate", spark_connect_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: customers (300 rows), events (")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def test_unreachable_spark_connect_server_gives_one_line_without_the_token() -> None:
    port = _closed_port()
    with pytest.raises(CXDataError) as exc:
        open_source(f"sc://127.0.0.1:{port}/;token=SECRET-TOKEN")
    text = str(exc.value)
    assert text.startswith(f"cannot connect to the Spark Connect source sc://127.0.0.1:{port}/: "
                           f"127.0.0.1:{port} is unreachable")
    assert "SECRET" not in text and "\n" not in text


def test_report_with_unreachable_spark_connect_stops_before_running(tmp_path: Path,
                                                                    capsys) -> None:
    port = _closed_port()
    code = main(["report", "02_journey_funnel", "--source", f"sc://127.0.0.1:{port}",
                 "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.startswith(
        "error: cannot connect to the Spark Connect source sc://127.0.0.1:")
    assert not list(tmp_path.iterdir())


def test_missing_spark_connect_client_names_the_install(monkeypatch) -> None:
    """Without grpcio (pyspark installed without its ``connect`` extra) the error says what
    to install, before any connection is tried."""
    pytest.importorskip("pyspark")
    import sys

    monkeypatch.setitem(sys.modules, "grpc", None)  # "import grpc" now fails
    with pytest.raises(CXDataError) as exc:
        open_source("sc://127.0.0.1:1")
    text = str(exc.value)
    assert text.startswith("cannot connect to the Spark Connect source sc://127.0.0.1:1: the "
                           "Spark Connect client is not installed (pip install")
    assert "pyspark[connect]" in text and "grpc" in text.split("): ", 1)[1]
