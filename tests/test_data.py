"""The data contract: every validation rule is exercised with a deliberately broken input."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxanalysis.data import CXDataError, fingerprint, open_source, validate

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
UTC = "UTC"


def _customers(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": [f"C{i}" for i in range(n)],
        "signup_date": pd.to_datetime(["2024-01-01"] * n).date,
        "age_band": ["18-24", "25-34", "35-44", "45-54"][:n],
    })


def _events() -> pd.DataFrame:
    ts = pd.to_datetime(["2025-01-01 10:00", "2025-01-01 10:05", "2025-01-02 09:00",
                         "2025-01-03 12:00"]).tz_localize(UTC)
    return pd.DataFrame({
        "customer_id": ["C0", "C0", "C1", "C2"],
        "ts": ts,
        "channel": ["web", "web", "app", "store"],
        "event": ["visit", "product_view", "visit", "purchase"],
        "stage": ["awareness", "discovery", "awareness", "purchase"],
    })


def _orders() -> pd.DataFrame:
    return pd.DataFrame({
        "order_id": ["O1", "O2"],
        "customer_id": ["C2", "C1"],
        "ts": pd.to_datetime(["2025-01-03 12:00", "2025-01-04 12:00"]).tz_localize(UTC),
        "channel": ["store", "app"],
        "amount": [35.0, 12.5],
        "discount": [0.0, 2.5],
    })


def _feedback() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": ["C2", "C1"],
        "ts": pd.to_datetime(["2025-01-05 12:00", "2025-01-06 12:00"]).tz_localize(UTC),
        "channel": ["store", "app"],
        "event": ["purchase", "delivery"],
        "nps": pd.array([9, 3], dtype="Int64"),
        "csat": pd.array([5, None], dtype="Int64"),
        "comment": ["great staff", None],
    })


def write_source(folder: Path, fmt: str = "parquet", **tables: pd.DataFrame) -> Path:
    """Write a clean source, with any table replaced or removed (None) by keyword."""
    folder.mkdir(parents=True, exist_ok=True)
    base = {"customers": _customers(), "events": _events(), "orders": _orders(),
            "feedback": _feedback()}
    base.update(tables)
    for name, df in base.items():
        if df is None:
            continue
        if fmt == "parquet":
            df.to_parquet(folder / f"{name}.parquet", index=False)
        else:
            df.to_csv(folder / f"{name}.csv", index=False)
    return folder


def problems(path: Path) -> dict[tuple[str, str | None, str], tuple[int, tuple[int, ...]]]:
    report = validate(path, now=NOW)
    return {(p.table, p.column, p.rule): (p.rows, p.examples) for p in report.problems}


def test_clean_source_opens_with_typed_tables(tmp_path: Path) -> None:
    src = open_source(write_source(tmp_path / "s"), require=["customers", "events"], now=NOW)
    assert src.names == ("customers", "events", "orders", "feedback")
    assert src.validation is not None and src.validation.ok
    assert src.validation.row_counts == {"customers": 4, "events": 4, "orders": 2, "feedback": 2}
    schema = src.table("events").schema()
    assert schema["ts"].is_timestamp() and schema["ts"].timezone == "UTC"
    assert schema["customer_id"].is_string()
    assert src.table("orders").amount.sum().execute() == pytest.approx(47.5)


def test_parquet_row_number_does_not_leak_into_typed_tables(tmp_path: Path) -> None:
    """The row number DuckDB adds to read a Parquet file (for error messages) is not a column
    of the typed tables: a file's own columns (plus the contract's) are, as with CSV."""
    par = open_source(write_source(tmp_path / "p"), now=NOW)
    csv = open_source(write_source(tmp_path / "c", fmt="csv"), now=NOW)
    for name in ("customers", "events", "orders", "feedback"):
        assert "file_row_number" not in par.table(name).columns, name
        assert par.table(name).columns == csv.table(name).columns, name
    folder = tmp_path / "f"
    write_source(folder)
    (folder / "events.parquet").rename(tmp_path / "ev.parquet")
    (folder / "events").mkdir()
    (tmp_path / "ev.parquet").rename(folder / "events" / "part-0.parquet")
    parts = open_source(folder, now=NOW)
    assert "file_row_number" not in parts.table("events").columns
    assert parts.table("events").count().execute() == 4


def test_csv_source_gets_the_same_types_as_parquet(tmp_path: Path) -> None:
    events = _events().assign(ts=lambda d: d.ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    orders = _orders().assign(ts=lambda d: d.ts.dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    feedback = _feedback().assign(ts=lambda d: d.ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    csv = open_source(write_source(tmp_path / "c", fmt="csv", events=events, orders=orders,
                                   feedback=feedback), now=NOW)
    par = open_source(write_source(tmp_path / "p"), now=NOW)
    for name in ("customers", "events", "orders", "feedback"):
        a = dict(csv.table(name).schema().items())
        b = dict(par.table(name).schema().items())
        for col in ("customer_id", "ts", "amount", "signup_date", "nps"):
            if col in b:
                assert a[col] == b[col], (name, col, a[col], b[col])
    first = csv.table("events").order_by("ts").ts.execute().iloc[0]
    assert first == pd.Timestamp("2025-01-01 10:00", tz=UTC)


def test_missing_required_table_is_named(tmp_path: Path) -> None:
    path = write_source(tmp_path / "s", orders=None)
    with pytest.raises(CXDataError, match=r"lacks required table\(s\) orders"):
        open_source(path, require=["customers", "orders"], now=NOW)
    src = open_source(path, now=NOW)
    with pytest.raises(CXDataError, match="has no table 'orders'"):
        src.table("orders")


def test_missing_required_column(tmp_path: Path) -> None:
    path = write_source(tmp_path / "s", events=_events().drop(columns=["event"]))
    found = problems(path)
    assert ("events", "event", "missing required column") in found
    with pytest.raises(CXDataError, match="events.event: missing required column"):
        open_source(path, now=NOW)


def test_channel_and_order_id_are_derived_when_an_export_lacks_them(tmp_path: Path) -> None:
    path = write_source(tmp_path / "s", events=_events().drop(columns=["channel"]),
                        orders=_orders().drop(columns=["order_id", "channel"]))
    src = open_source(path, now=NOW)
    assert set(src.table("events").channel.execute()) == {"unspecified"}
    assert src.table("orders").order_id.execute().tolist() == ["row 0", "row 1"]
    assert [d.split(":")[0] for d in src.derived] == ["events.channel", "orders.channel",
                                                      "orders.order_id"]
    assert src.validation is not None and src.validation.ok
    assert "derived: orders.order_id" in src.validation.summary()


def test_unparseable_values_are_counted_with_row_numbers(tmp_path: Path) -> None:
    orders = _orders().astype({"amount": "object"})
    orders["amount"] = ["12.5", "twelve"]
    customers = _customers().astype({"signup_date": "str"})
    customers.loc[2, "signup_date"] = "not a date"
    path = write_source(tmp_path / "s", fmt="csv", orders=orders, customers=customers,
                        events=_events().assign(ts=lambda d: d.ts.dt.strftime("%Y-%m-%dT%H:%MZ")),
                        feedback=None)
    found = problems(path)
    assert found[("orders", "amount", "unparseable value")] == (1, (1,))
    assert found[("customers", "signup_date", "unparseable value")] == (1, (2,))


def test_naive_timestamps_are_rejected_in_parquet_and_csv(tmp_path: Path) -> None:
    naive = _events().assign(ts=lambda d: d.ts.dt.tz_localize(None))
    assert problems(write_source(tmp_path / "p", events=naive))[
        ("events", "ts", "naive timestamp")][0] == 4
    text = _events().assign(ts=lambda d: d.ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    text.loc[[1, 3], "ts"] = ["2025-01-01 10:05:00", "2025-01-03 12:00:00"]
    found = problems(write_source(tmp_path / "c", fmt="csv", events=text, orders=None,
                                  feedback=None))
    assert found[("events", "ts", "naive timestamp")] == (2, (1, 3))


def test_duplicate_keys(tmp_path: Path) -> None:
    customers = pd.concat([_customers(), _customers().iloc[[1]]], ignore_index=True)
    orders = _orders().assign(order_id=["O1", "O1"])
    found = problems(write_source(tmp_path / "s", customers=customers, orders=orders))
    assert found[("customers", "customer_id", "duplicate key")] == (2, (1, 4))
    assert found[("orders", "order_id", "duplicate key")] == (2, (0, 1))


def test_values_out_of_range_and_not_integer(tmp_path: Path) -> None:
    orders = _orders().assign(amount=[-1.0, 5.0], discount=[0.0, -0.5])
    feedback = _feedback().assign(nps=[11.0, 7.5])
    found = problems(write_source(tmp_path / "s", orders=orders, feedback=feedback))
    assert found[("orders", "amount", "out of range")] == (1, (0,))
    assert found[("orders", "discount", "out of range")] == (1, (1,))
    assert found[("feedback", "nps", "out of range")] == (1, (0,))
    assert found[("feedback", "nps", "not an integer")] == (1, (1,))


def test_unknown_stage_value(tmp_path: Path) -> None:
    events = _events().assign(stage=["awareness", "browsing", "awareness", "checkout"])
    found = problems(write_source(tmp_path / "s", events=events))
    assert found[("events", "stage", "unknown value")] == (2, (1, 3))


def test_orphan_customer_ids(tmp_path: Path) -> None:
    events = _events().assign(customer_id=["C0", "C0", "X9", "X8"])
    found = problems(write_source(tmp_path / "s", events=events))
    assert found[("events", "customer_id", "unknown customer")] == (2, (2, 3))


def test_missing_values_in_required_columns(tmp_path: Path) -> None:
    events = _events()
    events.loc[2, "channel"] = None
    events.loc[3, "event"] = ""
    found = problems(write_source(tmp_path / "s", events=events))
    assert found[("events", "channel", "missing value")] == (1, (2,))
    assert found[("events", "event", "missing value")] == (1, (3,))


def test_future_timestamps(tmp_path: Path) -> None:
    events = _events()
    events.loc[1, "ts"] = pd.Timestamp("2030-01-01", tz=UTC)
    found = problems(write_source(tmp_path / "s", events=events))
    assert found[("events", "ts", "timestamp in the future")] == (1, (1,))


def test_empty_table_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = write_source(tmp_path / "s", feedback=_feedback().iloc[:0])
    report = validate(path, now=NOW)
    assert report.ok
    assert [(p.table, p.rule, p.severity) for p in report.problems] == [
        ("feedback", "empty table", "warning")]


def test_error_lists_every_problem_with_table_column_rule_and_rows(tmp_path: Path) -> None:
    orders = _orders().assign(amount=[-1.0, -2.0])
    events = _events().assign(customer_id=["C0", "C0", "X9", "C1"])
    with pytest.raises(CXDataError) as info:
        open_source(write_source(tmp_path / "s", orders=orders, events=events), now=NOW)
    text = str(info.value)
    assert "2 data contract error(s)" in text
    assert "orders.amount: out of range — 2 row(s)" in text
    assert "events.customer_id: unknown customer — 1 row(s)" in text
    assert "e.g. rows 2" in text
    assert len(info.value.problems) == 2


def test_raw_input_is_never_modified(tmp_path: Path) -> None:
    path = write_source(tmp_path / "s", orders=_orders().assign(amount=[-1.0, 1.0]))
    digest = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in path.iterdir()}
    validate(path, now=NOW)
    with pytest.raises(CXDataError):
        open_source(path, now=NOW)
    assert digest == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in path.iterdir()}


def test_duckdb_database_source_is_attached_read_only(tmp_path: Path) -> None:
    db = tmp_path / "cx.duckdb"
    with duckdb.connect(str(db)) as con:
        for name, df in {"customers": _customers(), "events": _events()}.items():
            con.register("df", df)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM df")
            con.unregister("df")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    src = open_source(db, require=["events"], now=NOW)
    assert src.names == ("customers", "events")
    assert src.table("events").count().execute() == 4
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    src.close()
    with duckdb.connect(str(db)) as con:
        con.execute("INSERT INTO events SELECT 'C0', TIMESTAMPTZ '2031-01-01 00:00:00+00', "
                    "'web', 'visit', 'awareness'")
    found = problems(db)
    assert found[("events", "ts", "timestamp in the future")] == (1, (4,))


def test_partitioned_parquet_folder(tmp_path: Path) -> None:
    path = write_source(tmp_path / "s", events=None)
    (path / "events").mkdir()
    ev = _events()
    pq.write_table(pa.Table.from_pandas(ev.iloc[:2], preserve_index=False),
                   path / "events" / "part-0.parquet")
    pq.write_table(pa.Table.from_pandas(ev.iloc[2:], preserve_index=False),
                   path / "events" / "part-1.parquet")
    src = open_source(path, now=NOW)
    assert src.table("events").count().execute() == 4


def test_not_a_source(tmp_path: Path) -> None:
    with pytest.raises(CXDataError, match="does not exist"):
        open_source(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(CXDataError, match="not a DuckDB database"):
        open_source(tmp_path / "x.txt")


def test_fingerprint_changes_with_content_and_ignores_truth(tmp_path: Path) -> None:
    path = write_source(tmp_path / "s")
    fp = fingerprint(path)
    assert len(fp) == 16 and fp == fingerprint(path)
    (path / "truth").mkdir()
    (path / "truth" / "truth.json").write_text("{}")
    assert fingerprint(path) == fp
    write_source(path, orders=_orders().assign(amount=[1.0, 2.0]))
    assert fingerprint(path) != fp


def test_validate_cli_exit_codes(tmp_path: Path, capsys) -> None:
    from cxanalysis.cli import main

    good = write_source(tmp_path / "good")
    bad = write_source(tmp_path / "bad", orders=_orders().assign(amount=[-1.0, 1.0]))
    run = [sys.executable, "-m", "cxanalysis.cli", "validate"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True)  # the entry point
    assert ok.returncode == 0 and ok.stdout.startswith("OK: customers (4 rows)")
    # the other exit codes in-process: the same main, without an interpreter start-up each
    assert main(["validate", str(bad)]) == 1
    assert "orders.amount: out of range — 1 row(s)" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_world_is_valid(world_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CX_VALIDATION_CACHE", "0")  # a real run, not a cached verdict
    report = validate(world_path)
    assert report.ok, report.summary()
    assert set(report.row_counts) == {"customers", "events", "orders", "feedback",
                                      "assignments", "experiments"}


def test_duckdb_memory_limit_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CX_DUCKDB_MEMORY_LIMIT", "1GB")
    src = open_source(write_source(tmp_path / "s"), now=NOW)
    got = src.sql("SELECT current_setting('memory_limit') AS m")["m"].iloc[0]
    assert got.replace(" ", "").lower().startswith(("1gb", "953.6mib", "1000.0mib", "0.9gib"))


# --------------------------------------------------------------------------- validation cache
# (issue 15 item 4: a source validated once is not re-validated while its fingerprint and
# files are unchanged)


@pytest.fixture
def counted(monkeypatch, tmp_path: Path) -> list[str]:
    """A fresh cache folder, and the tables of every real validation run (one entry per
    call of the validating function), so that a test sees whether validation ran."""
    import cxanalysis.data as data

    monkeypatch.setenv("CX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CX_VALIDATION_CACHE", raising=False)
    calls: list[str] = []
    real = data._validate

    def spy(source, types, now=None):
        calls.append(",".join(source.names))
        return real(source, types, now=now)

    monkeypatch.setattr(data, "_validate", spy)
    return calls


def test_validation_cache_second_open_skips_validation(tmp_path: Path, counted) -> None:
    path = write_source(tmp_path / "s", feedback=_feedback().iloc[:0])
    first = open_source(path, now=NOW)
    assert len(counted) == 1
    assert list((tmp_path / "cache" / "validation").glob("*.json"))
    second = open_source(path, now=NOW + dt.timedelta(days=1))
    assert len(counted) == 1  # served from the cache
    assert second.validation.row_counts == first.validation.row_counts == {
        "customers": 4, "events": 4, "orders": 2, "feedback": 0}
    assert second.validation.problems == first.validation.problems  # the warning is kept
    assert [p.rule for p in second.validation.warnings] == ["empty table"]
    assert validate(path, now=NOW).row_counts == first.validation.row_counts
    assert len(counted) == 1
    # an earlier reference time may find timestamps "in the future": validated again
    with pytest.raises(CXDataError, match="timestamp in the future"):
        open_source(path, now=dt.datetime(2025, 1, 2, tzinfo=dt.UTC))
    assert len(counted) == 2


def test_validation_cache_modified_file_revalidates(tmp_path: Path, counted) -> None:
    path = write_source(tmp_path / "s")
    open_source(path, now=NOW)
    open_source(path, now=NOW)
    assert len(counted) == 1
    # same size, same sampled bytes: only the modification time changes; still re-validated
    f = path / "orders.parquet"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    open_source(path, now=NOW)
    assert len(counted) == 2
    write_source(path, orders=_orders().assign(amount=[1.0, 2.0]))  # new content
    assert open_source(path, now=NOW).validation.ok
    assert len(counted) == 3
    (path / "notes.txt").write_text("x")  # any file added to the folder counts
    open_source(path, now=NOW)
    assert len(counted) == 4


def test_validation_cache_broken_file_still_raises_the_same_error(tmp_path: Path,
                                                                 counted, monkeypatch) -> None:
    path = write_source(tmp_path / "s")
    assert open_source(path, now=NOW).validation.ok  # a cached good verdict
    write_source(path, orders=_orders().assign(amount=[-1.0, 1.0]))  # other fingerprint
    with pytest.raises(CXDataError) as cached_run:
        open_source(path, now=NOW)
    with pytest.raises(CXDataError) as again:  # errors are never cached: validated each time
        open_source(path, now=NOW)
    monkeypatch.setenv("CX_VALIDATION_CACHE", "0")
    with pytest.raises(CXDataError) as uncached:
        open_source(path, now=NOW)
    assert str(cached_run.value) == str(again.value) == str(uncached.value)
    assert "orders.amount: out of range — 1 row(s)" in str(cached_run.value)
    assert len(counted) == 4
    assert len(list((tmp_path / "cache" / "validation").glob("*.json"))) == 1


def test_validation_cache_off_and_rules_change(tmp_path: Path, counted, monkeypatch) -> None:
    import cxanalysis.data as data

    path = write_source(tmp_path / "s")
    monkeypatch.setenv("CX_VALIDATION_CACHE", "0")
    open_source(path, now=NOW)
    open_source(path, now=NOW)
    assert len(counted) == 2 and not (tmp_path / "cache").exists()
    monkeypatch.delenv("CX_VALIDATION_CACHE")
    open_source(path, now=NOW)
    open_source(path, now=NOW)
    assert len(counted) == 3
    monkeypatch.setattr(data, "_RULES", ["another version of the rules"])
    open_source(path, now=NOW)
    assert len(counted) == 4


def test_blank_text_is_missing_also_with_unicode_spaces(tmp_path: Path) -> None:
    """Regression test for the fast blank check (trim only where the first character is
    below '!' or not ASCII): every value trim() empties is still "missing value"."""
    events = _events()
    events["event"] = ["\u00a0", "   ", "\u3000\u00a0 ", "visit"]  # NBSP, spaces, mixed
    events["channel"] = ["\tweb", "", "web", "!web"]                # a tab is not blank
    found = problems(write_source(tmp_path / "s", events=events))
    assert found[("events", "event", "missing value")] == (3, (0, 1, 2))
    assert found[("events", "channel", "missing value")] == (1, (1,))
    assert ("events", "stage", "unknown value") not in found
    assert validate(write_source(tmp_path / "t", events=_events().assign(
        stage=["awareness", "nope", None, "purchase"])), now=NOW).errors[0].examples == (1,)


def _parquet_row_groups(path: Path, df: pd.DataFrame, rows: int = 2) -> None:
    """``df`` as a Parquet file of ``rows``-row row groups (each with its own statistics)."""
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=rows)


def test_validation_per_column_on_parquet_statistics_finds_the_same_problems(
        tmp_path: Path, monkeypatch) -> None:
    """Regression test for the per-column WHERE counts on plain Parquet scans (row groups
    that statistics prove clean are skipped): the same problems, rows and examples as the
    one-aggregate path, with errors in some row groups and not in others; and unknown
    customers counted the same whether each row's id is looked up or the ids are
    aggregated first."""
    import cxanalysis.data as data

    path = write_source(tmp_path / "s")
    ts = pd.to_datetime(["2025-01-01 10:00"] * 8).tz_localize(UTC).to_series().reset_index(
        drop=True)
    ts[3] = pd.NaT                                   # row group 1: a missing instant
    ts[5] = pd.Timestamp("2030-01-01", tz=UTC)       # row group 2: in the future
    events = pd.DataFrame({
        "customer_id": ["C0", "C1", "C2", "C0", "C1", "X9", "C2", "C3"],
        "ts": ts,
        "channel": ["web", "web", "app", "app", "\u00a0", "web", "store", "web"],
        "event": ["visit"] * 6 + ["", "visit"],
        "stage": ["awareness", "awareness", "discovery", "awareness", "awareness", "awareness",
                  "nope", None],
    })
    _parquet_row_groups(path / "events.parquet", events)
    feedback = pa.Table.from_pandas(pd.concat([_feedback()] * 3, ignore_index=True).drop(
        columns=["nps", "csat"]), preserve_index=False)
    # csat as integers; nps as doubles with a NaN (Parquet statistics leave NaN out: the
    # row group's max is 3, yet the aggregate counts NaN as above 10)
    feedback = feedback.append_column("csat", pa.array([5, 1, 2, 0, 4, 3], pa.int16()))
    feedback = feedback.append_column("nps", pa.array([9.0, 11.0, 3.0, float("nan"), 10.0,
                                                       None]))
    pq.write_table(feedback, path / "feedback.parquet", row_group_size=2)
    orders = pd.concat([_orders()] * 2, ignore_index=True).assign(
        order_id=["O1", "O2", "O3", "O1"], amount=[1.0, 2.0, -3.0, None])
    _parquet_row_groups(path / "orders.parquet", orders)

    src = open_source(path, validate=False)
    assert src.plain_scans == {"customers", "events", "orders", "feedback"}
    by_column = data._validate(src, src.raw_types, now=NOW)  # ids looked up per row
    monkeypatch.setattr(data, "_GROUP_IDS_FROM", 0)  # ids aggregated first
    assert data._validate(src, src.raw_types, now=NOW).problems == by_column.problems
    src.plain_scans.clear()  # every table through the one-aggregate path
    one_pass = data._validate(src, src.raw_types, now=NOW)
    src.close()
    assert by_column.problems == one_pass.problems
    assert by_column.row_counts == one_pass.row_counts == {
        "customers": 4, "events": 8, "orders": 4, "feedback": 6}
    found = {(p.table, p.column, p.rule): (p.rows, p.examples) for p in by_column.problems}
    assert found == {
        ("events", "ts", "missing value"): (1, (3,)),
        ("events", "ts", "timestamp in the future"): (1, (5,)),
        ("events", "channel", "missing value"): (1, (4,)),
        ("events", "event", "missing value"): (1, (6,)),
        ("events", "stage", "unknown value"): (1, (6,)),
        ("events", "customer_id", "unknown customer"): (1, (5,)),
        ("feedback", "nps", "out of range"): (2, (1, 3)),  # examples: the NaN row too
        ("feedback", "nps", "unparseable value"): (1, (3,)),  # NaN is no integer score
        ("feedback", "csat", "out of range"): (1, (3,)),
        ("orders", "amount", "out of range"): (1, (2,)),
        ("orders", "amount", "missing value"): (1, (3,)),
        ("orders", "order_id", "duplicate key"): (2, (0, 3)),
    }


def test_csv_and_mapped_tables_are_counted_in_one_aggregate(tmp_path: Path) -> None:
    """Only a plain scan gets per-column queries: a CSV is parsed once per query and its rows
    are numbered by a window, which a filter cannot pass."""
    path = write_source(tmp_path / "s", fmt="csv")
    (path / "customers.csv").unlink()
    _customers().to_parquet(path / "customers.parquet", index=False)
    src = open_source(path, validate=False)
    assert src.plain_scans == {"customers"}
    src.close()
    db = tmp_path / "cx.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("df", _events())
        con.execute("CREATE TABLE events AS SELECT * FROM df")
    with open_source(db, validate=False) as src:
        assert src.plain_scans == {"events"}


def test_duplicate_key_hash_collision_falls_back_to_exact_keys(tmp_path: Path,
                                                               monkeypatch) -> None:
    """Regression test for the hashed duplicate-key check: when hashes are shared (here every
    row collides), the keys themselves decide; distinct keys are never reported."""
    import cxanalysis.data as data

    assignments = pd.DataFrame({
        "experiment_id": ["E1", "E1", "E2", "E1"], "customer_id": ["C0", "C1", "C0", "C0"],
        "variant": ["control", "treatment", "control", "control"],
        "assigned_at": pd.to_datetime(["2025-01-01"] * 4).tz_localize(UTC)})
    path = write_source(tmp_path / "s", assignments=assignments)
    src = open_source(path, validate=False)
    src.con.raw_sql("CREATE MACRO cx_collide(a, b := NULL) AS 42")
    monkeypatch.setattr(data, "_KEY_HASH", "cx_collide")
    found = {(p.table, p.column, p.rule): (p.rows, p.examples)
             for p in data._validate(src, src.raw_types, now=NOW).problems}
    src.close()
    # customers C0..C3 and orders O1, O2 collide too, yet are unique
    assert found == {("assignments", "experiment_id,customer_id", "duplicate key"): (2, (0, 3))}
