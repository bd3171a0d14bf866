"""Feedback by touchpoint, comment themes and moments of truth on the demo world."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cxanalysis import painpoints as pp


def test_feedback_by_touchpoint_matches_pandas(world, world_path: Path) -> None:
    got = pp.feedback_by_touchpoint(world).table().set_index(["event", "channel"])
    fb = pd.read_parquet(world_path / "feedback.parquet")
    for (event, channel), g in fb.groupby(["event", "channel"]):
        nps = g.nps.dropna()
        expected = 100 * ((nps >= 9).mean() - (nps <= 6).mean())
        assert got.loc[(event, channel), "nps"] == pytest.approx(expected)
        assert got.loc[(event, channel), "answers"] == len(g)


def test_comment_themes_recover_the_planted_themes(world, world_path: Path) -> None:
    themes = pp.comment_themes(world, n_themes=5, seed=0)
    words = " | ".join(themes.words["top_words"])
    assert "late" in words and "checkout" in words
    assert "@" not in words and "alex" not in words.lower()  # redacted before modelling
    # comments about checkout are dominated by one theme, about the app checkout
    chk = themes.table()[themes.table().event == "checkout"].sort_values("share").iloc[-1]
    top = themes.words.set_index("theme").loc[chk.theme, "top_words"]
    assert chk.share > 0.8 and "checkout" in top
    again = pp.comment_themes(world, n_themes=5, seed=0)
    pd.testing.assert_frame_equal(themes.words, again.words)  # seeded


def test_moments_of_truth_finds_loyalty_for_retention(world) -> None:
    mot = pp.moments_of_truth(world, ("2025-01-01", "2025-09-30"),
                              ("2025-10-01", "2025-12-31"))
    assert mot.auc["conversion"] > 0.6 and mot.auc["retention"] > 0.6
    assert mot.top("retention", 1).touchpoint.iloc[0] == "loyalty_login"
