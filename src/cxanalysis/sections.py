"""Report sections that degrade instead of failing: a section checks what it needs and, when
that is missing, shows one line ``skipped: needs ...`` while the rest of the report runs.

Usage in a notebook cell::

    sections = Sections()
    ...
    with sections("Journey-stage coverage"):
        sections.need(src, columns=["events.stage"])
        stages = overview.stage_coverage(src)
        stages.plot()

and at the end ``publish({..., "skipped": sections.skipped})``, which gives ``results.json``
the list ``[{"section": ..., "reason": ...}]``.

What counts as "missing": a table, a column, enough customers (checked up front with
:meth:`Sections.need`), or a :class:`~cxanalysis.data.CXDataError` raised inside the section
(the package raises it when the data cannot support an analysis, e.g. no conversions in a
window). Any other exception is a defect and still fails the report: a report fails only
when its *core* cannot run, and the core is kept outside sections.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cxanalysis.data import CXDataError, Source


class SectionSkipped(CXDataError):
    """Raised by :meth:`Sections.need` when a section's requirements are not met."""


def missing(source: Source | None, tables: Iterable[str] = (), columns: Iterable[str] = ()
            ) -> list[str]:
    """What of ``tables`` and ``columns`` (``"table.column"``) the source lacks, as phrases
    such as ``"table feedback"`` or ``"column events.stage"`` (empty when nothing is)."""
    out = []
    for t in tables:
        if source is None or not source.has(t):
            out.append(f"table {t}")
    for tc in columns:
        table, _, col = tc.partition(".")
        if source is None or not source.has(table):
            if f"table {table}" not in out:
                out.append(f"table {table}")
        elif col not in source.table(table).columns:
            out.append(f"column {tc}")
    return out


@dataclass
class Sections:
    """Runs report sections and records the ones skipped, with their reasons."""

    skipped: list[dict[str, str]] = field(default_factory=list)
    echo: bool = True

    def skip(self, section: str, reason: str) -> None:
        """Record ``section`` as skipped and print the one-line note."""
        reason = " ".join(str(reason).split())  # one line, whatever the message held
        self.skipped.append({"section": section, "reason": reason})
        if self.echo:
            print(f"{section} — skipped: {reason}")

    def need(self, source: Source | None = None, tables: Iterable[str] = (),
             columns: Iterable[str] = (), customers: int | None = None,
             min_customers: int | None = None, what: str | None = None) -> None:
        """Raise :class:`SectionSkipped` (caught by the section) when the source lacks any of
        ``tables`` or ``columns`` (``"table.column"``), or when ``customers`` is below
        ``min_customers`` (``what`` then names the requirement, e.g. "customers with orders
        in the holdout window")."""
        lacks = missing(source, tables, columns)
        if lacks:
            raise SectionSkipped("needs " + ", ".join(lacks))
        if min_customers is not None and (customers or 0) < min_customers:
            raise SectionSkipped(f"needs {what or f'at least {min_customers:,} customers'} "
                                 f"(found {customers or 0:,})")

    def require(self, condition: bool, needs: str) -> None:
        """Raise :class:`SectionSkipped` with ``needs <needs>`` unless ``condition``."""
        if not condition:
            raise SectionSkipped(f"needs {needs}")

    @contextmanager
    def __call__(self, section: str) -> Iterator[None]:
        """Run the body as section ``section``; a :class:`CXDataError` inside it (including
        an unmet :meth:`need`) skips the rest of the section with a one-line note."""
        try:
            yield
        except SectionSkipped as exc:
            self.skip(section, str(exc))
        except CXDataError as exc:
            self.skip(section, f"needs data it lacks: {exc}")

    @property
    def names(self) -> list[str]:
        return [s["section"] for s in self.skipped]

    def summary(self) -> str:
        if not self.skipped:
            return "Every section ran."
        return "Skipped sections: " + "; ".join(f"{s['section']} ({s['reason']})"
                                               for s in self.skipped)
