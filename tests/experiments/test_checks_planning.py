"""Pre-period balance, planning, the Bayesian view and the next-test rule on hand-made
arms, each against an independent computation (scipy, statsmodels, closed forms)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

from cxanalysis import experiments as ex
from cxanalysis import stats as st


def _row(metric: str, y: np.ndarray, x: np.ndarray | None = None) -> dict:
    """One arm's sums of ``metric`` as :func:`cxanalysis.experiments.moments` returns them."""
    out = {"n": float(len(y)), f"{metric}__sy": y.sum(), f"{metric}__syy": (y * y).sum()}
    if x is not None:
        out.update({f"{metric}__sx": x.sum(), f"{metric}__sxx": (x * x).sum(),
                    f"{metric}__sxy": (x * y).sum()})
    return out


@pytest.fixture(scope="module")
def arms() -> dict:
    """Three arms with revenue (and its pre-period) and orders (and theirs); arm b has a
    shifted pre-period revenue (an imbalance), arm c none."""
    rng = np.random.default_rng(11)
    data = {}
    for v, n, shift in (("control", 900, 0.0), ("b", 800, 4.0), ("c", 850, 0.0)):
        pre_rev = rng.gamma(2, 10, n) + shift
        rev = 0.6 * pre_rev + rng.gamma(2, 5, n)
        pre_ord = rng.poisson(1.0, n).astype(float)
        ords = rng.poisson(1.2, n).astype(float)
        data[v] = dict(rev=rev, pre_rev=pre_rev, ords=ords, pre_ord=pre_ord)
    return data


def test_balance_is_welch_on_the_covariates_with_holm(arms) -> None:
    specs = {m: ex.metric_spec(m) for m in ("revenue", "orders", "nps")}  # nps: no covariate
    arm = {v: {**_row("revenue", d["rev"], d["pre_rev"]),
               **_row("orders", d["ords"], d["pre_ord"])} for v, d in arms.items()}
    bal = ex.balance(arm, "control", ["b", "c"], specs)
    assert list(bal.covariate) == ["pre_revenue", "pre_revenue", "pre_orders", "pre_orders"]
    assert list(bal.variant) == ["b", "c", "b", "c"]
    for r in bal.itertuples():
        col = "pre_rev" if r.covariate == "pre_revenue" else "pre_ord"
        t, c = arms[r.variant][col], arms["control"][col]
        ref = sps.ttest_ind(t, c, equal_var=False)
        assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        assert r.abs_diff == pytest.approx(t.mean() - c.mean(), rel=1e-12)
        assert r.control_mean == pytest.approx(c.mean(), rel=1e-12)
    _rej, holm, _s, _b = multipletests(bal.p_value, method="holm")
    np.testing.assert_allclose(bal.p_holm, holm, rtol=1e-12)
    # the planted imbalance of b is found, c is balanced
    assert bal.set_index(["covariate", "variant"]).loc[("pre_revenue", "b"), "p_holm"] < 1e-6
    assert bal.set_index(["covariate", "variant"]).loc[("pre_revenue", "c"), "p_holm"] > 0.01


def test_planning_matches_statsmodels_power_and_the_closed_form(arms) -> None:
    spec = ex.metric_spec("revenue")
    arm = {v: _row("revenue", d["rev"], d["pre_rev"]) for v, d in arms.items()}
    c = spec.moments(arm["control"])
    prim = pd.DataFrame({"variance_reduction": [0.3, 0.5]})
    alpha, power, mde, days = 0.05, 0.8, 0.10, 20.0
    plan = ex.planning(prim, c, spec, arm, ["b", "c"], alpha, power, mde, days, True)
    var = np.var(arms["control"]["rev"], ddof=1) * (1 - 0.4)  # mean reduction 0.4
    level = arms["control"]["rev"].mean()
    sd = np.sqrt(var)
    z = sps.norm.isf(alpha / 2) + sps.norm.isf(1 - power)
    for r in plan.itertuples():
        nt, nc = len(arms[r.variant]["rev"]), len(arms["control"]["rev"])
        d = NormalIndPower().solve_power(nobs1=nt, ratio=nc / nt, alpha=alpha, power=power)
        assert r.mde_abs_now == pytest.approx(d * sd, rel=1e-4)
        assert r.mde_abs_now == pytest.approx(z * np.sqrt(var / nt + var / nc), rel=1e-12)
        assert r.mde_rel_now == pytest.approx(r.mde_abs_now / level, rel=1e-12)
        need = 2 * var * z**2 / (mde * level) ** 2
        assert r.customers_per_arm_needed == int(np.ceil(need))
        n_sm = NormalIndPower().solve_power(effect_size=mde * level / sd, alpha=alpha,
                                            power=power, ratio=1.0)
        assert need == pytest.approx(n_sm, rel=1e-4)
        assert r.customers_per_arm == min(nt, nc)
        assert r.days_needed == pytest.approx(need / (min(nt, nc) / days), rel=1e-12)
        assert r.variance_reduction == pytest.approx(0.4)
    # without variance reduction the reduction is ignored
    raw = ex.planning(prim, c, spec, arm, ["b"], alpha, power, mde, days, False).iloc[0]
    assert raw.variance_reduction == 0.0
    assert raw.customers_per_arm_needed == int(np.ceil(
        2 * np.var(arms["control"]["rev"], ddof=1) * z**2 / (mde * level) ** 2))


def test_planning_of_a_ratio_uses_the_delta_method_variance(arms) -> None:
    spec = ex.metric_spec("revenue_per_order")
    arm = {v: _row("revenue_per_order", d["rev"], d["ords"]) for v, d in arms.items()}
    c = spec.moments(arm["control"])
    plan = ex.planning(pd.DataFrame({"variance_reduction": [0.0]}), c, spec, arm, ["c"],
                       0.05, 0.8, 0.1, 10.0, True).iloc[0]
    y, x = arms["control"]["rev"], arms["control"]["ords"]
    r = y.sum() / x.sum()
    unit_var = np.var((y - r * x) / x.mean(), ddof=1)  # influence function per customer
    z = sps.norm.isf(0.025) + sps.norm.isf(0.2)
    assert plan.control_mean == pytest.approx(r, rel=1e-12)
    assert plan.customers_per_arm_needed == int(np.ceil(2 * unit_var * z**2 / (0.1 * r) ** 2))


def _beta_closed_form(st_: int, nt: int, sc: int, nc: int) -> tuple[float, float, float]:
    """Beta(1 + s, 1 + n - s) posteriors: P(p_t > p_c) and the expected losses, by 1-D
    integration of closed forms (E[(p - x)+] of a Beta is mean (1 - I_x(a+1, b)) -
    x (1 - I_x(a, b)))."""
    at, bt, ac, bc = 1 + st_, 1 + nt - st_, 1 + sc, 1 + nc - sc
    ft, fc = sps.beta(at, bt), sps.beta(ac, bc)

    def above(a: float, b: float, x: float) -> float:  # E[(p - x)+] of Beta(a, b)
        return a / (a + b) * sps.beta(a + 1, b).sf(x) - x * sps.beta(a, b).sf(x)

    p = integrate.quad(lambda x: ft.pdf(x) * fc.cdf(x), 0, 1, limit=200)[0]
    loss_ship = integrate.quad(lambda x: ft.pdf(x) * above(ac, bc, x), 0, 1, limit=200)[0]
    loss_keep = integrate.quad(lambda x: fc.pdf(x) * above(at, bt, x), 0, 1, limit=200)[0]
    return p, loss_ship, loss_keep


def test_bayes_proportions_matches_the_closed_form_beta_posterior() -> None:
    t, c = st.Moments(400, 60, 60), st.Moments(420, 48, 48)
    p, ls, lk = st.bayes_proportions(t, c, seed=3)
    cp, cls, clk = _beta_closed_form(60, 400, 48, 420)
    # Monte Carlo of 200,000 draws: standard error of p below 0.0012
    assert p == pytest.approx(cp, abs=0.005)
    assert ls == pytest.approx(cls, rel=0.05, abs=2e-4)
    assert lk == pytest.approx(clk, rel=0.02)
    assert st.bayes_proportions(t, c, seed=3) == (p, ls, lk)  # seeded: reproducible


def test_bayes_view_of_the_primary_metric(arms) -> None:
    """Unadjusted proportion: the Beta view on the arm's counts; CUPED row: the normal view
    of its estimate (P = Phi(diff / se))."""
    spec = ex.metric_spec("conversion")
    rng = np.random.default_rng(5)
    yc, yt = (rng.random(500) < 0.2).astype(float), (rng.random(480) < 0.26).astype(float)
    arm = {"control": _row("conversion", yc, yc * 0),
           "treatment": _row("conversion", yt, yt * 0)}
    prim = pd.DataFrame([{"variant": "treatment", "metric": "conversion", "adjusted": False,
                          "abs_diff": yt.mean() - yc.mean(), "se": 0.02},
                         {"variant": "treatment", "metric": "conversion_cuped",
                          "adjusted": True, "abs_diff": 0.05, "se": 0.02}])
    b = ex.bayes(prim, arm, "control", spec, seed=7)
    cp, _ls, _lk = _beta_closed_form(int(yt.sum()), 480, int(yc.sum()), 500)
    assert b.p_treatment_better.iloc[0] == pytest.approx(cp, abs=0.005)
    assert b.prior.iloc[0].startswith("Beta(1, 1)")
    assert b.p_treatment_better.iloc[1] == pytest.approx(sps.norm.cdf(0.05 / 0.02), rel=1e-12)
    # expected loss of shipping under N(0.05, 0.02^2): E[max(-D, 0)]
    want = integrate.quad(lambda d: max(-d, 0) * sps.norm.pdf(d, 0.05, 0.02), -0.2, 0.3,
                          points=[0])[0]
    assert b.expected_loss_if_ship.iloc[1] == pytest.approx(want, rel=1e-6)
    assert "CUPED-adjusted" in b.prior.iloc[1]


# ---------------------------------------------------------------------------- next test


def _result(verdict: str, **kw) -> SimpleNamespace:
    base = dict(
        experiment_id="exp", primary_metric="conversion", alpha=0.05, srm_flagged=False,
        primary_testable=True, horizon={"text": "running — 100 of 400 customers"},
        decision=ex.Decision(verdict, "treatment" if verdict == "ship" else None, "why"),
        planning=pd.DataFrame(columns=ex.PLAN_COLS),
        guardrails=pd.DataFrame(columns=["metric", "status", "customers_per_arm_needed"]),
        effects=pd.DataFrame({"role": ["primary"], "reported": [True],
                              "p_adjusted": [0.5], "abs_diff": [0.01]}),
        parameters={"power": 0.8})
    base.update(kw)
    return SimpleNamespace(**base)


def test_next_test_follows_the_decision() -> None:
    assert ex.next_test(_result("ship", srm_flagged=True)).startswith("Fix the assignment")
    assert ex.next_test(_result("not testable", primary_testable=False)).startswith(
        "Make conversion measurable in every arm")
    assert ex.next_test(_result("ship")) == ("Ship treatment, then test the next change on "
                                             "the same primary metric.")
    assert ex.next_test(_result("keep running")) == (
        "Keep exp running to its planned horizon (running — 100 of 400 customers); decide "
        "then, or earlier only on the always-valid test.")
    assert ex.next_test(_result("don't ship")) == (
        "Drop this change; record the learning and test a different hypothesis.")
    plan = pd.DataFrame([{"variant": "treatment", "customers_per_arm": 1500,
                          "mde_rel_now": 0.123, "mde_abs_now": 0.02,
                          "customers_per_arm_needed": 4000, "days_needed": 53.3,
                          "target_rel_mde": 0.1, "variance_reduction": 0.25}])
    assert ex.next_test(_result("keep testing", planning=plan)) == (
        "Keep exp running: with 1,500 customers per arm the detectable lift is +12.3%; 4,000 "
        "per arm (about 53 days at the current traffic) are needed for +10%, after a 25% "
        "variance reduction.")
    # no positive control level: the absolute detectable difference, no days
    plan2 = plan.assign(mde_rel_now=np.nan, customers_per_arm_needed=np.nan,
                        variance_reduction=0.0)
    assert ex.next_test(_result("keep testing", planning=plan2)) == (
        "Keep exp running: with 1,500 customers per arm the detectable difference is +0.02.")


def test_next_test_sizes_the_guardrail_and_names_a_differing_group() -> None:
    guards = pd.DataFrame([{"metric": "csat", "status": "inconclusive",
                            "customers_per_arm_needed": 12345}])
    eff = pd.DataFrame({"role": ["primary"], "reported": [True], "p_adjusted": [0.001],
                        "abs_diff": [0.02]})
    text = ex.next_test(_result("keep testing", guardrails=guards, effects=eff))
    assert text == ("The primary metric improved, but harm beyond the guardrail margin is not "
                    "ruled out for csat. To rule it out (if there is no true harm, with power "
                    "80%): csat about 12,345 customers per arm.")
    seg = ex.Segmented("region", "conversion", pd.DataFrame(
        {"group": ["north", "south"], "variant": ["treatment"] * 2,
         "shrunk_diff": [0.01, 0.04]}),
        pd.DataFrame([{"variant": "treatment", "p_value": 0.001}]))
    text = ex.next_test(_result("ship"), [seg])
    assert text.endswith("The effect differs by region (Cochran's Q p = 0.001); it is largest "
                         "for south (+0.04, shrunk): a follow-up targeted at that group is "
                         "worth testing.")
    # a breakdown without heterogeneity adds nothing
    seg.heterogeneity.loc[0, "p_value"] = 0.5
    assert ex.next_test(_result("ship"), [seg]) == ex.next_test(_result("ship"))
