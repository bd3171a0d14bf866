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
