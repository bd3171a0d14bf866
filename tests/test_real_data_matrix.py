"""Acceptance matrix of issue 10: every notebook runs through ``cxanalysis report`` with only
``--source`` (plus ``steps`` where events were renamed) on variants of a small synthetic world
that look like real exports, ends OK, and names the sections it skipped.

The variants are built here from one small world (300 customers; 60 for the smallest): renamed
channels and events, a single channel, no feedback, feedback without comments, no ``stage``,
no orders, every date moved to 1997, and 60 customers (plus an order history without events or feedback, and an empty events table). Their ``truth/`` folder is removed, as
real data has none. Each variant runs the four notebooks in one ``cxanalysis report`` call
(so 02 and 03 reuse the personas 01 wrote); two variants run at a time (2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from cxanalysis.synth import generate

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("00_data_overview", "01_segments_vs_personas", "02_journey_funnel",
             "03_test_and_learn")
CLI = str(Path(sys.executable).with_name("cxanalysis"))

CHANNEL_NAMES = {"web": "website", "app": "mobile", "store": "shop", "call_centre": "phone",
                 "email": "newsletter", "social": "socials", "chat": "live_chat"}
EVENT_NAMES = {"visit": "session_start", "product_view": "item_view",
               "add_to_cart": "basket_add", "checkout": "checkout_start",
               "purchase": "order_placed", "support_contact": "help_request",
               "loyalty_login": "member_login", "delivery_update": "parcel_scan",
               "delivery": "parcel"}
RENAMED_STEPS = "steps=[session_start, item_view, basket_add, checkout_start, order_placed]"
SHIFT = pd.Timestamp("2025-01-01") - pd.Timestamp("1997-01-01")  # 1997 has 2025's calendar


def _rewrite(folder: Path, table: str, fn) -> None:
    path = folder / f"{table}.parquet"
    fn(pd.read_parquet(path)).to_parquet(path, index=False)


def _rename(folder: Path) -> None:
    for t in ("events", "orders", "feedback"):
        def ren(d: pd.DataFrame) -> pd.DataFrame:
            d["channel"] = d["channel"].map(CHANNEL_NAMES)
            if "event" in d:
                d["event"] = d["event"].replace(EVENT_NAMES)
            return d
        _rewrite(folder, t, ren)


def _single_channel(folder: Path) -> None:
    for t in ("events", "orders", "feedback"):
        _rewrite(folder, t, lambda d: d.assign(channel="web"))


def _shift_1997(folder: Path) -> None:
    cols = {"events": ["ts"], "orders": ["ts"], "feedback": ["ts"],
            "assignments": ["assigned_at"], "experiments": ["start", "end"],
            "customers": ["signup_date"]}
    for t, cs in cols.items():
        def shift(d: pd.DataFrame, cs=cs) -> pd.DataFrame:
            for c in cs:
                d[c] = d[c] - SHIFT
            return d
        _rewrite(folder, t, shift)


VARIANTS = {
    # name: (customers, modifier, extra report arguments,
    #        {notebook: sections that must be skipped})
    "renamed": (300, _rename, ["-p", RENAMED_STEPS], {}),
    "single_channel": (300, _single_channel, [], {}),
    "no_feedback": (300, lambda f: (f / "feedback.parquet").unlink(), [],
                    {"00_data_overview": ["Feedback scores"],
                     "02_journey_funnel": ["Feedback by touchpoint", "Comment themes"]}),
    "no_comments": (300, lambda f: _rewrite(f, "feedback", lambda d: d.drop(columns="comment")),
                    [], {"02_journey_funnel": ["Comment themes"]}),
    "no_stage": (300, lambda f: _rewrite(f, "events", lambda d: d.drop(columns="stage")), [],
                 {"00_data_overview": ["Journey-stage coverage"],
                  "02_journey_funnel": ["Stage durations"]}),
    "no_orders": (300, lambda f: (f / "orders.parquet").unlink(), [],
                  {"01_segments_vs_personas": ["Value tiers"],
                   "02_journey_funnel": ["Moments of truth"]}),
    "year_1997": (300, _shift_1997, [], {}),
    "customers_60": (60, lambda f: None, [], {}),
    # an order history: personas from purchases (02 has no events to run on)
    "orders_only": (300, lambda f: [(f / f"{t}.parquet").unlink() for t in ("events",
                                                                            "feedback")],
                    ["00_data_overview", "01_segments_vs_personas", "03_test_and_learn"],
                    {"00_data_overview": ["Volume over time by channel", "Channel mix",
                                          "Journey-stage coverage", "Feedback scores"]}),
    # an empty events table: 00 describes what there is (02 and 03 have no core to run)
    "empty_events": (60, lambda f: _rewrite(f, "events", lambda d: d.iloc[:0]),
                     ["00_data_overview"],
                     {"00_data_overview": ["Volume over time by channel", "Channel mix",
                                           "Journey-stage coverage"]}),
}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Build every variant and run the four notebooks on it; {variant: {notebook: record}}."""
    base = tmp_path_factory.mktemp("matrix")
    worlds = {n: generate(n, seed=7, out=base / f"world_{n}") for n in (300, 60)}

    # two reports run at once on 2 cores: one BLAS/OpenMP thread each, or their thread pools
    # fight over the cores (the small clusterings become many times slower)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}

    def run(name: str) -> tuple[str, dict]:
        n, modify, extra, _skips = VARIANTS[name]
        src = base / name / "data"
        shutil.copytree(worlds[n], src)
        shutil.rmtree(src / "truth")  # real data has no ground truth
        modify(src)
        out = base / name / "reports"
        proc = subprocess.run([CLI, "report", "--source", str(src), "--out", str(out),
                               "--notebooks-dir", str(ROOT / "notebooks"), *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
        recs = {nb: json.loads((out / f"{nb}.results.json").read_text()) for nb in NOTEBOOKS
                if (out / f"{nb}.results.json").exists()}
        return name, {"rc": proc.returncode, "log": proc.stdout + proc.stderr, "out": out,
                      "records": recs}

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, VARIANTS))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_notebook_ends_ok_and_names_its_skipped_sections(matrix, variant: str) -> None:
    got = matrix[variant]
    recs = got["records"]
    wanted = [a for a in VARIANTS[variant][2] if a in NOTEBOOKS] or list(NOTEBOOKS)
    assert sorted(recs) == sorted(wanted), got["log"][-3000:]
    failed = {nb: r["error"] for nb, r in recs.items() if r["status"] != "OK"}
    assert not failed, failed
    assert got["rc"] == 0, got["log"][-3000:]
    for nb, r in recs.items():
        skipped = r["results"]["skipped"]
        assert all(set(s) == {"section", "reason"} and s["reason"] for s in skipped), skipped
        page = (got["out"] / f"{nb}.html").read_text()
        for s in skipped:  # the report shows the one-line note
            assert f"{s['section']} — skipped:" in page
    for nb, sections in VARIANTS[variant][3].items():
        names = [s["section"] for s in recs[nb]["results"]["skipped"]]
        for section in sections:
            assert section in names, (nb, names)


def test_windows_follow_the_data(matrix) -> None:
    r1997 = matrix["year_1997"]["records"]
    assert r1997["01_segments_vs_personas"]["results"]["windows"] == {
        "calibration": ["1997-01-01", "1997-09-30"], "holdout": ["1997-10-01", "1997-12-31"]}
    assert r1997["02_journey_funnel"]["results"]["windows"]["moments_outcome"] == [
        "1997-10-01", "1997-12-31"]
    assert r1997["03_test_and_learn"]["results"]["persona_calibration"] == [
        "1997-01-01", "1997-09-30"]


def test_personas_use_the_source_vocabulary_and_are_shared(matrix) -> None:
    renamed = matrix["renamed"]["records"]["01_segments_vs_personas"]["results"]
    # channels enter as centred log-ratios (clr_), the raw shares are profiled only
    assert "clr_live_chat" in renamed["features"] + list(renamed["features_dropped"])
    assert "share_live_chat" in renamed["features_not_clustered"]
    assert not any(f.removeprefix("clr_") in CHANNEL_NAMES for f in renamed["features"])
    single = matrix["single_channel"]["records"]["01_segments_vs_personas"]["results"]
    assert single["features_dropped"]["clr_web"].startswith("constant")
    orders = matrix["orders_only"]["records"]["01_segments_vs_personas"]["results"]
    assert "orders_per_month" in orders["features"]
    assert not any(f.startswith("mix_") for f in orders["features"])
    for variant in VARIANTS:
        recs = matrix[variant]["records"]
        if "03_test_and_learn" not in recs:
            continue
        if "02_journey_funnel" in recs:
            assert recs["02_journey_funnel"]["results"]["personas_reused"] is True, variant
        assert recs["03_test_and_learn"]["results"]["personas_reused"] is True, variant
        # the shared file holds customer ids: it sits next to the reports, never in them
        out = matrix[variant]["out"]
        ids = pd.read_parquet(out / "persona_assignments.parquet")["customer_id"]
        page = (out / "01_segments_vs_personas.html").read_text()
        assert not any(str(i) in page for i in ids[:20])
