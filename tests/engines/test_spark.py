"""The same analyses on Spark (local mode) as on DuckDB, on the same small world (issue 14).

One local SparkSession serves the whole test session (tests/engines/conftest.py: 2 cores,
1 GiB driver, one shuffle partition, no UI; stopped at the end, also on failure), with the
world's Parquet files registered as views under contract names and the broken copy as
``bad_NAME``. The source is ``ibis.pyspark.connect(session)`` handed to ``open_source``: the
route a cluster session or Spark Connect takes too (README, "Run where your data lives").
"""

from __future__ import annotations

import json
from pathlib import Path

import ibis
import pandas as pd
import pytest

from cxanalysis import experiments, funnel, journeys, personas
from cxanalysis.data import CXDataError, epoch_micros, open_source, validate
from cxanalysis.engines import EngineCapabilityError, supports
from cxanalysis.errors import ParameterError
from engines.conftest import NOW, assert_same_experiment

STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]
BAD = {n: {"from": f"bad_{n}"} for n in ("customers", "events", "orders", "feedback",
                                           "assignments", "experiments")}


@pytest.fixture(scope="module")
def spark(spark_session):
    return ibis.pyspark.connect(spark_session)


@pytest.fixture(scope="module")
def both(engine_world: Path, spark):
    duck = open_source(engine_world, now=NOW)
    sp = open_source(spark, now=NOW)
    yield duck, sp
    duck.close()
    sp.close()  # a backend passed in stays open (the session is the fixture's)


def test_spark_source_is_validated_in_place(both) -> None:
    """Spark's TIMESTAMP columns are instants (typed UTC, not reported as naive), and the
    in-place validation counts the same rows as DuckDB."""
    duck, sp = both
    assert sp.engine == "pyspark" and sp.location == "pyspark connection"
    assert sp.names == duck.names
    assert sp.validation is not None and sp.validation.ok, sp.validation.summary()
    assert sp.validation.row_counts == duck.validation.row_counts
    assert sp.table("events").ts.type() == ibis.dtype("timestamp('UTC')")


def test_funnel_counts_and_step_times_equal_on_spark(both) -> None:
    duck, sp = both
    fd, fs = funnel.funnel(duck, STEPS), funnel.funnel(sp, STEPS)
    assert fd.frame.customers.iloc[0] > 200  # a real funnel, not an empty one
    assert fd.frame.customers.tolist() == fs.frame.customers.tolist()
    # Spark's percentile interpolates like DuckDB's quantile_cont: exact, no note
    assert fs.notes == [] and supports(fs.customers, "exact_quantile")
    pd.testing.assert_frame_equal(fd.frame, fs.frame, check_dtype=False, rtol=1e-12)


def test_funnel_attempts_on_spark_names_engine_and_operation(both) -> None:
    """The attempts unit is a recursive query over a temporary table: Spark 4.0 has neither,
    so the call fails at once, saying so (not with a Spark traceback)."""
    _, sp = both
    with pytest.raises(EngineCapabilityError) as exc:
        funnel.funnel(sp, STEPS, unit="attempts")
    text = str(exc.value)
    assert text.startswith("the pyspark engine cannot run a recursive query (WITH RECURSIVE)")
    assert "funnel unit='attempts' (events table)" in text and "unit='customers'" in text
    assert isinstance(exc.value, ParameterError)


def test_experiment_effects_equal_on_spark(both) -> None:
    duck, sp = both
    rd = experiments.analyze(duck, "exp_checkout_redesign", seed=1)
    rs = experiments.analyze(sp, "exp_checkout_redesign", seed=1)
    assert_same_experiment(rd, rs)


def test_persona_features_equal_on_spark(both, engine_world: Path) -> None:
    duck, sp = both
    cal = json.loads((engine_world / "truth" / "truth.json").read_text())["calibration_window"]
    xd, nd = personas.behaviour_features(duck, *cal)
    xs, ns = personas.behaviour_features(sp, *cal)
    assert nd == ns and len(xd) > 100
    pd.testing.assert_frame_equal(xd.sort_index(), xs.sort_index(), check_dtype=False,
                                  rtol=1e-9)


def test_journeys_equal_on_spark(both) -> None:
    """Paths: Spark has no ordered group_concat, so the channels are collected over an
    ordered window instead (engines.supports); the paths must be the same. Stage durations:
    exact quantiles on both."""
    duck, sp = both
    assert supports(duck.table("events"), "ordered_group_concat")
    assert not supports(sp.table("events"), "ordered_group_concat")
    pd_, ps = journeys.journey_paths(duck), journeys.journey_paths(sp)
    assert len(pd_.frame) > 3 and pd_.frame.path.str.contains(" > ").any()
    pd.testing.assert_frame_equal(pd_.frame, ps.frame, check_dtype=False)
    pd.testing.assert_frame_equal(pd_.by_customer, ps.by_customer, check_dtype=False)
    dd, ds = journeys.stage_durations(duck), journeys.stage_durations(sp)
    assert len(dd.frame) > 3 and ds.notes == []
    pd.testing.assert_frame_equal(dd.frame, ds.frame, check_dtype=False, rtol=1e-9)


def _found(report) -> set[tuple]:
    return {(p.table, p.column, p.rule, p.rows) for p in report.problems}


def test_validation_finds_the_same_problems_on_spark(broken_world: Path, spark) -> None:
    """The broken copy as files (DuckDB SQL path) and as ``bad_*`` views found through a
    mapping's ``from:`` names (Ibis path, run in Spark) give the same problems."""
    on_duck = validate(broken_world, now=NOW)
    on_spark = validate(spark, now=NOW, mapping={"tables": BAD})
    assert ("events", "customer_id", "unknown customer", 3) in _found(on_duck)
    assert len(_found(on_duck)) >= 8
    assert _found(on_spark) == _found(on_duck), (on_spark.summary(), on_duck.summary())
    with pytest.raises(CXDataError, match="unknown customer"):
        open_source(spark, now=NOW, mapping={"tables": BAD})


def test_epoch_micros_and_naive_timestamps_on_spark(spark_session) -> None:
    """Spark's builtin unix_micros gives exact microseconds (Ibis cannot extract them on
    Spark); a TIMESTAMP_NTZ column is reported as naive, not read as UTC. (A new session of
    the same SparkContext: its own views, only this events table.)"""
    from cxanalysis.engines import validate_backend

    ts = ["2025-01-01 00:00:00.923456", "1969-12-31 23:59:59.5", "2025-03-30 01:59:59.999999"]
    expected = pd.to_datetime(ts, format="ISO8601").tz_localize("UTC").astype(
        "datetime64[us, UTC]").astype("int64").tolist()
    assert expected[1] == -500_000
    rows = ", ".join(f"({i}, TIMESTAMP'{t}', TIMESTAMP_NTZ'{t}', 'C{i}', 'visit')"
                     for i, t in enumerate(ts))
    session = spark_session.newSession()
    con = ibis.pyspark.connect(session)  # sets this session's time zone to UTC
    session.sql(f"SELECT * FROM VALUES {rows} AS t(i, ts, naive, customer_id, event)"
                ).createOrReplaceTempView("events")
    src = open_source(con, validate=False)
    assert src.names == ("customers", "events")
    t = src.table("events")
    got = t.select("i", us=epoch_micros(t.ts)).order_by("i").execute().us.tolist()
    assert got == expected
    naive = open_source(con, validate=False, mapping={"tables": {"events": {
        "columns": {"ts": "naive"}}}})
    rules = {(p.table, p.column, p.rule, p.rows) for p in validate_backend(naive, NOW).errors}
    assert rules == {("events", "ts", "naive timestamp", 3)}


def test_pyspark_pin_is_the_range_ibis_supports() -> None:
    """pyproject's dev pin of pyspark is the range of the installed Ibis's ``pyspark`` extra,
    and the installed pyspark lies in it (a newer Spark that Ibis does not support would
    otherwise be resolved silently)."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[2]
    dev = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["dev"]
    ours = next(Requirement(r) for r in dev if Requirement(r).name == "pyspark")
    theirs = [Requirement(r) for r in metadata.requires("ibis-framework") or []]
    theirs = next(r for r in theirs if r.name == "pyspark" and r.marker is not None
                  and r.marker.evaluate({"extra": "pyspark"}))
    assert ours.specifier == theirs.specifier, (str(ours), str(theirs))
    assert metadata.version("pyspark") in ours.specifier


def test_missing_table_on_spark_names_engine_and_table(spark) -> None:
    with pytest.raises(CXDataError) as exc:
        open_source(spark, validate=False, mapping={"tables": {"events": {"from": "nope"}}})
    text = str(exc.value)
    assert "the pyspark source pyspark connection has no table 'nope'" in text
    assert "bad_events" in text  # the tables that are there are listed
