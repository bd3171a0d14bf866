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
- ``shapley``: ``v(S)`` = conversions of journeys whose channel set is within ``S``;
  ``phi_c = sum over S without c of |S|! (n-|S|-1)! / n! [v(S + c) - v(S)]``; shares
  ``phi_c / v(all)``.

Bootstrap intervals resample journeys: a multinomial draw over (path, outcome) cells with
the observed counts, seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cxanalysis.journeys import SEP, PathCounts

METHODS = ("first_touch", "last_touch", "linear", "markov", "shapley")


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
            raise ValueError(f"unknown method {method!r}")
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

    def shapley(self, conv: np.ndarray) -> np.ndarray:
        n = len(self.channels)
        v = np.bincount(self.mask, weights=conv, minlength=1 << n).astype(float)
        for i in range(n):  # zeta transform: v(S) = sum of conversions over subsets of S
            bit = 1 << i
            has = (np.arange(1 << n) & bit) > 0
            v[has] += v[np.arange(1 << n)[has] ^ bit]
        total = v[-1]
        phi = self.coef @ v
        return phi / total if total else phi


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
    """Shapley values of channels for v(S) = conversions of journeys whose channel set is a
    subset of S, as shares of all conversions (exact; up to 20 channels)."""
    return _Prepared(frame, channels).shapley(frame["conversions"].to_numpy(float))


@dataclass
class Attribution:
    """Shares of conversions per channel and method, with bootstrap intervals for the
    Markov and Shapley shares."""

    shares: pd.DataFrame  # index channel, columns methods
    removal_effects: pd.Series
    intervals: pd.DataFrame  # channel, method, low, high
    conversions: int
    n_boot: int
    seed: int
    alpha: float

    def table(self) -> pd.DataFrame:
        """Share of conversions per channel (rows) and method (columns), with the bootstrap
        interval of the Markov and Shapley shares."""
        t = self.shares.copy()
        for m in ("markov", "shapley"):
            iv = self.intervals[self.intervals.method == m].set_index("channel")
            t[f"{m}_low"] = iv["low"]
            t[f"{m}_high"] = iv["high"]
        t["removal_effect"] = self.removal_effects
        return t

    def as_dict(self) -> dict[str, dict[str, float]]:
        """method -> channel -> share."""
        return {m: {c: float(v) for c, v in self.shares[m].items()} for m in self.shares}

    def summary(self) -> str:
        mk = self.shares["markov"].sort_values(ascending=False)
        ft = self.shares["first_touch"]
        lt = self.shares["last_touch"]
        introducers = [c for c in ft.index if ft[c] > lt[c] + 0.02]
        closers = [c for c in ft.index if lt[c] > ft[c] + 0.02]
        return (f"By Markov removal effect, {mk.index[0]} carries {mk.iloc[0]:.0%} of "
                f"conversions and {mk.index[1]} {mk.iloc[1]:.0%}. Channels that open journeys "
                f"more than they close them: {', '.join(introducers) or 'none'}; channels that "
                f"close more than they open: {', '.join(closers) or 'none'}.")

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(9, 4))[1]
        self.shares.plot.bar(ax=ax, width=0.8)
        for j, m in enumerate(self.shares.columns):
            if m not in ("markov", "shapley"):
                continue
            iv = self.intervals[self.intervals.method == m].set_index("channel")
            iv = iv.reindex(self.shares.index)
            x = np.arange(len(self.shares)) - 0.4 + 0.8 * (j + 0.5) / len(self.shares.columns)
            ax.errorbar(x, self.shares[m], yerr=[self.shares[m] - iv["low"],
                                                 iv["high"] - self.shares[m]],
                        fmt="none", color="black", capsize=2, linewidth=0.8)
        ax.set_ylabel("share of conversions")
        ax.set_title(f"Attribution by channel ({1 - self.alpha:.0%} bootstrap intervals, "
                     f"{self.n_boot} resamples)")
        ax.legend(frameon=False, fontsize=8)
        return ax


def attribute(paths: PathCounts, n_boot: int = 200, seed: int = 0, alpha: float = 0.05
              ) -> Attribution:
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
    """
    frame = paths.frame
    channels = paths.channels
    prep = _Prepared(frame, channels)
    journeys = frame["journeys"].to_numpy(float)
    conv = frame["conversions"].to_numpy(float)
    shares = {m: prep.heuristic(conv, m) for m in ("first_touch", "last_touch", "linear")}
    re, shares["markov"] = prep.markov(journeys, conv)
    shares["shapley"] = prep.shapley(conv)
    table = pd.DataFrame(shares, index=pd.Index(channels, name="channel"))

    rows = []
    if n_boot:
        rng = np.random.default_rng(seed)
        cells = np.concatenate([conv, journeys - conv])
        k = len(frame)
        boot: dict[str, list[np.ndarray]] = {"markov": [], "shapley": []}
        for _ in range(n_boot):
            draw = rng.multinomial(int(cells.sum()), cells / cells.sum()).astype(float)
            b_conv, b_journeys = draw[:k], draw[:k] + draw[k:]
            boot["markov"].append(prep.markov(b_journeys, b_conv)[1])
            boot["shapley"].append(prep.shapley(b_conv))
        for m, draws in boot.items():
            lo, hi = np.quantile(np.array(draws), [alpha / 2, 1 - alpha / 2], axis=0)
            rows += [{"channel": c, "method": m, "low": lo[i], "high": hi[i]}
                     for i, c in enumerate(channels)]
    intervals = pd.DataFrame(rows, columns=["channel", "method", "low", "high"])
    return Attribution(table, pd.Series(re, index=table.index, name="removal_effect"),
                       intervals, paths.conversions, n_boot, seed, alpha)
