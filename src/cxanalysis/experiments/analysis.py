"""The analysis pipeline: :func:`analyze` as a sequence of named steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis
import numpy as np
import pandas as pd
from ibis import _

from cxanalysis import stats as st
from cxanalysis.data import CXDataError, Source, materialize
from cxanalysis.errors import ParameterError
from cxanalysis.experiments import checks as ck
from cxanalysis.experiments import planning as pl
from cxanalysis.experiments.decision import decide, horizon
from cxanalysis.experiments.engine import (
    activity,
    assignments,
    epoch_us_of,
    experiment_ids,
    keys_validated,
    per_customer_assignment,
    single_variant_units,
    us,
    with_sums,
    with_window,
)
from cxanalysis.experiments.guardrails import (
    GUARDRAIL_MARGIN,
    Guardrail,
    guardrail_rows,
    guardrail_specs,
)
from cxanalysis.experiments.metrics import EFFECT_COLUMNS, Metric, effect_row, metric_spec
from cxanalysis.experiments.results import ExperimentResult
from cxanalysis.privacy import MIN_GROUP_SIZE

#: Secondary metrics by default (notebook 03's default; a test keeps them equal).
DEFAULT_SECONDARY = ("revenue", "orders", "revenue_per_order", "nps_assigned", "response_rate")
#: Guardrails by default, those the source can measure (notebook 03's default).
DEFAULT_GUARDRAILS: Mapping[str, Any] = {"support_contacts": "increase",
                                         "csat_satisfied": "decrease"}
CORRECTIONS = ("holm", "bh")


def analyze(
    source: Source,
    experiment_id: str,
    control: str | None = None,
    primary_metric: str = "conversion",
    secondary_metrics: Sequence[str] = DEFAULT_SECONDARY,
    guardrails: Mapping[str, Any] | None = None,
    guardrail_margin: float = GUARDRAIL_MARGIN,
    planned_customers: int | None = None,
    window_days: float = 14,
    pre_days: float = 90,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float = 0.10,
    variance_reduction: bool = True,
    correction: str = "holm",
    sequential: bool = True,
    bayesian: bool = True,
    seed: int = 0,
    min_group_size: int = MIN_GROUP_SIZE,
) -> ExperimentResult:
    """Evaluate one experiment.

    Parameters
    ----------
    source : Source
        Needs ``assignments`` and the tables of the metrics (``experiments`` optional).
    experiment_id : str
    control : str, optional
        Control variant; default: ``experiments.control``, else ``"control"``.
    primary_metric, secondary_metrics : str
        Names from :data:`METRICS` or ``event:<name>``. The defaults are notebook 03's
        (:data:`DEFAULT_SECONDARY`).
    guardrails : mapping metric -> "increase" | "decrease" | dict
        The direction that is *bad*, or ``{"direction": ..., "margin": relative}`` /
        ``{"direction": ..., "margin_abs": absolute}`` with the non-inferiority margin of
        that guardrail. None: :data:`DEFAULT_GUARDRAILS` (notebook 03's default), those of
        them whose tables and columns the source has.
    guardrail_margin : float
        Margin of the guardrails that do not state their own, relative to the control
        level (0.05: harm of 5 % of the control's level is tolerated). See the guardrail
        rule below.
    planned_customers : int, optional
        Planned sample size (customers across all arms with a closed analysis window): the
        planned horizon. None: the horizon is ``experiments.end`` + ``window_days`` (every
        customer assigned by the end has a closed window); when neither is known the end
        of the data is taken as the horizon and a note says so.
    window_days, pre_days : float
        Analysis window after ``assigned_at`` and pre-period before it, in days.
    alpha, power : float
        Two-sided significance level and power for planning.
    mde : float
        Smallest relative lift of the primary metric worth detecting (0.10 = +10 %); also
        the mSPRT mixing scale (tau = mde x control mean).
    variance_reduction : bool
        CUPED with the pre-period value of each metric as covariate (one theta pooled
        across all arms); reported beside the unadjusted result (rows ``<metric>`` and
        ``<metric>_cuped``); the CUPED row is the one the decision uses.
    correction : {"holm", "bh"}
        Multiple-comparison correction. Families: (1) the primary metric across all
        treatments; (2) the secondary metrics across metrics and treatments. Guardrails are
        not corrected (a harm signal should not be diluted).
    sequential, bayesian : bool
        Add always-valid monitoring and the Bayesian view of the primary metric.
    seed : int
        Seed of the Monte Carlo draws of the Bayesian view.
    min_group_size : int
        Breakdown groups with fewer customers in an arm are suppressed.

    Raises
    ------
    ParameterError
        A parameter is not allowed (correction, planned_customers, a guardrail, an unknown
        metric).
    CXDataError
        The data cannot support the analysis (no assignments for the experiment, no
        control customers, no closed window, a missing table or column).

    Guardrail rule
    --------------
    Each guardrail gets a status from the reported row's ``1 - alpha`` interval (uncorrected:
    a harm signal is not diluted) against its margin ``M`` (in the metric's units), with the
    difference oriented so that positive is harm (:func:`cxanalysis.stats.guardrail_status`):
    ``fail`` when the whole interval shows harm (significant harm, of any size);
    ``pass`` when the interval excludes harm of ``M`` or more ("no harm beyond M detected";
    never "safe"); ``inconclusive`` otherwise (and when the guardrail cannot be tested).

    Decision rule
    -------------
    At any look: ``don't ship`` when the sample ratio mismatches (p < 0.001) or a guardrail
    fails. Before the planned horizon (see ``planned_customers``) only the always-valid
    (mSPRT) test of the primary metric may decide, at ``alpha`` divided by the number of
    treatments: ``don't ship`` when its confidence sequence lies below 0, ``ship`` when it
    lies above 0 and every guardrail passes; otherwise ``keep running``, with "running — N
    of M customers". At the horizon, on the fixed-horizon test: ``don't ship`` when the best
    treatment's primary effect is significantly negative; ``ship`` (the treatment with the
    smallest corrected p) when its primary effect is significantly positive and every
    guardrail passes, ``keep testing`` when it is positive but a guardrail is inconclusive
    (harm beyond the margin not ruled out); otherwise ``don't ship`` when the interval
    already rules out a lift of ``mde``, else ``keep testing`` with the days needed.

    ``not testable`` (after the SRM and guardrail checks) when the primary metric cannot
    be tested: it has no variance in any arm, its control level is 0 (relative lift, the
    ``mde`` target and the monitoring scale are undefined), or no comparison could be
    computed. The reason is in ``decision.reason`` and ``not_testable_reason``; monitoring,
    planning and the Bayesian view are then not computed.

    CUPED falls back to the unadjusted estimate when a metric's pre-period covariate has
    no variance (``pre_days=0``, or no pre-period data); ``notes`` and
    ``cuped_not_applied`` say so. Relative lifts are NaN when the control level is not
    positive (:func:`cxanalysis.stats.relative_defined`, also used by breakdowns).
    """
    # 1. parameters: which metrics in which role, which guardrails
    _check_parameters(correction, planned_customers)
    source.require("assignments")
    gspecs = guardrail_specs(default_guardrails(source) if guardrails is None else guardrails,
                             guardrail_margin)
    secondary = [m for m in secondary_metrics if m != primary_metric]
    guard = [m for m in gspecs if m not in secondary and m != primary_metric]
    all_metrics = list(dict.fromkeys([primary_metric, *secondary, *guard]))
    specs = {m: metric_spec(m) for m in all_metrics}
    roles = {m: "primary" if m == primary_metric else "secondary" if m in secondary
             else "guardrail" for m in all_metrics}

    # 2. the end of observation, and who is assigned to what
    data_end = _data_end(source, specs)
    cutoff = epoch_us_of(data_end) - us(window_days)  # a later t0: window still open
    a = assignments(source, experiment_id)
    units = _assigned(source, a, experiment_id, window_days, cutoff)

    # 3. the design: planned split, control, variants, sample ratio
    d = _design(source, experiment_id, units.counts, control)
    outside = _outside_dates(a, d.info)

    # 4. one aggregation of every metric, per closing day and variant (engine side)
    closed = units.units.filter(units.units.t0 <= cutoff)
    act = activity(source, closed, all_metrics, window_days, pre_days,
                   t0_span=(epoch_us_of(units.first), epoch_us_of(units.last)))
    by = ["close_day", "variant"]
    daily = with_sums(units.per_day.loc[units.per_day.n > 0, [*by, "n"]], act, all_metrics, by)
    arm = _arms(daily, d.control, experiment_id, window_days, data_end)
    treatments = [v for v in d.variants if v != d.control and v in arm]

    # 5. effects: every metric x treatment, unadjusted and CUPED
    effects, cuped_not_applied = _effects(specs, roles, arm, d.control, treatments, alpha,
                                          variance_reduction, pre_days, d.notes)
    d.notes.extend(ck.cuped_notes(cuped_not_applied, specs, pre_days))
    d.notes.extend(_reading_notes(effects, all_metrics))

    # 6. corrections within families, then guardrails
    _correct(effects, correction, alpha)
    guard_df = guardrail_rows(effects, gspecs, alpha, power)

    # 7. checks: pre-period balance and the checks table
    bal = ck.balance(arm, d.control, treatments, specs)
    checks = ck.checks_table(units.raw, units.n_multi, outside, units.open_n, units.counts,
                             d.split, d.srm_chi2, d.srm_p, bal, d.info.get("start"),
                             d.info.get("end"), window_days, data_end)

    # 8. the primary metric: testable? then Bayes, planning and the monitor
    prim = effects[effects.reported & (effects.role == "primary")]
    spec_p = specs[primary_metric]
    why_not = ck.not_testable(spec_p, arm, d.control, treatments, prim, window_days, mde)
    views = _primary_views(prim, spec_p, arm, d.control, treatments, daily, why_not, alpha,
                           power, mde, units.days_assigning, variance_reduction, sequential,
                           bayesian, seed)
    d.notes.extend(views.notes)

    # 9. horizon and decision
    hz = horizon(planned_customers, d.info.get("end"), window_days, data_end,
                 int(units.per_day.n.sum()))
    if hz["basis"] == "none":
        d.notes.append(f"No planned horizon: {hz['text']}; a decision read at an arbitrary "
                       "date is a peek, so record experiments.end or pass planned_customers.")
    decision = decide(prim, guard_df, d.srm_p, alpha, mde, views.planning, why_not,
                      primary_metric, hz, views.sequential)

    # 10. the result, with the parameters the learning log records
    parameters = _parameters(primary_metric, secondary, gspecs, window_days, pre_days, alpha,
                             power, mde, variance_reduction, correction, sequential,
                             planned_customers)
    return ExperimentResult(
        experiment_id=experiment_id, name=d.info.get("name"),
        hypothesis=d.info.get("hypothesis"), control=d.control, variants=d.variants,
        primary_metric=primary_metric, alpha=alpha, correction=correction, effects=effects,
        checks=checks, balance=bal, srm_chi2=d.srm_chi2, srm_p_value=d.srm_p,
        counts=units.counts, planned_split=d.split, guardrails=guard_df, bayes=views.bayes,
        planning=views.planning, decision=decision, sequential=views.sequential,
        data_end=data_end, window_days=window_days, pre_days=pre_days, notes=d.notes,
        not_testable_reason=why_not, cuped_not_applied=cuped_not_applied, horizon=hz,
        parameters=parameters, first_assigned=pd.Timestamp(units.first),
        min_group_size=min_group_size, _units=closed, _activity=act)


# --------------------------------------------------------------------------- the steps


def _check_parameters(correction: str, planned_customers: int | None) -> None:
    if correction not in CORRECTIONS:
        raise ParameterError(f"correction must be 'holm' or 'bh', not {correction!r}")
    if planned_customers is not None and (isinstance(planned_customers, bool) or not (
            isinstance(planned_customers, int) and planned_customers > 0)):
        raise ParameterError(f"planned_customers must be a positive integer or None, not "
                             f"{planned_customers!r}")


def default_guardrails(source: Source) -> dict[str, Any]:
    """:data:`DEFAULT_GUARDRAILS` the source can measure (has their tables and columns)."""
    out = {}
    for m, v in DEFAULT_GUARDRAILS.items():
        s = metric_spec(m)
        if all(source.has(t) for t in s.tables) and all(
                c.split(".")[1] in source.table(c.split(".")[0]).columns for c in s.columns):
            out[m] = v
    return out


def _data_end(source: Source, specs: Mapping[str, Metric]) -> pd.Timestamp:
    """End of observation: the last timestamp of the tables the metrics read."""
    tables = sorted({t for s in specs.values() for t in s.tables})
    ends = [source.table(t).ts.max().execute() for t in tables]
    ends = [pd.Timestamp(e) for e in ends if e is not None and not pd.isna(e)]
    if not ends:
        raise CXDataError(f"the tables the metrics read ({', '.join(tables)}) have no rows "
                          "with a time")
    return max(ends)


@dataclass
class _Assigned:
    """The assigned units and their counts per closing day and variant."""

    units: ibis.Table  # timed single-variant customers with t0 and close_day
    per_day: pd.DataFrame  # close_day, variant, n_all, n_open, n (closed), lo, hi
    raw: dict[str, int]  # assignment rows, rows without a time
    n_multi: int  # customers in more than one variant

    @property
    def counts(self) -> dict[str, int]:
        return {str(v): int(n) for v, n in self.per_day.groupby("variant").n_all.sum().items()}

    @property
    def open_n(self) -> int:
        return int(self.per_day.n_open.sum())

    @property
    def first(self) -> Any:
        return self.per_day.lo.min()

    @property
    def last(self) -> Any:
        return self.per_day.hi.max()

    @property
    def days_assigning(self) -> float:
        return max((pd.Timestamp(self.last) - pd.Timestamp(self.first)).total_seconds()
                   / 86400, 1.0)


def _assigned(source: Source, a: ibis.Table, experiment_id: str, window_days: float,
              cutoff: int) -> _Assigned:
    """The units of the experiment, counted per closing day and variant in one scan."""

    def count_per_day(units: ibis.Table) -> pd.DataFrame:
        """Counts per variant and closing day, open windows among them, assignment span."""
        return units.group_by(["close_day", "variant"]).aggregate(
            n_all=_.count(), n_open=(_.t0 > cutoff).cast("int64").sum(),
            lo=_.assigned_at.min(), hi=_.assigned_at.max()).execute()

    # One row per customer is what the contract's key (experiment_id, customer_id) promises;
    # a validated source has had it checked on open, otherwise one distinct count checks it.
    unique = keys_validated(source)
    if not unique:
        r = a.aggregate(rows=_.count(), customers=_.customer_id.nunique(),
                        no_time=_.assigned_at.isnull().cast("int64").sum()).execute().iloc[0]
        raw = {k: int(r[k]) for k in ("rows", "customers", "no_time")}
        unique = raw["rows"] == raw["customers"]
    if unique:
        # nobody can be in two variants and no per-customer pass is needed: one scan counts
        # everything (rows without a time form the group without a close_day)
        n_multi = 0
        units = with_window(a.select("customer_id", "variant", "assigned_at"), window_days)
        per_day = count_per_day(units)
        untimed = per_day.close_day.isna()
        raw = {"rows": int(per_day.n_all.sum()), "no_time": int(per_day.n_all[untimed].sum())}
        per_day = per_day[~untimed].reset_index(drop=True)
        units = units.filter(units.assigned_at.notnull())
    else:  # a broken key means rows > customers >= 0, so there are rows
        # one pass over the assignments, materialised: every check below reads this table
        per_all = materialize(per_customer_assignment(a), "assigned")
        n_multi = int(per_all.filter(per_all.n_variants > 1).count().execute())
        units = materialize(with_window(single_variant_units(per_all), window_days), "units")
        per_day = count_per_day(units)
    if raw["rows"] == 0:
        raise CXDataError(f"assignments has no rows for experiment {experiment_id!r} "
                          f"(experiments present: {', '.join(experiment_ids(source))})")
    per_day["n"] = per_day.n_all - per_day.n_open
    return _Assigned(units, per_day, raw, n_multi)


@dataclass
class _Design:
    """What the experiment was meant to be, and the sample ratio test against it."""

    split: dict[str, float]
    info: dict[str, Any]
    control: str
    variants: list[str]
    srm_chi2: float
    srm_p: float
    notes: list[str] = field(default_factory=list)


def _design(source: Source, experiment_id: str, counts: dict[str, int],
            control: str | None) -> _Design:
    """Planned split and experiment row, the control and the variants in order (control
    first, then the planned ones), and the sample ratio mismatch test."""
    variants_seen = sorted(counts)
    split, info, notes = ck.planned_split(source, experiment_id, variants_seen)
    control = control or info.get("control") or "control"
    if control not in counts:
        raise CXDataError(f"control variant {control!r} has no customers in experiment "
                          f"{experiment_id!r} (variants: {', '.join(variants_seen)})")
    variants = list(dict.fromkeys([control] + [v for v in list(split) + variants_seen
                                               if v != control and v in counts]))
    if len(variants) < 2:
        raise CXDataError(f"experiment {experiment_id!r} has only variant {control!r}")
    unplanned = [v for v in variants_seen if v not in split]
    if unplanned:
        notes.append(f"Variants not in the planned split: {', '.join(unplanned)}.")
        split = {**split, **{v: 0.0 for v in unplanned}}
    chi2, p = st.srm_test({v: counts.get(v, 0) for v in split}, split)
    return _Design(split, info, control, variants, chi2, p, notes)


def _outside_dates(a: ibis.Table, info: Mapping[str, Any]) -> int:
    """Assignments before ``experiments.start`` or after ``experiments.end``."""
    start, end = info.get("start"), info.get("end")
    if start is None and end is None:
        return 0
    cond = ibis.literal(False)
    if start is not None:
        cond = cond | (a.assigned_at < pd.Timestamp(start).to_pydatetime())
    if end is not None:
        cond = cond | (a.assigned_at > pd.Timestamp(end).to_pydatetime())
    return int(a.filter(cond).count().execute())


def _arms(daily: pd.DataFrame, control: str, experiment_id: str, window_days: float,
          data_end: pd.Timestamp) -> dict[str, pd.Series]:
    """The moments of each arm: the sums over its closing days."""
    mom = daily.drop(columns="close_day").groupby("variant", as_index=False).sum()
    arm = {str(r["variant"]): r for _i, r in mom.iterrows()}
    if control not in arm or len(arm) < 2:
        raise CXDataError(f"experiment {experiment_id!r}: no customer's {window_days:g}-day "
                          f"window has closed by the end of the data ({data_end:%Y-%m-%d})")
    return arm


def _effects(specs: Mapping[str, Metric], roles: Mapping[str, str], arm: Mapping[str, Any],
             control: str, treatments: list[str], alpha: float, variance_reduction: bool,
             pre_days: float, notes: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every metric x treatment: the unadjusted row and, when CUPED applies, the adjusted
    one (theta pooled across all arms). Rows that cannot be tested keep the reason."""
    rows = []
    cuped_not_applied: dict[str, str] = {}
    for m, s in specs.items():
        c = s.moments(arm[control])
        theta = None
        if s.has_covariate and variance_reduction:
            arms_m = [s.moments(arm[v]) for v in [control, *treatments]]
            try:
                theta = st.cuped_theta(*arms_m)
            except ValueError:
                # the covariate is constant (no pre-period data, or pre_days = 0): CUPED
                # cannot reduce anything, so the unadjusted estimate is reported, and said so
                cuped_not_applied[m] = ck.no_cuped_reason(s, arms_m, pre_days)
        for v in treatments:
            t = s.moments(arm[v])
            for adj in ([False, True] if theta is not None else [False]):
                base = {"metric": f"{m}_cuped" if adj else m, "base_metric": m,
                        "label": f"{m}, CUPED-adjusted" if adj else m, "role": roles[m],
                        "variant": v, "kind": s.kind, "adjusted": adj,
                        "n_control": int(c.n), "n_treatment": int(t.n)}
                try:
                    e, vr = s.compare(t, c, alpha, adjust=adj, theta=theta)
                except ValueError as err:
                    notes.append(f"{base['label']} ({v}): {err}")
                    rows.append({**base, "method": "not testable", "not_testable": str(err)})
                    continue
                rows.append({**base, "method": e.method, **effect_row(e), "variance_reduction": vr,
                             "theta": theta if adj else np.nan, "not_testable": None})
    effects = pd.DataFrame(rows)
    for c in [*EFFECT_COLUMNS, "variance_reduction", "theta"]:
        if c not in effects:
            effects[c] = np.nan
    effects["not_testable"] = effects["not_testable"].astype(object).where(
        effects["not_testable"].notna(), None)
    has_adj = effects.groupby("base_metric")["adjusted"].transform("any")
    effects["reported"] = effects["adjusted"] | ~has_adj
    effects["family"] = effects.role
    return effects, cuped_not_applied


def _reading_notes(effects: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """Notes on how to read the effects: blanked relative lifts, respondent-based metrics."""
    notes = []
    # a relative lift against a base that is zero or negative (e.g. an NPS of -40) reads
    # backwards: st.relative_defined blanks it in every comparison (here and in breakdowns)
    neg = effects.control_mean.notna() & ~effects.control_mean.map(st.relative_defined)
    if neg.any():
        notes.append("Relative lifts are not shown for metrics whose control value is zero "
                     "or negative: " + ", ".join(sorted(set(effects.loc[neg, "base_metric"])))
                     + ".")
    among = [m for m in metrics if m in ("nps", "csat")]
    if among:
        # treatment can change who answers a survey (issue 16, item 7)
        notes.append(f"{', '.join(among)} average the answers of respondents, a group the "
                     "treatment can change: read them beside response_rate and the "
                     "per-assigned-customer nps_assigned / csat_satisfied.")
    return notes


def _correct(effects: pd.DataFrame, correction: str, alpha: float) -> None:
    """``p_adjusted`` and ``significant`` of the reported rows, in place: corrected within
    the primary family and within the secondary family; guardrails uncorrected (a harm
    signal is not diluted)."""
    effects["p_adjusted"] = np.nan
    for fam in ("primary", "secondary"):
        sel = effects.reported & (effects.family == fam)
        effects.loc[sel, "p_adjusted"] = st.adjust_pvalues(effects.loc[sel, "p_value"],
                                                           correction)
    g = effects.reported & (effects.family == "guardrail")
    effects.loc[g, "p_adjusted"] = effects.loc[g, "p_value"]
    effects["significant"] = effects.p_adjusted < alpha


@dataclass
class _PrimaryViews:
    bayes: pd.DataFrame
    planning: pd.DataFrame
    sequential: pl.Sequential | None
    notes: list[str]


def _primary_views(prim: pd.DataFrame, spec: Metric, arm: Mapping[str, Any], control: str,
                   treatments: list[str], daily: pd.DataFrame, why_not: str | None,
                   alpha: float, power: float, mde: float, days: float,
                   variance_reduction: bool, sequential: bool, bayesian: bool, seed: int
                   ) -> _PrimaryViews:
    """The Bayesian view, planning and the always-valid monitor of the primary metric (none
    of them when it is not testable)."""
    name = spec.name
    if why_not is not None:
        seq = (pl.not_run(name, alpha, "Not run: the primary metric is not testable (see the "
                                       "decision).") if sequential else None)
        return _PrimaryViews(pd.DataFrame(), pd.DataFrame(columns=pl.PLAN_COLS), seq,
                             [f"The primary metric ({name}) is not testable (see the "
                              "decision): monitoring, planning and the Bayesian view are not "
                              "computed."])
    c = spec.moments(arm[control])
    bayes = pl.bayes(prim, arm, control, spec, seed) if bayesian else pd.DataFrame()
    plan = pl.planning(prim, c, spec, arm, treatments, alpha, power, mde, days,
                       variance_reduction)
    notes: list[str] = []
    seq = None
    if sequential:
        seq = pl.sequential(daily, spec, control, treatments, alpha,
                            tau=abs(mde * spec.level(c)))
        if prim.adjusted.any():
            # the looks re-test the raw values: a CUPED theta re-estimated at every look
            # would make the sequence depend on the pre-period fit of each day
            seq.note = (f"The monitor tracks {name}, unadjusted, at each look; the decision "
                        f"uses {name}, CUPED-adjusted (the final look equals the unadjusted "
                        "row of the effects table).")
            notes.append(f"Sequential monitoring uses {name}, unadjusted; the decision uses "
                         f"{name}, CUPED-adjusted.")
    return _PrimaryViews(bayes, plan, seq, notes)


def _parameters(primary_metric: str, secondary: list[str], gspecs: Mapping[str, Guardrail],
                window_days: float, pre_days: float, alpha: float, power: float, mde: float,
                variance_reduction: bool, correction: str, sequential: bool,
                planned_customers: int | None) -> dict[str, Any]:
    """The analysis parameters as the learning log records them."""
    return {"primary_metric": primary_metric, "secondary_metrics": list(secondary),
            "guardrails": {m: {"direction": g.bad, "margin": g.margin,
                               "margin_abs": g.margin_abs} for m, g in gspecs.items()},
            "window_days": window_days, "pre_days": pre_days, "alpha": alpha,
            "power": power, "mde": mde, "variance_reduction": variance_reduction,
            "correction": correction, "sequential": sequential,
            "planned_customers": planned_customers}
