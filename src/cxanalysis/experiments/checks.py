"""Sanity checks of an experiment: planned split and SRM, pre-period balance, the checks
table, whether CUPED and the primary metric can be used."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxanalysis import stats as st
from cxanalysis.data import CXDataError, Source
from cxanalysis.experiments.metrics import Metric

#: A sample ratio mismatch is flagged below this p-value (and blocks every decision).
SRM_ALPHA = 0.001


def planned_split(source: Source, experiment_id: str, variants: list[str]
                  ) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """Planned split, experiment row (name, hypothesis, control, start, end) and notes."""
    notes: list[str] = []
    info: dict[str, Any] = {}
    if source.has("experiments"):
        ex = source.table("experiments")
        row = ex.filter(ex.experiment_id == experiment_id).limit(1).execute()
        if len(row):
            info = {k: (None if pd.isna(v) else v) for k, v in row.iloc[0].items()}
    split: dict[str, float] = {}
    text = info.get("planned_split")
    if text:
        try:
            for part in str(text).split(","):
                k, w = part.split(":")
                split[k.strip()] = float(w)
        except ValueError as err:
            raise CXDataError(f"experiments.planned_split of {experiment_id!r} is {text!r}; "
                              "expected 'variant:weight,...'") from err
    if not split:
        split = {v: 1.0 for v in variants}
        notes.append("No planned split recorded: the SRM check assumes an equal split.")
    return split, info, notes


def balance(arm: Mapping[str, Any], control: str, treatments: list[str],
            specs: Mapping[str, Metric]) -> pd.DataFrame:
    """A/A test on the pre-period covariates (Welch), Holm-corrected across them."""
    rows = []
    for s in specs.values():
        if not s.has_covariate:
            continue
        c = s.moments(arm[control])
        for v in treatments:
            t = s.moments(arm[v])
            tx, cx = st.Moments(t.n, t.sx, t.sxx), st.Moments(c.n, c.sx, c.sxx)
            try:
                e = st.welch(tx, cx)
            except ValueError:
                continue
            rows.append({"covariate": s.x, "variant": v, "control_mean": e.control_mean,
                         "treatment_mean": e.treatment_mean, "abs_diff": e.abs_diff,
                         "p_value": e.p_value})
    out = pd.DataFrame(rows, columns=["covariate", "variant", "control_mean", "treatment_mean",
                                      "abs_diff", "p_value"])
    out["p_holm"] = st.adjust_pvalues(out.p_value, "holm")
    return out


def checks_table(raw: Mapping[str, int], n_multi: int, outside: int, open_n: int,
                 counts: dict[str, int], split: dict[str, float], chi2: float, p: float,
                 bal: pd.DataFrame, start: Any, end: Any, window_days: float,
                 data_end: pd.Timestamp) -> pd.DataFrame:
    """The checks of the assignment and the data, one row each with a status."""
    total_w = sum(split.values())
    n = sum(counts.values())
    obs = ", ".join(f"{v} {counts.get(v, 0):,} ({counts.get(v, 0) / n:.1%} vs planned "
                    f"{w / total_w:.1%})" for v, w in split.items())
    min_bal = bal.p_holm.min() if len(bal) else np.nan
    rows = [
        ("sample ratio mismatch", f"chi2 = {chi2:.2f}, p = {p:.2g}",
         "FAIL" if p < SRM_ALPHA else "ok", obs + f"; flagged when p < {SRM_ALPHA}"),
        ("customers in more than one variant", f"{n_multi:,}",
         "warn" if n_multi else "ok", "excluded from the analysis"),
        ("assignments without a time", f"{raw['no_time']:,}",
         "warn" if raw["no_time"] else "ok", "excluded (a customer with another, timed "
                                                  "assignment keeps it)"),
        ("assignments outside the experiment dates", f"{outside:,}",
         "warn" if outside else "ok",
         f"{start:%Y-%m-%d} to {end:%Y-%m-%d}" if start is not None and end is not None
         else "no dates recorded"),
        ("analysis window still open", f"{open_n:,}", "info" if open_n else "ok",
         f"customers assigned less than {window_days:g} days before the end of the data "
         f"({data_end:%Y-%m-%d}) are excluded"),
        ("pre-period balance (A/A)", "n/a" if pd.isna(min_bal) else
         f"smallest Holm p = {min_bal:.2g}",
         "warn" if (not pd.isna(min_bal) and min_bal < 0.01) else "ok",
         "Welch test of each pre-period covariate between arms"),
    ]
    return pd.DataFrame(rows, columns=["check", "value", "status", "detail"])


def no_cuped_reason(spec: Metric, arms: Sequence[st.Moments], pre_days: float) -> str:
    """Why the pre-period covariate of ``spec`` cannot serve CUPED (it has no variance)."""
    if pre_days <= 0:
        return f"pre_days = {pre_days:g} leaves no pre-period"
    pooled = arms[0]
    for a in arms[1:]:
        pooled = pooled + a
    if pooled.sx == 0 and pooled.sxx == 0:
        return (f"no pre-period data: {spec.x} is 0 for every customer in the {pre_days:g} "
                "days before assignment")
    return (f"{spec.x} is {pooled.mean_x:.4g} for every customer in the {pre_days:g} days "
            "before assignment")


def cuped_notes(skipped: Mapping[str, str], specs: Mapping[str, Metric],
                pre_days: float) -> list[str]:
    """The CUPED fallbacks in words, one note per kind of reason, naming the metrics."""
    groups: dict[str, list[str]] = {}
    for m, why in skipped.items():
        # "no pre-period data: <covariate> is 0 ..." of several metrics makes one note
        key = "no pre-period data" if why.startswith("no pre-period data") else why
        groups.setdefault(key, []).append(m)
    out = []
    for why, ms in groups.items():
        detail = skipped[ms[0]]
        if why == "no pre-period data" and len(ms) > 1:
            detail = (f"no pre-period data: {', '.join(str(specs[m].x) for m in ms)} are 0 "
                      f"for every customer in the {pre_days:g} days before assignment")
        many = len(ms) > 1
        out.append(f"CUPED not applied to {', '.join(ms)}: {detail}; the unadjusted "
                   f"estimate{'s are' if many else ' is'} reported.")
    return out


def not_testable(spec: Metric, arm: Mapping[str, Any], control: str, treatments: list[str],
                 prim: pd.DataFrame, window_days: float, mde: float) -> str | None:
    """Why the primary metric cannot be tested (a sentence without figures that could be
    NaN), or None when it can.

    Not testable: the metric has no variance in any arm (nothing to compare); the control
    level is 0 or undefined (the relative lift, the ``mde`` target and the monitoring scale
    are all relative to it, and a control arm without any outcome usually means the outcome
    is not recorded for it); or no treatment's comparison could be computed."""
    name = spec.name
    ms = [spec.moments(arm[v]) for v in [control, *treatments]]
    c = ms[0]
    if spec.kind != "ratio" and all(m.var == 0 for m in ms):
        return (f"{name} has no variance: it is {c.mean:.4g} for every customer in every arm "
                f"over the {window_days:g}-day window, so there is nothing to compare")
    if spec.kind == "ratio" and c.sx == 0:
        return (f"no control customer has any {spec.x} in the {window_days:g}-day window, so "
                f"the control's {name} is undefined")
    if spec.level(c) == 0:
        return (f"the control's {name} is 0 (all {int(c.n):,} control customers have 0 in the "
                f"{window_days:g}-day window): the relative lift, the {mde:+.0%} target and "
                "the monitoring scale are undefined, and a control arm without any outcome "
                "usually means it is not recorded for that arm; check the data")
    if prim.p_value.isna().all():
        why = "; ".join(dict.fromkeys(str(w) for w in prim.not_testable.dropna()))
        return f"no comparison could be computed ({why or 'no closed window'})"
    return None
