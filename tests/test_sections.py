"""Report sections that degrade (cxanalysis.sections), and the real-data error messages."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxanalysis import funnel
from cxanalysis.data import CXDataError, open_source
from cxanalysis.results import to_jsonable
from cxanalysis.sections import Sections, SectionSkipped, missing


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    """Events without a ``stage`` column, no feedback table."""
    folder = tmp_path_factory.mktemp("small")
    pd.DataFrame({"customer_id": ["a", "a", "b", "b", "b"],
                  "ts": pd.to_datetime(["2024-01-01T10:00Z", "2024-01-01T11:00Z",
                                        "2024-01-02T10:00Z", "2024-01-02T10:05Z",
                                        "2024-01-03T10:00Z"], utc=True),
                  "channel": "web",
                  "event": ["page", "buy", "page", "page", "scroll"]}).to_parquet(
        folder / "events.parquet", index=False)
    return open_source(folder)


def test_missing_names_tables_and_columns(small) -> None:
    assert missing(small, ["events"], ["events.channel"]) == []
    assert missing(small, ["feedback"], ["events.stage", "feedback.comment"]) == [
        "table feedback", "column events.stage"]
    assert missing(None, ["events"]) == ["table events"]


def test_a_section_that_lacks_data_is_skipped_with_one_line(small, capsys) -> None:
    sections = Sections()
    ran = []
    with sections("Journey-stage coverage"):
        sections.need(small, columns=["events.stage"])
        ran.append("stage")  # never reached
    with sections("Channel mix"):
        sections.need(small, columns=["events.channel"])
        ran.append("mix")
    with sections("Moments of truth"):
        sections.need(small, customers=3, min_customers=10)
    with sections("Themes"):
        raise CXDataError("only 2 comments:\n too few")  # the package's own refusal
    assert ran == ["mix"]
    assert sections.skipped == [
        {"section": "Journey-stage coverage", "reason": "needs column events.stage"},
        {"section": "Moments of truth", "reason": "needs at least 10 customers (found 3)"},
        {"section": "Themes", "reason": "needs data it lacks: only 2 comments: too few"}]
    out = capsys.readouterr().out.splitlines()
    assert out == ["Journey-stage coverage — skipped: needs column events.stage",
                   "Moments of truth — skipped: needs at least 10 customers (found 3)",
                   "Themes — skipped: needs data it lacks: only 2 comments: too few"]
    assert to_jsonable({"skipped": sections.skipped})["skipped"][0]["section"] == \
        "Journey-stage coverage"
    assert sections.names == ["Journey-stage coverage", "Moments of truth", "Themes"]
    assert sections.summary().startswith("Skipped sections: Journey-stage coverage (needs")


def test_a_defect_inside_a_section_still_fails() -> None:
    sections = Sections(echo=False)
    with pytest.raises(ZeroDivisionError), sections("Broken"):
        _ = 1 / 0
    with pytest.raises(SectionSkipped, match="needs two channels"):
        sections.require(False, "two channels")
    assert sections.skipped == [] and sections.summary() == "Every section ran."


def test_missing_funnel_step_lists_the_events_the_source_has(small) -> None:
    # regression: the error named only the missing step, so a user with their own event
    # names could not tell what to put in `steps`
    with pytest.raises(CXDataError) as err:
        funnel.funnel(small, ["visit", "buy"])
    msg = str(err.value)
    assert "['visit'] never occur" in msg
    assert "the most frequent events are: page (3), buy (1), scroll (1)" in msg


def test_sections_helper_lives_in_the_package_not_the_notebooks() -> None:
    root = Path(__file__).resolve().parents[1]
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        text = nb.read_text()
        assert "from cxanalysis.sections import Sections" in text, nb.name
        assert "class Sections" not in text
