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


def test_every_result_plots_its_table(world) -> None:
    """Each plot draws the figures of its table (not just "something")."""
    plt = matplotlib.pyplot
    ts = ov.table_summary(world)
    bars = [p.get_width() for p in ts.plot().patches]
    assert bars == ts.table()["rows"].tolist()
    mix = ov.channel_mix(world)
    f = mix.table()
    heights = [p.get_height() for p in mix.plot().patches]
    expected = [*f["event_share"], *f["customer_share"], *f["order_share"]]
    assert heights == pytest.approx(expected)
    cov = ov.stage_coverage(world)
    ax = cov.plot()
    assert [p.get_height() for p in ax.patches] == pytest.approx(
        cov.table()["customer_share"].tolist())
    assert [t.get_text() for t in ax.get_xticklabels()] == cov.table()["stage"].tolist()
    fd = ov.feedback_distributions(world)
    ax = fd.plot()
    nps = fd.frame[fd.frame.score_type == "nps"]
    assert [p.get_height() for p in ax.patches] == nps["answers"].tolist()
    assert ax.get_title() == f"nps (NPS {fd.nps:+.0f})"
    ex = ov.experiments_present(world)
    widths = sorted(p.get_width() for p in ex.plot().patches)
    assert widths == sorted(ex.table()["customers"].astype(int).tolist())
    vol = ov.volume_over_time(world, "month")
    ax = vol.plot()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(vol.table().columns)
    plt.close("all")


def _tiny_source(tmp_path: Path):
    """A hand-made source: 3 channels, 2 months, feedback with known scores."""
    t = pd.Timestamp("2025-03-01", tz="UTC")
    ids = [f"C{i:02d}" for i in range(30)]
    customers = pd.DataFrame({"customer_id": ids, "signup_date": [t.date()] * 30})
    ev = pd.DataFrame({
        "customer_id": ids * 2,
        # first visit of everyone in March, a second event in April
        "ts": [t] * 30 + [t + pd.Timedelta(days=31)] * 30,
        "channel": ["web"] * 20 + ["app"] * 10 + ["web"] * 12 + ["email"] * 18,
        "event": ["visit"] * 60,
        "stage": ["awareness"] * 30 + [None] * 30,
    })
    fb = pd.DataFrame({"customer_id": ids[:10], "ts": [t] * 10, "channel": ["web"] * 10,
                       "event": ["visit"] * 10,
                       # 4 promoters (9, 10), 3 passives, 3 detractors (0, 6)
                       "nps": [9, 10, 9, 10, 7, 8, 7, 0, 6, 6],
                       "csat": [5, 5, 4, 4, 3, 3, 3, 1, 2, None]})
    customers.to_parquet(tmp_path / "customers.parquet")
    ev.to_parquet(tmp_path / "events.parquet")
    fb.to_parquet(tmp_path / "feedback.parquet")
    return open_source(tmp_path)


def test_overview_hand_made_source(tmp_path: Path) -> None:
    src = _tiny_source(tmp_path)
    # March only: web 20 events / customers, app 10; shares of 30
    mix = ov.channel_mix(src, start="2025-03-01", end="2025-03-31").table().set_index(
        "channel")
    assert mix["events"].to_dict() == {"web": 20, "app": 10}
    assert mix["customer_share"].to_dict() == {"web": 20 / 30, "app": 10 / 30}
    # both months: 3 channels, customers use several, so customer shares sum above 1
    both = ov.channel_mix(src).table().set_index("channel")
    assert both["events"].to_dict() == {"web": 32, "email": 18, "app": 10}
    # April's web customers (C00-C11) also used web in March
    assert both["customers"].to_dict() == {"web": 20, "email": 18, "app": 10}
    assert both["customer_share"].sum() == pytest.approx((20 + 18 + 10) / 30)
    # volume by month, and nothing outside the window
    vol = ov.volume_over_time(src, "month", start="2025-04-01").table()
    assert vol.to_dict("index") == {pd.Timestamp("2025-04-01"): {"email": 18, "web": 12}}
    # stages: unlabelled events are "(none)", shares of active customers
    cov = ov.stage_coverage(src).table().set_index("stage")
    assert cov["events"].to_dict() == {"awareness": 30, "(none)": 30}
    assert cov["customer_share"].to_dict() == {"awareness": 1.0, "(none)": 1.0}
    # feedback: NPS = 100 x (4 - 3) / 10; csat counts; answers without a score skipped
    fd = ov.feedback_distributions(src)
    assert fd.nps == pytest.approx(10.0)
    assert fd.answers == {"nps": 10, "csat": 9}
    assert fd.table()["csat"].to_dict() == {0: 0, 1: 1, 2: 1, 3: 3, 4: 2, 5: 2, 6: 0,
                                            7: 0, 8: 0, 9: 0, 10: 0}
    assert "NPS +10.0" in fd.summary()
    # min_group_size 15: app (10 customers) is suppressed, its figures blank
    small = ov.channel_mix(src, min_group_size=15).table().set_index("channel")
    assert small["suppressed"].to_dict() == {"web": False, "email": False, "app": True}
    assert pd.isna(small.loc["app", "events"]) and pd.isna(small.loc["app", "event_share"])
    assert small.loc["web", "events"] == 32


def test_suppressed_cells_show_the_callers_min_group_size(tmp_path: Path) -> None:
    """Results carry the min_group_size they were built with, so the formatter's "<N"
    names the notebook's threshold, not the package default (was "<10" always)."""
    src = _tiny_source(tmp_path)
    for res in (ov.channel_mix(src, min_group_size=15),
                ov.stage_coverage(src, min_group_size=31)):
        page = res._repr_html_()
        assert res.min_group_size in (15, 31)
        assert f"&lt;{res.min_group_size}" in page and "&lt;10" not in page
