"""Experiment statistics vs scipy / statsmodels on raw rows, and calibration by simulation."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from cxanalysis import stats as st

REL = 1e-8


def moments(y: np.ndarray, x: np.ndarray | None = None) -> st.Moments:
    x = np.zeros_like(y) if x is None else x
    return st.Moments(len(y), y.sum(), (y * y).sum(), x.sum(), (x * x).sum(), (x * y).sum())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x_t, x_c = rng.gamma(2, 20, 900), rng.gamma(2, 20, 1100)
    y_t = 0.6 * x_t + rng.normal(5, 15, 900)
    y_c = 0.6 * x_c + rng.normal(3, 14, 1100)
    b_t, b_c = (rng.random(900) < 0.32).astype(float), (rng.random(1100) < 0.27).astype(float)
    return x_t, x_c, y_t, y_c, b_t, b_c


def test_welch_matches_scipy(data) -> None:
    _, _, y_t, y_c, _, _ = data
    e = st.welch(moments(y_t), moments(y_c))
    ref = sps.ttest_ind(y_t, y_c, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert e.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert e.abs_ci == pytest.approx((ci.low, ci.high), rel=REL)
    assert e.df == pytest.approx(ref.df, rel=REL)
    assert e.abs_diff == pytest.approx(y_t.mean() - y_c.mean(), rel=REL)


def test_two_proportions_match_statsmodels(data) -> None:
    *_, b_t, b_c = data
    e = st.two_proportions(moments(b_t), moments(b_c))
    _, p = proportions_ztest([b_t.sum(), b_c.sum()], [len(b_t), len(b_c)])
    lo, hi = confint_proportions_2indep(b_t.sum(), len(b_t), b_c.sum(), len(b_c),
                                        method="newcomb")
    assert e.p_value == pytest.approx(p, rel=REL)
    assert e.abs_ci == pytest.approx((lo, hi), rel=REL)


def test_ratio_delta_method_matches_a_direct_computation(data) -> None:
    x_t, x_c, y_t, y_c, _, _ = data
    den_t, den_c = np.ceil(x_t / 20), np.ceil(x_c / 20)  # e.g. orders
    e = st.ratio(moments(np.abs(y_t), den_t), moments(np.abs(y_c), den_c))
    # direct: Var(Ybar/Dbar) by linearisation on the per-customer rows
    def direct(y, d):
        r = y.sum() / d.sum()
        lin = (y - r * d) / d.mean()
        return r, lin.var(ddof=1) / len(y)
    rt, vt = direct(np.abs(y_t), den_t)
    rc, vc = direct(np.abs(y_c), den_c)
    assert e.abs_diff == pytest.approx(rt - rc, rel=REL)
    assert e.se == pytest.approx(np.sqrt(vt + vc), rel=REL)
    # and by bootstrap, roughly
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(400):
        i, j = rng.integers(0, len(y_t), len(y_t)), rng.integers(0, len(y_c), len(y_c))
        boots.append(np.abs(y_t)[i].sum() / den_t[i].sum() - np.abs(y_c)[j].sum() / den_c[j].sum())
    assert np.std(boots) == pytest.approx(e.se, rel=0.12)


def test_cuped_matches_welch_on_adjusted_rows_and_ols(data) -> None:
    x_t, x_c, y_t, y_c, _, _ = data
    res = st.cuped(moments(y_t, x_t), moments(y_c, x_c))
    x = np.concatenate([x_t, x_c])
    y = np.concatenate([y_t, y_c])
    theta = np.cov(y, x, ddof=1)[0, 1] / x.var(ddof=1)
    assert res.theta == pytest.approx(theta, rel=REL)
    adj_t, adj_c = y_t - theta * (x_t - x.mean()), y_c - theta * (x_c - x.mean())
    ref = sps.ttest_ind(adj_t, adj_c, equal_var=False)
    assert res.effect.p_value == pytest.approx(ref.pvalue, rel=REL)
    assert res.effect.abs_diff == pytest.approx(adj_t.mean() - adj_c.mean(), rel=REL)
    # same point estimate as OLS with a treatment dummy and the centred covariate when the
    # slope is pooled: OLS's slope is the within-arm slope, so compare with tolerance only
    treat = np.r_[np.ones(len(y_t)), np.zeros(len(y_c))]
    ols = sm.OLS(y, sm.add_constant(np.column_stack([treat, x - x.mean()]))).fit()
    assert res.effect.abs_diff == pytest.approx(ols.params[1], rel=0.05)
    assert res.variance_reduction == pytest.approx(res.correlation**2, abs=0.03)
    assert res.variance_reduction > 0.3


def test_relative_lift_delta_method_against_simulation() -> None:
    rng = np.random.default_rng(5)
    mt, mc = moments(rng.normal(11, 4, 2000)), moments(rng.normal(10, 4, 2000))
    e = st.welch(mt, mc)
    sims = rng.normal(11, 4 / np.sqrt(2000), 20000) / rng.normal(10, 4 / np.sqrt(2000), 20000) - 1
    lo, hi = np.quantile(sims, [0.025, 0.975])
    assert e.rel_ci[1] - e.rel_ci[0] == pytest.approx(hi - lo, rel=0.05)


def test_srm_matches_scipy() -> None:
    chi2, p = st.srm_test({"control": 1842, "treatment": 2154},
                          {"control": 0.5, "treatment": 0.5})
    ref = sps.chisquare([1842, 2154])
    assert (chi2, p) == pytest.approx((ref.statistic, ref.pvalue), rel=REL)
    assert p < 0.001


def test_bayes_normal_against_monte_carlo() -> None:
    p, loss_ship, _ = st.bayes_normal(0.5, 1.0)
    d = np.random.default_rng(0).normal(0.5, 1.0, 400_000)
    assert p == pytest.approx((d > 0).mean(), abs=0.003)
    assert loss_ship == pytest.approx(np.maximum(-d, 0).mean(), abs=0.003)


def test_power_formulas_round_trip() -> None:
    n = st.sample_size_per_arm(var=0.25, effect=0.05)
    assert st.mde(0.25, 0.25, n, n) == pytest.approx(0.05, rel=1e-12)


# ------------------------------------------------------------------ calibration by simulation


def _aa_pvalues(rng: np.random.Generator, sims: int = 600, n: int = 400):
    out = {"z": [], "welch": [], "ratio": [], "cuped": []}
    cover = []
    for _ in range(sims):
        b = (rng.random(2 * n) < 0.3).astype(float)
        x = rng.gamma(2, 10, 2 * n)
        y = 0.5 * x + rng.normal(0, 8, 2 * n)
        d = rng.poisson(2, 2 * n) + 1.0
        t, c = slice(0, n), slice(n, 2 * n)
        out["z"].append(st.two_proportions(moments(b[t]), moments(b[c])).p_value)
        out["welch"].append(st.welch(moments(y[t]), moments(y[c])).p_value)
        out["ratio"].append(st.ratio(moments(np.abs(y[t]), d[t]),
                                     moments(np.abs(y[c]), d[c])).p_value)
        out["cuped"].append(st.cuped(moments(y[t], x[t]), moments(y[c], x[c])).effect.p_value)
        # coverage of a known effect of +2 on the mean
        e = st.welch(moments(y[t] + 2), moments(y[c]))
        cover.append(e.abs_ci[0] <= 2 <= e.abs_ci[1])
    return {k: np.array(v) for k, v in out.items()}, np.mean(cover)


def test_false_positive_rates_and_coverage_are_calibrated() -> None:
    pvals, coverage = _aa_pvalues(np.random.default_rng(2026))
    for test, p in pvals.items():
        assert 0.03 <= (p < 0.05).mean() <= 0.07, (test, (p < 0.05).mean())
    assert coverage >= 0.93


def test_msprt_keeps_its_error_rate_under_daily_peeking() -> None:
    rng = np.random.default_rng(7)
    sims, looks, per_look, sigma = 500, 30, 50, 1.0
    rejected_msprt = rejected_naive = 0
    for _ in range(sims):
        yt = rng.normal(0, sigma, looks * per_look).reshape(looks, per_look).sum(axis=1)
        yc = rng.normal(0, sigma, looks * per_look).reshape(looks, per_look).sum(axis=1)
        n = per_look * np.arange(1, looks + 1)
        diff = np.cumsum(yt) / n - np.cumsum(yc) / n
        var = 2 * sigma**2 / n
        p, lo, hi = st.msprt(diff, var, tau2=0.1**2)
        rejected_msprt += (p < 0.05).any()
        rejected_naive += (2 * sps.norm.sf(np.abs(diff / np.sqrt(var))) < 0.05).any()
    assert rejected_msprt / sims <= 0.05
    assert rejected_naive / sims > 0.15  # why an always-valid method is needed


@pytest.mark.parametrize("method, sm", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjusted_p_values_match_statsmodels(method, sm) -> None:
    rng = np.random.default_rng(11)
    for size in (1, 2, 7, 40):
        p = rng.uniform(0, 1, size) ** 3
        p[: size // 3] = p[0]  # ties
        want = multipletests(p, method=sm)[1]
        np.testing.assert_allclose(st.adjust_pvalues(p, method), want, rtol=1e-12)
    with_nan = np.array([0.01, np.nan, 0.04, 0.03])
    got = st.adjust_pvalues(with_nan, method)
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2, 3]], multipletests(with_nan[[0, 2, 3]], method=sm)[1],
                               rtol=1e-12)
    assert np.isnan(st.adjust_pvalues([np.nan], method)).all()


def test_item8_relative_lift_needs_a_positive_control_level() -> None:
    rng = np.random.default_rng(8)
    yt = rng.normal(-20, 30, 500)
    for shift in (-40.0, 0.0):  # control mean negative, then exactly 0
        yc = rng.normal(0, 30, 400)
        yc = yc - yc.mean() + shift
        e = st.welch(moments(yt), moments(yc))
        assert np.isnan(e.rel_lift) and np.isnan(e.rel_ci[0]) and np.isnan(e.rel_ci[1])
        # the absolute comparison is untouched
        assert e.p_value == pytest.approx(sps.ttest_ind(yt, yc, equal_var=False).pvalue,
                                          rel=1e-10)
    assert not st.relative_defined(0.0) and not st.relative_defined(-1e-9)
    assert not st.relative_defined(float("nan")) and st.relative_defined(1e-9)
    # positive control: the closed-form ratio and delta-method interval
    yc = rng.normal(10, 3, 400)
    e = st.welch(moments(yt + 40), moments(yc))
    mt, mc = (yt + 40).mean(), yc.mean()
    vt, vc = (yt + 40).var(ddof=1) / len(yt), yc.var(ddof=1) / len(yc)
    se = np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    assert e.rel_lift == pytest.approx(mt / mc - 1, rel=1e-12)
    assert e.rel_ci[1] - e.rel_lift == pytest.approx(sps.norm.isf(0.025) * se, rel=1e-10)


# ------------------------------------------------------------------ issue 16, items 6 and 9


def test_item9_eb_shrink_matches_a_hand_computation() -> None:
    # y = (0, 2), s = (1, 1): Q = 2 on 1 df, sum w - sum w^2 / sum w = 1, so tau^2 = 1;
    # mu = 1, B = 1/2: shrunk (0.5, 1.5), se sqrt(1/2 * 1 + 1/4 * 1/(1/2 + 1/2)) = sqrt(.75)
    est, se, tau2, mu = st.eb_shrink([0.0, 2.0], [1.0, 1.0])
    assert tau2 == pytest.approx(1.0) and mu == pytest.approx(1.0)
    np.testing.assert_allclose(est, [0.5, 1.5])
    np.testing.assert_allclose(se, [np.sqrt(0.75)] * 2)
    # Q = 0.5 < df: tau^2 = 0 and every group gets the pooled estimate with its se
    est, se, tau2, mu = st.eb_shrink([0.0, 1.0], [1.0, 1.0])
    assert tau2 == 0.0
    np.testing.assert_allclose(est, [0.5, 0.5])
    np.testing.assert_allclose(se, [np.sqrt(0.5)] * 2)
    with pytest.raises(ValueError, match="positive"):
        st.eb_shrink([0.0, 1.0], [1.0, 0.0])


def test_item9_eb_tau2_and_mean_match_statsmodels_dersimonian_laird() -> None:
    from statsmodels.stats.meta_analysis import combine_effects

    rng = np.random.default_rng(5)
    y = rng.normal(0.1, 0.15, 7)
    v = rng.uniform(0.002, 0.03, 7)
    est, se, tau2, mu = st.eb_shrink(y, np.sqrt(v))
    ref = combine_effects(y, v, method_re="dl")
    assert tau2 == pytest.approx(ref.tau2, rel=1e-10) and tau2 > 0
    assert mu == pytest.approx(ref.mean_effect_re, rel=1e-10)
    b = v / (v + tau2)
    np.testing.assert_allclose(est, b * mu + (1 - b) * y, rtol=1e-12)
    # shrinkage pulls every estimate towards mu and never widens the spread
    assert np.all(np.abs(est - mu) <= np.abs(y - mu) + 1e-15)
    assert np.all(se < np.sqrt(v))


@pytest.mark.parametrize(("low", "high", "bad", "margin", "want"), [
    (-0.1, 0.4, "increase", 0.5, "pass"),          # harm up to 0.4 < margin 0.5
    (-0.1, 0.6, "increase", 0.5, "inconclusive"),  # harm up to 0.6 allowed
    (0.1, 0.3, "increase", 0.5, "fail"),           # significant harm, even within margin
    (-0.6, 0.1, "decrease", 0.5, "inconclusive"),  # a decrease of 0.6 is not ruled out
    (-0.4, 0.1, "decrease", 0.5, "pass"),
    (-0.3, -0.1, "decrease", 0.5, "fail"),
    (-0.3, -0.1, "increase", 0.5, "pass"),         # a significant improvement passes
    (-0.1, 0.4, "increase", np.nan, "inconclusive"),  # no margin: cannot pass
    (0.1, 0.4, "increase", np.nan, "fail"),           # ... but harm still fails
    (np.nan, np.nan, "increase", 0.5, "inconclusive"),
    (-0.1, 0.5, "increase", 0.5, "inconclusive"),  # the margin itself is not excluded
])
def test_item6_guardrail_status_hand_cases(low, high, bad, margin, want) -> None:
    assert st.guardrail_status(low, high, bad, margin) == want
    assert want in st.GUARDRAIL_STATUSES


def test_item6_guardrail_pass_is_a_one_sided_noninferiority_test() -> None:
    """pass <=> the one-sided non-inferiority z-test (H0: harm >= M) rejects at alpha/2."""
    rng = np.random.default_rng(1)
    for _ in range(200):
        d, se, m = rng.normal(0, 1), rng.uniform(0.2, 1), rng.uniform(0, 2)
        z = sps.norm.isf(0.025)
        status = st.guardrail_status(d - z * se, d + z * se, "increase", m)
        p_ni = sps.norm.cdf((d - m) / se)  # small when the harm is clearly below m
        if status == "pass":
            assert p_ni < 0.025
        elif status == "inconclusive":
            assert p_ni >= 0.025 - 1e-12 and d - z * se <= 0
