"""Effects of an experiment within groups of customers (a customers column, or labels in the
shape of :meth:`cxanalysis.data.Labels.of`: personas, segments)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ibis
import numpy as np
import pandas as pd

from cxanalysis import stats as st
from cxanalysis.data import UNKNOWN, CXDataError, Labels, LabelsLike, Source
from cxanalysis.errors import ParameterError
from cxanalysis.experiments.engine import moments
from cxanalysis.experiments.metrics import EFFECT_COLUMNS, effect_row, metric_spec
from cxanalysis.experiments.results import Segmented

if TYPE_CHECKING:
    from cxanalysis.experiments.results import ExperimentResult

#: The group of customers the breakdown table has no label for.
UNKNOWN_GROUP = UNKNOWN  # the one spelling of a missing label (cxanalysis.data)

_COLS = ["group", "variant", "n_control", "n_treatment", *EFFECT_COLUMNS, "suppressed"]


def _labels(by: str | LabelsLike, source: Source | None, column: str | None) -> Labels:
    """The groups as :class:`~cxanalysis.data.Labels`: a column of ``customers`` (by name)
    or anything :meth:`Labels.of <cxanalysis.data.Labels.of>` takes."""
    if isinstance(by, str):
        if source is None:
            raise ParameterError("pass source= to break down by a customers column")
        cust = source.table("customers")
        if by not in cust.columns:
            raise CXDataError(f"customers has no column {by!r} to break down by "
                              f"(columns: {', '.join(cust.columns)})")
        return Labels.of(cust, by)
    if isinstance(by, (pd.DataFrame, ibis.Table)) and column is None:
        others = [c for c in by.columns if c != "customer_id"]
        if "customer_id" not in by.columns or len(others) != 1:
            raise ParameterError("a breakdown DataFrame needs customer_id and one group "
                                 "column (or name it: column=...)")
    return Labels.of(by, column)


def breakdown(result: ExperimentResult, by: str | LabelsLike, metric: str | None = None,
              source: Source | None = None, *, column: str | None = None) -> Segmented:
    """Effects of every treatment on ``metric`` (default: the primary one) within groups.

    Parameters
    ----------
    result : ExperimentResult
        The analysed experiment.
    by : str or labels
        A column of the ``customers`` table by name (pass ``source``), or per-customer
        labels in the one shape of the package: a :class:`cxanalysis.data.Labels`, a Series
        indexed by customer id, or a DataFrame / Ibis table with ``customer_id`` and one
        label column (name it with ``column`` when there are more), e.g. persona labels.
    metric : str, optional
        The metric to break down (default: the primary metric).
    source : Source, optional
        The source whose ``customers`` table holds the column ``by``.
    column : str, optional
        The label column of a DataFrame or table ``by``.

    Customers without a label form :data:`UNKNOWN_GROUP` (joined by
    :meth:`Labels.join <cxanalysis.data.Labels.join>`). See :class:`Segmented` for the tests
    and the reporting rule.
    """
    metric = metric or result.primary_metric
    spec = metric_spec(metric)
    units, activity = result.per_customer_tables()
    labels = _labels(by, source, column)
    label = labels.name
    # every customer keeps its row: unlabelled ones join as UNKNOWN_GROUP
    mom = moments(labels.join(units), [metric], by=("group", "variant"),
                  activity=labels.join(activity))
    rows = []
    for g, f in mom.groupby("group", sort=True):
        arms = {r.variant: r for _i, r in f.iterrows()}
        c = arms.get(result.control)
        for v in result.treatments:
            t = arms.get(v)
            n_c = int(c["n"]) if c is not None else 0
            n_t = int(t["n"]) if t is not None else 0
            row: dict[str, Any] = {"group": g, "variant": v, "n_control": n_c,
                                   "n_treatment": n_t}
            small = min(n_c, n_t) < result.min_group_size
            if not small:
                try:
                    e, _vr = spec.compare(spec.moments(t), spec.moments(c), result.alpha)
                    row.update(effect_row(e))
                except ValueError:
                    pass  # not testable in this group (no variance): figures stay blank
            row["suppressed"] = small
            rows.append(row)
    frame = pd.DataFrame(rows).reindex(columns=_COLS)
    ok = frame.p_value.notna()
    frame["p_holm"] = st.adjust_pvalues(frame.p_value, "holm")
    frame["significant"] = frame.p_holm < result.alpha
    frame.loc[frame.suppressed, ["n_control", "n_treatment"]] = np.nan
    frame[["n_control", "n_treatment"]] = frame[["n_control", "n_treatment"]].astype("Int64")
    het = []
    z = st.stats.norm.isf(result.alpha / 2)
    for c in ("shrunk_diff", "shrunk_se", "shrunk_ci_low", "shrunk_ci_high"):
        frame[c] = np.nan
    for v, f in frame[ok].groupby("variant", sort=False):
        f = f[f.se > 0]
        q, p, df = st.cochran_q(f.abs_diff.to_numpy(), f.se.to_numpy())
        het.append({"variant": v, "groups": len(f), "q": q, "df": df, "p_value": p})
        if len(f) >= 2:
            est, se, tau2, _mu = st.eb_shrink(f.abs_diff.to_numpy(), f.se.to_numpy())
            frame.loc[f.index, "shrunk_diff"] = est
            frame.loc[f.index, "shrunk_se"] = se
            frame.loc[f.index, "shrunk_ci_low"] = est - z * se
            frame.loc[f.index, "shrunk_ci_high"] = est + z * se
            het[-1]["tau2"] = tau2
    heterogeneity = pd.DataFrame(het, columns=["variant", "groups", "q", "df", "p_value",
                                               "tau2"])
    return Segmented(label, metric, frame, heterogeneity, result.alpha)
