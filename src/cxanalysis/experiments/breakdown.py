"""Effects of an experiment within groups of customers (a customers column or personas)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ibis
import numpy as np
import pandas as pd

from cxanalysis import stats as st
from cxanalysis.data import UNKNOWN, CXDataError, Source
from cxanalysis.errors import ParameterError
from cxanalysis.experiments.engine import moments
from cxanalysis.experiments.metrics import EFFECT_COLUMNS, effect_row, metric_spec
from cxanalysis.experiments.results import Segmented

if TYPE_CHECKING:
    from cxanalysis.experiments.results import ExperimentResult

#: The group of customers the breakdown table has no label for.
UNKNOWN_GROUP = UNKNOWN  # the one spelling of a missing label (cxanalysis.data)

_COLS = ["group", "variant", "n_control", "n_treatment", *EFFECT_COLUMNS, "suppressed"]


def _groups(by: str | pd.DataFrame, source: Source | None) -> tuple[ibis.Table, str]:
    """The groups as an Ibis table (``customer_id``, ``group``) and their label."""
    if isinstance(by, str):
        if source is None:
            raise ParameterError("pass source= to break down by a customers column")
        cust = source.table("customers")
        if by not in cust.columns:
            raise CXDataError(f"customers has no column {by!r} to break down by "
                              f"(columns: {', '.join(cust.columns)})")
        return cust.select("customer_id", group=cust[by].cast("string")), by
    cols = [c for c in by.columns if c != "customer_id"]
    if "customer_id" not in by.columns or len(cols) != 1:
        raise ParameterError("a breakdown DataFrame needs customer_id and one group column")
    # a memtable goes to whichever engine the units live on (any backend)
    return ibis.memtable(by.rename(columns={cols[0]: "group"})
                         .astype({"customer_id": str, "group": str})), cols[0]


def breakdown(result: ExperimentResult, by: str | pd.DataFrame, metric: str | None = None,
              source: Source | None = None) -> Segmented:
    """Effects of every treatment on ``metric`` (default: the primary one) within groups.

    ``by`` is a column of ``customers`` (pass ``source``) or a DataFrame with
    ``customer_id`` and one group column. Customers without a group form
    :data:`UNKNOWN_GROUP`. See :class:`Segmented` for the tests and the reporting rule.
    """
    metric = metric or result.primary_metric
    spec = metric_spec(metric)
    units, activity = result.per_customer_tables()
    groups, label = _groups(by, source)

    def grouped(t: ibis.Table) -> ibis.Table:
        j = t.left_join(groups, "customer_id").drop("customer_id_right")
        return j.mutate(group=j.group.fill_null(UNKNOWN_GROUP))

    mom = moments(grouped(units), [metric], by=("group", "variant"),
                  activity=grouped(activity))
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
