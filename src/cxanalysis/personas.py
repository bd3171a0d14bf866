"""Behavioural personas: features in the SQL engine, clustering, choice of k, stability,
profiles, names and assignment of new customers.

Features (per customer, over the calibration window ``[start, end]``, computed by Ibis on the
source's engine; only the feature matrix comes back, one row per active customer):

=====================  ======================================================================
feature                definition (units)
=====================  ======================================================================
share_<channel>        share of the customer's events in that channel (0-1)
visits_per_month       ``visit`` events per 30 days of exposure (log1p)
research_per_visit     search / compare / review_read events per visit (log1p)
logins_per_month       ``loyalty_login`` events per 30 days (log1p)
support_per_month      ``support_contact`` events per 30 days (log1p)
cart_rate              add_to_cart / product_view events (0-1, capped at 1)
gap_hours              mean log1p(hours) between consecutive events less than 7 days apart
                       (consideration pace)
orders_per_month       orders per 30 days (log1p)
basket                 mean order value before discount (log1p currency; 0 without orders)
discount_share         discount / (amount + discount) over the window (0-1)
nps                    mean NPS answer (0-10; customers without an answer get the mean)
recency_days           days from the last event to the end of the window
tenure_days            days from signup to the end of the window
=====================  ======================================================================

Exposure is the part of the window after signup. Customers with fewer than ``min_events``
events in the window are not clustered (too little behaviour to describe); they are counted.
Demographics and value tiers are NOT inputs (they profile the personas afterwards; using them
would make the segments-versus-personas comparison circular). Features are standardised
(z-scores); the scaler is part of the fitted model, so :meth:`PersonaModel.predict` assigns new
customers the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
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

from cxanalysis.data import CXDataError, Source, between_days, epoch_seconds, window_end
from cxanalysis.formatting import ResultMixin
from cxanalysis.privacy import MIN_GROUP_SIZE
from cxanalysis.results import to_jsonable
from cxanalysis.schema import CHANNELS

RESEARCH_EVENTS = ("search", "compare", "review_read")
DEFAULT_FEATURES: tuple[str, ...] = (
    *(f"share_{c}" for c in CHANNELS), "visits_per_month", "research_per_visit",
    "logins_per_month", "support_per_month", "cart_rate", "gap_hours", "orders_per_month",
    "basket", "discount_share", "nps", "recency_days", "tenure_days")
METHODS = ("kmeans", "minibatch", "gmm")
_LABELS = {
    "visits_per_month": "visit frequency", "research_per_visit": "research per visit",
    "logins_per_month": "loyalty logins", "support_per_month": "service contacts",
    "cart_rate": "add-to-cart rate", "gap_hours": "time between touches",
    "orders_per_month": "order frequency", "basket": "basket size",
    "discount_share": "discount use", "nps": "NPS", "recency_days": "days since last touch",
    "tenure_days": "tenure"}


def feature_label(name: str) -> str:
    if name.startswith("share_"):
        return f"{name[6:].replace('_', ' ')} share"
    return _LABELS.get(name, name)


# --------------------------------------------------------------------------- features


def behaviour_features(source: Source, start: str, end: str, min_events: int = 5
                       ) -> tuple[pd.DataFrame, int]:
    """Feature matrix (index ``customer_id``, columns :data:`DEFAULT_FEATURES`) of customers
    with at least ``min_events`` events in ``[start, end]`` (ISO dates, inclusive, UTC),
    and the number of customers left out for too little activity."""
    x, _revenue, inactive = _calibration(source, start, end, min_events)
    return x, inactive


def _calibration(source: Source, start: str, end: str, min_events: int
                 ) -> tuple[pd.DataFrame, pd.Series | None, int]:
    """Features, calibration-window revenue (both indexed by the active customers; None
    without an orders table) and the number of inactive customers, from one aggregate per
    table."""
    source.require("customers", "events")
    t0 = pd.Timestamp(start, tz="UTC")
    t1 = window_end(end)
    if t1 <= t0:
        raise CXDataError(f"calibration window {start} to {end} is empty")
    ev = between_days(source.table("events"), start, end)
    w = ibis.window(group_by="customer_id", order_by="ts")
    ev = ev.mutate(sec=epoch_seconds(ev.ts))
    ev = ev.mutate(gap=(ev.sec - ev.sec.lag().over(w)) / 3600.0)
    aggs: dict[str, ibis.Value] = {"n_events": _.count()}
    for c in CHANNELS:
        aggs[f"ch_{c}"] = (_.channel == c).cast("int64").sum()
    for name, cond in {"visits": _.event == "visit",
                       "research": _.event.isin(list(RESEARCH_EVENTS)),
                       "logins": _.event == "loyalty_login",
                       "support": _.event == "support_contact",
                       "carts": _.event == "add_to_cart",
                       "views": _.event == "product_view"}.items():
        aggs[name] = cond.cast("int64").sum()
    aggs["gap_hours"] = ibis.ifelse(_.gap < 168, (_.gap + 1).ln(), None).mean()
    aggs["last_ts"] = _.ts.max()
    # every customer with an event: the inactive ones are counted, then dropped
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
    cust = source.table("customers").select("customer_id", "signup_date")
    per = per.left_join(cust, "customer_id").drop("customer_id_right")
    df = per.execute().set_index("customer_id").sort_index()
    active = df["n_events"] >= min_events
    inactive = int((~active).sum())
    df = df[active]
    if df.empty:
        raise CXDataError(f"no customer has {min_events} or more events between {start} and "
                          f"{end}: nothing to cluster")
    for col in ("n_orders", "revenue", "gross", "discount", "nps"):
        if col not in df:
            df[col] = np.nan
    signup = pd.to_datetime(df["signup_date"]).dt.tz_localize("UTC")
    exposure = ((t1 - signup.clip(lower=t0)).dt.total_seconds() / 86400).clip(lower=1.0)
    months = exposure / 30.0
    x = pd.DataFrame(index=df.index)
    n = df["n_events"].astype(float)
    for c in CHANNELS:
        x[f"share_{c}"] = df[f"ch_{c}"] / n
    x["visits_per_month"] = np.log1p(df["visits"] / months)
    x["research_per_visit"] = np.log1p(df["research"] / df["visits"].clip(lower=1))
    x["logins_per_month"] = np.log1p(df["logins"] / months)
    x["support_per_month"] = np.log1p(df["support"] / months)
    x["cart_rate"] = (df["carts"] / df["views"].clip(lower=1)).clip(upper=1.0)
    x["gap_hours"] = df["gap_hours"].astype(float).fillna(df["gap_hours"].astype(float).mean())
    orders = df["n_orders"].fillna(0).astype(float)
    x["orders_per_month"] = np.log1p(orders / months)
    x["basket"] = np.log1p((df["gross"] / orders.where(orders > 0)).fillna(0.0))
    x["discount_share"] = (df["discount"] / df["gross"].where(df["gross"] > 0)).fillna(0.0)
    nps = df["nps"].astype(float)
    x["nps"] = nps.fillna(nps.mean() if nps.notna().any() else 0.0)
    x["recency_days"] = (t1 - pd.to_datetime(df["last_ts"], utc=True)).dt.total_seconds() / 86400
    x["tenure_days"] = (t1 - signup).dt.total_seconds() / 86400
    value = df["revenue"].fillna(0.0).astype(float) if source.has("orders") else None
    return x.astype(float), value, inactive


def _check_features(x: pd.DataFrame, features: Sequence[str]) -> list[str]:
    features = list(features)
    missing = [f for f in features if f not in x.columns]
    if missing:
        raise CXDataError(f"unknown persona feature(s) {missing}; available: "
                          f"{', '.join(x.columns)}")
    const = [f for f in features if x[f].std(ddof=0) == 0]
    if const:
        raise CXDataError(f"persona feature(s) {const} are constant over the customers "
                          "clustered and cannot separate personas; drop them from `features`")
    return features


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

    def predict(self, x: pd.DataFrame) -> pd.Series:
        """Persona name of each row of a feature frame (e.g. new customers, computed with
        :func:`behaviour_features`)."""
        z = self.scaler.transform(x[self.features].to_numpy(float))
        lab = self.model.predict(z)
        names = np.array(self.names, dtype=object)
        return pd.Series(names[lab], index=x.index, name="persona")


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
    features = _check_features(x, features)
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
                      n_boot: int = 20) -> np.ndarray:
    """Per cluster, the mean over bootstrap refits of the best Jaccard similarity between
    the cluster and a bootstrap cluster, on the customers drawn (Hennig's clusterboot)."""
    rng = np.random.default_rng(seed)
    n = len(z)
    out = np.zeros((n_boot, k))
    for b in range(n_boot):
        idx = np.unique(rng.integers(0, n, n))
        m = _fit(z[idx], k, method, seed + b + 1, n_init=3)
        lab_b = m.predict(z[idx])
        orig = labels[idx]
        # inter[c, d]: customers in persona c and bootstrap cluster d; union by inclusion-exclusion
        inter = np.bincount(orig * k + lab_b, minlength=k * k).reshape(k, k)
        union = inter.sum(axis=1)[:, None] + inter.sum(axis=0)[None, :] - inter
        out[b] = np.where(inter > 0, inter / np.maximum(union, 1), 0.0).max(axis=1)
    return out.mean(axis=0)


STABLE_JACCARD = 0.75  # Hennig: below this mean bootstrap Jaccard a cluster is not stable


def stability_verdict(j: float) -> str:
    """Hennig's reading of the mean bootstrap Jaccard."""
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
        g = x.groupby(self.assignments)
        means = g.mean().reindex(self.names)
        shares = [c for c in x.columns if c.startswith("share_")]
        out = pd.DataFrame(index=pd.Index(self.names, name="persona"))
        sizes = self.sizes()
        out["customers"] = [sizes[n] for n in self.names]
        out["share"] = out["customers"] / out["customers"].sum()
        if self.value is not None:
            v = self.value.reindex(x.index).fillna(0.0).groupby(self.assignments).sum()
            out["value_share"] = (v / v.sum()).reindex(self.names)
        out["stability_jaccard"] = [self.jaccard[n] for n in self.names]
        out["stability"] = [stability_verdict(self.jaccard[n]) for n in self.names]
        out["preferred_channel"] = means[shares].idxmax(axis=1).str.removeprefix("share_")
        nat = means.copy()
        for c in ("visits_per_month", "research_per_visit", "logins_per_month",
                  "support_per_month", "orders_per_month", "basket", "gap_hours"):
            if c in nat:
                nat[c] = np.expm1(nat[c])
        out = out.join(nat.round(3))
        small = out["customers"] < self.min_group_size
        out.loc[small, out.columns.difference(["stability"])] = np.nan
        return out

    def summary(self) -> str:
        unstable = self.unstable
        sizes = self.sizes()
        return (f"{self.k} personas from {len(self.assignments):,} active customers "
                f"({self.inactive:,} with too little activity left unassigned), "
                f"{self.model.method}, seed {self.model.seed}: "
                + "; ".join(f"{n} ({sizes[n]:,}, Jaccard {self.jaccard[n]:.2f})"
                            for n in self.names)
                + f". ARI across seeds {self.seed_ari:.2f}. "
                + (f"Unstable (Jaccard < {STABLE_JACCARD}): {', '.join(unstable)}." if unstable
                   else f"Every persona is stable (Jaccard >= {STABLE_JACCARD})."))

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
    min_events: int = 5,
    min_group_size: int = MIN_GROUP_SIZE,
) -> Personas:
    """Fit behavioural personas on the calibration window ``[start, end]``.

    Parameters
    ----------
    k : int, optional
        Number of personas; default chosen by :func:`choose_k` from the sweep over ``ks``.
    features : sequence of str, optional
        Columns of :func:`behaviour_features` used (see the module docstring); default
        :data:`DEFAULT_FEATURES`.
    method : {"kmeans", "minibatch", "gmm"}
        k-means (10 restarts), mini-batch k-means (for millions of customers) or a
        Gaussian mixture (full covariances, 3 restarts).
    seed : int
        Seed of the clustering, the sweep's silhouette sample and the bootstrap.
    n_boot : int
        Bootstrap refits for the per-persona Jaccard stability.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    x, value, inactive = _calibration(source, start, end, min_events)
    features = _check_features(x, DEFAULT_FEATURES if features is None else features)
    if k is not None and (k < 2 or k * min_group_size > len(x)):
        raise CXDataError(f"k = {k} needs at least {max(k, 2) * min_group_size} active "
                          f"customers of {min_group_size}+ per persona; the data has "
                          f"{len(x):,}")
    ks = [kk for kk in ks if kk * min_group_size <= len(x)]
    sweep = k_sweep(x, features, ks, method, seed, min_size=min_group_size)
    k = k if k is not None else choose_k(sweep)
    scaler = StandardScaler().fit(x[features].to_numpy(float))
    z = scaler.transform(x[features].to_numpy(float))
    model = _fit(z, k, method, seed)
    raw = model.predict(z)
    perm = _size_order(raw, k)  # also maps the model's raw labels for predict()
    labels = perm[raw]
    # stability on a seeded sample of at most 20,000 customers (enough for the Jaccard of
    # every persona of reasonable size, and bounded time with millions of customers)
    rng = np.random.default_rng(seed)
    sub = (np.sort(rng.choice(len(z), 20_000, replace=False)) if len(z) > 20_000
           else np.arange(len(z)))
    jac = bootstrap_jaccard(z[sub], labels[sub], k, method, seed, n_boot)
    others = [_fit(z[sub], k, method, seed + s, n_init=3).predict(z[sub])
              for s in (101, 202, 303)]
    seed_ari = float(np.mean([adjusted_rand_score(a, b) for a, b in
                              itertools.combinations([labels[sub], *others], 2)]))
    zs = (x[features] - x[features].mean()) / x[features].std(ddof=0)
    prof = zs.groupby(labels).mean()
    names, rule = _name_personas(prof)
    prof.index = names
    pm = PersonaModel(features, method, k, seed, scaler, _PermutedModel(model, perm), names)
    assign = pd.Series(np.array(names, dtype=object)[labels], index=x.index, name="persona")
    return Personas(pm, assign, x[features], sweep, dict(zip(names, map(float, jac),
                                                              strict=True)),
                    seed_ari, inactive, prof, rule, min_group_size, value)


@dataclass
class _PermutedModel:
    """Wraps a fitted clusterer so that ``predict`` returns size-ordered labels."""

    inner: object
    perm: np.ndarray  # raw label -> size-ordered label

    def predict(self, z: np.ndarray) -> np.ndarray:
        return self.perm[self.inner.predict(z)]


def assign_personas(source: Source, start: str, end: str, seed: int = 0) -> pd.DataFrame:
    """Customer -> persona with the default parameters, calibrated on the ISO days ``start``
    to ``end`` (for breakdowns in notebooks 02 and 03). Returns a DataFrame
    ``customer_id, persona``; customers with too little activity are absent (breakdowns show
    them as unknown)."""
    p = fit_personas(source, start, end, seed=seed, n_boot=2)
    return p.assignments.reset_index()
