"""Pain points and moments of truth: what customers say where they leave, and which
touchpoints predict conversion and retention.

- :func:`feedback_by_touchpoint` — NPS / CSAT / effort by the touchpoint rated and channel
  (aggregated in the engine).
- :func:`comment_themes` — themes of free-text comments with TF-IDF + NMF (scikit-learn,
  offline, seeded). Comments are redacted (:func:`cxanalysis.privacy.redact`) before
  modelling, and only words used by at least ``min_group_size`` distinct customers enter
  the model; reports show only theme words and counts, never a comment.
- :func:`moments_of_truth` — a regularised logistic regression of an outcome in a later
  window (any order; a repeat order) on whether the customer performed each touchpoint in
  the calibration window; standardised coefficients as odds ratios.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from ibis import _

from cxanalysis.data import CXDataError, Source
from cxanalysis.formatting import ResultMixin
from cxanalysis.overview import nps_score
from cxanalysis.privacy import MIN_GROUP_SIZE, redact, suppress_small_groups, terms_used_by


def _ts_between(t: ibis.Table, col: str, start: str | None, end: str | None) -> ibis.Table:
    if start is not None:
        t = t.filter(t[col] >= pd.Timestamp(start, tz="UTC"))
    if end is not None:
        t = t.filter(t[col] < pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1))
    return t


@dataclass
class FeedbackByTouchpoint(ResultMixin):
    """Scores by the touchpoint rated (feedback ``event``) and channel."""

    frame: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        f = self.frame.dropna(subset=["nps"])
        labels = [f"{e} · {c}" for e, c in zip(f["event"], f["channel"], strict=True)]
        ax.barh(labels, f["nps"], color=np.where(f["nps"] < 0, "#e53935", "#43a047"))
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("NPS")
        ax.set_title("NPS by touchpoint rated and channel")
        return ax


def feedback_by_touchpoint(source: Source, start: str | None = None, end: str | None = None,
                           min_group_size: int = MIN_GROUP_SIZE) -> FeedbackByTouchpoint:
    """Answers, NPS (promoters 9-10 minus detractors 0-6), mean CSAT and effort by
    ``event`` x ``channel`` of the feedback; groups under ``min_group_size`` customers are
    suppressed."""
    fb = _ts_between(source.table("feedback"), "ts", start, end)
    aggs = {"answers": _.count(), "customers": _.customer_id.nunique()}
    if "nps" in fb.columns:
        aggs |= {"nps_answers": _.nps.count(), "promoters": (_.nps >= 9).sum(),
                 "detractors": (_.nps <= 6).sum()}
    for col in ("csat", "effort"):
        if col in fb.columns:
            aggs[f"mean_{col}"] = _[col].mean()
    agg = fb.group_by(["event", "channel"]).aggregate(**aggs).order_by(["event", "channel"]) \
        .execute()
    if "nps_answers" in agg:
        agg["nps"] = [nps_score(p, d, n) if n else np.nan for p, d, n in
                      zip(agg["promoters"], agg["detractors"], agg["nps_answers"], strict=True)]
        agg = agg.drop(columns=["promoters", "detractors"])
    agg = suppress_small_groups(agg, "customers", min_group_size)
    return FeedbackByTouchpoint(agg.sort_values(["nps", "event"]).reset_index(drop=True))


@dataclass
class CommentThemes(ResultMixin):
    """Themes found in comments: top words per theme, and how often each theme is the main
    theme of comments about each touchpoint."""

    words: pd.DataFrame  # theme, top_words
    counts: pd.DataFrame  # event, theme, comments, share, mean_nps
    n_comments: int
    seed: int

    def table(self) -> pd.DataFrame:
        return self.counts

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        pivot = self.counts.pivot(index="event", columns="theme", values="comments").fillna(0)
        pivot.plot.barh(stacked=True, ax=ax)
        ax.set_xlabel("comments")
        ax.set_title("Comment themes by touchpoint (TF-IDF + NMF)")
        ax.legend(frameon=False, fontsize=7, bbox_to_anchor=(1, 1))
        return ax


def comment_themes(source: Source, n_themes: int = 5, seed: int = 0, top_words: int = 5,
                   start: str | None = None, end: str | None = None,
                   min_group_size: int = MIN_GROUP_SIZE) -> CommentThemes:
    """Themes of feedback comments with TF-IDF + NMF (each comment's main theme = its
    largest NMF weight). Themes are named by their top words. Comments are redacted first
    and never returned; a word or bigram is a term of the model only if at least
    ``min_group_size`` distinct customers (and 3 comments) used it, so names and addresses
    that the redaction misses cannot reach the theme words. Theme counts by touchpoint
    with fewer than ``min_group_size`` customers are left out."""
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer

    fb = _ts_between(source.table("feedback"), "ts", start, end)
    if "comment" not in fb.columns:
        raise CXDataError("feedback has no 'comment' column: no themes to find")
    cols = ["event", "comment"] + (["nps"] if "nps" in fb.columns else [])
    df = fb.filter(fb.comment.notnull() & (fb.comment.strip() != "")).select(
        *cols, "customer_id").order_by([*cols, "customer_id"]).execute()
    if len(df) < max(n_themes * 5, min_group_size):
        raise CXDataError(f"only {len(df)} comments: too few to find {n_themes} themes")
    text = [redact(c) for c in df["comment"]]
    opts = {"stop_words": "english", "ngram_range": (1, 2),
            "token_pattern": r"(?u)\b[a-z][a-z]+\b"}
    # terms used by too few customers (document frequency in customers) never enter the model
    analyze = TfidfVectorizer(**opts).build_analyzer()
    terms = [analyze(t) for t in text]
    common = (terms_used_by(terms, df["customer_id"].tolist(), min_group_size)
              & terms_used_by(terms, range(len(terms)), 3))  # and in 3 comments
    if len(common) < n_themes:
        raise CXDataError(f"feedback: only {len(common)} word(s) of the comments are used by "
                          f"{min_group_size} or more customers: too few to find {n_themes} "
                          "themes")
    vec = TfidfVectorizer(**opts, vocabulary=sorted(common))
    x = vec.fit_transform(text)
    model = NMF(n_components=n_themes, random_state=seed, init="nndsvda", max_iter=500)
    w = model.fit_transform(x)
    vocab = np.array(vec.get_feature_names_out())
    names = []
    for comp in model.components_:
        top = vocab[np.argsort(-comp)[:top_words]]
        names.append(", ".join(top))
    words = pd.DataFrame({"theme": [f"T{i + 1}" for i in range(n_themes)], "top_words": names})
    df = df.drop(columns="comment").assign(theme=[f"T{i + 1}" for i in w.argmax(axis=1)])
    aggs = {"comments": ("theme", "size"), "customers": ("customer_id", "nunique")}
    if "nps" in df:
        aggs["mean_nps"] = ("nps", "mean")
    counts = df.groupby(["event", "theme"], as_index=False).agg(**aggs)
    counts["share"] = counts["comments"] / counts.groupby("event")["comments"].transform("sum")
    counts = counts[counts["customers"] >= min_group_size].reset_index(drop=True)
    return CommentThemes(words, counts, len(df), seed)


@dataclass
class MomentsOfTruth(ResultMixin):
    """Standardised logistic coefficients (odds ratio per standard deviation of a touchpoint
    flag) for each outcome; larger |coefficient| = the touchpoint matters more."""

    frame: pd.DataFrame  # touchpoint, outcome, coef, odds_ratio, share_doing
    auc: dict[str, float]
    C: float

    def table(self) -> pd.DataFrame:
        return self.frame

    def top(self, outcome: str, n: int = 5) -> pd.DataFrame:
        f = self.frame[self.frame.outcome == outcome]
        return f.reindex(f["coef"].abs().sort_values(ascending=False).index).head(n)

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        pivot = self.frame.pivot(index="touchpoint", columns="outcome", values="coef")
        pivot = pivot.reindex(pivot.abs().max(axis=1).sort_values().index)
        pivot.plot.barh(ax=ax)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("standardised log-odds (L2-regularised logistic regression)")
        ax.set_title("Moments of truth")
        return ax

    def summary(self) -> str:
        parts = []
        for outcome in self.frame.outcome.unique():
            t = self.top(outcome, 2)
            parts.append(f"{outcome} (cross-validated AUC {self.auc[outcome]:.2f}) is best "
                         "predicted by " + " and ".join(
                             f"{r.touchpoint} (odds x{r.odds_ratio:.2f} per SD)"
                             for r in t.itertuples()))
        return "; ".join(parts) + "."


def moments_of_truth(source: Source, calibration: tuple[str, str], outcome: tuple[str, str],
                     touchpoints: Sequence[str] | None = None, C: float = 1.0, seed: int = 0
                     ) -> MomentsOfTruth:
    """Which touchpoints, done in the ``calibration`` window, predict conversion (any order
    in the ``outcome`` window) and retention (two or more orders in it).

    The per-customer flags are aggregated in the engine (one row per customer); the model
    is scikit-learn's L2 logistic regression on standardised flags (``C`` = inverse
    regularisation strength), with 5-fold cross-validated AUC reported.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import StandardScaler

    ev = _ts_between(source.table("events"), "ts", *calibration)
    if touchpoints is None:
        touchpoints = sorted(ev.select("event").distinct().execute()["event"])
    flags = ev.group_by("customer_id").aggregate(
        **{f"did_{t}": (_.event == t).any().cast("int8") for t in touchpoints})
    orders = _ts_between(source.table("orders"), "ts", *outcome)
    outc = orders.group_by("customer_id").aggregate(n_orders=_.count())
    df = flags.left_join(outc, "customer_id").drop("customer_id_right") \
        .order_by("customer_id").execute()
    n_orders = df["n_orders"].fillna(0)
    x = df[[f"did_{t}" for t in touchpoints]].to_numpy(float)
    keep = x.std(axis=0) > 0
    x = StandardScaler().fit_transform(x[:, keep])
    names = [t for t, k in zip(touchpoints, keep, strict=True) if k]
    rows, auc = [], {}
    for name, y in (("conversion", (n_orders >= 1).to_numpy(int)),
                    ("retention", (n_orders >= 2).to_numpy(int))):
        if y.min() == y.max():
            continue
        model = LogisticRegression(C=C, max_iter=2000)
        auc[name] = float(cross_val_score(model, x, y, cv=5, scoring="roc_auc").mean())
        model.fit(x, y)
        for t, coef, share in zip(names, model.coef_[0], df[[f"did_{t}" for t in names]].mean(),
                                  strict=True):
            rows.append({"touchpoint": t, "outcome": name, "coef": float(coef),
                         "odds_ratio": float(np.exp(coef)), "share_doing": float(share)})
    return MomentsOfTruth(pd.DataFrame(rows), auc, C)
