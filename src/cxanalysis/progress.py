"""Progress bars (tqdm) for long steps, on stderr, and off wherever output must not change.

Long steps (validating a large source, bootstrap loops, generating a world, benchmarks) show
a tqdm bar on **stderr** in the terminal and in an interactive notebook. Bars are off:

- when ``CX_PROGRESS`` is ``0``/``false``/``no``/``off`` (``cxanalysis report``, ``cxanalysis
  pin``, ``make test`` and the test suite set it, so that reports, pinned outputs and nbval
  never see a bar);
- under pytest (``PYTEST_CURRENT_TEST`` is set, also in a kernel nbval starts);
- when the caller passes ``enable=False``.

Example
-------
>>> from cxanalysis.progress import bar
>>> total = 0
>>> for i in bar(range(3), desc="demo", enable=False):
...     total += i
>>> total
3
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

#: Environment variable switching every progress bar off (``0``, ``false``, ``no``, ``off``).
ENV = "CX_PROGRESS"
_OFF = ("0", "false", "no", "off")

__all__ = ["ENV", "bar", "enabled"]


def enabled(enable: bool | None = None) -> bool:
    """Whether a progress bar should be shown.

    Parameters
    ----------
    enable : bool, optional
        The caller's choice; None follows the environment (on, unless ``CX_PROGRESS`` says
        off or the code runs under pytest). An explicit True still yields to
        ``CX_PROGRESS=0``: reproducible runs must stay free of bars.
    """
    if os.environ.get(ENV, "").strip().lower() in _OFF:
        return False
    if enable is not None:
        return bool(enable)
    return "PYTEST_CURRENT_TEST" not in os.environ


def bar(iterable: Iterable | None = None, *, total: float | None = None,
        desc: str | None = None, unit: str = "it", enable: bool | None = None,
        **kwargs: Any):
    """A tqdm bar on stderr (a silent pass-through when :func:`enabled` says no).

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over; omit it and call ``update(n)`` on the bar instead.
    total : float, optional
        Expected number of ``unit`` (default: ``len(iterable)`` when it has one).
    desc, unit : str
        Label and unit shown.
    enable : bool, optional
        See :func:`enabled`.
    **kwargs
        Passed to :class:`tqdm.tqdm`.

    Returns
    -------
    tqdm.tqdm
        Usable as an iterator, a context manager, or with ``update``.
    """
    from tqdm import tqdm

    kwargs.setdefault("leave", False)  # a finished step leaves no line behind
    kwargs.setdefault("delay", 2.0)  # seconds: a short step never shows a bar
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                disable=not enabled(enable), **kwargs)
