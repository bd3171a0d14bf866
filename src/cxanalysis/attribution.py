"""Attribution of conversions to channels, from the path counts of
:func:`cxanalysis.journeys.journey_paths`.

Models (shares of conversions per channel; each sums to 1):

- ``first_touch`` / ``last_touch``: all credit to the first / last channel of the path;
- ``linear``: equal credit to every channel position of the (collapsed) path;
- ``markov``: removal effects of a first-order Markov chain over ``(start)``, channels,
  ``(conversion)`` and ``(null)``, computed exactly: with transient-to-transient
  probabilities ``Q`` and transient-to-absorbing ``R``, absorption probabilities are
  ``B = (I - Q)^-1 R``; removing channel ``c`` sends every transition into ``c`` to
  ``(null)``; ``RE(c) = 1 - P_-c(conv) / P(conv)``; credit is ``RE(c) / sum RE``.
- ``shapley``: ``v(S)`` = **conversion rate** of the journeys whose channel set is within
  ``S`` (converting and non-converting journeys alike; ``v(S) = 0`` when no journey has its
  channels within ``S``, so ``v(empty) = 0``);
  ``phi_c = sum over S without c of |S|! (n-|S|-1)! / n! [v(S + c) - v(S)]``; shares
  ``phi_c / v(all)`` (they sum to 1; a channel whose journeys convert less than those
  without it gets a negative share). With ``v(S)`` = conversions (not a rate), as before
  issue 16, Shapley is just an equal split of each converting path among its distinct
  channels and never sees a journey that did not convert.

**Credit, not incrementality.** Every method here shares out conversions along observed
paths: a channel that customers who would have bought anyway pass through gets credit. What
a channel *causes* is measured by a holdout (randomised) test — see notebook 03.

Conversions with no touch before them (path ``(no touch)``) have no channel to credit and
are left out (counted in :attr:`Attribution.untouched` and stated in the summary).

Bootstrap intervals resample **customers** (with replacement, all of a customer's journeys
together; a customer has many journeys, which are not independent) when the customers
behind the paths are known (``PathCounts.by_customer``, from :func:`journey_paths`);
otherwise journeys (a multinomial draw over (path, outcome) cells). Seeded.

Privacy: the credit of a channel under a method comes from a group of customers — those
with a converted journey whose first channel (``first_touch``), last channel
(``last_touch``) or any channel (``linear``, ``markov``, ``shapley``) it is
(:attr:`cxanalysis.journeys.PathCounts.support`; converted journeys when the customers are
not known). Credit from 1 to ``min_group_size - 1`` customers is suppressed (NaN in
:meth:`Attribution.table`, null in :meth:`Attribution.as_dict`), and so are its interval and
removal effect. Because each method's shares sum to 1, a suppressed share could be recovered
as 1 minus the others: while the suppressed cells of a method stand for fewer than
``min_group_size`` customers together, the next smallest credited channel is suppressed too.
A credit of exactly 0 (no customer) is shown.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from cxanalysis.errors import ParameterError
from cxanalysis.formatting import ResultMixin
from cxanalysis.journeys import NO_TOUCH, SEP, PathCounts
from cxanalysis.plotting import display_label
from cxanalysis.privacy import MIN_GROUP_SIZE
from cxanalysis.progress import bar

METHODS = ("first_touch", "last_touch", "linear", "markov", "shapley")
#: The customers behind each method's credit of a channel (columns of ``PathCounts.support``).
SUPPORT_OF = {"first_touch": "first_touch", "last_touch": "last_touch", "linear": "any_touch",
              "markov": "any_touch", "shapley": "any_touch"}


def _paths(frame: pd.DataFrame) -> list[list[str]]:
    return [p.split(SEP) for p in frame["path"]]


class _Prepared:
    """Index arrays of the distinct paths, built once so that every bootstrap resample is a
    few vectorised operations on per-path weights."""

    def __init__(self, frame: pd.DataFrame, channels: list[str]):
        self.channels = channels
        n = len(channels)
        if n > 20:
            raise ValueError("exact Shapley values are limited to 20 channels")
        idx = {c: i for i, c in enumerate(channels)}
        paths = _paths(frame)
        self.first = np.array([idx[p[0]] for p in paths])
        self.last = np.array([idx[p[-1]] for p in paths])
        self.mask = np.array([sum(1 << idx[c] for c in set(p)) for p in paths])
        lin_path, lin_ch, lin_w = [], [], []
        tr_path, tr_from, tr_to = [], [], []
        for j, p in enumerate(paths):
            for c in p:
                lin_path.append(j)
                lin_ch.append(idx[c])
                lin_w.append(1 / len(p))
            states = [0, *(idx[c] + 1 for c in p)]  # state 0 = start, channel i = i + 1
            for a, b in zip(states[:-1], states[1:], strict=True):
                tr_path.append(j)
                tr_from.append(a)
                tr_to.append(b)
        self.lin = (np.array(lin_path), np.array(lin_ch), np.array(lin_w))
        self.tr = (np.array(tr_path), np.array(tr_from), np.array(tr_to))
        # Shapley weights: phi = coef @ v, with v(S) for every subset S of the channels.
        sizes = np.array([bin(m).count("1") for m in range(1 << n)])
        w = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                      if k < n else 0.0 for k in range(n + 1)])
        coef = np.zeros((n, 1 << n))
        subsets = np.arange(1 << n)
        for i in range(n):
            bit = 1 << i
            without = subsets[(subsets & bit) == 0]
            coef[i, without | bit] += w[sizes[without]]
            coef[i, without] -= w[sizes[without]]
        self.coef = coef

    def heuristic(self, conv: np.ndarray, method: str) -> np.ndarray:
        n = len(self.channels)
        if method == "first_touch":
            credit = np.bincount(self.first, weights=conv, minlength=n)
        elif method == "last_touch":
            credit = np.bincount(self.last, weights=conv, minlength=n)
        elif method == "linear":
            path, ch, w = self.lin
            credit = np.bincount(ch, weights=conv[path] * w, minlength=n)
        else:
            raise ParameterError(f"unknown method {method!r}")
        total = credit.sum()
        return credit / total if total else credit

    def transitions(self, journeys: np.ndarray, conv: np.ndarray) -> np.ndarray:
        """Counts between states [start, *channels, conversion, null]."""
        n = len(self.channels)
        m = np.zeros((n + 3, n + 3))
        path, a, b = self.tr
        np.add.at(m, (a, b), journeys[path])
        np.add.at(m, (self.last + 1, n + 1), conv)
        np.add.at(m, (self.last + 1, n + 2), journeys - conv)
        return m

    def markov(self, journeys: np.ndarray, conv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = self.transitions(journeys, conv)
        base = conversion_probability(counts)
        n = len(self.channels)
        if base <= 0:
            return np.zeros(n), np.zeros(n)
        re = np.array([1 - conversion_probability(counts, removed=i + 1) / base
                       for i in range(n)])
        re = np.clip(re, 0, None)
        return re, (re / re.sum() if re.sum() > 0 else re)

    def shapley(self, conv: np.ndarray, journeys: np.ndarray) -> np.ndarray:
        n = len(self.channels)
        sums = []
        for x in (conv, journeys):
            v = np.bincount(self.mask, weights=x, minlength=1 << n).astype(float)
            for i in range(n):  # zeta transform: v(S) = sum over channel sets within S
                bit = 1 << i
                has = (np.arange(1 << n) & bit) > 0
                v[has] += v[np.arange(1 << n)[has] ^ bit]
            sums.append(v)
        c, j = sums
        v = np.divide(c, j, out=np.zeros_like(c), where=j > 0)  # conversion rate
        total = v[-1]
        phi = self.coef @ v
        return phi / total if total else phi


def path_support(paths: PathCounts) -> pd.DataFrame:
    """Customers behind each channel's credit, per method (channels x :data:`METHODS`): from
    ``paths.support``, else converted journeys counted from the path frame."""
    channels = paths.channels
    if paths.support is not None:
        sup = paths.support.reindex(channels).fillna(0)
    else:
        frame = paths.frame[paths.frame["conversions"] > 0]
        sup = pd.DataFrame(0, index=pd.Index(channels, name="channel"),
                           columns=["first_touch", "last_touch", "any_touch"])
        for path, conv in zip(frame["path"], frame["conversions"], strict=True):
            chans = path.split(SEP)
            sup.loc[chans[0], "first_touch"] += conv
            sup.loc[chans[-1], "last_touch"] += conv
            sup.loc[sorted(set(chans)), "any_touch"] += conv
    return pd.DataFrame({m: sup[SUPPORT_OF[m]].astype(int) for m in METHODS})


def suppression_mask(support: pd.DataFrame, min_group_size: int) -> pd.DataFrame:
    """Which (channel, method) credits to suppress: those from 1 to ``min_group_size - 1``
    customers, plus, per method, the next smallest credited channels while the suppressed
    ones together stand for fewer than ``min_group_size`` customers (shares sum to 1, so a
    lone suppressed share would be 1 minus the others)."""
    mask = (support > 0) & (support < min_group_size)
    for m in support.columns:
        col = support[m]
        while mask[m].any() and col[mask[m]].sum() < min_group_size:
            rest = col[~mask[m] & (col > 0)]
            if rest.empty:
                break
            mask.loc[rest.sort_values(kind="stable").index[0], m] = True
    return mask


def heuristic_shares(frame: pd.DataFrame, channels: list[str], method: str) -> np.ndarray:
    """First-touch, last-touch or linear credit of conversions, as shares per channel."""
    return _Prepared(frame, channels).heuristic(frame["conversions"].to_numpy(float), method)


def conversion_probability(counts: np.ndarray, removed: int | None = None) -> float:
    """P(reaching conversion from start) of the absorbing chain given by transition counts
    (last two states absorbing: conversion, null); ``removed`` is a channel state index whose
    incoming transitions are redirected to null."""
    m = counts.astype(float).copy()
    k = m.shape[0] - 2  # transient states: start + channels
    if removed is not None:
        m[:, -1] += m[:, removed]
        m[:, removed] = 0.0
        m[removed, :] = 0.0
        m[removed, -1] = 1.0  # unreachable; keep the row stochastic
    rows = m.sum(axis=1, keepdims=True)
    p = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    q, r = p[:k, :k], p[:k, k:]
    b = np.linalg.solve(np.eye(k) - q, r)
    return float(b[0, 0])


def markov_shares(frame: pd.DataFrame, channels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(removal effects, shares) per channel, exact."""
    prep = _Prepared(frame, channels)
    return prep.markov(frame["journeys"].to_numpy(float), frame["conversions"].to_numpy(float))


def shapley_shares(frame: pd.DataFrame, channels: list[str]) -> np.ndarray:
    """Shapley values of channels for v(S) = conversion rate of the journeys whose channel
    set is a subset of S (0 when there are none), as shares of the overall conversion rate
    v(all channels) (exact; up to 20 channels)."""
    return _Prepared(frame, channels).shapley(frame["conversions"].to_numpy(float),
                                              frame["journeys"].to_numpy(float))


@dataclass
class Attribution(ResultMixin):
    """Shares of conversions per channel and method, with bootstrap intervals for the
    Markov and Shapley shares. Credits of too few customers are already suppressed (NaN)
    in ``shares``, ``removal_effects`` and ``intervals`` (see the module docstring);
    ``suppressed`` says which, ``support`` holds the customers behind each credit."""

    shares: pd.DataFrame  # index channel, columns methods
    removal_effects: pd.Series
    intervals: pd.DataFrame  # channel, method, low, high
    conversions: int
    n_boot: int
    seed: int
    alpha: float
    min_group_size: int = MIN_GROUP_SIZE
    #: every column is a share of conversions (see :meth:`table`)
    _format = {"kinds": {c: "percent" for c in ("first_touch", "last_touch", "linear",
                                                 "markov", "shapley", "removal_effect")}}
    support: pd.DataFrame | None = None  # channel x method: customers behind the credit
    suppressed: pd.DataFrame | None = None  # channel x method: bool
    resampled: str = "customers"  # what the bootstrap resamples: customers or journeys
    untouched: int = 0  # conversions without a touch before them: not attributed

    def table(self) -> pd.DataFrame:
        """Share of conversions per channel (rows) and method (columns), with the bootstrap
        interval of the Markov and Shapley shares; suppressed credits are NaN and
        ``suppressed`` marks channels with any."""
        t = self.shares.copy()
        for m in ("markov", "shapley"):
            iv = self.intervals[self.intervals.method == m].set_index("channel")
            t[f"{m}_low"] = iv["low"]
            t[f"{m}_high"] = iv["high"]
        t["removal_effect"] = self.removal_effects
        t["suppressed"] = (self.suppressed.any(axis=1) if self.suppressed is not None
                           else False)
        return t

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        """The headline: :meth:`as_dict`."""
        return self.as_dict()

    def as_dict(self) -> dict[str, dict[str, float | None]]:
        """method -> channel -> share (None where suppressed)."""
        return {m: {c: None if pd.isna(v) else float(v) for c, v in self.shares[m].items()}
                for m in self.shares}

    def summary(self) -> str:
        mk = self.shares["markov"].dropna().sort_values(ascending=False)
        ft = self.shares["first_touch"]
        lt = self.shares["last_touch"]
        introducers = [c for c in ft.index if ft[c] > lt[c] + 0.02]
        closers = [c for c in ft.index if lt[c] > ft[c] + 0.02]
        if len(mk) < 2:
            return (f"Too few customers per channel to show the Markov attribution (groups "
                    f"under {self.min_group_size} are suppressed).")
        return (f"Credit, not incrementality: by Markov removal effect, {mk.index[0]} is "
                f"credited with {mk.iloc[0]:.0%} of conversions and {mk.index[1]} with "
                f"{mk.iloc[1]:.0%}; this says where channels sit on converting paths, not "
                "what they cause (only a holdout test measures that). Channels more often "
                f"first than last on converting paths: {', '.join(introducers) or 'none'}; "
                f"more often last than first: {', '.join(closers) or 'none'}."
                + (f" {self.untouched:,} conversions had no touch before them and are not "
                   "attributed." if self.untouched else ""))

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(9, 4))[1]
        self.shares.plot.bar(ax=ax, width=0.8)
        for j, m in enumerate(self.shares.columns):
            if m not in ("markov", "shapley"):
                continue
            iv = self.intervals[self.intervals.method == m].set_index("channel")
            iv = iv.reindex(self.shares.index)
            x = np.arange(len(self.shares)) - 0.4 + 0.8 * (j + 0.5) / len(self.shares.columns)
            # drawn from its own ends: a percentile bootstrap interval need not contain the
            # point estimate (it does not on a small channel's credit), and an error bar
            # relative to the point would then be negative
            ax.errorbar(x, (iv["low"] + iv["high"]) / 2, yerr=(iv["high"] - iv["low"]) / 2,
                        fmt="none", color="black", capsize=2, linewidth=0.8)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("% of conversions credited")
        ax.set_xlabel("channel")
        ax.set_xticks(range(len(self.shares)), [display_label(c) for c in self.shares.index],
                      rotation=0)
        ax.set_title(f"Attribution credit by channel — credit, not incrementality "
                     f"({1 - self.alpha:.0%} bootstrap intervals, {self.n_boot} resamples "
                     f"of {self.resampled})", fontsize=9)
        ax.legend(frameon=False, fontsize=8)
        return ax


def attribute(paths: PathCounts, n_boot: int = 200, seed: int = 0, alpha: float = 0.05,
              min_group_size: int | None = None) -> Attribution:
    """Attribute conversions to channels with every method in :data:`METHODS`.

    Parameters
    ----------
    paths : PathCounts
        Journeys per distinct channel path.
    n_boot : int
        Bootstrap resamples for the Markov and Shapley intervals (0: none).
    seed : int
        Seed of the bootstrap.
    alpha : float
        Intervals are the ``alpha/2`` and ``1 - alpha/2`` percentiles.
    min_group_size : int, optional
        Credits from fewer customers are suppressed (see the module docstring); default
        ``paths.min_group_size``.
    """
    untouched = int(paths.frame.loc[paths.frame["path"] == NO_TOUCH, "conversions"].sum())
    if untouched or (paths.frame["path"] == NO_TOUCH).any():
        # conversions with no touch have no channel to credit (and an empty channel set
        # would make the Shapley value of the empty coalition their conversion rate)
        paths = dataclasses.replace(
            paths, frame=paths.frame[paths.frame["path"] != NO_TOUCH].reset_index(drop=True),
            by_customer=None if paths.by_customer is None else
            paths.by_customer[paths.by_customer["path"] != NO_TOUCH],
            support=None if paths.support is None else
            paths.support.drop(index=NO_TOUCH, errors="ignore"))
    frame = paths.frame
    channels = paths.channels
    prep = _Prepared(frame, channels)
    journeys = frame["journeys"].to_numpy(float)
    conv = frame["conversions"].to_numpy(float)
    shares = {m: prep.heuristic(conv, m) for m in ("first_touch", "last_touch", "linear")}
    re, shares["markov"] = prep.markov(journeys, conv)
    shares["shapley"] = prep.shapley(conv, journeys)
    table = pd.DataFrame(shares, index=pd.Index(channels, name="channel"))

    rows = []
    resampled = "customers" if paths.by_customer is not None else "journeys"
    if n_boot:
        rng = np.random.default_rng(seed)
        draw_counts = _customer_resampler(paths) if paths.by_customer is not None \
            else _journey_resampler(journeys, conv)
        boot: dict[str, list[np.ndarray]] = {"markov": [], "shapley": []}
        for _ in bar(range(n_boot), desc="attribution bootstrap", unit="resample"):
            b_journeys, b_conv = draw_counts(rng)
            boot["markov"].append(prep.markov(b_journeys, b_conv)[1])
            boot["shapley"].append(prep.shapley(b_conv, b_journeys))
        for m, draws in boot.items():
            lo, hi = np.quantile(np.array(draws), [alpha / 2, 1 - alpha / 2], axis=0)
            rows += [{"channel": c, "method": m, "low": lo[i], "high": hi[i]}
                     for i, c in enumerate(channels)]
    intervals = pd.DataFrame(rows, columns=["channel", "method", "low", "high"])
    k = paths.min_group_size if min_group_size is None else min_group_size
    support = path_support(paths)
    hidden = suppression_mask(support, k)
    table = table.mask(hidden)
    removal = pd.Series(re, index=table.index, name="removal_effect").mask(hidden["markov"])
    if len(intervals):
        gone = hidden.stack().rename("gone").reset_index().rename(
            columns={"level_1": "method"})
        intervals = intervals.merge(gone, on=["channel", "method"], how="left")
        intervals.loc[intervals.pop("gone").fillna(False).astype(bool), ["low", "high"]] = \
            np.nan
    return Attribution(table, removal, intervals, paths.conversions, n_boot, seed, alpha,
                       k, support, hidden, resampled, untouched)


def _customer_resampler(paths: PathCounts):
    """A function drawing (journeys, conversions) per path of a bootstrap resample of
    customers: every customer drawn brings all of their journeys (a multinomial count of
    how often each customer is drawn, times the customer x path count matrices)."""
    from scipy import sparse

    bc = paths.by_customer
    pidx = pd.Index(paths.frame["path"]).get_indexer(bc["path"])
    if (pidx < 0).any():
        raise ValueError("PathCounts.by_customer has paths that are not in its frame")
    n_cust = int(bc["customer"].max()) + 1
    shape = (n_cust, len(paths.frame))
    mj = sparse.csr_matrix((bc["journeys"].to_numpy(float), (bc["customer"], pidx)), shape)
    mc = sparse.csr_matrix((bc["conversions"].to_numpy(float), (bc["customer"], pidx)), shape)
    mj_t, mc_t = mj.T.tocsr(), mc.T.tocsr()
    probs = np.full(n_cust, 1 / n_cust)

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        w = rng.multinomial(n_cust, probs).astype(float)
        return mj_t @ w, mc_t @ w

    return draw


def _journey_resampler(journeys: np.ndarray, conv: np.ndarray):
    """Resample journeys (for path counts without customers): a multinomial draw over
    (path, outcome) cells with the observed counts."""
    cells = np.concatenate([conv, journeys - conv])
    k = len(journeys)

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        d = rng.multinomial(int(cells.sum()), cells / cells.sum()).astype(float)
        return d[:k] + d[k:], d[:k]

    return draw
