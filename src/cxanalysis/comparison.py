"""Segments versus personas: agreement between groupings and which explains outcomes better.

Fairness of the comparison
--------------------------
- Outcomes come from a *holdout window after* the calibration window the groups were built
  on (no leakage): ``converted`` (any order), ``revenue`` (sum of amounts) and ``nps``
  (mean answer, only customers who answered).
- Out-of-sample fit by K-fold cross-validation (seeded): a grouping predicts each held-out
  customer's outcome by its group's training mean (exactly the fitted values of a
  one-hot logistic / linear model without intercept). Conversion is scored by AUC,
  revenue and NPS by R². Groups with more levels cannot win by overfitting, because scores
  are out of sample; likelihood-based AIC/BIC (statsmodels) add an explicit penalty.
- Permutation baseline: the same score after shuffling the group labels (seeded); a
  grouping must beat its baseline to explain anything.
- Nested likelihood-ratio tests (statsmodels Logit / OLS): does adding personas to
  segments (and segments to personas) improve the fit?
- Paired bootstrap by customer (seeded): the out-of-fold predictions of every grouping are
  fixed; customers are resampled with replacement and each grouping's score recomputed on
  the same resample, giving a percentile interval for the difference in out-of-sample fit
  between the focus grouping (personas) and each other grouping. The interval covers the
  sampling of customers, not the refitting of the groups. Groupings are ranked by score.
- Persona inputs include past outcomes (orders per month, basket, recency in the calibration
  window), so personas must beat a *past-outcome baseline* too: groups of calibration-window
  revenue at the same number of groups (:func:`cxanalysis.segments.past_revenue_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from ibis import _
from scipy import stats
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold

from cxanalysis.breakdowns import Breakdown
from cxanalysis.data import UNKNOWN, Labels, LabelsLike, Source, between_days
from cxanalysis.formatting import ResultMixin
from cxanalysis.plotting import display_label
from cxanalysis.privacy import MIN_GROUP_SIZE
from cxanalysis.progress import bar
from cxanalysis.results import to_jsonable

OUTCOMES = {"converted": "AUC", "revenue": "R²", "nps": "R²"}


def holdout_outcomes(source: Source, start: str, end: str,
                     customers: pd.Index | None = None) -> pd.DataFrame:
    """Per customer, outcomes in ``[start, end]`` (ISO dates, inclusive): ``converted``
    (0/1), ``revenue`` and ``nps`` (mean answer, NaN if none). Engine-side aggregates."""
    idx = pd.Index(customers if customers is not None
                   else source.table("customers").customer_id.execute(), name="customer_id")
    out = pd.DataFrame(index=idx)
    if source.has("orders"):
        o = between_days(source.table("orders"), start, end)
        agg = o.group_by("customer_id").aggregate(n=_.count(), revenue=_.amount.sum()) \
            .execute().set_index("customer_id")
        out["converted"] = (agg["n"].reindex(idx).fillna(0) > 0).astype(int)
        out["revenue"] = agg["revenue"].reindex(idx).fillna(0.0)
    if source.has("feedback") and "nps" in source.table("feedback").columns:
        f = between_days(source.table("feedback"), start, end).filter(_.nps.notnull())
        nps = f.group_by("customer_id").aggregate(nps=_.nps.mean()).execute() \
            .set_index("customer_id")["nps"]
        out["nps"] = nps.reindex(idx)
    return out


def cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Cramér's V of the crosstab of two groupings (no bias correction)."""
    tab = pd.crosstab(a, b)
    return _cramers_v(tab, stats.chi2_contingency(tab, correction=False)[0])


def _cramers_v(tab: pd.DataFrame, chi2: float) -> float:
    """Cramér's V of a crosstab whose chi-square (no continuity correction) is known."""
    if min(tab.shape) < 2:  # one group (e.g. k = 1, no persona structure): undefined
        return float("nan")
    return float(np.sqrt(chi2 / (tab.to_numpy().sum() * (min(tab.shape) - 1))))


def agreement(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """ARI, AMI and Cramér's V between two groupings on their common customers."""
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    return {"ari": float(adjusted_rand_score(a, b)),
            "ami": float(adjusted_mutual_info_score(a, b)), "cramers_v": cramers_v(a, b),
            "customers": int(len(common))}


def _cv_score(groups: np.ndarray, y: np.ndarray, metric: str, folds: int, seed: int) -> float:
    """K-fold score of predicting y by the training mean of the customer's group."""
    return _score(y, _cv_predict(groups, y, metric, folds, seed), metric)


def _score(y: np.ndarray, pred: np.ndarray, metric: str) -> float:
    return float(roc_auc_score(y, pred) if metric == "AUC" else r2_score(y, pred))


def paired_bootstrap(y: np.ndarray, preds: Mapping[str, np.ndarray], metric: str,
                     n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Scores (``metric``: "AUC" or "R²") of fixed predictions on ``n_boot`` bootstrap
    resamples of the customers (rows), the same resample for every prediction: one row per
    resample, one column per name of ``preds``. A resample with one class only (AUC) is
    drawn again."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, float)
    n = len(y)
    out = np.empty((n_boot, len(preds)))
    arrays = [np.asarray(p, float) for p in preds.values()]
    for b in bar(range(n_boot), desc="score bootstrap", unit="resample"):
        idx = rng.integers(0, n, n)
        while metric == "AUC" and np.unique(y[idx]).size < 2:
            idx = rng.integers(0, n, n)
        out[b] = [_score(y[idx], p[idx], metric) for p in arrays]
    return pd.DataFrame(out, columns=list(preds))


def difference_interval(draws: pd.DataFrame, a: str, b: str,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of score(a) - score(b) over paired bootstrap ``draws``."""
    d = (draws[a] - draws[b]).to_numpy()
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _cv_predict(groups: np.ndarray, y: np.ndarray, metric: str, folds: int,
                seed: int) -> np.ndarray:
    """Out-of-fold predictions of y by the training mean of the customer's group."""
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if metric == "AUC"
                else KFold(folds, shuffle=True, random_state=seed))
    pred = np.empty(len(y))
    for tr, te in splitter.split(groups, y if metric == "AUC" else None):
        means = pd.Series(y[tr]).groupby(groups[tr]).mean()
        pred[te] = pd.Series(groups[te]).map(means).fillna(y[tr].mean()).to_numpy()
    return pred


def _information(groups: pd.Series, y: pd.Series, binary: bool) -> tuple[float, float]:
    """AIC and BIC of the one-factor model of ``y`` by group (logit when ``binary``)."""
    d = pd.DataFrame({"y": y.to_numpy(), "g": groups.astype(str).to_numpy()})
    fit = (smf.logit("y ~ C(g)", d).fit(disp=0, method="bfgs", maxiter=500) if binary
           else smf.ols("y ~ C(g)", d).fit())
    return float(fit.aic), float(fit.bic)


@dataclass
class Comparison(ResultMixin):
    """Outcome fit of each grouping, agreement, nested tests and group differences."""

    fit: pd.DataFrame
    agreement: dict[str, float]
    crosstab: pd.DataFrame
    nested: pd.DataFrame
    differences: pd.DataFrame
    #: focus grouping minus each other grouping, per outcome: difference in cross-validated
    #: score with its paired-bootstrap interval (see the module docstring)
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    focus: str | None = None

    def ranking(self) -> pd.DataFrame:
        """Per outcome, every grouping ranked by cross-validated score (1 = best), with the
        focus grouping's difference to it and the paired-bootstrap interval."""
        f = self.fit[["outcome", "metric", "grouping", "groups", "cv_score"]].copy()
        f["rank"] = f.groupby("outcome", sort=False)["cv_score"].rank(
            ascending=False, method="min").astype(int)
        if not self.paired.empty:
            f = f.merge(self.paired[["outcome", "other", "difference", "ci_low", "ci_high"]]
                        .rename(columns={"other": "grouping"}), how="left",
                        on=["outcome", "grouping"])
        return f.sort_values(["outcome", "rank"], key=lambda c: (
            c.map({o: i for i, o in enumerate(OUTCOMES)}) if c.name == "outcome" else c)
        ).reset_index(drop=True)

    def ranking_summary(self) -> str:
        """One sentence per outcome: groupings in rank order, and the focus grouping's
        difference to each other one with its 95% interval."""
        lines = []
        for o, g in self.ranking().groupby("outcome", sort=False):
            order = ", ".join(f"{int(r['rank'])}. {r.grouping} {r.cv_score:.3f}"
                              for _i, r in g.iterrows())
            line = f"- {o} ({g.metric.iloc[0]}): {order}"
            if self.focus is not None and "difference" in g:
                diffs = []
                for _i, r in g[g.grouping != self.focus].iterrows():
                    verdict = ("better" if r.ci_low > 0 else "worse" if r.ci_high < 0
                               else "not distinguishable")
                    diffs.append(f"vs {r.grouping} {r.difference:+.3f} "
                                 f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}] ({verdict})")
                if diffs:
                    line += f". {self.focus}: " + "; ".join(diffs)
            lines.append(line + ".")
        return "\n".join(lines)

    def table(self) -> pd.DataFrame:
        return self.fit

    def to_dict(self) -> dict[str, Any]:
        """The headline: agreement of segments and personas and the outcome fit."""
        return to_jsonable({"agreement": self.agreement, "outcome_fit": self.outcome_fit()})

    def outcome_fit(self, names: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """Per outcome: its ``metric`` and the cross-validated score of each grouping (keys
        renamed by ``names`` where given), in the order of :meth:`table`."""
        names = names or {}
        return {o: {"metric": g.metric.iloc[0],
                    **{names.get(n, n): s for n, s in zip(g.grouping, g.cv_score, strict=True)}}
                for o, g in self.fit.groupby("outcome", sort=False)}

    def winner(self, outcome: str) -> str:
        f = self.fit[self.fit.outcome == outcome]
        return str(f.sort_values("cv_score", ascending=False).iloc[0]["grouping"])

    def summary(self) -> str:
        parts = []
        for outcome, metric in OUTCOMES.items():
            f = self.fit[self.fit.outcome == outcome]
            if f.empty:
                continue
            txt = ", ".join(f"{r.grouping} {r.cv_score:.3f}" for r in f.itertuples())
            parts.append(f"{outcome} ({metric}, {len(f)}-way): {txt} -> {self.winner(outcome)}")
        return ("Out-of-sample fit in the holdout window: " + "; ".join(parts)
                + f". Agreement of segments and personas: ARI {self.agreement['ari']:.3f}, "
                f"AMI {self.agreement['ami']:.3f}, Cramér's V {self.agreement['cramers_v']:.2f}.")

    def plot(self) -> plt.Figure:
        outs = list(dict.fromkeys(self.fit.outcome))
        fig, axes = plt.subplots(1, len(outs), figsize=(4.2 * len(outs), 3), squeeze=False)
        for ax, o in zip(axes[0], outs, strict=True):
            f = self.fit[self.fit.outcome == o]
            y = np.arange(len(f))[::-1]
            ax.barh(y, f.cv_score, color="#1e88e5", label="cross-validated")
            ax.scatter(f.perm_p95, y, marker="|", s=300, color="black",
                       label="permutation 95th pct")
            ax.set_yticks(y, [display_label(g) for g in f.grouping])
            ax.set_title(f"{o} ({OUTCOMES[o]})")
            ax.set_xlabel(f"cross-validated {OUTCOMES[o]} on the holdout")
            ax.set_ylabel("grouping")
        axes[0][0].legend(fontsize=7, loc="lower right")
        fig.suptitle("Which grouping explains holdout outcomes better")
        fig.tight_layout()
        return fig

    def plot_crosstab(self) -> plt.Axes:
        import seaborn as sns

        ax = plt.subplots(figsize=(7, 0.35 * len(self.crosstab) + 2))[1]
        share = self.crosstab.div(self.crosstab.sum(axis=1), axis=0)
        share = share.rename(index=display_label, columns=display_label)
        sns.heatmap(share, annot=True, fmt=".0%", cmap="Blues", cbar=False, ax=ax)
        ax.set_xlabel(str(self.crosstab.columns.name or "persona"))
        ax.set_ylabel(str(self.crosstab.index.name or "segment"))
        ax.set_title("Personas within each segment (row shares; small cells suppressed)")
        return ax


def _as_series(groups: pd.Series | LabelsLike) -> pd.Series:
    """Per-customer labels as a Series indexed by customer id (the pandas side of
    :class:`cxanalysis.data.Labels`)."""
    return groups if isinstance(groups, pd.Series) else Labels.of(groups).series()


def compare_groupings(
    groupings: Mapping[str, pd.Series | LabelsLike],
    outcomes: pd.DataFrame,
    reference: tuple[str, str] | None = None,
    folds: int = 5,
    n_perm: int = 20,
    seed: int = 0,
    min_group_size: int = MIN_GROUP_SIZE,
    n_boot: int = 200,
) -> Comparison:
    """Compare groupings (name -> per-customer labels: a Series indexed by customer_id or
    anything :meth:`cxanalysis.data.Labels.of` takes) on ``outcomes``.

    ``reference`` names the (segments, personas) pair used for agreement, crosstab and the
    nested tests (default: the first two groupings); its second member is the focus whose
    difference in cross-validated score to every other grouping gets a paired bootstrap
    interval (``n_boot`` resamples of customers, seeded; 0 skips it). Only customers
    present in every grouping are used, so all groupings are scored on the same people.
    """
    groupings = {name: _as_series(g) for name, g in groupings.items()}
    names = list(groupings)
    common = outcomes.index
    for g in groupings.values():
        common = common.intersection(g.index)
    seg_name, per_name = reference or (names[0], names[1])
    rng = np.random.default_rng(seed)
    rows = []
    paired = []
    for outcome, metric in OUTCOMES.items():
        if outcome not in outcomes:
            continue
        y = outcomes.loc[common, outcome]
        ok = y.notna()
        yv = y[ok].to_numpy(float)
        if len(np.unique(yv)) < 2:
            continue
        preds = {}
        for name in names:
            g = groupings[name].loc[common][ok].astype(str).to_numpy()
            preds[name] = _cv_predict(g, yv, metric, folds, seed)
            score = _score(yv, preds[name], metric)
            perm = [_cv_score(rng.permutation(g), yv, metric, folds, seed)
                    for _i in range(n_perm)]
            p95 = float(np.quantile(perm, 0.95))
            aic, bic = _information(pd.Series(g), pd.Series(yv), outcome == "converted")
            rows.append({"outcome": outcome, "metric": metric, "grouping": name,
                         "groups": int(len(np.unique(g))), "customers": int(len(g)),
                         "cv_score": score, "perm_mean": float(np.mean(perm)),
                         "perm_p95": p95, "beats_permutation": bool(score > p95),
                         "aic": aic, "bic": bic})
        if n_boot and per_name in preds:
            draws = paired_bootstrap(yv, preds, metric, n_boot, seed)
            base = _score(yv, preds[per_name], metric)
            for other in names:
                if other == per_name:
                    continue
                lo, hi = difference_interval(draws, per_name, other)
                paired.append({"outcome": outcome, "metric": metric, "focus": per_name,
                               "other": other,
                               "difference": base - _score(yv, preds[other], metric),
                               "ci_low": lo, "ci_high": hi, "resamples": n_boot})
    fit = pd.DataFrame(rows)
    a, b = groupings[seg_name].loc[common], groupings[per_name].loc[common]
    agree = agreement(a, b)
    tab = pd.crosstab(a.rename(seg_name), b.rename(per_name))
    tab = tab.mask(tab < min_group_size)
    nested = _nested(a, b, outcomes.loc[common], seg_name, per_name)
    diffs = group_differences(b, outcomes.loc[common], per_name)
    return Comparison(fit, agree, tab, nested, diffs, pd.DataFrame(paired), per_name)


def _nested(a: pd.Series, b: pd.Series, out: pd.DataFrame, an: str, bn: str) -> pd.DataFrame:
    rows = []
    for outcome in ("converted", "revenue"):
        if outcome not in out:
            continue
        d = pd.DataFrame({"y": out[outcome].to_numpy(float), "a": a.astype(str).to_numpy(),
                          "b": b.astype(str).to_numpy()})
        binary = outcome == "converted"

        def fit(formula: str, d: pd.DataFrame = d, binary: bool = binary):
            return (smf.logit(formula, d).fit(disp=0, method="bfgs", maxiter=1000) if binary
                    else smf.ols(formula, d).fit())
        fa, fb, fab = fit("y ~ C(a)"), fit("y ~ C(b)"), fit("y ~ C(a) + C(b)")
        for added, base, name in ((bn, fa, f"{an} + {bn} vs {an}"),
                                  (an, fb, f"{an} + {bn} vs {bn}")):
            lr = 2 * (fab.llf - base.llf)
            df = int(round(fab.df_model - base.df_model))
            rows.append({"outcome": outcome, "test": name, "added": added, "lr_stat": lr,
                         "df": df, "p_value": float(stats.chi2.sf(lr, df))})
    return pd.DataFrame(rows)


def conversion_by_group(groups: pd.Series | LabelsLike, outcomes: pd.DataFrame,
                        name: str | None = None, alpha: float = 0.05,
                        min_group_size: int = MIN_GROUP_SIZE) -> Breakdown:
    """Holdout conversion by group, with Wilson intervals, a chi-square across groups and
    pairwise Holm-corrected tests (see :class:`cxanalysis.breakdowns.Breakdown`).

    Parameters
    ----------
    groups : Series or labels
        Per-customer labels: a Series indexed by ``customer_id`` or anything
        :meth:`cxanalysis.data.Labels.of` takes. Customers of ``outcomes`` without a label
        are the group ``"(unknown)"``.
    outcomes : DataFrame
        Indexed by ``customer_id`` with a 0/1 ``converted`` column
        (:func:`holdout_outcomes`).
    name : str, optional
        Name of the grouping (default: the labels' name).
    """
    groups = _as_series(groups)
    name = name if name is not None else str(groups.name)
    labels = groups.reindex(outcomes.index).astype(object).fillna(UNKNOWN).astype(str)
    conv = outcomes["converted"].groupby(labels).agg(["size", "sum"]).reset_index()
    conv.columns = ["group", "customers", "converted"]
    return Breakdown.from_counts(name, conv, alpha, min_group_size)


def group_differences(groups: pd.Series | LabelsLike, outcomes: pd.DataFrame,
                      name: str) -> pd.DataFrame:
    """Do outcomes differ across groups? Chi-square with Cramér's V for conversion,
    Kruskal-Wallis with epsilon² (H / (n - 1)) for revenue and NPS. ``groups``: labels as
    for :func:`conversion_by_group`, matched with ``outcomes`` by customer id."""
    rows = []
    g = _as_series(groups).astype(str)
    if "converted" in outcomes:
        tab = pd.crosstab(g, outcomes["converted"])
        chi2, p, dof, _e = stats.chi2_contingency(tab, correction=False)
        rows.append({"grouping": name, "outcome": "converted", "test": "chi-square",
                     "statistic": chi2, "df": dof, "p_value": p,
                     "effect_size": _cramers_v(tab, chi2),
                     "effect_measure": "Cramér's V"})
    for o in ("revenue", "nps"):
        if o not in outcomes:
            continue
        y = outcomes[o]
        ok = y.notna()
        samples = [v.to_numpy() for _k, v in y[ok].groupby(g[ok], sort=True)]
        if len(samples) < 2:
            continue
        h, p = stats.kruskal(*samples)
        n = sum(len(s) for s in samples)
        rows.append({"grouping": name, "outcome": o, "test": "Kruskal-Wallis", "statistic": h,
                     "df": len(samples) - 1, "p_value": p, "effect_size": h / (n - 1),
                     "effect_measure": "epsilon²"})
    return pd.DataFrame(rows)
