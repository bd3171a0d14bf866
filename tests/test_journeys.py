"""Journeys: transitions, combinations and stage durations on hand-made inputs (issue 13
item 5)."""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pytest

from cxanalysis.data import UNKNOWN, Labels
from cxanalysis.errors import ParameterError
from cxanalysis.journeys import CONVERSION, NULL, START, PathCounts, stage_durations

FRAME = pd.DataFrame({"path": ["web", "app > web", "email > app"], "journeys": [4, 2, 3],
                      "conversions": [1, 2, 0]})


def test_transitions_counted_by_hand() -> None:
    t = PathCounts(FRAME, 7).transitions()
    # web: start->web x4, web->conv x1, web->null x3; app > web: start->app x2,
    # app->web x2, web->conv x2; email > app: start->email x3, email->app x3, app->null x3
    expected = pd.DataFrame(
        [[2, 3, 4, 0, 0], [0, 0, 2, 0, 3], [3, 0, 0, 0, 0], [0, 0, 0, 3, 3]],
        index=[START, "app", "email", "web"],
        columns=["app", "email", "web", CONVERSION, NULL], dtype=float)
    pd.testing.assert_frame_equal(t, expected, check_names=False)
    m = PathCounts(FRAME, 7).transition_matrix()
    assert m.loc[START].tolist() == pytest.approx([2 / 9, 3 / 9, 4 / 9, 0, 0])
    assert m.loc["web", CONVERSION] == 0.5 and m.loc["app", NULL] == pytest.approx(0.6)
    assert m.sum(axis=1).to_numpy() == pytest.approx(np.ones(4))
    # every journey leaves (start) once and ends once (converted or not)
    assert t.loc[START].sum() == FRAME["journeys"].sum()
    assert t[[CONVERSION, NULL]].to_numpy().sum() == FRAME["journeys"].sum()
    assert t[CONVERSION].sum() == FRAME["conversions"].sum()


def test_combinations_by_hand_with_suppression() -> None:
    c = PathCounts(FRAME, 7).combinations(min_group_size=3)
    # channel sets: web (4 journeys, 1 conversion), app + web (2, 2), app + email (3, 0);
    # ranked by conversions, "app + web" (2 journeys < 3) suppressed and ranked last
    assert c["channels"].tolist() == ["web", "app + email", "app + web"]
    assert c["suppressed"].tolist() == [False, False, True]
    assert c["journeys"].iloc[:2].tolist() == [4, 3]
    assert c["conversion"].iloc[:2].tolist() == [0.25, 0.0]
    assert c.iloc[2][["journeys", "conversions", "conversion"]].isna().all()
    same = PathCounts(FRAME.assign(path=["web", "web > app", "app > email"]), 7)
    assert same.combinations(min_group_size=1)["channels"].tolist() == [
        "app + web", "web", "app + email"]  # order within a path is ignored


def _stage_events() -> ibis.Table:
    rows = [  # customer, hours, channel, stage (the hand case of test_attribution)
        ("C1", 0, "email", "retention"), ("C1", 1, "social", "awareness"),
        ("C1", 3, "web", "discovery"), ("C1", 4, "web", "purchase"),
        ("C1", 10, "email", "delivery"), ("C1", 20, "app", "retention"),
        ("C2", 0, "social", "awareness"), ("C2", 0, "email", "awareness"),
        ("C2", 5, "web", "consideration"), ("C2", 6, "app", "discovery"),
        ("C2", 8, "store", "purchase"),
    ]
    ev = pd.DataFrame(rows, columns=["customer_id", "h", "channel", "stage"])
    ev["event"] = ev["stage"] + "_event"
    ev["ts"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(ev.pop("h"), unit="h")
    return ibis.memtable(ev)


def test_stage_durations_by_labels_hand_computed() -> None:
    """By per-customer labels (any shape of data.Labels): C1 is "x", C2 has no label and is
    "(unknown)" (it used to be dropped by an inner join)."""
    ev = _stage_events()
    for labels in (pd.Series({"C1": "x"}, name="tier"),
                   pd.DataFrame({"customer_id": ["C1"], "tier": ["x"]}),
                   Labels.of(pd.Series({"C1": "x"}, name="tier"))):
        got = stage_durations(ev, by=labels, min_group_size=1).table()
        assert {(r.stage, r.group): r.median_hours for r in got.itertuples()} == {
            ("awareness", "x"): 2.0, ("discovery", "x"): 1.0, ("purchase", "x"): 6.0,
            ("delivery", "x"): 10.0, ("awareness", UNKNOWN): 5.0,
            ("discovery", UNKNOWN): 2.0, ("consideration", UNKNOWN): 3.0}
        assert (got["journeys"] == 1).all() and (got["customers"] == 1).all()
    with pytest.raises(ParameterError, match="by must be 'channel'"):
        stage_durations(ev, by="persona")


def test_stage_durations_quantiles_and_suppression() -> None:
    """Median and p90 hours are continuous quantiles (numpy's linear rule) over journeys;
    a stage x group cell of fewer customers than min_group_size keeps its row, blank."""
    hours = np.arange(1, 13)  # 12 customers on web: awareness, then discovery h hours later
    rows = []
    for i, h in enumerate(hours):
        rows += [(f"W{i}", 0.0, "web", "awareness"), (f"W{i}", float(h), "web", "discovery")]
    # 3 customers on app (under min_group_size = 5)
    rows += [(f"A{i}", 0.0, "app", "awareness") for i in range(3)]
    rows += [(f"A{i}", 2.0, "app", "discovery") for i in range(3)]
    ev = pd.DataFrame(rows, columns=["customer_id", "h", "channel", "stage"])
    ev["event"] = ev["stage"]
    ev["ts"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(ev.pop("h"), unit="h")
    got = stage_durations(ibis.memtable(ev), min_group_size=5).table().set_index("group")
    web = got.loc["web"]
    assert web["median_hours"] == pytest.approx(np.quantile(hours, 0.5))
    assert web["p90_hours"] == pytest.approx(np.quantile(hours, 0.9))
    assert web["journeys"] == 12 and not web["suppressed"]
    app = got.loc["app"]
    assert bool(app["suppressed"]) and pd.isna(app["median_hours"]) and pd.isna(app["customers"])
