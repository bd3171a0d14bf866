"""Private by default: small-group suppression and free-text redaction for reports.

Reports never show customer identifiers or raw comments, and every group smaller than a
minimum size (default :data:`MIN_GROUP_SIZE` customers) is suppressed in tables and plots.

One way to suppress
-------------------
A result is suppressed **when it is built**, by :func:`suppress_small_groups`: every group
keeps its row (so a reader sees that the group exists), the figures of a group with fewer
than ``min_group_size`` customers (or units) are set to missing, and a boolean column
``suppressed`` marks the row. :func:`cxanalysis.formatting.format_table` shows those
missing cells as ``<N`` (``N`` = ``min_group_size``) and hides the ``suppressed`` column;
``results.json`` carries them as ``null``; plots leave suppressed rows out. The parameter is
called ``min_group_size`` everywhere. Ranked lists (the top paths of a journey analysis)
rank suppressed rows last.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import pandas as pd

#: Default minimum number of customers a reported group must have.
MIN_GROUP_SIZE = 10

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d ()-]{6,}\d(?!\w)")
_ID = re.compile(r"\b[A-Z]{1,3}\d{5,}\b")
_NAME_AFTER = re.compile(r"\b(?i:I am|I'm|my name is|this is|ask for|spoke to|agent)\s+"
                         r"([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)")


def redact(text: str | None) -> str | None:
    """Replace e-mail addresses, phone numbers, customer-id-like tokens and names introduced
    by common phrases ("my name is ...", "spoke to ...") with placeholders."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    out = _EMAIL.sub("[email]", str(text))
    out = _PHONE.sub("[phone]", out)
    out = _ID.sub("[id]", out)
    out = _NAME_AFTER.sub(lambda m: m.group(0).replace(m.group(1), "[name]"), out)
    return out


def terms_used_by(doc_terms: Iterable[Iterable[str]], owners: Sequence[Hashable],
                  min_owners: int = MIN_GROUP_SIZE) -> set[str]:
    """Terms used by at least ``min_owners`` distinct owners (document frequency counted in
    customers, not documents).

    Free text can carry what redaction misses (a name without "my name is", an address
    written as "name at example dot com"); such words are used by one or a few customers, so
    a word shown in a report must have been written by a group of at least ``min_owners``.

    Parameters
    ----------
    doc_terms : iterable of iterables of str
        The terms of each document (e.g. a comment's words and bigrams).
    owners : sequence
        The owner (customer) of each document, aligned with ``doc_terms``.
    min_owners : int
        Minimum number of distinct owners.
    """
    users: dict[str, set[Hashable]] = {}
    for terms, owner in zip(doc_terms, owners, strict=True):
        for term in set(terms):
            users.setdefault(term, set()).add(owner)
    return {t for t, who in users.items() if len(who) >= min_owners}


def suppress_small_groups(
    table: pd.DataFrame,
    size_column: str,
    min_group_size: int = MIN_GROUP_SIZE,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Set to missing the figures of rows whose group has fewer than ``min_group_size``
    customers: the package's one small-group suppression (see the module docstring).

    Parameters
    ----------
    table : DataFrame
        One row per group.
    size_column : str
        Column holding the number of customers in the group.
    min_group_size : int
        Groups with ``size < min_group_size`` are suppressed (their size included).
    columns : sequence of str, optional
        Columns to blank (default: every numeric column).

    Returns
    -------
    DataFrame
        A copy with suppressed cells set to missing (integer columns become nullable
        ``Int64``) and a boolean ``suppressed`` column.
    """
    out = table.copy()
    small = out[size_column].astype(float) < min_group_size
    cols = list(columns) if columns is not None else [
        c for c in out.columns if pd.api.types.is_numeric_dtype(out[c])
        and not pd.api.types.is_bool_dtype(out[c])
    ]
    if size_column not in cols:
        cols.append(size_column)
    for c in cols:
        col = out[c]
        # Integer counts stay integers (nullable) so tables read naturally.
        col = col.astype("Int64") if pd.api.types.is_integer_dtype(col) else col.astype(float)
        out[c] = col.mask(small)
    out["suppressed"] = small.to_numpy()
    return out


def drop_identifiers(table: pd.DataFrame, columns: Sequence[str] = ("customer_id", "order_id",
                                                                      "session_id", "comment")
                     ) -> pd.DataFrame:
    """A copy of ``table`` without identifier and free-text columns."""
    return table.drop(columns=[c for c in columns if c in table.columns])
