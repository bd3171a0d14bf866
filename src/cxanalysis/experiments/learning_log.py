"""The learning log: an append-only CSV with one row per look at an experiment."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cxanalysis.files import atomic_write
from cxanalysis.results import dumps, output_dir

if TYPE_CHECKING:
    from cxanalysis.experiments.results import ExperimentResult

LOG_COLUMNS = ["experiment_id", "source_fingerprint", "looked_at", "name", "hypothesis",
               "decision", "variant", "primary_metric", "abs_diff", "abs_ci_low", "abs_ci_high",
               "rel_lift", "rel_ci_low", "rel_ci_high", "p_adjusted", "srm_p_value",
               "customers", "data_end", "horizon", "guardrails", "parameters", "reason"]
#: The key of a log row: one look at one experiment on one source.
LOG_KEY = ["experiment_id", "source_fingerprint", "looked_at"]


def log_learning(result: ExperimentResult, path: str | Path | None = None,
                 fingerprint: str | None = None, looked_at: Any = None) -> pd.DataFrame:
    """Append this look at the experiment to a CSV learning log (append-only).

    Every look is kept, so the log shows how often and when a test was read (peeking is
    visible) and what each look concluded. A row is keyed by experiment id, source
    fingerprint and look time (``looked_at``); only a row with the same key is replaced (the
    same look written twice), no row is ever removed. Each row records the decision, the
    primary effect, ``data_end`` (end of the data analysed), ``horizon`` (where the test
    stood against its planned horizon), ``guardrails`` (JSON: per guardrail its status,
    margin and interval) and ``parameters`` (JSON: the analysis parameters). Rows of a log
    written before these columns existed are kept with the new columns empty. Written
    atomically.

    Parameters
    ----------
    result : ExperimentResult
        The evaluated experiment.
    path : path-like, optional
        The CSV file; default ``learning_log.csv`` in :func:`cxanalysis.results.output_dir`
        (the run's ``--out`` folder under ``cxanalysis report``, else ``../reports``).
    fingerprint : str, optional
        The source's fingerprint (``Source.fingerprint``); empty when not given.
    looked_at : timestamp-like, optional
        Time of the look (UTC); default now. Pass it to make a write reproducible.

    Returns
    -------
    DataFrame
        The whole log, sorted by experiment id, fingerprint and look time.
    """
    path = Path(path) if path is not None else output_dir() / "learning_log.csv"
    fp = fingerprint or ""
    when = pd.Timestamp.now(tz="UTC") if looked_at is None else pd.Timestamp(looked_at)
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    look = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    p = result.primary(result.decision.variant) if result.decision.variant else result.primary()
    guards = getattr(result, "guardrails", pd.DataFrame())
    guard_json = {f"{g.metric}@{g.variant}": {
        "status": g.status, "bad_direction": g.bad_direction,
        "margin_abs": g.margin_abs, "abs_ci": [g.abs_ci_low, g.abs_ci_high]}
        for g in guards.itertuples()} if len(guards) else {}
    horizon = getattr(result, "horizon", {}) or {}
    row = {"experiment_id": result.experiment_id, "source_fingerprint": fp,
           "looked_at": look, "name": result.name, "hypothesis": result.hypothesis,
           "decision": result.decision.verdict,
           "variant": p.variant, "primary_metric": p.metric, "abs_diff": p.abs_diff,
           "abs_ci_low": p.abs_ci_low, "abs_ci_high": p.abs_ci_high, "rel_lift": p.rel_lift,
           "rel_ci_low": p.rel_ci_low, "rel_ci_high": p.rel_ci_high,
           "p_adjusted": p.p_adjusted, "srm_p_value": result.srm_p_value,
           "customers": sum(result.counts.values()),
           "data_end": str(result.data_end.date()), "horizon": horizon.get("text", ""),
           "guardrails": json.dumps(json.loads(dumps(guard_json)), sort_keys=True),
           "parameters": json.dumps(json.loads(dumps(getattr(result, "parameters", {}))),
                                    sort_keys=True),
           "reason": result.decision.reason}
    if path.exists():
        log = pd.read_csv(path, dtype=str, keep_default_na=False)
        # A log written before these columns existed keeps its rows, with them empty (an
        # unknown source or look time): they never share a key with a new row.
        log = log.reindex(columns=LOG_COLUMNS, fill_value="")
        same = ((log.experiment_id == result.experiment_id) & (log.source_fingerprint == fp)
                & (log.looked_at == look))
        log = log[~same]
    else:
        log = pd.DataFrame(columns=LOG_COLUMNS)
    buf = io.StringIO()
    pd.DataFrame([row], columns=LOG_COLUMNS).to_csv(buf, index=False, float_format="%.6g")
    new = pd.read_csv(io.StringIO(buf.getvalue()), dtype=str, keep_default_na=False)
    log = new if log.empty else pd.concat([log, new], ignore_index=True)
    log = log.sort_values(LOG_KEY, kind="mergesort").reset_index(drop=True)
    buf = io.StringIO()
    log.to_csv(buf, index=False)
    atomic_write(path, buf.getvalue())
    for c in _LOG_NUMERIC:  # the file holds text; the returned table holds numbers
        log[c] = pd.to_numeric(log[c].replace("", np.nan))
    return log


_LOG_NUMERIC = ["abs_diff", "abs_ci_low", "abs_ci_high", "rel_lift", "rel_ci_low",
                "rel_ci_high", "p_adjusted", "srm_p_value", "customers"]
