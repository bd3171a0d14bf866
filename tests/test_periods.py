"""Date windows derived from the data (cxanalysis.periods), against hand-counted calendars."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from cxanalysis import periods
from cxanalysis.data import CXDataError, open_source
from cxanalysis.errors import ParameterError


def _source(folder: Path, events: list[str], orders: list[str] | None = None):
    """A source holding events (and orders) at the given UTC instants."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"customer_id": [f"c{i % 3}" for i in range(len(events))],
                  "ts": pd.to_datetime(events, utc=True), "channel": "web",
                  "event": "visit"}).to_parquet(folder / "events.parquet", index=False)
    if orders is not None:
        pd.DataFrame({"order_id": [f"o{i}" for i in range(len(orders))],
                      "customer_id": "c0", "ts": pd.to_datetime(orders, utc=True),
                      "channel": "web", "amount": 10.0}).to_parquet(folder / "orders.parquet",
                                                                    index=False)
    return open_source(folder)


def test_a_calendar_year_splits_at_october_first() -> None:
    # 365 days; floor(0.75 * 365) = 273 = Jan..Sep (31+28+31+30+31+30+31+31+30)
    cal, hold = periods.split_span("2025-01-01", "2025-12-31")
    assert cal == ("2025-01-01", "2025-09-30")
    assert hold == ("2025-10-01", "2025-12-31")
    assert periods.split_span("1997-01-01", "1997-12-31") == (
        ("1997-01-01", "1997-09-30"), ("1997-10-01", "1997-12-31"))


def test_short_spans_split_by_whole_days() -> None:
    # 4 days: 3 + 1; 2 days: 1 + 1; 10 days: floor(7.5) = 7 + 3
    assert periods.split_span("2024-02-27", "2024-03-01") == (
        ("2024-02-27", "2024-02-29"), ("2024-03-01", "2024-03-01"))
    assert periods.split_span("2024-01-01", "2024-01-02") == (
        ("2024-01-01", "2024-01-01"), ("2024-01-02", "2024-01-02"))
    assert periods.split_span("2024-01-01", "2024-01-10")[1] == ("2024-01-08", "2024-01-10")
    with pytest.raises(CXDataError, match="spans 1 day"):
        periods.split_span("2024-01-01", "2024-01-01")


def test_dates_are_accepted_quoted_or_unquoted() -> None:
    want = "1997-03-01"
    for value in ("1997-03-01", " 1997-03-01 ", dt.date(1997, 3, 1),
                  dt.datetime(1997, 3, 1, 12), pd.Timestamp("1997-03-01", tz="UTC")):
        assert periods.as_day(value) == want
    assert periods.as_window([dt.date(1997, 1, 1), "1997-12-31"]) == ("1997-01-01", "1997-12-31")
    assert periods.as_window(None) is None
    with pytest.raises(ParameterError, match="not an ISO date"):
        periods.as_day("first of March")
    with pytest.raises(ParameterError, match="expected an ISO date"):
        periods.as_day(19970301)
    with pytest.raises(ParameterError, match="two ISO dates"):
        periods.as_window(["1997-01-01"], "holdout")
    with pytest.raises(ParameterError, match="before start"):
        periods.as_window(["1997-12-31", "1997-01-01"], "calibration")


def test_windows_derive_from_the_span_of_events_and_orders(tmp_path: Path) -> None:
    src = _source(tmp_path / "a", ["1997-01-01T10:00:00Z", "1997-05-01T00:00:00Z"],
                  ["1997-12-31T23:59:00Z"])
    assert periods.data_span(src) == ("1997-01-01", "1997-12-31")
    w = periods.windows(src)
    assert (w.calibration, w.holdout) == (("1997-01-01", "1997-09-30"),
                                          ("1997-10-01", "1997-12-31"))
    assert w.derived == ("calibration", "holdout")
    assert "derived" in w.summary() and periods.RULE in w.summary()
    assert w.as_dict("moments_calibration", "moments_outcome") == {
        "moments_calibration": ["1997-01-01", "1997-09-30"],
        "moments_outcome": ["1997-10-01", "1997-12-31"]}
    assert periods.calibration_window(src) == ("1997-01-01", "1997-09-30")
    assert periods.calibration_window(src, ["1997-02-01", "1997-03-01"]) == (
        "1997-02-01", "1997-03-01")


def test_a_given_window_is_kept_and_the_other_does_not_overlap_it(tmp_path: Path) -> None:
    src = _source(tmp_path / "b", ["2020-01-01T00:00:00Z", "2020-12-31T00:00:00Z"])
    # 2020 has 366 days: floor(274.5) = 274 -> split on 2020-10-01
    w = periods.windows(src, calibration=["2020-01-01", "2020-06-30"])
    assert w.calibration == ("2020-01-01", "2020-06-30")
    assert w.holdout == ("2020-10-01", "2020-12-31") and w.derived == ("holdout",)
    w = periods.windows(src, calibration=[dt.date(2020, 1, 1), dt.date(2020, 11, 30)])
    assert w.holdout == ("2020-12-01", "2020-12-31")  # the day after, to the end
    w = periods.windows(src, holdout=["2020-07-01", "2020-07-31"])
    assert w.calibration == ("2020-01-01", "2020-06-30") and w.derived == ("calibration",)
    w = periods.windows(src, ["2020-01-01", "2020-01-31"], ["2020-02-01", "2020-02-28"])
    assert w.derived == () and w.span is None and "(given)" in w.summary()
    with pytest.raises(CXDataError, match="no days left for a holdout"):
        periods.windows(src, calibration=["2020-01-01", "2020-12-31"])
    with pytest.raises(CXDataError, match="no days left for a calibration"):
        periods.windows(src, holdout=["2019-06-01", "2020-12-31"])


def test_a_source_without_activity_cannot_derive_windows(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    pd.DataFrame({"customer_id": ["c0"], "signup_date": [dt.date(2020, 1, 1)]}).to_parquet(
        folder / "customers.parquet", index=False)
    src = open_source(folder)
    with pytest.raises(CXDataError, match="none of the tables events, orders"):
        periods.windows(src)
