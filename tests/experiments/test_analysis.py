"""Experiment evaluation: engine-side metrics and moments against per-customer computations
in pandas/scipy/statsmodels, and against the synthetic world's planted truth."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from cxanalysis import experiments as ex
from cxanalysis.data import CXDataError, open_source
from cxanalysis.errors import ParameterError

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


@pytest.fixture(scope="module")
def strong(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo world with large planted effects (+30% relative checkout completion, a
    persona-only effect of 0.3): the calibrated demo's realistic lifts are too small to be
    detected at 5,000 customers, and the tests of what happens after a detection need one."""
    from dataclasses import replace

    from cxanalysis.synth import WORLD, generate

    big = {"exp_checkout_redesign": 0.3, "exp_app_onboarding": 0.3}
    exps = tuple(replace(e, effect=big.get(e.experiment_id, e.effect)) for e in WORLD.experiments)
    return Path(generate(5000, seed=42, out=tmp_path_factory.mktemp("strong"),
                         world=replace(WORLD, experiments=exps)))


@pytest.fixture(scope="module")
def strong_world(strong: Path):
    from cxanalysis.data import open_source

    return open_source(strong)


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
    # the secondary family, corrected by statsmodels' Holm; a metric without variance
    # (every customer of a test triggered at checkout has a checkout) has no p-value and
    # is not in the family
    sec = rep[rep.family == "secondary"]
    assert sec[sec.p_value.isna()].p_adjusted.isna().all()
    sec = sec.dropna(subset=["p_value"])
    assert len(sec) >= 5
    _rej, want, _s, _b = multipletests(sec.p_value, alpha=0.05, method="holm")
    np.testing.assert_allclose(sec.p_adjusted, want, rtol=1e-12)
    np.testing.assert_array_equal(sec.significant, want < 0.05)
    # a family of one (the primary) is its own p; guardrails are not corrected
    prim = rep[rep.family == "primary"]
    assert prim.p_adjusted.tolist() == prim.p_value.tolist()
    g = rep[rep.family == "guardrail"]
    assert g.p_adjusted.tolist() == g.p_value.tolist()
    assert t[~t.reported].p_adjusted.isna().all()


def test_bh_correction_matches_statsmodels(world) -> None:
    res = ex.analyze(world, "exp_checkout_redesign", correction="bh", guardrails={},
                     sequential=False, bayesian=False)
    sec = res.reported()[lambda r: r.family == "secondary"]
    assert len(sec) == 5
    _rej, want, _s, _b = multipletests(sec.p_value, alpha=0.05, method="fdr_bh")
    np.testing.assert_allclose(sec.p_adjusted, want, rtol=1e-12)


def test_sequential_final_look_equals_the_fixed_analysis(checkout) -> None:
    seq = checkout.sequential.table()
    last = seq.iloc[-1]
    unadj = _row(checkout, "conversion")
    assert last.abs_diff == pytest.approx(unadj.abs_diff, rel=REL)
    assert last.n_treatment == unadj.n_treatment
    assert (np.diff(seq.n_control) >= 0).all()
    # the confidence sequence is intersected over time: it never widens again
    assert (np.diff(seq.cs_low) >= -1e-15).all() and (np.diff(seq.cs_high) <= 1e-15).all()
    # before any intersection (the first look) it is wider than the fixed-horizon interval;
    # later the running intersection may be narrower than one look's fixed interval (it is
    # on the calibrated demo world), so that is not asserted at every look
    first = seq.iloc[0]
    assert first.cs_low <= first.abs_ci_low and first.cs_high >= first.abs_ci_high


def test_breakdown_pins_each_group_against_statsmodels(world, world_path: Path, checkout,
                                                       rows) -> None:
    """Per region: counts, rates, the Newcombe interval and the z-test p of the conversion
    effect recomputed from the raw customers table and the per-customer rows; Holm over the
    groups by statsmodels."""
    seg = checkout.breakdown("region", source=world).table().set_index("group")
    cust = pd.read_parquet(world_path / "customers.parquet")[["customer_id", "region"]]
    per = rows.merge(cust, on="customer_id", how="left")
    per["region"] = per.region.astype(object).where(per.region.notna(), ex.UNKNOWN_GROUP)
    assert set(seg.index) == set(per.region.astype(str))
    assert len(seg) >= 3
    ps = []
    for g, f in per.groupby("region"):
        bt, bc = _arms(f, "converted")
        r = seg.loc[str(g)]
        assert (r.n_treatment, r.n_control) == (len(bt), len(bc))
        assert r.control_mean == pytest.approx(bc.mean(), rel=REL)
        assert r.treatment_mean == pytest.approx(bt.mean(), rel=REL)
        assert r.abs_diff == pytest.approx(bt.mean() - bc.mean(), rel=REL, abs=1e-15)
        _z, p = proportions_ztest([bt.sum(), bc.sum()], [len(bt), len(bc)])
        lo, hi = confint_proportions_2indep(bt.sum(), len(bt), bc.sum(), len(bc),
                                            method="newcomb")
        assert r.p_value == pytest.approx(p, rel=1e-9)
        assert (r.abs_ci_low, r.abs_ci_high) == pytest.approx((lo, hi), rel=1e-9)
        assert not r.suppressed
        ps.append((str(g), p))
    _rej, holm, _s, _b = multipletests([p for _g, p in ps], method="holm")
    np.testing.assert_allclose(seg.loc[[g for g, _p in ps], "p_holm"], holm, rtol=1e-9)
    assert seg.n_treatment.sum() == _row(checkout, "conversion").n_treatment


def test_breakdown_suppresses_groups_below_min_group_size(world, checkout) -> None:
    big = dataclasses.replace(checkout, min_group_size=10**6)
    seg = big.breakdown("region", source=world).table()
    assert seg.suppressed.all() and seg.n_control.isna().all() and seg.abs_diff.isna().all()
    with pytest.raises(ParameterError, match="pass source="):
        checkout.breakdown("region")
    with pytest.raises(ParameterError, match="one group column"):
        checkout.breakdown(pd.DataFrame({"customer_id": ["a"], "x": [1], "y": [2]}))
    with pytest.raises(CXDataError, match="customers has no column 'nope'"):
        checkout.breakdown("nope", source=world)


# ------------------------------------------------------------------ truth of the world


def test_real_lift_is_detected_and_covers_the_truth(strong_world, strong: Path) -> None:
    checkout = ex.analyze(strong_world, "exp_checkout_redesign", secondary_metrics=ALL[1:],
                          guardrails={"support_contacts": "increase", "csat": "decrease"})
    r = _row(checkout, "conversion")
    truth = json.loads((strong / "truth" / "truth.json").read_text())
    want = truth["experiments"]["exp_checkout_redesign"]["expected_abs_lift"]
    assert r.abs_ci_low <= want <= r.abs_ci_high
    assert r.p_value < 1e-6
    assert not checkout.srm_flagged
    # issue 16, item 6: at the default 5 % margins the support-contacts interval is too wide
    # to rule out harm, so the real lift alone does not ship
    assert checkout.guardrails.set_index("metric").loc["support_contacts", "status"] == \
        "inconclusive"
    assert checkout.decision.verdict == "keep testing"
    assert "not every guardrail rules out harm beyond its margin" in checkout.decision.reason


def test_item6_real_lift_ships_when_every_guardrail_passes(strong_world) -> None:
    res = ex.analyze(strong_world, "exp_checkout_redesign", secondary_metrics=[],
                     guardrails={"support_contacts": {"direction": "increase", "margin": 0.6},
                                 "csat": {"direction": "decrease", "margin_abs": 0.5}})
    g = res.guardrails.set_index("metric")
    assert list(g.status) == ["pass", "pass"]
    assert g.loc["csat", "margin_abs"] == 0.5 and np.isnan(g.loc["csat", "margin"])
    assert g.loc["support_contacts", "margin_abs"] == pytest.approx(
        0.6 * _row(res, "support_contacts_cuped").control_mean, rel=1e-12)
    assert res.decision.verdict == "ship" and res.decision.variant == "treatment"
    assert "no harm beyond" in res.decision.reason and "safe" not in res.decision.reason


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


def test_persona_only_effect_appears_in_that_personas_breakdown(strong_world, strong) -> None:
    res = ex.analyze(strong_world, "exp_app_onboarding", sequential=False)
    personas = pd.read_parquet(strong / "truth" / "personas.parquet")
    truth = json.loads((strong / "truth" / "truth.json").read_text())
    seg = res.breakdown(personas[["customer_id", "persona"]]).table().set_index("group")
    want = truth["experiments"]["exp_app_onboarding"]["expected_abs_lift_by_persona"]
    assert seg.loc["loyal_app_regular", "significant"]
    lo, hi = seg.loc["loyal_app_regular", ["abs_ci_low", "abs_ci_high"]]
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
    # the data end before experiments.end + 14 days: the planned size is the horizon here
    res = ex.analyze(src, "exp", secondary_metrics=["revenue"], pre_days=30,
                     planned_customers=2000)
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
    # results.json: each treatment's figures under its own key, equal to the table's rows
    strict = _strict_json(res)
    for key, m in strict["metrics"].items():
        metric, variant = key.split("@")
        r = res.table().set_index(["metric", "variant"]).loc[(metric, variant)]
        assert m["abs_diff"] == pytest.approx(r.abs_diff, rel=1e-12)
        assert m["abs_ci"] == pytest.approx([r.abs_ci_low, r.abs_ci_high], rel=1e-12)
        assert m["p_value"] == pytest.approx(r.p_value, rel=1e-12)
    assert strict["variants"] == res.counts and sum(res.counts.values()) == 3000
    assert strict["decision"] == "ship" and strict["decision_variant"] == "c"
    a = pd.read_parquet(tmp_path / "w" / "assignments.parquet")
    assert res.counts == a.variant.value_counts().to_dict()


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
    """The same look written twice is one row; written in any order, the same bytes."""
    log = tmp_path / "log" / "learning_log.csv"
    t1 = "2026-01-05T10:00:00Z"
    ex.log_learning(checkout, log, looked_at=t1)
    first = log.read_bytes()
    other = ex.analyze(world, "exp_srm_banner", sequential=False, bayesian=False)
    ex.log_learning(other, log, looked_at=t1)
    ex.log_learning(checkout, log, looked_at=t1)
    table = pd.read_csv(log)
    assert list(table.experiment_id) == ["exp_checkout_redesign", "exp_srm_banner"]
    assert table.set_index("experiment_id").loc["exp_checkout_redesign",
                                                "decision"] == "keep testing"
    ex.log_learning(other, tmp_path / "second.csv", looked_at=t1)
    ex.log_learning(checkout, tmp_path / "second.csv", looked_at=t1)
    assert (tmp_path / "second.csv").read_bytes() == log.read_bytes()
    assert first.splitlines()[0] == log.read_bytes().splitlines()[0]


def test_clear_errors(world) -> None:
    with pytest.raises(CXDataError, match="no rows for experiment 'nope'"):
        ex.analyze(world, "nope")
    with pytest.raises(ParameterError, match="unknown metric 'profit'"):
        ex.analyze(world, "exp_checkout_redesign", primary_metric="profit")
    with pytest.raises(CXDataError, match="control variant 'base'"):
        ex.analyze(world, "exp_checkout_redesign", control="base")
    with pytest.raises(ParameterError, match="bad direction"):
        ex.analyze(world, "exp_checkout_redesign", guardrails={"revenue": "down"})
    with pytest.raises(ParameterError, match="correction must be 'holm' or 'bh', not 'bonf'"):
        ex.analyze(world, "exp_checkout_redesign", correction="bonf")


def test_results_carry_the_documented_keys(checkout) -> None:
    out = checkout.results()
    assert {"experiment_id", "variants", "srm_p_value", "decision", "metrics"} <= set(out)
    for key, adjusted in (("conversion", False), ("conversion_cuped", True)):
        m = out["metrics"][key]
        assert {"control_mean", "treatment_mean", "abs_diff", "abs_ci", "rel_lift", "rel_ci",
                "p_value", "adjusted", "reported", "label"} <= set(m)
        assert m["adjusted"] is adjusted and m["reported"] is adjusted


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


# ------------------------------------------------------------------ issue 11, items 5 to 8


def _edge_world(folder: Path, kind: str, n: int = 400, seed: int = 1) -> Path:
    """Two arms, orders only. ``kind="zero"``: every order falls before its customer's
    assignment, so conversion is 0 for everyone in every window (zero variance).
    ``kind="control0"``: only treatment customers order, inside their window, so the
    control's conversion is 0 (and nobody has pre-period data)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    ids = np.array([f"K{i:05d}" for i in range(n)])
    pd.DataFrame({"customer_id": np.append(ids, "K99999"),
                  "signup_date": pd.Timestamp("2024-01-01").date()}).to_parquet(
        folder / "customers.parquet", index=False)
    var = np.where(rng.random(n) < 0.5, "control", "treatment")
    at = (pd.Timestamp("2025-03-01", tz="UTC")
          + pd.to_timedelta(rng.random(n) * 20, unit="D")).floor("s")
    pd.DataFrame({"experiment_id": "exp", "customer_id": ids, "variant": var,
                  "assigned_at": at}).to_parquet(folder / "assignments.parquet", index=False)
    if kind == "zero":
        buy = rng.random(n) < 0.3
        ts = at[buy] - pd.to_timedelta(1 + rng.random(buy.sum()) * 20, unit="D")
    else:
        buy = (rng.random(n) < 0.3) & (var == "treatment")
        ts = at[buy] + pd.to_timedelta(rng.random(buy.sum()) * 10, unit="D")
    k = int(buy.sum())
    orders = pd.DataFrame({"order_id": [f"O{i}" for i in range(k)], "customer_id": ids[buy],
                           "ts": ts.floor("s"), "channel": "web", "amount": rng.gamma(2, 30, k)})
    # a customer outside the experiment orders late, so every window has closed
    late = pd.DataFrame({"order_id": ["Olate"], "customer_id": ["K99999"],
                         "ts": [pd.Timestamp("2025-05-01", tz="UTC")], "channel": "web",
                         "amount": [1.0]})
    pd.concat([orders, late]).to_parquet(folder / "orders.parquet", index=False)
    pd.DataFrame({"experiment_id": ["exp"], "name": ["edge"], "hypothesis": ["h"],
                  "control": ["control"], "start": [pd.Timestamp("2025-03-01", tz="UTC")],
                  "end": [pd.Timestamp("2025-03-25", tz="UTC")],
                  "planned_split": ["control:1,treatment:1"]}).to_parquet(
        folder / "experiments.parquet", index=False)
    return folder


def _window_orders(folder: Path) -> pd.DataFrame:
    """Orders inside their customer's 14-day window, joined to the assignment (pandas)."""
    a = pd.read_parquet(folder / "assignments.parquet")
    j = a.merge(pd.read_parquet(folder / "orders.parquet"), on="customer_id")
    return j[(j.ts >= j.assigned_at) & (j.ts < j.assigned_at + pd.Timedelta(days=14))]


def _text_of(res) -> str:
    return " ".join([res.summary(), ex.next_test(res), *res.notes,
                     res.sequential.note or ""])


def _strict_json(res) -> dict:
    from cxanalysis.results import dumps
    return json.loads(dumps(res.results()))  # what publish() writes: no NaN allowed


def test_item5_zero_variance_primary_is_not_testable(tmp_path: Path) -> None:
    folder = _edge_world(tmp_path / "w", "zero")
    assert _window_orders(folder).empty  # independent check: nobody converts in a window
    res = ex.analyze(open_source(folder), "exp", secondary_metrics=["revenue"])
    assert res.decision.verdict == "not testable" and res.decision.variant is None
    assert "conversion has no variance: it is 0 for every customer" in res.decision.reason
    assert not res.primary_testable
    text = _text_of(res)
    assert "nan" not in text.lower() and "not testable" in text
    out = _strict_json(res)  # the KeyError of publish(res.results()) is gone
    assert out["decision"] == "not testable"
    assert out["primary_testable"] is False
    assert "no variance" in out["primary_not_testable_reason"]
    assert out["reason"] == res.decision.reason
    assert out["sequential_first_significant_day"] is None
    assert res.sequential.first_significant_day() is None and res.sequential.note
    assert res.planning.empty and res.bayes.empty
    res.sequential.plot()  # an empty monitor still draws


def test_item5_control_conversion_zero_is_not_testable(tmp_path: Path) -> None:
    folder = _edge_world(tmp_path / "w", "control0")
    res = ex.analyze(open_source(folder), "exp", secondary_metrics=["revenue"])
    a = pd.read_parquet(folder / "assignments.parquet")
    n_c = int((a.variant == "control").sum())
    w = _window_orders(folder)
    assert not (w.variant == "control").any()
    assert res.decision.verdict == "not testable"
    assert f"the control's conversion is 0 (all {n_c:,} control customers" in res.decision.reason
    assert "nan" not in _text_of(res).lower()
    out = _strict_json(res)
    assert out["decision"] == "not testable" and out["primary_testable"] is False
    # the absolute difference is still published, against a pandas recomputation
    conv = out["metrics"]["conversion"]
    rate_t = w.customer_id.nunique() / int((a.variant == "treatment").sum())
    assert conv["abs_diff"] == pytest.approx(rate_t, rel=1e-12)
    assert conv["control_mean"] == 0 and conv["rel_lift"] is None
    assert out["sequential_first_significant_day"] is None
    # the rule still lets a failed guardrail speak first
    res_g = ex.analyze(open_source(folder), "exp", secondary_metrics=[],
                       guardrails={"revenue": "increase"}, sequential=False)
    assert res_g.decision.verdict == "don't ship"
    assert "Guardrail failed: revenue" in res_g.decision.reason
    assert "not testable" in res_g.decision.reason


def test_item6_cuped_fallback_is_stated_in_notes_and_results(world, tmp_path: Path) -> None:
    res = ex.analyze(world, "exp_checkout_redesign", pre_days=0, sequential=False,
                     secondary_metrics=["revenue", "orders"],
                     guardrails={"support_contacts": "increase"})
    cuped = ("CUPED not applied to conversion, revenue, orders, support_contacts: pre_days = 0 "
             "leaves no pre-period; the unadjusted estimates are reported.")
    assert cuped in res.notes
    assert set(res.cuped_not_applied) == {"conversion", "revenue", "orders", "support_contacts"}
    assert not res.table().adjusted.any() and res.variance_reduction_table().empty
    out = _strict_json(res)
    assert cuped in out["notes"] and set(out["cuped_not_applied"]) == set(res.cuped_not_applied)
    # the fallback is the unadjusted test itself, checked against statsmodels
    rows = res.per_customer().execute()
    bt, bc = _arms(rows, "converted")
    _, p = proportions_ztest([bt.sum(), bc.sum()], [len(bt), len(bc)])
    assert res.primary().p_value == pytest.approx(p, rel=REL)
    assert res.primary().metric == "conversion"
    # no pre-period data at all (pre_days > 0): the other reason, named per covariate
    edge = ex.analyze(open_source(_edge_world(tmp_path / "w", "control0")), "exp",
                      secondary_metrics=["revenue"])
    assert ("CUPED not applied to conversion, revenue: no pre-period data: pre_converted, "
            "pre_revenue are 0 for every customer in the 90 days before assignment; the "
            "unadjusted estimates are reported.") in edge.notes
    # switched off on purpose: nothing to explain
    off = ex.analyze(world, "exp_checkout_redesign", variance_reduction=False,
                     sequential=False, bayesian=False)
    assert off.cuped_not_applied == {} and not any("CUPED" in n for n in off.notes)


def test_item7_unadjusted_beside_adjusted_in_results_and_text(checkout, rows) -> None:
    out = checkout.results()
    m = out["metrics"]
    # every base-metric key of before is kept, each CUPED estimate sits beside it
    for name in ALL:
        assert name in m
        assert (f"{name}_cuped" in m) == ex.metric_spec(name).has_covariate
    raw, adj = m["conversion"], m["conversion_cuped"]
    assert (raw["adjusted"], raw["reported"], adj["adjusted"], adj["reported"]) == (
        False, False, True, True)
    assert adj["label"] == "conversion, CUPED-adjusted" and raw["label"] == "conversion"
    bt, bc = _arms(rows, "converted")
    assert raw["abs_diff"] == pytest.approx(bt.mean() - bc.mean(), rel=REL)
    yy, xx = rows.converted.to_numpy(float), rows.pre_converted.to_numpy(float)
    theta = np.cov(yy, xx, ddof=1)[0, 1] / np.var(xx, ddof=1)
    at, ac = _arms(rows.assign(a=yy - theta * (xx - xx.mean())), "a")
    assert adj["abs_diff"] == pytest.approx(at.mean() - ac.mean(), rel=REL)
    assert adj["p_value"] == pytest.approx(sps.ttest_ind(at, ac, equal_var=False).pvalue,
                                           rel=REL)
    # the decision names the estimate as readers do
    text = " ".join([checkout.decision.reason, checkout.summary(), *checkout.notes])
    assert "conversion, CUPED-adjusted: " in checkout.decision.reason
    assert "_cuped" not in text
    # the monitor's estimate is stated, and it is the unadjusted one
    assert checkout.sequential.estimate == "conversion, unadjusted"
    assert out["sequential_estimate"] == "conversion, unadjusted"
    assert ("Sequential monitoring uses conversion, unadjusted; the decision uses conversion, "
            "CUPED-adjusted.") in checkout.notes
    last = checkout.sequential.table().iloc[-1]
    assert last.abs_diff == pytest.approx(raw["abs_diff"], rel=REL)
    assert last.abs_diff != pytest.approx(adj["abs_diff"], rel=1e-6)


def test_item8_breakdown_blanks_relative_lift_like_analyze(world, checkout) -> None:
    t = checkout.table()
    assert t.loc[t.control_mean <= 0, "rel_lift"].isna().all()
    seg = checkout.breakdown("region", metric="nps", source=world).table()
    shown = seg.dropna(subset=["control_mean"])
    assert (shown.control_mean <= 0).any()
    assert shown.loc[shown.control_mean <= 0, "rel_lift"].isna().all()
    pos = shown[shown.control_mean > 0]
    np.testing.assert_allclose(pos.rel_lift, pos.treatment_mean / pos.control_mean - 1,
                               rtol=1e-12)
    # a positive control level keeps its relative lift, the closed form mu_t / mu_c - 1
    conv = checkout.breakdown("region", source=world).table().dropna(subset=["control_mean"])
    assert (conv.control_mean > 0).all()
    np.testing.assert_allclose(conv.rel_lift, conv.treatment_mean / conv.control_mean - 1,
                               rtol=1e-12)


# ------------------------------------------------------------------ issue 16, items 6 to 9


def test_item6_guardrail_statuses_and_margins_in_results(checkout) -> None:
    g = checkout.guardrails.set_index("metric")
    sup = _row(checkout, "support_contacts_cuped")
    # default margin: 5 % of the control level, in the metric's units
    assert g.loc["support_contacts", "margin"] == ex.GUARDRAIL_MARGIN == 0.05
    assert g.loc["support_contacts", "margin_abs"] == pytest.approx(0.05 * sup.control_mean)
    # the interval allows harm beyond the 5 % margin (about +17 % of the control level)
    assert g.loc["support_contacts", "worst_harm"] == pytest.approx(sup.abs_ci_high)
    assert g.loc["support_contacts", "worst_harm"] > 2 * g.loc["support_contacts", "margin_abs"]
    assert g.loc["support_contacts", "status"] == "inconclusive"
    assert "allows harm up to" in g.loc["support_contacts", "statement"]
    csat = _row(checkout, "csat")  # bad direction: decrease, so the worst harm is -ci_low
    assert g.loc["csat", "worst_harm"] == pytest.approx(-csat.abs_ci_low)
    out = checkout.results()
    # csat: its interval excludes harm of the margin (0.05 x ~4.1 points) -> pass
    assert g.loc["csat", "worst_harm"] < g.loc["csat", "margin_abs"]
    assert out["guardrails"] == {"support_contacts": "inconclusive", "csat": "pass"}
    assert set(out["guardrail_details"]["csat"]) >= {"status", "margin", "margin_abs", "abs_ci",
                                                     "statement"}
    assert "safe" not in json.dumps(out)
    # customers per arm to rule out harm of the margin with 80 % power, no true harm:
    # closed form n * ((z_.975 + z_.8) se / M)^2
    n_now = min(sup.n_control, sup.n_treatment)
    z = sps.norm.isf(0.025) + sps.norm.isf(0.2)
    want = n_now * (z * sup.se / g.loc["support_contacts", "margin_abs"]) ** 2
    assert g.loc["support_contacts", "customers_per_arm_needed"] == int(np.ceil(want))


def test_item6_guardrail_parameter_forms_and_errors(world) -> None:
    with pytest.raises(ValueError, match="bad direction"):
        ex.guardrail_specs({"csat": {"margin": 0.1}})
    with pytest.raises(ValueError, match="not both"):
        ex.guardrail_specs({"csat": {"direction": "decrease", "margin": 0.1, "margin_abs": 1}})
    with pytest.raises(ValueError, match="unknown keys"):
        ex.guardrail_specs({"csat": {"direction": "decrease", "limit": 0.1}})
    with pytest.raises(ValueError, match=">= 0"):
        ex.guardrail_specs({"csat": "decrease"}, default_margin=-1)
    g = ex.guardrail_specs({"a": "increase", "b": {"direction": "decrease", "margin": 0.2}},
                           default_margin=0.1)
    assert g["a"] == ex.Guardrail("a", "increase", 0.1, None)
    assert g["b"].margin_for(2.0) == pytest.approx(0.4)
    assert np.isnan(g["b"].margin_for(-40.0))  # relative to a negative NPS: undefined


def test_item6_significant_harm_fails_whatever_the_margin(tmp_path: Path) -> None:
    folder = _tiny_world(tmp_path / "w", variants=("control", "treatment"), lifts=(0.0, 0.15))
    res = ex.analyze(open_source(folder), "exp", secondary_metrics=[], pre_days=30,
                     planned_customers=1000,
                     guardrails={"orders": {"direction": "increase", "margin": 10.0}})
    g = res.guardrails.iloc[0]
    assert g.abs_ci_low > 0 and g.status == "fail"
    assert res.decision.verdict == "don't ship" and "Guardrail failed: orders" in \
        res.decision.reason


def _window_feedback(folder: Path, experiment_id: str) -> pd.DataFrame:
    """Per assigned customer of the experiment: variant and the survey metrics of item 7,
    recomputed in pandas from the raw tables."""
    a = pd.read_parquet(folder / "assignments.parquet")
    a = a[a.experiment_id == experiment_id][["customer_id", "variant", "assigned_at"]]
    f = pd.read_parquet(folder / "feedback.parquet")
    j = a.merge(f, on="customer_id")
    j = j[(j.ts >= j.assigned_at) & (j.ts < j.assigned_at + pd.Timedelta(days=14))].copy()
    j["pts"] = np.where(j.nps >= 9, 100.0, np.where(j.nps <= 6, -100.0, 0.0))
    j.loc[j.nps.isna(), "pts"] = np.nan
    per = j.groupby("customer_id").agg(responded=("ts", "size"), pts=("pts", "mean"),
                                       csat=("csat", "mean"))
    out = a.set_index("customer_id").join(per)
    out["responded"] = (out.responded.fillna(0) > 0).astype(int)
    out["nps_cust"] = out.pts.fillna(0.0)
    out["csat_sat"] = (out.csat >= 4).astype(int)
    return out


def test_item7_survey_metrics_per_assigned_customer_match_pandas(world, world_path: Path
                                                                  ) -> None:
    from statsmodels.stats.proportion import proportions_ztest

    res = ex.analyze(world, "exp_checkout_redesign", secondary_metrics=[
        "nps_assigned", "csat_satisfied", "response_rate", "nps"], guardrails={},
        variance_reduction=False, sequential=False, bayesian=False)
    want = _window_feedback(world_path, "exp_checkout_redesign")
    got = res.per_customer().execute().set_index("customer_id").loc[want.index]
    for col in ("responded", "nps_cust", "csat_sat"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                   atol=1e-9, err_msg=col)
    arms = {v: want[want.variant == v] for v in ("treatment", "control")}
    r = _row(res, "nps_assigned")
    t = sps.ttest_ind(arms["treatment"].nps_cust, arms["control"].nps_cust, equal_var=False)
    assert r.abs_diff == pytest.approx(arms["treatment"].nps_cust.mean()
                                       - arms["control"].nps_cust.mean(), rel=1e-9)
    assert r.p_value == pytest.approx(t.pvalue, rel=1e-6)
    # every assigned customer is a unit: the respondents' NPS times the response rate
    c = arms["control"]
    resp = c[c.pts.notna()]
    assert r.control_mean == pytest.approx(resp.pts.mean() * len(resp) / len(c), rel=1e-9)
    for metric, col in (("response_rate", "responded"), ("csat_satisfied", "csat_sat")):
        r = _row(res, metric)
        count = [arms[v][col].sum() for v in ("treatment", "control")]
        nobs = [len(arms[v]) for v in ("treatment", "control")]
        _z, p = proportions_ztest(count, nobs)
        assert r.p_value == pytest.approx(p, rel=1e-6), metric
        assert r.n_control == len(c)
    # the respondent-based NPS compares fewer customers, chosen after treatment
    assert res.table().set_index("metric").loc["response_rate", "treatment_mean"] != \
        res.table().set_index("metric").loc["response_rate", "control_mean"]
    assert any("respondents" in n for n in res.notes)


def test_item8_before_the_planned_end_the_decision_is_keep_running(tmp_path: Path) -> None:
    # experiments.end is 2025-03-25: the horizon is 2025-04-08, after the last order
    folder = _tiny_world(tmp_path / "w", variants=("control", "treatment"), lifts=(0.0, 0.08))
    # mde 0.05 (a narrow monitor, tau = 0.05 x control level): the always-valid test has not
    # rejected yet, so only the fixed-horizon p could have shipped
    res = ex.analyze(open_source(folder), "exp", secondary_metrics=[], pre_days=30, mde=0.05)
    assert res.horizon["basis"] == "experiments.end" and not res.horizon["reached"]
    assert res.horizon["horizon_date"] == "2025-04-08"
    assert res.primary().p_adjusted < 0.05  # the fixed-horizon p would have shipped
    assert res.decision.verdict == "keep running" and res.decision.variant is None
    n = res.horizon["analysed_customers"]
    assert res.decision.reason.startswith(f"Running — {n:,} customers with a closed window")
    assert "is a peek" in res.decision.reason
    out = _strict_json(res)
    assert out["decision"] == "keep running" and out["horizon"]["reached"] is False
    assert "Keep exp running to its planned horizon" in ex.next_test(res)
    # with a planned size: "N of M customers"
    res = ex.analyze(open_source(folder), "exp", secondary_metrics=[], pre_days=30,
                     planned_customers=5000, mde=0.05)
    assert f"Running — {res.horizon['analysed_customers']:,} of 5,000 customers" in \
        res.decision.reason
    with pytest.raises(ParameterError, match="planned_customers"):
        ex.analyze(open_source(folder), "exp", planned_customers=0)


def test_item8_early_decisions_only_on_the_always_valid_test(tmp_path: Path) -> None:
    up = _tiny_world(tmp_path / "up", variants=("control", "treatment"), lifts=(0.0, 0.25))
    res = ex.analyze(open_source(up), "exp", secondary_metrics=[], pre_days=30, mde=0.5,
                     planned_customers=10**6)
    last = res.sequential.table().iloc[-1]
    assert last.always_valid_p < 0.05 and last.cs_low > 0
    assert res.decision.verdict == "ship" and res.decision.variant == "treatment"
    assert res.decision.reason.startswith("Stopped early on the always-valid test")
    down = _tiny_world(tmp_path / "down", variants=("control", "treatment"),
                       lifts=(0.25, 0.0))
    res = ex.analyze(open_source(down), "exp", secondary_metrics=[], pre_days=30, mde=0.5,
                     planned_customers=10**6)
    assert res.decision.verdict == "don't ship" and "is worse" in res.decision.reason
    # without the monitor nothing can decide before the horizon
    res = ex.analyze(open_source(up), "exp", secondary_metrics=[], pre_days=30, mde=0.5,
                     planned_customers=10**6, sequential=False)
    assert res.decision.verdict == "keep running"
    assert "always-valid test is not available" in res.decision.reason


def test_item8_without_a_plan_the_data_end_is_the_horizon_and_said_so(tmp_path: Path) -> None:
    folder = _tiny_world(tmp_path / "w", variants=("control", "treatment"), lifts=(0.0, 0.08))
    (folder / "experiments.parquet").unlink()
    res = ex.analyze(open_source(folder), "exp", secondary_metrics=[], pre_days=30)
    assert res.horizon["basis"] == "none" and res.horizon["reached"]
    assert res.decision.verdict == "ship"
    assert any(n.startswith("No planned horizon") for n in res.notes)


def _dl_shrink(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """DerSimonian-Laird tau^2 and the normal-normal posterior mean, written out."""
    w = 1 / s**2
    fe = np.sum(w * y) / np.sum(w)
    q = np.sum(w * (y - fe) ** 2)
    tau2 = max(0.0, (q - (len(y) - 1)) / (np.sum(w) - np.sum(w**2) / np.sum(w)))
    mu = np.sum(y / (s**2 + tau2)) / np.sum(1 / (s**2 + tau2))
    return (tau2 * y + s**2 * mu) / (tau2 + s**2)


def test_item9_no_group_is_named_without_heterogeneity(world, checkout) -> None:
    seg = checkout.breakdown("age_band", source=world)
    h = seg.heterogeneity.iloc[0]
    assert h.p_value > 0.05 and not seg.differs()
    text = seg.summary()
    assert "no evidence that the effect differs by age_band" in text
    assert not any(str(g) in text for g in seg.frame.group)  # no group is singled out
    f = seg.frame.dropna(subset=["se"])
    np.testing.assert_allclose(f.shrunk_diff, _dl_shrink(f.abs_diff.to_numpy(),
                                                         f.se.to_numpy()), rtol=1e-10)
    # the shrunk estimates are closer together than the raw ones
    assert np.ptp(f.shrunk_diff) < np.ptp(f.abs_diff)
    z = sps.norm.isf(0.025)
    np.testing.assert_allclose(f.shrunk_ci_high - f.shrunk_diff, z * f.shrunk_se)


def test_item9_groups_are_named_when_the_interaction_test_rejects(strong_world, strong: Path
                                                                   ) -> None:
    res = ex.analyze(strong_world, "exp_app_onboarding", secondary_metrics=[], sequential=False)
    personas = pd.read_parquet(strong / "truth" / "personas.parquet")
    seg = res.breakdown(personas[["customer_id", "persona"]])
    assert seg.differs()
    text = seg.summary()
    assert "the effect differs by persona" in text and "loyal_app_regular" in text
    top = seg.frame.sort_values("shrunk_diff").iloc[-1]
    assert top.group == "loyal_app_regular"
    assert "largest for loyal_app_regular" in ex.next_test(res, [seg])


def test_item9_persona_calibration_after_the_first_assignment_warns(world) -> None:
    res = ex.analyze(world, "exp_checkout_redesign", secondary_metrics=[], guardrails={},
                     sequential=False, bayesian=False)
    first = res.first_assigned
    assert str(first.date()) == "2025-10-01"
    assert res.check_persona_calibration(["2025-01-01", "2025-09-30"]) is None
    assert res.results()["warnings"] == []
    msg = res.check_persona_calibration(["2025-01-01", "2025-10-01"])  # includes day 1
    assert msg is not None and "after the first assignment" in msg and "bad control" in msg
    assert res.results()["warnings"] == [msg]
    res.check_persona_calibration(["2025-01-01", "2025-10-01"])  # no duplicate
    assert len(res.warnings) == 1
    assert res.check_persona_calibration(None) is None


def test_item9_notebook_03_checks_the_persona_window_and_prints_warnings() -> None:
    """The report computes the persona-calibration warning before the decision cell and
    prints every warning beside the (pinned) decision; results.json carries them."""
    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parents[2] / "notebooks"
                       / "03_test_and_learn.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    check = next(i for i, c in enumerate(code) if "check_persona_calibration(" in c)
    decision = next(i for i, c in enumerate(code) if "say(res.summary())" in c)
    assert check < decision
    assert "# NBVAL_CHECK_OUTPUT" in code[decision]
    assert "for w in res.warnings:" in code[decision]
    assert any("publish(" in c and "res.results()" in c for c in code[decision:])


def test_item8_horizon_from_a_naive_experiment_end_is_read_as_utc() -> None:
    end = pd.Timestamp("2025-03-25")  # a date without a zone (e.g. from a CSV)
    h = ex.horizon(None, end, 14, pd.Timestamp("2025-04-07 23:00", tz="UTC"), 10)
    assert h["horizon_date"] == "2025-04-08" and not h["reached"]
    assert ex.horizon(None, end, 14, pd.Timestamp("2025-04-08", tz="UTC"), 10)["reached"]
    h = ex.horizon(400, end, 14, pd.Timestamp("2025-01-01", tz="UTC"), 400)
    assert h["basis"] == "planned_customers" and h["reached"]
    assert h["text"] == "planned horizon reached — 400 of 400 customers"


def test_item8_early_stop_splits_alpha_across_treatments(tmp_path: Path) -> None:
    folder = _tiny_world(tmp_path / "w", lifts=(0.0, 0.0, 0.25))
    res = ex.analyze(open_source(folder), "exp", secondary_metrics=[], pre_days=30, mde=0.5,
                     planned_customers=10**6)
    last = res.sequential.table().groupby("variant").tail(1).set_index("variant")
    assert last.loc["c", "always_valid_p"] < 0.025 and last.loc["c", "cs_low"] > 0
    assert res.decision.verdict == "ship" and res.decision.variant == "c"
    assert "always-valid p below 0.025 (alpha / 2 treatments)" in res.decision.reason


def test_metric_columns_name_the_feedback_score_each_survey_metric_reads() -> None:
    """Notebook 03 skips a metric whose table or column the source lacks: the survey metrics
    per assigned customer read the nps/csat columns, the response rate only the table."""
    from cxanalysis.experiments import metric_spec

    assert metric_spec("nps").columns == ("feedback.nps",)
    assert metric_spec("nps_assigned").columns == ("feedback.nps",)
    assert metric_spec("csat_satisfied").columns == ("feedback.csat",)
    assert metric_spec("response_rate").columns == ()
    assert metric_spec("conversion").columns == ()
    assert metric_spec("event:support_contact").columns == ()


def test_sequential_always_valid_p_and_sequence_match_the_msprt_closed_form(checkout) -> None:
    """Normal-mixture mSPRT written out: likelihood ratio sqrt(V / (V + tau^2)) *
    exp(tau^2 d^2 / (2 V (V + tau^2))), p = min(1, 1 / running max), the sequence
    d +- sqrt(V (V + tau^2) / tau^2 * (log((V + tau^2) / V) + 2 log(1 / alpha))), intersected
    over the looks."""
    seq = checkout.sequential
    f = seq.table()
    tau2, alpha = seq.tau**2, seq.alpha
    rows = checkout.per_customer().execute()
    level = rows.loc[rows.variant == "control", "converted"].mean()
    assert seq.tau == pytest.approx(checkout.parameters["mde"] * level, rel=1e-12)
    v = f.se.to_numpy() ** 2
    d = f.abs_diff.to_numpy()
    lr = np.sqrt(v / (v + tau2)) * np.exp(tau2 * d**2 / (2 * v * (v + tau2)))
    np.testing.assert_allclose(f.always_valid_p, np.minimum(1, 1 / np.maximum.accumulate(lr)),
                               rtol=1e-9)
    half = np.sqrt(v * (v + tau2) / tau2 * (np.log((v + tau2) / v) + 2 * np.log(1 / alpha)))
    np.testing.assert_allclose(f.cs_low, np.maximum.accumulate(d - half), rtol=1e-9)
    np.testing.assert_allclose(f.cs_high, np.minimum.accumulate(d + half), rtol=1e-9)
    first = f[f.always_valid_p < alpha]
    assert seq.first_significant_day() == (None if first.empty else first.day.iloc[0])
    # each look's fixed-horizon test is the two-proportion z-test of the customers whose
    # window had closed by that day
    last = f.iloc[-1]
    bt, bc = _arms(rows, "converted")
    _z, p = proportions_ztest([bt.sum(), bc.sum()], [len(bt), len(bc)])
    assert last.p_value == pytest.approx(p, rel=1e-9)


def test_experiment_ids_and_the_variance_reduction_table(world, world_path: Path,
                                                         checkout) -> None:
    a = pd.read_parquet(world_path / "assignments.parquet")
    assert ex.experiment_ids(world) == sorted(a.experiment_id.unique())
    vr = checkout.variance_reduction_table().set_index("base_metric")
    t = checkout.table().set_index("metric")
    for m in ("conversion", "revenue", "orders"):
        assert vr.loc[m, "theta"] == t.loc[f"{m}_cuped", "theta"]
        assert vr.loc[m, "ci_width_cuped"] == pytest.approx(
            t.loc[f"{m}_cuped", "abs_ci_high"] - t.loc[f"{m}_cuped", "abs_ci_low"], rel=1e-12)
        assert vr.loc[m, "ci_width_unadjusted"] == pytest.approx(
            t.loc[m, "abs_ci_high"] - t.loc[m, "abs_ci_low"], rel=1e-12)
        # the CUPED interval is narrower by about sqrt(1 - variance reduction): the reduction
        # is the pooled one, the interval uses per-arm variances and Welch df (on the
        # calibrated world a metric with ~0 reduction comes out 0.35% wider)
        ratio = vr.loc[m, "ci_width_cuped"] / vr.loc[m, "ci_width_unadjusted"]
        assert ratio == pytest.approx(np.sqrt(1 - vr.loc[m, "variance_reduction"]), rel=1e-2)
    assert "nps" not in vr.index  # a ratio has no covariate
