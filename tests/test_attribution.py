"""Attribution against hand-solved chains, simulation and brute-force Shapley values."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxanalysis.attribution import (
    METHODS,
    attribute,
    markov_shares,
    shapley_shares,
    suppression_mask,
)
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
        """Conversion rate of the journeys whose channels are all in s (0 if none)."""
        conv = sum(c for js, c in zip(sets, frame["conversions"], strict=True) if js <= s)
        jour = sum(n for js, n in zip(sets, frame["journeys"], strict=True) if js <= s)
        return conv / jour if jour else 0.0

    phi = np.zeros(len(chans))
    for order in itertools.permutations(chans):
        seen: set[str] = set()
        for c in order:
            phi[chans.index(c)] += v(seen | {c}) - v(seen)
            seen.add(c)
    return phi / math.factorial(len(chans)) / v(set(chans))


def test_shapley_against_brute_force() -> None:
    # by hand: v(A) = 2/4, v(B) = 0/2, v(AB) = 6/10; phi_A = (.5 + .6) / 2 = .55,
    # phi_B = (0 + .1) / 2 = .05; shares of v(AB) = .6
    assert shapley_shares(SMALL, ["A", "B"]) == pytest.approx([11 / 12, 1 / 12], rel=1e-12)
    rng = np.random.default_rng(0)
    chans = ["A", "B", "C", "D"]
    paths = [" > ".join(rng.permutation(chans)[: rng.integers(1, 5)]) for _ in range(25)]
    frame = pd.DataFrame({"path": paths, "journeys": rng.integers(10, 30, len(paths)),
                          "conversions": rng.integers(0, 10, len(paths))})
    frame = frame.groupby("path", as_index=False).sum()
    got = shapley_shares(frame, chans)
    assert got == pytest.approx(_brute_force_shapley(frame, chans), rel=1e-10)
    assert got.sum() == pytest.approx(1.0)


def test_heuristics_and_bootstrap_on_small_paths() -> None:
    res = attribute(PathCounts(SMALL, 7), n_boot=50, seed=1, min_group_size=1)
    t = res.table()
    # conversions: A (2) -> A; A > B (4): first A, last B, linear 2/2
    assert t.loc["A", "first_touch"] == pytest.approx(1.0)
    assert t.loc["B", "last_touch"] == pytest.approx(4 / 6)
    assert t.loc["A", "linear"] == pytest.approx(4 / 6)
    for m in ("first_touch", "last_touch", "linear", "markov", "shapley"):
        assert t[m].sum() == pytest.approx(1.0)
    assert (t["markov_low"] <= t["markov"] + 1e-12).all()
    assert (t["shapley_high"] >= t["shapley"] - 1e-12).all()
    again = attribute(PathCounts(SMALL, 7, min_group_size=1), n_boot=50, seed=1).table()
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
    # the purchase (in app) is the outcome, not a touch: the converted path ends in web
    assert paths["journeys"].to_dict() == {"social > web": 1, "app": 1, "email": 1,
                                           "store": 1}
    assert paths["conversions"].to_dict() == {"social > web": 1, "app": 0, "email": 0,
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


def _tied_touches(seed: int = 7) -> pd.DataFrame:
    """Touches of 300 customers on a coarse clock (many exact ties between channels, and
    purchases tied with touches)."""
    rng = np.random.default_rng(seed)
    n = 3000
    ev = pd.DataFrame({"customer_id": [f"C{i:03d}" for i in rng.integers(0, 300, n)],
                       "h": rng.integers(0, 6, n),
                       "channel": rng.choice(["web", "app", "email", "store"], n)})
    ev["event"] = np.where(rng.random(n) < 0.15, "purchase", "visit")
    ev["stage"] = np.where(ev["event"] == "purchase", "purchase", "discovery")
    ev["ts"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(ev.pop("h"), unit="h")
    return ev


def test_journeys_tie_break_shuffled_rows_identical() -> None:
    """Issue 11 item 4: touches tied on time are ordered by (ts, is_conv, channel, event), so
    the row order of the input changes neither the paths nor the attribution."""
    import ibis

    from cxanalysis.attribution import markov_shares

    ev = _tied_touches()
    con = ibis.duckdb.connect()
    frames, shares = [], []
    for seed in range(4):
        shuffled = ev.sample(frac=1, random_state=seed).reset_index(drop=True)
        con.con.register(f"ev{seed}", shuffled)
        paths = journey_paths(con.table(f"ev{seed}"))
        frames.append(paths.frame.sort_values("path").reset_index(drop=True))
        shares.append(markov_shares(paths.frame.sort_values("path"), paths.channels)[1])
    for f, s in zip(frames[1:], shares[1:], strict=True):
        pd.testing.assert_frame_equal(f, frames[0])
        assert np.array_equal(s, shares[0])
    # the tie-break itself, by hand: at one instant web and app, then a purchase in store
    hand = pd.DataFrame({"customer_id": "X", "channel": ["web", "store", "app"],
                         "event": ["visit", "purchase", "visit"],
                         "stage": ["discovery", "purchase", "discovery"],
                         "ts": pd.Timestamp("2025-01-01", tz="UTC")})
    con.con.register("hand", hand)
    got = journey_paths(con.table("hand")).frame
    # (the purchase in store is the outcome, not a touch: issue 16 item 4)
    assert got[["path", "conversions"]].values.tolist() == [["app > web", 1]]


def test_stage_durations_never_negative_hand_computed(world) -> None:
    """Issue 11 item 3: time in a stage runs from the journey's first event of the stage to
    its first event of a later stage at or after it; a later stage seen before entering the
    stage (which gave negative hours) does not count as moving on."""
    import ibis

    from cxanalysis.journeys import stage_durations

    rows = [  # customer, hours, channel, stage
        ("C1", 0, "email", "retention"),  # a loyalty touch before the purchase
        ("C1", 1, "social", "awareness"),
        ("C1", 3, "web", "discovery"),
        ("C1", 4, "web", "purchase"),
        ("C1", 10, "email", "delivery"),  # old definition: 0 - 10 = -10 h
        ("C1", 20, "app", "retention"),
        ("C2", 0, "social", "awareness"),
        ("C2", 0, "email", "awareness"),  # tie: the stage's channel is "email"
        ("C2", 5, "web", "consideration"),
        ("C2", 6, "app", "discovery"),  # discovery after consideration: old -1 h
        ("C2", 8, "store", "purchase"),
        ("C3", 0, "web", "awareness"),
        ("C3", 200, "web", "discovery"),  # > 7 days later: a new journey, no stage time
    ]
    ev = pd.DataFrame(rows, columns=["customer_id", "h", "channel", "stage"])
    ev["event"] = ev["stage"] + "_event"
    ev["ts"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(ev.pop("h"), unit="h")
    con = ibis.duckdb.connect()
    for seed in (0, 1):  # and row order does not matter
        con.con.register(f"st{seed}", ev.sample(frac=1, random_state=seed))
        got = stage_durations(con.table(f"st{seed}"), min_group_size=1).table()
        got = {(r.stage, r.group): r.median_hours for r in got.itertuples()}
        assert got == pytest.approx({
            ("awareness", "email"): 5.0, ("awareness", "social"): 2.0,
            ("discovery", "app"): 2.0, ("discovery", "web"): 1.0,
            ("consideration", "web"): 3.0, ("purchase", "web"): 6.0,
            ("delivery", "email"): 10.0}, abs=1e-12), seed
    demo = stage_durations(world).table()
    shown = demo[~demo["suppressed"]]
    assert len(shown) > 10 and demo.loc[demo["suppressed"], "median_hours"].isna().all()
    assert (shown["median_hours"] >= 0).all() and (shown["p90_hours"] >= 0).all()


def test_pathcounts_plot_summary_honour_min_group_size() -> None:
    """Issue 11 item 11: the path summary and plot show what the notebook's
    min_group_size allows, not always groups of 10."""
    import matplotlib

    matplotlib.use("Agg")
    frame = pd.DataFrame({"path": ["web", "app > web", "email"], "journeys": [40, 6, 3],
                          "conversions": [10, 3, 1]})

    def plotted(p: PathCounts, **kw) -> list[str]:
        ax = p.plot(**kw)
        labels = [t.get_text() for t in ax.get_yticklabels()] if ax.patches else []
        matplotlib.pyplot.close(ax.figure)
        return labels

    strict = PathCounts(frame, 7, min_group_size=50)
    assert strict.summary().endswith("no path is followed by 50 or more journeys.")
    assert plotted(strict) == []
    # one suppression (issue 13): rows kept, figures missing, flagged
    assert strict.table()["suppressed"].all() and strict.table()["journeys"].isna().all()
    assert strict.table()["path"].tolist() == ["web", "app > web", "email"]
    loose = PathCounts(frame, 7, min_group_size=5)
    assert sorted(plotted(loose)) == ["app > web", "web"]  # "email" (3 journeys) left out
    assert "most common is web (40 journeys, 25% convert)" in loose.summary()
    comb = loose.combinations()
    assert comb["channels"].tolist() == ["web", "app + web", "email"]  # suppressed last
    assert comb["suppressed"].tolist() == [False, False, True]
    assert comb["journeys"].iloc[:2].tolist() == [40, 6] and pd.isna(comb["journeys"].iloc[2])
    assert comb["conversion"].iloc[:2].tolist() == [0.25, 0.5]
    assert sorted(plotted(PathCounts(frame, 7))) == ["web"]  # default 10
    assert sorted(plotted(strict, min_group_size=2)) == ["app > web", "email", "web"]
    # transition rows of states left fewer than min_group_size times are blank: email is
    # left 3 times, app 6 times, (start) 49 and web 46 times; 5 target states per row
    for p, rows in ((loose, 3), (PathCounts(frame, 7), 2)):
        ax = p.plot_transitions()
        assert len(ax.texts) == 5 * rows
        matplotlib.pyplot.close(ax.figure)


def test_journey_paths_pass_min_group_size(world) -> None:
    paths = journey_paths(world, min_group_size=3)
    assert paths.min_group_size == 3
    assert paths.table(top=None)["journeys"].min() >= 3
    assert (paths.table(top=None)["journeys"] < 10).any()


def test_attribution_suppressed_below_min_group_size() -> None:
    """Issue 11 item 9: a channel credited by fewer than min_group_size customers is
    suppressed under every method, in the table, the intervals and as_dict (results.json),
    with the next smallest credit too so that 1 minus the others does not give it away."""
    frame = pd.DataFrame({"path": ["web", "app > web", "chat > web", "email > app", "app"],
                          "journeys": [100, 40, 5, 30, 20],
                          "conversions": [50, 20, 3, 12, 0]})
    full = attribute(PathCounts(frame, 7), n_boot=30, seed=2, min_group_size=1)
    res = attribute(PathCounts(frame, 7), n_boot=30, seed=2)  # default 10
    t, f = res.table(), full.table()
    # customers (here journeys) behind each credit, by hand
    assert res.support.loc["chat"].tolist() == [3, 0, 3, 3, 3]
    assert res.support.loc["email"].tolist() == [12, 0, 12, 12, 12]
    assert res.support.loc["web"].tolist() == [50, 73, 73, 73, 73]
    # chat (3) is suppressed everywhere it is credited; email (12, the next smallest) too,
    # since 3 alone would be 1 minus the others; a credit of 0 (last touch) stays 0
    expected = {"chat": [True, False, True, True, True], "email": [True, False, True, True,
                                                                   True]}
    for c, row in expected.items():
        assert res.suppressed.loc[c, list(METHODS)].tolist() == row, c
        assert t.loc[c, "last_touch"] == 0.0
        assert t.loc[c, ["first_touch", "linear", "markov", "shapley", "markov_low",
                         "markov_high", "shapley_low", "shapley_high",
                         "removal_effect"]].isna().all(), c
        assert all(res.as_dict()[m][c] is None for m in METHODS if m != "last_touch")
    assert not res.suppressed.loc[["app", "web"]].to_numpy().any()
    assert t["suppressed"].to_dict() == {"app": False, "chat": True, "email": True,
                                         "web": False}
    # what is shown is unchanged
    shown = ["app", "web"]
    pd.testing.assert_frame_equal(t.loc[shown, list(METHODS)], f.loc[shown, list(METHODS)])
    assert res.as_dict()["markov"]["web"] == pytest.approx(f.loc["web", "markov"], rel=1e-15)
    assert res.summary().startswith("Credit, not incrementality: by Markov removal effect, "
                                    "web")


def test_attribution_suppression_counts_customers_not_journeys(tmp_path: Path) -> None:
    """One customer with 12 converted chat journeys is one customer: suppressed."""
    from cxanalysis.data import open_source

    ts = pd.Timestamp("2025-01-01", tz="UTC")
    rows = [(f"W{i}", 0, "web", "visit") for i in range(15)]
    rows += [(f"W{i}", 1, "web", "purchase") for i in range(15)]
    for j in range(12):
        rows += [("X", 10 * j, "chat", "visit"), ("X", 10 * j + 1, "web", "purchase")]
    ev = pd.DataFrame(rows, columns=["customer_id", "h", "channel", "event"])
    ev["stage"] = np.where(ev["event"] == "purchase", "purchase", "discovery")
    ev["ts"] = ts + pd.to_timedelta(ev.pop("h"), unit="h")
    ev.to_parquet(tmp_path / "events.parquet")
    paths = journey_paths(open_source(tmp_path))
    # the purchase (web) is not a touch: the chat journeys' path is "chat"
    assert paths.frame.set_index("path")["conversions"].to_dict() == {"chat": 12,
                                                                      "web": 15}
    assert paths.support.to_dict("index") == {
        "chat": {"first_touch": 1, "last_touch": 1, "any_touch": 1},
        "web": {"first_touch": 15, "last_touch": 15, "any_touch": 15}}
    t = attribute(paths, n_boot=0).table()
    # chat's credit comes from 1 customer; with two channels, web's share would reveal it
    # (now under every method: chat also closes its converting paths)
    assert t[list(METHODS)].isna().all().all()


def test_suppression_mask_secondary() -> None:
    sup = pd.DataFrame({"m": [0, 4, 5, 30, 100]}, index=list("abcde"))
    assert suppression_mask(sup, 10)["m"].tolist() == [False, True, True, True, False]
    assert suppression_mask(sup, 5)["m"].tolist() == [False, True, True, False, False]
    assert suppression_mask(sup, 1)["m"].tolist() == [False] * 5


def test_shapley_sees_non_converting_journeys() -> None:
    """Issue 16 item 4: with v(S) = conversions, Shapley is an equal split of each converting
    path and ignores journeys that did not convert. With conversion rates, a channel whose
    journeys convert no better than those without it (an inert channel, C) gets ~0 even
    though it sits on half of the converting paths."""
    frame = pd.DataFrame({"path": ["A", "A > C", "B", "B > C"],
                          "journeys": [100, 100, 100, 100],
                          "conversions": [30, 30, 10, 10]})
    got = shapley_shares(frame, ["A", "B", "C"])
    assert got[2] == pytest.approx(0.0, abs=1e-12)
    assert got == pytest.approx(_brute_force_shapley(frame, ["A", "B", "C"]), rel=1e-10)
    # the equal split of converting paths would give C a quarter of the conversions
    split_c = (30 / 2 + 10 / 2) / 80
    assert split_c == pytest.approx(0.25)


def test_converting_paths_can_end_in_any_channel(tmp_path: Path) -> None:
    """Issue 16 item 4: the conversion event (and, by default, the checkout of the purchase
    stage) is not a touch, so a converted journey whose last persuasion touch was an email
    ends in email; a conversion with no touch before it is '(no touch)' and not
    attributed."""
    ts = pd.Timestamp("2025-01-01", tz="UTC")
    rows = [("C1", 0, "web", "visit", "discovery"),
            ("C1", 1, "email", "email_click", "awareness"),
            ("C1", 2, "web", "checkout", "purchase"),
            ("C1", 3, "web", "purchase", "purchase"),
            ("C1", 4, "web", "purchase", "purchase")]  # a second purchase, no touch before
    ev = pd.DataFrame(rows, columns=["customer_id", "h", "channel", "event", "stage"])
    ev["ts"] = ts + pd.to_timedelta(ev.pop("h"), unit="h")
    ev.to_parquet(tmp_path / "events.parquet")
    from cxanalysis.data import open_source

    paths = journey_paths(open_source(tmp_path), min_group_size=1)
    assert paths.frame.set_index("path")["conversions"].to_dict() == {"web > email": 1,
                                                                      "(no touch)": 1}
    res = attribute(paths, n_boot=0, min_group_size=1)
    assert res.table().loc["email", "last_touch"] == pytest.approx(1.0)
    assert res.untouched == 1 and "1 conversions had no touch" in res.summary()
    assert "Credit, not incrementality" in res.summary()


def test_bootstrap_resamples_customers_not_journeys() -> None:
    """Issue 16 item 4: ten customers, each with 30 converting journeys on one channel
    (five email, five web). Resampling customers, the email share varies like a binomial
    of 10 customers (95% interval about 0.2-0.8); resampling the 300 journeys would give
    about 0.44-0.56."""
    frame = pd.DataFrame({"path": ["email", "web"], "journeys": [150, 150],
                          "conversions": [150, 150]})
    by_customer = pd.DataFrame({"customer": range(10),
                                "path": ["email"] * 5 + ["web"] * 5,
                                "journeys": 30, "conversions": 30})
    with_customers = PathCounts(frame, 7, 1, by_customer=by_customer)
    res = attribute(with_customers, n_boot=400, seed=4, min_group_size=1)
    assert res.resampled == "customers"
    iv = res.table().loc["email"]
    assert iv.markov_low <= 0.3 and iv.markov_high >= 0.7
    journeys_only = attribute(PathCounts(frame, 7, 1), n_boot=400, seed=4, min_group_size=1)
    assert journeys_only.resampled == "journeys"
    jv = journeys_only.table().loc["email"]
    assert jv.markov_high - jv.markov_low < 0.15


def test_demo_world_inert_channels_get_little_shapley_credit(world) -> None:
    """Issue 16 item 4: in the generator, email and social touches do not change
    conversion. Path credit (Markov) still gives them a sizeable share — credit is not
    incrementality — while the conversion-rate Shapley value leaves them near zero."""
    res = attribute(journey_paths(world), n_boot=0).table()
    for c in ("email", "social"):
        assert res.loc[c, "markov"] > 0.1, c
        assert abs(res.loc[c, "shapley"]) < 0.05, c
