"""Behavioural personas: features in the SQL engine, clustering, choice of k, stability,
profiles, names and assignment of new customers.

Three steps, each its own object (scikit-learn's estimator conventions)::

    data = persona_data(source, start, end)              # data access: the feature matrix
    model = PersonaModel(k_range=(2, 8), random_state=0).fit(data.features)
    model.labels_, model.k_, model.stability_, model.structure_, model.predict(new)
    report = Personas(model, data)                       # profiles, tables, charts, summary

:func:`fit_personas` does the three in one call; :func:`assign_personas` is the fit alone
with notebook 01's parameter names (for notebooks 02 and 03).

Features (per customer, over the calibration window ``[start, end]``, computed by Ibis on the
source's engine; only the feature matrix comes back, one row per active customer). They are
built from the vocabulary the source has, not from a fixed list of channel or event names:

=====================  ======================================================================
feature                definition (units)
=====================  ======================================================================
share_<channel>        share of the customer's activity in that channel (0-1), for the
                       :data:`MAX_CHANNELS` channels used by the most customers in the window
                       (profiled, not clustered on: see ``clr_``)
clr_<channel>          centred log-ratio of the channel counts:
                       ``log((n_c + 0.5) / g)``, ``g`` the geometric mean of ``n_c + 0.5`` over
                       the listed channels (pseudo-count :data:`CLR_PSEUDOCOUNT` events)
mix_<event>            share of the customer's events that are that event (0-1), for the
                       :data:`MAX_EVENTS` event names done by the most customers in the window
events_per_month       events per 30 days of exposure (log1p)
active_days_per_month  distinct UTC days with activity per 30 days of exposure (log1p)
gap_hours              mean log1p(hours) between consecutive events less than 7 days apart
                       (consideration pace)
orders_per_month       orders per 30 days (log1p)
basket                 mean order value before discount (log1p currency; NaN without orders)
discount_share         discount / (amount + discount) over the window (0-1; NaN without
                       orders)
nps                    mean NPS answer (0-10; NaN without an answer)
nps_missing            1 when the customer gave no NPS answer in the window, else 0
recency_days           days from the last activity to the end of the window
tenure_days            days from signup to the end of the window (profiled, not clustered)
=====================  ======================================================================

*Activity* is the ``events`` table; a source without events (an order history) is described
by its ``orders`` alone: each order is one activity, ``share_<channel>`` comes from the order
channel and there are no ``mix_`` features. Without a ``customers`` table, signup is the
customer's first activity in the source. Exposure is the part of the window after signup.
Customers with fewer than ``min_events`` activities in the window are not clustered (too
little behaviour to describe); they are counted. ``min_events=None`` means
:data:`MIN_EVENTS` events, or :data:`MIN_ORDERS` orders for a source without events (few
customers order five times in a window).

Feature treatment (what the personas are clustered on by default, :func:`default_features`):

- *Channel shares* sum to 1, so they are a composition: seven shares carry one redundant
  dimension and, as raw proportions, over a third of the Euclidean distance on the demo.
  They are clustered on as centred log-ratios (``clr_``, the Aitchison geometry of
  compositions; the pseudo-count keeps channels a customer never used finite) and the raw
  shares are only profiled.
- *NPS* is asked of few customers. It is never mean-filled silently: when at least
  :data:`NPS_MIN_ANSWERED` of the customers clustered answered, ``nps`` is clustered with
  its ``nps_missing`` flag (the missing answers counted as the average, z = 0, and the flag
  saying so); otherwise NPS and its flag are left out of the clustering and only profiled,
  and :attr:`Personas.not_clustered` says why.
- *Tenure* is not a behaviour (it is when the customer signed up): profiled, not clustered.
- ``gap_hours`` of a customer without two events less than 7 days apart, and ``basket`` and
  ``discount_share`` of a customer without orders, are undefined and count as the average
  when clustering (``orders_per_month`` = 0 already says "no orders"; a 0 basket made the
  non-buyers a persona of their own).

Persona inputs include past outcomes (``orders_per_month``, ``basket``, ``recency_days``):
personas partly describe value already seen, which matters when they are said to explain
later outcomes (see :mod:`cxanalysis.comparison`).

Degenerate features -- constant over the customers clustered (e.g. the share of the only
channel), or missing for everyone (e.g. NPS without answers) -- cannot separate personas and
are dropped automatically; :attr:`Personas.dropped` lists them with the reason.

Demographics and value tiers are NOT inputs (they profile the personas afterwards; using them
would make the segments-versus-personas comparison circular). Features are standardised
(z-scores); the scaler is part of the fitted model, so :meth:`PersonaModel.predict` assigns new
customers the same way.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from ibis import _
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from cxanalysis.data import (
    CXDataError,
    Source,
    _on_duckdb,
    between_days,
    epoch_seconds,
    window_end,
)
from cxanalysis.errors import ParameterError
from cxanalysis.formatting import ResultMixin
from cxanalysis.privacy import MIN_GROUP_SIZE
from cxanalysis.progress import bar
from cxanalysis.results import to_jsonable

#: Activities a customer needs in the window to be clustered, by default: events, or orders
#: when the source has no events.
MIN_EVENTS = 5
MIN_ORDERS = 2
#: Channels and event names turned into features, at most (the most active ones).
MAX_CHANNELS = 10
# Why only 6 events: the mixes of funnel steps are strongly correlated, and each added one
# weighs the distance further towards them; on the demo world 4-6 event mixes recover the
# planted personas (ARI 0.93 with channels and frequencies), 7 or more merge them into 3.
MAX_EVENTS = 6
#: Pseudo-count (events) added to every channel count before the log-ratio.
CLR_PSEUDOCOUNT = 0.5
#: Least share of the customers clustered with an NPS answer for NPS to be clustered on.
NPS_MIN_ANSWERED = 0.5
#: Features never clustered on by default (profiled only), with the reason.
PROFILE_ONLY = {"tenure_days": "not a behaviour (when the customer signed up): profiled only"}
METHODS = ("kmeans", "minibatch", "gmm")
# Below this many customers a clustering step runs on one thread: scikit-learn's OpenMP/BLAS
# threads cost more than the work on small matrices, and on a busy machine far more (the
# demo's k sweep took 123 s with the default threads and 3.8 s on one, at load 7 on 2 cores).
# The limit follows the rows each step clusters (the sweep, the null test and the bootstrap
# run on samples), not the customers: at 1M customers those steps took 15 of 16 minutes with
# every thread at load 15, the final fit on all customers 1.
SINGLE_THREAD_BELOW = 100_000
_LABELS = {
    "events_per_month": "activity frequency", "active_days_per_month": "active days",
    "gap_hours": "time between touches", "orders_per_month": "order frequency",
    "basket": "basket size", "discount_share": "discount use", "nps": "NPS",
    "nps_missing": "no NPS answer",
    "recency_days": "days since last touch", "tenure_days": "tenure"}


def feature_label(name: str) -> str:
    """Readable name of a feature (used in persona names and cards)."""
    if name.startswith("share_"):
        return f"{name[6:].replace('_', ' ')} share"
    if name.startswith("clr_"):
        return f"{name[4:].replace('_', ' ')} share"
    if name.startswith("mix_"):
        return f"{name[4:].replace('_', ' ')} share of events"
    return _LABELS.get(name, name)


# --------------------------------------------------------------------------- features


def behaviour_features(source: Source, start: str, end: str, min_events: int | None = None,
                       vocabulary: Mapping[str, Sequence[str]] | None = None
                       ) -> tuple[pd.DataFrame, int]:
    """Feature matrix (index ``customer_id``, columns as in the module docstring) of
    customers with at least ``min_events`` activities in ``[start, end]`` (ISO dates,
    inclusive, UTC), and the number of customers left out for too little activity.
    Features missing for everyone are all-NaN columns here (dropped when fitting).

    ``vocabulary`` (``{"channel": [...], "event": [...]}``, e.g. a fitted model's
    :attr:`PersonaModel.vocabulary`) fixes the channels and events turned into features, so
    that features of another window have the model's columns."""
    x, _revenue, inactive, _vocab = _calibration(source, start, end, min_events, vocabulary)
    return x, inactive


@dataclass
class PersonaData:
    """What personas are fitted on (data access, no fitting): :func:`persona_data`."""

    #: every feature computed, one row per active customer (index ``customer_id``)
    features: pd.DataFrame
    #: customers with some activity in the window but fewer than ``min_events``
    inactive: int
    #: the channels and events turned into features (``{"channel": [...], "event": [...]}``)
    vocabulary: dict[str, list[str]] = field(default_factory=dict)
    #: revenue in the window by active customer (currency; None without an orders table)
    value: pd.Series | None = None
    #: the calibration window (ISO days)
    window: tuple[str, str] | None = None


def persona_data(source: Source, start: str, end: str, min_events: int | None = None,
                 vocabulary: Mapping[str, Sequence[str]] | None = None) -> PersonaData:
    """The feature matrix of :func:`behaviour_features` with its context: the customers left
    out for too little activity, the vocabulary used, and the revenue of the window (the
    past-outcome baseline of :mod:`cxanalysis.comparison`). One aggregate per table, on the
    source's engine; only the per-customer result comes back."""
    x, value, inactive, vocab = _calibration(source, start, end, min_events, vocabulary)
    return PersonaData(x, inactive, vocab, value, (str(start), str(end)))


def _top_values(t: ibis.Table, column: str, limit: int) -> list[str]:
    """The ``limit`` values of ``column`` held by the most customers (ties by value)."""
    if column not in t.columns:
        return []
    d = (t.filter(t[column].notnull()).group_by(column)
         .aggregate(n=_.customer_id.nunique()).order_by([ibis.desc("n"), column])
         .limit(limit).execute())
    return [str(v) for v in d[column]]


#: Distinct channels and event names counted per customer in the features' aggregate, at
#: most (together); beyond, the vocabulary is chosen first with one DISTINCT count per column.
MAX_COUNTED = 64


def _values(t: ibis.Table, columns: Sequence[str]) -> dict[str, list[str]] | None:
    """The distinct non-null values of each of ``columns`` in ``t`` (sorted), or None when
    there are more than :data:`MAX_COUNTED` in all. One cheap aggregate (few groups)."""
    if not columns:
        return {}
    d = t.group_by(list(columns)).aggregate(n=_.count()).limit(MAX_COUNTED ** 2 + 1).execute()
    out = {c: sorted(str(v) for v in d[c].dropna().unique()) for c in columns}
    if len(d) > MAX_COUNTED ** 2 or sum(map(len, out.values())) > MAX_COUNTED:
        return None
    return out


def _most_used(df: pd.DataFrame, prefix: str, values: list[str], limit: int
               ) -> tuple[pd.DataFrame, list[str]]:
    """The ``limit`` values held by the most customers of ``df`` (ties by value), from the
    per-customer counts ``{prefix}{i}`` of ``values``, and ``df`` with only their counts,
    renumbered in that order."""
    held = [int((df[f"{prefix}{i}"] > 0).sum()) for i in range(len(values))]
    order = sorted((v for v in range(len(values)) if held[v] > 0),
                   key=lambda v: (-held[v], values[v]))[:limit]
    kept = {f"{prefix}{i}": df[f"{prefix}{v}"] for i, v in enumerate(order)}
    df = df.drop(columns=[f"{prefix}{i}" for i in range(len(values))])
    return df.assign(**kept), [values[v] for v in order]


def _slug(value: str) -> str:
    return re.sub(r"\W+", "_", value.strip()).strip("_") or "blank"


def _calibration(source: Source, start: str, end: str, min_events: int | None,
                 vocabulary: Mapping[str, Sequence[str]] | None = None
                 ) -> tuple[pd.DataFrame, pd.Series | None, int, dict[str, list[str]]]:
    """Features, calibration-window revenue (both indexed by the active customers; None
    without an orders table), the number of inactive customers and the vocabulary used
    (channels and events turned into features), from one aggregate per table."""
    if not (source.has("events") or source.has("orders")):
        source.require("events")  # the error names what is missing
    t0 = pd.Timestamp(start, tz="UTC")
    t1 = window_end(end)
    if t1 <= t0:
        raise CXDataError(f"calibration window {start} to {end} is empty")
    activity = "events" if source.has("events") else "orders"
    if min_events is None:
        min_events = MIN_EVENTS if activity == "events" else MIN_ORDERS
    full = source.table(activity)
    ev = between_days(full, start, end)
    has_channel = "channel" in ev.columns
    counted: dict[str, list[str]] | None = None  # values counted per customer, by column
    if vocabulary is not None:
        channels = [str(c) for c in vocabulary.get("channel", [])] if has_channel else []
        events = [str(e) for e in vocabulary.get("event", [])] if activity == "events" else []
    else:
        counted = _values(ev, ["channel"] * has_channel + ["event"] * (activity == "events"))
        if counted is None:  # too many distinct values to count them all per customer
            channels = _top_values(ev, "channel", MAX_CHANNELS)
            events = _top_values(ev, "event", MAX_EVENTS) if activity == "events" else []
        else:
            channels, events = counted.get("channel", []), counted.get("event", [])
    # Two passes over the activity, joined per customer (both hold every customer with an
    # activity; the inactive ones are counted, then dropped): counts in one hash aggregate,
    # and the pace from a window over (customer_id, ts) alone. A DISTINCT count of active
    # days and a window carrying every column took most of the time and memory at 1M
    # customers (72M events); consecutive events on another UTC day count the same days.
    aggs: dict[str, ibis.Value] = {"n_events": _.count()}
    for i, c in enumerate(channels):
        aggs[f"ch{i}"] = (_.channel == c).cast("int64").sum()
    for i, e in enumerate(events):
        aggs[f"ev{i}"] = (_.event == e).cast("int64").sum()
    aggs["last_ts"] = _.ts.max()
    counts = ev.group_by("customer_id").aggregate(**aggs)
    pace = ev.select("customer_id", "ts")
    pace = pace.mutate(prev=pace.ts.lag().over(group_by="customer_id", order_by="ts"))
    pace = pace.mutate(gap=(epoch_seconds(pace.ts) - epoch_seconds(pace.prev)) / 3600.0,
                       new_day=(pace.prev.isnull() | (pace.ts.date() != pace.prev.date())))
    pace = pace.group_by("customer_id").aggregate(
        active_days=_.new_day.cast("int64").sum(),
        gap_hours=ibis.ifelse(_.gap < 168, (_.gap + 1).ln(), None).mean())
    per = counts.join(pace, "customer_id")
    if source.has("orders"):
        o = between_days(source.table("orders"), start, end)
        disc = o.discount.fill_null(0.0) if "discount" in o.columns else ibis.literal(0.0)
        o = o.mutate(disc=disc)
        oa = o.group_by("customer_id").aggregate(
            n_orders=_.count(), revenue=_.amount.sum(), gross=(_.amount + _.disc).sum(),
            discount=_.disc.sum())
        per = per.left_join(oa, "customer_id").drop("customer_id_right")
    if source.has("feedback") and "nps" in source.table("feedback").columns:
        f = between_days(source.table("feedback"), start, end)
        fa = f.group_by("customer_id").aggregate(nps=_.nps.mean())
        per = per.left_join(fa, "customer_id").drop("customer_id_right")
    if source.has("customers") and "signup_date" in source.table("customers").columns:
        cust = source.table("customers").select("customer_id", "signup_date")
    else:  # no customers table: the relationship starts with the first activity seen
        cust = full.group_by("customer_id").aggregate(signup_date=_.ts.min().date())
    per = per.left_join(cust, "customer_id").drop("customer_id_right")
    # on DuckDB through Arrow: Ibis's execute() took 4.4 GB at 1M customers for this 1M-row
    # result (DuckDB's memory limit does not cover it), Arrow to pandas 2.7 GB; other engines
    # keep execute() (PostgreSQL's AVG gives decimals that Arrow will not turn into doubles)
    df = (per.to_pyarrow().to_pandas() if _on_duckdb(per) else per.execute())
    df = df.set_index("customer_id").sort_index()
    if counted is not None:  # keep the most used values, by customers (ties by value)
        df, channels = _most_used(df, "ch", counted.get("channel", []), MAX_CHANNELS)
        df, events = _most_used(df, "ev", counted.get("event", []), MAX_EVENTS)
    active = df["n_events"] >= min_events
    inactive = int((~active).sum())
    df = df[active]
    if df.empty:
        raise CXDataError(f"no customer has {min_events} or more {activity} between {start} "
                          f"and {end}: nothing to cluster")
    for col in ("n_orders", "revenue", "gross", "discount", "nps"):
        if col not in df:
            df[col] = np.nan
    signup = pd.to_datetime(df["signup_date"])
    signup = (signup.dt.tz_convert("UTC") if isinstance(signup.dtype, pd.DatetimeTZDtype)
              else signup.dt.tz_localize("UTC"))
    exposure = ((t1 - signup.clip(lower=t0)).dt.total_seconds() / 86400).clip(lower=1.0)
    months = exposure / 30.0
    x = pd.DataFrame(index=df.index)
    n = df["n_events"].astype(float)
    for i, c in enumerate(channels):
        x[f"share_{_slug(c)}"] = df[f"ch{i}"] / n
    if channels:
        # centred log-ratio of the (sub)composition of the listed channels
        logc = np.log(df[[f"ch{i}" for i in range(len(channels))]].to_numpy(float)
                      + CLR_PSEUDOCOUNT)
        clr = logc - logc.mean(axis=1, keepdims=True)
        for i, c in enumerate(channels):
            x[f"clr_{_slug(c)}"] = clr[:, i]
    for i, e in enumerate(events):
        x[f"mix_{_slug(e)}"] = df[f"ev{i}"] / n
    x["events_per_month"] = np.log1p(n / months)
    x["active_days_per_month"] = np.log1p(df["active_days"].astype(float) / months)
    gap = df["gap_hours"].astype(float)
    x["gap_hours"] = gap.fillna(gap.mean()) if gap.notna().any() else gap
    if source.has("orders"):
        orders = df["n_orders"].fillna(0).astype(float)
        x["orders_per_month"] = np.log1p(orders / months)
        # undefined without an order (NaN, the average when clustering): a 0 would make the
        # customers without orders a cluster of their own on top of orders_per_month = 0
        x["basket"] = np.log1p(df["gross"] / orders.where(orders > 0))
        x["discount_share"] = df["discount"] / df["gross"].where(df["gross"] > 0)
    if source.has("feedback") and "nps" in source.table("feedback").columns:
        x["nps"] = df["nps"].astype(float)  # NaN without an answer: see nps_missing
        x["nps_missing"] = df["nps"].isna().astype(float)
    x["recency_days"] = (t1 - pd.to_datetime(df["last_ts"], utc=True)).dt.total_seconds() / 86400
    x["tenure_days"] = (t1 - signup).dt.total_seconds() / 86400
    value = df["revenue"].fillna(0.0).astype(float) if source.has("orders") else None
    return x.astype(float), value, inactive, {"channel": channels, "event": events}


def default_features(x: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The features clustered on by default (see "Feature treatment" in the module
    docstring) and those only profiled, with the reason."""
    skip: dict[str, str] = {}
    for f in x.columns:
        if f.startswith("share_") and f"clr_{f[6:]}" in x.columns:
            skip[f] = "channel shares sum to 1: clustered as centred log-ratios, clr_"
        elif f in PROFILE_ONLY:
            skip[f] = PROFILE_ONLY[f]
    if "nps" in x.columns:
        answered = float(x["nps"].notna().mean())
        if 0 < answered < NPS_MIN_ANSWERED:
            why = (f"answered by {answered:.0%} of the customers clustered (< "
                   f"{NPS_MIN_ANSWERED:.0%}): profiled, not clustered")
            skip["nps"] = why
            skip["nps_missing"] = why
    return [f for f in x.columns if f not in skip], skip


def degenerate_features(x: pd.DataFrame) -> dict[str, str]:
    """Features of ``x`` that cannot separate personas, with the reason: missing for every
    customer, or constant over them (e.g. the share of the only channel)."""
    out = {}
    for f in x.columns:
        col = x[f]
        if col.isna().all():
            out[f] = "missing for every customer"
        elif col.nunique(dropna=True) <= 1:
            out[f] = f"constant ({col.dropna().iloc[0]:.4g} for every customer)"
    return out


def _check_features(x: pd.DataFrame, features: Sequence[str] | None
                    ) -> tuple[list[str], dict[str, str]]:
    """The usable features among ``features`` (default: every column of ``x``) and the
    degenerate ones dropped, with reasons. An unknown feature name is an error (a typo
    should not silently change the personas); no usable feature left is an error."""
    requested = list(x.columns) if features is None else list(features)
    missing = [f for f in requested if f not in x.columns]
    if missing:
        raise ParameterError(f"unknown persona feature(s) {missing}; available: "
                             f"{', '.join(x.columns)}")
    bad = degenerate_features(x[requested])
    usable = [f for f in requested if f not in bad]
    if not usable:
        raise CXDataError("no persona feature varies across the customers clustered "
                          f"({'; '.join(f'{f}: {r}' for f, r in bad.items())}): nothing to "
                          "cluster on")
    return usable, bad


# --------------------------------------------------------------------------- clustering


def _threads(n: int):
    """Thread limit for clustering ``n`` customers (see :data:`SINGLE_THREAD_BELOW`)."""
    return threadpool_limits(1 if n < SINGLE_THREAD_BELOW else None)


def _fit(z: np.ndarray, k: int, method: str, seed: int, n_init: int = 10):
    if method == "kmeans":
        return KMeans(k, n_init=n_init, random_state=seed).fit(z)
    if method == "minibatch":
        return MiniBatchKMeans(k, n_init=n_init, random_state=seed, batch_size=4096).fit(z)
    if method == "gmm":
        return GaussianMixture(k, n_init=max(1, n_init // 3), random_state=seed,
                               covariance_type="full").fit(z)
    raise ValueError(f"method must be one of {METHODS}, not {method!r}")


def _size_order(labels: np.ndarray, k: int) -> np.ndarray:
    """Raw label -> number by decreasing cluster size (ties by label), so numbering is
    stable."""
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return remap


def k_sweep(x: pd.DataFrame, features: Sequence[str], ks: Sequence[int] = range(2, 9),
            method: str = "kmeans", seed: int = 0, sample: int = 5000,
            min_size: int = MIN_GROUP_SIZE, fit_sample: int = 50_000) -> pd.DataFrame:
    """Per k: silhouette (on a seeded sample of ``sample`` customers), Davies-Bouldin,
    Calinski-Harabasz, GMM BIC and the smallest cluster's size (scaled to all customers).

    For speed with millions of customers the sweep fits on a seeded sample of at most
    ``fit_sample`` customers (the indices are estimates of the same population figures)."""
    return _k_sweep(x, features, ks, method, seed, sample, min_size, fit_sample)


def _k_sweep(x: pd.DataFrame, features: Sequence[str] | None, ks: Sequence[int], method: str,
             seed: int, sample: int, min_size: int, fit_sample: int) -> pd.DataFrame:
    features, _dropped = _check_features(x, features)
    z = StandardScaler().fit_transform(x[features].to_numpy(float))
    return _sweep(z, ks, method, seed, sample, min_size, fit_sample)


def _sweep(z: np.ndarray, ks: Sequence[int], method: str, seed: int, sample: int = 5000,
           min_size: int = MIN_GROUP_SIZE, fit_sample: int = 50_000) -> pd.DataFrame:
    """:func:`k_sweep` on standardised features ``z`` (customers x features)."""
    with _threads(min(len(z), fit_sample)):
        return _sweep_sample(z, ks, method, seed, sample, min_size, fit_sample)


def _sweep_sample(z: np.ndarray, ks: Sequence[int], method: str, seed: int, sample: int,
                  min_size: int, fit_sample: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    scale = 1.0
    if len(z) > fit_sample:
        scale = len(z) / fit_sample
        z = z[np.sort(rng.choice(len(z), fit_sample, replace=False))]
    idx = rng.choice(len(z), min(sample, len(z)), replace=False)
    rows = []
    for k in ks:
        if k >= len(z):
            break
        m = _fit(z, k, method, seed)
        lab = m.predict(z)
        bic = GaussianMixture(k, random_state=seed, covariance_type="full",
                              max_iter=200).fit(z[idx]).bic(z[idx])
        rows.append({"k": k, "silhouette": silhouette_score(z[idx], lab[idx]),
                     "davies_bouldin": davies_bouldin_score(z, lab),
                     "calinski_harabasz": calinski_harabasz_score(z, lab),
                     "gmm_bic": bic,
                     "smallest": int(np.bincount(lab, minlength=k).min() * scale)})
    out = pd.DataFrame(rows)
    out["eligible"] = out["smallest"] >= min_size
    return out


def choose_k(sweep: pd.DataFrame) -> int:
    """Data-driven default: the k with the largest Calinski-Harabasz index among those
    whose smallest persona has at least the minimum size (ties: the smaller k).

    Why this index: in Milligan & Cooper's (1985) comparison of 30 stopping rules it
    recovered the true number of clusters most often; the silhouette tends to favour
    splitting one large group off, and the BIC of full-covariance mixtures keeps falling
    with k on behavioural data. All of them are shown in the sweep.
    """
    ok = sweep[sweep.eligible]
    if ok.empty:
        raise CXDataError("no k in the sweep gives personas of the minimum size; lower "
                          "min_group_size or k")
    return int(ok.sort_values(["calinski_harabasz", "k"], ascending=[False, True])
               .iloc[0]["k"])


def bootstrap_jaccard(z: np.ndarray, labels: np.ndarray, k: int, method: str, seed: int,
                      n_boot: int = 20, ks: Sequence[int] | None = None,
                      min_size: int = 0, chosen: list[int] | None = None) -> np.ndarray:
    """Per cluster, the mean over bootstrap refits of the best Jaccard similarity between
    the cluster and a bootstrap cluster, on the customers drawn (Hennig's clusterboot).

    With ``ks`` (k was chosen from the data), every bootstrap sample chooses its own k
    among ``ks`` the same way (:func:`choose_k`: largest Calinski-Harabasz among the k
    whose smallest cluster has ``min_size`` customers), so the Jaccard includes the
    uncertainty of k; the k chosen by each refit is appended to ``chosen``."""
    rng = np.random.default_rng(seed)
    n = len(z)
    out = np.zeros((n_boot, k))
    for b in bar(range(n_boot), desc="persona stability", unit="refit"):
        idx = np.unique(rng.integers(0, n, n))
        kb = k
        if ks is not None:
            best = None
            for kk in ks:
                if kk >= len(idx):
                    break
                lab = _fit(z[idx], kk, method, seed + b + 1, n_init=3).predict(z[idx])
                if np.bincount(lab, minlength=kk).min() < min_size:
                    continue
                ch = calinski_harabasz_score(z[idx], lab)
                if best is None or ch > best[0]:
                    best = (ch, kk, lab)
            if best is None:  # no k of the minimum size on this sample: keep k
                lab_b = _fit(z[idx], k, method, seed + b + 1, n_init=3).predict(z[idx])
            else:
                _ch, kb, lab_b = best
        else:
            lab_b = _fit(z[idx], k, method, seed + b + 1, n_init=3).predict(z[idx])
        if chosen is not None and ks is not None:
            chosen.append(int(kb))
        orig = labels[idx]
        # inter[c, d]: customers in persona c and bootstrap cluster d; union by inclusion-exclusion
        inter = np.bincount(orig * kb + lab_b, minlength=k * kb).reshape(k, kb)
        union = inter.sum(axis=1)[:, None] + inter.sum(axis=0)[None, :] - inter
        out[b] = np.where(inter > 0, inter / np.maximum(union, 1), 0.0).max(axis=1)
    return out.mean(axis=0)


#: Level of the test against a single-Gaussian null (no persona structure).
NULL_ALPHA = 0.05


@dataclass
class StructureTest:
    """Result of :func:`structure_test`."""

    statistic: float  # largest Calinski-Harabasz index over the k tried, on the data
    null: np.ndarray  # the same statistic on each draw from the fitted single Gaussian
    p_value: float  # Monte Carlo: (1 + draws >= statistic) / (1 + draws)
    alpha: float
    customers: int  # size of the (seeded) sample tested

    @property
    def structure(self) -> bool:
        """Whether the data are more clustered than a single Gaussian (p <= alpha)."""
        return self.p_value <= self.alpha

    def summary(self) -> str:
        verdict = ("persona structure beyond a single Gaussian" if self.structure
                   else "no clear persona structure (k = 1)")
        return (f"Test against no structure: largest Calinski-Harabasz {self.statistic:.1f} "
                f"vs {len(self.null)} draws of one Gaussian fitted to the data (95th "
                f"percentile {np.quantile(self.null, 0.95):.1f}; {self.customers:,} "
                f"customers), Monte Carlo p = {self.p_value:.3f}: {verdict}.")

    def as_dict(self) -> dict[str, Any]:
        return {"statistic": float(self.statistic), "p_value": float(self.p_value),
                "null_p95": float(np.quantile(self.null, 0.95)), "draws": len(self.null),
                "alpha": self.alpha, "structure": self.structure}


def _max_ch(z: np.ndarray, ks: Sequence[int], seed: int) -> float:
    return max(calinski_harabasz_score(z, _fit(z, k, "kmeans", seed, n_init=3).predict(z))
               for k in ks if k < len(z))


def structure_test(z: np.ndarray, ks: Sequence[int] = range(2, 9), seed: int = 0,
                   n_null: int = 19, sample: int = 2000,
                   alpha: float = NULL_ALPHA) -> StructureTest:
    """Is there persona structure at all? A parametric bootstrap against one Gaussian.

    The statistic is the largest Calinski-Harabasz index of k-means over ``ks`` -- the
    criterion :func:`choose_k` uses. Features are first turned into normal scores
    (``Phi^-1((rank - 0.5) / n)`` per column), so that skewed but unimodal behaviour
    (frequencies, recency) is not mistaken for clusters; the null is a single Gaussian with
    the normal scores' correlation, drawn ``n_null`` times at the sample's size (seeded).
    Monte Carlo p-value ``(1 + #{null >= observed}) / (1 + n_null)``; with the default 19
    draws, structure (p <= 0.05) means the data beat every draw. For speed, a seeded sample
    of at most ``sample`` customers is tested."""
    rng = np.random.default_rng(seed)
    m = min(len(z), sample)
    with _threads(m):
        return _structure_test(z, ks, seed, n_null, m, alpha, rng)


def _structure_test(z: np.ndarray, ks: Sequence[int], seed: int, n_null: int, m: int,
                    alpha: float, rng: np.random.Generator) -> StructureTest:
    from scipy import stats

    zs = z[np.sort(rng.choice(len(z), m, replace=False))] if m < len(z) else z
    ns = stats.norm.ppf((stats.rankdata(zs, axis=0) - 0.5) / m)
    keep = ns.std(axis=0) > 0
    ns = ns[:, keep]
    obs = _max_ch(ns, ks, seed)
    corr = np.atleast_2d(np.corrcoef(ns, rowvar=False))
    null = np.array([_max_ch(rng.multivariate_normal(np.zeros(len(corr)), corr, m), ks, seed)
                     for _b in range(n_null)])
    p = (1 + int((null >= obs).sum())) / (1 + n_null)
    return StructureTest(float(obs), null, float(p), alpha, int(m))


STABLE_JACCARD = 0.75  # Hennig: below this mean bootstrap Jaccard a cluster is not stable


def stability_verdict(j: float) -> str:
    """Hennig's reading of the mean bootstrap Jaccard ("not assessed" for NaN: stability
    diagnostics were not run)."""
    if j is None or math.isnan(j):
        return "not assessed"
    if j >= 0.85:
        return "highly stable"
    if j >= STABLE_JACCARD:
        return "valid, stable"
    if j >= 0.6:
        return "patterns, doubtful"
    return "not trustworthy"


# --------------------------------------------------------------------------- result


@dataclass
class Personas(ResultMixin):
    """Fitted personas described: a fitted :class:`PersonaModel` and the
    :class:`PersonaData` it was fitted on, as profiles (:meth:`table`, :meth:`plot`),
    stability, the k sweep and a summary (notebook 01's report of the personas)."""

    model: PersonaModel
    data: PersonaData

    def __post_init__(self) -> None:
        check_is_fitted(self.model, "labels_")
        if not self.model.labels_.index.equals(self.data.features.index):
            raise ParameterError("the model was not fitted on these data (its customers "
                                 "differ from data.features')")

    # the fitted model and its data under the names notebooks and reports use

    @property
    def assignments(self) -> pd.Series:
        """Persona name by customer_id (index): the model's ``labels_``."""
        return self.model.labels_

    @property
    def features_frame(self) -> pd.DataFrame:
        """Every feature computed, per active customer (also those not clustered on)."""
        return self.data.features

    @property
    def sweep(self) -> pd.DataFrame:
        return self.model.sweep_

    @property
    def jaccard(self) -> dict[str, float]:
        """Mean bootstrap Jaccard by persona (NaN: not assessed)."""
        return {n: float(v) for n, v in self.model.stability_.items()}

    @property
    def seed_ari(self) -> float:
        return self.model.seed_ari_

    @property
    def inactive(self) -> int:
        return self.data.inactive

    @property
    def profile_z(self) -> pd.DataFrame:
        return self.model.profile_z_

    @property
    def naming_rule(self) -> str:
        return self.model.naming_rule_

    @property
    def min_group_size(self) -> int:
        return self.model.min_group_size

    @property
    def value(self) -> pd.Series | None:
        """Revenue in the calibration window by customer (None without orders)."""
        return self.data.value

    @property
    def dropped(self) -> dict[str, str]:
        """Degenerate features dropped before clustering, with the reason."""
        return self.model.dropped_

    @property
    def channel_shares(self) -> pd.DataFrame:
        """Every channel share of the customers clustered (clustered on or not)."""
        x = self.data.features
        return x[[c for c in x.columns if c.startswith("share_")]]

    @property
    def window(self) -> tuple[str, str] | None:
        """The calibration window."""
        return self.data.window

    @property
    def vocabulary(self) -> dict[str, list[str]]:
        """Channels and events the features were built from (pass it to
        :func:`behaviour_features` to build another window's features for
        ``model.predict``)."""
        return self.data.vocabulary

    @property
    def not_clustered(self) -> dict[str, str]:
        """Features computed but not clustered on by default (profiled only), with why."""
        return self.model.not_clustered_

    @property
    def structure(self) -> StructureTest | None:
        """The test against no structure (None when k was given)."""
        return self.model.structure_

    @property
    def boot_k(self) -> list[int]:
        """The k chosen by each bootstrap refit (k chosen from the data), else empty."""
        return self.model.bootstrap_k_

    @property
    def assessed(self) -> bool:
        """Whether the stability diagnostics (bootstrap Jaccard, ARI across seeds) ran."""
        return not all(math.isnan(j) for j in self.jaccard.values())

    @property
    def k(self) -> int:
        return self.model.k_

    @property
    def names(self) -> list[str]:
        return self.model.names_

    @property
    def unstable(self) -> list[str]:
        """Personas whose mean bootstrap Jaccard is below :data:`STABLE_JACCARD`."""
        return [n for n in self.names if self.jaccard[n] < STABLE_JACCARD]

    def to_dict(self) -> dict[str, Any]:
        """The headline: k, sizes (under ``min_group_size`` as None), stability per persona
        (mean bootstrap Jaccard), ARI across seeds and the unstable personas."""
        sizes = self.sizes()
        return to_jsonable({
            "k": self.k,
            "persona_sizes": {n: s if s >= self.min_group_size else None
                              for n, s in sizes.items()},
            "stability_jaccard": self.jaccard, "seed_ari": self.seed_ari,
            "unstable": self.unstable, "inactive": self.inactive})

    def sizes(self) -> dict[str, int]:
        vc = self.assignments.value_counts()
        return {n: int(vc.get(n, 0)) for n in self.names}

    def table(self) -> pd.DataFrame:
        """Per persona: size, share, value share, stability, preferred channel and the
        average of each feature in natural units."""
        x = self.features_frame
        # every feature computed is profiled (also tenure, NPS of those who answered, the
        # raw channel shares); the log-ratios only serve the distance
        x = x[[c for c in x.columns if not c.startswith("clr_")]]
        means = x.groupby(self.assignments).mean().reindex(self.names)
        out = pd.DataFrame(index=pd.Index(self.names, name="persona"))
        sizes = self.sizes()
        out["customers"] = [sizes[n] for n in self.names]
        out["share"] = out["customers"] / out["customers"].sum()
        if self.value is not None:
            v = self.value.reindex(x.index).fillna(0.0).groupby(self.assignments).sum()
            out["value_share"] = (v / v.sum()).reindex(self.names)
        out["stability_jaccard"] = [self.jaccard[n] for n in self.names]
        out["stability"] = [stability_verdict(self.jaccard[n]) for n in self.names]
        sh = self.channel_shares
        if sh is not None and sh.shape[1]:
            # from every channel share, also when shares were not clustered on (or dropped
            # as constant: one channel)
            sm = sh.groupby(self.assignments.reindex(sh.index)).mean().reindex(self.names)
            out["preferred_channel"] = sm.idxmax(axis=1).str.removeprefix("share_")
        nat = means.copy()
        for c in ("events_per_month", "active_days_per_month", "orders_per_month", "basket",
                  "gap_hours"):
            if c in nat:
                nat[c] = np.expm1(nat[c])
        out = out.join(nat.round(3))
        small = out["customers"] < self.min_group_size
        out.loc[small, out.columns.difference(["stability"])] = np.nan
        return out

    def summary(self) -> str:
        unstable = self.unstable
        sizes = self.sizes()

        def size(n: str) -> str:
            return f"{sizes[n]:,}" if sizes[n] >= self.min_group_size else "suppressed"

        test = "" if self.structure is None else " " + self.structure.summary()
        if self.k == 1:
            return (f"No clear persona structure: k = 1, one group of "
                    f"{len(self.assignments):,} active customers ({self.inactive:,} with too "
                    f"little activity left unassigned).{test}")
        head = (f"{self.k} personas from {len(self.assignments):,} active customers "
                f"({self.inactive:,} with too little activity left unassigned), "
                f"{self.model.method}, seed {self.model.random_state}: ")
        tail = test
        if self.boot_k:
            same = sum(b == self.k for b in self.boot_k)
            tail += (f" k re-chosen in each of {len(self.boot_k)} bootstrap refits: "
                     f"{same} chose k = {self.k}.")
        if not self.assessed:
            return (head + "; ".join(f"{n} ({size(n)})" for n in self.names)
                    + ". Stability not assessed." + tail)
        return (head + "; ".join(f"{n} ({size(n)}, Jaccard {self.jaccard[n]:.2f})"
                                 for n in self.names)
                + f". ARI across seeds {self.seed_ari:.2f}. "
                + (f"Unstable (Jaccard < {STABLE_JACCARD}): {', '.join(unstable)}." if unstable
                   else f"Every persona is stable (Jaccard >= {STABLE_JACCARD}).") + tail)

    def features_note(self) -> str:
        """Which features the personas were built on, and the degenerate ones dropped."""
        text = f"Clustered on {len(self.model.features_)} feature(s): " \
            f"{', '.join(self.model.features_)}."
        if self.not_clustered:
            by_reason: dict[str, list[str]] = {}
            for f, r in self.not_clustered.items():
                by_reason.setdefault(r, []).append(f)
            text += " Profiled, not clustered on: " + "; ".join(
                f"{', '.join(fs)} ({r})" for r, fs in by_reason.items()) + "."
        if self.dropped:
            text += " Dropped as degenerate: " + "; ".join(
                f"{f} ({r})" for f, r in self.dropped.items()) + "."
        return text

    def plot_sweep(self) -> plt.Figure:
        s = self.sweep
        fig, axes = plt.subplots(1, 4, figsize=(13, 3))
        for ax, col in zip(axes, ["silhouette", "davies_bouldin", "calinski_harabasz",
                                  "gmm_bic"], strict=True):
            ax.plot(s.k, s[col], marker="o")
            ax.axvline(self.k, color="grey", ls=":")
            ax.set_title(col.replace("_", " "))
            ax.set_xlabel("number of personas k")
            ax.set_ylabel(_SWEEP_UNITS[col])
        fig.suptitle("Choosing k (dotted: chosen)")
        fig.tight_layout()
        return fig

    def plot(self, top: int = 6) -> plt.Figure:
        """Persona cards: the strongest distinguishing features of each persona (z-score of
        the persona mean against all customers)."""
        k = self.k
        cols = min(k, 3)
        rows = int(np.ceil(k / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 2.8 * rows), squeeze=False)
        sizes = self.sizes()
        for ax, name in zip(axes.flat, self.names, strict=False):
            z = self.profile_z.loc[name]
            z = z.reindex(z.abs().sort_values(ascending=False).index[:top])[::-1]
            ax.barh([feature_label(f) for f in z.index], z.to_numpy(),
                    color=["#d81b60" if v > 0 else "#1e88e5" for v in z])
            ax.axvline(0, color="black", lw=0.8)
            n = sizes[name]
            shown = f"{n:,}" if n >= self.min_group_size else "suppressed"
            ax.set_title(f"{name}\n{shown} customers, Jaccard {self.jaccard[name]:.2f}",
                         fontsize=9)
            ax.tick_params(labelsize=8)
            ax.set_xlabel("z-score vs all customers (SD)", fontsize=8)
            ax.set_ylabel("feature", fontsize=8)
        for ax in list(axes.flat)[k:]:
            ax.axis("off")
        fig.suptitle("Persona cards (z-score of the persona mean vs all customers)")
        fig.tight_layout()
        return fig


def _name_personas(z: pd.DataFrame) -> tuple[list[str], str]:
    """Name each persona after its two most distinctive features (largest |z|), e.g.
    "high app share, high loyalty logins"; duplicates get a third feature."""
    rule = ("Name = the two features whose persona mean is furthest from the overall mean "
            "(|z-score|), each prefixed 'high' or 'low'; a third is added if two names clash.")
    names: list[str] = []
    for _i, row in z.iterrows():
        order = row.abs().sort_values(ascending=False).index
        parts = [f"{'high' if row[f] > 0 else 'low'} {feature_label(f)}" for f in order[:3]]
        names.append(", ".join(parts[:2]))
        names[-1] = names[-1] if names.count(names[-1]) == 1 else ", ".join(parts)
    return names, rule


#: Axis label of each k-sweep panel: what the score is and which way is better.
_SWEEP_UNITS = {"silhouette": "silhouette (-1 to 1, higher better)",
                "davies_bouldin": "Davies-Bouldin (lower better)",
                "calinski_harabasz": "Calinski-Harabasz (higher better)",
                "gmm_bic": "GMM BIC (lower better)"}

#: Name of the single group when there is no clear persona structure (k = 1).
NO_STRUCTURE = "all customers (no clear persona structure)"


def stability(z: np.ndarray, labels: np.ndarray, k: int, method: str = "kmeans",
              seed: int = 0, n_boot: int = 20, ks: Sequence[int] | None = None,
              min_size: int = 0, chosen: list[int] | None = None) -> tuple[np.ndarray, float]:
    """Stability diagnostics of a clustering of ``z`` (standardised features, customers x
    features) into ``labels`` (integers ``0 .. k-1``): the per-cluster mean bootstrap
    Jaccard (:func:`bootstrap_jaccard`; k re-chosen among ``ks`` in each refit when given,
    each refit's k appended to ``chosen``) and the mean adjusted Rand index between the
    clustering and three refits with other seeds (``seed + 101, 202, 303``; 3 restarts each).

    Both run on a seeded sample of at most 20,000 customers (5,000 when every refit also
    re-chooses k: a k sweep per refit), with ``min_size`` scaled to the sample: enough for the
    Jaccard of every persona of reasonable size, and bounded time with millions of
    customers."""
    cap = 20_000 if ks is None else 5_000
    rng = np.random.default_rng(seed)
    sub = (np.sort(rng.choice(len(z), cap, replace=False)) if len(z) > cap
           else np.arange(len(z)))
    scale = len(sub) / len(z)
    with _threads(len(sub)):
        jac = bootstrap_jaccard(z[sub], labels[sub], k, method, seed, n_boot, ks,
                                int(min_size * scale), chosen)
        others = [_fit(z[sub], k, method, seed + s, n_init=3).predict(z[sub])
                  for s in (101, 202, 303)]
    seed_ari = float(np.mean([adjusted_rand_score(a, b) for a, b in
                              itertools.combinations([labels[sub], *others], 2)]))
    return jac, seed_ari


# --------------------------------------------------------------------------- estimator


class PersonaModel(ClusterMixin, BaseEstimator):
    """Behavioural personas as a scikit-learn estimator: ``PersonaModel(...).fit(X)``.

    Hyper-parameters are set in ``__init__`` and only stored there, so ``get_params``,
    ``set_params`` and :func:`sklearn.base.clone` work; :meth:`fit` takes a feature frame and
    returns the estimator; what was learnt is in attributes ending in ``_``. The estimator
    never reads data: build ``X`` with :func:`persona_data` (or :func:`behaviour_features`)
    first. :meth:`fit` runs, as separate steps, the choice of features, the scaling, the
    choice of k (the sweep and the test against no structure, :func:`k_sweep`,
    :func:`structure_test`, :func:`choose_k`), the final clustering with the persona names,
    and the stability diagnostics (:func:`stability`; skipped with ``n_bootstrap=0``).
    :class:`Personas` turns a fitted model and its data into profiles, tables and charts.

    Parameters
    ----------
    k : int, optional
        Number of personas; None chooses it from the data: 1 ("no clear persona structure")
        when :func:`structure_test` does not reject a single Gaussian, else :func:`choose_k`
        over ``k_range``.
    features : sequence of str, optional
        Columns of ``X`` clustered on; None means :func:`default_features` (channel
        log-ratios, not raw shares; NPS with its missing flag only when answered by most; no
        tenure), the others listed in :attr:`not_clustered_`. Degenerate ones (constant,
        missing for everyone) are dropped and listed in :attr:`dropped_`; a missing value of
        a clustered feature counts as its average (z = 0).
    method : {"kmeans", "minibatch", "gmm"}
        k-means (10 restarts), mini-batch k-means (for millions of customers) or a Gaussian
        mixture (full covariances, 3 restarts).
    k_range : (int, int)
        Smallest and largest k of the sweep, inclusive (used when ``k`` is None); k above
        ``customers / min_group_size`` is left out.
    n_bootstrap : int
        Bootstrap refits for the per-persona Jaccard stability (each refit chooses its own k
        when ``k`` is None); 0 skips the stability diagnostics (:attr:`stability_` and
        :attr:`seed_ari_` are NaN).
    n_null : int
        Draws of the single-Gaussian null of :func:`structure_test` (only when ``k`` is None).
    min_group_size : int
        Least customers per persona for a k to be chosen (customers).
    random_state : int
        Seed of every random step: the clustering, the sweep's samples, the null draws and the
        bootstrap. Same seed, same data: same personas.

    Attributes
    ----------
    feature_names_in_ : ndarray of str
        Columns of the frame fitted on.
    features_ : list of str
        Features clustered on (after the degenerate ones were dropped).
    not_clustered_ : dict
        Features of ``X`` not clustered on by default (profiled only), with the reason.
    dropped_ : dict
        Degenerate features dropped, with the reason.
    scaler_ : sklearn.preprocessing.StandardScaler
        The z-scores of :attr:`features_` (part of the model: :meth:`predict` uses it).
    sweep_ : pandas.DataFrame
        Per k of the sweep: silhouette, Davies-Bouldin, Calinski-Harabasz, GMM BIC, smallest
        persona (customers) and whether it is eligible; empty when ``k`` was given.
    structure_ : StructureTest or None
        The test against no persona structure; None when ``k`` was given.
    k_ : int
        Number of personas found.
    names_ : list of str
        Persona names, largest persona first (``NO_STRUCTURE`` when ``k_`` is 1).
    naming_rule_ : str
        How the names were made.
    labels_ : pandas.Series
        Persona name of each customer fitted on (index of ``X``), named ``persona``.
    cluster_centers_ : pandas.DataFrame
        Centre (k-means) or mean (mixture) of each persona (rows :attr:`names_`) in the units
        of :attr:`features_`.
    profile_z_ : pandas.DataFrame
        Mean z-score of each clustered feature by persona (rows :attr:`names_`): what the
        names are made of.
    stability_ : pandas.Series
        Mean bootstrap Jaccard by persona (:attr:`names_`); NaN when not assessed (k = 1 or
        ``n_bootstrap=0``).
    seed_ari_ : float
        Mean adjusted Rand index between the fit and three refits with other seeds (NaN when
        not assessed).
    bootstrap_k_ : list of int
        The k chosen by each bootstrap refit (k chosen from the data), else empty.
    clusterer_ : KMeans, MiniBatchKMeans or GaussianMixture
        The fitted scikit-learn model (its own label numbers; see :attr:`label_order_`).
    label_order_ : ndarray of int
        The clusterer's label -> persona number (0 = largest persona).
    """

    def __init__(self, k: int | None = None, *, features: Sequence[str] | None = None,
                 method: str = "kmeans", k_range: Sequence[int] = (2, 8),
                 n_bootstrap: int = 20, n_null: int = 19,
                 min_group_size: int = MIN_GROUP_SIZE, random_state: int = 0) -> None:
        self.k = k
        self.features = features
        self.method = method
        self.k_range = k_range
        self.n_bootstrap = n_bootstrap
        self.n_null = n_null
        self.min_group_size = min_group_size
        self.random_state = random_state

    # ---- fit, in named steps

    def fit(self, X: pd.DataFrame, y: None = None) -> PersonaModel:
        """Fit personas on the feature frame ``X`` (one row per customer, index the customer
        id, columns as :func:`behaviour_features`). ``y`` is ignored. Returns ``self``."""
        self._check_params()
        if not isinstance(X, pd.DataFrame):
            raise ParameterError("X must be a feature frame (pandas DataFrame, one row per "
                                 f"customer, e.g. persona_data(...).features), not "
                                 f"{type(X).__name__}")
        x = self._choose_features(X)
        z = self._scale(x)
        self._choose_k(z)
        codes = self._cluster(x, z)
        self._assess_stability(z, codes)
        return self

    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise ParameterError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.k is not None and not (_is_int(self.k) and self.k >= 1):
            raise ParameterError(f"k must be None or an integer of 1 or more, not {self.k!r}")
        kr = self.k_range
        if (isinstance(kr, str) or len(kr) != 2 or not all(map(_is_int, kr))
                or not 2 <= kr[0] <= kr[1]):
            raise ParameterError(f"k_range must be [smallest, largest] with 2 <= smallest <= "
                                 f"largest, not {kr!r}")
        for name, low in (("n_bootstrap", 0), ("n_null", 1), ("min_group_size", 1)):
            v = getattr(self, name)
            if not (_is_int(v) and v >= low):
                raise ParameterError(f"{name} must be an integer of {low} or more, not {v!r}")
        if not _is_int(self.random_state):
            raise ParameterError("random_state must be an integer seed (every random step "
                                 f"takes a seed), not {self.random_state!r}")

    def _choose_features(self, X: pd.DataFrame) -> pd.DataFrame:
        """Features clustered on (``features_``, ``not_clustered_``, ``dropped_``), missing
        values filled with the feature's mean."""
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        if self.features is None:
            wanted, self.not_clustered_ = default_features(X)
        else:
            wanted, self.not_clustered_ = list(self.features), {}
        self.features_, self.dropped_ = _check_features(X, wanted)
        x = X[self.features_]
        # a missing value of a clustered feature (NPS without an answer, with its flag)
        # counts as the average: z = 0, as predict does
        return x.fillna(x.mean())

    def _scale(self, x: pd.DataFrame) -> np.ndarray:
        v = x.to_numpy(float)
        self.scaler_ = StandardScaler().fit(v)
        return self.scaler_.transform(v)

    def _choose_k(self, z: np.ndarray) -> None:
        """``k_`` (given, or from the sweep and the test against no structure), ``sweep_``
        and ``structure_``."""
        n, mgs, seed = len(z), self.min_group_size, int(self.random_state)
        if self.k is not None:
            if self.k * mgs > n:
                raise CXDataError(f"k = {self.k} needs at least {self.k * mgs} active "
                                  f"customers of {mgs}+ per persona; the data has {n:,}")
            self.k_ = int(self.k)
            self.sweep_ = pd.DataFrame(columns=["k", "silhouette", "davies_bouldin",
                                                "calinski_harabasz", "gmm_bic", "smallest",
                                                "eligible"])
            self.structure_ = None
            return
        lo, hi = self.k_range
        ks = [kk for kk in range(lo, hi + 1) if kk * mgs <= n]
        if not ks:
            raise CXDataError(f"{n:,} active customers cannot form {lo} personas of {mgs}+ "
                              "customers; lower min_group_size or min_events")
        self.sweep_ = _sweep(z, ks, self.method, seed, min_size=mgs)
        self.structure_ = structure_test(z, ks, seed, n_null=self.n_null)
        self.k_ = choose_k(self.sweep_) if self.structure_.structure else 1

    def _cluster(self, x: pd.DataFrame, z: np.ndarray) -> np.ndarray:
        """The final clustering: ``clusterer_``, ``label_order_``, ``names_``,
        ``naming_rule_``, ``profile_z_``, ``labels_``, ``cluster_centers_``; returns the
        persona number (0 = largest) of each row."""
        k, seed = self.k_, int(self.random_state)
        with _threads(len(z)):
            model = _fit(z, k, self.method, seed)
            raw = model.predict(z)
        perm = _size_order(raw, k)  # also maps the model's raw labels in predict()
        codes = perm[raw]
        sd = x.std(ddof=0)
        prof = ((x - x.mean()) / sd).groupby(codes).mean()
        if k == 1:
            names, rule = [NO_STRUCTURE], ("One group: the data are no more clustered than a "
                                           "single Gaussian (see the structure test).")
        else:
            names, rule = _name_personas(prof)
        prof.index = names
        self.clusterer_, self.label_order_ = model, perm
        self.names_, self.naming_rule_, self.profile_z_ = names, rule, prof
        self.labels_ = pd.Series(np.array(names, dtype=object)[codes], index=x.index,
                                 name="persona")
        centres = model.means_ if self.method == "gmm" else model.cluster_centers_
        self.cluster_centers_ = pd.DataFrame(
            self.scaler_.inverse_transform(centres[np.argsort(perm)]), index=names,
            columns=self.features_)
        return codes

    def _assess_stability(self, z: np.ndarray, codes: np.ndarray) -> None:
        """``stability_``, ``seed_ari_`` and ``bootstrap_k_`` (:func:`stability`)."""
        k = self.k_
        boot_k: list[int] = []
        if self.n_bootstrap > 0 and k > 1:
            eligible = (None if self.k is not None
                        else [int(kk) for kk in self.sweep_.k[self.sweep_.eligible]])
            jac, seed_ari = stability(z, codes, k, self.method, int(self.random_state),
                                      self.n_bootstrap, eligible, self.min_group_size, boot_k)
        else:  # not asked for, or one group (trivially "stable": nothing to assess)
            jac, seed_ari = np.full(k, np.nan), float("nan")
        self.stability_ = pd.Series(np.asarray(jac, float), index=self.names_,
                                    name="jaccard")
        self.seed_ari_ = seed_ari
        self.bootstrap_k_ = boot_k

    # ---- use

    def predict(self, X: pd.DataFrame) -> pd.Series:
        """Persona name of each row of a feature frame (e.g. new customers, built with
        :func:`behaviour_features` and the calibration's vocabulary); a missing value counts
        as the calibration average. Returns a Series named ``persona`` indexed like ``X``."""
        check_is_fitted(self, "labels_")
        missing = [f for f in self.features_ if f not in X.columns]
        if missing:
            raise ParameterError(f"the feature frame lacks the model's feature(s) {missing}")
        v = X[self.features_].to_numpy(float)
        # a feature missing for a customer (e.g. no gap under 7 days in another window) is
        # taken as the calibration average: z = 0, neither pulling nor pushing
        v = np.where(np.isnan(v), self.scaler_.mean_[None, :], v)
        with _threads(len(v)):
            codes = self.label_order_[self.clusterer_.predict(self.scaler_.transform(v))]
        return pd.Series(np.array(self.names_, dtype=object)[codes], index=X.index,
                         name="persona")


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


# --------------------------------------------------------------------------- one call

#: Defaults of the persona parameters notebook 01 exposes, by the notebook's names (kept
#: equal to 01's parameters cell and to :class:`PersonaModel`'s defaults by a test; the keys
#: of the ``parameters`` record in :data:`ASSIGNMENTS_META`, used when 02/03 fit personas).
FIT_DEFAULTS: dict[str, Any] = {"features": None, "method": "kmeans", "k": None,
                                "k_range": [2, 8], "min_events": None, "seed": 0,
                                "min_group_size": MIN_GROUP_SIZE}
#: Notebook parameter -> :class:`PersonaModel` parameter, where the names differ (the
#: notebook's ``seed`` also seeds the comparison, so it keeps its name).
NOTEBOOK_NAMES = {"seed": "random_state", "n_boot": "n_bootstrap"}
_RENAMED = {"seed": "random_state", "n_boot": "n_bootstrap", "ks": "k_range=[lo, hi]",
            "diagnostics": "n_bootstrap=0 (no diagnostics)"}


def fit_personas(source: Source, start: str, end: str, min_events: int | None = None,
                 **params: Any) -> Personas:
    """Personas of the calibration window ``[start, end]`` (ISO days, inclusive) in one call:
    :func:`persona_data`, then ``PersonaModel(**params).fit(...)``, described by
    :class:`Personas`. ``params`` are :class:`PersonaModel`'s (``k``, ``features``,
    ``method``, ``k_range``, ``n_bootstrap``, ``n_null``, ``min_group_size``,
    ``random_state``)."""
    old = sorted(set(params) & set(_RENAMED))
    if old:
        raise ParameterError("fit_personas takes PersonaModel's parameter names: "
                             + ", ".join(f"{o} -> {_RENAMED[o]}" for o in old))
    data = persona_data(source, start, end, min_events)
    return Personas(PersonaModel(**params).fit(data.features), data)


def _model_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """:data:`FIT_DEFAULTS`-named parameters -> (PersonaModel parameters, min_events)."""
    p = dict(params)
    lo, hi = p.pop("k_range")
    min_events = p.pop("min_events")
    model = {NOTEBOOK_NAMES.get(k, k): v for k, v in p.items()}
    return {**model, "k_range": (int(lo), int(hi))}, min_events


def assign_personas(source: Source, start: str, end: str, seed: int = 0,
                    **params: Any) -> pd.DataFrame:
    """Customer -> persona, calibrated on the ISO days ``start`` to ``end`` (for breakdowns
    in notebooks 02 and 03), with :data:`FIT_DEFAULTS` overridden by ``params`` (notebook
    01's names: ``features``, ``method``, ``k``, ``k_range``, ``min_events``,
    ``min_group_size``). Only the fit: no stability diagnostics. Returns a DataFrame
    ``customer_id, persona``; customers with too little activity are absent (breakdowns show
    them as unknown)."""
    p = {**FIT_DEFAULTS, **params, "seed": seed}
    unknown = sorted(set(p) - set(FIT_DEFAULTS))
    if unknown:
        raise ParameterError(f"unknown persona parameter(s) {unknown}; known: "
                             f"{', '.join(FIT_DEFAULTS)}")
    model_params, min_events = _model_params(p)
    data = persona_data(source, start, end, min_events)
    model = PersonaModel(**model_params, n_bootstrap=0).fit(data.features)
    return model.labels_.reset_index()


# --------------------------------------------------------------------------- shared file

#: File names, in :func:`cxanalysis.results.output_dir`, of the assignments notebook 01
#: writes for 02 and 03 (customer ids: a side file for the pipeline, never in a report).
ASSIGNMENTS_FILE = "persona_assignments.parquet"
ASSIGNMENTS_META = "persona_assignments.json"


def save_assignments(p: Personas, source: Source, folder: str | Path,
                     parameters: Mapping[str, Any]) -> Path:
    """Write ``p``'s assignments (``customer_id, persona``) and a JSON record of the source
    fingerprint, the calibration window and the fit ``parameters`` (keys of
    :data:`FIT_DEFAULTS`) to ``folder``. Returns the Parquet file's path."""
    from cxanalysis.files import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(parameters) - set(FIT_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown persona parameter(s) {unknown}")
    meta = {"source_fingerprint": source.fingerprint, "calibration": list(p.window or ()),
            "parameters": {**FIT_DEFAULTS, **dict(parameters)}, "k": p.k, "names": p.names,
            "customers": int(len(p.assignments))}
    path = folder / ASSIGNMENTS_FILE
    tmp = folder / f".{ASSIGNMENTS_FILE}.tmp"
    p.assignments.rename("persona").reset_index().to_parquet(tmp, index=False)
    tmp.replace(path)
    atomic_write(folder / ASSIGNMENTS_META, json.dumps(meta, indent=2, default=str) + "\n")
    return path


@dataclass
class SharedPersonas:
    """Persona labels for a breakdown and where they came from."""

    labels: pd.DataFrame  # customer_id, persona
    calibration: tuple[str, str]
    reused: bool  # True: notebook 01's file; False: fitted here
    note: str


def load_or_fit(source: Source, folder: str | Path, calibration: tuple[str, str],
                explicit: bool = False, seed: int | None = None) -> SharedPersonas:
    """Notebook 01's persona assignments from ``folder`` when they were fitted on this very
    source (same fingerprint) and, if ``explicit``, on the same ``calibration`` window;
    otherwise personas fitted here on ``calibration`` with 01's parameters (from its file
    when there is one, else :data:`FIT_DEFAULTS`; ``seed`` overrides the seed). The
    ``note`` says which, in one sentence for the report."""
    folder = Path(folder)
    meta_path, data_path = folder / ASSIGNMENTS_META, folder / ASSIGNMENTS_FILE
    meta: dict[str, Any] | None = None
    if meta_path.exists() and data_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = None
    params = dict(FIT_DEFAULTS)
    why = "notebook 01 has not written persona assignments for this run"
    if meta is not None:
        params.update({k: v for k, v in meta.get("parameters", {}).items()
                       if k in FIT_DEFAULTS})
        saved_cal = tuple(meta.get("calibration", ()))
        if meta.get("source_fingerprint") != source.fingerprint:
            why = "notebook 01's persona assignments come from another source"
        elif explicit and saved_cal != tuple(calibration):
            why = (f"notebook 01's personas were calibrated on {saved_cal[0]} to "
                   f"{saved_cal[1]}, not on the window asked for here")
        else:
            labels = pd.read_parquet(data_path)[["customer_id", "persona"]]
            return SharedPersonas(labels, (saved_cal[0], saved_cal[1]), True,
                                  f"Personas: notebook 01's {meta.get('k')} personas "
                                  f"(calibrated on {saved_cal[0]} to {saved_cal[1]}, same "
                                  "source), not refitted.")
    if seed is not None:
        params["seed"] = seed
    labels = assign_personas(source, *calibration, **params)
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return SharedPersonas(labels, tuple(calibration), False,
                          f"Personas: fitted here on {calibration[0]} to {calibration[1]} "
                          f"with notebook 01's parameters ({shown}), because {why}.")
