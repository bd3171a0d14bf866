"""Rule-based segments on hand-made sources (issue 13 items 3 and 5)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxanalysis import segments as S
from cxanalysis.data import UNKNOWN, Labels, open_source
from cxanalysis.errors import ParameterError


def _source(tmp_path: Path):
    t = pd.Timestamp("2025-01-01", tz="UTC")
    customers = pd.DataFrame({"customer_id": ["C1", "C2", "C3", "C4"],
                              "signup_date": [t.date()] * 4,
                              "region": ["north", "south", None, "north"],
                              "age_band": ["18-34", "18-34", "35-54", None]})
    # C1: 3 orders (last on Jan 30), C2: 1 big order on Jan 10, C3: 1 small order on Jan 20,
    # C4: none
    orders = pd.DataFrame({
        "customer_id": ["C1", "C1", "C1", "C2", "C3"],
        "order_id": ["o1", "o2", "o3", "o4", "o5"],
        "ts": [t + pd.Timedelta(days=d) for d in (1, 15, 29, 9, 19)],
        "amount": [10.0, 10.0, 10.0, 100.0, 5.0], "channel": ["web"] * 5})
    customers.to_parquet(tmp_path / "customers.parquet")
    orders.to_parquet(tmp_path / "orders.parquet")
    return open_source(tmp_path)


def test_demographic_segments_missing_value_is_unknown(tmp_path: Path) -> None:
    seg = S.demographic_segments(_source(tmp_path), ["region", "age_band"])
    assert seg.labels.to_dict() == {"C1": "north / 18-34", "C2": "south / 18-34",
                                    "C3": f"{UNKNOWN} / 35-54", "C4": f"north / {UNKNOWN}"}
    rules = seg.rules().set_index("segment")
    assert rules.loc["north / 18-34", "rule"] == "region = 'north' and age_band = '18-34'"
    assert rules["customers"].sum() == 4
    # the labels are a Labels-compatible Series (the one labels type)
    assert Labels.of(seg.labels).name == "segment"
    with pytest.raises(ParameterError, match="at least one customers column"):
        S.demographic_segments(_source(tmp_path), [])


def test_rfm_scores_and_tiers_by_hand(tmp_path: Path) -> None:
    src = _source(tmp_path)
    rfm = S.rfm_scores(src, "2025-01-01", "2025-01-31", bins=3)
    # recency = days from the last order to the end of Jan 31 (midnight Feb 1)
    assert rfm["recency_days"].to_dict() == pytest.approx({"C1": 2.0, "C2": 22.0, "C3": 12.0})
    assert rfm["frequency"].to_dict() == {"C1": 3, "C2": 1, "C3": 1}
    assert rfm["monetary"].to_dict() == {"C1": 30.0, "C2": 100.0, "C3": 5.0}
    # 3 customers in 3 bins: ranks are the scores; recent = high; ties by customer id
    assert rfm["r_score"].to_dict() == {"C1": 3, "C2": 1, "C3": 2}
    assert rfm["f_score"].to_dict() == {"C1": 3, "C2": 1, "C3": 2}
    assert rfm["m_score"].to_dict() == {"C1": 2, "C2": 3, "C3": 1}
    tiers = S.value_tiers(src, "2025-01-01", "2025-01-31", bins=3)
    # cut points scale by bins / 5: 7.2, 5.4, 3.6; sums C1 8, C2 5, C3 5
    assert tiers.labels.to_dict() == {"C1": "champions", "C2": "at risk", "C3": "at risk",
                                      "C4": "no purchase"}
    assert tiers.rules().set_index("segment")["customers"].to_dict() == {
        "champions": 1, "loyal": 0, "at risk": 2, "low value": 0, "no purchase": 1}


def test_past_revenue_groups_bad_k_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="k >= 1"):
        S.past_revenue_groups(pd.Series({"C1": 1.0}), 0)
