"""One look for every chart: :func:`use_theme` sets it, :func:`date_axis` makes date axes
readable, :func:`display_label` turns internal state names into words.

The palette is seaborn's ``colorblind`` (distinguishable with the common colour-vision
deficiencies); dates are drawn with matplotlib's ``ConciseDateFormatter`` (each label says
only what changes: "Mar", "15", "2025"), so that daily series never overlap their labels.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import matplotlib as mpl
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import matplotlib.units as munits
import numpy as np
import pandas as pd

#: The palette of every chart (seaborn's colour-blind-safe palette).
PALETTE = "colorblind"

#: How internal state names read in a chart or a table.
STATE_LABELS = {"(null)": "no conversion", "(conversion)": "conversion", "(start)": "start",
                "(unknown)": "unknown"}


def palette(n: int | None = None) -> list[tuple[float, float, float]]:
    """``n`` colours of :data:`PALETTE` (its 10 colours when ``n`` is None; repeated when
    more are asked for)."""
    import seaborn as sns

    return list(sns.color_palette(PALETTE, n_colors=n))


def use_theme(context: str = "notebook") -> None:
    """Apply the project's chart theme: seaborn ``whitegrid`` with the colour-blind palette,
    titles and labels a readable size, and concise date axes for every date plotted with
    matplotlib (``datetime``, ``date`` and ``numpy.datetime64`` values).

    Call it once at the top of a notebook; it changes matplotlib's global settings.
    """
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", palette=PALETTE,
                  rc={"figure.dpi": 100, "savefig.dpi": 100, "axes.titlesize": "large",
                      "axes.titleweight": "bold", "axes.labelsize": "medium",
                      "figure.autolayout": False, "axes.spines.top": False,
                      "axes.spines.right": False})
    converter = mdates.ConciseDateConverter()
    for kind in (np.datetime64, dt.date, dt.datetime, pd.Timestamp):
        munits.registry[kind] = converter


def date_axis(ax: plt.Axes, axis: str = "x") -> plt.Axes:
    """Readable dates on ``ax``'s ``axis`` ("x" or "y"): automatic ticks with
    ``ConciseDateFormatter`` labels, which do not overlap.

    Returns
    -------
    Axes
        ``ax``.
    """
    target = ax.xaxis if axis == "x" else ax.yaxis
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    target.set_major_locator(locator)
    target.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return ax


def display_label(value: Any) -> str:
    """A label for people: missing values read "unknown", internal states read in words
    (``"(null)"`` -> "no conversion"), everything else as its text."""
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value)
                         and pd.isna(value)):
        return "unknown"
    text = str(value)
    return STATE_LABELS.get(text, text)


def is_themed() -> bool:
    """Whether :func:`use_theme` has set the palette (the current colour cycle is it)."""
    cycle = [mpl.colors.to_hex(c["color"]) for c in mpl.rcParams["axes.prop_cycle"]]
    return cycle[:3] == [mpl.colors.to_hex(c) for c in palette(3)]
