"""Experiment statistics from per-arm sufficient statistics.

Every function takes counts, sums, sums of squares and cross-products of per-customer values
(the unit of randomisation), so the same code serves a few hundred customers or a warehouse
table aggregated in SQL. Conventions:

- ``Moments``: ``n``, ``sy = sum y``, ``syy = sum y^2``, optional covariate ``sx``, ``sxx``,
  ``sxy`` (for CUPED) or denominator ``sd``, ``sdd``, ``syd`` (for ratio metrics, where
  ``y`` is the numerator).
- Variances are sample variances (``n - 1``); intervals are two-sided ``1 - alpha``.
- Relative lift ``mu_t / mu_c - 1`` gets a delta-method interval:
  ``Var(mu_t/mu_c) ~ Var(mu_t)/mu_c^2 + mu_t^2 Var(mu_c)/mu_c^4`` (arms independent).
  It is NaN when the control mean is zero or negative (:func:`relative_defined`).
- p-values use survival functions (``sf``), never ``1 - cdf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from cxanalysis.errors import ParameterError


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of one arm."""

    n: float
    sy: float
    syy: float
    sx: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    @property
    def mean(self) -> float:
        return self.sy / self.n

    @property
    def var(self) -> float:
        return max((self.syy - self.sy**2 / self.n) / (self.n - 1), 0.0)

    @property
    def mean_x(self) -> float:
        return self.sx / self.n

    @property
    def var_x(self) -> float:
        return max((self.sxx - self.sx**2 / self.n) / (self.n - 1), 0.0)

    @property
    def cov_xy(self) -> float:
        return (self.sxy - self.sx * self.sy / self.n) / (self.n - 1)

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.sy + other.sy, self.syy + other.syy,
                       self.sx + other.sx, self.sxx + other.sxx, self.sxy + other.sxy)


@dataclass(frozen=True)
class Effect:
    """Treatment minus control, absolute and relative, with intervals and a p-value."""

    control_mean: float
    treatment_mean: float
    abs_diff: float
    se: float
    abs_ci: tuple[float, float]
    rel_lift: float
    rel_ci: tuple[float, float]
    p_value: float
    method: str
    df: float = float("inf")


def relative_defined(control_level: float) -> bool:
    """Whether a relative lift against ``control_level`` means anything.

    Only a positive base does: against 0 the ratio is undefined, and against a negative
    base (an NPS of -40, say) ``mu_t / mu_c - 1`` reads backwards (an improvement to -20
    shows as -50 %). Every relative figure of the package (effects, breakdowns, planning)
    goes through this rule, so they blank the same rows."""
    return bool(np.isfinite(control_level) and control_level > 0)


def _rel(mt: float, vt: float, mc: float, vc: float, alpha: float
         ) -> tuple[float, tuple[float, float]]:
    """Relative lift and its delta-method interval (vt, vc: variances of the two means);
    NaN when the control mean is not positive (see :func:`relative_defined`)."""
    if not relative_defined(mc):
        return float("nan"), (float("nan"), float("nan"))
    rel = mt / mc - 1
    se = np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
    z = stats.norm.isf(alpha / 2)
    return float(rel), (float(rel - z * se), float(rel + z * se))


def welch(t: Moments, c: Moments, alpha: float = 0.05) -> Effect:
    """Difference in means with Welch's t-test and interval (Welch-Satterthwaite df)."""
    vt, vc = t.var / t.n, c.var / c.n
    se = np.sqrt(vt + vc)
    diff = t.mean - c.mean
    if se == 0:
        raise ValueError("the metric has zero variance in both arms: no test is possible")
    df = (vt + vc) ** 2 / (vt**2 / (t.n - 1) + vc**2 / (c.n - 1))
    tstat = diff / se
    p = 2 * stats.t.sf(abs(tstat), df)
    q = stats.t.isf(alpha / 2, df)
    rel, rel_ci = _rel(t.mean, vt, c.mean, vc, alpha)
    return Effect(c.mean, t.mean, diff, se, (diff - q * se, diff + q * se), rel, rel_ci,
                  float(p), "welch", float(df))


def wilson_interval(successes: np.ndarray | float, trials: np.ndarray | float,
                    alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion, two-sided ``1 - alpha``, elementwise
    over arrays (NaN where ``trials == 0``). Proportions, in [0, 1]."""
    x = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    z = stats.norm.isf(alpha / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def two_proportion_z(x1: float, n1: float, x2: float, n2: float) -> tuple[float, float]:
    """Pooled two-proportion z-test of ``x1 / n1`` against ``x2 / n2``, two-sided:
    ``(z, p)``. NaN when undefined (both proportions 0 or both 1)."""
    p = (x1 + x2) / (n1 + n2)
    se = np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return float("nan"), float("nan")
    z = (x1 / n1 - x2 / n2) / se
    return float(z), float(2 * stats.norm.sf(abs(z)))


def nps_score(promoters: int, detractors: int, answers: int) -> float:
    """Net Promoter Score: % promoters (9-10) minus % detractors (0-6), in points
    (-100 to 100)."""
    if answers <= 0:
        raise ValueError("NPS needs at least one answer")
    return 100.0 * (promoters - detractors) / answers


def newcombe_interval(xt: float, nt: float, xc: float, nc: float, alpha: float = 0.05
                      ) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p_t - p_c (Wilson intervals of each arm)."""
    pt, pc = xt / nt, xc / nc
    lt, ut = (float(v) for v in wilson_interval(xt, nt, alpha))
    lc, uc = (float(v) for v in wilson_interval(xc, nc, alpha))
    d = pt - pc
    lo = d - np.sqrt((pt - lt) ** 2 + (uc - pc) ** 2)
    hi = d + np.sqrt((ut - pt) ** 2 + (pc - lc) ** 2)
    return float(lo), float(hi)


def two_proportions(t: Moments, c: Moments, alpha: float = 0.05) -> Effect:
    """Difference of proportions (y in {0, 1}): pooled two-proportion z-test p-value,
    Newcombe-Wilson interval for the difference, delta-method relative interval."""
    pt, pc = t.mean, c.mean
    p = (t.sy + c.sy) / (t.n + c.n)
    se0 = np.sqrt(p * (1 - p) * (1 / t.n + 1 / c.n))
    if se0 == 0:
        raise ValueError("the proportion is 0 or 1 in both arms: no test is possible")
    z = (pt - pc) / se0
    pval = 2 * stats.norm.sf(abs(z))
    vt, vc = pt * (1 - pt) / t.n, pc * (1 - pc) / c.n
    rel, rel_ci = _rel(pt, vt, pc, vc, alpha)
    return Effect(pc, pt, pt - pc, float(np.sqrt(vt + vc)),
                  newcombe_interval(t.sy, t.n, c.sy, c.n, alpha), rel, rel_ci, float(pval),
                  "two-proportion z / Newcombe")


def ratio_mean_var(m: Moments) -> tuple[float, float]:
    """Ratio ``sum y / sum d`` of one arm (``m.sx`` etc. hold the denominator) and the
    delta-method variance of that ratio, customers as units."""
    n = m.n
    mu_y, mu_d = m.sy / n, m.sx / n
    if mu_d == 0:
        raise ValueError("the ratio's denominator is zero in an arm")
    var_y = (m.syy - n * mu_y**2) / (n - 1)
    var_d = (m.sxx - n * mu_d**2) / (n - 1)
    cov = (m.sxy - n * mu_y * mu_d) / (n - 1)
    r = mu_y / mu_d
    var_r = (var_y / mu_d**2 - 2 * mu_y * cov / mu_d**3 + mu_y**2 * var_d / mu_d**4) / n
    return float(r), float(max(var_r, 0.0))


def ratio(t: Moments, c: Moments, alpha: float = 0.05) -> Effect:
    """Difference of ratio metrics (e.g. revenue per order) by the delta method; the
    covariate slots of the moments hold the denominator."""
    rt, vt = ratio_mean_var(t)
    rc, vc = ratio_mean_var(c)
    se = np.sqrt(vt + vc)
    if se == 0:
        raise ValueError("the ratio metric has zero variance in both arms")
    z = stats.norm.isf(alpha / 2)
    diff = rt - rc
    p = 2 * stats.norm.sf(abs(diff / se))
    rel, rel_ci = _rel(rt, vt, rc, vc, alpha)
    return Effect(rc, rt, diff, float(se), (diff - z * se, diff + z * se), rel, rel_ci,
                  float(p), "delta method")


def cuped_theta(*arms: Moments) -> float:
    """theta = cov(Y, X) / var(X) on the pooled sample of all arms."""
    pooled = arms[0]
    for a in arms[1:]:
        pooled = pooled + a
    if pooled.var_x == 0:
        raise ValueError("the pre-period covariate has zero variance: CUPED cannot help")
    return pooled.cov_xy / pooled.var_x


@dataclass(frozen=True)
class CupedEffect:
    effect: Effect
    theta: float
    variance_reduction: float  # 1 - Var(adjusted diff) / Var(unadjusted diff)
    correlation: float  # pooled corr(Y, X)


def cuped(t: Moments, c: Moments, alpha: float = 0.05, theta: float | None = None
          ) -> CupedEffect:
    """CUPED: Y_adj = Y - theta (X - mean X over both arms), theta pooled across arms and
    treated as known; then Welch on the adjusted values. Relative lift uses the adjusted
    control mean as denominator (it differs from the unadjusted one by theta times the
    control's pre-period deviation)."""
    theta = cuped_theta(t, c) if theta is None else theta
    pooled = t + c
    xbar = pooled.mean_x

    def adjusted(m: Moments) -> Moments:
        # moments of Y - theta (X - xbar), from the raw moments
        sy = m.sy - theta * (m.sx - m.n * xbar)
        syy = (m.syy - 2 * theta * (m.sxy - xbar * m.sy)
               + theta**2 * (m.sxx - 2 * xbar * m.sx + m.n * xbar**2))
        return Moments(m.n, sy, syy)

    eff = welch(adjusted(t), adjusted(c), alpha)
    raw = welch(t, c, alpha)
    reduction = 1 - eff.se**2 / raw.se**2 if raw.se > 0 else 0.0
    rho = pooled.cov_xy / np.sqrt(pooled.var * pooled.var_x) if pooled.var > 0 else 0.0
    eff = Effect(eff.control_mean, eff.treatment_mean, eff.abs_diff, eff.se, eff.abs_ci,
                 eff.rel_lift, eff.rel_ci, eff.p_value, "CUPED + Welch", eff.df)
    return CupedEffect(eff, float(theta), float(reduction), float(rho))


def srm_test(observed: dict[str, float], planned: dict[str, float]) -> tuple[float, float]:
    """Chi-square goodness of fit of assignment counts to the planned split: (chi2, p).

    A variant planned at weight 0 (or not planned at all, entered as 0) is a mismatch by
    definition: (inf, 0.0)."""
    names = list(planned)
    obs = np.array([observed.get(k, 0) for k in names], dtype=float)
    w = np.array([planned[k] for k in names], dtype=float)
    if (w <= 0).any():
        return float("inf"), 0.0
    exp = obs.sum() * w / w.sum()
    chi2, p = stats.chisquare(obs, exp)
    return float(chi2), float(p)


def msprt(diff: np.ndarray, var: np.ndarray, tau2: float, alpha: float = 0.05
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal-mixture mSPRT for a difference in means at a sequence of looks.

    With the estimate ``diff`` of variance ``var`` at each look and a N(0, tau2) mixing
    distribution over the effect, the likelihood ratio is
    ``L = sqrt(var / (var + tau2)) exp(tau2 diff^2 / (2 var (var + tau2)))``. The
    always-valid p-value is ``min(1, 1 / max L so far)``; the confidence sequence is
    ``diff +- sqrt(var (var + tau2) / tau2 (log((var + tau2) / var) + 2 log(1/alpha)))``
    (Johari et al., 2017; Howard et al., 2021). Returns (p-values, lower, upper).
    """
    diff = np.asarray(diff, float)
    var = np.asarray(var, float)
    log_l = 0.5 * np.log(var / (var + tau2)) + tau2 * diff**2 / (2 * var * (var + tau2))
    p = np.minimum(1.0, np.exp(-np.maximum.accumulate(log_l)))
    half = np.sqrt(var * (var + tau2) / tau2 * (np.log((var + tau2) / var)
                                               + 2 * np.log(1 / alpha)))
    return p, diff - half, diff + half


def bayes_proportions(t: Moments, c: Moments, draws: int = 200_000, seed: int = 0,
                      prior: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float, float]:
    """Beta-binomial view with a Beta(a, b) prior on each arm: P(treatment beats control),
    expected loss of shipping treatment E[max(p_c - p_t, 0)] and of keeping control."""
    rng = np.random.default_rng(seed)
    a, b = prior
    pt = rng.beta(a + t.sy, b + t.n - t.sy, draws)
    pc = rng.beta(a + c.sy, b + c.n - c.sy, draws)
    return (float((pt > pc).mean()), float(np.maximum(pc - pt, 0).mean()),
            float(np.maximum(pt - pc, 0).mean()))


def bayes_normal(diff: float, se: float) -> tuple[float, float, float]:
    """Flat prior, normal likelihood: Delta ~ N(diff, se^2). Returns P(Delta > 0), expected
    loss of shipping E[max(-Delta, 0)] and of not shipping E[max(Delta, 0)]."""
    z = diff / se
    p = stats.norm.sf(-z)
    loss_ship = se * stats.norm.pdf(z) - diff * stats.norm.sf(z)
    loss_keep = se * stats.norm.pdf(z) + diff * stats.norm.cdf(z)
    return float(p), float(loss_ship), float(loss_keep)


def mde(var_t: float, var_c: float, n_t: float, n_c: float, alpha: float = 0.05,
        power: float = 0.8) -> float:
    """Minimum detectable absolute effect of a two-sided test at ``alpha`` with ``power``."""
    return float((stats.norm.isf(alpha / 2) + stats.norm.isf(1 - power))
                 * np.sqrt(var_t / n_t + var_c / n_c))


def sample_size_per_arm(var: float, effect: float, alpha: float = 0.05, power: float = 0.8
                        ) -> float:
    """Customers per arm (equal split, equal variances) to detect ``effect``."""
    z = stats.norm.isf(alpha / 2) + stats.norm.isf(1 - power)
    return float(2 * var * z**2 / effect**2)


def cochran_q(effects: np.ndarray, ses: np.ndarray) -> tuple[float, float, int]:
    """Heterogeneity of subgroup effects: Cochran's Q, its chi-square p-value and df."""
    effects = np.asarray(effects, float)
    w = 1 / np.asarray(ses, float) ** 2
    pooled = (w * effects).sum() / w.sum()
    q = float((w * (effects - pooled) ** 2).sum())
    df = len(effects) - 1
    return q, float(stats.chi2.sf(q, df)) if df > 0 else float("nan"), df


def adjust_pvalues(p: np.ndarray | Sequence[float], method: str = "holm") -> np.ndarray:
    """Multiple-comparison adjusted p-values: ``"holm"`` (family-wise error, step-down) or
    ``"bh"`` (Benjamini-Hochberg false discovery rate). NaN entries are left out of the
    family and stay NaN.

    Same values as ``statsmodels.stats.multitest.multipletests`` (``"holm"`` /
    ``"fdr_bh"``), which this replaces because its Holm branch runs a full garbage
    collection on every call (hundreds of milliseconds in a large session).
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    vals = p[ok]
    order = np.argsort(vals, kind="mergesort")
    ranked = vals[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "bh":
        adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * ranked[::-1])[::-1]
    else:
        raise ParameterError(f"method must be 'holm' or 'bh', not {method!r}")
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def eb_shrink(effects: np.ndarray | Sequence[float], ses: np.ndarray | Sequence[float]
              ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Empirical-Bayes (normal-normal) shrinkage of subgroup effects towards their mean.

    Model: ``y_i ~ N(theta_i, s_i^2)``, ``theta_i ~ N(mu, tau^2)``. ``tau^2`` is the
    method-of-moments (DerSimonian-Laird) estimate
    ``max(0, (Q - (k - 1)) / (sum w - sum w^2 / sum w))`` with ``w = 1 / s^2`` and Cochran's
    ``Q``; ``mu`` is the random-effects mean ``sum w* y / sum w*``, ``w* = 1 / (s^2 + tau^2)``.
    Each effect is pulled towards ``mu`` by ``B_i = s_i^2 / (s_i^2 + tau^2)``:
    ``theta_i = mu + (1 - B_i) (y_i - mu)``, with standard error
    ``sqrt((1 - B_i) s_i^2 + B_i^2 / sum w*)`` (the posterior variance given ``tau^2`` plus
    the uncertainty of ``mu``; the uncertainty of ``tau^2`` itself is ignored). With
    ``tau^2 = 0`` every group gets the pooled estimate.

    Parameters
    ----------
    effects, ses : array-like
        Subgroup estimates and their standard errors (same units, e.g. a difference in
        conversion rate); standard errors must be positive.

    Returns
    -------
    (shrunk estimates, their standard errors, tau^2, mu)
    """
    y = np.asarray(effects, float)
    s2 = np.asarray(ses, float) ** 2
    if len(y) == 0:
        return np.array([]), np.array([]), float("nan"), float("nan")
    if np.any(~(s2 > 0)):
        raise ValueError("standard errors must be positive")
    w = 1 / s2
    fixed = (w * y).sum() / w.sum()
    q = float((w * (y - fixed) ** 2).sum())
    denom = w.sum() - (w**2).sum() / w.sum()
    tau2 = max(0.0, (q - (len(y) - 1)) / denom) if denom > 0 else 0.0
    ws = 1 / (s2 + tau2)
    mu = float((ws * y).sum() / ws.sum())
    b = s2 / (s2 + tau2)
    shrunk = mu + (1 - b) * (y - mu)
    se = np.sqrt((1 - b) * s2 + b**2 / ws.sum())
    return shrunk, se, float(tau2), mu


GUARDRAIL_STATUSES = ("pass", "inconclusive", "fail")


def guardrail_status(ci_low: float, ci_high: float, bad: str, margin: float) -> str:
    """Status of a guardrail from the interval of its difference (treatment - control)
    against a non-inferiority margin.

    ``harm`` is the difference oriented so that positive is bad (``bad="increase"``: the
    difference itself; ``"decrease"``: its negative). With the harm interval ``[L, U]`` and
    the margin ``M >= 0`` (absolute, in the metric's units):

    - ``"fail"``: ``L > 0``, the whole interval lies on the harmful side of zero
      (significant harm at the interval's level, whatever its size: harm smaller than the
      margin still fails, because it is a demonstrated harm);
    - ``"pass"``: ``U < M``, harm of ``M`` or more is excluded ("no harm beyond M
      detected"; a two-sided ``1 - alpha`` interval makes this a one-sided
      non-inferiority test at ``alpha / 2``);
    - ``"inconclusive"``: otherwise; the interval allows harm of ``M`` or more but does not
      show harm. Also when an interval end is NaN, and (unless it fails) when the margin
      is NaN (a relative margin without a positive control level).
    """
    if bad not in ("increase", "decrease"):
        raise ParameterError(f"bad direction must be 'increase' or 'decrease', not {bad!r}")
    lo, hi = (ci_low, ci_high) if bad == "increase" else (-ci_high, -ci_low)
    if np.isnan(lo) or np.isnan(hi):
        return "inconclusive"
    if lo > 0:
        return "fail"
    if not np.isnan(margin) and hi < margin:
        return "pass"
    return "inconclusive"
