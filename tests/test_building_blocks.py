"""The shared building blocks of issue 13 item 2: the day window, the labels type, the
interval/test helpers of ``stats`` and the one small-group suppression."""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from cxanalysis import stats
from cxanalysis.breakdowns import Breakdown
from cxanalysis.comparison import conversion_by_group, group_differences
from cxanalysis.data import UNKNOWN, CXDataError, DayWindow, Labels, between_days, in_days
from cxanalysis.errors import ParameterError
from cxanalysis.privacy import suppress_small_groups

_CON = ibis.duckdb.connect()


def _table(name: str, df: pd.DataFrame) -> ibis.Table:
    _CON.con.register(name, df)
    return _CON.table(name)


# ------------------------------------------------------------------------- day window


def test_day_window_includes_the_whole_end_day_and_nothing_after() -> None:
    ts = pd.to_datetime(["2025-02-28 23:59:59.999999", "2025-03-01 00:00:00",
                         "2025-03-31 23:59:59.999999", "2025-04-01 00:00:00", None], utc=True,
                        format="ISO8601")
    t = _table("win", pd.DataFrame({"i": range(5), "ts": ts, "at": ts}))
    assert sorted(between_days(t, "2025-03-01", "2025-03-31").i.execute()) == [1, 2]
    assert sorted(between_days(t, DayWindow("2025-03-01", None)).i.execute()) == [1, 2, 3]
    assert sorted(between_days(t, None, "2025-03-31").i.execute()) == [0, 1, 2]
    # an open window returns the table itself (rows without a time kept)
    assert between_days(t, None, None) is t and between_days(t).count().execute() == 5
    # any time column
    assert sorted(between_days(t, "2025-03-01", "2025-03-01", column="at").i.execute()) == [1]
    # in_days is the same predicate
    got = t.filter(in_days(t.ts, "2025-03-01", "2025-03-31")).i.execute()
    assert sorted(got) == [1, 2]
    w = DayWindow("2025-03-01", "2025-03-31")
    assert w.lower == pd.Timestamp("2025-03-01", tz="UTC")
    assert w.upper == pd.Timestamp("2025-04-01", tz="UTC")
    assert DayWindow.of(("2025-03-01", "2025-03-31")) == w and DayWindow.of(w) is w
    assert DayWindow.of(None).is_open


def test_day_window_bad_bounds_are_parameter_errors() -> None:
    with pytest.raises(ParameterError, match="before start"):
        DayWindow("2025-03-02", "2025-03-01")
    with pytest.raises(ParameterError, match="ISO dates"):
        DayWindow("not a date", None)
    DayWindow("2025-03-01", "2025-03-01")  # one day is fine
    assert not issubclass(ParameterError, CXDataError)


# ----------------------------------------------------------------------------- labels


def test_labels_of_every_shape_is_the_same_grouping() -> None:
    df = pd.DataFrame({"customer_id": ["C1", "C2", "C3"], "persona": ["a", "b", "a"]})
    series = df.set_index("customer_id")["persona"]
    wide = df.assign(other=1)
    shapes = [Labels.of(df), Labels.of(series), Labels.of(ibis.memtable(df)),
              Labels.of(wide, "persona"), Labels.of(Labels.of(df))]
    for lab in shapes:
        assert lab.name == "persona"
        got = lab.series().sort_index()
        assert got.to_dict() == {"C1": "a", "C2": "b", "C3": "a"}
        assert got.index.name == "customer_id" and got.name == "persona"
    assert Labels.of(series.rename(None), "tier").name == "tier"
    with pytest.raises(ParameterError, match="name the label column"):
        Labels.of(wide)
    with pytest.raises(ParameterError, match="labels need customer_id"):
        Labels.of(df, "segment")
    with pytest.raises(ParameterError, match="labels must be"):
        Labels.of(["a", "b"])  # type: ignore[arg-type]


def test_labels_join_keeps_every_row_and_names_the_missing_label_unknown() -> None:
    units = _table("units", pd.DataFrame({"customer_id": ["C1", "C2", "C9"], "x": [1, 2, 3]}))
    lab = Labels.of(pd.Series({"C1": "a", "C2": "b", "C7": "c"}, name="persona"))
    got = lab.join(units).order_by("customer_id").execute()
    assert got[["customer_id", "x", "group"]].values.tolist() == [
        ["C1", 1, "a"], ["C2", 2, "b"], ["C9", 3, UNKNOWN]]
    assert UNKNOWN == "(unknown)"
    # a missing label (None / NaN) is unknown too, in every shape, never the text "nan"
    s = pd.Series({"C1": "a", "C2": np.nan, "C9": None}, name="persona")
    for lab in (Labels.of(s), Labels.of(s.rename_axis("customer_id").reset_index())):
        got = lab.join(units).order_by("customer_id").execute()
        assert got["group"].tolist() == ["a", UNKNOWN, UNKNOWN]


# ------------------------------------------------------------------- stats helpers


def test_wilson_two_proportion_and_nps_against_statsmodels() -> None:
    x, n = np.array([0, 3, 7, 50]), np.array([10, 3, 30, 50])
    lo, hi = stats.wilson_interval(x, n, alpha=0.1)
    for xi, ni, a, b in zip(x, n, lo, hi, strict=True):
        assert (a, b) == pytest.approx(proportion_confint(xi, ni, 0.1, "wilson"), abs=1e-12)
    lo0, hi0 = stats.wilson_interval(0, 0)
    assert np.isnan(lo0) and np.isnan(hi0)
    z, p = stats.two_proportion_z(12, 80, 30, 95)
    assert (z, p) == pytest.approx(proportions_ztest([12, 30], [80, 95]), rel=1e-12)
    assert all(np.isnan(v) for v in stats.two_proportion_z(0, 5, 0, 7))
    assert stats.nps_score(5, 2, 10) == 30.0 and stats.nps_score(0, 4, 4) == -100.0
    with pytest.raises(ValueError):
        stats.nps_score(0, 0, 0)
    # the old homes still give the same functions
    from cxanalysis import funnel, overview

    assert funnel.wilson_interval is stats.wilson_interval
    assert funnel.two_proportion_z is stats.two_proportion_z
    assert overview.nps_score is stats.nps_score
    assert funnel.Breakdown is Breakdown
    with pytest.raises(ParameterError, match="method must be"):
        stats.adjust_pvalues([0.1], "bonferonni")


def test_newcombe_interval_uses_the_shared_wilson_and_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    for xt, nt, xc, nc in ((30, 100, 20, 100), (1, 12, 5, 15), (0, 20, 3, 25)):
        ref = confint_proportions_2indep(xt, nt, xc, nc, method="newcomb", compare="diff")
        assert stats.newcombe_interval(xt, nt, xc, nc) == pytest.approx(ref, abs=1e-12)


# ------------------------------------------------------------------- suppression


def test_one_suppression_masks_rows_and_the_formatter_shows_less_than_n() -> None:
    from cxanalysis.formatting import format_table

    table = pd.DataFrame({"group": ["a", "b"], "customers": [12, 4], "rate": [0.5, 0.25]})
    out = suppress_small_groups(table, "customers", min_group_size=5)
    assert out["suppressed"].tolist() == [False, True]
    assert out["group"].tolist() == ["a", "b"]  # the row stays, its figures do not
    assert pd.isna(out.loc[1, "customers"]) and np.isnan(out.loc[1, "rate"])
    html = format_table(out, min_group_size=5)
    assert html.count("&lt;5") >= 2 and "0.25" not in html and "suppressed" not in html


# ------------------------------------------------- comparison: conversion, differences


def _groups_and_outcomes() -> tuple[pd.Series, pd.DataFrame]:
    rng = np.random.default_rng(7)
    n = 600
    idx = pd.Index([f"C{i:04d}" for i in range(n)], name="customer_id")
    g = pd.Series(rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]), index=idx,
                  name="persona")
    p = g.map({"a": 0.2, "b": 0.35, "c": 0.3})
    out = pd.DataFrame({"converted": (rng.random(n) < p).astype(int),
                        "revenue": rng.gamma(2.0, 10.0, n) * (g == "b").map({True: 1.5,
                                                                           False: 1.0}),
                        "nps": np.where(rng.random(n) < 0.4, rng.integers(0, 11, n), np.nan)},
                       index=idx)
    return g, out


def test_conversion_by_group_against_scipy_and_statsmodels() -> None:
    g, out = _groups_and_outcomes()
    res = conversion_by_group(g, out, "persona", min_group_size=10)
    t = res.table().set_index("group")
    for name, sub in out.groupby(g):
        x, n = int(sub["converted"].sum()), len(sub)
        assert (t.loc[name, "customers"], t.loc[name, "converted"]) == (n, x)
        assert (t.loc[name, "ci_low"], t.loc[name, "ci_high"]) == pytest.approx(
            proportion_confint(x, n, 0.05, "wilson"), abs=1e-12)
    tab = pd.crosstab(g, out["converted"])
    chi2, p, dof, _e = sps.chi2_contingency(tab, correction=False)
    assert (res.chi2, res.p_value, res.dof) == pytest.approx((chi2, p, dof), rel=1e-10)
    pw = res.pairwise.set_index(["group_a", "group_b"])
    raw = []
    for (a, b), row in pw.iterrows():
        xa, na = int(out.converted[g == a].sum()), int((g == a).sum())
        xb, nb = int(out.converted[g == b].sum()), int((g == b).sum())
        ref = proportions_ztest([xa, xb], [na, nb])
        assert (row.z, row.p_value) == pytest.approx(ref, rel=1e-10)
        raw.append(row.p_value)
    holm = multipletests(raw, method="holm")[1]
    assert pw["p_holm"].to_numpy() == pytest.approx(holm, rel=1e-12)
    # the same breakdown from Labels, and unlabelled customers are "(unknown)"
    same = conversion_by_group(Labels.of(g), out, min_group_size=10)
    pd.testing.assert_frame_equal(same.table(), res.table())
    assert same.by == "persona"
    part = conversion_by_group(g.iloc[:-30], out, "persona", min_group_size=10).table()
    assert part.set_index("group").loc[UNKNOWN, "customers"] == 30


def test_conversion_by_group_suppresses_small_groups_and_leaves_them_out_of_tests() -> None:
    g, out = _groups_and_outcomes()
    g = g.copy()
    g.iloc[:5] = "tiny"
    res = conversion_by_group(g, out, "persona", min_group_size=10)
    t = res.table().set_index("group")
    assert bool(t.loc["tiny", "suppressed"]) and pd.isna(t.loc["tiny", "customers"])
    assert "tiny" not in set(res.pairwise.group_a) | set(res.pairwise.group_b)
    big = g != "tiny"
    chi2 = sps.chi2_contingency(pd.crosstab(g[big], out.converted[big]), correction=False)[0]
    assert res.chi2 == pytest.approx(chi2, rel=1e-10)


def test_group_differences_against_scipy() -> None:
    g, out = _groups_and_outcomes()
    got = group_differences(g, out, "persona").set_index("outcome")
    tab = pd.crosstab(g, out["converted"])
    chi2, p, dof, _e = sps.chi2_contingency(tab, correction=False)
    n = len(g)
    conv = got.loc["converted"]
    assert (conv.statistic, conv.p_value, conv.df) == pytest.approx((chi2, p, dof), rel=1e-10)
    # Cramér's V by its formula: sqrt(chi2 / (n (min(r, c) - 1))), a 3 x 2 table
    assert conv.effect_size == pytest.approx(np.sqrt(chi2 / (n * 1)), rel=1e-12)
    for o in ("revenue", "nps"):
        ok = out[o].notna()
        samples = [out.loc[ok & (g == k), o].to_numpy() for k in ("a", "b", "c")]
        h, pk = sps.kruskal(*samples)
        row = got.loc[o]
        assert (row.statistic, row.p_value, row.df) == pytest.approx((h, pk, 2), rel=1e-10)
        assert row.effect_size == pytest.approx(h / (int(ok.sum()) - 1), rel=1e-12)
        assert row.test == "Kruskal-Wallis" and row.effect_measure == "epsilon²"
    # revenue really differs (b is 1.5 times the others); the hand-made truth is found
    assert got.loc["revenue", "p_value"] < 0.01
    # the same from Labels
    same = group_differences(Labels.of(g), out, "persona")
    pd.testing.assert_frame_equal(same, group_differences(g, out, "persona"))
