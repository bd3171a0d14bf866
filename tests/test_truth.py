"""Each method against the synthetic world's planted truth (issue 16 item 13, issue 12 item 5).

The demo world (5,000 customers, seed 42) plants truths that a careless method gets wrong:
a channel that looks bad only because of who uses it, touches that do nothing, realistic
(small) experiment lifts, survey response changed by treatment, overlapping and drifting
personas and a small real demographic effect. The truth is read from ``truth/truth.json``
and ``truth/personas.parquet``, never hard-coded here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxanalysis import experiments as ex
from cxanalysis import painpoints as pp
from cxanalysis.funnel import funnel
from cxanalysis.synth import WORLD, generate

STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]


@pytest.fixture(scope="module")
def truth(world_path: Path) -> dict:
    return json.loads((world_path / "truth" / "truth.json").read_text())


@pytest.fixture(scope="module")
def hidden(world_path: Path) -> pd.DataFrame:
    return pd.read_parquet(world_path / "truth" / "personas.parquet")


def _row(res, metric: str) -> pd.Series:
    return res.table().set_index("metric").loc[metric]


# ------------------------------------------------------------ a demo that looks like a business


def test_calibration_is_an_ordinary_online_retailer(world_path: Path, truth) -> None:
    """The published orders of magnitude of the module docstring, recomputed from the tables
    (independently of the generator's own counts, which must agree)."""
    cal = truth["calibration"]
    orders = pd.read_parquet(world_path / "orders.parquet")
    customers = pd.read_parquet(world_path / "customers.parquet")
    fb = pd.read_parquet(world_path / "feedback.parquet")
    aov = orders.amount.mean()
    per = orders.groupby("customer_id").size()
    answered = fb.nps.dropna()
    nps = 100 * ((answered >= 9).mean() - (answered <= 6).mean())
    assert cal["aov"] == pytest.approx(aov, rel=1e-9)
    assert cal["orders_per_customer"] == pytest.approx(len(orders) / len(customers), rel=1e-9)
    assert cal["repeat_rate"] == pytest.approx((per >= 2).mean(), rel=1e-9)
    assert cal["nps"] == pytest.approx(nps, rel=1e-9)
    assert 70 <= aov <= 120
    assert 0.5 <= len(orders) / len(customers) <= 2.0
    assert 0.2 <= (per >= 2).mean() <= 0.6
    assert -10 <= nps <= 50  # issue 12 item 5 (the old world: -46)
    assert 0.02 <= cal["attempt_conversion_7d"] <= 0.05


def test_funnel_attempt_conversion_is_a_few_percent(world) -> None:
    """Issue 12 item 5: the funnel's own per-attempt visit -> purchase within 7 days is a
    few percent (the old world: 25.6% of journeys, 78.5% of customers)."""
    res = funnel(world, STEPS, unit="attempts").table().set_index("event")
    assert 0.02 <= res.loc["purchase", "conversion_from_first"] <= 0.08


# ------------------------------------------------------------ pain points and confounding


def test_confounded_channel_is_not_flagged_after_adjusting_for_persona(world, truth,
                                                                       hidden) -> None:
    """The confounded cell looks worse before adjustment and not within the true personas;
    the planted app-checkout pain point is the only flag after adjustment."""
    res = funnel(world, STEPS)
    adj = pp.adjusted_dropoff(res, hidden[["customer_id", "persona"]], "persona")
    cells = adj.table().set_index(["event", "next_event", "channel"])
    for c in truth["confounded_channels"]:
        cell = cells.loc[(c["step"], c["next_step"], c["channel"])]
        assert bool(cell["worse"]) and not bool(cell["worse_adjusted"]), c
        # within personas the channel is no worse: the odds ratio's interval covers 1
        assert cell["ci_low"] <= 1.0 <= cell["ci_high"]
    pain = truth["pain_points"][0]
    assert [(r.event, r.next_event, r.channel) for r in adj.flagged.itertuples()] == [
        (pain["step"], pain["next_step"], pain["channel"])]


# ------------------------------------------------------------ inert touches and attribution


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inert_channel_changes_no_order_but_attribution_credits_it(tmp_path: Path, world,
                                                                   truth) -> None:
    """Truth of the inert channel, checked by intervention: the same world without any
    awareness touch has byte-identical orders (incremental effect exactly 0), while
    path-based credit gives email a clear share (credit, not incrementality)."""
    from cxanalysis.attribution import attribute
    from cxanalysis.journeys import TOUCH_STAGES, journey_paths

    inert = truth["inert_channel"]
    assert truth["channel_effects"][inert]["incremental_conversions"] == 0.0
    silent = replace(WORLD, personas={n: replace(p, p_intro=0.0)
                                      for n, p in WORLD.personas.items()})
    a = generate(600, seed=3, out=tmp_path / "with")
    b = generate(600, seed=3, out=tmp_path / "without", world=silent)
    ea = pd.read_parquet(a / "events.parquet")
    eb = pd.read_parquet(b / "events.parquet")
    assert (ea.event == "email_open").sum() > 100 and (eb.event == "email_open").sum() == 0
    assert _digest(a / "orders.parquet") == _digest(b / "orders.parquet")
    credit = attribute(journey_paths(world, stages=TOUCH_STAGES), n_boot=0).table()
    assert credit.loc[inert, "markov"] > 0.05  # credited although it causes nothing
    assert abs(credit.loc[inert, "shapley"]) < credit.loc[inert, "markov"]


# ------------------------------------------------------------ experiments


def test_experiment_estimates_cover_the_planted_lifts(world, truth) -> None:
    """Every experiment's conversion interval covers the realised planted lift (0 to ~10%
    relative), the SRM is flagged where planted, the nulls are not significant, and a real
    lift that is not detected is one the test was too small to detect reliably (its
    minimum detectable effect at 80% power exceeds the planted lift)."""
    for eid, planted in truth["experiments"].items():
        res = ex.analyze(world, eid, secondary_metrics=[], guardrails={}, sequential=False,
                         bayesian=False)
        r = _row(res, "conversion")
        assert r.abs_ci_low <= planted["expected_abs_lift"] <= r.abs_ci_high, eid
        assert res.srm_flagged == planted["srm"], eid
        rel = planted["expected_rel_lift"]
        assert rel is not None and 0 <= rel <= 0.12, eid  # realistic: 0 to ~10%
        if planted["expected_abs_lift"] == 0:
            assert r.p_value > 0.01, eid
        elif r.p_value >= 0.05:
            assert res.planning.mde_rel_now.iloc[0] > rel, eid
    # the triggered test is the one a demo-sized test can nearly afford: its minimum
    # detectable lift is within ~1.5x of the planted one (the untriggered ones are >3x off)
    checkout = ex.analyze(world, "exp_checkout_redesign", secondary_metrics=[], guardrails={},
                          sequential=False, bayesian=False)
    rel = truth["experiments"]["exp_checkout_redesign"]["expected_rel_lift"]
    assert checkout.planning.mde_rel_now.iloc[0] < 1.5 * rel


def test_persona_only_lift_is_covered_in_that_persona(world, truth, hidden) -> None:
    planted = truth["experiments"]["exp_app_onboarding"]
    res = ex.analyze(world, "exp_app_onboarding", secondary_metrics=[], guardrails={},
                     sequential=False, bayesian=False)
    seg = res.breakdown(hidden[["customer_id", "persona"]]).table().set_index("group")
    for persona, lift in planted["expected_abs_lift_by_persona"].items():
        lo, hi = seg.loc[persona, ["abs_ci_low", "abs_ci_high"]]
        assert lo <= lift <= hi, persona


def test_treatment_changes_who_responds(world, truth) -> None:
    """The checkout test shows its survey on the confirmation page: treated buyers answer
    more often, so the response rate differs between arms (issue 16 item 7)."""
    assert truth["experiments"]["exp_checkout_redesign"]["survey_response_changed"]
    res = ex.analyze(world, "exp_checkout_redesign", secondary_metrics=["response_rate"],
                     guardrails={}, sequential=False, bayesian=False)
    r = _row(res, "response_rate")
    assert r.abs_diff > 0 and r.p_value < 0.005  # the planted effect detectable at demo size
    null = ex.analyze(world, "exp_email_subject", secondary_metrics=["response_rate"],
                      guardrails={}, sequential=False, bayesian=False)
    assert not truth["experiments"]["exp_email_subject"]["survey_response_changed"]
    assert _row(null, "response_rate").p_value > 0.01


# ------------------------------------------------------------ personas and demographics


def test_personas_drift_and_overlap(world_path: Path, truth, hidden) -> None:
    """About p_persona_switch of customers switch persona during the year, and their channel
    mix follows: switchers into the app persona use the app more after the switch."""
    p = truth["drift"]["p_persona_switch"]
    moved = hidden.persona != hidden.persona_end
    assert moved.mean() == pytest.approx(p, abs=0.02)
    assert hidden.switched_at.notna().sum() == moved.sum()
    ev = pd.read_parquet(world_path / "events.parquet", columns=["customer_id", "ts", "channel",
                                                                  "event"])
    ev = ev[ev.event == "visit"].merge(hidden[moved], on="customer_id")
    to_app = ev[(ev.persona_end == "loyal_app_regular") & (ev.persona != "loyal_app_regular")]
    after = to_app.ts >= to_app.switched_at
    share = to_app.assign(app=to_app.channel == "app").groupby(after).app.mean()
    assert share[True] > share[False] + 0.3


def test_income_has_a_small_real_effect_on_order_value(world_path: Path, truth,
                                                       hidden) -> None:
    """Within persona (customers who never switched), order values of high-income customers
    are higher by the planted ratio; the effect is small next to the persona differences."""
    want = truth["demographic_effects"]["basket_by_income"]
    o = pd.read_parquet(world_path / "orders.parquet")
    c = pd.read_parquet(world_path / "customers.parquet")
    stay = hidden[hidden.persona == hidden.persona_end]
    df = o.merge(c[["customer_id", "income_band"]]).merge(stay, on="customer_id")
    # gross basket (amount + discount) is persona basket x income x lognormal noise
    df["gross"] = np.log(df.amount + df.discount)
    centred = df.gross - df.groupby("persona").gross.transform("mean")
    by = centred.groupby(df.income_band).mean()
    ratio = np.exp(by["high"] - by["low"])
    assert ratio == pytest.approx(want["high"] / want["low"], rel=0.06)
    persona_spread = np.exp(df.groupby("persona").gross.mean()).agg(["min", "max"])
    assert persona_spread["max"] / persona_spread["min"] > 2 * ratio


# ------------------------------------------------------------ truth-appendix helpers


def test_confounded_flags_reads_each_adjustment() -> None:
    from cxanalysis.synth import confounded_flags

    truth = {"confounded_channels": [{"step": "visit", "next_step": "view", "channel": "store"},
                                     {"step": "view", "next_step": "cart", "channel": "chat"}]}
    table = pd.DataFrame({"event": ["visit", "visit"], "next_event": ["view", "view"],
                          "channel": ["store", "web"], "worse": [True, False],
                          "worse_adjusted": [False, True]})
    out = confounded_flags(truth, estimated=table, true=None)
    assert list(out.columns) == ["step", "next_step", "channel", "estimated_raw",
                                 "estimated_adjusted"]
    assert out.loc[0, "estimated_raw"] is True and out.loc[0, "estimated_adjusted"] is False
    assert out.loc[1, ["estimated_raw", "estimated_adjusted"]].isna().all()  # not tested


def test_credit_vs_incrementality_puts_the_truth_beside_the_credit() -> None:
    from cxanalysis.synth import credit_vs_incrementality

    truth = {"channel_effects": {"email": {"incremental_conversions": 0.0, "inert": True}}}
    credit = pd.DataFrame({"markov": [0.14, 0.86]}, index=pd.Index(["email", "web"],
                                                                    name="channel"))
    out = credit_vs_incrementality(truth, credit)
    assert list(out.columns) == ["inert", "true_incremental", "markov"]
    assert out.loc["email", "true_incremental"] == 0.0 and bool(out.loc["email", "inert"])
    assert np.isnan(out.loc["web", "true_incremental"]) and not out.loc["web", "inert"]
    assert out.loc["email", "markov"] == 0.14  # the credit itself is untouched


def test_experiment_vs_truth_says_whether_the_interval_covers() -> None:
    from cxanalysis.synth import experiment_vs_truth

    truth = {"experiments": {"e": {"expected_abs_lift": 0.05, "expected_rel_lift": 0.1,
                                   "srm": False, "survey_response_changed": True}}}
    effects = pd.DataFrame({"metric": ["conversion", "conversion_cuped", "response_rate"],
                            "abs_diff": [0.02, 0.03, 0.07], "abs_ci_low": [-0.01, 0.0, 0.03],
                            "abs_ci_high": [0.04, 0.06, 0.11],
                            "p_value": [0.2, 0.05, 0.001]})
    out = experiment_vs_truth(truth, "e", effects, srm_flagged=False).set_index("metric")
    assert out.loc["conversion", "estimate"] == 0.02  # the unadjusted row
    assert out.loc["conversion", "covered"] is False  # 0.05 outside [-0.01, 0.04]
    assert out.loc["conversion", "planted_rel"] == 0.1
    assert out.loc["response_rate", "planted"].startswith("changed")
    assert out.loc["sample ratio mismatch", "covered"] is True
    assert experiment_vs_truth(truth, "other", effects, False) is None
