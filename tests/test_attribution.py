"""Attribution against hand-solved chains, simulation and brute-force Shapley values."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxanalysis.attribution import attribute, markov_shares, shapley_shares
from cxanalysis.journeys import PathCounts, journey_paths

SMALL = pd.DataFrame({"path": ["A", "A > B", "B"], "journeys": [4, 4, 2],
                      "conversions": [2, 4, 0]})


def test_markov_removal_effects_solved_by_hand() -> None:
    # P = .8 (2/8 + 4/8 x 4/6) + .2 (4/6) = .6; without A: .2 x 4/6; without B: .8 x 2/8
    re, shares = markov_shares(SMALL, ["A", "B"])
    assert re == pytest.approx([1 - (0.2 * 4 / 6) / 0.6, 1 - 0.2 / 0.6], rel=1e-12)
    assert shares == pytest.approx([0.7777778 / 1.4444444, 0.6666667 / 1.4444444], rel=1e-6)


def test_markov_conversion_probability_matches_simulation() -> None:
    rng = np.random.default_rng(3)
    chans = ["A", "B", "C"]
    paths = ["A", "A > B", "B > C", "C", "A > C > B", "B"]
    frame = pd.DataFrame({"path": paths, "journeys": rng.integers(20, 60, len(paths))})
    frame["conversions"] = (frame["journeys"] * rng.uniform(0.1, 0.9, len(paths))).astype(int)
    from cxanalysis.attribution import _Prepared, conversion_probability

    counts = _Prepared(frame, chans).transitions(frame.journeys.to_numpy(float),
                                                 frame.conversions.to_numpy(float))
    exact = conversion_probability(counts, removed=2)  # remove B
    m = counts.copy()
    m[:, -1] += m[:, 2]
    m[:, 2] = 0
    p = m / np.where(m.sum(axis=1, keepdims=True) > 0, m.sum(axis=1, keepdims=True), 1)
    wins, walks = 0, 100_000
    state = np.zeros(walks, dtype=int)
    done = np.zeros(walks, dtype=bool)
    cum = p.cumsum(axis=1)
    for _ in range(50):
        u = rng.random(walks)
        nxt = (u[:, None] > cum[state]).sum(axis=1)
        state = np.where(done, state, nxt)
        done |= state >= len(chans) + 1
    wins = (state == len(chans) + 1).mean()
    assert wins == pytest.approx(exact, abs=0.006)


def _brute_force_shapley(frame: pd.DataFrame, chans: list[str]) -> np.ndarray:
    sets = [set(p.split(" > ")) for p in frame["path"]]

    def v(s: set[str]) -> float:
        return float(sum(c for js, c in zip(sets, frame["conversions"], strict=True)
                         if js <= s))

    phi = np.zeros(len(chans))
    for order in itertools.permutations(chans):
        seen: set[str] = set()
        for c in order:
            phi[chans.index(c)] += v(seen | {c}) - v(seen)
            seen.add(c)
    return phi / math.factorial(len(chans)) / v(set(chans))


def test_shapley_against_brute_force() -> None:
    assert shapley_shares(SMALL, ["A", "B"]) == pytest.approx([2 / 3, 1 / 3], rel=1e-12)
    rng = np.random.default_rng(0)
    chans = ["A", "B", "C", "D"]
    paths = [" > ".join(rng.permutation(chans)[: rng.integers(1, 5)]) for _ in range(25)]
    frame = pd.DataFrame({"path": paths, "journeys": 10,
                          "conversions": rng.integers(0, 10, len(paths))})
    frame = frame.groupby("path", as_index=False).sum()
    got = shapley_shares(frame, chans)
    assert got == pytest.approx(_brute_force_shapley(frame, chans), rel=1e-10)
    assert got.sum() == pytest.approx(1.0)


def test_heuristics_and_bootstrap_on_small_paths() -> None:
    res = attribute(PathCounts(SMALL, 7), n_boot=50, seed=1)
    t = res.table()
    # conversions: A (2) -> A; A > B (4): first A, last B, linear 2/2
    assert t.loc["A", "first_touch"] == pytest.approx(1.0)
    assert t.loc["B", "last_touch"] == pytest.approx(4 / 6)
    assert t.loc["A", "linear"] == pytest.approx(4 / 6)
    for m in ("first_touch", "last_touch", "linear", "markov", "shapley"):
        assert t[m].sum() == pytest.approx(1.0)
    assert (t["markov_low"] <= t["markov"] + 1e-12).all()
    assert (t["shapley_high"] >= t["shapley"] - 1e-12).all()
    again = attribute(PathCounts(SMALL, 7), n_boot=50, seed=1).table()
    pd.testing.assert_frame_equal(t, again)  # seeded


def test_sessionizing_matches_pandas(tmp_path: Path) -> None:
    ts = pd.Timestamp("2025-01-01", tz="UTC")
    rows = [  # customer, hours, channel, event, stage
        ("C1", 0, "social", "social_click", "awareness"),
        ("C1", 1, "web", "visit", "discovery"),
        ("C1", 2, "web", "product_view", "discovery"),
        ("C1", 3, "app", "purchase", "purchase"),  # converts, ends the journey
        ("C1", 4, "app", "visit", "discovery"),  # new journey, never converts
        ("C1", 400, "email", "email_open", "awareness"),  # > 7 days later: another journey
        ("C2", 0, "store", "visit", "discovery"),
        ("C2", 1, "store", "delivery_update", "delivery"),  # not a pre-purchase touch
    ]
    ev = pd.DataFrame(rows, columns=["customer_id", "h", "channel", "event", "stage"])
    ev["ts"] = ts + pd.to_timedelta(ev.pop("h"), unit="h")
    ev.to_parquet(tmp_path / "events.parquet")
    from cxanalysis.data import open_source

    paths = journey_paths(open_source(tmp_path)).frame.set_index("path")
    assert paths["journeys"].to_dict() == {"social > web > app": 1, "app": 1, "email": 1,
                                           "store": 1}
    assert paths["conversions"].to_dict() == {"social > web > app": 1, "app": 0, "email": 0,
                                              "store": 0}


def test_demo_world_channel_roles(world, world_path: Path) -> None:
    roles = json.loads((world_path / "truth" / "truth.json").read_text())["channel_roles"]
    res = attribute(journey_paths(world), n_boot=0).table()
    for c in roles["introducers"]:
        assert res.loc[c, "first_touch"] > res.loc[c, "last_touch"] + 0.1, c
    for c in ("web", "store"):
        assert res.loc[c, "last_touch"] > res.loc[c, "first_touch"], c
    # the Markov removal effect ranks the closers above the introducers
    mk = res["markov"]
    assert min(mk["web"], mk["app"]) > max(mk[c] for c in roles["introducers"])
