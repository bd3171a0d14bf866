"""Publishing a notebook's headline numbers, and the conventions results objects follow.

Every analysis module returns small dataclasses with ``.table()`` (a pandas DataFrame) and
``.plot(ax=None)`` (a matplotlib Axes). A notebook's last cell calls :func:`publish` with its
headline figures; the report runner (:mod:`cxanalysis.report`) finds them in the executed
notebook and writes ``NAME.results.json``. Outside the runner, :func:`publish` simply shows
the figures.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Environment variable through which the report runner tells a notebook its output folder.
OUT_ENV = "CXANALYSIS_OUT"

#: MIME type under which :func:`publish` emits the results in a notebook output.
RESULTS_MIME = "application/vnd.cxanalysis.results+json"


def output_dir(default: str | os.PathLike[str] = "../reports") -> Path:
    """The folder a notebook writes its side files to (persona assignments, learning log).

    Under ``cxanalysis report`` this is the run's ``--out`` folder (the runner sets
    ``CXANALYSIS_OUT`` in the kernel's environment); interactively it is ``default``,
    relative to the notebook's working directory.
    """
    return Path(os.environ.get(OUT_ENV) or default)


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON types: numpy scalars to Python, NaN/inf to None,
    timestamps to ISO strings, DataFrames to lists of records, tuples/sets to lists."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, (dt.datetime, dt.date, pd.Timestamp)):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, pd.DataFrame):
        return [to_jsonable(r) for r in value.to_dict(orient="records")]
    if isinstance(value, pd.Series):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    raise TypeError(f"cannot convert {type(value).__name__} to JSON: {value!r}")


def dumps(value: Any) -> str:
    """Strict JSON (no NaN) of :func:`to_jsonable` ``(value)``, keys in insertion order."""
    return json.dumps(to_jsonable(value), indent=2, allow_nan=False)


def publish(results: Mapping[str, Any]) -> dict[str, Any]:
    """Emit a notebook's headline figures for the report runner and show them.

    Parameters
    ----------
    results : mapping
        Headline figures; converted with :func:`to_jsonable` (so NaN becomes null).

    Returns
    -------
    dict
        The JSON-safe results.
    """
    clean = to_jsonable(dict(results))
    try:
        from IPython.display import display

        # The runner reads RESULTS_MIME; a reader sees a short formatted summary, never the
        # raw JSON (which lives in NAME.results.json next to the report).
        display({RESULTS_MIME: clean, **published_summary(clean)}, raw=True)
    except ImportError:  # pragma: no cover - outside IPython
        print(dumps(clean))
    return clean


def published_summary(clean: Mapping[str, Any]) -> dict[str, str]:
    """What a reader sees of :func:`publish`: ``text/html`` (the headline sentences, see
    :func:`cxanalysis.formatting.headline`, and where the figures are saved) and a one-line
    ``text/plain``."""
    import html

    from cxanalysis.formatting import headline

    lines = headline(clean)
    where = ("The headline figures are saved as JSON in this report's "
             "<code>NAME.results.json</code>, next to it.")
    items = "".join(f"<li>{html.escape(t)}</li>" for t in lines)
    body = (f"<p><strong>Headline figures</strong></p><ul>{items}</ul>" if lines else "")
    return {"text/html": f"<div class='cx-published'>{body}<p>{where}</p></div>",
            "text/plain": f"Published {len(clean)} headline figures to NAME.results.json."}


def find_published(nb: Any) -> dict[str, Any] | None:
    """The results a notebook published (the last :func:`publish` call), or None."""
    found = None
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = out.get("data", {})
            if RESULTS_MIME in data:
                found = data[RESULTS_MIME]
    return found
