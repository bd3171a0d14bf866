"""Notebook 00's figures, each checked against an independent pandas computation."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

from cxanalysis import overview as ov
from cxanalysis.data import open_source


@pytest.fixture(scope="module")
def raw(world_path: Path) -> dict[str, pd.DataFrame]:
    return {n: pd.read_parquet(world_path / f"{n}.parquet")
            for n in ("customers", "events", "orders", "feedback", "assignments")}


def test_table_summary(world, raw) -> None:
    t = ov.table_summary(world).table().set_index("table")
    for name, df in raw.items():
        assert t.loc[name, "rows"] == len(df)
        assert t.loc[name, "customers"] == df.customer_id.nunique()
    ev = raw["events"]
    assert t.loc["events", "first"] == ev.ts.min().date()
    assert t.loc["events", "last"] == ev.ts.max().date()
    assert pd.isna(t.loc["experiments", "customers"])


def test_volume_over_time_by_week(world, raw) -> None:
    got = ov.volume_over_time(world, "week", start="2025-03-01", end="2025-05-31").table()
    ev = raw["events"]
    ev = ev[(ev.ts >= pd.Timestamp("2025-03-01", tz="UTC"))
            & (ev.ts < pd.Timestamp("2025-06-01", tz="UTC"))]
    week = ev.ts.dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time
    expected = ev.groupby([week, ev.channel]).size().unstack(fill_value=0)
    expected.index.name, expected.columns.name = "period", "channel"
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_freq=False)
    assert got.to_numpy().sum() == len(ev)
    with pytest.raises(ValueError, match="freq must be one of"):
        ov.volume_over_time(world, "year")


def test_channel_mix(world, raw) -> None:
    got = ov.channel_mix(world).table().set_index("channel")
    ev, o = raw["events"], raw["orders"]
    assert got["events"].to_dict() == ev.channel.value_counts().to_dict()
    assert got["customers"].to_dict() == ev.groupby("channel").customer_id.nunique().to_dict()
    assert got["orders"].to_dict() == {c: int(o.channel.eq(c).sum()) for c in got.index}
    assert got["revenue"].sum() == pytest.approx(o.amount.sum())
    assert got["event_share"].sum() == pytest.approx(1.0)
    assert not got["suppressed"].any()


def test_stage_coverage_in_journey_order(world, raw) -> None:
    got = ov.stage_coverage(world).table()
    assert got.stage.tolist() == ["awareness", "discovery", "consideration", "purchase",
                                  "delivery", "retention"]
    ev = raw["events"]
    assert got.set_index("stage")["customers"].to_dict() == \
        ev.groupby("stage").customer_id.nunique().to_dict()


def test_feedback_distributions_and_nps(world, raw) -> None:
    got = ov.feedback_distributions(world)
    fb = raw["feedback"]
    nps = fb.nps.dropna()
    expected = 100 * ((nps >= 9).mean() - (nps <= 6).mean())
    assert got.nps == pytest.approx(expected, abs=1e-9)
    table = got.table()
    # rows: every score answered on any scale (the calibrated world has no NPS of 0)
    answered = set(fb.nps.dropna()) | set(fb.csat.dropna()) | set(fb.effort.dropna())
    assert set(table.index) == {int(s) for s in answered}
    assert table["csat"].to_dict() == {s: int((fb.csat == s).sum()) for s in table.index}
    assert got.answers == {"nps": len(nps), "csat": int(fb.csat.notna().sum()),
                           "effort": int(fb.effort.notna().sum())}
    assert ov.nps_score(3, 1, 4) == 50.0
    with pytest.raises(ValueError):
        ov.nps_score(0, 0, 0)


def test_experiments_present(world, raw) -> None:
    got = ov.experiments_present(world).table()
    a = raw["assignments"]
    expected = a.groupby(["experiment_id", "variant"]).customer_id.nunique()
    assert got.set_index(["experiment_id", "variant"])["customers"].to_dict() == \
        expected.to_dict()
    assert set(got.name) == {"One-page checkout", "Personalised email subject",
                             "New app onboarding", "Homepage banner"}


def test_small_groups_are_suppressed(tmp_path: Path) -> None:
    ts = pd.Timestamp("2025-01-01", tz="UTC")
    customers = pd.DataFrame({"customer_id": [f"C{i}" for i in range(30)],
                              "signup_date": [ts.date()] * 30})
    events = pd.DataFrame({"customer_id": [f"C{i}" for i in range(30)],
                           "ts": [ts] * 30,
                           "channel": ["web"] * 25 + ["chat"] * 5,
                           "event": ["visit"] * 30})
    customers.to_parquet(tmp_path / "customers.parquet")
    events.to_parquet(tmp_path / "events.parquet")
    mix = ov.channel_mix(open_source(tmp_path)).table().set_index("channel")
    assert bool(mix.loc["chat", "suppressed"]) and pd.isna(mix.loc["chat", "events"])
    assert mix.loc["web", "events"] == 25


def test_every_result_plots(world) -> None:
    for res in (ov.table_summary(world), ov.volume_over_time(world), ov.channel_mix(world),
                ov.stage_coverage(world), ov.feedback_distributions(world),
                ov.experiments_present(world)):
        ax = res.plot()
        assert ax.has_data()
    matplotlib.pyplot.close("all")
