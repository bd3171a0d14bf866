"""Views of the primary metric beyond the fixed-horizon test: planning (MDE, customers and
days needed), always-valid sequential monitoring (mSPRT) and the Bayesian view."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from cxanalysis import stats as st
from cxanalysis.experiments.metrics import Metric, effect_row
from cxanalysis.experiments.results import SEQ_COLS, Sequential

PLAN_COLS = ["variant", "customers_per_arm", "control_mean", "variance_reduction",
             "mde_abs_now", "mde_rel_now", "target_rel_mde", "customers_per_arm_needed",
             "customers_per_arm_per_day", "days_needed"]


def planning(prim: pd.DataFrame, c: st.Moments, spec: Metric, arm: Mapping[str, Any],
             treatments: list[str], alpha: float, power: float, mde: float, days: float,
             variance_reduction: bool) -> pd.DataFrame:
    """MDE reachable with the traffic seen, customers and days needed for ``mde``.

    The per-customer variance is the control arm's (for a ratio: the delta-method variance
    of the ratio times n), reduced by the mean CUPED variance reduction of the primary rows
    when ``variance_reduction``. ``mde_abs_now`` = (z_{1-alpha/2} + z_power) *
    sqrt(var/n_t + var/n_c) (:func:`cxanalysis.stats.mde`); ``customers_per_arm_needed`` =
    2 var (z_{1-alpha/2} + z_power)^2 / (mde x level)^2, rounded up; ``days_needed`` divides
    it by the customers per arm and day seen so far (the smaller arm over ``days``)."""
    base = spec.level(c)
    unit_var = spec.unit_variance(c)
    reduction = 0.0
    if variance_reduction:
        vr = prim["variance_reduction"].dropna()
        reduction = float(vr.mean()) if len(vr) else 0.0
    adj_var = unit_var * (1 - reduction)
    rows = []
    target = abs(mde * base)
    for v in treatments:
        nt = float(arm[v]["n"])
        mde_abs = st.mde(adj_var, adj_var, nt, c.n, alpha, power)
        need = st.sample_size_per_arm(adj_var, target, alpha, power) if target > 0 else np.nan
        per_day = min(nt, c.n) / days
        rows.append({"variant": v, "customers_per_arm": int(min(nt, c.n)),
                     "control_mean": base, "variance_reduction": reduction,
                     "mde_abs_now": mde_abs,
                     "mde_rel_now": mde_abs / base if st.relative_defined(base) else np.nan,
                     "target_rel_mde": mde, "customers_per_arm_needed": math.ceil(need)
                     if np.isfinite(need) else None,
                     "customers_per_arm_per_day": per_day,
                     "days_needed": need / per_day if per_day > 0 else np.nan})
    return pd.DataFrame(rows, columns=PLAN_COLS)


def sequential(daily: pd.DataFrame, spec: Metric, control: str, treatments: list[str],
               alpha: float, tau: float) -> Sequential:
    """mSPRT at each closing day; ``daily`` holds the moments by close_day and variant."""
    metric = spec.name
    cols = [c for c in daily.columns if c.startswith(f"{metric}__")] + ["n"]
    rows = []
    for v in treatments:
        both = daily[daily.variant.isin([control, v])]
        wide = both.pivot_table(index="close_day", columns="variant", values=cols,
                                aggfunc="sum", fill_value=0.0).sort_index().cumsum()
        for day, r in wide.iterrows():
            t, c = (spec.moments(r.xs(name, level="variant")) for name in (v, control))
            if min(t.n, c.n) < 2:
                continue
            try:
                e, _vr = spec.compare(t, c, alpha)
            except (ValueError, ZeroDivisionError):
                continue
            rows.append({"variant": v, "day": str((pd.Timestamp(0, tz="UTC")
                                                   + pd.Timedelta(days=int(day))).date()),
                         "n_control": int(c.n), "n_treatment": int(t.n), **effect_row(e)})
    frame = pd.DataFrame(rows).reindex(columns=SEQ_COLS[:9])
    note = None
    if not len(frame):
        note = "No look had two customers per arm with a testable comparison."
    elif not tau > 0:
        note = ("Not run: the mixing scale tau = mde x control level is 0, so no always-valid "
                "p-value exists.")
    if len(frame) and tau > 0:
        parts = []
        for _v, f in frame.groupby("variant", sort=False):
            f = f[f.se > 0].copy()
            p, lo, hi = st.msprt(f.abs_diff.to_numpy(), f.se.to_numpy() ** 2, tau**2, alpha)
            f["always_valid_p"], f["cs_low"], f["cs_high"] = p, lo, hi
            # a confidence sequence is intersected over time: it never widens again
            f["cs_low"] = f["cs_low"].cummax()
            f["cs_high"] = f["cs_high"].cummin()
            parts.append(f)
        frame = pd.concat(parts, ignore_index=True)
    return Sequential(metric, tau, alpha, frame.reindex(columns=SEQ_COLS),
                      estimate=f"{metric}, unadjusted", note=note)


def not_run(metric: str, alpha: float, why: str) -> Sequential:
    """An empty monitor that says why it was not run."""
    return Sequential(metric, 0.0, alpha, pd.DataFrame(columns=SEQ_COLS),
                      estimate=f"{metric}, unadjusted", note=why)


#: Monte Carlo draws of the Beta-binomial view.
BAYES_DRAWS = 200_000


def bayes(prim: pd.DataFrame, arm: Mapping[str, Any], control: str, spec: Metric,
          seed: int) -> pd.DataFrame:
    """P(treatment better) and expected losses of the primary metric, per treatment:
    Beta(1, 1) on each arm's rate for an unadjusted proportion (Monte Carlo with ``seed``),
    else a flat prior on the difference with the normal likelihood of the estimate."""
    rows = []
    c = spec.moments(arm[control])
    for _i, r in prim.iterrows():
        if pd.isna(r.abs_diff):
            continue
        if spec.kind == "proportion" and not r.adjusted:
            pb, ls, lk = st.bayes_proportions(spec.moments(arm[r.variant]), c,
                                              draws=BAYES_DRAWS, seed=seed)
            prior = "Beta(1, 1) on each arm's rate (uniform); 200,000 Monte Carlo draws"
        else:
            pb, ls, lk = st.bayes_normal(r.abs_diff, r.se)
            prior = ("flat prior on the difference, normal likelihood of the "
                     + ("CUPED-adjusted " if r.adjusted else "") + "estimate")
        rows.append({"variant": r.variant, "metric": r.metric, "p_treatment_better": pb,
                     "expected_loss_if_ship": ls, "expected_loss_if_keep": lk,
                     "prior": prior})
    return pd.DataFrame(rows)
