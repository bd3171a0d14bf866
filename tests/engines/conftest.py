"""Engine fixtures: a throwaway PostgreSQL 15 cluster holding a small synthetic world.

The cluster lives in a temporary folder, runs as the ``postgres`` user when the tests run as
root, listens on 127.0.0.1 on a free port, and is stopped and removed at the end of the
session, also when tests fail (the fixture's ``finally``). Skipped, with the reason, when the
PostgreSQL binaries are missing (set ``CX_PG_BIN`` to their folder).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engines import pgcluster

#: Small world shared by every engine test (same on every engine).
ENGINE_CUSTOMERS = 300
ENGINE_SEED = 7
#: Reference time of the "in the future" rules: after the world's last event.
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def load_folder(con, folder: Path, prefix: str = "") -> None:
    """Create a table ``prefix + NAME`` per ``NAME.parquet`` of ``folder`` on ``con``."""
    for f in sorted(folder.glob("*.parquet")):
        con.create_table(prefix + f.stem, pd.read_parquet(f), overwrite=True)


def assert_same_experiment(rd, ro) -> None:
    """The experiment result on another engine equals DuckDB's: text columns exactly,
    numbers to 1e-9 relative, the SRM p-value and the arm counts."""
    num = rd.effects.select_dtypes("number").columns
    assert {"abs_diff", "abs_ci_low", "abs_ci_high", "p_value", "rel_lift"} <= set(num)
    other = [c for c in rd.effects.columns if c not in num]
    assert rd.effects[other].astype(str).equals(ro.effects[other].astype(str))
    assert rd.effects.abs_diff.notna().sum() >= 5
    np.testing.assert_allclose(ro.effects[num].to_numpy(float), rd.effects[num].to_numpy(float),
                               rtol=1e-9, atol=1e-12, equal_nan=True)
    assert ro.srm_p_value == pytest.approx(rd.srm_p_value, rel=1e-9)
    assert ro.counts == rd.counts


def broken_copy(world: Path, out: Path) -> Path:
    """The world with one break of each kind validation reports, written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    frames = {f.stem: pd.read_parquet(f) for f in world.glob("*.parquet")}
    ev = frames["events"].copy()
    ev.loc[ev.index[:3], "customer_id"] = "NOBODY"                  # unknown customer x3
    ev.loc[ev.index[3:5], "stage"] = "limbo"                       # unknown value x2
    ev.loc[ev.index[5], "ts"] = pd.Timestamp("2031-01-01", tz="UTC")  # future x1
    ev.loc[ev.index[6], "event"] = None                            # missing value x1
    frames["events"] = ev
    fb = frames["feedback"].copy()
    fb.loc[fb.index[:2], "nps"] = 11.0                             # out of range x2
    fb.loc[fb.index[2], "csat"] = 2.5                              # not an integer x1
    frames["feedback"] = fb
    od = frames["orders"].copy()
    od.loc[od.index[1], "order_id"] = od.loc[od.index[0], "order_id"]  # duplicate key: 2 rows
    od.loc[od.index[2], "amount"] = -5.0                           # out of range x1
    frames["orders"] = od
    for name, df in frames.items():
        df.to_parquet(out / f"{name}.parquet", index=False)
    return out


@pytest.fixture(scope="session")
def engine_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cxanalysis.synth import generate

    return Path(generate(ENGINE_CUSTOMERS, seed=ENGINE_SEED,
                         out=tmp_path_factory.mktemp("engine_world"), progress=False))


@pytest.fixture(scope="session")
def broken_world(engine_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return broken_copy(engine_world, tmp_path_factory.mktemp("broken_world"))


@pytest.fixture(scope="session")
def postgres_url(engine_world: Path, broken_world: Path) -> Iterator[str]:
    """URL (with password) of a throwaway cluster holding the world under contract names
    and the broken copy under ``bad_NAME``."""
    reason = pgcluster.missing_reason()
    if reason:
        pytest.skip(reason)
    import ibis

    cluster = pgcluster.start_cluster()
    try:
        con = ibis.connect(cluster.url)
        load_folder(con, engine_world)
        load_folder(con, broken_world, prefix="bad_")
        con.disconnect()
        yield cluster.url
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- Spark

#: Settings of the test session: small, quiet and quick on a tiny world (one shuffle
#: partition; no UI; adaptive execution and whole-stage code generation off, which cost more
#: than they save on a few thousand rows).
SPARK_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "1g",
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.session.timeZone": "UTC",
}


def java_home() -> str | None:
    """JAVA_HOME for Spark: the environment's, else a Java 17 or 21 JDK under /usr/lib/jvm
    (Spark 4.0 runs on 17 and 21), else None (then ``java`` on PATH is used)."""
    import os

    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    for version in ("17", "21"):
        for jdk in sorted(Path("/usr/lib/jvm").glob(f"java-{version}-openjdk*")):
            if (jdk / "bin" / "java").exists():
                return str(jdk)
    return None


def spark_missing_reason() -> str | None:
    """Why a local Spark session cannot start here, or None."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (it is a dev dependency: pip install -e .[dev])"
    home = java_home()
    if not (home and (Path(home) / "bin" / "java").exists()) and not shutil.which("java"):
        return "no Java found for Spark (install a JDK 17 or set JAVA_HOME)"
    return None


def local_spark(app: str = "cxanalysis-tests", conf: dict | None = None):
    """A local-mode SparkSession (2 cores) with :data:`SPARK_CONF` and ``conf``."""
    import os

    home = java_home()
    if home:
        os.environ["JAVA_HOME"] = home
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName(app)
    for key, value in {**SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


@pytest.fixture(scope="session")
def spark_session(engine_world: Path, broken_world: Path,
                  tmp_path_factory: pytest.TempPathFactory):
    """One local SparkSession for the test session (stopped at its end, also on failure),
    with the world's tables registered under contract names (views over its Parquet files)
    and the broken copy under ``bad_NAME``."""
    reason = spark_missing_reason()
    if reason:
        pytest.skip(reason)
    # the warehouse folder in a temporary one, not spark-warehouse/ in the working directory
    session = local_spark(conf={"spark.sql.warehouse.dir":
                                str(tmp_path_factory.mktemp("spark-warehouse"))})
    try:
        for prefix, folder in (("", engine_world), ("bad_", broken_world)):
            for f in sorted(folder.glob("*.parquet")):
                session.read.parquet(str(f)).createOrReplaceTempView(prefix + f.stem)
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def spark_connect_url(engine_world: Path) -> Iterator[str]:
    """URL (``sc://127.0.0.1:PORT``) of a local Spark Connect server started for the test
    session (tests/engines/sparkconnect.py; stopped at its end, also on failure) whose
    catalog holds the world's tables under contract names (tables over its Parquet files,
    as a cluster's catalog would: every session of the server finds them by name). Skipped,
    with the reason, when Java, pyspark's Connect client dependencies or the server jar are
    missing."""
    from engines import sparkconnect

    reason = sparkconnect.missing_reason()
    if reason:
        pytest.skip(reason)
    server = sparkconnect.start_server(SPARK_CONF)
    try:
        from pyspark.sql import SparkSession

        session = SparkSession.builder.remote(server.url).create()
        try:
            for f in sorted(engine_world.glob("*.parquet")):
                session.sql(f"CREATE TABLE {f.stem} USING parquet LOCATION '{f}'").collect()
        finally:
            session.stop()
        yield server.url
    finally:
        server.stop()
