"""Pain points and moments of truth: what customers say where they leave, and which
touchpoints predict conversion and retention.

- :func:`feedback_by_touchpoint` — NPS / CSAT / effort by the touchpoint rated and channel
  (aggregated in the engine).
- :func:`comment_themes` — themes of free-text comments with TF-IDF + NMF (scikit-learn,
  offline, seeded). Comments are redacted (:func:`cxanalysis.privacy.redact`) before
  modelling, and only words used by at least ``min_group_size`` distinct customers enter
  the model; reports show only theme words and counts, never a comment. The number of
  themes is chosen by resampling stability and coherence unless given; each theme's
  comments are split by the answer's sentiment (NPS, else CSAT).
- :func:`adjusted_dropoff` — drop-off by step x channel against the rest of the step,
  unadjusted and within personas (Mantel–Haenszel), so a channel is not blamed for who
  uses it; :func:`window_sweep` repeats it over window lengths.
- :func:`moments_of_truth` — a logistic regression of an outcome in a later window (any
  order; a repeat order) on whether the customer performed each touchpoint in the
  calibration window, near-duplicate flags merged; odds ratios per SD with 95% intervals.
  Associations (what predicts the outcome), not effects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import ibis
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from ibis import _
from scipy import stats

from cxanalysis.data import CXDataError, DayWindow, Labels, LabelsLike, Source, between_days
from cxanalysis.formatting import ResultMixin
from cxanalysis.funnel import FunnelResult
from cxanalysis.funnel import funnel as funnel_fn
from cxanalysis.plotting import display_label
from cxanalysis.privacy import MIN_GROUP_SIZE, redact, suppress_small_groups, terms_used_by
from cxanalysis.stats import adjust_pvalues, nps_score, two_proportion_z


def _shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a figure draws: suppressed groups are neither drawn nor named."""
    if "suppressed" not in frame:
        return frame
    return frame[~frame["suppressed"].fillna(False).astype(bool)]


@dataclass
class FeedbackByTouchpoint(ResultMixin):
    """Scores by the touchpoint rated (feedback ``event``) and channel."""

    frame: pd.DataFrame
    min_group_size: int = MIN_GROUP_SIZE

    def table(self) -> pd.DataFrame:
        return self.frame

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        f = _shown(self.frame).dropna(subset=["nps"])  # suppressed cells: no bar
        labels = [f"{display_label(e)} · {display_label(c)}"
                  for e, c in zip(f["event"], f["channel"], strict=True)]
        ax.barh(labels, f["nps"], color=np.where(f["nps"] < 0, "#e53935", "#43a047"))
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("NPS (points, -100 to +100)")
        ax.set_ylabel("touchpoint rated · channel")
        ax.set_title("NPS by touchpoint rated and channel")
        return ax


def feedback_by_touchpoint(source: Source, start: str | None = None, end: str | None = None,
                           min_group_size: int = MIN_GROUP_SIZE) -> FeedbackByTouchpoint:
    """Answers, NPS (promoters 9-10 minus detractors 0-6), mean CSAT and effort by
    ``event`` x ``channel`` of the feedback; groups under ``min_group_size`` customers are
    suppressed."""
    fb = between_days(source.table("feedback"), start, end)
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
    return FeedbackByTouchpoint(agg.sort_values(["nps", "event"]).reset_index(drop=True),
                                min_group_size)


@dataclass
class CommentThemes(ResultMixin):
    """Themes found in comments: top words per theme, how often each theme is the main
    theme of comments about each touchpoint, and the sentiment of each theme's answers.

    Attributes
    ----------
    words : DataFrame
        ``theme``, ``top_words``.
    counts : DataFrame
        ``event``, ``theme``, ``comments``, ``customers``, ``share`` (of the touchpoint's
        comments), ``mean_nps`` and ``suppressed`` (cells of fewer than ``min_group_size``
        customers: figures missing).
    sentiment : DataFrame
        Per theme: ``comments``, ``customers``, and the shares of its comments from
        ``negative`` / ``neutral`` / ``positive`` answers (NPS 0-6 / 7-8 / 9-10, else CSAT
        1-2 / 3 / 4-5; ``unknown`` without either), ``mean_nps``, ``mean_csat``.
    selection : DataFrame or None
        When the number of themes was chosen: per candidate ``n_themes``, ``coherence``
        (UMass, mean over themes; higher is better) and ``stability`` (mean cosine
        similarity of matched theme-word vectors across resamples), and ``chosen``.
    components : ndarray
        The NMF theme x term matrix (terms are the model's vocabulary of common words).
    """

    words: pd.DataFrame  # theme, top_words
    counts: pd.DataFrame  # event, theme, comments, share, mean_nps
    n_comments: int
    seed: int
    sentiment: pd.DataFrame | None = None
    selection: pd.DataFrame | None = None
    components: np.ndarray | None = None
    min_group_size: int = MIN_GROUP_SIZE

    @property
    def n_themes(self) -> int:
        return len(self.words)

    def table(self) -> pd.DataFrame:
        return self.counts

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        c = _shown(self.counts)  # suppressed touchpoint x theme cells: no bar
        pivot = (c.assign(event=c["event"].map(display_label))
                 .pivot(index="event", columns="theme", values="comments")
                 .astype(float).fillna(0))
        pivot.plot.barh(stacked=True, ax=ax)
        ax.set_xlabel("comments")
        ax.set_ylabel("touchpoint commented on")
        ax.set_title("Comment themes by touchpoint (TF-IDF + NMF)")
        ax.legend(frameon=False, fontsize=7, bbox_to_anchor=(1, 1))
        return ax

    def summary(self) -> str:
        how = (f"{self.n_themes} themes, chosen by coherence and resampling stability"
               if self.selection is not None else f"{self.n_themes} themes (given)")
        text = f"{self.n_comments:,} comments, {how}."
        if self.sentiment is not None and len(self.sentiment):
            s = self.sentiment.dropna(subset=["negative"])
            w = self.words.set_index("theme")["top_words"]
            mixed = s[(s["negative"] >= 0.25) & (s["positive"] >= 0.25)]
            neg = s[(s["negative"] >= 0.6)]
            if len(neg):
                text += " Mostly negative: " + "; ".join(
                    f"{r.theme} ({w[r.theme]}: {r.negative:.0%} negative)"
                    for r in neg.itertuples()) + "."
            if len(mixed):
                text += " Mixed (praise and complaint share words): " + "; ".join(
                    f"{r.theme} ({w[r.theme]}: {r.negative:.0%} negative, {r.positive:.0%} "
                    "positive)" for r in mixed.itertuples()) + "."
        return text


def _umass_coherence(x_bin, components: np.ndarray, top: int) -> float:
    """Mean UMass coherence of the themes' top words: for ordered top words w1..wm,
    the mean over pairs i > j of log((D(wi, wj) + 1) / D(wj)), D = comments containing."""
    co = (x_bin.T @ x_bin).toarray()
    scores = []
    for comp in components:
        idx = np.argsort(-comp)[:top]
        pairs = [np.log((co[idx[i], idx[j]] + 1) / co[idx[j], idx[j]])
                 for i in range(1, len(idx)) for j in range(i) if co[idx[j], idx[j]] > 0]
        scores.append(np.mean(pairs) if pairs else np.nan)
    return float(np.nanmean(scores))


def _match_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of theme-word vectors of two fits after the best one-to-one
    matching (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sim = na @ nb.T
    r, c = linear_sum_assignment(-sim)
    return float(sim[r, c].mean())


def _nmf(x, k: int, seed: int):
    from sklearn.decomposition import NMF

    # nndsvdar: the deterministic SVD start with its zeros filled by small random values
    # drawn from random_state, so the seed changes the initialisation (plain "nndsvda" does
    # not use the seed at all)
    model = NMF(n_components=k, random_state=seed, init="nndsvdar", max_iter=1000)
    return model, model.fit_transform(x)


def choose_n_themes(x, candidates: Sequence[int], seed: int = 0, resamples: int = 5,
                    fraction: float = 0.8, top_words: int = 10, tie: float = 0.01
                    ) -> pd.DataFrame:
    """Score each candidate number of themes by coherence and resampling stability.

    Stability: ``resamples`` fits on random ``fraction`` subsets of the comments (seeded),
    each matched to the fit on all comments (:func:`_match_similarity`), averaged.
    Coherence: :func:`_umass_coherence` of the ``top_words`` (default 10) words of each
    theme of the fit on all comments: a theme that merges two topics has top words that
    never occur together, which coherence penalises while stability may not (too few
    themes can be just as reproducible). Rule: candidates within ``tie`` of the best
    stability (Greene, O'Callaghan & Cunningham 2014) are eligible; the most coherent of
    them wins (then fewer themes). Coherence alone is not used: it tends to grow with the
    number of themes, as themes get narrower.
    """
    rng = np.random.default_rng(seed)
    x_bin = (x > 0).astype(float)
    rows = []
    n = x.shape[0]
    for k in candidates:
        full, _w = _nmf(x, k, seed)
        sims = []
        for r in range(resamples):
            idx = np.sort(rng.choice(n, size=int(fraction * n), replace=False))
            part, _w = _nmf(x[idx], k, seed + r + 1)
            sims.append(_match_similarity(full.components_, part.components_))
        rows.append({"n_themes": int(k),
                     "coherence": _umass_coherence(x_bin, full.components_, top_words),
                     "stability": float(np.mean(sims))})
    sel = pd.DataFrame(rows)
    pool = sel[sel["stability"] >= sel["stability"].max() - tie]
    best = pool.sort_values(["coherence", "n_themes"], ascending=[False, True]).iloc[0]
    sel["chosen"] = sel["n_themes"] == best["n_themes"]
    return sel


def _sentiment(df: pd.DataFrame) -> pd.Series:
    """negative / neutral / positive from the answer's NPS (0-6 / 7-8 / 9-10), else its CSAT
    (1-2 / 3 / 4-5), else unknown."""
    out = pd.Series("unknown", index=df.index, dtype=object)
    if "csat" in df:
        c = df["csat"]
        out = out.mask(c.notna() & (c <= 2), "negative").mask(c == 3, "neutral") \
            .mask(c >= 4, "positive")
    if "nps" in df:
        v = df["nps"]
        out = out.mask(v.notna() & (v <= 6), "negative").mask((v >= 7) & (v <= 8), "neutral") \
            .mask(v >= 9, "positive")
    return out


def comment_themes(source: Source, n_themes: int | None = None, seed: int = 0,
                   top_words: int = 5, start: str | None = None, end: str | None = None,
                   min_group_size: int = MIN_GROUP_SIZE,
                   candidates: Sequence[int] = range(2, 9)) -> CommentThemes:
    """Themes of feedback comments with TF-IDF + NMF (each comment's main theme = its
    largest NMF weight). Themes are named by their top words. Comments are redacted first
    and never returned; a word or bigram is a term of the model only if at least
    ``min_group_size`` distinct customers (and 3 comments) used it, so names and addresses
    that the redaction misses cannot reach the theme words. Theme counts by touchpoint and
    theme sentiments with fewer than ``min_group_size`` customers are suppressed (row kept,
    figures missing, ``suppressed`` true).

    Parameters
    ----------
    n_themes : int or None
        Number of themes; None (default) chooses it among ``candidates`` by coherence and
        resampling stability (:func:`choose_n_themes`).
    seed : int
        Seeds the NMF initialisation (``nndsvdar``) and the resamples.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    fb = between_days(source.table("feedback"), start, end)
    if "comment" not in fb.columns:
        raise CXDataError("feedback has no 'comment' column: no themes to find")
    scores = [c for c in ("nps", "csat") if c in fb.columns]
    cols = ["event", "comment", *scores]
    df = fb.filter(fb.comment.notnull() & (fb.comment.strip() != "")).select(
        *cols, "customer_id").order_by([*cols, "customer_id"]).execute()
    need = n_themes if n_themes is not None else min(candidates)
    if len(df) < max(need * 5, min_group_size):
        raise CXDataError(f"only {len(df)} comments: too few to find {need} themes")
    text = [redact(c) for c in df["comment"]]
    opts = {"stop_words": "english", "ngram_range": (1, 2),
            "token_pattern": r"(?u)\b[a-z][a-z]+\b"}
    # terms used by too few customers (document frequency in customers) never enter the model
    analyze = TfidfVectorizer(**opts).build_analyzer()
    terms = [analyze(t) for t in text]
    common = (terms_used_by(terms, df["customer_id"].tolist(), min_group_size)
              & terms_used_by(terms, range(len(terms)), 3))  # and in 3 comments
    if len(common) < need:
        raise CXDataError(f"feedback: only {len(common)} word(s) of the comments are used by "
                          f"{min_group_size} or more customers: too few to find {need} "
                          "themes")
    vec = TfidfVectorizer(**opts, vocabulary=sorted(common))
    x = vec.fit_transform(text)
    selection = None
    if n_themes is None:
        cands = [k for k in candidates if k <= min(len(common), len(df) // 5)]
        selection = choose_n_themes(x, cands, seed=seed)
        n_themes = int(selection.loc[selection["chosen"], "n_themes"].iloc[0])
    model, w = _nmf(x, n_themes, seed)
    vocab = np.array(vec.get_feature_names_out())
    names = []
    for comp in model.components_:
        top = vocab[np.argsort(-comp)[:top_words]]
        names.append(", ".join(top))
    words = pd.DataFrame({"theme": [f"T{i + 1}" for i in range(n_themes)], "top_words": names})
    df = df.drop(columns="comment").assign(theme=[f"T{i + 1}" for i in w.argmax(axis=1)])
    df["sentiment"] = _sentiment(df)
    aggs = {"comments": ("theme", "size"), "customers": ("customer_id", "nunique")}
    if "nps" in df:
        aggs["mean_nps"] = ("nps", "mean")
    counts = df.groupby(["event", "theme"], as_index=False).agg(**aggs)
    counts["share"] = counts["comments"] / counts.groupby("event")["comments"].transform("sum")
    # small touchpoint x theme cells keep their row, figures suppressed (one suppression)
    counts = suppress_small_groups(counts, "customers", min_group_size)
    sent = df.groupby("theme").agg(comments=("theme", "size"),
                                   customers=("customer_id", "nunique"))
    shares = pd.crosstab(df["theme"], df["sentiment"], normalize="index")
    for lvl in ("negative", "neutral", "positive", "unknown"):
        sent[lvl] = shares[lvl] if lvl in shares else 0.0
    for sc in scores:
        sent[f"mean_{sc}"] = df.groupby("theme")[sc].mean()
    sent = sent.reindex(words["theme"]).reset_index()
    sent = suppress_small_groups(sent, "customers", min_group_size,
                                 columns=[c for c in sent.columns if c != "theme"])
    return CommentThemes(words, counts, len(df), seed, sent, selection, model.components_,
                         min_group_size)


@dataclass
class MomentsOfTruth(ResultMixin):
    """Which touchpoint flags predict each outcome: odds ratio per standard deviation of a
    flag with a 95% interval (unpenalised logistic regression on the standardised flags
    that remain after merging near-duplicates), cross-validated AUC of an L2 model.

    These are associations in observational data — a touchpoint *predicts* or *is
    associated with* the outcome — not effects: never read a larger coefficient as "matters
    more". Near-duplicate flags (``|r| > max_abs_corr``) are merged into one, named
    ``a ≈ b`` (see ``merged``): with both in the model, their coefficients split one signal
    arbitrarily."""

    frame: pd.DataFrame  # touchpoint, outcome, coef, odds_ratio, ci_low, ci_high, p_value,
    #                      share_doing, vif
    auc: dict[str, float]
    C: float
    merged: pd.DataFrame | None = None  # kept, merged_into_it, abs_corr
    max_abs_corr: float = 0.9
    rare: list[str] = field(default_factory=list)  # flags not modelled (see fit_moments)

    def table(self) -> pd.DataFrame:
        return self.frame

    def top(self, outcome: str, n: int = 5) -> pd.DataFrame:
        f = self.frame[self.frame.outcome == outcome]
        return f.reindex(f["coef"].abs().sort_values(ascending=False).index).head(n)

    def plot(self, ax: plt.Axes | None = None) -> plt.Axes:
        ax = ax if ax is not None else plt.subplots(figsize=(8, 4))[1]
        outcomes = list(self.frame.outcome.unique())
        order = (self.frame.groupby("touchpoint")["coef"].apply(lambda c: c.abs().max())
                 .sort_values().index.tolist())
        y = np.arange(len(order))
        for i, o in enumerate(outcomes):
            f = self.frame[self.frame.outcome == o].set_index("touchpoint").reindex(order)
            yy = y + (i - (len(outcomes) - 1) / 2) * 0.3
            ax.errorbar(f["odds_ratio"], yy, xerr=[f["odds_ratio"] - f["ci_low"],
                                                   f["ci_high"] - f["odds_ratio"]],
                        fmt="o", capsize=2, label=o)
        ax.set_yticks(y, order)
        ax.set_xscale("log")
        ax.axvline(1, color="black", linewidth=0.8)
        ax.set_xlabel("odds ratio per SD of the flag (95% interval; association, not effect)")
        ax.set_ylabel("touchpoint")
        ax.set_title("Moments of truth: touchpoints that predict the outcome")
        ax.legend(frameon=False, fontsize=8)
        return ax

    def summary(self) -> str:
        parts = []
        for outcome in self.frame.outcome.unique():
            t = self.top(outcome, 2)
            parts.append(f"{outcome} (cross-validated AUC {self.auc[outcome]:.2f}) is most "
                         "strongly predicted by " + " and ".join(
                             f"{r.touchpoint} (odds x{r.odds_ratio:.2f} per SD, 95% CI "
                             f"{r.ci_low:.2f}–{r.ci_high:.2f})" for r in t.itertuples()))
        text = "; ".join(parts) + ". These are associations, not effects of the touchpoints."
        if self.merged is not None and len(self.merged):
            text += (f" Near-duplicate flags (|r| > {self.max_abs_corr:g}) merged: "
                     + "; ".join(f"{r.kept} with {r.merged_into_it} (r = {r.corr:.3f})"
                                 for r in self.merged.itertuples()) + ".")
        if self.rare:
            text += (" Not modelled (done by almost all or almost none of the customers: "
                     "not estimable): " + ", ".join(self.rare) + ".")
        return text


def merge_near_duplicates(x: pd.DataFrame, max_abs_corr: float = 0.9
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge flags whose correlation exceeds ``max_abs_corr`` in absolute value.

    Flags linked by such correlations (connected components, single linkage) become one
    column, kept under the name of the most common flag of the group (ties: first by name)
    and renamed ``kept ≈ other ≈ ...``; the others are dropped (they carry the same
    information). Returns (the merged flags, a table ``kept``, ``merged_into_it``, ``corr``
    (the largest |r| of the group, signed))."""
    cols = list(x.columns)
    r = x.corr().to_numpy()
    parent = list(range(len(cols)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(cols)):
        for j in range(i + 1, len(cols)):
            if abs(r[i, j]) > max_abs_corr:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(cols)):
        groups.setdefault(root(i), []).append(i)
    out, rows = {}, []
    means = x.mean()
    for members in groups.values():
        names = sorted((cols[i] for i in members), key=lambda c: (-means[c], c))
        keep = names[0]
        if len(names) == 1:
            out[keep] = x[keep]
            continue
        sub = r[np.ix_(members, members)].copy()
        np.fill_diagonal(sub, 0)
        big = sub.flat[np.abs(sub).argmax()]
        out[" ≈ ".join(names)] = x[keep]
        rows.append({"kept": keep, "merged_into_it": ", ".join(names[1:]), "corr": float(big)})
    return pd.DataFrame(out), pd.DataFrame(rows, columns=["kept", "merged_into_it", "corr"])


def variance_inflation(x: np.ndarray) -> np.ndarray:
    """Variance inflation factor of each column: the diagonal of the inverse correlation
    matrix (``1 / (1 - R^2)`` of the column on the others)."""
    return np.diag(np.linalg.inv(np.corrcoef(x, rowvar=False)))


def fit_moments(flags: pd.DataFrame, n_orders: pd.Series | np.ndarray, C: float = 1.0,
                seed: int = 0, max_abs_corr: float = 0.9) -> MomentsOfTruth:
    """The model of :func:`moments_of_truth` on a per-customer frame of 0/1 ``flags`` and
    the number of orders in the outcome window.

    Flags that (almost) never vary are dropped and listed in ``rare``: fewer than 1% of the
    customers, or fewer than 10, on one side — the few customers there often share one
    outcome, and the odds ratio is then 0 or infinite (separation). Near-duplicates are
    merged (:func:`merge_near_duplicates`), the rest standardised. Odds ratios per SD and their 95% Wald intervals come from an
    unpenalised logistic regression (statsmodels); the AUC is 5-fold cross-validated
    (folds shuffled with ``seed``) for an L2 logistic regression with inverse strength ``C``.
    """
    import statsmodels.api as sm
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    done = flags.sum()
    minority = np.minimum(done, len(flags) - done)
    estimable = minority >= max(10, 0.01 * len(flags))
    rare = [c for c in flags.columns if not estimable[c] and flags[c].std() > 0]
    flags = flags.loc[:, estimable]
    merged_x, merged = merge_near_duplicates(flags, max_abs_corr)
    names = list(merged_x.columns)
    raw = merged_x.to_numpy(float)
    x = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    vif = variance_inflation(x) if x.shape[1] > 1 else np.ones(x.shape[1])
    n_orders = np.asarray(n_orders, dtype=float)
    rows, auc = [], {}
    for name, y in (("conversion", (n_orders >= 1).astype(int)),
                    ("retention", (n_orders >= 2).astype(int))):
        if y.min() == y.max():
            continue
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        auc[name] = float(cross_val_score(LogisticRegression(C=C, max_iter=2000), x, y,
                                          cv=folds, scoring="roc_auc").mean())
        fit = sm.Logit(y, sm.add_constant(x)).fit(disp=0, maxiter=200)
        ci = np.asarray(fit.conf_int(0.05))[1:]
        for i, t in enumerate(names):
            coef = float(fit.params[i + 1])
            rows.append({"touchpoint": t, "outcome": name, "coef": coef,
                         "odds_ratio": float(np.exp(coef)), "ci_low": float(np.exp(ci[i, 0])),
                         "ci_high": float(np.exp(ci[i, 1])),
                         "p_value": float(fit.pvalues[i + 1]),
                         "share_doing": float(raw[:, i].mean()), "vif": float(vif[i])})
    return MomentsOfTruth(pd.DataFrame(rows), auc, C, merged, max_abs_corr, rare)


def moments_of_truth(source: Source, calibration: tuple[str, str], outcome: tuple[str, str],
                     touchpoints: Sequence[str] | None = None, C: float = 1.0, seed: int = 0,
                     max_abs_corr: float = 0.9) -> MomentsOfTruth:
    """Which touchpoints, done in the ``calibration`` window, predict conversion (any order
    in the ``outcome`` window) and retention (two or more orders in it).

    The per-customer flags are aggregated in the engine (one row per customer); the model is
    :func:`fit_moments`: near-duplicate flags (``|r| > max_abs_corr``, default 0.9) merged,
    odds ratios per SD with 95% intervals, cross-validated AUC.
    """
    ev = between_days(source.table("events"), DayWindow.of(calibration))
    if touchpoints is None:
        touchpoints = sorted(ev.select("event").distinct().execute()["event"])
    flags = ev.group_by("customer_id").aggregate(
        **{f"did_{t}": (_.event == t).any().cast("int8") for t in touchpoints})
    orders = between_days(source.table("orders"), DayWindow.of(outcome))
    outc = orders.group_by("customer_id").aggregate(n_orders=_.count())
    df = flags.left_join(outc, "customer_id").drop("customer_id_right") \
        .order_by("customer_id").execute()
    flags_df = df[[f"did_{t}" for t in touchpoints]].set_axis(list(touchpoints), axis=1)
    return fit_moments(flags_df, df["n_orders"].fillna(0), C, seed, max_abs_corr)


# ------------------------------------------------------------- persona-adjusted pain points

def mantel_haenszel(tables: np.ndarray) -> dict[str, float]:
    """Mantel–Haenszel pooled odds ratio of K 2x2 tables ``[[a, b], [c, d]]`` (rows: the
    group and the rest; columns: dropped and continued), its 95% interval (Robins–Breslow–
    Greenland variance of the log odds ratio) and the Cochran–Mantel–Haenszel test without
    continuity correction: two-sided ``p_value`` and one-sided ``p_worse`` (odds ratio
    > 1). Strata where either row is empty carry no information and are left out.

    Returns NaN figures when no stratum is informative or the pooled odds ratio is 0 or
    infinite.
    """
    t = np.asarray(tables, dtype=float).reshape(-1, 2, 2)
    a, b, c, d = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1]
    ok = (a + b > 0) & (c + d > 0)
    a, b, c, d = a[ok], b[ok], c[ok], d[ok]
    nan = {"odds_ratio": np.nan, "ci_low": np.nan, "ci_high": np.nan, "statistic": np.nan,
           "p_value": np.nan, "p_worse": np.nan, "strata": int(ok.sum())}
    if not ok.any():
        return nan
    n = a + b + c + d
    r, s = (a * d / n).sum(), (b * c / n).sum()
    e = (a + b) * (a + c) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(n > 1, (a + b) * (c + d) * (a + c) * (b + d) / (n**2 * (n - 1)), 0.0)
    diff, var = (a - e).sum(), v.sum()
    out = dict(nan)
    if var > 0:
        z = diff / np.sqrt(var)
        out |= {"statistic": float(z**2), "p_value": float(2 * stats.norm.sf(abs(z))),
                "p_worse": float(stats.norm.sf(z))}
    if r > 0 and s > 0:
        p_, q_ = (a + d) / n, (b + c) / n
        rr, ss = a * d / n, b * c / n
        se = np.sqrt((p_ * rr).sum() / (2 * r**2) + (p_ * ss + q_ * rr).sum() / (2 * r * s)
                     + (q_ * ss).sum() / (2 * s**2))
        zc = stats.norm.isf(0.025)
        out |= {"odds_ratio": float(r / s), "ci_low": float(np.exp(np.log(r / s) - zc * se)),
                "ci_high": float(np.exp(np.log(r / s) + zc * se))}
    return out


@dataclass
class AdjustedPainPoints(ResultMixin):
    """Drop-off by step x channel, compared with the rest of the step before and after
    adjusting for a per-customer stratum (persona).

    Columns of ``frame``: ``at_risk``, ``dropped``, ``rate`` (the cell's drop-off rate),
    ``rest_rate`` (the rest of the step, unadjusted), ``rest_rate_adjusted`` (the rest of
    the step re-weighted to the cell's persona mix: the rate the cell would have if each of
    its personas dropped like the same persona elsewhere — indirect standardisation),
    ``excess_lost`` / ``excess_lost_adjusted`` (dropped beyond ``at_risk x`` those rates, in
    ``unit``), the Mantel–Haenszel odds ratio with its 95% interval, ``p_holm`` (one-sided
    two-proportion test, unadjusted) and ``p_holm_adjusted`` (one-sided CMH test), both Holm
    across the cells tested; ``worse`` and ``worse_adjusted`` flag significantly worse cells.
    A cell is a pain point only when ``worse_adjusted``."""

    frame: pd.DataFrame
    stratum: str
    unit: str
    window_seconds: float
    min_group_size: int = MIN_GROUP_SIZE

    def table(self) -> pd.DataFrame:
        return self.frame

    @property
    def flagged(self) -> pd.DataFrame:
        return self.frame[self.frame["worse_adjusted"]]

    def summary(self) -> str:
        f = self.frame[~self.frame["suppressed"]]
        raw, adj = f[f["worse"]], f[f["worse_adjusted"]]
        gone = raw[~raw["worse_adjusted"]]

        def name(r: dict | tuple) -> str:
            r = r if isinstance(r, dict) else r._asdict()
            return f"{r['event']} -> {r['next_event']} in {r['channel']}"

        text = (f"Unit: {self.unit}. Compared with the rest of their step, {len(raw)} step x "
                f"channel cell(s) drop off significantly more before adjusting for "
                f"{self.stratum} and {len(adj)} after (Mantel–Haenszel, Holm).")
        if len(gone):
            text += (" Explained by who uses the channel (not flagged within "
                     f"{self.stratum}s): " + "; ".join(name(r) for r in gone.to_dict("records"))
                     + ".")
        for r in adj.sort_values("excess_lost_adjusted", ascending=False).itertuples():
            text += (f" Pain point: {name(r)}, {r.rate:.0%} of {int(r.at_risk):,} {self.unit} "
                     f"stop against {r.rest_rate_adjusted:.0%} for the same {self.stratum}s "
                     f"elsewhere ({r.rest_rate:.0%} unadjusted; odds ratio "
                     f"{r.odds_ratio:.2f}, 95% CI {r.ci_low:.2f}–{r.ci_high:.2f}).")
        return text


def _stratified_dropoff_counts(fun: FunnelResult, labels: Labels) -> pd.DataFrame:
    """Per step, channel of the step event and stratum: ``at_risk`` and ``dropped``
    (aggregated in the engine; in-progress units at the step are not at risk)."""
    c = labels.join(fun.customers)
    n = len(fun.steps)
    parts = []
    for k in range(1, n):
        at_risk = c.filter((c.level >= k) & ~((c.level == k) & c.in_progress))
        parts.append(at_risk.group_by([at_risk[f"ch{k}"].name("channel"), "group"]).aggregate(
            at_risk=_.count(), dropped=(_.level == k).sum()).mutate(step=k))
    df = ibis.union(*parts).execute() if len(parts) > 1 else parts[0].execute()
    df["at_risk"] = df["at_risk"].astype(int)
    df["dropped"] = df["dropped"].astype(int)
    return df


def adjusted_dropoff(fun: FunnelResult, labels: LabelsLike,
                     column: str | None = None, alpha: float = 0.05,
                     min_group_size: int = MIN_GROUP_SIZE) -> AdjustedPainPoints:
    """Drop-off at each step by the channel of the step event, compared with the rest of
    the step unadjusted and within strata of per-customer ``labels`` (Mantel–Haenszel).

    Parameters
    ----------
    fun : FunnelResult
        A computed funnel (any unit; counts are in its unit).
    labels : Labels, Series, DataFrame or ibis.Table
        Per-customer strata (e.g. the persona of notebook 01), in any form
        :meth:`cxanalysis.data.Labels.of` takes; customers without a label form the
        stratum "(unknown)".
    column : str, optional
        The label column of a DataFrame or table with more than one besides
        ``customer_id`` (see :meth:`Labels.of <cxanalysis.data.Labels.of>`).
    alpha : float
        Family-wise error rate of the flags (Holm across the cells tested).
    min_group_size : int
        Cells with fewer units at risk are not tested and their counts are suppressed.
    """
    labels = Labels.of(labels, column)
    df = _stratified_dropoff_counts(fun, labels)
    rows = []
    for (k, ch), cell in df.groupby(["step", "channel"]):
        step = df[df["step"] == k]
        # per stratum: this channel against the rest of the step
        mine = cell.set_index("group")[["at_risk", "dropped"]]
        rest = (step[step["channel"] != ch].groupby("group")[["at_risk", "dropped"]].sum()
                .reindex(mine.index, fill_value=0))
        n1, x1 = mine["at_risk"].to_numpy(float), mine["dropped"].to_numpy(float)
        n0, x0 = rest["at_risk"].to_numpy(float), rest["dropped"].to_numpy(float)
        tables = np.stack([np.stack([x1, n1 - x1], 1), np.stack([x0, n0 - x0], 1)], 1)
        mh = mantel_haenszel(tables)
        with np.errstate(invalid="ignore", divide="ignore"):
            r0 = np.where(n0 > 0, x0 / n0, np.nan)
        has_rest = n0 > 0
        at, dr = int(n1.sum()), int(x1.sum())
        rest_n = step["at_risk"].sum() - at
        rest_x = step["dropped"].sum() - dr
        expected = ((n1 * r0)[has_rest].sum() / n1[has_rest].sum()
                    if n1[has_rest].sum() else np.nan)
        z, _p = two_proportion_z(dr, at, rest_x, rest_n) if rest_n else (np.nan, np.nan)
        rows.append({
            "step": int(k), "event": fun.steps[k - 1], "next_event": fun.steps[k],
            "channel": ch, "at_risk": at, "dropped": dr, "rate": dr / at if at else np.nan,
            "rest_rate": rest_x / rest_n if rest_n else np.nan,
            "rest_rate_adjusted": float(expected),
            "p_raw": float(stats.norm.sf(z)) if np.isfinite(z) and at >= min_group_size
            else np.nan,
            "p_mh": mh["p_worse"] if at >= min_group_size else np.nan,
            "odds_ratio": mh["odds_ratio"], "ci_low": mh["ci_low"], "ci_high": mh["ci_high"],
        })
    f = pd.DataFrame(rows)
    f["excess_lost"] = f["dropped"] - f["at_risk"] * f["rest_rate"]
    f["excess_lost_adjusted"] = f["dropped"] - f["at_risk"] * f["rest_rate_adjusted"]
    f["p_holm"] = adjust_pvalues(f["p_raw"].to_numpy(float), "holm")
    f["p_holm_adjusted"] = adjust_pvalues(f["p_mh"].to_numpy(float), "holm")
    f["worse"] = (f["p_holm"] < alpha) & (f["rate"] > f["rest_rate"])
    f["worse_adjusted"] = (f["p_holm_adjusted"] < alpha) & (f["odds_ratio"] > 1)
    f = f.drop(columns=["p_raw", "p_mh"]).sort_values(
        ["excess_lost_adjusted", "step", "channel"], ascending=[False, True, True])
    f = suppress_small_groups(f.reset_index(drop=True), "at_risk", min_group_size,
                              columns=["at_risk", "dropped", "rate", "excess_lost",
                                       "excess_lost_adjusted"])
    return AdjustedPainPoints(f, labels.name, fun.unit, fun.window_seconds, min_group_size)


def window_sweep(source: Source | ibis.Table, steps: Sequence[str],
                 labels: LabelsLike, column: str | None = None,
                 windows_days: Sequence[float] = (1, 3, 7, 14), mode: str = "ordered",
                 unit: str = "customers", start: str | None = None, end: str | None = None,
                 alpha: float = 0.05, min_group_size: int = MIN_GROUP_SIZE) -> pd.DataFrame:
    """Does a pain-point flag survive other window lengths? The funnel and
    :func:`adjusted_dropoff` are recomputed for each window (days). ``labels`` and
    ``column`` as for :func:`adjusted_dropoff`.

    Returns
    -------
    DataFrame
        One row per step x channel cell flagged (unadjusted or adjusted) in at least one
        window, with per window ``w{d}d_raw`` and ``w{d}d_adjusted`` (bool flags) and
        ``survives`` (flagged after adjustment in every window).
    """
    labels = Labels.of(labels, column)
    out = None
    keys = ["step", "event", "next_event", "channel"]
    for d in windows_days:
        fun = funnel_fn(source, steps, window_seconds=d * 86_400, mode=mode, start=start,
                        end=end, unit=unit)
        f = adjusted_dropoff(fun, labels, alpha=alpha, min_group_size=min_group_size).table()
        f = f[~f["suppressed"]].set_index(keys)[["worse", "worse_adjusted"]].rename(
            columns={"worse": f"w{d:g}d_raw", "worse_adjusted": f"w{d:g}d_adjusted"})
        out = f if out is None else out.join(f, how="outer")
    out = out.fillna(False).astype(bool)
    out = out[out.any(axis=1)].copy()
    out["survives"] = out[[c for c in out.columns if c.endswith("_adjusted")]].all(axis=1)
    return out.reset_index().sort_values(keys).reset_index(drop=True)
