"""Conversion by group: the result every conversion breakdown shares.

A funnel broken down by channel or persona (:meth:`cxanalysis.funnel.FunnelResult.breakdown`)
and holdout conversion by segment or persona (:func:`cxanalysis.comparison.conversion_by_group`)
build the same :class:`Breakdown` from per-group counts, so they share one table shape, one
test family and one small-group suppression. Groups come from
:class:`cxanalysis.data.Labels` (the one labels type).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter
from scipy import stats

from cxanalysis.formatting import ResultMixin
from cxanalysis.plotting import display_label
from cxanalysis.privacy import MIN_GROUP_SIZE, suppress_small_groups
from cxanalysis.stats import adjust_pvalues, two_proportion_z, wilson_interval

__all__ = ["Breakdown"]


@dataclass
class Breakdown(ResultMixin):
    """Conversion by group with Wilson intervals, a chi-square test across groups and
    pairwise two-proportion z-tests with Holm correction (family: all pairs of this
    breakdown).

    Attributes
    ----------
    by : str
        Name of the grouping (``first_channel``, ``persona``, a customers column ...).
    frame : DataFrame
        Per group: ``group``, ``customers``, ``converted``, ``conversion`` (a proportion)
        with ``ci_low`` / ``ci_high`` and ``suppressed``; groups under ``min_group_size``
        are suppressed (:func:`cxanalysis.privacy.suppress_small_groups`) and left out of
        the tests.
    chi2, p_value, dof : float, float, int
        Chi-square test of independence (no continuity correction) of the groups shown.
    pairwise : DataFrame
        ``group_a``, ``group_b``, ``diff`` (conversion a - b), ``z``, ``p_value``,
        ``p_holm``, ``significant``.
    """

    by: str
    frame: pd.DataFrame
    chi2: float
    p_value: float
    dof: int
    pairwise: pd.DataFrame
    #: what the ``customers`` column counts: customers or attempts (of the funnel)
    unit: str = "customers"
    min_group_size: int = MIN_GROUP_SIZE

    @classmethod
    def from_counts(cls, by: str, agg: pd.DataFrame, alpha: float = 0.05,
                    min_group_size: int = MIN_GROUP_SIZE) -> Breakdown:
        """A breakdown from per-group counts: ``agg`` has ``group``, ``customers`` and
        ``converted``."""
        agg = agg.copy()
        agg["conversion"] = agg["converted"] / agg["customers"]
        agg["ci_low"], agg["ci_high"] = wilson_interval(agg["converted"], agg["customers"],
                                                        alpha)
        big = agg[agg["customers"] >= min_group_size]
        chi2 = p = np.nan
        dof = 0
        pair_rows = []
        if len(big) >= 2:
            table = np.column_stack([big["converted"], big["customers"] - big["converted"]])
            if (table.sum(axis=0) > 0).all():
                chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
            for (_, a), (_, b) in itertools.combinations(big.iterrows(), 2):
                z, pv = two_proportion_z(a.converted, a.customers, b.converted, b.customers)
                pair_rows.append({"group_a": a.group, "group_b": b.group,
                                  "diff": a.conversion - b.conversion, "z": z, "p_value": pv})
        pairwise = pd.DataFrame(pair_rows, columns=["group_a", "group_b", "diff", "z",
                                                    "p_value"])
        if len(pairwise):
            pairwise["p_holm"] = adjust_pvalues(pairwise["p_value"].to_numpy(float), "holm")
            pairwise["significant"] = pairwise["p_holm"] < alpha
        frame = suppress_small_groups(agg, "customers", min_group_size)
        return cls(by, frame, float(chi2), float(p), int(dof), pairwise,
                   min_group_size=min_group_size)

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(7, 3.5))[1]
        f = self.frame.dropna(subset=["conversion"])  # suppressed groups: not drawn
        if "suppressed" in f:
            f = f[~f["suppressed"].fillna(False).astype(bool)]
        ax.errorbar(f["conversion"], [display_label(g) for g in f["group"]], xerr=[f["conversion"] - f["ci_low"],
                                                       f["ci_high"] - f["conversion"]],
                    fmt="o", color="#1e88e5", capsize=3)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel(f"% of {self.unit} converting (95% Wilson interval)")
        ax.set_ylabel(str(self.by))
        ax.set_title(f"Conversion by {self.by}")
        return ax

    def summary(self) -> str:
        return (f"Conversion of {self.unit} differs across {self.by} groups: chi-square "
                f"{self.chi2:.1f} on {self.dof} df, p = {self.p_value:.2g}.")
