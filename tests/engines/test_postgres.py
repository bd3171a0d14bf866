"""The same analyses on PostgreSQL as on DuckDB, on the same small world (issue 14).

A throwaway cluster (tests/engines/conftest.py) holds the world; every comparison opens the
world's Parquet folder on DuckDB and the database by URL, and asserts equal numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cxanalysis import experiments, funnel, personas
from cxanalysis.data import CXDataError, epoch_micros, open_source, validate
from cxanalysis.engines import redact
from engines.conftest import NOW, assert_same_experiment
from engines.pgcluster import PASSWORD

STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]


@pytest.fixture(scope="module")
def both(engine_world: Path, postgres_url: str):
    duck = open_source(engine_world, now=NOW)
    pg = open_source(postgres_url, now=NOW)
    yield duck, pg
    duck.close()
    pg.close()


def test_postgres_source_is_found_by_url_and_shown_without_password(both) -> None:
    duck, pg = both
    assert pg.engine == "postgres" and duck.engine == "duckdb"
    assert pg.names == duck.names
    assert PASSWORD not in pg.location and pg.location.startswith("postgres://cx@127.0.0.1:")
    assert pg.validation is not None and pg.validation.ok, pg.validation.summary()
    assert pg.validation.row_counts == duck.validation.row_counts
    assert pg.truth_dir is None and pg.is_database


def test_epoch_micros_is_exact_on_postgres(postgres_url: str) -> None:
    """Regression: off DuckDB ``epoch_micros`` used whole seconds x 10^6, and a cast of
    PostgreSQL's numeric epoch would round .5 s up (issue 14)."""
    import ibis

    ts = pd.Series(pd.to_datetime(["2025-01-01 00:00:00.923456", "1969-12-31 23:59:59.5",
                                   "2025-06-01 12:00:00", "2025-03-30 01:59:59.999999"],
                                  format="ISO8601").tz_localize("UTC"), name="ts")
    expected = ts.astype("datetime64[us, UTC]").astype("int64").tolist()
    assert expected[1] == -500_000
    con = ibis.connect(postgres_url)
    try:
        t = con.create_table("subsecond", pd.DataFrame({"i": range(4), "ts": ts}),
                             overwrite=True)
        got = t.select("i", us=epoch_micros(t.ts)).order_by("i").execute().us.tolist()
    finally:
        con.disconnect()
    assert got == expected
    d = ibis.duckdb.connect().create_table("subsecond", pd.DataFrame({"i": range(4), "ts": ts}))
    assert d.select("i", us=epoch_micros(d.ts)).order_by("i").execute().us.tolist() == expected


def test_funnel_counts_and_step_times_equal_on_postgres(both) -> None:
    duck, pg = both
    fd, fp = funnel.funnel(duck, STEPS), funnel.funnel(pg, STEPS)
    assert fd.frame.customers.tolist() == fp.frame.customers.tolist()
    assert fd.frame.customers.iloc[0] > 200  # a real funnel, not an empty one
    pd.testing.assert_frame_equal(fd.frame, fp.frame, check_dtype=False, rtol=1e-12)
    pd.testing.assert_frame_equal(funnel.funnel(duck, STEPS, mode="unordered").frame,
                                  funnel.funnel(pg, STEPS, mode="unordered").frame,
                                  check_dtype=False, rtol=1e-12)


@pytest.mark.parametrize("experiment_id", ["exp_checkout_redesign", "exp_email_subject"])
def test_experiment_effects_equal_on_postgres(both, experiment_id: str) -> None:
    duck, pg = both
    rd = experiments.analyze(duck, experiment_id, seed=1)
    rp = experiments.analyze(pg, experiment_id, seed=1)
    assert_same_experiment(rd, rp)
    # per-customer tables are stored once (temp table) and the breakdown runs there too
    bd = rd.breakdown("region", source=duck).table()
    bp = rp.breakdown("region", source=pg).table()
    pd.testing.assert_frame_equal(bd, bp, check_dtype=False, rtol=1e-9)


def test_persona_features_equal_on_postgres(both, engine_world: Path) -> None:
    duck, pg = both
    cal = json.loads((engine_world / "truth" / "truth.json").read_text())["calibration_window"]
    xd, nd = personas.behaviour_features(duck, *cal)
    xp, np_ = personas.behaviour_features(pg, *cal)
    assert nd == np_ and len(xd) > 100
    pd.testing.assert_frame_equal(xd.sort_index(), xp.sort_index(), check_dtype=False,
                                  rtol=1e-9)


def _found(report) -> set[tuple]:
    return {(p.table, p.column, p.rule, p.rows) for p in report.problems}


def test_validation_finds_the_same_problems_on_postgres(broken_world: Path,
                                                       postgres_url: str) -> None:
    """The broken copy as files (DuckDB SQL path) and as ``bad_*`` tables found through a
    mapping's ``from:`` names (Ibis path, run in PostgreSQL) give the same problems."""
    mapping = {"tables": {n: {"from": f"bad_{n}"} for n in
                          ("customers", "events", "orders", "feedback", "assignments",
                           "experiments")}}
    on_duck = validate(broken_world, now=NOW)
    on_pg = validate(postgres_url, now=NOW, mapping=mapping)
    expected = {("events", "customer_id", "unknown customer", 3),
                ("events", "stage", "unknown value", 2),
                ("events", "ts", "timestamp in the future", 1),
                ("events", "event", "missing value", 1),
                ("feedback", "nps", "out of range", 2),
                ("feedback", "csat", "not an integer", 1),
                ("orders", "order_id", "duplicate key", 2),
                ("orders", "amount", "out of range", 1)}
    assert expected <= _found(on_duck), on_duck.summary()
    assert _found(on_pg) == _found(on_duck), (on_pg.summary(), on_duck.summary())
    assert not on_pg.ok
    with pytest.raises(CXDataError, match="unknown customer"):
        open_source(postgres_url, now=NOW, mapping=mapping)


def test_ibis_validation_path_agrees_on_a_duckdb_backend(broken_world: Path) -> None:
    """The Ibis validation runs on any backend: on a DuckDB connection passed in, it finds
    what the DuckDB SQL path finds on the files (and leaves the caller's connection open)."""
    import ibis

    from engines.conftest import load_folder

    con = ibis.duckdb.connect()
    load_folder(con, broken_world)
    via_backend = validate(con, now=NOW)
    assert _found(via_backend) == _found(validate(broken_world, now=NOW))
    assert con.list_tables()  # still usable


def test_bad_postgres_urls_give_one_clear_error(postgres_url: str) -> None:
    wrong = postgres_url.replace(PASSWORD, "wrong-password")
    with pytest.raises(CXDataError) as exc:
        open_source(wrong)
    text = str(exc.value)
    assert text.startswith("cannot connect to the postgres source postgres://cx@127.0.0.1")
    assert "wrong-password" not in text and PASSWORD not in text
    with pytest.raises(CXDataError, match="has no table 'nope'"):
        open_source(postgres_url, mapping={"tables": {"events": {"from": "nope"}}})
    with pytest.raises(CXDataError, match="postgres source .*/postgres holds no table"):
        open_source(postgres_url.rsplit("/", 1)[0] + "/postgres", require=["events"])


def test_redact_removes_passwords_and_secret_parameters() -> None:
    assert redact("postgres://u:p%40ss@h:5432/db") == "postgres://u@h:5432/db"
    assert redact("snowflake://u:pw@acct/db/schema?warehouse=wh&password=x") == \
        "snowflake://u@acct/db/schema?warehouse=wh"
    assert redact("trino://u@h:8080/hive?access_token=abc") == "trino://u@h:8080/hive"
    assert redact("/data/demo") == "/data/demo"


def test_journeys_equal_on_postgres(both) -> None:
    """Ordered path aggregation and exact step-time quantiles give the same tables."""
    from cxanalysis import journeys

    duck, pg = both
    for fn in (journeys.journey_paths, journeys.stage_durations):
        a, b = fn(duck).frame, fn(pg).frame
        assert len(a) > 3, fn.__name__
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                      check_dtype=False, rtol=1e-9)


def test_funnel_attempts_equal_on_postgres(both) -> None:
    """unit='attempts' (a recursive query over a session-temporary table) runs on
    PostgreSQL too, with the same counts and times as on DuckDB."""
    duck, pg = both
    fd = funnel.funnel(duck, STEPS, unit="attempts")
    fp = funnel.funnel(pg, STEPS, unit="attempts")
    assert fd.frame.attempts.iloc[0] > fd.frame.customers.iloc[0]  # repeat attempts exist
    pd.testing.assert_frame_equal(fd.frame, fp.frame, check_dtype=False, rtol=1e-12)


def test_boolean_counts_compile_for_postgres_on_our_connections_only(postgres_url: str
                                                                     ) -> None:
    """Regression (ibis 12): ``bool.cast("int64")`` is CAST(b AS BIGINT), which PostgreSQL
    rejects. Sources opened by cxanalysis compile it through INTEGER; Ibis's own compiler
    class is left as it is (no monkeypatch)."""
    import ibis
    from ibis.backends.sql.compilers.postgres import PostgresCompiler

    with open_source(postgres_url, validate=False) as pg:
        ev = pg.table("events")
        n = (ev.event == "visit").cast("int64").sum().execute()
        assert n == (ev.event == "visit").sum().execute() > 0
        assert "AS INT) AS BIGINT)" in pg.con.compile((ev.event == "visit").cast("int64"))
    t = ibis.table({"b": "boolean"}, name="t")
    assert "CAST(\"t0\".\"b\" AS BIGINT)" in ibis.to_sql(t.b.cast("int64"), dialect="postgres")
    assert not hasattr(PostgresCompiler.visit_Cast, "_cx_bool")
