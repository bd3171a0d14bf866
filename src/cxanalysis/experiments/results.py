"""The result objects of an experiment: the evaluation, its monitor, breakdowns, decision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cxanalysis.data import LabelsLike, Source, materialize
from cxanalysis.experiments.checks import SRM_ALPHA
from cxanalysis.experiments.engine import all_units
from cxanalysis.experiments.metrics import metric_spec
from cxanalysis.formatting import ResultMixin, format_table
from cxanalysis.plotting import date_axis, display_label
from cxanalysis.privacy import MIN_GROUP_SIZE
from cxanalysis.results import to_jsonable

#: Columns of :meth:`Sequential.table` (present even when no look could be computed); the
#: effect of each look has the canonical names of :func:`~.metrics.effect_row`.
SEQ_COLS = ["variant", "day", "n_control", "n_treatment", "abs_diff", "se", "abs_ci_low",
            "abs_ci_high", "p_value", "always_valid_p", "cs_low", "cs_high"]


def _is_proportion(metric: str) -> bool:
    try:
        return metric_spec(metric.removesuffix("_cuped")).kind == "proportion"
    except ValueError:  # not a registered metric: no unit to state
        return False


def _difference_label(metric: str) -> str:
    """The axis label of a treatment - control difference, in words with its unit."""
    unit = "percentage points" if _is_proportion(metric) else "metric units"
    return f"{metric}: treatment - control ({unit})"


def _percent_points(ax: plt.Axes, metric: str, axis: str) -> None:
    """Show a proportion's difference in percentage points (0.02 -> +2; the axis label
    names the unit, so that short tick labels do not run into each other)."""
    if _is_proportion(metric):
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_formatter(plt.FuncFormatter(
            lambda v, _p: f"{100 * v:+.3g}" if abs(v) > 1e-12 else "0"))


@dataclass
class Sequential(ResultMixin):
    """Always-valid monitoring of the primary metric at daily looks.

    A look on day ``d`` uses the customers whose analysis window had closed by ``d`` (what
    a team looking that day could have analysed). The normal-mixture mSPRT with mixing
    N(0, tau^2) gives an always-valid p-value and confidence sequence; ``p_value`` is the
    fixed-horizon p-value of the look (not valid under peeking)."""

    metric: str
    tau: float
    alpha: float
    frame: pd.DataFrame
    #: which estimate the looks track, in words (e.g. "conversion, unadjusted")
    estimate: str = ""
    #: why the monitor was not run or is incomplete (None when it ran normally)
    note: str | None = None

    def table(self) -> pd.DataFrame:
        return self.frame

    def first_significant_day(self, variant: str | None = None) -> str | None:
        """First look whose always-valid p-value is below ``alpha`` (None: never, or the
        monitor was not run)."""
        f = self.frame.reindex(columns=SEQ_COLS)
        f = f if variant is None else f[f.variant == variant]
        hit = f[f["always_valid_p"] < self.alpha]
        return None if hit.empty else str(hit["day"].iloc[0])

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 3.5))[1]
        for v, f in self.frame.reindex(columns=SEQ_COLS).groupby("variant", sort=False):
            x = pd.to_datetime(f["day"])
            ax.fill_between(x, f["cs_low"], f["cs_high"], alpha=0.25,
                            label=f"{v}: always-valid {1 - self.alpha:.0%} sequence")
            ax.plot(x, f["abs_diff"], marker=".", label=f"{v}: estimate")
            ax.plot(x, f["abs_ci_low"], ls=":", color="grey")
            ax.plot(x, f["abs_ci_high"], ls=":", color="grey")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel(_difference_label(self.metric))
        _percent_points(ax, self.metric, "y")
        ax.set_xlabel("day of the look (UTC)")
        date_axis(ax)  # daily looks: concise labels that never overlap
        ax.set_title("Sequential monitoring (dotted: fixed-horizon interval, not valid "
                     "under peeking)")
        if len(self.frame):
            ax.legend(fontsize=8)
        else:  # say why the axes are empty instead of drawing nothing silently
            ax.text(0.5, 0.5, self.note or "no looks", ha="center", va="center",
                    transform=ax.transAxes, wrap=True)
        return ax


@dataclass
class Segmented(ResultMixin):
    """Effect of each treatment on one metric within the groups of a breakdown.

    Cochran's Q tests whether the effect differs between groups (treatment x group
    interaction); group p-values are Holm-corrected over all groups and treatments of the
    breakdown. Groups with fewer than ``min_group_size`` customers in an arm are
    suppressed (figures blanked). ``rel_lift`` follows the rule of :func:`analyze`: NaN
    when the group's control level is zero or negative
    (:func:`cxanalysis.stats.relative_defined`).

    Reporting rule (issue 16, item 9): group differences are reported only when the
    interaction test rejects homogeneity (Cochran's Q p < ``alpha``); otherwise the summary
    says the effect does not detectably differ between groups and names no group.
    ``shrunk_diff`` (with ``shrunk_ci_low``/``shrunk_ci_high``) is each group's effect
    shrunk towards the common effect by empirical Bayes
    (:func:`cxanalysis.stats.eb_shrink`, normal-normal with the method-of-moments tau^2):
    the estimate to read for a single group, since the raw group estimates of the largest
    and smallest groups are the most exaggerated."""

    by: str
    metric: str
    frame: pd.DataFrame
    heterogeneity: pd.DataFrame
    alpha: float = 0.05

    def differs(self, variant: str | None = None) -> bool:
        """Whether the interaction test says the effect differs between groups."""
        h = self.heterogeneity
        h = h if variant is None else h[h.variant == variant]
        return bool((h.p_value < self.alpha).any())

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        f = self.frame.dropna(subset=["abs_diff"])  # suppressed groups: not drawn
        f = f[~f["suppressed"].fillna(False).astype(bool)]
        ax = ax if ax is not None else plt.subplots(figsize=(7, 0.45 * len(f) + 1.2))[1]
        labels = [f"{display_label(g)} ({v})" if self.frame.variant.nunique() > 1
                  else display_label(g)
                  for g, v in zip(f["group"], f["variant"], strict=True)]
        y = np.arange(len(f))[::-1]
        ax.errorbar(f["abs_diff"], y, xerr=[f["abs_diff"] - f["abs_ci_low"],
                                           f["abs_ci_high"] - f["abs_diff"]],
                    fmt="o", capsize=3, color="#1e88e5", label="group estimate")
        if f["shrunk_diff"].notna().any():
            ax.errorbar(f["shrunk_diff"], y - 0.25,
                        xerr=[f["shrunk_diff"] - f["shrunk_ci_low"],
                              f["shrunk_ci_high"] - f["shrunk_diff"]],
                        fmt="s", capsize=3, color="#d81b60",
                        label="shrunk (empirical Bayes)")
            ax.legend(fontsize=8)
        ax.set_yticks(y, labels)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(_difference_label(self.metric))
        _percent_points(ax, self.metric, "x")
        ax.set_ylabel(str(self.by))
        ax.set_title(f"Effect on {self.metric} by {self.by}")
        return ax

    def summary(self) -> str:
        """The breakdown in words, under the reporting rule of the class: groups are named
        only when Cochran's Q says the effect differs."""
        parts = []
        for _i, h in self.heterogeneity.iterrows():
            q = f"Cochran's Q {h.q:.1f} on {int(h.df)} df, p = {h.p_value:.2g}"
            f = self.frame[self.frame.variant == h.variant]
            if not (h.p_value < self.alpha):
                parts.append(f"{h.variant}: no evidence that the effect differs by "
                             f"{self.by} ({q} >= {self.alpha:g}); read the overall effect, "
                             "not the groups one by one")
                continue
            sig = f[f.significant.fillna(False).astype(bool)]
            top = f.dropna(subset=["shrunk_diff"]).sort_values("shrunk_diff")
            ends = (f"; shrunk effects range from {top.shrunk_diff.iloc[0]:+.3g} "
                    f"({top.group.iloc[0]}) to {top.shrunk_diff.iloc[-1]:+.3g} "
                    f"({top.group.iloc[-1]})" if len(top) > 1 else "")
            parts.append(f"{h.variant}: the effect differs by {self.by} ({q} < "
                         f"{self.alpha:g}){ends}; significant after Holm in "
                         f"{', '.join(map(str, sig.group)) or 'no group'}")
        if not parts:
            return f"Effect on {self.metric} by {self.by}: fewer than two testable groups."
        return f"Effect on {self.metric} by {self.by}: " + "; ".join(parts) + "."


@dataclass
class Decision:
    verdict: str  # "ship", "don't ship", "keep testing", "keep running" or "not testable"
    variant: str | None
    reason: str


@dataclass
class ExperimentResult(ResultMixin):
    """The evaluation of one experiment (see :func:`analyze`)."""

    experiment_id: str
    name: str | None
    hypothesis: str | None
    control: str
    variants: list[str]
    primary_metric: str
    alpha: float
    correction: str
    effects: pd.DataFrame
    checks: pd.DataFrame
    balance: pd.DataFrame
    srm_chi2: float
    srm_p_value: float
    counts: dict[str, int]
    planned_split: dict[str, float]
    guardrails: pd.DataFrame
    bayes: pd.DataFrame
    planning: pd.DataFrame
    decision: Decision
    sequential: Sequential | None
    data_end: pd.Timestamp
    window_days: float
    pre_days: float
    notes: list[str] = field(default_factory=list)
    #: why the primary metric cannot be tested (None when it can); the decision is then
    #: "not testable" and monitoring, planning and the Bayesian view are not computed
    not_testable_reason: str | None = None
    #: metric -> why CUPED was not applied to it although ``variance_reduction`` was on
    cuped_not_applied: dict[str, str] = field(default_factory=dict)
    #: where the test stands against its planned horizon (see :func:`analyze`)
    horizon: dict[str, Any] = field(default_factory=lambda: {"reached": True, "text": ""})
    #: the analysis parameters (recorded in the learning log)
    parameters: dict[str, Any] = field(default_factory=dict)
    #: the first assignment (UTC)
    first_assigned: pd.Timestamp | None = None
    #: threats to validity found after the analysis (e.g. a persona calibration window that
    #: overlaps the assignments), published as ``warnings`` in results.json
    warnings: list[str] = field(default_factory=list)
    #: breakdown groups with fewer customers in an arm are suppressed
    min_group_size: int = MIN_GROUP_SIZE
    _units: ibis.Table | None = None
    _activity: ibis.Table | None = None
    _activity_stored: bool = False

    @property
    def srm_flagged(self) -> bool:
        return bool(self.srm_p_value < SRM_ALPHA)

    @property
    def primary_testable(self) -> bool:
        return self.not_testable_reason is None

    @property
    def treatments(self) -> list[str]:
        return [v for v in self.variants if v != self.control]

    def table(self) -> pd.DataFrame:
        """Every metric x treatment: means, absolute and relative differences with
        intervals, p-values, corrected p-values (``p_adjusted``, within ``family``) and
        whether the row is the reported one (``reported``: the CUPED row when variance
        reduction is used, else the unadjusted one). ``label`` names the estimate as
        readers do ("conversion, CUPED-adjusted"); ``not_testable`` holds the reason when
        a row could not be tested."""
        return self.effects

    def reported(self) -> pd.DataFrame:
        return self.effects[self.effects.reported].reset_index(drop=True)

    #: the columns of the formatted table (:meth:`_repr_html_`): the reported estimates
    _SHOWN = ("label", "variant", "role", "control_mean", "treatment_mean", "abs_diff",
              "abs_ci_low", "abs_ci_high", "rel_lift", "rel_ci_low", "rel_ci_high", "p_value",
              "p_adjusted", "significant")

    def to_dict(self) -> dict[str, Any]:
        """The headline figures (:meth:`results`)."""
        return to_jsonable(self.results())

    def _repr_html_(self) -> str:
        r = self.reported()
        shown = r[[c for c in self._SHOWN if c in r.columns]]
        if len(self.treatments) <= 1:
            shown = shown.drop(columns=["variant"], errors="ignore")
        return format_table(shown, min_group_size=self.min_group_size,
                            labels={"label": "metric", "role": "role"},
                            caption=self.summary(), notes=[*self.warnings, *self.notes])

    def variance_reduction_table(self) -> pd.DataFrame:
        """What CUPED bought, per adjusted metric and treatment: ``theta``, the variance
        reduction and the width of the absolute-difference interval without and with it."""
        key = ["base_metric", "variant"]
        e = self.effects
        width = e.abs_ci_high - e.abs_ci_low
        adj = e[e.adjusted].assign(ci_width_cuped=width)
        raw = e[~e.adjusted].assign(ci_width_unadjusted=width)
        out = adj[[*key, "theta", "variance_reduction"]].merge(
            raw[[*key, "ci_width_unadjusted"]], on=key)
        return out.merge(adj[[*key, "ci_width_cuped"]], on=key)

    def primary(self, variant: str | None = None) -> pd.Series:
        r = self.reported()
        r = r[r.role == "primary"]
        if variant is not None:
            r = r[r.variant == variant]
        return r.sort_values("p_adjusted").iloc[0]

    def summary(self) -> str:
        d = self.decision
        lines = [f"Decision for {self.experiment_id}: {d.verdict.upper()}"
                 + (f" ({d.variant})" if d.variant and d.verdict == "ship" else "")
                 + f". {d.reason}"]
        if self.srm_flagged:
            lines.insert(0, f"WARNING: sample ratio mismatch (p = {self.srm_p_value:.2g} < "
                            f"{SRM_ALPHA}): assignment is broken and NO effect below can be "
                            "trusted.")
        return "\n".join(lines)

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        """Forest plot of relative lifts (reported rows) with their intervals."""
        r = self.reported()
        ax = ax if ax is not None else plt.subplots(figsize=(8, 0.45 * len(r) + 1.2))[1]
        y = np.arange(len(r))[::-1]
        labels = [f"{m} ({v})" if len(self.treatments) > 1 else m
                  for m, v in zip(r.label, r.variant, strict=True)]
        colors = ["#d81b60" if s else "#1e88e5" for s in r.significant.fillna(False)]
        for yi, (_i, row), col in zip(y, r.iterrows(), colors, strict=True):
            if pd.isna(row.rel_lift):
                continue
            ax.errorbar([row.rel_lift], [yi], xerr=[[row.rel_lift - row.rel_ci_low],
                                                    [row.rel_ci_high - row.rel_lift]],
                        fmt="o", color=col, capsize=3)
        ax.set_yticks(y, labels)
        ax.axvline(0, color="black", lw=0.8)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: f"{v:+.0%}"))
        ax.set_xlabel(f"relative lift vs {self.control} ({1 - self.alpha:.0%} delta-method "
                      "interval; red: significant after correction)")
        ax.set_ylabel("metric")
        ax.set_title(f"{self.experiment_id}: relative lift by metric")
        return ax

    def breakdown(self, by: str | LabelsLike, metric: str | None = None,
                  source: Source | None = None, *, column: str | None = None) -> Segmented:
        """Effects within groups: ``by`` is a column of ``customers`` (pass ``source``) or
        per-customer labels in the one shape of :meth:`cxanalysis.data.Labels.of` (a
        ``Labels``, a Series indexed by customer id, a DataFrame or table with
        ``customer_id`` and a label column: ``column``); see
        :func:`cxanalysis.experiments.breakdown.breakdown`."""
        from cxanalysis.experiments.breakdown import breakdown

        return breakdown(self, by, metric, source, column=column)

    def check_persona_calibration(self, calibration: Sequence[Any] | None) -> str | None:
        """Warn when the persona calibration window ends after the first assignment.

        Personas fitted on behaviour after assignment can be changed by the treatment (a
        post-treatment, "bad" control): a persona breakdown then compares groups the
        treatment helped form. The window ``[start, end]`` is in ISO dates, ``end``
        inclusive (the whole day). The warning is added to :attr:`warnings` (published as
        ``warnings`` in results.json) and returned; None when the window ends before the
        first assignment (or is not known).
        """
        if calibration is None or self.first_assigned is None:
            return None
        end = pd.Timestamp(calibration[1])
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        first = pd.Timestamp(self.first_assigned)
        first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
        # a date means the whole day: the window reaches up to the next midnight
        stop = end.normalize() + pd.Timedelta(days=1) if end == end.normalize() else end
        if stop <= first:
            return None
        msg = (f"Persona calibration ends {end:%Y-%m-%d}, after the first assignment "
               f"({first:%Y-%m-%d %H:%M} UTC): personas built on post-assignment behaviour "
               "can be shaped by the treatment (a bad control), so the persona breakdown may "
               "be biased; calibrate personas on a window that ends before the test starts.")
        if msg not in self.warnings:
            self.warnings.append(msg)
        return msg

    def per_customer(self) -> ibis.Table:
        """The analysed customers, one row each with every metric column (an Ibis
        expression over all units: inspect or sample it; :func:`analyze` itself only
        aggregates the active customers)."""
        return all_units(*self.per_customer_tables())

    def per_customer_tables(self) -> tuple[ibis.Table, ibis.Table]:
        """The units and their sparse activity. The activity is a query over every metric
        table; :func:`analyze` aggregates it once in passing, and the first breakdown or
        per-customer view stores it as a temporary table so later ones do not re-run it."""
        if self._units is None or self._activity is None:
            raise ValueError("this result holds no per-customer tables")
        if not self._activity_stored:
            self._activity = materialize(self._activity, "activity")
            self._activity_stored = True
        return self._units, self._activity

    def results(self) -> dict[str, Any]:
        """Headline figures for ``results.json``.

        ``metrics`` holds every estimate side by side under the name of its row in
        :meth:`table`: ``conversion`` (unadjusted) next to ``conversion_cuped`` (CUPED),
        each with ``reported`` (the one the decision and the corrections use) and ``label``
        (its name in words); ``@variant`` is appended with more than one treatment."""
        many = len(self.treatments) > 1
        metrics: dict[str, Any] = {}
        for _i, r in self.effects.iterrows():
            key = f"{r.metric}@{r.variant}" if many else r.metric
            metrics[key] = {
                "role": r.role, "estimate": r.metric, "base_metric": r.base_metric,
                "label": r.label, "method": r.method,
                "control_mean": r.control_mean,
                "treatment_mean": r.treatment_mean, "abs_diff": r.abs_diff,
                "abs_ci": [r.abs_ci_low, r.abs_ci_high], "rel_lift": r.rel_lift,
                "rel_ci": [r.rel_ci_low, r.rel_ci_high], "p_value": r.p_value,
                "p_adjusted": r.p_adjusted, "adjusted": bool(r.adjusted),
                "reported": bool(r.reported), "variance_reduction": r.variance_reduction,
                "not_testable": r.not_testable}
        return {
            "experiment_id": self.experiment_id, "control": self.control,
            "variants": {v: self.counts.get(v, 0) for v in self.variants},
            "srm_p_value": self.srm_p_value, "srm_flagged": self.srm_flagged,
            "decision": self.decision.verdict, "decision_variant": self.decision.variant,
            "reason": self.decision.reason, "primary_metric": self.primary_metric,
            "correction": self.correction, "metrics": metrics,
            "guardrails": {f"{g.metric}@{g.variant}" if many else g.metric: g.status
                           for g in self.guardrails.itertuples()},
            "primary_testable": self.primary_testable,
            "primary_not_testable_reason": self.not_testable_reason,
            "cuped_not_applied": self.cuped_not_applied,
            **({"sequential_first_significant_day": self.sequential.first_significant_day(),
                "sequential_estimate": self.sequential.estimate,
                "sequential_note": self.sequential.note}
               if self.sequential is not None else {}),
            **({"p_treatment_better": dict(zip(self.bayes.variant,
                                               self.bayes.p_treatment_better, strict=True))}
               if len(self.bayes) else {}),
            "notes": list(self.notes),
            "guardrail_details": {
                f"{g.metric}@{g.variant}" if many else g.metric: {
                    "status": g.status, "bad_direction": g.bad_direction,
                    "margin": g.margin, "margin_abs": g.margin_abs,
                    "abs_ci": [g.abs_ci_low, g.abs_ci_high], "worst_harm": g.worst_harm,
                    "statement": g.statement}
                for g in self.guardrails.itertuples()},
            "horizon": dict(self.horizon),
            "warnings": list(self.warnings),
        }
