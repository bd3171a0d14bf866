"""The two kinds of error the package raises.

- :class:`cxanalysis.data.CXDataError` — the *input data* breaks the data contract (names the
  table, the column and how many rows). Defined in :mod:`cxanalysis.data` beside the checks.
- :class:`ParameterError` — a *parameter* is wrong (an unknown mode, a window of zero days,
  a correction method that does not exist). The data may be fine; the call is not.

Both subclass ``ValueError`` so existing ``except ValueError`` code keeps working, and they are
distinct so a caller (or the report runner) can tell "fix your data" from "fix your call".
"""

from __future__ import annotations

__all__ = ["ParameterError"]


class ParameterError(ValueError):
    """A parameter value is not allowed; the message names the parameter, the value given and
    the values allowed."""
