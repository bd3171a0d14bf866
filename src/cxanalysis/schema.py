"""The cxanalysis data contract: which tables a source may hold, their columns and rules.

This module is the single place where the contract is written down; ``docs/data-model.md``
is generated from it (``python -m cxanalysis.schema > docs/data-model.md``, kept current by a
test) and :mod:`cxanalysis.data` validates against it. See :data:`CONVENTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["string", "date", "timestamp", "float", "int", "category"]

#: Channels of the demo world (user data may use others).
CHANNELS: tuple[str, ...] = ("web", "app", "store", "call_centre", "email", "social", "chat")

#: Journey stages, in order.
STAGES: tuple[str, ...] = (
    "awareness",
    "discovery",
    "consideration",
    "purchase",
    "delivery",
    "retention",
)


@dataclass(frozen=True)
class Column:
    """One column of a contract table.

    Parameters
    ----------
    name : str
        Column name, exact (case-sensitive).
    kind : {"string", "date", "timestamp", "float", "int", "category"}
        Logical type. ``timestamp`` means a UTC instant (timezone-aware).
    description : str
        Meaning and unit.
    required : bool
        Whether a table without this column is rejected.
    nullable : bool
        Whether missing values are allowed in the column.
    min, max : float, optional
        Inclusive range for numeric columns.
    allowed : tuple of str, optional
        Closed vocabulary for categorical columns (``None``: open vocabulary).
    derived : str
        How the column is derived when the source lacks it (empty: never derived; then a
        required column that is absent is an error). Derivations are listed by validation
        and in ``Source.derived``.
    """

    name: str
    kind: Kind
    description: str
    required: bool = True
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    derived: str = ""


@dataclass(frozen=True)
class Table:
    """A table of the contract.

    Parameters
    ----------
    name : str
        Table name; a file source holds ``NAME.parquet`` or ``NAME.csv``.
    description : str
        What one row is.
    columns : tuple of Column
        Known columns; other columns are kept and passed through untouched.
    key : tuple of str
        Columns whose combination must be unique (empty: no key).
    customer_fk : bool
        Whether ``customer_id`` must refer to a row of ``customers``.
    extra_columns : str
        What other columns mean, if the table accepts open-ended extra columns.
    derived : str
        How the table is derived when the source lacks it (empty: never derived).
    """

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    customer_fk: bool = True
    extra_columns: str = ""
    derived: str = ""

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name!r} has no column {name!r} in the contract")

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


_TS = "Instant of the interaction, UTC (timezone-aware)."
_NO_CHANNEL = ("'unspecified' for every row (a mapping can set a real constant instead, e.g. "
               "`constants: {channel: web}`)")

CUSTOMERS = Table(
    name="customers",
    description="One row per customer.",
    key=("customer_id",),
    customer_fk=False,
    columns=(
        Column("customer_id", "string", "Customer identifier, unique."),
        Column("signup_date", "date", "Date the customer relationship started.",
               derived="the day of the customer's first activity in events, orders, feedback "
               "or assignments (in the mapping's time zone, else UTC); empty for a customer "
               "with none"),
        Column("age_band", "category", "Age band, e.g. 18-24, 25-34, ...", required=False,
               nullable=True),
        Column("gender", "category", "Self-reported gender.", required=False, nullable=True),
        Column("region", "category", "Home region.", required=False, nullable=True),
        Column("income_band", "category", "Household income band (low, mid, high, ...).",
               required=False, nullable=True),
    ),
    extra_columns="Any other categorical segment attribute; notebooks take the segment "
    "columns to use as a parameter.",
    derived="one row per customer_id seen in events, orders, feedback or assignments, with "
    "signup_date derived as below and no other attribute",
)

EVENTS = Table(
    name="events",
    description="One row per touchpoint interaction.",
    columns=(
        Column("customer_id", "string", "Customer who interacted."),
        Column("ts", "timestamp", _TS),
        Column("channel", "category", "Channel of the interaction (web, app, store, "
               "call_centre, email, social, chat, ...).", derived=_NO_CHANNEL),
        Column("event", "category", "Touchpoint or action name (e.g. visit, product_view, "
               "add_to_cart, checkout, purchase, support_contact)."),
        Column("session_id", "string", "Session identifier, if the source has one.",
               required=False, nullable=True),
        Column("stage", "category", "Journey stage of the event.", required=False,
               nullable=True, allowed=STAGES),
    ),
)

ORDERS = Table(
    name="orders",
    description="One row per order.",
    key=("order_id",),
    columns=(
        Column("order_id", "string", "Order identifier, unique.",
               derived="each row is one order: 'row N', N its 0-based row number in the file"),
        Column("customer_id", "string", "Customer who ordered."),
        Column("ts", "timestamp", "Instant the order was placed, UTC (timezone-aware)."),
        Column("channel", "category", "Channel the order was placed in.",
               derived=_NO_CHANNEL),
        Column("amount", "float", "Order value after discount, currency units.", min=0.0),
        Column("discount", "float", "Discount granted on the order, currency units.",
               required=False, nullable=True, min=0.0),
    ),
)

FEEDBACK = Table(
    name="feedback",
    description="One row per survey answer or rating.",
    columns=(
        Column("customer_id", "string", "Customer who answered."),
        Column("ts", "timestamp", "Instant of the answer, UTC (timezone-aware)."),
        Column("channel", "category", "Channel the rated interaction happened in.",
               derived=_NO_CHANNEL),
        Column("event", "category", "What was rated (e.g. purchase, delivery, "
               "support_contact)."),
        Column("nps", "int", "Likelihood to recommend, 0-10.", required=False, nullable=True,
               min=0, max=10),
        Column("csat", "int", "Satisfaction, 1-5.", required=False, nullable=True, min=1, max=5),
        Column("effort", "int", "Customer effort score, 1-7 (higher = more effort).",
               required=False, nullable=True, min=1, max=7),
        Column("comment", "string", "Free-text comment. Never shown in reports.",
               required=False, nullable=True),
    ),
)

ASSIGNMENTS = Table(
    name="assignments",
    description="One row per customer assigned to a variant of an experiment.",
    key=("experiment_id", "customer_id"),
    columns=(
        Column("experiment_id", "string", "Experiment identifier."),
        Column("customer_id", "string", "Assigned customer (the unit of randomisation)."),
        Column("variant", "category", "Variant name (e.g. control, treatment)."),
        Column("assigned_at", "timestamp", "Instant of first exposure, UTC "
               "(timezone-aware)."),
    ),
)

EXPERIMENTS = Table(
    name="experiments",
    description="One row per experiment (optional table).",
    key=("experiment_id",),
    customer_fk=False,
    columns=(
        Column("experiment_id", "string", "Experiment identifier, unique."),
        Column("name", "string", "Human-readable name.", required=False, nullable=True),
        Column("hypothesis", "string", "What the change is expected to do.", required=False,
               nullable=True),
        Column("control", "string", "Name of the control variant.", required=False,
               nullable=True),
        Column("start", "timestamp", "Start of assignment, UTC.", required=False,
               nullable=True),
        Column("end", "timestamp", "End of assignment, UTC.", required=False, nullable=True),
        Column("planned_split", "string", "Planned traffic split as 'variant:weight,...' "
               "(e.g. 'control:0.5,treatment:0.5'); equal split when absent.",
               required=False, nullable=True),
    ),
)

#: The conventions every table follows (rendered into docs/data-model.md).
CONVENTIONS: tuple[str, ...] = (
    "Timestamps are instants in UTC: Parquet/DuckDB `TIMESTAMP WITH TIME ZONE`, or text "
    "with an offset (`2025-03-01T10:00:00Z`, `...+01:00`). Naive timestamps and date-only "
    "values (`1997-01-01`) are rejected: a local wall-clock time read as UTC silently shifts "
    "every window. A mapping with `timezone:` reads them in that zone instead.",
    "Identifiers are strings (numbers are read as text). Money is a non-negative float in "
    "the source's currency.",
    "Categorical columns are strings; the vocabularies named below are those of the demo "
    "world, your data may use its own values unless a column lists allowed values.",
    "Columns not in the contract are passed through untouched. Raw files are never modified.",
    "An export with its own file and column names is read through a mapping file "
    "(`--mapping FILE`, or a preset: `ga4`, `segment`, `amplitude`); see "
    "`cxanalysis.mapping` and the README. What the contract needs but an export cannot have "
    "is derived where that is honest (the *derived if absent* entries below), and validation "
    "and the reports say so.",
)

#: Validation rules (name, meaning); errors unless marked as warnings.
VALIDATION_RULES: tuple[tuple[str, str], ...] = (
    ("missing required column", "a required column is absent"),
    ("missing value", "a non-nullable column is empty (NULL or blank)"),
    ("unparseable value", "a value cannot be read as the column's type"),
    ("naive timestamp", "a timestamp without a time zone / UTC offset (and no mapping "
     "`timezone:` to read it in)"),
    ("date without time zone", "a date-only value (`1997-01-01`) in a timestamp column, "
     "without a mapping `timezone:`"),
    ("not an integer", "an integer column (scores) holds a fraction"),
    ("out of range", "a number outside its allowed range (e.g. amount < 0, NPS > 10)"),
    ("unknown value", "a value outside a closed vocabulary (e.g. an unknown stage)"),
    ("timestamp in the future", "later than now (or the reference time given)"),
    ("duplicate key", "rows sharing a key that must be unique"),
    ("unknown customer", "a customer_id not found in customers"),
    ("empty table", "warning: the table has no rows"),
)

#: Every table of the contract, by name.
TABLES: dict[str, Table] = {
    t.name: t for t in (CUSTOMERS, EVENTS, ORDERS, FEEDBACK, ASSIGNMENTS, EXPERIMENTS)
}


@dataclass
class _Doc:
    lines: list[str] = field(default_factory=list)

    def add(self, text: str = "") -> None:
        self.lines.append(text)


def data_model_markdown() -> str:
    """Render the contract as Markdown (the body of ``docs/data-model.md``)."""
    doc = _Doc()
    doc.add("# Data model")
    doc.add()
    doc.add("Generated from `src/cxanalysis/schema.py` by `python -m cxanalysis.schema`; "
            "do not edit by hand.")
    doc.add()
    doc.add("Conventions:")
    doc.add()
    for line in CONVENTIONS:
        doc.add(f"- {line}")
    doc.add()
    doc.add("A *source* is a folder of `NAME.parquet` / `NAME.csv` files, or a DuckDB database "
            "file holding tables with these names. A source need not hold every table: each "
            "notebook says which it needs.")
    doc.add()
    doc.add("Validation on open (`cxanalysis validate SOURCE`, or `open_source`) checks, and "
            "reports each broken rule with the table, the column, the number of rows and up to "
            "five example row numbers (0-based data rows within the file, header not counted):")
    doc.add()
    for rule, meaning in VALIDATION_RULES:
        doc.add(f"- **{rule}** — {meaning}")
    for table in TABLES.values():
        doc.add()
        doc.add(f"## `{table.name}`")
        doc.add()
        doc.add(table.description)
        if table.key:
            doc.add(f"Unique key: `{', '.join(table.key)}`.")
        if table.customer_fk:
            doc.add("Every `customer_id` must exist in `customers` (when that table is present).")
        doc.add()
        doc.add("| column | type | required | nulls | rule | meaning |")
        doc.add("|---|---|---|---|---|---|")
        for c in table.columns:
            rule = []
            if c.min is not None:
                rule.append(f">= {c.min:g}")
            if c.max is not None:
                rule.append(f"<= {c.max:g}")
            if c.allowed:
                rule.append("one of " + ", ".join(c.allowed))
            required = "derived if absent" if c.derived else "yes" if c.required else "no"
            doc.add(f"| `{c.name}` | {c.kind} | {required} | "
                    f"{'allowed' if c.nullable else 'no'} | {'; '.join(rule)} | "
                    f"{c.description} |")
        if table.extra_columns:
            doc.add()
            doc.add(f"Other columns: {table.extra_columns}")
        derived = [(c.name, c.derived) for c in table.columns if c.derived]
        if table.derived or derived:
            doc.add()
            doc.add("Derived if absent:")
            doc.add()
            if table.derived:
                doc.add(f"- the table: {table.derived}")
            for name, how in derived:
                doc.add(f"- `{name}`: {how}")
    return "\n".join(doc.lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - documentation generator
    print(data_model_markdown(), end="")
