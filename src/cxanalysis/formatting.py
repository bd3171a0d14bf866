"""How results read in a report: formatted HTML tables, the answer box, and the result protocol.

Every result object of the package follows one protocol (:class:`ResultMixin`):

- ``table()`` — a pandas DataFrame (the figures, unformatted);
- ``to_dict()`` — the JSON-safe headline;
- ``notes`` — warnings and fallbacks, as sentences;
- ``plot(ax=None)`` — a matplotlib Axes (or Figure for multi-panel plots);
- ``_repr_html_()`` — the table formatted by :func:`format_table`, so that a notebook
  displays a result object as a readable table, never as console text.

:func:`format_table` renders a DataFrame as HTML for people: thousands separators,
percentages as ``%``, intervals as "a to b", p-values as "< 0.001", significant cells marked,
suppressed cells shown as "<10" (the ``min_group_size``), no index column, column names in
words with units, and a wide table scrolls inside its own box instead of wrapping mid-word.
The kind of each column is read from its name (see :func:`column_kind`) unless given.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cxanalysis.privacy import MIN_GROUP_SIZE
from cxanalysis.results import to_jsonable

#: Column names in words (units in brackets); a name not listed is read with "_" as spaces
#: and a unit suffix (``_s``, ``_days``, ...) put in brackets.
LABELS: dict[str, str] = {
    "p_value": "p-value",
    "p_adjusted": "p-value (corrected)",
    "srm_p_value": "SRM p-value",
    "abs_diff": "difference",
    "rel_lift": "relative lift",
    "rel_ci": "relative lift interval",
    "abs_ci": "difference interval",
    "ci": "interval",
    "control_mean": "control mean",
    "treatment_mean": "treatment mean",
    "conversion_from_first": "conversion from first step",
    "conversion_from_previous": "conversion from previous step",
    "excess_lost": "customers lost (excess)",
    "overall_rate": "overall rate",
    "duration_s": "duration (seconds)",
    "first": "first (UTC)",
    "last": "last (UTC)",
    "n": "customers",
    "ci_low": "interval",
    "step_ci_low": "step conversion interval",
    "p_holm": "p-value (Holm)",
}

#: Unit suffixes of column names and how they read.
_UNITS = (("_seconds", "seconds"), ("_s", "seconds"), ("_days", "days"), ("_hours", "hours"),
          ("_minutes", "minutes"), ("_pct", "%"))

_PVALUE = re.compile(r"(^p$|^p_value|_p_value$|^p_(adjusted|holm|bonferroni|bh|fdr)|^srm_p)")
_PERCENT = re.compile(r"(rate|share|conversion(?!s)|lift|_pct|percent|fraction|"
                      r"^p_treatment_better$|^rel$|^rel_)")
_SIGNED = re.compile(r"(diff|lift|effect|^rel_|^rel$|change)")
_COUNT = re.compile(r"(customers|rows|count|^n$|^n_|orders|events|journeys|dropped|"
                    r"responses|respondents|at_risk|size)")
_INTERVAL = re.compile(r"^(?P<base>.*?)_?(ci_)?(?P<end>low|high|lo|hi|lower|upper)$")

#: How a missing value reads (not a suppressed one).
MISSING = "–"

# Selectors are specific enough (div.cx-table table td) to win over the notebook
# stylesheet's right-aligned cells in an exported report.
_STYLE = ("div.cx-table{overflow-x:auto;max-width:100%;margin:.5em 0}"
          "div.cx-table table{border-collapse:collapse;font-size:.9em;margin:0}"
          "div.cx-table table th,div.cx-table table td{padding:.25em .6em;"
          "border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
          "div.cx-table table th{white-space:nowrap;background:#f4f6f8}"
          "div.cx-table table td.num{text-align:right;white-space:nowrap}"
          "div.cx-table table td.sig{font-weight:bold;background:#fff4d6}"
          "div.cx-table table td.sup{color:#777}"
          "div.cx-table .cx-foot{font-size:.8em;color:#555;margin:.2em 0}")


def column_label(name: str, labels: Mapping[str, str] | None = None) -> str:
    """A column name in words: ``labels`` first, then :data:`LABELS`, then the name with
    "_" read as a space and a unit suffix in brackets (``window_days`` -> "window (days)").
    """
    name = str(name)
    if labels and name in labels:
        return labels[name]
    if name in LABELS:
        return LABELS[name]
    for suffix, unit in _UNITS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return f"{name[:-len(suffix)].replace('_', ' ')} ({unit})"
    return name.replace("_", " ")


def column_kind(name: str, series: pd.Series | None = None) -> str:
    """The kind of a column, read from its name and dtype: ``"pvalue"``, ``"percent"``,
    ``"count"``, ``"number"``, ``"bool"``, ``"date"`` or ``"text"``.

    A share (``rate``, ``share``, ``conversion``, ``lift``, ...) is a fraction of 1 shown
    as a percentage; a p-value column is ``p_value``, ``p_adjusted``, ``*_p_value``.
    """
    name = str(name)
    if series is not None:
        if pd.api.types.is_bool_dtype(series):
            return "bool"
        if pd.api.types.is_datetime64_any_dtype(series):
            return "date"
        if not pd.api.types.is_numeric_dtype(series):
            return "text"
    if _PVALUE.search(name):
        return "pvalue"
    if _PERCENT.search(name):
        return "percent"
    if series is not None and pd.api.types.is_integer_dtype(series):
        return "count"
    if _COUNT.search(name):
        return "count"
    return "number"


def format_number(x: float, signed: bool = False) -> str:
    """A number for people: thousands separators, and fewer decimals the larger it is
    (``1234.5`` -> "1,234"; ``12.345`` -> "12.35"; ``0.01234`` -> "0.0123")."""
    x = float(x)
    sign = "+" if signed and x > 0 else ""
    if x == 0:
        return "0"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{sign}{int(x):,}"
    a = abs(x)
    if a >= 1000:
        s = f"{x:,.0f}"
    elif a >= 0.1:
        s = f"{x:,.2f}"
    elif a >= 1e-4:
        s = f"{x:.3g}"
    else:
        s = f"{x:.2e}"
    return sign + s


def format_percent(x: float, signed: bool = False) -> str:
    """A fraction of 1 as a percentage with one decimal (``0.785`` -> "78.5%"), two when
    it is under 0.1% (``0.00042`` -> "0.04%")."""
    v = float(x) * 100
    sign = "+" if signed and v > 0 else ""
    if v == 0:
        return "0%"
    digits = 2 if abs(v) < 0.1 else 1
    return f"{sign}{v:,.{digits}f}%"


def format_pvalue(p: float) -> str:
    """A p-value: "< 0.001" below 0.001, else three decimals (``0.0421`` -> "0.042")."""
    p = float(p)
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def format_duration(seconds: float) -> str:
    """A window length in words with the right plural: ``86400`` -> "1 day",
    ``604800`` -> "7 days", ``43200`` -> "12 hours", ``90`` -> "90 seconds"."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            n = seconds / size
            return f"{n:g} {unit}" + ("" if n == 1 else "s")
    return f"{seconds:g} second" + ("" if seconds == 1 else "s")


def format_value(value: Any, kind: str, signed: bool = False) -> str:
    """One cell's text (not escaped) for a column of ``kind`` (see :func:`column_kind`)."""
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value)
                         and pd.isna(value)):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        ts = pd.Timestamp(value)
        return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, (int, float, np.integer, np.floating)):
        if kind == "pvalue":
            return format_pvalue(value)
        if kind == "percent":
            return format_percent(value, signed)
        if not math.isfinite(float(value)):
            return MISSING
        return format_number(value, signed)
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, kind, signed) for v in value)
    return str(value)


def _interval_pairs(columns: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``{low column: (high column, base name)}`` for every ``X_low``/``X_high`` (also
    ``X_ci_low``, ``ci_low``, ``X_lo``/``X_hi``, ``X_lower``/``X_upper``) pair."""
    partner = {"low": "high", "lo": "hi", "lower": "upper"}
    pairs = {}
    cols = set(columns)
    for c in columns:
        m = _INTERVAL.match(str(c))
        if not m or m.group("end") not in partner:
            continue
        high = str(c)[: -len(m.group("end"))] + partner[m.group("end")]
        if high in cols:
            pairs[c] = (high, m.group("base"))
    return pairs


def _interval_kind(frame: pd.DataFrame, base: str, high: str, low: str,
                   kinds: Mapping[str, str]) -> tuple[str, str]:
    """The kind of an interval ``base_low``/``base_high``: that of the column it bounds
    (``abs_ci`` bounds ``abs_diff``, ``step_ci`` bounds ``step_conversion``, ``markov_low``
    bounds ``markov``), else a share when its bounds lie in [0, 1] in a table of shares.
    Returns the kind and the bounded column's name (``base`` when none is found)."""
    if base:
        bounded = [c for c in map(str, frame.columns)
                   if c.startswith(f"{base}_") and c not in (low, high)
                   and not _INTERVAL.match(c)] + ([base] if base in frame.columns else [])
        for c in bounded:
            kind = kinds.get(c) or column_kind(c, frame[c])
            if kind in ("percent", "number") or c == base:
                return kind, c
    lo = pd.to_numeric(frame[low], errors="coerce")
    hi = pd.to_numeric(frame[high], errors="coerce")
    shares = any((kinds.get(str(c)) or column_kind(str(c), frame[c])) == "percent"
                 for c in frame.columns if str(c) not in (low, high))
    if shares and lo.dropna().between(0, 1).all() and hi.dropna().between(0, 1).all():
        return "percent", base
    return column_kind(base or "ci", None), base


def _index_as_column(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without its index when the index is row numbers (unnamed integers), else with
    the index as its first column(s) (an unnamed one headed by an empty string)."""
    idx = df.index
    if all(n is None for n in idx.names) and (isinstance(idx, pd.RangeIndex)
                                              or pd.api.types.is_integer_dtype(idx)):
        return df.reset_index(drop=True)
    out = df.copy()
    if all(n is None for n in idx.names) and idx.nlevels == 1:
        out.index = idx.rename("")
    return out.reset_index()


def format_table(
    df: pd.DataFrame,
    *,
    min_group_size: int = MIN_GROUP_SIZE,
    labels: Mapping[str, str] | None = None,
    kinds: Mapping[str, str] | None = None,
    hide: Iterable[str] = (),
    significant: str | None = "significant",
    suppressed: str | None = "suppressed",
    max_rows: int | None = 50,
    caption: str | None = None,
    notes: Iterable[str] = (),
) -> str:
    """Render ``df`` as a formatted HTML table inside a box that scrolls sideways.

    Parameters
    ----------
    df : DataFrame
        The figures. A named index becomes a column; an unnamed one is not shown.
    min_group_size : int
        Shown as "<min_group_size>" in the missing cells of suppressed rows.
    labels : mapping, optional
        Column headers (default: :func:`column_label`).
    kinds : mapping, optional
        Column kinds overriding :func:`column_kind` (``"pvalue"``, ``"percent"``,
        ``"count"``, ``"number"``, ``"text"``, ``"hide"``).
    hide : iterable of str
        Columns not shown.
    significant : str or None
        A boolean column marking significant rows: it is not shown, and the p-value,
        difference, lift and interval cells of those rows are marked (bold, shaded, "*").
    suppressed : str or None
        A boolean column marking rows suppressed for privacy (see
        :func:`cxanalysis.privacy.suppress_small_groups`): not shown; their missing cells
        read "<min_group_size>".
    max_rows : int or None
        Rows shown at most (a line below says how many more there are).
    caption : str, optional
        A caption above the table.
    notes : iterable of str
        Sentences shown below the table (warnings and fallbacks).

    Returns
    -------
    str
        HTML (a ``div`` with its own style).
    """
    kinds = dict(kinds or {})
    frame = _index_as_column(df)
    hidden = set(hide) | {c for c, k in kinds.items() if k == "hide"}
    sig = (frame[significant].fillna(False).astype(bool).to_numpy()
           if significant and significant in frame.columns else np.zeros(len(frame), bool))
    sup = (frame[suppressed].fillna(False).astype(bool).to_numpy()
           if suppressed and suppressed in frame.columns else np.zeros(len(frame), bool))
    hidden |= {c for c in (significant, suppressed) if c}
    columns = [c for c in frame.columns if c not in hidden]
    pairs = _interval_pairs([str(c) for c in columns])
    highs = {h for h, _b in pairs.values()}
    shown = frame if max_rows is None else frame.head(max_rows)

    heads: list[str] = []
    specs: list[tuple[str, str | None, str, bool, bool]] = []  # col, high, kind, signed, mark
    for c in columns:
        name = str(c)
        if name in highs:
            continue
        if name in pairs:
            high, base = pairs[name]
            base_kind, bounded = _interval_kind(frame, base, high, name, kinds)
            base_kind = kinds.get(name) or base_kind
            if labels and name in labels:
                base_label = labels[name]
            elif name in LABELS:
                base_label = LABELS[name]
            elif base and f"{base}_ci" in LABELS:
                base_label = LABELS[f"{base}_ci"]
            else:
                base_label = f"{column_label(base, labels)} interval" if base else "interval"
            heads.append(base_label)
            signed = bool(_SIGNED.search(base or "") or _SIGNED.search(bounded or ""))
            specs.append((name, high, base_kind, signed, True))
            continue
        kind = kinds.get(name) or column_kind(name, frame[c])
        heads.append(column_label(name, labels))
        mark = kind == "pvalue" or bool(_SIGNED.search(name))
        specs.append((name, None, kind, bool(_SIGNED.search(name)), mark))

    body = []
    for i, row in enumerate(shown.itertuples(index=False)):
        values = dict(zip([str(c) for c in frame.columns], row, strict=True))
        cells = []
        for name, high, kind, signed, mark in specs:
            value = values[name]
            numeric = kind in ("pvalue", "percent", "count", "number")
            missing = value is None or (pd.api.types.is_scalar(value)
                                        and not isinstance(value, str) and pd.isna(value))
            if sup[i] and missing:
                text, cls = f"<{min_group_size}", "num sup"
            elif high is not None:
                hv = values[high]
                if missing or hv is None or pd.isna(hv):
                    text = MISSING
                else:
                    text = (f"{format_value(value, kind, signed)} to "
                            f"{format_value(hv, kind, signed)}")
                cls = "num"
            else:
                text = format_value(value, kind, signed)
                cls = "num" if numeric and not missing else ""
            if mark and sig[i] and not missing:
                cls = (cls + " sig").strip()
                if kind == "pvalue":
                    text += " *"
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")

    foot = []
    if sig[: len(shown)].any():
        foot.append("* and shaded: significant at the analysis's level (after correction "
                    "where one applies).")
    if sup[: len(shown)].any():
        foot.append(f"<{min_group_size}: fewer than {min_group_size} customers, not shown "
                    "(privacy).")
    if max_rows is not None and len(frame) > max_rows:
        foot.append(f"{len(frame) - max_rows:,} more rows not shown (see .table()).")
    foot.extend(str(n) for n in notes)
    parts = [f"<div class=\"cx-table\"><style>{_STYLE}</style>"]
    if caption:
        parts.append(f"<p class=\"cx-caption\"><strong>{html.escape(caption)}</strong></p>")
    parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
                 + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")
    parts.extend(f"<p class=\"cx-foot\">{html.escape(f)}</p>" for f in foot)
    parts.append("</div>")
    return "".join(parts)


def answer_box(title: str, sentences: Iterable[str], status: str = "info") -> str:
    """The answer-first box a report opens with: a title and a few plain sentences.

    Parameters
    ----------
    title : str
        The question the report answers, or its answer in a few words.
    sentences : iterable of str
        The answer with its key numbers (already formatted), one sentence each.
    status : {"info", "ok", "warn"}
        The box's colour: neutral, good, or a warning.

    Returns
    -------
    str
        HTML; show it with ``IPython.display.HTML``.
    """
    color = {"ok": "#1b5e20", "warn": "#b26a00"}.get(status, "#1e4e79")
    items = "".join(f"<li>{html.escape(str(s))}</li>" for s in sentences)
    return (f"<div class=\"cx-answer\" style=\"border-left:6px solid {color};"
            "background:#f6f8fa;padding:.6em 1em;margin:.5em 0 1em 0;max-width:60em\">"
            f"<p style=\"margin:.2em 0;font-size:1.15em\"><strong>{html.escape(title)}"
            f"</strong></p><ul style=\"margin:.3em 0\">{items}</ul></div>")


def show_answer(title: str, sentences: Iterable[str], status: str = "info") -> None:
    """Display :func:`answer_box` in a notebook (``text/plain``: the title and sentences,
    one a line, for a pinned cell's check; printed outside IPython)."""
    sentences = [str(t) for t in sentences]
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - outside IPython
        print(title, *sentences, sep="\n")
        return
    display({"text/html": answer_box(title, sentences, status),
             "text/plain": "\n".join([title, *sentences])}, raw=True)


def plain_text(frame: pd.DataFrame) -> str:
    """The plain-text form of a table (``text/plain`` of :func:`show`, which pinned notebook
    cells compare): no index, every figure as computed."""
    return _index_as_column(frame).to_string(index=False)


def show(obj: Any, **fmt: Any) -> None:
    """Display a result object or a DataFrame as a formatted table.

    The output carries ``text/html`` (:func:`format_table`; what the report shows) and
    ``text/plain`` (:func:`plain_text`; what a pinned cell's nbval check compares).

    Parameters
    ----------
    obj : result object or DataFrame
        A result object is shown with its own ``_repr_html_`` unless ``fmt`` is given.
    **fmt
        Keyword arguments of :func:`format_table`.
    """
    if isinstance(obj, pd.Series):
        obj = obj.to_frame()
    if isinstance(obj, pd.DataFrame):
        frame, page = obj, format_table(obj, **fmt)
    elif not hasattr(obj, "table"):  # not a table: IPython's own display
        from IPython.display import display

        display(obj)
        return
    else:
        frame = obj.table()
        page = obj._repr_html_() if not fmt else format_table(
            frame, **{"min_group_size": obj._group_size(), **fmt})
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - outside IPython
        print(plain_text(frame))
        return
    display({"text/html": page, "text/plain": plain_text(frame)}, raw=True)


def say(*values: Any, sep: str = " ") -> None:
    """Display text as paragraphs, like :func:`print` but rendered as HTML in a report (a
    printed block of lines becomes a ``<pre>`` box that reads like a console).

    The output carries ``text/html`` (one paragraph per line, escaped) and ``text/plain``
    (the text, for a pinned cell's nbval check).
    """
    text = sep.join(str(v) for v in values)
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - outside IPython
        print(text)
        return
    paras = "".join(f"<p style=\"margin:.25em 0\">{html.escape(line)}</p>"
                    for line in text.split("\n") if line.strip())
    display({"text/html": f"<div class=\"cx-text\">{paras}</div>", "text/plain": text},
            raw=True)


class ResultMixin:
    """The result protocol every result object shares (see the module docstring).

    A subclass has ``table()``; it may set ``_format`` (keyword arguments of
    :func:`format_table`, e.g. ``labels`` or ``kinds``) and override :meth:`to_dict`. A
    dataclass field ``notes`` replaces the empty default.
    """

    #: warnings and fallbacks (a dataclass field of the same name replaces this default)
    notes: Sequence[str] = ()
    #: keyword arguments for :func:`format_table`
    _format: Mapping[str, Any] = {}

    def _group_size(self) -> int:
        for attr in ("min_group_size",):
            v = getattr(self, attr, None)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return MIN_GROUP_SIZE

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe headline: by default the table's rows and the notes."""
        return to_jsonable({"table": self.table(), "notes": list(self.notes or [])})

    def _repr_html_(self) -> str:
        return format_table(self.table(), min_group_size=self._group_size(),
                            notes=list(self.notes or []), **dict(self._format))

    def table(self) -> pd.DataFrame:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


# --------------------------------------------------------------------------- headlines

#: Mean bootstrap Jaccard from which a persona counts as stable (Hennig); the same value as
#: :data:`cxanalysis.personas.STABLE_JACCARD`, repeated so that the index needs no sklearn.
_STABLE_JACCARD = 0.75


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _overview_headline(r: Mapping[str, Any]) -> list[str]:
    tables = r.get("tables") or {}
    out = []
    rows = {k: (v or {}).get("rows") for k, v in tables.items() if isinstance(v, Mapping)}
    events = rows.get("events")
    what = [f"{format_number(events)} events"] if _num(events) else []
    if _num(r.get("customers")):
        what.append(f"{format_number(r['customers'])} customers")
    if what:
        out.append(" from ".join(what) + f" in {len(rows)} tables.")
    span = r.get("date_span") or []
    if len(span) == 2 and all(span):
        out.append(f"Period: {str(span[0])[:10]} to {str(span[1])[:10]}.")
    problems = r.get("validation_problems")
    if _num(problems):
        out.append("Valid: no problems found." if problems == 0 else
                   f"NOT valid: {format_number(problems)} validation problem"
                   f"{'s' if problems != 1 else ''}.")
    missing = [t for t in ("orders", "feedback", "assignments", "customers")
               if tables and t not in tables]
    if missing:
        out.append(f"Missing tables: {', '.join(missing)}.")
    elif tables:
        out.append("Nothing missing: customers, events, orders, feedback and assignments "
                   "are all present.")
    if _num(r.get("nps")):
        out.append(f"Overall NPS {r['nps']:+.0f}.")
    exps = r.get("experiments") or []
    if exps:
        out.append(f"{len(exps)} experiment{'s' if len(exps) != 1 else ''}: "
                   f"{', '.join(map(str, exps))}.")
    return out


def _personas_headline(r: Mapping[str, Any]) -> list[str]:
    sizes = r.get("persona_sizes") or {}
    jac = r.get("stability_jaccard") or {}
    out = [f"{r.get('k')} personas found"
           + (f" ({', '.join(format_number(s) if _num(s) else '<min' for s in sizes.values())}"
              " customers)." if sizes else ".")]
    if jac:
        stable = [n for n, j in jac.items() if _num(j) and j >= _STABLE_JACCARD]
        low = min((j for j in jac.values() if _num(j)), default=None)
        out.append(f"{len(stable)} of {len(jac)} stable (bootstrap Jaccard >= "
                   f"{_STABLE_JACCARD}; lowest {low:.2f})." if low is not None else
                   "Stability not computed.")
    if _num(r.get("seed_ari")):
        out.append(f"Same personas across seeds: ARI {r['seed_ari']:.2f}.")
    if _num(r.get("segment_persona_ari")):
        out.append(f"Agreement with demographic segments: ARI {r['segment_persona_ari']:.2f}.")
    return out


def _funnel_headline(r: Mapping[str, Any]) -> list[str]:
    out = []
    steps = r.get("steps") or []
    if steps and _num(steps[-1].get("conversion_from_first")):
        first, last = steps[0], steps[-1]
        out.append(f"{format_percent(last['conversion_from_first'])} of "
                   f"{format_number(first.get('customers', 0))} customers go from "
                   f"{first.get('event')} to {last.get('event')}.")
    big = r.get("biggest_leak") or {}
    if big:
        where = f" on {big['channel']}" if big.get("channel") else ""
        line = (f"Biggest leak: {big.get('step')} to {big.get('next_step')}{where}")
        if _num(big.get("customers_lost")):
            line += f", {format_number(round(big['customers_lost']))} customers lost"
        if _num(big.get("rate")) and _num(big.get("overall_rate")):
            line += (f" (drop-out {format_percent(big['rate'])} against "
                     f"{format_percent(big['overall_rate'])} overall)")
        out.append(line + ".")
    elif "biggest_leak" in r:
        out.append("No significant leak found.")
    return out


def _experiment_headline(r: Mapping[str, Any]) -> list[str]:
    verdict = str(r.get("decision") or "?").upper()
    variant = r.get("decision_variant")
    head = f"{r.get('experiment_id', 'experiment')}: {verdict}"
    if variant and r.get("decision") == "ship":
        head += f" ({variant})"
    out = [head + "."]
    primary = r.get("primary_metric")
    metrics = r.get("metrics") or {}
    rows = [m for m in metrics.values() if isinstance(m, Mapping)
            and m.get("role") == "primary" and m.get("reported")]
    for m in rows:
        lift, ci = m.get("rel_lift"), m.get("rel_ci") or [None, None]
        if _num(lift):
            text = f"{m.get('label') or primary}: {format_percent(lift, signed=True)}"
            if all(_num(c) for c in ci):
                text += (f" ({format_percent(ci[0], signed=True)} to "
                         f"{format_percent(ci[1], signed=True)})")
            if _num(m.get("p_adjusted")):
                text += f", p {format_pvalue(m['p_adjusted'])}"
            out.append(text + ".")
        elif m.get("not_testable"):
            out.append(f"{m.get('label') or primary}: not testable ({m['not_testable']}).")
    reason = str(r.get("reason") or "")
    if ", but " in reason:  # the verdict's condition, without its figures
        out.append("Why not ship: " + reason.split(", but ", 1)[1].split(":")[0].strip() + ".")
    if r.get("srm_flagged"):
        out.append("WARNING: sample ratio mismatch; no effect can be trusted.")
    return out


def headline(results: Mapping[str, Any]) -> list[str]:
    """The headline sentences of a report's published results (``NAME.results.json``'s
    ``results``): recognised by their keys — a data overview (``tables``), personas
    (``persona_sizes``), a funnel (``biggest_leak``) or an experiment (``decision``).

    Returns
    -------
    list of str
        Plain sentences with formatted numbers; empty when the results are not recognised.
    """
    if not isinstance(results, Mapping) or not results:
        return []
    if "decision" in results:
        return _experiment_headline(results)
    if "biggest_leak" in results or "steps" in results:
        return _funnel_headline(results)
    if "persona_sizes" in results or "stability_jaccard" in results:
        return _personas_headline(results)
    if "tables" in results or "date_span" in results:
        return _overview_headline(results)
    return []
