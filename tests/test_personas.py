"""Personas, segments and their comparison: features against pandas, recovery of the
planted personas, stability, assignment of new customers, fair outcome comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats.contingency import association
from sklearn.linear_model import LinearRegression
from sklearn.metrics import adjusted_rand_score, r2_score
from sklearn.model_selection import KFold, cross_val_predict

from cxanalysis import comparison as cmp
from cxanalysis import personas as P
from cxanalysis import segments as S
from cxanalysis.data import CXDataError

CAL = ("2025-01-01", "2025-09-30")
HOLD = ("2025-10-01", "2025-12-31")


@pytest.fixture(scope="module")
def fitted(world):
    return P.fit_personas(world, *CAL, seed=0, n_boot=10)


@pytest.fixture(scope="module")
def truth(world_path: Path) -> pd.Series:
    return pd.read_parquet(world_path / "truth" / "personas.parquet").set_index(
        "customer_id")["persona"]


def test_features_match_a_pandas_recomputation(world_path: Path, fitted) -> None:
    x = fitted.features_frame
    e = pd.read_parquet(world_path / "events.parquet")
    e = e[(e.ts >= pd.Timestamp(CAL[0], tz="UTC")) & (e.ts < pd.Timestamp("2025-10-01", tz="UTC"))]
    n = e.groupby("customer_id").size()
    active = n[n >= 5].index
    assert set(x.index) == set(active)
    app = (e.channel == "app").groupby(e.customer_id).mean().reindex(x.index)
    np.testing.assert_allclose(x.share_app, app, rtol=1e-12)
    assert fitted.inactive == e.customer_id.nunique() - len(active)
    c = pd.read_parquet(world_path / "customers.parquet").set_index("customer_id")
    end = pd.Timestamp("2025-10-01", tz="UTC")
    start = pd.to_datetime(c.signup_date).dt.tz_localize("UTC").clip(lower=pd.Timestamp(
        CAL[0], tz="UTC"))
    months = ((end - start).dt.total_seconds() / 86400 / 30).clip(lower=1 / 30)
    visits = (e.event == "visit").groupby(e.customer_id).sum()
    want = np.log1p(visits / months.reindex(visits.index)).reindex(x.index)
    np.testing.assert_allclose(x.visits_per_month, want, rtol=1e-9)


def test_planted_personas_are_recovered(fitted, truth) -> None:
    assert fitted.k == 5  # chosen from the data, not given
    ari = adjusted_rand_score(truth.reindex(fitted.assignments.index), fitted.assignments)
    assert ari >= 0.8
    assert min(fitted.jaccard.values()) >= 0.85  # five well-separated personas are stable
    assert fitted.seed_ari >= 0.9
    assert sum(fitted.sizes().values()) == len(fitted.assignments)


def test_names_follow_the_distinguishing_features(fitted, truth) -> None:
    # the persona holding most loyal app regulars is named after app use or logins
    a = fitted.assignments
    loyal = a[truth.reindex(a.index) == "loyal_app_regular"].value_counts().index[0]
    assert "app share" in loyal or "loyalty logins" in loyal
    assert len(set(fitted.names)) == fitted.k
    card = fitted.profile_z.loc[loyal]
    assert card["share_app"] > 1


def test_predict_reproduces_the_assignment(fitted) -> None:
    again = fitted.model.predict(fitted.features_frame)
    assert (again == fitted.assignments).all()


def test_bootstrap_jaccard_separates_structure_from_noise() -> None:
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(c, 0.3, (300, 2)) for c in ((0, 0), (5, 0), (0, 5))])
    lab = P._fit(blobs, 3, "kmeans", 0).predict(blobs)
    assert P.bootstrap_jaccard(blobs, lab, 3, "kmeans", 0, 10).min() > 0.95
    noise = rng.random((900, 2))
    lab = P._fit(noise, 7, "kmeans", 0).predict(noise)
    assert P.bootstrap_jaccard(noise, lab, 7, "kmeans", 0, 10).min() < 0.85
    assert P.stability_verdict(0.5) == "not trustworthy"
    assert P.stability_verdict(0.9) == "highly stable"


def test_bad_parameters_get_clear_errors(world) -> None:
    with pytest.raises(CXDataError, match="unknown persona feature"):
        P.fit_personas(world, *CAL, k=3, features=["share_app", "shoe_size"], n_boot=1)
    with pytest.raises(CXDataError, match="k = 999 needs at least"):
        P.fit_personas(world, *CAL, k=999, n_boot=1)
    x, _n = P.behaviour_features(world, *CAL)
    with pytest.raises(CXDataError, match="constant"):
        P._check_features(x.assign(flat=1.0), ["share_app", "flat"])
    with pytest.raises(CXDataError, match="empty"):
        P.behaviour_features(world, "2025-05-01", "2025-04-01")


def test_rfm_tiers_follow_their_rules(world) -> None:
    rfm = S.rfm_scores(world, *CAL)
    for col, val, higher_is_better in (("m_score", "monetary", True),
                                       ("f_score", "frequency", True),
                                       ("r_score", "recency_days", False)):
        counts = rfm[col].value_counts()
        assert counts.max() - counts.min() <= 1  # ntile: equal-sized bins
        means = rfm.groupby(col)[val].mean()
        assert (np.diff(means) > 0).all() if higher_is_better else (np.diff(means) < 0).all()
    tiers = S.value_tiers(world, *CAL)
    s = rfm[["r_score", "f_score", "m_score"]].sum(axis=1)
    assert (tiers.labels.reindex(s[s >= 12].index) == "champions").all()
    assert (tiers.labels.reindex(s[s < 6].index) == "low value").all()
    assert tiers.rules()["customers"].sum() == len(tiers.labels)
    demo = S.demographic_segments(world, ["age_band", "income_band"])
    assert demo.rules()["customers"].sum() == len(demo.labels)


def test_group_mean_cv_equals_one_hot_regression() -> None:
    rng = np.random.default_rng(1)
    g = rng.integers(0, 4, 500).astype(str)
    y = rng.normal(size=500) + (g == "2")
    ours = cmp._cv_score(g, y, "R²", 5, 0)
    onehot = pd.get_dummies(g).to_numpy(float)
    pred = cross_val_predict(LinearRegression(fit_intercept=False), onehot, y,
                             cv=KFold(5, shuffle=True, random_state=0))
    assert ours == pytest.approx(r2_score(y, pred), rel=1e-9)


def test_agreement_scores(fitted, truth) -> None:
    a = fitted.assignments
    agree = cmp.agreement(a, truth)
    t = truth.reindex(a.index)
    assert agree["ari"] == pytest.approx(adjusted_rand_score(t, a), rel=1e-12)
    assert agree["cramers_v"] == pytest.approx(
        association(pd.crosstab(a, t).to_numpy(), method="cramer", correction=False), rel=1e-9)


def test_personas_explain_outcomes_better_than_demographics(world, fitted) -> None:
    demo = S.demographic_segments(world, ["age_band", "income_band"])
    out = cmp.holdout_outcomes(world, *HOLD, fitted.assignments.index)
    res = cmp.compare_groupings({"demographics": demo.labels, "personas": fitted.assignments},
                                out, n_perm=10)
    f = res.table().set_index(["outcome", "grouping"])
    for outcome in ("converted", "revenue"):
        assert f.loc[(outcome, "personas"), "cv_score"] > f.loc[(outcome, "demographics"),
                                                               "cv_score"]
        assert f.loc[(outcome, "personas"), "beats_permutation"]
        assert f.loc[(outcome, "personas"), "bic"] < f.loc[(outcome, "demographics"), "bic"]
    nested = res.nested.set_index(["outcome", "added"])
    assert nested.loc[("converted", "personas"), "p_value"] < 1e-6
    assert res.agreement["ari"] < 0.1  # personas are not the demographic segments
    json.dumps(res.agreement)
