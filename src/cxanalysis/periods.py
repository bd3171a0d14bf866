"""Date windows derived from the source's own time span, so that no notebook assumes the
demo world's dates.

Every date-window parameter of the notebooks (``calibration`` and ``holdout`` in 01,
``moments_calibration`` and ``moments_outcome`` in 02, ``persona_calibration`` in 03) defaults
to ``None``, meaning "derived from the data" by one stated rule, :data:`RULE`:

- the **span** is the first to the last UTC day with activity (``ts`` of ``events`` and
  ``orders``, whichever the source holds);
- with ``n`` days in the span, the **calibration** window is its first ``floor(0.75 n)``
  days and the **holdout** (outcome) window is the rest, the last quarter.

On the demo world (activity on every day of 2025, ``n = 365``) this gives calibration
2025-01-01 to 2025-09-30 and holdout 2025-10-01 to 2025-12-31. A window given explicitly is
used as given (quoted or unquoted ISO dates, ``datetime.date`` or ``pandas.Timestamp``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cxanalysis.data import CXDataError, Source
from cxanalysis.errors import ParameterError

#: The rule by which windows left as ``None`` are derived (printed by the notebooks).
RULE = ("windows not given are derived from the data's span (first to last day with events "
        "or orders, UTC): calibration = its first 75% of days (rounded down), holdout = the "
        "remaining last quarter")

CALIBRATION_SHARE = 0.75
ACTIVITY_TABLES = ("events", "orders")


def as_day(value: Any, what: str = "date") -> str:
    """An ISO day ``YYYY-MM-DD`` from a string, ``date``, ``datetime`` or ``Timestamp``.

    Raises
    ------
    ParameterError
        When ``value`` is not a date (naming ``what``): dates here are parameters.
    """
    if isinstance(value, (dt.date, pd.Timestamp)):
        return pd.Timestamp(value).strftime("%Y-%m-%d")
    if isinstance(value, str):
        try:
            return pd.Timestamp(value.strip()).strftime("%Y-%m-%d")
        except (ValueError, TypeError) as exc:
            raise ParameterError(f"{what}: {value!r} is not an ISO date (YYYY-MM-DD)") \
                from exc
    raise ParameterError(f"{what}: expected an ISO date (YYYY-MM-DD), got "
                      f"{type(value).__name__} {value!r}")


def as_window(value: Any, what: str = "window") -> tuple[str, str] | None:
    """``None`` or a pair of dates as a pair of ISO days ``(start, end)`` (inclusive)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ParameterError(f"{what}: expected two ISO dates [start, end], got {value!r}")
    start, end = as_day(value[0], what), as_day(value[1], what)
    if end < start:
        raise ParameterError(f"{what}: end {end} is before start {start}")
    return start, end


def data_span(source: Source, tables: Sequence[str] = ACTIVITY_TABLES) -> tuple[str, str]:
    """First and last UTC day with a ``ts`` in any of ``tables`` the source holds.

    Raises
    ------
    CXDataError
        When the source holds none of ``tables``, or they hold no timestamp.
    """
    present = [t for t in tables if source.has(t) and "ts" in source.table(t).columns]
    if not present:
        raise CXDataError(f"cannot derive date windows: the source has none of the tables "
                          f"{', '.join(tables)} (found: {', '.join(source.names) or 'none'})")
    firsts, lasts = [], []
    for name in present:
        t = source.table(name)
        got = t.aggregate(first=t.ts.min(), last=t.ts.max()).execute().iloc[0]
        if pd.notna(got["first"]):
            firsts.append(pd.Timestamp(got["first"]).tz_convert("UTC"))
            lasts.append(pd.Timestamp(got["last"]).tz_convert("UTC"))
    if not firsts:
        raise CXDataError(f"cannot derive date windows: table(s) {', '.join(present)} hold "
                          "no timestamp")
    return min(firsts).strftime("%Y-%m-%d"), max(lasts).strftime("%Y-%m-%d")


def split_span(first: str, last: str, share: float = CALIBRATION_SHARE
               ) -> tuple[tuple[str, str], tuple[str, str]]:
    """Calibration and holdout windows of the span ``first`` to ``last`` (ISO days,
    inclusive): the first ``floor(share * n)`` of the ``n`` days, then the rest.

    Raises
    ------
    CXDataError
        When the span has fewer than 2 days (nothing to split).
    """
    t0, t1 = pd.Timestamp(as_day(first)), pd.Timestamp(as_day(last))
    n = (t1 - t0).days + 1
    if n < 2:
        raise CXDataError(f"cannot derive date windows: the data spans {max(n, 0)} day(s) "
                          f"({first} to {last}); give the windows explicitly")
    cut = max(1, min(n - 1, int(share * n)))
    split = t0 + pd.Timedelta(days=cut)
    day = pd.Timedelta(days=1)
    return ((t0.strftime("%Y-%m-%d"), (split - day).strftime("%Y-%m-%d")),
            (split.strftime("%Y-%m-%d"), t1.strftime("%Y-%m-%d")))


@dataclass(frozen=True)
class Windows:
    """The windows a report actually used, and whether each was derived or given."""

    calibration: tuple[str, str]
    holdout: tuple[str, str]
    span: tuple[str, str] | None
    derived: tuple[str, ...]  # names of the windows derived by :data:`RULE`

    def as_dict(self, calibration: str = "calibration", holdout: str = "holdout"
                ) -> dict[str, list[str]]:
        """``{calibration: [start, end], holdout: [start, end]}`` under the given names (for
        ``results.json``)."""
        return {calibration: list(self.calibration), holdout: list(self.holdout)}

    def summary(self, calibration: str = "calibration", holdout: str = "holdout") -> str:
        def one(name: str, label: str, w: tuple[str, str]) -> str:
            how = "derived" if name in self.derived else "given"
            return f"{label} {w[0]} to {w[1]} ({how})"

        text = "Windows used: " + "; ".join([one("calibration", calibration, self.calibration),
                                             one("holdout", holdout, self.holdout)])
        if self.derived:
            text += f". Data span {self.span[0]} to {self.span[1]}; {RULE}."
        return text


def windows(source: Source, calibration: Any = None, holdout: Any = None) -> Windows:
    """The calibration and holdout windows: each as given, or derived by :data:`RULE` when
    ``None``.

    A derived window never overlaps a given one: with only ``calibration`` given, the holdout
    is the derived holdout when it starts after the calibration, else the days from the day
    after the calibration to the end of the span; with only ``holdout`` given, the
    calibration is the span's days before the holdout.
    """
    cal, hold = as_window(calibration, "calibration"), as_window(holdout, "holdout")
    if cal is not None and hold is not None:
        return Windows(cal, hold, None, ())
    span = data_span(source)
    d_cal, d_hold = split_span(*span)
    derived: list[str] = []
    if cal is None and hold is None:
        return Windows(d_cal, d_hold, span, ("calibration", "holdout"))
    if hold is None:
        derived.append("holdout")
        if d_hold[0] > cal[1]:
            hold = d_hold
        else:
            start = (pd.Timestamp(cal[1]) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
            if start > span[1]:
                raise CXDataError(f"calibration {cal[0]} to {cal[1]} reaches the end of the "
                                  f"data ({span[1]}): no days left for a holdout window; "
                                  "give `holdout` explicitly")
            hold = (start, span[1])
    else:
        derived.append("calibration")
        end = (pd.Timestamp(hold[0]) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")
        if end < span[0]:
            raise CXDataError(f"holdout {hold[0]} to {hold[1]} starts before the data "
                              f"({span[0]}): no days left for a calibration window; give "
                              "`calibration` explicitly")
        cal = (span[0], end)
    return Windows(cal, hold, span, tuple(derived))


def calibration_window(source: Source, calibration: Any = None) -> tuple[str, str]:
    """The calibration window alone: as given, or derived by :data:`RULE` when ``None``."""
    given = as_window(calibration, "calibration")
    return given if given is not None else split_span(*data_span(source))[0]
