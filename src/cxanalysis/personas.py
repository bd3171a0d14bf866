"""Behavioural personas: features in the SQL engine, clustering, choice of k, stability,
profiles, names and assignment of new customers.

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
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from cxanalysis.data import CXDataError, Source, between_days, epoch_seconds, window_end
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
# Below this many customers the clustering runs on one thread: scikit-learn's OpenMP/BLAS
# threads cost more than the work on small matrices, and on a busy machine far more (the
# demo's k sweep took 123 s with the default threads and 3.8 s on one, at load 7 on 2 cores).
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


def _top_values(t: ibis.Table, column: str, limit: int) -> list[str]:
    """The ``limit`` values of ``column`` held by the most customers (ties by value)."""
    if column not in t.columns:
        return []
    d = (t.filter(t[column].notnull()).group_by(column)
         .aggregate(n=_.customer_id.nunique()).order_by([ibis.desc("n"), column])
         .limit(limit).execute())
    return [str(v) for v in d[column]]


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
    w = ibis.window(group_by="customer_id", order_by="ts")
    ev = ev.mutate(sec=epoch_seconds(ev.ts))
    ev = ev.mutate(gap=(ev.sec - ev.sec.lag().over(w)) / 3600.0)
    if vocabulary is None:
        channels = _top_values(ev, "channel", MAX_CHANNELS)
        events = _top_values(ev, "event", MAX_EVENTS) if activity == "events" else []
    else:
        channels = [str(c) for c in vocabulary.get("channel", [])
                    ] if "channel" in ev.columns else []
        events = [str(e) for e in vocabulary.get("event", [])] if activity == "events" else []
    aggs: dict[str, ibis.Value] = {"n_events": _.count(),
                                   "active_days": _.ts.date().nunique()}
    for i, c in enumerate(channels):
        aggs[f"ch{i}"] = (_.channel == c).cast("int64").sum()
    for i, e in enumerate(events):
        aggs[f"ev{i}"] = (_.event == e).cast("int64").sum()
    aggs["gap_hours"] = ibis.ifelse(_.gap < 168, (_.gap + 1).ln(), None).mean()
    aggs["last_ts"] = _.ts.max()
    # every customer with an activity: the inactive ones are counted, then dropped
    per = ev.group_by("customer_id").aggregate(**aggs)
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
    df = per.execute().set_index("customer_id").sort_index()
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
        raise CXDataError(f"unknown persona feature(s) {missing}; available: "
                          f"{', '.join(x.columns)}")
    bad = degenerate_features(x[requested])
    usable = [f for f in requested if f not in bad]
    if not usable:
        raise CXDataError("no persona feature varies across the customers clustered "
                          f"({'; '.join(f'{f}: {r}' for f, r in bad.items())}): nothing to "
                          "cluster on")
    return usable, bad


# --------------------------------------------------------------------------- model


@dataclass
class PersonaModel:
    """A fitted persona model: scaler + clusterer over named features."""

    features: list[str]
    method: str
    k: int
    seed: int
    scaler: StandardScaler
    model: KMeans | MiniBatchKMeans | GaussianMixture
    names: list[str] = field(default_factory=list)
    #: channels and events the features were built from (see :func:`behaviour_features`)
    vocabulary: dict[str, list[str]] = field(default_factory=dict)

    def predict(self, x: pd.DataFrame) -> pd.Series:
        """Persona name of each row of a feature frame (e.g. new customers, computed with
        :func:`behaviour_features` and this model's :attr:`vocabulary`); missing values
        count as the calibration average."""
        v = x[self.features].to_numpy(float)
        # a feature missing for a customer (e.g. no gap under 7 days in another window) is
        # taken as the calibration average: z = 0, neither pulling nor pushing
        v = np.where(np.isnan(v), self.scaler.mean_[None, :], v)
        z = self.scaler.transform(v)
        lab = self.model.predict(z)
        names = np.array(self.names, dtype=object)
        return pd.Series(names[lab], index=x.index, name="persona")


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
    with _threads(len(x)):
        return _k_sweep(x, features, ks, method, seed, sample, min_size, fit_sample)


def _k_sweep(x: pd.DataFrame, features: Sequence[str] | None, ks: Sequence[int], method: str,
             seed: int, sample: int, min_size: int, fit_sample: int) -> pd.DataFrame:
    features, _dropped = _check_features(x, features)
    z = StandardScaler().fit_transform(x[features].to_numpy(float))
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
    from scipy import stats

    rng = np.random.default_rng(seed)
    m = min(len(z), sample)
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
    """Fitted personas with their profiles, stability and the k sweep."""

    model: PersonaModel
    assignments: pd.Series  # persona name by customer_id (index)
    features_frame: pd.DataFrame
    sweep: pd.DataFrame
    jaccard: dict[str, float]
    seed_ari: float
    inactive: int
    profile_z: pd.DataFrame
    naming_rule: str
    min_group_size: int = MIN_GROUP_SIZE
    value: pd.Series | None = None  # revenue in the calibration window by customer
    #: degenerate features dropped before clustering, with the reason
    dropped: dict[str, str] = field(default_factory=dict)
    #: every channel share of the customers clustered (clustered on or not), for profiles
    channel_shares: pd.DataFrame | None = None
    window: tuple[str, str] | None = None  # the calibration window
    #: features computed but not clustered on by default (profiled only), with the reason
    not_clustered: dict[str, str] = field(default_factory=dict)
    #: the test against no structure (None when k was given)
    structure: StructureTest | None = None
    #: the k chosen by each bootstrap refit (k chosen from the data), else empty
    boot_k: list[int] = field(default_factory=list)

    @property
    def assessed(self) -> bool:
        """Whether the stability diagnostics (bootstrap Jaccard, ARI across seeds) ran."""
        return not all(math.isnan(j) for j in self.jaccard.values())

    @property
    def k(self) -> int:
        return self.model.k

    @property
    def names(self) -> list[str]:
        return self.model.names

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
                f"{self.model.method}, seed {self.model.seed}: ")
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
        text = f"Clustered on {len(self.model.features)} feature(s): " \
            f"{', '.join(self.model.features)}."
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
            ax.set_xlabel("k")
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


#: Defaults of :func:`fit_personas` that notebook 01 exposes as parameters (kept equal to
#: 01's parameters cell by a test; used when 02/03 fit personas themselves).
FIT_DEFAULTS: dict[str, Any] = {"features": None, "method": "kmeans", "k": None,
                                "k_range": [2, 8], "min_events": None, "seed": 0,
                                "min_group_size": MIN_GROUP_SIZE}


def fit_personas(
    source: Source,
    start: str,
    end: str,
    k: int | None = None,
    features: Sequence[str] | None = None,
    method: str = "kmeans",
    ks: Sequence[int] = range(2, 9),
    seed: int = 0,
    n_boot: int = 20,
    min_events: int | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    diagnostics: bool = True,
    n_null: int = 19,
) -> Personas:
    """Fit behavioural personas on the calibration window ``[start, end]``.

    Parameters
    ----------
    k : int, optional
        Number of personas; default chosen from the data: 1 ("no clear persona structure")
        when :func:`structure_test` does not reject a single Gaussian, else by
        :func:`choose_k` from the sweep over ``ks``.
    features : sequence of str, optional
        Columns of :func:`behaviour_features` used (see the module docstring); default
        :func:`default_features` (channel log-ratios, not raw shares; NPS with its missing
        flag only when answered by most; no tenure), the others listed in
        :attr:`Personas.not_clustered`. Degenerate ones (constant, missing for everyone)
        are dropped and listed in :attr:`Personas.dropped`. Missing values of a clustered
        feature count as its average (z = 0).
    method : {"kmeans", "minibatch", "gmm"}
        k-means (10 restarts), mini-batch k-means (for millions of customers) or a
        Gaussian mixture (full covariances, 3 restarts).
    seed : int
        Seed of the clustering, the sweep's silhouette sample and the bootstrap.
    n_boot : int
        Bootstrap refits for the per-persona Jaccard stability (each refit chooses its own
        k when ``k`` is None).
    n_null : int
        Draws of the single-Gaussian null of :func:`structure_test` (only when ``k`` is
        None).
    diagnostics : bool
        Run the stability diagnostics (bootstrap Jaccard, ARI across three more seeds).
        Without them (assignment only) the Jaccards and the seed ARI are NaN.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    x_all, value, inactive, vocab = _calibration(source, start, end, min_events)
    not_clustered: dict[str, str] = {}
    if features is None:
        features, not_clustered = default_features(x_all)
    features, dropped = _check_features(x_all, features)
    # a missing value of a clustered feature (NPS without an answer, with its flag) counts
    # as the average: z = 0, as PersonaModel.predict does
    x = x_all[features].fillna(x_all[features].mean())
    with _threads(len(x)):
        return _fit_personas(x, x_all, value, inactive, vocab, features, dropped, k, method,
                             ks, seed, n_boot, min_group_size, diagnostics, start, end,
                             not_clustered, n_null)


#: Name of the single group when there is no clear persona structure (k = 1).
NO_STRUCTURE = "all customers (no clear persona structure)"


def _fit_personas(x: pd.DataFrame, x_all: pd.DataFrame, value: pd.Series | None,
                  inactive: int, vocab: dict[str, list[str]], features: list[str],
                  dropped: dict[str, str], k: int | None, method: str, ks: Sequence[int],
                  seed: int, n_boot: int, min_group_size: int, diagnostics: bool, start: str,
                  end: str, not_clustered: dict[str, str] | None = None,
                  n_null: int = 19) -> Personas:
    if k is not None and (k < 1 or k * min_group_size > len(x)):
        raise CXDataError(f"k = {k} needs at least {max(k, 1) * min_group_size} active "
                          f"customers of {min_group_size}+ per persona; the data has "
                          f"{len(x):,}")
    scaler = StandardScaler().fit(x.to_numpy(float))
    z = scaler.transform(x.to_numpy(float))
    auto = k is None
    test = None
    if auto:
        ks = [kk for kk in ks if kk * min_group_size <= len(x)]
        if not ks:
            raise CXDataError(f"{len(x):,} active customers cannot form 2 personas of "
                              f"{min_group_size}+ customers; lower min_group_size or "
                              "min_events")
        sweep = k_sweep(x, features, ks, method, seed, min_size=min_group_size)
        test = structure_test(z, ks, seed, n_null=n_null)
        k = choose_k(sweep) if test.structure else 1
    else:
        sweep = pd.DataFrame(columns=["k", "silhouette", "davies_bouldin", "calinski_harabasz",
                                      "gmm_bic", "smallest", "eligible"])
    model = _fit(z, k, method, seed)
    raw = model.predict(z)
    perm = _size_order(raw, k)  # also maps the model's raw labels for predict()
    labels = perm[raw]
    boot_k: list[int] = []
    if diagnostics and k > 1:
        eligible = ([int(kk) for kk in sweep.k[sweep.eligible]] if auto else None)
        jac, seed_ari = _stability(z, labels, k, method, seed, n_boot, eligible,
                                   min_group_size, boot_k)
    else:  # one group is trivially "stable": nothing to assess
        jac, seed_ari = np.full(k, np.nan), float("nan")
    sd = x.std(ddof=0)
    zs = (x - x.mean()) / sd
    prof = zs.groupby(labels).mean()
    if k == 1:
        names, rule = [NO_STRUCTURE], ("One group: the data are no more clustered than a "
                                       "single Gaussian (see the structure test).")
    else:
        names, rule = _name_personas(prof)
    prof.index = names
    pm = PersonaModel(features, method, k, seed, scaler, _PermutedModel(model, perm), names,
                      vocab)
    assign = pd.Series(np.array(names, dtype=object)[labels], index=x.index, name="persona")
    shares = x_all[[c for c in x_all.columns if c.startswith("share_")]]
    return Personas(pm, assign, x_all, sweep, dict(zip(names, map(float, jac), strict=True)),
                    seed_ari, inactive, prof, rule, min_group_size, value, dropped, shares,
                    (str(start), str(end)), dict(not_clustered or {}), test, boot_k)


def _stability(z: np.ndarray, labels: np.ndarray, k: int, method: str, seed: int,
               n_boot: int, ks: Sequence[int] | None = None, min_size: int = 0,
               chosen: list[int] | None = None) -> tuple[np.ndarray, float]:
    """Per-persona bootstrap Jaccard (k re-chosen among ``ks`` in each refit when given)
    and the mean ARI between the fit and three refits with other seeds."""
    # on a seeded sample of at most 20,000 customers (enough for the Jaccard of every
    # persona of reasonable size, and bounded time with millions of customers)
    # (5,000 when every refit also re-chooses k: a k sweep per refit)
    cap = 20_000 if ks is None else 5_000
    rng = np.random.default_rng(seed)
    sub = (np.sort(rng.choice(len(z), cap, replace=False)) if len(z) > cap
           else np.arange(len(z)))
    scale = len(sub) / len(z)
    jac = bootstrap_jaccard(z[sub], labels[sub], k, method, seed, n_boot, ks,
                            int(min_size * scale), chosen)
    others = [_fit(z[sub], k, method, seed + s, n_init=3).predict(z[sub])
              for s in (101, 202, 303)]
    seed_ari = float(np.mean([adjusted_rand_score(a, b) for a, b in
                              itertools.combinations([labels[sub], *others], 2)]))
    return jac, seed_ari


@dataclass
class _PermutedModel:
    """Wraps a fitted clusterer so that ``predict`` returns size-ordered labels."""

    inner: object
    perm: np.ndarray  # raw label -> size-ordered label

    def predict(self, z: np.ndarray) -> np.ndarray:
        return self.perm[self.inner.predict(z)]


def assign_personas(source: Source, start: str, end: str, seed: int = 0,
                    **params: Any) -> pd.DataFrame:
    """Customer -> persona, calibrated on the ISO days ``start`` to ``end`` (for breakdowns
    in notebooks 02 and 03), with :data:`FIT_DEFAULTS` overridden by ``params`` (``features``,
    ``method``, ``k``, ``k_range``, ``min_events``, ``min_group_size``). Only the fit: no
    stability diagnostics. Returns a DataFrame ``customer_id, persona``; customers with too
    little activity are absent (breakdowns show them as unknown)."""
    p = {**FIT_DEFAULTS, **params, "seed": seed}
    unknown = sorted(set(p) - set(FIT_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown persona parameter(s) {unknown}; known: "
                         f"{', '.join(FIT_DEFAULTS)}")
    lo, hi = p["k_range"]
    fitted = fit_personas(source, start, end, k=p["k"], features=p["features"],
                          method=p["method"], ks=range(lo, hi + 1), seed=p["seed"],
                          min_events=p["min_events"], min_group_size=p["min_group_size"],
                          diagnostics=False)
    return fitted.assignments.reset_index()


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
