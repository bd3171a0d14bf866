"""Personas on hand-made data: every feature of a tiny world computed by hand, the estimator's
scikit-learn conventions, k = 1 on structureless data, stability, predict and
assign_personas (issue 13, items 4 and 5)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from cxanalysis import personas as P
from cxanalysis.data import CXDataError, open_source
from cxanalysis.errors import ParameterError

# --------------------------------------------------------------------------- a tiny world
#
# Calibration window 2025-01-01 to 2025-01-30 (end instant 2025-01-31T00:00Z), min_events 2.
# Six customers; what each does is written out below and every expected feature is derived
# by hand from it (not by re-running the package's SQL in pandas).

START, END = "2025-01-01", "2025-01-30"


def _ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    customers = pd.DataFrame({
        "customer_id": ["A", "B", "C", "D", "E", "F"],
        "signup_date": pd.to_datetime(["2024-06-01", "2025-01-16", "2025-01-30", "2024-01-01",
                                       "2024-01-01", "2024-12-01"]).date})
    ev = [  # customer, ts, channel, event
        ("A", "2025-01-02T10:00", "web", "visit"),
        ("A", "2025-01-02T12:00", "web", "product_view"),  # 2 h after the last
        ("A", "2025-01-05T12:00", "app", "visit"),  # 72 h
        ("A", "2025-01-20T12:00", "app", "purchase"),  # 360 h: not a consideration gap
        ("A", "2025-02-03T12:00", "app", "visit"),  # after the window
        ("B", "2025-01-16T09:00", "web", "visit"),
        ("B", "2025-01-16T09:30", "web", "visit"),  # 0.5 h
        ("B", "2025-01-17T09:30", "email", "product_view"),  # 24 h
        ("C", "2025-01-30T10:00", "app", "visit"),
        ("C", "2025-01-30T10:00", "app", "visit"),  # same instant: a gap of 0 h
        ("D", "2024-12-31T23:00", "web", "visit"),  # before the window
        ("D", "2025-01-01T00:00", "web", "visit"),  # first instant: in; D has 1 event
        ("E", "2024-12-15T12:00", "web", "visit"),  # only before the window: not counted
        ("F", "2025-01-01T08:00", "store", "visit"),
        ("F", "2025-01-11T08:00", "store", "visit"),  # 240 h
        ("F", "2025-01-30T23:00", "web", "visit"),  # 471 h
    ]
    events = pd.DataFrame(ev, columns=["customer_id", "ts", "channel", "event"])
    events["ts"] = pd.to_datetime(events.ts, utc=True)
    orders = pd.DataFrame({
        "order_id": ["o1", "o2", "o3", "o4", "o5", "o6"],
        "customer_id": ["A", "A", "C", "F", "F", "D"],
        "ts": pd.to_datetime(["2025-01-20T12:05", "2025-02-05T10:00", "2025-01-30T11:00",
                              "2025-01-11T09:00", "2025-01-12T09:00", "2025-01-01T01:00"],
                             utc=True),
        "channel": ["app", "web", "app", "store", "store", "web"],
        "amount": [90.0, 30.0, 50.0, 20.0, 40.0, 15.0],
        "discount": [10.0, 0.0, None, 5.0, 0.0, 0.0]})
    feedback = pd.DataFrame({
        "customer_id": ["A", "A", "B", "C"],
        "ts": pd.to_datetime(["2025-01-21T10:00", "2025-01-25T10:00", "2025-01-17T10:00",
                              "2025-02-10T10:00"], utc=True),
        "channel": ["app", "app", "email", "web"],
        "event": ["purchase", "purchase", "product_view", "visit"],
        "nps": pd.array([8, 10, None, 0], dtype="Int64"),
        "csat": pd.array([4, 5, 4, 1], dtype="Int64")})
    for name, df in (("customers", customers), ("events", events), ("orders", orders),
                     ("feedback", feedback)):
        df.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def _hand_features() -> pd.DataFrame:
    """Every feature of the active customers A, B, C, F, from the story above."""
    ln, l1p = math.log, math.log1p
    # vocabulary: channels by customers in the window (web: A B D F; app: A C; email: B;
    # store: F; ties by name), events likewise (visit 5, product_view 2, purchase 1)
    counts = {"A": {"web": 2, "app": 2, "email": 0, "store": 0},
              "B": {"web": 2, "app": 0, "email": 1, "store": 0},
              "C": {"web": 0, "app": 2, "email": 0, "store": 0},
              "F": {"web": 1, "app": 0, "email": 0, "store": 2}}
    mixes = {"A": (2, 1, 1), "B": (2, 1, 0), "C": (2, 0, 0), "F": (3, 0, 0)}
    n = {"A": 4, "B": 3, "C": 2, "F": 3}
    # exposure: signup clipped to the window start, to 2025-01-31 (days / 30 = months)
    months = {"A": 30 / 30, "B": 15 / 30, "C": 1 / 30, "F": 30 / 30}
    days = {"A": 3, "B": 2, "C": 1, "F": 3}
    gap = {"A": (ln(3) + ln(73)) / 2, "B": (ln(1.5) + ln(25)) / 2, "C": ln(1)}
    gap["F"] = (gap["A"] + gap["B"] + gap["C"]) / 3  # no gap under 7 days: the average
    orders = {"A": 1, "B": 0, "C": 1, "F": 2}
    gross = {"A": 100.0, "C": 50.0, "F": 25.0 + 40.0}
    disc = {"A": 10.0, "C": 0.0, "F": 5.0}
    end = _ts("2025-01-31")
    last = {"A": "2025-01-20T12:00", "B": "2025-01-17T09:30", "C": "2025-01-30T10:00",
            "F": "2025-01-30T23:00"}
    tenure = {"A": 244.0, "B": 15.0, "C": 1.0, "F": 61.0}
    rows = {}
    for c in ("A", "B", "C", "F"):
        r: dict[str, float] = {}
        for ch in ("web", "app", "email", "store"):
            r[f"share_{ch}"] = counts[c][ch] / n[c]
        logs = {ch: ln(counts[c][ch] + 0.5) for ch in counts[c]}
        for ch in ("web", "app", "email", "store"):
            r[f"clr_{ch}"] = logs[ch] - sum(logs.values()) / 4
        for e, k in zip(("visit", "product_view", "purchase"), mixes[c], strict=True):
            r[f"mix_{e}"] = k / n[c]
        r["events_per_month"] = l1p(n[c] / months[c])
        r["active_days_per_month"] = l1p(days[c] / months[c])
        r["gap_hours"] = gap[c]
        r["orders_per_month"] = l1p(orders[c] / months[c])
        r["basket"] = l1p(gross[c] / orders[c]) if orders[c] else np.nan
        r["discount_share"] = disc[c] / gross[c] if orders[c] else np.nan
        r["nps"] = 9.0 if c == "A" else np.nan  # B's only answer has no NPS
        r["nps_missing"] = 0.0 if c == "A" else 1.0
        r["recency_days"] = (end - _ts(last[c])).total_seconds() / 86400
        r["tenure_days"] = tenure[c]
        rows[c] = r
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("customer_id")


def test_every_feature_of_a_hand_made_world(tiny: Path) -> None:
    data = P.persona_data(open_source(tiny), START, END, min_events=2)
    want = _hand_features()
    assert list(data.features.columns) == list(want.columns)  # names and order
    pd.testing.assert_frame_equal(data.features, want, rtol=1e-12, check_names=False)
    assert data.features.index.name == "customer_id"
    assert data.inactive == 1  # D: one event in the window; E: none, not counted
    assert data.vocabulary == {"channel": ["web", "app", "email", "store"],
                               "event": ["visit", "product_view", "purchase"]}
    # revenue of the window (after discount; 0 without orders), D's order left out
    pd.testing.assert_series_equal(
        data.value, pd.Series({"A": 90.0, "B": 0.0, "C": 50.0, "F": 60.0}),
        check_names=False, check_index_type=False)
    assert data.window == (START, END)
    x, inactive = P.behaviour_features(open_source(tiny), START, END, min_events=2)
    pd.testing.assert_frame_equal(x, data.features)
    assert inactive == 1


def test_min_events_default_and_an_empty_window(tiny: Path) -> None:
    src = open_source(tiny)
    with pytest.raises(CXDataError, match="no customer has 5 or more events"):
        P.persona_data(src, START, END)  # default min_events: 5 events
    with pytest.raises(CXDataError, match="no customer has 5 or more events"):
        P.persona_data(src, "2024-02-01", "2024-02-28")


def test_vocabulary_fixes_another_windows_columns(tiny: Path) -> None:
    # another window with the calibration's vocabulary: the same columns, in the same order
    src = open_source(tiny)
    cal = P.persona_data(src, START, END, min_events=2)
    later = P.persona_data(src, "2025-01-15", "2025-01-30", min_events=2,
                           vocabulary=cal.vocabulary)
    assert list(later.features.columns) == list(cal.features.columns)
    # B (3 events from the 16th), C (2) and F (1 on the 30th: inactive) -> B, C
    assert list(later.features.index) == ["B", "C"]
    assert later.features.loc["C", "share_app"] == 1.0
    assert later.features.loc["B", "share_email"] == pytest.approx(1 / 3, rel=1e-12)


def test_orders_only_source_features_by_hand(tiny: Path, tmp_path: Path) -> None:
    # without events, each order is one activity: shares of the order channel, no mixes
    import shutil

    folder = tmp_path / "orders_only"
    shutil.copytree(tiny, folder)
    (folder / "events.parquet").unlink()
    (folder / "feedback.parquet").unlink()
    data = P.persona_data(open_source(folder), START, END)  # default: 2 orders
    assert list(data.features.index) == ["F"] and data.inactive == 3  # A, C, D: 1 order
    f = data.features.loc["F"]
    assert data.vocabulary == {"channel": ["app", "store", "web"], "event": []}
    assert f["share_store"] == 1.0 and f["share_app"] == 0.0
    assert f["events_per_month"] == pytest.approx(math.log1p(2), rel=1e-12)
    assert f["active_days_per_month"] == pytest.approx(math.log1p(2), rel=1e-12)
    assert f["gap_hours"] == pytest.approx(math.log(25), rel=1e-12)  # 24 h apart
    assert f["basket"] == pytest.approx(math.log1p(65 / 2), rel=1e-12)
    assert f["recency_days"] == pytest.approx(19 - 9 / 24, rel=1e-12)  # 01-12T09:00
    assert not any(c.startswith("mix_") for c in data.features) and "nps" not in data.features


# --------------------------------------------------------------------------- the estimator


def _blobs(seed: int = 0, n: int = 200) -> pd.DataFrame:
    """Three well-separated groups of sizes 3n, 2n, n in three features."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 4.0], [4.0, 7.0, 8.0]])
    z = np.concatenate([rng.normal(c, 0.6, (m, 3)) for c, m in
                        zip(centres, (3 * n, 2 * n, n), strict=True)])
    return pd.DataFrame(z, columns=["a", "b", "c"],
                        index=pd.Index([f"c{i}" for i in range(len(z))], name="customer_id"))


def test_estimator_follows_scikit_learn_conventions() -> None:
    m = P.PersonaModel(k=3, features=["a", "b", "c"], method="gmm", k_range=(2, 5),
                       n_bootstrap=4, n_null=9, min_group_size=5, random_state=7)
    assert m.get_params() == {"k": 3, "features": ["a", "b", "c"], "method": "gmm",
                              "k_range": (2, 5), "n_bootstrap": 4, "n_null": 9,
                              "min_group_size": 5, "random_state": 7}
    c = clone(m)
    assert c is not m and c.get_params() == m.get_params()
    assert c.set_params(method="kmeans") is c and c.method == "kmeans"
    # __init__ only stores: a bad value is reported by fit, as ParameterError
    bad = P.PersonaModel(method="dbscan")
    with pytest.raises(ParameterError, match="method must be one of"):
        bad.fit(_blobs())
    with pytest.raises(NotFittedError):
        P.PersonaModel().predict(_blobs())
    x = _blobs()
    fitted = P.PersonaModel(k=3, n_bootstrap=2).fit(x)
    assert isinstance(fitted, P.PersonaModel)  # fit returns the estimator itself
    for attr in ("labels_", "k_", "stability_", "seed_ari_", "bootstrap_k_", "structure_",
                 "sweep_", "cluster_centers_", "names_", "features_", "dropped_",
                 "not_clustered_", "scaler_", "profile_z_", "feature_names_in_"):
        assert hasattr(fitted, attr), attr
    assert not hasattr(P.PersonaModel(), "labels_")
    # fit_predict (ClusterMixin) is fit(...).labels_
    pd.testing.assert_series_equal(P.PersonaModel(k=3, n_bootstrap=0).fit_predict(x),
                                   fitted.labels_)


@pytest.mark.parametrize(("params", "match"), [
    ({"k": 0}, "k must be None or an integer"),
    ({"k": 2.5}, "k must be None or an integer"),
    ({"k_range": (1, 4)}, "k_range must be"),
    ({"k_range": (5, 3)}, "k_range must be"),
    ({"k_range": (2, 3, 4)}, "k_range must be"),
    ({"n_bootstrap": -1}, "n_bootstrap must be"),
    ({"n_null": 0}, "n_null must be"),
    ({"min_group_size": 0}, "min_group_size must be"),
    ({"random_state": None}, "random_state must be an integer seed"),
])
def test_bad_hyper_parameters_are_parameter_errors(params: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        P.PersonaModel(**params).fit(_blobs(n=20))


def test_same_random_state_same_personas_and_predict_reproduces_them() -> None:
    x = _blobs(1)
    a = P.PersonaModel(n_bootstrap=3, k_range=(2, 5), random_state=3).fit(x)
    b = clone(a).fit(x)
    pd.testing.assert_series_equal(a.labels_, b.labels_)
    pd.testing.assert_series_equal(a.stability_, b.stability_)
    assert a.seed_ari_ == b.seed_ari_ and a.bootstrap_k_ == b.bootstrap_k_
    pd.testing.assert_series_equal(a.predict(x), a.labels_)
    # the three planted groups, numbered by size (largest first), every one stable
    assert a.k_ == 3 and a.structure_.structure
    planted = np.repeat([0, 1, 2], [600, 400, 200])
    codes = a.labels_.map({n: i for i, n in enumerate(a.names_)}).to_numpy()
    assert (codes == planted).all()
    assert a.labels_.value_counts().tolist() == [600, 400, 200]
    assert (a.stability_ > 0.95).all() and a.seed_ari_ == pytest.approx(1.0)
    assert a.bootstrap_k_ == [3, 3, 3]
    # centres in feature units: at convergence, the mean of each persona's customers
    means = x.groupby(a.labels_).mean().reindex(a.names_)
    np.testing.assert_allclose(a.cluster_centers_.to_numpy(), means.to_numpy(), atol=1e-9)
    assert list(a.cluster_centers_.columns) == ["a", "b", "c"]
    # profile_z_: the mean z-score (population sd) of each feature by persona
    z = (x - x.mean()) / x.std(ddof=0)
    np.testing.assert_allclose(a.profile_z_.to_numpy(),
                               z.groupby(a.labels_).mean().reindex(a.names_).to_numpy(),
                               atol=1e-12)


def test_predict_new_customers_and_missing_values() -> None:
    x = _blobs(2)
    m = P.PersonaModel(k=3, n_bootstrap=0).fit(x)
    centres = m.cluster_centers_
    new = pd.DataFrame(centres.to_numpy() + 0.1, columns=centres.columns,
                       index=["n0", "n1", "n2"])
    assert m.predict(new).tolist() == m.names_  # a point by each centre: that persona
    assert m.predict(new).name == "persona" and list(m.predict(new).index) == ["n0", "n1", "n2"]
    # a missing value counts as the calibration mean of that feature
    gap = new.assign(b=np.nan)
    pd.testing.assert_series_equal(m.predict(gap), m.predict(new.assign(b=x["b"].mean())))
    with pytest.raises(ParameterError, match="lacks the model's feature"):
        m.predict(new.drop(columns="c"))


def test_k_1_on_structureless_data() -> None:
    rng = np.random.default_rng(11)
    x = pd.DataFrame(rng.multivariate_normal([0, 0, 0], [[1, .4, 0], [.4, 1, .2], [0, .2, 1]],
                                             900), columns=["a", "b", "c"])
    m = P.PersonaModel(k_range=(2, 6), n_bootstrap=3).fit(x)
    assert m.k_ == 1 and not m.structure_.structure and m.structure_.p_value > 0.05
    assert m.names_ == [P.NO_STRUCTURE] and (m.labels_ == P.NO_STRUCTURE).all()
    assert m.stability_.isna().all() and math.isnan(m.seed_ari_) and m.bootstrap_k_ == []
    np.testing.assert_allclose(m.cluster_centers_.to_numpy()[0], x.mean().to_numpy(),
                               atol=1e-9)
    assert (m.predict(x.iloc[:5]) == P.NO_STRUCTURE).all()
    assert len(m.sweep_) == 5 and list(m.sweep_.k) == [2, 3, 4, 5, 6]


def test_k_given_skips_the_sweep_and_the_null_test() -> None:
    x = _blobs(3, n=60)
    m = P.PersonaModel(k=2, n_bootstrap=3).fit(x)
    assert m.k_ == 2 and m.structure_ is None and m.sweep_.empty and m.bootstrap_k_ == []
    with pytest.raises(CXDataError, match="k = 40 needs at least 400"):
        P.PersonaModel(k=40).fit(x)
    # the sweep leaves out k that cannot give personas of min_group_size
    small = P.PersonaModel(k_range=(2, 8), min_group_size=100, n_bootstrap=0).fit(x)
    assert list(small.sweep_.k) == [2, 3]  # 360 customers: at most 3 personas of 100


def test_no_bootstrap_means_stability_not_assessed(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("stability diagnostics ran")
    monkeypatch.setattr(P, "bootstrap_jaccard", boom)
    m = P.PersonaModel(k=3, n_bootstrap=0).fit(_blobs(4, n=50))
    assert m.stability_.isna().all() and math.isnan(m.seed_ari_)
    assert list(m.stability_.index) == m.names_


def test_stability_function_on_planted_and_on_noise() -> None:
    x = _blobs(5, n=100).to_numpy()
    z = (x - x.mean(0)) / x.std(0)
    labels = np.repeat([0, 1, 2], [300, 200, 100])
    chosen: list[int] = []
    with P._threads(len(z)):
        jac, ari = P.stability(z, labels, 3, "kmeans", 0, 5, ks=[2, 3, 4], chosen=chosen)
    assert (jac > 0.95).all() and ari == pytest.approx(1.0) and chosen == [3] * 5
    noise = np.random.default_rng(0).random((600, 2))
    lab = P._fit(noise, 6, "kmeans", 0).predict(noise)
    with P._threads(len(noise)):
        jac, ari = P.stability(noise, lab, 6, "kmeans", 0, 5)
    assert jac.min() < P.STABLE_JACCARD and ari < 0.95


def test_features_default_drop_and_fill() -> None:
    x = _blobs(6, n=40).assign(
        share_web=0.5, clr_web=np.linspace(-1, 1, 240), tenure_days=np.arange(240.0),
        flat=3.0, gap_hours=np.where(np.arange(240) % 2, np.nan, 1.0) + np.arange(240) % 3)
    m = P.PersonaModel(k=3, n_bootstrap=0).fit(x)
    assert "share_web" in m.not_clustered_ and "tenure_days" in m.not_clustered_
    assert m.dropped_ == {"flat": "constant (3 for every customer)"}
    assert m.features_ == ["a", "b", "c", "clr_web", "gap_hours"]
    # gap_hours' missing values count as its mean: the scaler saw the filled column
    filled = x["gap_hours"].fillna(x["gap_hours"].mean())
    assert m.scaler_.mean_[4] == pytest.approx(filled.mean(), rel=1e-12)
    assert m.scaler_.scale_[4] == pytest.approx(filled.std(ddof=0), rel=1e-12)
    assert list(m.feature_names_in_) == list(x.columns)
    with pytest.raises(ParameterError, match="unknown persona feature"):
        P.PersonaModel(features=["a", "shoe_size"]).fit(x)


def test_personas_report_checks_it_describes_the_data_fitted_on(tiny: Path) -> None:
    data = P.persona_data(open_source(tiny), START, END, min_events=2)
    m = P.PersonaModel(k=2, min_group_size=1, n_bootstrap=0).fit(data.features)
    p = P.Personas(m, data)
    assert p.k == 2 and p.assignments is m.labels_ and p.vocabulary == data.vocabulary
    assert p.inactive == 1 and p.window == (START, END)
    assert sum(p.sizes().values()) == 4
    other = P.PersonaModel(k=2, min_group_size=1, n_bootstrap=0).fit(data.features.iloc[:3])
    with pytest.raises(ParameterError, match="not fitted on these data"):
        P.Personas(other, data)
    with pytest.raises(NotFittedError):
        P.Personas(P.PersonaModel(), data)


def test_fit_personas_takes_the_estimators_names(tiny: Path) -> None:
    src = open_source(tiny)
    with pytest.raises(ParameterError, match="seed -> random_state"):
        P.fit_personas(src, START, END, min_events=2, seed=1)
    with pytest.raises(ParameterError, match="n_boot -> n_bootstrap"):
        P.fit_personas(src, START, END, min_events=2, n_boot=1)
    p = P.fit_personas(src, START, END, min_events=2, k=2, min_group_size=1, n_bootstrap=0,
                       random_state=4)
    data = P.persona_data(src, START, END, min_events=2)
    m = P.PersonaModel(k=2, min_group_size=1, n_bootstrap=0, random_state=4).fit(data.features)
    pd.testing.assert_series_equal(p.assignments, m.labels_)


def test_assign_personas_is_the_fit_with_notebook_names(tiny: Path) -> None:
    src = open_source(tiny)
    got = P.assign_personas(src, START, END, seed=2, k=2, min_events=2, min_group_size=1)
    assert list(got.columns) == ["customer_id", "persona"]
    assert list(got.customer_id) == ["A", "B", "C", "F"]  # D: too few events; E: none
    data = P.persona_data(src, START, END, min_events=2)
    m = P.PersonaModel(k=2, min_group_size=1, random_state=2, n_bootstrap=0).fit(data.features)
    assert got.set_index("customer_id")["persona"].to_dict() == m.labels_.to_dict()
    assert got.persona.nunique() == 2
    # min_events 3 leaves out C (2 events)
    three = P.assign_personas(src, START, END, k=2, min_events=3, min_group_size=1)
    assert list(three.customer_id) == ["A", "B", "F"]
    with pytest.raises(ParameterError, match="unknown persona parameter"):
        P.assign_personas(src, START, END, random_state=1)
