"""Rule-based segments: demographic segments and RFM value tiers, with their rules.

Both are explicit and reproducible: :meth:`Segments.rules` is the table a stakeholder needs
to recompute them. RFM scores are computed in the SQL engine.

RFM scoring rule (over the window ``[start, end]``, customers with at least one order)
--------------------------------------------------------------------------------------
- Recency R = days from the last order to the end of the window; Frequency F = orders;
  Monetary M = sum of order amounts.
- Each is scored 1-``bins`` by quantile (``ntile`` over customers with orders; for R, more
  recent = higher score; ties broken by customer id, so the scores are deterministic).
- Tier by the score sum S = R + F + M (3-15 with 5 bins): ``champions`` S >= 12,
  ``loyal`` 9-11, ``at risk`` 6-8, ``low value`` <= 5; customers without an order in the
  window are ``no purchase``. (With other ``bins`` the cut points scale with ``bins / 5``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import numpy as np
import pandas as pd
from ibis import _

from cxanalysis.data import UNKNOWN, CXDataError, Source, between_days, epoch_seconds, window_end
from cxanalysis.errors import ParameterError

TIERS = ("champions", "loyal", "at risk", "low value", "no purchase")


@dataclass
class Segments:
    """Segment labels by customer and the rules that produced them."""

    name: str
    labels: pd.Series  # index customer_id
    rule_table: pd.DataFrame

    def rules(self) -> pd.DataFrame:
        return self.rule_table


def demographic_segments(source: Source, columns: Sequence[str]) -> Segments:
    """Segment = the combination of the given ``customers`` columns (a missing value reads
    ``"(unknown)"``, the package's one spelling of a missing label)."""
    source.require("customers")
    cust = source.table("customers")
    columns = list(columns)
    if not columns:
        raise ParameterError("demographic segments need at least one customers column")
    missing = [c for c in columns if c not in cust.columns]
    if missing:
        raise CXDataError(f"customers has no column(s) {missing} for segments (columns: "
                          f"{', '.join(cust.columns)})")
    df = cust.select("customer_id", *columns).execute().set_index("customer_id").sort_index()
    df = df.astype("string").fillna(UNKNOWN)
    labels = df[columns[0]].str.cat([df[c] for c in columns[1:]], sep=" / ")
    labels = labels.astype(str).rename("segment")
    # one rule per combination, from the values themselves (a value may contain " / ")
    combos = df.assign(segment=labels).drop_duplicates("segment").sort_values("segment")
    rules = pd.DataFrame({"segment": combos["segment"].to_list()})
    rules["rule"] = [" and ".join(f"{c} = {str(v)!r}" for c, v in zip(columns, row, strict=True))
                     for row in combos[columns].itertuples(index=False)]
    rules["customers"] = rules["segment"].map(labels.value_counts())
    return Segments(" x ".join(columns), labels, rules)


def rfm_scores(source: Source, start: str, end: str, bins: int = 5) -> pd.DataFrame:
    """Per customer with orders in ``[start, end]``: recency_days, frequency, monetary and
    their 1-``bins`` scores (engine-side ``ntile``)."""
    source.require("orders")
    o = between_days(source.table("orders"), start, end)
    per = o.group_by("customer_id").aggregate(last=_.ts.max(), frequency=_.count(),
                                              monetary=_.amount.sum())
    per = per.mutate(recency_days=(window_end(end).timestamp() - epoch_seconds(per["last"]))
                     / 86400.0)

    def score(col: str, ascending: bool) -> ibis.Value:
        key = per[col] if ascending else -per[col]
        return ibis.ntile(bins).over(order_by=[key, per.customer_id]) + 1

    per = per.mutate(r_score=score("recency_days", ascending=False),
                     f_score=score("frequency", ascending=True),
                     m_score=score("monetary", ascending=True))
    df = per.drop("last").execute().set_index("customer_id").sort_index()
    return df


def value_tiers(source: Source, start: str, end: str, bins: int = 5) -> Segments:
    """RFM value tiers (see the module docstring for the rule)."""
    rfm = rfm_scores(source, start, end, bins)
    s = rfm[["r_score", "f_score", "m_score"]].sum(axis=1)
    f = bins / 5
    cuts = (12 * f, 9 * f, 6 * f)
    tier = np.select([s >= cuts[0], s >= cuts[1], s >= cuts[2]], list(TIERS[:3]), TIERS[3])
    labels = pd.Series(tier, index=rfm.index, name="segment")
    customers = source.table("customers").customer_id.execute()
    labels = labels.reindex(pd.Index(customers, name="customer_id")).fillna("no purchase")
    rules = pd.DataFrame({
        "segment": list(TIERS),
        "rule": [f"R + F + M >= {cuts[0]:g}", f"{cuts[1]:g} <= R + F + M < {cuts[0]:g}",
                 f"{cuts[2]:g} <= R + F + M < {cuts[1]:g}", f"R + F + M < {cuts[2]:g}",
                 f"no order between {start} and {end}"]})
    rules["customers"] = rules["segment"].map(labels.value_counts()).fillna(0).astype(int)
    return Segments("value tier (RFM)", labels.sort_index(), rules)


def past_revenue_groups(revenue: pd.Series, k: int) -> Segments:
    """A past-outcome baseline: ``k`` groups of customers by their revenue in the
    calibration window (``revenue`` indexed by customer_id, currency), to compare personas
    with at the same number of groups.

    Customers without revenue form one group, ``no revenue`` (when there are some and
    ``k >= 2``); the others are split into equal-count quantile groups of revenue
    (``revenue Q1`` lowest), ties broken by customer id so that groups are deterministic.
    With ``k = 1`` every customer is in ``all``."""
    if k < 1:
        raise ParameterError(f"past revenue groups need k >= 1, not {k}")
    rev = revenue.astype(float).fillna(0.0).sort_index()
    labels = pd.Series("all", index=rev.index, name="segment", dtype=object)
    zero = rev <= 0
    n_q = k - 1 if zero.any() and k >= 2 else k
    if k >= 2:
        labels[zero] = "no revenue"
        pos = rev[~zero]
        if n_q >= 1 and len(pos):
            n_q = min(n_q, len(pos))
            q = pd.qcut(pos.rank(method="first"), n_q, labels=False)
            labels[pos.index] = [f"revenue Q{i + 1}" for i in q]
    rows = []
    for g, sub in rev.groupby(labels, sort=True):
        rows.append({"segment": g, "rule": ("revenue = 0" if g == "no revenue" else
                                            f"{sub.min():,.2f} <= revenue <= {sub.max():,.2f}"),
                     "customers": int(len(sub))})
    rules = pd.DataFrame(rows)
    rules.index = range(len(rules))
    return Segments("past revenue groups", labels.rename_axis("customer_id"), rules)
