"""The executive index (issue 12, item 4): one card per report with its headline, drawn
from hand-written ``NAME.results.json`` files."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from cxanalysis.formatting import headline
from cxanalysis.report import write_index

OVERVIEW = {"customers": 5000, "date_span": ["2025-01-01", "2025-12-31"],
            "experiments": ["exp_a", "exp_b"], "nps": 12.4,
            "tables": {"customers": {"rows": 5000}, "events": {"rows": 362181},
                       "orders": {"rows": 11510}, "feedback": {"rows": 2622},
                       "assignments": {"rows": 15948}},
            "validation_problems": 0}
PERSONAS = {"k": 3, "persona_sizes": {"a": 1200, "b": 800, "c": 45},
            "stability_jaccard": {"a": 0.95, "b": 0.81, "c": 0.52}, "seed_ari": 0.874,
            "segment_persona_ari": 0.0123}
FUNNEL = {"steps": [{"event": "visit", "customers": 4000, "conversion_from_first": 1.0},
                    {"event": "purchase", "customers": 120, "conversion_from_first": 0.03}],
          "biggest_leak": {"step": "checkout", "next_step": "purchase", "channel": "app",
                           "customers_lost": 68.24, "dropped": 174, "rate": 0.152,
                           "overall_rate": 0.0925}}
EXPERIMENT = {"experiment_id": "exp_checkout", "decision": "ship", "decision_variant": "new",
              "primary_metric": "conversion", "srm_flagged": False,
              "reason": "treatment improves conversion",
              "metrics": {
                  "conversion": {"role": "primary", "reported": False, "label": "conversion",
                                 "rel_lift": 0.5, "rel_ci": [0.1, 0.9], "p_adjusted": 0.2},
                  "conversion_cuped": {"role": "primary", "reported": True,
                                       "label": "conversion, CUPED-adjusted",
                                       "rel_lift": 0.0412, "rel_ci": [0.0103, 0.0721],
                                       "p_adjusted": 0.0004},
                  "revenue": {"role": "secondary", "reported": True, "label": "revenue",
                              "rel_lift": 0.01, "rel_ci": [-0.02, 0.04], "p_adjusted": 0.5}}}


def test_headline_of_each_kind_of_report():
    assert headline(OVERVIEW) == [
        "362,181 events from 5,000 customers in 5 tables.",
        "Period: 2025-01-01 to 2025-12-31.", "Valid: no problems found.",
        "Nothing missing: customers, events, orders, feedback and assignments are all "
        "present.", "Overall NPS +12.", "2 experiments: exp_a, exp_b."]
    assert headline(PERSONAS) == [
        "3 personas found (1,200, 800, 45 customers).",
        "2 of 3 stable (bootstrap Jaccard >= 0.75; lowest 0.52).",
        "Same personas across seeds: ARI 0.87.",
        "Agreement with demographic segments: ARI 0.01."]
    assert headline(FUNNEL) == [
        "3.0% of 4,000 customers go from visit to purchase.",
        "Biggest leak: checkout to purchase on app, 68 customers lost (drop-out 15.2% "
        "against 9.2% overall)."]
    assert headline(EXPERIMENT) == [
        "exp_checkout: SHIP (new).",
        "conversion, CUPED-adjusted: +4.1% (+1.0% to +7.2%), p < 0.001."]


def test_headline_says_what_is_wrong():
    bad = {**OVERVIEW, "validation_problems": 2,
           "tables": {"events": {"rows": 10}, "customers": {"rows": 5}}}
    lines = headline(bad)
    assert "NOT valid: 2 validation problems." in lines
    assert "Missing tables: orders, feedback, assignments." in lines
    srm = {**EXPERIMENT, "decision": "keep testing", "srm_flagged": True,
           "reason": "treatment improves conversion, but not every guardrail rules out harm "
                     "beyond its margin: support (treatment): ..."}
    lines = headline(srm)
    assert lines[0] == "exp_checkout: KEEP TESTING."
    assert "Why not ship: not every guardrail rules out harm beyond its margin." in lines
    assert lines[-1] == "WARNING: sample ratio mismatch; no effect can be trusted."
    assert headline({}) == [] and headline({"something": 1}) == []


def _record(name: str, results: dict, status: str = "OK", error: str | None = None) -> dict:
    return {"notebook": name, "status": status, "parameters": {"source": "../data/demo"},
            "source": "/data/shop", "source_fingerprint": "abc123def4567890",
            "package_version": "0.1.0", "finished_at": "2025-06-01T10:11:12+00:00",
            "duration_s": 8.5, "error": error, "results": results, "run_id": None}


def _cards(page: str) -> dict[str, str]:
    found = re.findall(r"<section class='card'><h2>.*?>(\w+)</a></h2>(.*?)</section>", page)
    return {name: html.unescape(body) for name, body in found}


def test_index_is_a_one_page_summary_with_a_card_per_report(tmp_path: Path):
    records = {"00_data_overview": _record("00_data_overview", OVERVIEW),
               "01_segments_vs_personas": _record("01_segments_vs_personas", PERSONAS),
               "02_journey_funnel": _record("02_journey_funnel", FUNNEL),
               "03_test_and_learn": _record("03_test_and_learn", EXPERIMENT),
               "04_broken": _record("04_broken", {}, "FAILED",
                                    "ValueError: no events table (cell 3)")}
    for name, rec in records.items():
        (tmp_path / f"{name}.results.json").write_text(json.dumps(rec))
    page = write_index(tmp_path).read_text()
    cards = _cards(page)
    assert list(cards) == list(records)
    for name, body in cards.items():
        for line in headline(records[name]["results"]):
            assert f"<li>{line}</li>" in body
        assert "source <code>/data/shop</code>" in body
        assert "fingerprint <code>abc123def4567890</code>" in body
        assert "finished 2025-06-01 10:11 UTC in 8.5 s" in body
        assert f'<a href="{name}.results.json">results</a>' in body
    assert "<p class='status ok'>OK</p>" in cards["03_test_and_learn"]
    assert "<p class='status failed'>FAILED</p>" in cards["04_broken"]
    assert "ValueError: no events table (cell 3)" in cards["04_broken"]
    assert "Biggest leak: checkout to purchase on app, 68 customers lost" in page
    # no raw JSON or Python repr on the page
    assert "{'" not in page and '{"' not in page and "0.0412" not in page
