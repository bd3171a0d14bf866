"""Feedback by touchpoint, comment themes and moments of truth on the demo world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxanalysis import painpoints as pp


def test_feedback_by_touchpoint_matches_pandas(world, world_path: Path) -> None:
    got = pp.feedback_by_touchpoint(world).table().set_index(["event", "channel"])
    fb = pd.read_parquet(world_path / "feedback.parquet")
    for (event, channel), g in fb.groupby(["event", "channel"]):
        if g.customer_id.nunique() < 10:  # suppressed (min_group_size)
            assert np.isnan(got.loc[(event, channel), "nps"])
            continue
        nps = g.nps.dropna()
        expected = 100 * ((nps >= 9).mean() - (nps <= 6).mean())
        assert got.loc[(event, channel), "nps"] == pytest.approx(expected)
        assert got.loc[(event, channel), "answers"] == len(g)


def test_comment_themes_recover_the_planted_themes(world, world_path: Path) -> None:
    planted = json.loads((world_path / "truth" / "truth.json").read_text())["themes"]
    # an explicit number still works: the number of planted themes
    themes = pp.comment_themes(world, n_themes=len(planted), seed=0)
    words = " | ".join(themes.words["top_words"])
    assert "late" in words and "checkout" in words
    assert "@" not in words and "alex" not in words.lower()  # redacted before modelling
    # comments about checkout are dominated by one theme, about the app checkout
    shown = themes.table()[~themes.table()["suppressed"]]
    chk = shown[shown.event == "checkout"].sort_values("share").iloc[-1]
    top = themes.words.set_index("theme").loc[chk.theme, "top_words"]
    assert chk.share > 0.8 and "checkout" in top
    again = pp.comment_themes(world, n_themes=len(planted), seed=0)
    pd.testing.assert_frame_equal(themes.words, again.words)  # seeded


def test_moments_of_truth_finds_loyalty_for_retention(world) -> None:
    mot = pp.moments_of_truth(world, ("2025-01-01", "2025-09-30"),
                              ("2025-10-01", "2025-12-31"))
    assert mot.auc["conversion"] > 0.6 and mot.auc["retention"] > 0.6
    assert mot.top("retention", 1).touchpoint.iloc[0] == "loyalty_login"


def _feedback_source(tmp_path: Path, comments: list[tuple[str, str, str]]):
    from cxanalysis.data import open_source

    fb = pd.DataFrame(comments, columns=["customer_id", "event", "comment"])
    fb["ts"] = pd.Timestamp("2025-03-01", tz="UTC") + pd.to_timedelta(range(len(fb)), unit="h")
    fb["channel"] = "web"
    fb["nps"] = 5
    fb.to_parquet(tmp_path / "feedback.parquet")
    return open_source(tmp_path)


def test_comment_themes_terms_need_min_group_size_customers(tmp_path: Path) -> None:
    """Issue 11 item 10: a theme term may appear only if at least min_group_size distinct
    customers used it. Two customers repeating their name and an obfuscated address (which
    the redaction does not catch) six times each must not reach the theme words."""
    rows = []
    for i in range(24):
        rows.append((f"D{i}", "delivery", "parcel arrived late, delivery was slow"))
        rows.append((f"K{i}", "checkout", "checkout payment failed at the voucher step"))
    for cust in ("P1", "P2"):
        for _ in range(6):
            rows.append((cust, "delivery", "Jane Doe here, parcel arrived late"))
            rows.append((cust, "checkout", "jane_doe99 at example dot com, checkout failed"))
    src = _feedback_source(tmp_path, rows)
    themes = pp.comment_themes(src, n_themes=2, seed=0, top_words=1000)
    vocab = {w for ws in themes.words["top_words"] for w in ws.split(", ")}
    # every term of the model was used by at least 10 customers (the D and K customers)
    assert {"parcel", "late", "checkout", "voucher", "payment failed"} <= vocab
    leaks = {w for w in vocab if any(x in w for x in ("jane", "doe", "example", "dot"))}
    assert leaks == set()
    # with a threshold of 2 customers the same words do get in: the rule is what stops them
    loose = pp.comment_themes(src, n_themes=2, seed=0, top_words=1000, min_group_size=2)
    assert {"jane", "doe", "example dot"} <= {w for ws in loose.words["top_words"]
                                              for w in ws.split(", ")}
    # theme counts are suppressed by distinct customers, not comments
    t = themes.table()
    assert (t["customers"] >= 10).all() and set(t["event"]) == {"checkout", "delivery"}


def test_terms_used_by_customers_hand_case() -> None:
    from cxanalysis.privacy import terms_used_by

    docs = [{"a", "b"}, {"a"}, {"a", "c"}, {"b"}]
    who = ["x", "y", "x", "x"]
    assert terms_used_by(docs, who, 2) == {"a"}
    assert terms_used_by(docs, who, 1) == {"a", "b", "c"}


# ------------------------------------------------ persona-adjusted pain points (issue 16 #2)

def _world(cells: dict[tuple[str, str], tuple[int, int]]):
    """A funnel a -> b: per (persona, channel), (customers, how many stop at a). Every
    customer does a at t=0 in the channel and, unless they stop, b one second later; a
    filler event a day later closes every window. Returns (events table, labels)."""
    import ibis

    rows, labels, i = [], [], 0
    t0 = pd.Timestamp("2025-01-01", tz="UTC")
    for (persona, channel), (n, stop) in cells.items():
        for j in range(n):
            cid = f"c{i:04d}"
            i += 1
            labels.append((cid, persona))
            rows.append((cid, t0, "a", channel))
            if j >= stop:
                rows.append((cid, t0 + pd.Timedelta(seconds=1), "b", channel))
    rows.append(("zz", t0 + pd.Timedelta(days=1), "x", "web"))
    ev = pd.DataFrame(rows, columns=["customer_id", "ts", "event", "channel"])
    con = ibis.duckdb.connect()
    return con.create_table("events", ev), pd.DataFrame(labels, columns=["customer_id",
                                                                          "persona"])


def test_confounded_channel_is_flagged_raw_but_not_after_persona_adjustment() -> None:
    """Issue 16 item 2: persona P1 drops a lot and mostly uses web; within each persona web
    and app drop alike (50% / 10%), so the raw comparison blames web and the adjusted one
    does not."""
    from cxanalysis.funnel import funnel

    ev, labels = _world({("P1", "web"): (160, 80), ("P1", "app"): (40, 20),
                         ("P2", "web"): (40, 4), ("P2", "app"): (160, 16)})
    adj = pp.adjusted_dropoff(funnel(ev, ["a", "b"], window_seconds=60), labels, "persona",
                              min_group_size=10)
    web = adj.table().set_index("channel").loc["web"]
    assert web.rate == pytest.approx(84 / 200) and web.rest_rate == pytest.approx(36 / 200)
    # rest re-weighted to web's persona mix: 160 x 50% + 40 x 10% over 200
    assert web.rest_rate_adjusted == pytest.approx((160 * 0.5 + 40 * 0.1) / 200)
    assert web.odds_ratio == pytest.approx(1.0)
    assert bool(web.worse) and not bool(web.worse_adjusted)
    assert adj.flagged.empty
    assert "Explained by who uses the channel" in adj.summary()


def test_real_channel_effect_survives_persona_adjustment() -> None:
    from cxanalysis.funnel import funnel

    ev, labels = _world({("P1", "web"): (100, 60), ("P1", "app"): (100, 30),
                         ("P2", "web"): (100, 30), ("P2", "app"): (100, 10)})
    adj = pp.adjusted_dropoff(funnel(ev, ["a", "b"], window_seconds=60), labels, "persona",
                              min_group_size=10)
    assert adj.flagged["channel"].tolist() == ["web"]
    web = adj.table().set_index("channel").loc["web"]
    # MH odds ratio by hand: sum(a d / n) / sum(b c / n) over the two personas
    r = 60 * 70 / 200 + 30 * 90 / 200
    s = 40 * 30 / 200 + 70 * 10 / 200
    assert web.odds_ratio == pytest.approx(r / s)
    assert "Pain point: a -> b in web" in adj.summary()


def test_mantel_haenszel_matches_statsmodels() -> None:
    from statsmodels.stats.contingency_tables import StratifiedTable

    rng = np.random.default_rng(3)
    for _ in range(20):
        tables = rng.integers(1, 40, size=(4, 2, 2))
        got = pp.mantel_haenszel(tables)
        ref = StratifiedTable(tables.transpose(1, 2, 0).astype(float))
        assert got["odds_ratio"] == pytest.approx(ref.oddsratio_pooled, rel=1e-10)
        lo, hi = ref.oddsratio_pooled_confint(alpha=0.05)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((lo, hi), rel=1e-8)
        test = ref.test_null_odds(correction=False)
        assert got["statistic"] == pytest.approx(test.statistic, rel=1e-10)
        assert got["p_value"] == pytest.approx(test.pvalue, rel=1e-8)
        # one-sided: half the two-sided p in the direction of the excess
        more = (tables[:, 0, 0] - tables[:, 0].sum(1) * tables[:, :, 0].sum(1)
                / tables.sum((1, 2))).sum() > 0
        assert got["p_worse"] == pytest.approx(test.pvalue / 2 if more
                                               else 1 - test.pvalue / 2, rel=1e-8)
    # a stratum with an empty row carries no information
    same = pp.mantel_haenszel(np.array([[[5, 5], [2, 8]], [[0, 0], [3, 3]]]))
    assert same["strata"] == 1 and same["odds_ratio"] == pytest.approx(4.0)


def test_window_sweep_reports_each_window() -> None:
    from cxanalysis.funnel import funnel

    cells = {("P1", "web"): (100, 60), ("P1", "app"): (100, 30),
             ("P2", "web"): (100, 30), ("P2", "app"): (100, 10)}
    ev, labels = _world(cells)
    sweep = pp.window_sweep(ev, ["a", "b"], labels, windows_days=(0.0001, 1),
                            min_group_size=10)
    assert sweep["channel"].tolist() == ["web"]
    assert {"w0.0001d_adjusted", "w1d_adjusted", "w1d_raw"} <= set(sweep.columns)
    assert bool(sweep["survives"].iloc[0])
    assert funnel(ev, ["a", "b"], window_seconds=60).table()["customers"].tolist() == [400,
                                                                                       270]


def test_demo_world_only_the_planted_pain_point_survives_persona_adjustment(world,
                                                                           world_path) -> None:
    """Issue 16 items 2 and 13: on the demo world, cells flagged raw because of who uses
    the channel vanish within the true personas; the planted app checkout stays."""
    import json

    from cxanalysis.funnel import funnel

    truth = json.loads((world_path / "truth" / "truth.json").read_text())["pain_points"][0]
    labels = pd.read_parquet(world_path / "truth" / "personas.parquet")
    res = funnel(world, ["visit", "product_view", "add_to_cart", "checkout", "purchase"])
    adj = pp.adjusted_dropoff(res, labels, "persona")
    f = adj.table()
    assert f["worse"].sum() > f["worse_adjusted"].sum()
    assert [(r.event, r.channel) for r in adj.flagged.itertuples()] == [(truth["step"],
                                                                        truth["channel"])]


# ------------------------------------------------------ moments of truth (issue 16 item 3)

def test_moments_of_truth_merges_near_duplicate_flags() -> None:
    """Two flags equal but for 1% of customers (r ~ 0.98) are merged; the odds ratios and
    intervals of the merged model match an independent fit; VIF matches statsmodels."""
    from sklearn.linear_model import LogisticRegression
    from statsmodels.stats.outliers_influence import variance_inflation_factor

    rng = np.random.default_rng(11)
    n = 4000
    a = rng.random(n) < 0.5
    b = a ^ (rng.random(n) < 0.01)  # a near-duplicate of a
    c = rng.random(n) < 0.3
    logit = -0.5 + 1.0 * a + 0.5 * c
    orders = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int) \
        + (rng.random(n) < 0.2).astype(int)
    flags = pd.DataFrame({"did_a": a, "did_b": b, "did_c": c}).astype(int)
    assert abs(np.corrcoef(a, b)[0, 1]) > 0.9
    mot = pp.fit_moments(flags, orders, seed=0)
    assert mot.merged.to_dict("records")[0]["merged_into_it"] in ("did_a", "did_b")
    conv = mot.table()[mot.table().outcome == "conversion"].set_index("touchpoint")
    assert len(conv) == 2 and any("≈" in t for t in conv.index)
    # an independent unpenalised fit on the same standardised columns
    kept = mot.merged.kept.iloc[0]
    x = flags[[kept, "did_c"]].to_numpy(float)
    x = (x - x.mean(0)) / x.std(0)
    ref = LogisticRegression(C=np.inf, max_iter=5000, tol=1e-10).fit(x, orders >= 1)
    merged_name = next(t for t in conv.index if "≈" in t)
    assert conv.loc[merged_name, "coef"] == pytest.approx(ref.coef_[0][0], rel=1e-4)
    assert conv.loc["did_c", "coef"] == pytest.approx(ref.coef_[0][1], rel=1e-4)
    assert (conv["ci_low"] < conv["odds_ratio"]).all() & (conv["odds_ratio"]
                                                          < conv["ci_high"]).all()
    vif_ref = [variance_inflation_factor(np.column_stack([np.ones(n), x]), i) for i in (1, 2)]
    assert conv["vif"].tolist() == pytest.approx(vif_ref, rel=1e-8)
    text = mot.summary()
    assert "merged" in text and "predicted by" in text and "not effects" in text
    assert "matters more" not in text and "matters more" not in (pp.MomentsOfTruth.__doc__)


def test_moments_of_truth_without_merging_splits_the_signal() -> None:
    """Why the rule: with the duplicate kept (threshold above 1), the two coefficients share
    one signal and the interval of each is far wider than the merged flag's."""
    rng = np.random.default_rng(12)
    n = 4000
    a = rng.random(n) < 0.5
    b = a ^ (rng.random(n) < 0.01)
    orders = (rng.random(n) < np.where(a, 0.6, 0.3)).astype(int)
    flags = pd.DataFrame({"did_a": a, "did_b": b}).astype(int)
    kept = pp.fit_moments(flags, orders, max_abs_corr=1.01).table()
    merged = pp.fit_moments(flags, orders).table()
    kept, merged = kept[kept.outcome == "conversion"], merged[merged.outcome == "conversion"]
    width = np.log(kept["ci_high"] / kept["ci_low"])
    assert len(kept) == 2 and len(merged) == 1
    assert (width > 3 * np.log(merged["ci_high"] / merged["ci_low"]).iloc[0]).all()
    assert (kept["vif"] > 10).all()


def test_demo_world_purchase_and_delivery_update_flags_are_merged(world) -> None:
    mot = pp.moments_of_truth(world, ("2025-01-01", "2025-09-30"),
                              ("2025-10-01", "2025-12-31"))
    m = mot.merged.iloc[0]
    assert {m.kept, m.merged_into_it} == {"purchase", "delivery_update"}
    assert m["corr"] > 0.99


# ---------------------------------------------------------- comment themes (issue 16 item 5)

class _FeedbackOnly:
    """A minimal source: ``table('feedback')`` from a DataFrame."""

    def __init__(self, fb: pd.DataFrame):
        import ibis

        self.con = ibis.duckdb.connect()
        self.con.create_table("feedback", fb)

    def table(self, name: str):
        return self.con.table(name)


def _corpus(seed: int = 0) -> pd.DataFrame:
    """Three themes with disjoint vocabularies; theme 'late' comes from detractors (NPS 2),
    'friendly' from promoters (NPS 10), 'price' half and half (NPS 3 / CSAT 5 only)."""
    rng = np.random.default_rng(seed)
    pools = {"late": ["late", "parcel", "courier", "delayed", "waiting", "tracking",
                      "arrived", "weeks", "missing", "driver", "lost", "depot"],
             "friendly": ["friendly", "staff", "helpful", "smile", "welcoming", "kind",
                          "polite", "patient", "cheerful", "assistant", "caring", "warm"],
             "price": ["price", "expensive", "cheap", "discount", "value", "cost",
                       "money", "pricey", "bargain", "offer", "deal", "coupon"]}
    rows = []
    for t, words in pools.items():
        for i in range(60):
            text = " ".join(rng.choice(words, 5, replace=False))
            nps = {"late": 2.0, "friendly": 10.0}.get(t, 3.0 if i % 2 else np.nan)
            csat = 5.0 if t == "price" and not i % 2 else np.nan
            rows.append({"customer_id": f"{t}{i}", "ts": pd.Timestamp("2025-03-01", tz="UTC"),
                         "event": "delivery", "channel": "web", "nps": nps, "csat": csat,
                         "comment": text, "theme_true": t})
    return pd.DataFrame(rows)


def test_comment_themes_choose_the_number_by_stability_and_split_by_sentiment() -> None:
    fb = _corpus()
    src = _FeedbackOnly(fb.drop(columns="theme_true"))
    themes = pp.comment_themes(src, seed=0, min_group_size=5, candidates=range(2, 6))
    sel = themes.selection
    assert sel["n_themes"].tolist() == [2, 3, 4, 5]
    assert themes.n_themes == 3 and bool(sel.set_index("n_themes").loc[3, "chosen"])
    assert sel.set_index("n_themes").loc[3, "stability"] > 0.95
    # sentiment per theme, against a direct count of the answers
    s = themes.sentiment.set_index("theme")
    w = themes.words.set_index("theme")["top_words"]
    late = next(t for t in w.index if "late" in w[t] or "courier" in w[t])
    kind = next(t for t in w.index if "staff" in w[t] or "friendly" in w[t])
    price = next(t for t in w.index if "price" in w[t] or "cost" in w[t])
    assert s.loc[late, "negative"] == pytest.approx(1.0)
    assert s.loc[kind, "positive"] == pytest.approx(1.0)
    assert (s.loc[price, "negative"], s.loc[price, "positive"]) == pytest.approx((0.5, 0.5))
    assert "Mixed" in themes.summary() and "Mostly negative" in themes.summary()


def test_comment_themes_seed_changes_the_initialisation() -> None:
    """Issue 16 item 5: with init='nndsvda' the seed did nothing; now the same seed gives
    identical themes and different seeds can give different NMF factors; an explicit
    number of themes still works."""
    src = _FeedbackOnly(_corpus().drop(columns="theme_true"))
    a = pp.comment_themes(src, n_themes=3, seed=0, min_group_size=5)
    b = pp.comment_themes(src, n_themes=3, seed=0, min_group_size=5)
    c = pp.comment_themes(src, n_themes=3, seed=1, min_group_size=5)
    assert a.selection is None and a.n_themes == 3
    assert np.array_equal(a.components, b.components)
    assert not np.array_equal(a.components, c.components)
    from sklearn.decomposition._nmf import _initialize_nmf

    x = np.abs(np.random.default_rng(0).normal(size=(30, 12)))
    x[x < 0.8] = 0  # zeros in the SVD start are what the seed fills
    w0, _ = _initialize_nmf(x, 3, init="nndsvdar", random_state=0)
    w1, _ = _initialize_nmf(x, 3, init="nndsvdar", random_state=1)
    assert not np.array_equal(w0, w1)


# ---------------------------------------------- hand-made cases that pin values (issue 13)


def test_feedback_by_touchpoint_hand_made_values_and_suppression(tmp_path: Path) -> None:
    """Per event x channel: answers, NPS by its definition, mean CSAT and effort; a cell
    of fewer customers than min_group_size keeps its row with every figure blank."""
    from cxanalysis.data import open_source

    t = pd.Timestamp("2025-03-01", tz="UTC")
    rows = []
    # checkout x app: 12 customers; nps 6 x 10, 3 x 0, 3 x 9 -> 100 x (9 - 3) / 12 = 50
    for i, n in enumerate([10] * 6 + [0] * 3 + [9] * 3):
        rows.append((f"A{i}", "checkout", "app", n, 2 + (i % 2), 5))
    # visit x web: 10 customers, nps 8 (passives only) -> 0; csat 4; effort 2
    for i in range(10):
        rows.append((f"W{i}", "visit", "web", 8, 4, 2))
    # visit x app: 3 customers (suppressed at 10)
    for i in range(3):
        rows.append((f"S{i}", "visit", "app", 10, 5, 1))
    fb = pd.DataFrame(rows, columns=["customer_id", "event", "channel", "nps", "csat",
                                     "effort"])
    fb["ts"] = t
    fb.to_parquet(tmp_path / "feedback.parquet")
    got = pp.feedback_by_touchpoint(open_source(tmp_path), min_group_size=10).table()
    got = got.set_index(["event", "channel"])
    chk = got.loc[("checkout", "app")]
    assert chk["answers"] == 12 and chk["nps"] == pytest.approx(50.0)
    assert chk["mean_csat"] == pytest.approx(2.5) and chk["mean_effort"] == 5.0
    web = got.loc[("visit", "web")]
    assert web["nps"] == 0.0 and web["mean_csat"] == 4.0 and web["mean_effort"] == 2.0
    small = got.loc[("visit", "app")]
    assert bool(small["suppressed"])
    assert all(pd.isna(small[c]) for c in ("answers", "customers", "nps", "mean_csat"))
    # rows ordered by NPS (suppressed last)
    assert got.index.tolist() == [("visit", "web"), ("checkout", "app"), ("visit", "app")]


def test_sentiment_rule_hand_made() -> None:
    """NPS decides when given (0-6 / 7-8 / 9-10), else CSAT (1-2 / 3 / 4-5), else
    unknown."""
    df = pd.DataFrame({"nps": [0, 6, 7, 8, 9, 10, np.nan, np.nan, np.nan, np.nan, 9],
                       "csat": [5, 5, 1, 1, 1, 1, 1, 3, 4, np.nan, 2]})
    assert pp._sentiment(df).tolist() == [
        "negative", "negative", "neutral", "neutral", "positive", "positive",
        "negative", "neutral", "positive", "unknown", "positive"]


def test_fit_moments_odds_ratios_match_statsmodels_on_standardised_flags() -> None:
    """Odds ratios per SD and their Wald intervals: the same as a Logit fitted directly
    on the standardised flags; VIF is 1 / (1 - R^2) of each flag on the others."""
    import statsmodels.api as sm

    rng = np.random.default_rng(11)
    n = 2000
    x = pd.DataFrame({"email": rng.random(n) < 0.4, "app": rng.random(n) < 0.3,
                      "store": rng.random(n) < 0.2}).astype(int)
    logit = -1.0 + 1.2 * x["app"] - 0.8 * x["store"]
    orders = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int) \
        + (rng.random(n) < 0.3 + 0.2 * x["app"] - 0.1 * x["store"]).astype(int)
    res = pp.fit_moments(x, orders, seed=0)
    z = (x - x.mean()) / x.std(ddof=0)
    for outcome, y in (("conversion", orders >= 1), ("retention", orders >= 2)):
        ref = sm.Logit(y.astype(int).to_numpy(), sm.add_constant(z.to_numpy())).fit(disp=0)
        ci = np.exp(np.asarray(ref.conf_int(0.05))[1:])
        got = res.table()[res.table().outcome == outcome].set_index("touchpoint")
        for i, t in enumerate(x.columns):
            assert got.loc[t, "odds_ratio"] == pytest.approx(np.exp(ref.params[i + 1]),
                                                             rel=1e-6)
            assert (got.loc[t, "ci_low"], got.loc[t, "ci_high"]) == pytest.approx(
                tuple(ci[i]), rel=1e-6)
            assert got.loc[t, "p_value"] == pytest.approx(ref.pvalues[i + 1], rel=1e-5)
            assert got.loc[t, "share_doing"] == pytest.approx(x[t].mean())
            others = z.drop(columns=t).to_numpy()
            r2 = sm.OLS(z[t].to_numpy(), sm.add_constant(others)).fit().rsquared
            assert got.loc[t, "vif"] == pytest.approx(1 / (1 - r2), rel=1e-8)
    top = res.top("conversion", 1).touchpoint.iloc[0]
    assert top == "app"  # the planted strongest association
    assert set(res.auc) == {"conversion", "retention"}


def test_comment_theme_counts_add_up_and_small_cells_are_suppressed(world) -> None:
    """Theme counts per touchpoint: shares are each cell's comments over the touchpoint's
    comments; cells of fewer than min_group_size customers keep their row, blank."""
    themes = pp.comment_themes(world, n_themes=5, seed=0, min_group_size=10)
    c = themes.table()
    assert {"suppressed", "comments", "customers", "share"} <= set(c.columns)
    shown = c[~c["suppressed"]]
    assert (shown["customers"] >= 10).all()
    assert c.loc[c["suppressed"], ["comments", "customers", "share"]].isna().all().all()
    # re-derive the shares of shown cells: comments / all comments about the touchpoint
    big = pp.comment_themes(world, n_themes=5, seed=0, min_group_size=1).table()
    per_event = big.groupby("event")["comments"].sum()
    assert int(per_event.sum()) == themes.n_comments
    for r in shown.itertuples():
        assert r.share == pytest.approx(r.comments / per_event[r.event])
    # theme sentiment shares of each theme sum to 1
    s = themes.sentiment.dropna(subset=["negative"])
    total = s[["negative", "neutral", "positive", "unknown"]].sum(axis=1)
    assert total.to_numpy() == pytest.approx(np.ones(len(s)))


def test_moments_of_truth_drops_flags_almost_everyone_shares() -> None:
    """Regression (calibrated demo world, issue 16 item 13): 'visit' was done by 99.3% of
    customers and the 0.7% without one never ordered, so its odds ratio was infinite
    (x8.3, 95% CI 0.00-inf) and it topped the ranking. Such a flag is not modelled and is
    listed; the others' coefficients equal a fit without it."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    n = 3000
    c = rng.random(n) < 0.4
    orders = (rng.random(n) < np.where(c, 0.5, 0.3)).astype(int)
    almost_all = np.ones(n, bool)
    almost_all[:20] = False  # 0.7% without it, none of whom orders: separation
    orders[:20] = 0
    flags = pd.DataFrame({"did_visit": almost_all, "did_c": c}).astype(int)
    mot = pp.fit_moments(flags, orders)
    assert mot.rare == ["did_visit"]
    conv = mot.table()[mot.table().outcome == "conversion"].set_index("touchpoint")
    assert list(conv.index) == ["did_c"] and np.isfinite(conv["ci_high"]).all()
    x = (c - c.mean()) / c.std()
    ref = LogisticRegression(C=np.inf, max_iter=5000, tol=1e-10).fit(x[:, None], orders >= 1)
    assert conv.loc["did_c", "coef"] == pytest.approx(ref.coef_[0][0], rel=1e-4)
    assert "Not modelled" in mot.summary() and "did_visit" in mot.summary()
    # at 1% or more on each side (and 10 or more customers) a flag stays
    flags.loc[:29, "did_visit"] = 0
    assert pp.fit_moments(flags, orders).rare == []
