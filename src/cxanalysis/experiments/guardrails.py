"""Guardrails: the bad direction, the non-inferiority margin and the status of each."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cxanalysis import stats as st
from cxanalysis.errors import ParameterError

#: Default non-inferiority margin of a guardrail: harm of 5% of the control level.
GUARDRAIL_MARGIN = 0.05


@dataclass(frozen=True)
class Guardrail:
    """A guardrail: the metric, the direction that is bad and the non-inferiority margin
    (relative to the control level, or absolute in the metric's units)."""

    metric: str
    bad: str
    margin: float | None = GUARDRAIL_MARGIN
    margin_abs: float | None = None

    def margin_for(self, control_level: float) -> float:
        """The margin in the metric's units (NaN when a relative margin has no positive
        control level to be relative to)."""
        if self.margin_abs is not None:
            return float(self.margin_abs)
        if not st.relative_defined(control_level):
            return float("nan")
        return float(self.margin) * float(control_level)

    def margin_text(self) -> str:
        return (f"{self.margin_abs:g} (absolute)" if self.margin_abs is not None
                else f"{self.margin:.1%} of the control level")


def guardrail_specs(guardrails: Mapping[str, Any], default_margin: float = GUARDRAIL_MARGIN
                    ) -> dict[str, Guardrail]:
    """Parse the ``guardrails`` parameter: ``{metric: "increase" | "decrease"}`` (the bad
    direction, margin ``default_margin`` of the control level) or ``{metric: {"direction":
    ..., "margin": relative}}`` / ``{"direction": ..., "margin_abs": absolute}``.

    Raises
    ------
    ParameterError
        An unknown direction or key, both margins, or a negative margin.
    """
    out = {}
    for m, v in guardrails.items():
        spec = {"direction": v} if isinstance(v, str) else dict(v)
        d = spec.pop("direction", None)
        if d not in ("increase", "decrease"):
            raise ParameterError(f"guardrail {m!r}: the bad direction must be 'increase' or "
                                 f"'decrease', not {d!r}")
        rel, ab = spec.pop("margin", None), spec.pop("margin_abs", None)
        if spec:
            raise ParameterError(f"guardrail {m!r}: unknown keys {', '.join(map(str, spec))} "
                                 "(use direction, margin or margin_abs)")
        if rel is not None and ab is not None:
            raise ParameterError(f"guardrail {m!r}: give margin (relative) or margin_abs, "
                                 "not both")
        for name, x in (("margin", rel), ("margin_abs", ab), ("guardrail_margin",
                                                             default_margin)):
            if x is not None and not (isinstance(x, int | float) and x >= 0):
                raise ParameterError(f"guardrail {m!r}: {name} must be a number >= 0, not "
                                     f"{x!r}")
        out[m] = Guardrail(m, d, None if ab is not None else
                           float(default_margin if rel is None else rel),
                           None if ab is None else float(ab))
    return out


GUARD_COLS = ["metric", "variant", "bad_direction", "abs_diff", "abs_ci_low", "abs_ci_high",
              "p_value", "margin", "margin_abs", "worst_harm", "status", "statement",
              "customers_per_arm_needed"]


def guardrail_rows(effects: pd.DataFrame, specs: Mapping[str, Guardrail], alpha: float,
                   power: float = 0.8) -> pd.DataFrame:
    """Status of every guardrail x treatment (:func:`cxanalysis.stats.guardrail_status`)
    from the reported row's ``1 - alpha`` interval, with the statement in words.

    ``customers_per_arm_needed``: customers per arm for the interval to exclude harm of the
    margin ``M`` with probability ``power`` when there is no true harm. The standard error
    scales as ``1 / sqrt(n)``, so ``n = n_now * ((z_{1-alpha/2} + z_power) * se / M)^2``
    with ``n_now`` the smaller arm."""
    zz = st.stats.norm.isf(alpha / 2) + st.stats.norm.isf(1 - power)
    rows = []
    for m, g in specs.items():
        for _i, r in effects[effects.reported & (effects.base_metric == m)].iterrows():
            level = r.control_mean if "control_mean" in r else np.nan
            margin = g.margin_for(level)
            sign = 1 if g.bad == "increase" else -1
            # the worst harm the interval still allows, in units and relative to control
            worst = max(sign * r.abs_ci_low, sign * r.abs_ci_high)
            rel = (f" ({worst / level:+.1%} of the control level)"
                   if st.relative_defined(level) and np.isfinite(worst) else "")
            if pd.isna(r.p_value):
                status = "inconclusive"
                text = f"not testable ({r.not_testable}): no harm could be ruled out"
            elif not np.isfinite(margin):
                status = st.guardrail_status(r.abs_ci_low, r.abs_ci_high, g.bad, np.nan)
                text = (f"significant harm: the whole {1 - alpha:.0%} interval is on the bad "
                        f"side ({g.bad})" if status == "fail" else
                        "a relative margin needs a positive control level (give margin_abs): "
                        f"the interval allows harm up to {worst:+.4g}")
            else:
                status = st.guardrail_status(r.abs_ci_low, r.abs_ci_high, g.bad, margin)
                text = {"pass": f"no harm beyond {margin:.4g} ({g.margin_text()}) detected",
                        "fail": f"significant harm: the whole {1 - alpha:.0%} interval is on "
                                f"the bad side ({g.bad})",
                        "inconclusive": f"the interval still allows harm up to {worst:+.4g}"
                                        f"{rel}, beyond the margin {margin:.4g} "
                                        f"({g.margin_text()})"}[status]
            n_now = min(r.n_control, r.n_treatment)
            need = (math.ceil(n_now * (zz * r.se / margin) ** 2)
                    if np.isfinite(margin) and margin > 0 and np.isfinite(r.se) else None)
            rows.append({"metric": m, "variant": r.variant, "bad_direction": g.bad,
                         "abs_diff": r.abs_diff, "abs_ci_low": r.abs_ci_low,
                         "abs_ci_high": r.abs_ci_high, "p_value": r.p_value,
                         "margin": g.margin if g.margin_abs is None else np.nan,
                         "margin_abs": margin, "worst_harm": worst, "status": status,
                         "statement": text, "customers_per_arm_needed": need})
    return pd.DataFrame(rows, columns=GUARD_COLS)
