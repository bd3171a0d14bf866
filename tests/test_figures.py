"""Figure audit (issue 12 item 3): every result's plot reads without its code.

Data-driven: each entry of ``CASES`` names a figure and builds it (on the demo world or on a
hand-made result). Every figure must have a title and both axis labels in words, and no tick
label may read as an internal missing value ("(null)", "nan", "None"). A second table,
``SUPPRESSED``, builds figures of results with a suppressed group and checks that the group is
neither drawn nor named. To cover another module, add its figures to ``CASES``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cxanalysis import attribution as at
from cxanalysis import comparison as cmp
from cxanalysis import experiments as ex
from cxanalysis import journeys as jr
from cxanalysis import overview as ov
from cxanalysis import painpoints as pp
from cxanalysis.breakdowns import Breakdown
from cxanalysis.plotting import display_label

#: Tick labels that show an internal missing value instead of words.
BAD_TICKS = {"(null)", "nan", "None", "NaN", "<NA>"}
STEPS = ["visit", "product_view", "add_to_cart", "checkout", "purchase"]
CAL = ("2025-01-01", "2025-09-30")
OUT = ("2025-10-01", "2025-12-31")


@pytest.fixture(scope="module")
def built(world) -> dict[str, Any]:
    """Results shared by several figures, computed once per module."""
    cache: dict[str, Any] = {}

    def get(name: str, make: Callable[[], Any]) -> Any:
        if name not in cache:
            cache[name] = make()
        return cache[name]

    return {"get": get, "world": world}


def _paths(b):
    return b["get"]("paths", lambda: jr.journey_paths(b["world"]))


def _experiment(b):
    return b["get"]("exp", lambda: ex.analyze(b["world"], "exp_checkout_redesign",
                                              secondary_metrics=["revenue", "nps"],
                                              guardrails={}))


def _comparison():
    # hand-made: grouping "true" generated the outcomes, "noise" did not
    rng = np.random.default_rng(3)
    n = 600
    true = rng.integers(0, 3, n)
    idx = [f"c{i}" for i in range(n)]
    y = (rng.random(n) < np.array([0.2, 0.4, 0.6])[true]).astype(float)
    groups = {"segments": pd.Series(rng.integers(0, 3, n).astype(str), index=idx),
              "personas": pd.Series(np.array(["a", "b", "c"])[true], index=idx)}
    out = pd.DataFrame({"converted": y, "revenue": y * 20 + rng.random(n)}, index=idx)
    return cmp.compare_groupings(groups, out, reference=("segments", "personas"),
                                 n_perm=2, n_boot=20)


def _funnel(b):
    from cxanalysis.funnel import funnel

    return b["get"]("funnel", lambda: funnel(b["world"], STEPS))


def _personas(b):
    from cxanalysis import personas as P

    return b["get"]("personas", lambda: P.fit_personas(b["world"], *CAL, k=3, random_state=0,
                                                       n_bootstrap=2))


#: (figure name, builder: fixture dict -> Axes or Figure)
CASES: list[Any] = [
    ("overview.TableSummary", lambda b: ov.table_summary(b["world"]).plot()),
    ("overview.VolumeOverTime", lambda b: ov.volume_over_time(b["world"], "week").plot()),
    ("overview.ChannelMix", lambda b: ov.channel_mix(b["world"]).plot()),
    ("overview.StageCoverage", lambda b: ov.stage_coverage(b["world"]).plot()),
    ("overview.FeedbackDistributions",
     lambda b: ov.feedback_distributions(b["world"]).plot()),
    ("overview.ExperimentsPresent", lambda b: ov.experiments_present(b["world"]).plot()),
    ("painpoints.FeedbackByTouchpoint",
     lambda b: pp.feedback_by_touchpoint(b["world"]).plot()),
    ("painpoints.CommentThemes",
     lambda b: pp.comment_themes(b["world"], n_themes=4, seed=0).plot()),
    ("painpoints.MomentsOfTruth", lambda b: pp.moments_of_truth(b["world"], CAL, OUT).plot()),
    ("journeys.PathCounts", lambda b: _paths(b).plot()),
    ("journeys.PathCounts.transitions", lambda b: _paths(b).plot_transitions()),
    ("journeys.PathCounts.flow", lambda b: _paths(b).plot_flow()),
    ("journeys.StageDurations", lambda b: jr.stage_durations(b["world"]).plot()),
    ("attribution.Attribution", lambda b: at.attribute(_paths(b), n_boot=10).plot()),
    ("comparison.Comparison", lambda b: _comparison().plot()),
    ("comparison.Comparison.crosstab", lambda b: _comparison().plot_crosstab()),
    ("breakdowns.Breakdown", lambda b: Breakdown.from_counts(
        "region", pd.DataFrame({"group": ["north", "south", "(unknown)"],
                                "customers": [400, 300, 120],
                                "converted": [40, 45, 10]})).plot()),
    ("experiments.ExperimentResult", lambda b: _experiment(b).plot()),
    ("experiments.Sequential", lambda b: _experiment(b).sequential.plot()),
    ("experiments.Segmented",
     lambda b: _experiment(b).breakdown("region", source=b["world"]).plot()),
    ("funnel.FunnelResult", lambda b: _funnel(b).plot()),
    ("funnel.PainPoints", lambda b: _funnel(b).dropoff().plot()),
    # a funnel breakdown is a breakdowns.Breakdown (this module's figure)
    ("funnel.Breakdown", lambda b: _funnel(b).breakdown().plot()),
    ("personas.Personas", lambda b: _personas(b).plot()),
    ("personas.Personas.sweep", lambda b: _personas(b).plot_sweep()),
]


def _axes(fig_or_ax: Any) -> list[plt.Axes]:
    """The data axes of a figure (colour bars and empty panels aside)."""
    if isinstance(fig_or_ax, plt.Axes):
        return [fig_or_ax]
    return [a for a in fig_or_ax.axes if a.has_data() or a.get_title()]


def _ticks(ax: plt.Axes) -> list[str]:
    return [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels())]


def _title(ax: plt.Axes) -> str:
    fig = ax.figure
    sup = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    return ax.get_title() or sup


@pytest.mark.parametrize(("name", "build"), CASES,
                         ids=[c.values[0] if hasattr(c, "values") else c[0] for c in CASES])
def test_figure_has_title_axis_labels_and_no_missing_value_ticks(built, name, build) -> None:
    out = build(built)
    try:
        axes = _axes(out)
        assert axes, f"{name}: no axes"
        for ax in axes:
            ax.figure.canvas.draw()  # tick labels are set when drawn
            assert _title(ax).strip(), f"{name}: no title"
            assert ax.get_xlabel().strip(), f"{name}: no x-axis label"
            assert ax.get_ylabel().strip(), f"{name}: no y-axis label"
            bad = [t for t in _ticks(ax) if t.strip() in BAD_TICKS]
            assert not bad, f"{name}: tick labels {bad}"
    finally:
        plt.close("all")


def test_date_axes_use_concise_dates(world) -> None:
    """Date axes go through plotting.date_axis (concise labels that do not overlap)."""
    import matplotlib.dates as mdates

    ax = ov.volume_over_time(world, "week").plot()
    assert isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    plt.close("all")


# ------------------------------------------------------------------ suppressed groups


def _mix_with_a_small_channel(b):
    """Channel mix with min_group_size between the smallest and the next channel."""
    sizes = ov.channel_mix(b["world"]).table().sort_values("customers")["customers"]
    k = int(sizes.iloc[0]) + 1
    mix = ov.channel_mix(b["world"], min_group_size=k)
    return mix, set(mix.table().loc[mix.table().suppressed, "channel"])


def _segmented_with_a_small_region(b):
    res = _experiment(b)
    full = res.breakdown("region", source=b["world"]).table()
    k = int(full[["n_control", "n_treatment"]].min(axis=1).min()) + 1
    seg = dataclasses.replace(res, min_group_size=k).breakdown("region", source=b["world"])
    return seg, set(seg.table().loc[seg.table().suppressed, "group"])


def _breakdown_with_a_small_group(_b):
    bd = Breakdown.from_counts("region", pd.DataFrame(
        {"group": ["north", "south", "tiny"], "customers": [400, 300, 4],
         "converted": [40, 45, 1]}), min_group_size=10)
    return bd, {"tiny"}


def _stage_coverage_with_a_small_stage(b):
    cov = ov.stage_coverage(b["world"])
    k = int(cov.table()["customers"].min()) + 1
    cov = ov.stage_coverage(b["world"], min_group_size=k)
    return cov, set(cov.table().loc[cov.table().suppressed, "stage"])


SUPPRESSED = [
    ("overview.ChannelMix", _mix_with_a_small_channel),
    ("overview.StageCoverage", _stage_coverage_with_a_small_stage),
    ("breakdowns.Breakdown", _breakdown_with_a_small_group),
    ("experiments.Segmented", _segmented_with_a_small_region),
]


@pytest.mark.parametrize(("name", "build"), SUPPRESSED, ids=[c[0] for c in SUPPRESSED])
def test_suppressed_group_is_neither_drawn_nor_named(built, name, build) -> None:
    result, small = build(built)
    assert small, f"{name}: the case suppresses no group"
    ax = result.plot()
    try:
        ax.figure.canvas.draw()
        ticks = set(_ticks(ax))
        assert not (ticks & {str(g) for g in small}), f"{name}: draws {small}"
        # the other groups are still named (the check above is not vacuous)
        col = "channel" if name.endswith("ChannelMix") else \
            "stage" if name.endswith("StageCoverage") else "group"
        shown = {display_label(g) for g in result.table()[col]} - {str(g) for g in small}
        assert shown and all(any(g in t for t in ticks) for g in shown), (shown, ticks)
    finally:
        plt.close("all")
