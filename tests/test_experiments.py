"""Experiment evaluation: engine-side metrics and moments against per-customer computations
in pandas/scipy/statsmodels, and against the synthetic world's planted truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from cxanalysis import experiments as ex
from cxanalysis.data import CXDataError, open_source

REL = 1e-8
ALL = ["conversion", "revenue", "orders", "revenue_per_order", "nps", "csat",
       "support_contacts", "event:checkout"]


@pytest.fixture(scope="module")
def checkout(world):
    return ex.analyze(world, "exp_checkout_redesign", secondary_metrics=ALL[1:],
                      guardrails={"support_contacts": "increase", "csat": "decrease"})


@pytest.fixture(scope="module")
def rows(world, checkout) -> pd.DataFrame:
    return checkout.per_customer().execute()


@pytest.fixture(scope="module")
def truth(world_path: Path) -> dict:
    return json.loads((world_path / "truth" / "truth.json").read_text())


# ------------------------------------------------------------------ engine vs pandas


def test_customer_metrics_match_a_pandas_recomputation(world_path: Path, rows) -> None:
    a = pd.read_parquet(world_path / "assignments.parquet")
    a = a[a.experiment_id == "exp_checkout_redesign"]
    o = pd.read_parquet(world_path / "orders.parquet")
    f = pd.read_parquet(world_path / "feedback.parquet")
    e = pd.read_parquet(world_path / "events.parquet")
    assert len(rows) == a.customer_id.nunique()  # all windows closed, no duplicates
    j = a.merge(o, on="customer_id")
    post = j[(j.ts >= j.assigned_at) & (j.ts < j.assigned_at + pd.Timedelta(days=14))]
    pre = j[(j.ts < j.assigned_at) & (j.ts >= j.assigned_at - pd.Timedelta(days=90))]
    want = pd.DataFrame({"orders": post.groupby("customer_id").size(),
                         "revenue": post.groupby("customer_id").amount.sum(),
                         "pre_orders": pre.groupby("customer_id").size()}).fillna(0)
    got = rows.set_index("customer_id").reindex(want.index)
    np.testing.assert_array_equal(got.orders, want.orders)
    np.testing.assert_allclose(got.revenue, want.revenue, rtol=1e-12)
    np.testing.assert_array_equal(got.pre_orders, want.pre_orders)
    assert rows.orders.sum() == len(post) and rows.pre_orders.sum() == len(pre)
    jf = a.merge(f, on="customer_id")
    fpost = jf[(jf.ts >= jf.assigned_at) & (jf.ts < jf.assigned_at + pd.Timedelta(days=14))]
    nps = fpost.nps.dropna()
    assert rows.nps_answers.sum() == len(nps)
    assert rows.nps_points.sum() == 100 * ((nps >= 9).sum() - (nps <= 6).sum())
    assert rows.csat_answers.sum() == fpost.csat.notna().sum()
    je = a.merge(e, on="customer_id")
    epost = je[(je.ts >= je.assigned_at) & (je.ts < je.assigned_at + pd.Timedelta(days=14))]
    assert rows.support.sum() == (epost.event == "support_contact").sum()
    assert rows["ev_checkout"].sum() == epost[epost.event == "checkout"].customer_id.nunique()


def _arms(rows: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    return (rows.loc[rows.variant == "treatment", col].to_numpy(float),
            rows.loc[rows.variant == "control", col].to_numpy(float))


def _row(result, metric: str) -> pd.Series:
    t = result.table()
    return t[t.metric == metric].iloc[0]


def test_proportion_effect_matches_statsmodels(checkout, rows) -> None:
    bt, bc = _arms(rows, "converted")
    r = _row(checkout, "conversion")
    _, p = proportions_ztest([bt.sum(), bc.sum()], [len(bt), len(bc)])
    lo, hi = confint_proportions_2indep(bt.sum(), len(bt), bc.sum(), len(bc), method="newcomb")
    assert r.p_value == pytest.approx(p, rel=REL)
    assert (r.abs_ci_low, r.abs_ci_high) == pytest.approx((lo, hi), rel=REL)
    assert r.abs_diff == pytest.approx(bt.mean() - bc.mean(), rel=REL)
    assert r.n_treatment == len(bt) and r.n_control == len(bc)


@pytest.mark.parametrize("metric, col", [("revenue", "revenue"), ("orders", "orders"),
                                         ("support_contacts", "support")])
def test_mean_effects_match_scipy_welch(checkout, rows, metric, col) -> None:
    yt, yc = _arms(rows, col)
    r = _row(checkout, metric)
    ref = sps.ttest_ind(yt, yc, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert r.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert (r.abs_ci_low, r.abs_ci_high) == pytest.approx((ci.low, ci.high), rel=REL)


@pytest.mark.parametrize("metric, y, x", [("revenue", "revenue", "pre_revenue"),
                                          ("conversion", "converted", "pre_converted")])
def test_cuped_matches_welch_on_adjusted_rows(checkout, rows, metric, y, x) -> None:
    yy, xx = rows[y].to_numpy(float), rows[x].to_numpy(float)
    theta = np.cov(yy, xx, ddof=1)[0, 1] / np.var(xx, ddof=1)
    adj = rows.assign(a=yy - theta * (xx - xx.mean()))
    at, ac = _arms(adj, "a")
    ref = sps.ttest_ind(at, ac, equal_var=False)
    ci = ref.confidence_interval(0.95)
    r = _row(checkout, f"{metric}_cuped")
    assert r.theta == pytest.approx(theta, rel=REL)
    assert r.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert (r.abs_ci_low, r.abs_ci_high) == pytest.approx((ci.low, ci.high), rel=REL)
    yt, yc = _arms(rows, y)
    raw = sps.ttest_ind(yt, yc, equal_var=False)
    se_adj = (at.mean() - ac.mean()) / ref.statistic
    se_raw = (yt.mean() - yc.mean()) / raw.statistic
    # variance reduction against the unadjusted Welch standard error
    assert r.variance_reduction == pytest.approx(1 - se_adj**2 / se_raw**2, rel=1e-6)


@pytest.mark.parametrize("metric, y, d", [("revenue_per_order", "revenue", "orders"),
                                          ("nps", "nps_points", "nps_answers"),
                                          ("csat", "csat_sum", "csat_answers")])
def test_ratio_effects_match_a_direct_delta_method(checkout, rows, metric, y, d) -> None:
    def direct(yv: np.ndarray, dv: np.ndarray) -> tuple[float, float]:
        r = yv.sum() / dv.sum()
        lin = (yv - r * dv) / dv.mean()  # influence function of the ratio
        return r, lin.var(ddof=1) / len(yv)
    (yt, yc), (dt_, dc) = _arms(rows, y), _arms(rows, d)
    (rt, vt), (rc, vc) = direct(yt, dt_), direct(yc, dc)
    se = np.sqrt(vt + vc)
    r = _row(checkout, metric)
    assert r.abs_diff == pytest.approx(rt - rc, rel=REL)
    assert r.se == pytest.approx(se, rel=REL)
    assert r.p_value == pytest.approx(2 * sps.norm.sf(abs(rt - rc) / se), rel=1e-6)
    if rc <= 0:  # NPS can be negative: no relative lift is shown
        assert np.isnan(r.rel_lift)
        return
    # relative lift interval by the delta method
    rel_se = np.sqrt(vt / rc**2 + rt**2 * vc / rc**4)
    assert r.rel_ci_high - r.rel_lift == pytest.approx(sps.norm.isf(0.025) * rel_se, rel=1e-6)


def test_holm_within_families_and_reported_rows(checkout) -> None:
    t = checkout.table()
    rep = t[t.reported]
    assert set(rep.metric) == {"conversion_cuped", "revenue_cuped", "orders_cuped",
                               "revenue_per_order", "nps", "csat", "support_contacts_cuped",
                               "event:checkout_cuped"}
    sec = rep[rep.family == "secondary"].sort_values("p_value")
    m = len(sec)
    holm = np.maximum.accumulate(np.minimum(1, sec.p_value.to_numpy() * (m - np.arange(m))))
    np.testing.assert_allclose(sec.p_adjusted, holm, rtol=1e-12)
    assert t[~t.reported].p_adjusted.isna().all()


def test_sequential_final_look_equals_the_fixed_analysis(checkout) -> None:
    seq = checkout.sequential.table()
    last = seq.iloc[-1]
    unadj = _row(checkout, "conversion")
    assert last.abs_diff == pytest.approx(unadj.abs_diff, rel=REL)
    assert last.n_treatment == unadj.n_treatment
    assert (np.diff(seq.n_control) >= 0).all()
    # the always-valid sequence is wider than the fixed-horizon interval at every look
    assert (seq.cs_low <= seq.ci_low + 1e-12).all() and (seq.cs_high >= seq.ci_high - 1e-12).all()


def test_breakdown_moments_add_up_to_the_whole(world, checkout) -> None:
    seg = checkout.breakdown("region", source=world).table()
    assert seg.n_treatment.sum() == _row(checkout, "conversion").n_treatment


# ------------------------------------------------------------------ truth of the world


def test_real_lift_is_detected_and_covers_the_truth(checkout, truth) -> None:
    r = _row(checkout, "conversion")
    want = truth["experiments"]["exp_checkout_redesign"]["expected_abs_lift"]
    assert r.abs_ci_low <= want <= r.abs_ci_high
    assert r.p_value < 1e-6
    assert checkout.decision.verdict == "ship" and checkout.decision.variant == "treatment"
    assert not checkout.srm_flagged
    assert (checkout.guardrails.status == "pass").all()


def test_null_experiment_is_not_significant(world) -> None:
    res = ex.analyze(world, "exp_email_subject")
    prim = res.primary()
    assert prim.p_adjusted > 0.05
    assert res.decision.verdict in ("keep testing", "don't ship")
    assert res.decision.verdict != "ship"


def test_planted_srm_is_flagged_and_blocks_the_decision(world) -> None:
    res = ex.analyze(world, "exp_srm_banner")
    assert res.srm_flagged and res.srm_p_value < 1e-4
    assert res.decision.verdict == "don't ship" and "ratio mismatch" in res.decision.reason
    assert res.checks.set_index("check").loc["sample ratio mismatch", "status"] == "FAIL"
    assert res.summary().startswith("WARNING: sample ratio mismatch")
    chi2, p = sps.chisquare([res.counts["control"], res.counts["treatment"]])
    assert res.srm_p_value == pytest.approx(p, rel=REL)


def test_persona_only_effect_appears_in_that_personas_breakdown(world, world_path, truth) -> None:
    res = ex.analyze(world, "exp_app_onboarding", sequential=False)
    personas = pd.read_parquet(world_path / "truth" / "personas.parquet")
    seg = res.breakdown(personas[["customer_id", "persona"]]).table().set_index("group")
    want = truth["experiments"]["exp_app_onboarding"]["expected_abs_lift_by_persona"]
    assert seg.loc["loyal_app_regular", "significant"]
    lo, hi = seg.loc["loyal_app_regular", ["ci_low", "ci_high"]]
    assert lo <= want["loyal_app_regular"] <= hi
    others = seg.drop(index="loyal_app_regular")
    assert not others.significant.any()
    het = res.breakdown(personas[["customer_id", "persona"]]).heterogeneity
    assert het.p_value.iloc[0] < 0.001  # the treatment x persona interaction


# ------------------------------------------------------------------ hand-made experiments


def _tiny_world(folder: Path, n: int = 3000, seed: int = 3, variants=("control", "b", "c"),
                lifts=(0.0, 0.0, 0.08)) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    ids = np.array([f"K{i:05d}" for i in range(n)])
    pd.DataFrame({"customer_id": ids,
                  "signup_date": pd.Timestamp("2024-01-01").date()}).to_parquet(
        folder / "customers.parquet", index=False)
    v = rng.integers(0, len(variants), n)
    at = pd.Timestamp("2025-03-01", tz="UTC") + pd.to_timedelta(rng.random(n) * 20, unit="D")
    at = at.floor("s")
    pd.DataFrame({"experiment_id": "exp", "customer_id": ids,
                  "variant": np.array(variants)[v], "assigned_at": at}).to_parquet(
        folder / "assignments.parquet", index=False)
    buys = rng.random(n) < 0.2 + np.array(lifts)[v]
    k = int(buys.sum())
    pd.DataFrame({"order_id": [f"O{i}" for i in range(k)], "customer_id": ids[buys],
                  "ts": at[buys] + pd.to_timedelta(rng.random(k) * 10, unit="D").floor("s"),
                  "channel": "web", "amount": rng.gamma(2, 30, k)}).to_parquet(
        folder / "orders.parquet", index=False)
    split = ",".join(f"{x}:1" for x in variants)
    pd.DataFrame({"experiment_id": ["exp"], "name": ["three arms"], "hypothesis": ["c wins"],
                  "control": ["control"], "start": [pd.Timestamp("2025-03-01", tz="UTC")],
                  "end": [pd.Timestamp("2025-03-25", tz="UTC")],
                  "planned_split": [split]}).to_parquet(folder / "experiments.parquet",
                                                        index=False)
    return folder


def test_three_variants_are_each_compared_with_control(tmp_path: Path) -> None:
    src = open_source(_tiny_world(tmp_path / "w"))
    res = ex.analyze(src, "exp", secondary_metrics=["revenue"], pre_days=30)
    assert res.variants == ["control", "b", "c"]
    out = res.results()
    assert set(out["metrics"]) == {"conversion@b", "conversion@c", "revenue@b", "revenue@c"}
    prim = res.table()[res.table().reported & (res.table().role == "primary")]
    assert len(prim) == 2
    # Holm over the two treatments of the primary metric
    p = np.sort(prim.p_value.to_numpy())
    np.testing.assert_allclose(np.sort(prim.p_adjusted), np.maximum.accumulate(
        np.minimum(1, p * np.array([2, 1]))), rtol=1e-12)
    assert res.decision.verdict == "ship" and res.decision.variant == "c"
    json.dumps(out, allow_nan=True)


def test_assignment_problems_are_counted_not_hidden(tmp_path: Path) -> None:
    folder = _tiny_world(tmp_path / "w", variants=("control", "treatment"), lifts=(0, 0))
    a = pd.read_parquet(folder / "assignments.parquet")
    dup = a.iloc[:7].copy()
    dup["variant"] = np.where(dup.variant == "control", "treatment", "control")
    late = a.iloc[[10]].copy()
    late["assigned_at"] = pd.Timestamp("2025-04-20", tz="UTC")
    late["customer_id"] = "K00010"
    pd.concat([a, dup, late]).to_parquet(folder / "assignments.parquet", index=False)
    # the contract rejects duplicate (experiment, customer) keys; analyze stays defensive
    res = ex.analyze(open_source(folder, validate=False), "exp", secondary_metrics=[],
                     pre_days=30)
    checks = res.checks.set_index("check")
    assert checks.loc["customers in more than one variant", "value"] == "7"
    assert checks.loc["assignments outside the experiment dates", "value"] == "1"
    assert sum(res.counts.values()) == 3000 - 7


def test_learning_log_replaces_a_rerun_and_is_stable(tmp_path: Path, checkout, world) -> None:
    log = tmp_path / "log" / "learning_log.csv"
    ex.log_learning(checkout, log)
    first = log.read_bytes()
    other = ex.analyze(world, "exp_srm_banner", sequential=False, bayesian=False)
    ex.log_learning(other, log)
    ex.log_learning(checkout, log)
    table = pd.read_csv(log)
    assert list(table.experiment_id) == ["exp_checkout_redesign", "exp_srm_banner"]
    assert table.set_index("experiment_id").loc["exp_checkout_redesign", "decision"] == "ship"
    ex.log_learning(other, tmp_path / "second.csv")
    ex.log_learning(checkout, tmp_path / "second.csv")
    assert (tmp_path / "second.csv").read_bytes() == log.read_bytes()
    assert first.splitlines()[0] == log.read_bytes().splitlines()[0]


def test_clear_errors(world) -> None:
    with pytest.raises(CXDataError, match="no rows for experiment 'nope'"):
        ex.analyze(world, "nope")
    with pytest.raises(CXDataError, match="unknown metric 'profit'"):
        ex.analyze(world, "exp_checkout_redesign", primary_metric="profit")
    with pytest.raises(CXDataError, match="control variant 'base'"):
        ex.analyze(world, "exp_checkout_redesign", control="base")
    with pytest.raises(ValueError, match="bad direction"):
        ex.analyze(world, "exp_checkout_redesign", guardrails={"revenue": "down"})


def test_results_carry_the_documented_keys(checkout) -> None:
    out = checkout.results()
    assert {"experiment_id", "variants", "srm_p_value", "decision", "metrics"} <= set(out)
    m = out["metrics"]["conversion"]
    assert {"control_mean", "treatment_mean", "abs_diff", "abs_ci", "rel_lift", "rel_ci",
            "p_value", "adjusted"} <= set(m)
    assert m["adjusted"] is True


def test_sparse_moments_and_the_key_shortcut_change_nothing(world_path: Path,
                                                                   checkout) -> None:
    # sums over the active customers only == sums over every unit with its zeros
    dense = ex.moments(checkout.per_customer(), ALL)
    sparse = ex.moments(checkout._units, ALL, activity=checkout._activity)
    assert dense.n.sum() == sum(checkout.counts.values())
    pd.testing.assert_frame_equal(dense, sparse[dense.columns], rtol=1e-12)
    # without validation the key is checked by a distinct count instead: same effects
    raw = ex.analyze(open_source(world_path, validate=False), "exp_checkout_redesign",
                     secondary_metrics=ALL[1:],
                     guardrails={"support_contacts": "increase", "csat": "decrease"})
    cols = ["metric", "variant", "n_control", "n_treatment", "abs_diff", "abs_ci_low",
            "abs_ci_high", "p_value", "p_adjusted"]
    pd.testing.assert_frame_equal(raw.table()[cols], checkout.table()[cols], rtol=1e-12)
