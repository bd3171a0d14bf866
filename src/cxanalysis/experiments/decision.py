"""The decision rule of an experiment, where the test stands against its horizon, and the
suggestion for the next test."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cxanalysis.experiments.checks import SRM_ALPHA
from cxanalysis.experiments.results import Decision, Segmented, Sequential

if TYPE_CHECKING:
    from cxanalysis.experiments.results import ExperimentResult


def describe(r: pd.Series, alpha: float) -> str:
    """One effect row in words, the metric named as readers do ("conversion,
    CUPED-adjusted"): means, relative lift with interval (the absolute difference with
    its interval when no relative lift is defined), corrected p."""
    ci = f"{1 - alpha:.0%} CI"
    if pd.isna(r.rel_lift):
        lift = f"{r.abs_diff:+.4g}, {ci} {r.abs_ci_low:+.4g} to {r.abs_ci_high:+.4g}"
    else:
        lift = f"{r.rel_lift:+.1%}, {ci} {r.rel_ci_low:+.1%} to {r.rel_ci_high:+.1%}"
    return (f"{r.label}: {r.control_mean:.4g} -> {r.treatment_mean:.4g} "
            f"({lift}; corrected p = {r.p_adjusted:.2g})")


def horizon(planned_customers: int | None, end: Any, window_days: float,
             data_end: pd.Timestamp, analysed: int) -> dict[str, Any]:
    """Where the test stands against its planned horizon (see :func:`analyze`)."""
    out: dict[str, Any] = {"analysed_customers": int(analysed),
                           "planned_customers": planned_customers, "horizon_date": None}
    if planned_customers is not None:
        reached = analysed >= planned_customers
        out.update(basis="planned_customers", reached=reached,
                   text=(f"{'planned horizon reached' if reached else 'running'} — "
                         f"{analysed:,} of {planned_customers:,} customers"))
    elif end is not None:
        day = pd.Timestamp(end)
        # a naive end (a date) is read as UTC, like every instant of the data contract
        day = (day.tz_localize("UTC") if day.tzinfo is None else day) + pd.Timedelta(
            days=window_days)
        end_ts = pd.Timestamp(data_end)
        reached = (end_ts.tz_localize("UTC") if end_ts.tzinfo is None else end_ts) >= day
        out.update(basis="experiments.end", reached=reached, horizon_date=str(day.date()),
                   text=(f"planned horizon reached ({day:%Y-%m-%d}: experiments.end + "
                         f"{window_days:g} days, when the window of every customer assigned "
                         f"by the end has closed); {analysed:,} customers analysed"
                         if reached else
                         f"running — {analysed:,} customers with a closed window so far; "
                         f"the planned horizon is {day:%Y-%m-%d} (experiments.end + "
                         f"{window_days:g} days), the data end on {data_end:%Y-%m-%d}"))
    else:
        out.update(basis="none", reached=True,
                   text=(f"no planned horizon recorded (experiments.end or planned_customers): "
                         f"the end of the data ({data_end:%Y-%m-%d}) is taken as the horizon"))
    return out


def _guard_text(guard: pd.DataFrame, status: str) -> str:
    rows = guard[guard.status == status]
    return "; ".join(f"{g.metric} ({g.variant}): {g.statement}" for g in rows.itertuples())


def decide(prim: pd.DataFrame, guard: pd.DataFrame, srm_p: float, alpha: float, mde: float,
            planning: pd.DataFrame, not_testable: str | None = None,
            metric: str = "the primary metric", horizon: Mapping[str, Any] | None = None,
            seq: Sequential | None = None) -> Decision:
    """The decision rule of :func:`analyze` (documented there)."""
    horizon = horizon or {"reached": True, "text": ""}
    if srm_p < SRM_ALPHA:
        return Decision("don't ship", None,
                        f"Sample ratio mismatch (p = {srm_p:.2g}): the assignment is broken, so "
                        "no effect can be trusted. Fix the assignment and re-run the test.")
    failed = guard[guard.status == "fail"]
    unsure = guard[guard.status == "inconclusive"]
    harm = (f"Guardrail failed: {_guard_text(guard, 'fail')}." if len(failed) else "")
    testable = prim.dropna(subset=["p_adjusted"])
    if not_testable is None and testable.empty:
        not_testable = "no comparison could be computed"
    if not_testable is not None:
        untested = f"The primary metric ({metric}) is not testable: {not_testable}."
        if len(failed):  # a harm signal is reported whatever the primary metric does
            return Decision("don't ship", None, f"{harm} {untested}")
        return Decision("not testable", None,
                        f"{untested} No decision can be drawn from this test: make the "
                        "primary metric measurable (or choose one that varies) and re-run.")
    best = testable.sort_values(["p_adjusted", "abs_diff"], ascending=[True, False]).iloc[0]
    effect = describe(best, alpha)
    if len(failed):
        return Decision("don't ship", None, f"{harm} Primary: {effect}.")
    guards_ok = (f"every guardrail passed: {_guard_text(guard, 'pass')}" if len(guard)
                 else "no guardrails were set")
    if not horizon["reached"]:
        return decide_early(testable, guard, alpha, horizon, seq, metric, effect, guards_ok)
    pos = testable[(testable.p_adjusted < alpha) & (testable.abs_diff > 0)]
    if len(pos):
        win = pos.sort_values("abs_diff", ascending=False).iloc[0]
        if len(unsure):
            return Decision("keep testing", None,
                            f"{win.variant} improves {describe(win, alpha)}, but not every "
                            f"guardrail rules out harm beyond its margin: "
                            f"{_guard_text(guard, 'inconclusive')}. Ship only once no harm "
                            "beyond the margins is detected: extend the test or run a "
                            "follow-up sized for the guardrail (or accept that risk "
                            "explicitly).")
        return Decision("ship", str(win.variant), f"{win.variant} improves "
                                                  f"{describe(win, alpha)}; {guards_ok}.")
    if best.p_adjusted < alpha and best.abs_diff < 0:
        return Decision("don't ship", None, f"The treatment is significantly worse: {effect}.")
    if best.rel_ci_high < mde:
        return Decision("don't ship", None,
                        f"No significant effect, and the interval rules out a lift of "
                        f"{mde:+.0%} or more: {effect}.")
    days = planning.loc[planning.variant == best.variant, "days_needed"]
    more = (f" About {float(days.iloc[0]):,.0f} days of traffic in total would detect a "
            f"{mde:+.0%} lift with the planned power." if len(days) and
            np.isfinite(days.iloc[0]) else "")
    return Decision("keep testing", None,
                    f"Not significant, and the interval still allows a lift of {mde:+.0%}: "
                    f"{effect}.{more}")


def decide_early(testable: pd.DataFrame, guard: pd.DataFrame, alpha: float,
                  horizon: Mapping[str, Any], seq: Sequential | None, metric: str,
                  effect: str, guards_ok: str) -> Decision:
    """Before the planned horizon: only the always-valid test may stop the test (at
    ``alpha`` / number of treatments), the fixed-horizon p-value is shown for information
    only."""
    k = max(len(testable), 1)
    level = alpha / k
    running = f"Running — {horizon['text'].removeprefix('running — ')}."
    info = (f" The fixed-horizon estimate so far ({effect}) is not a decision: a p-value "
            "read before the planned horizon is a peek.")
    if seq is None or not len(seq.frame.dropna(subset=["always_valid_p"])):
        return Decision("keep running", None,
                        f"{running} The always-valid test is not available"
                        f"{' (' + seq.note + ')' if seq is not None and seq.note else ''}, so "
                        f"the test runs to its horizon.{info}")
    last = seq.frame.dropna(subset=["always_valid_p"]).groupby("variant").tail(1)
    hits = last[last.always_valid_p < level]
    worse = hits[hits.cs_high < 0]
    better = hits[hits.cs_low > 0]
    where = f"always-valid p below {level:.3g} (alpha / {k} treatment{'s' if k > 1 else ''})"
    if len(worse):
        w = worse.iloc[0]
        return Decision("don't ship", None,
                        f"Stopped early on the always-valid test: {w.variant} is worse on "
                        f"{metric} ({where}: p = {w.always_valid_p:.2g}, confidence sequence "
                        f"{w.cs_low:+.4g} to {w.cs_high:+.4g}). {running}")
    if len(better):
        b = better.sort_values("abs_diff", ascending=False).iloc[0]
        sure = (f"{where}: p = {b.always_valid_p:.2g}, confidence sequence {b.cs_low:+.4g} "
                f"to {b.cs_high:+.4g}")
        if (guard.status == "inconclusive").any():
            return Decision("keep running", None,
                            f"{running} {b.variant} is better on {metric} ({sure}), but not "
                            f"every guardrail rules out harm beyond its margin yet: "
                            f"{_guard_text(guard, 'inconclusive')}.")
        return Decision("ship", str(b.variant),
                        f"Stopped early on the always-valid test: {b.variant} improves "
                        f"{metric} ({sure}); {guards_ok}. {running}")
    p = float(last.always_valid_p.min())
    return Decision("keep running", None,
                    f"{running} Before the horizon only the always-valid test can decide; its "
                    f"p = {p:.2g} (needs < {level:.3g}).{info}")


def next_test(result: ExperimentResult, breakdowns: Sequence[Segmented] = ()) -> str:
    """A suggestion for the next iteration, from the decision, the planning figures and
    the breakdowns (a rule, stated in the text, not a model)."""
    d = result.decision
    plan = result.planning
    lines = []
    if result.srm_flagged:
        return ("Fix the assignment (the split does not match the plan) and re-run the same "
                "test before drawing any conclusion.")
    if not result.primary_testable:
        return (f"Make {result.primary_metric} measurable in every arm (or choose a primary "
                f"metric that varies), then re-run {result.experiment_id}: this run cannot "
                "support a decision.")
    hetero = [(s, h) for s in breakdowns for h in s.heterogeneity.itertuples()
              if not pd.isna(h.p_value) and h.p_value < result.alpha]
    if d.verdict == "ship":
        lines.append(f"Ship {d.variant}, then test the next change on the same primary metric.")
    elif d.verdict == "keep running":
        lines.append(f"Keep {result.experiment_id} running to its planned horizon "
                     f"({result.horizon.get('text', '')}); decide then, or earlier only on the "
                     "always-valid test.")
    elif d.verdict == "keep testing" and (result.guardrails.status == "inconclusive").any() \
            and not result.effects.query("role == 'primary' and reported and "
                                         "p_adjusted < @result.alpha and abs_diff > 0").empty:
        g = result.guardrails[result.guardrails.status == "inconclusive"]
        need = [f"{r.metric} about {int(r.customers_per_arm_needed):,} customers per arm"
                for r in g.itertuples() if pd.notna(r.customers_per_arm_needed)]
        pw = result.parameters.get("power", 0.8)
        lines.append("The primary metric improved, but harm beyond the guardrail margin is not "
                     "ruled out for " + ", ".join(g.metric.unique()) + "."
                     + (f" To rule it out (if there is no true harm, with power {pw:.0%}): "
                        + "; ".join(need) + "." if need else ""))
    elif d.verdict == "keep testing" and len(plan):
        p = plan.iloc[0]
        # a relative MDE needs a positive control level, the days a finite sample size
        now = (f"the detectable lift is {p.mde_rel_now:+.1%}" if pd.notna(p.mde_rel_now)
               else f"the detectable difference is {p.mde_abs_now:+.4g}")
        need = (f"; {p.customers_per_arm_needed:,} per arm (about {p.days_needed:,.0f} days "
                f"at the current traffic) are needed for {p.target_rel_mde:+.0%}"
                if pd.notna(p.customers_per_arm_needed) and pd.notna(p.days_needed) else "")
        lines.append(f"Keep {result.experiment_id} running: with {p.customers_per_arm:,} "
                     f"customers per arm {now}{need}"
                     + (f", after a {p.variance_reduction:.0%} variance reduction."
                        if p.variance_reduction > 0.005 else "."))
    else:
        lines.append("Drop this change; record the learning and test a different hypothesis.")
    for s, h in hetero:
        # only where the interaction test says so, and on the shrunk estimates
        best = s.frame[(s.frame.variant == h.variant)].dropna(subset=["shrunk_diff"])
        if len(best):
            top = best.sort_values("shrunk_diff", ascending=False).iloc[0]
            lines.append(f"The effect differs by {s.by} (Cochran's Q p = {h.p_value:.2g}); it "
                         f"is largest for {top.group} ({top.shrunk_diff:+.3g}, shrunk): a "
                         f"follow-up targeted at that group is worth testing.")
    return " ".join(lines)
