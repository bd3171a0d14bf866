"""The shared formatting layer (issue 12, item 1): exact strings on hand-made frames."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from cxanalysis.formatting import (
    ResultMixin,
    answer_box,
    column_kind,
    column_label,
    format_number,
    format_percent,
    format_pvalue,
    format_table,
    format_value,
)


def _cells(html_text: str) -> list[list[str]]:
    """The text of every body cell, row by row (HTML entities unescaped)."""
    import html

    body = html_text.split("<tbody>")[1].split("</tbody>")[0]
    return [[html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def _heads(html_text: str) -> list[str]:
    return re.findall(r"<th>(.*?)</th>", html_text)


@pytest.mark.parametrize(("x", "text"), [
    (1234567, "1,234,567"), (1234.5, "1,234"), (12.345, "12.35"), (0.01234, "0.0123"),
    (0, "0"), (-2500.0, "-2,500"), (3.0, "3"), (0.00001234, "1.23e-05")])
def test_format_number(x, text):
    assert format_number(x) == text


def test_format_number_signed():
    assert format_number(2.5, signed=True) == "+2.50"
    assert format_number(-2.5, signed=True) == "-2.50"


@pytest.mark.parametrize(("x", "text"), [
    (0.785, "78.5%"), (0.00042, "0.04%"), (1.0, "100.0%"), (0.0, "0%"), (12.5, "1,250.0%")])
def test_format_percent(x, text):
    assert format_percent(x) == text


@pytest.mark.parametrize(("p", "text"), [
    (0.0004, "< 0.001"), (0.001, "0.001"), (0.0421, "0.042"), (0.5, "0.500"), (0.0, "< 0.001")])
def test_format_pvalue(p, text):
    assert format_pvalue(p) == text


def test_format_value_missing_bool_dates():
    assert format_value(np.nan, "number") == "–"
    assert format_value(None, "percent") == "–"
    assert format_value(pd.NA, "count") == "–"
    assert format_value(True, "bool") == "yes"
    assert format_value(pd.Timestamp("2025-03-01", tz="UTC"), "date") == "2025-03-01"
    assert format_value(pd.Timestamp("2025-03-01 14:05:09"), "date") == "2025-03-01 14:05"


def test_column_labels_in_words_with_units():
    assert column_label("p_adjusted") == "p-value (corrected)"
    assert column_label("window_days") == "window (days)"
    assert column_label("duration_s") == "duration (seconds)"
    assert column_label("median_hours") == "median (hours)"
    assert column_label("control_mean") == "control mean"
    assert column_label("x", {"x": "the x (EUR)"}) == "the x (EUR)"


def test_column_kinds():
    assert column_kind("p_value") == "pvalue"
    assert column_kind("srm_p_value") == "pvalue"
    assert column_kind("conversion_from_first") == "percent"
    assert column_kind("rate") == "percent"
    assert column_kind("customers", pd.Series([1.0])) == "count"
    assert column_kind("revenue", pd.Series([1.5])) == "number"
    assert column_kind("revenue", pd.Series([1])) == "count"
    assert column_kind("event", pd.Series(["a"])) == "text"
    assert column_kind("significant", pd.Series([True])) == "bool"


def test_format_table_exact_cells():
    df = pd.DataFrame({
        "metric": ["conversion", "revenue"],
        "customers": [12345, 20],
        "rel_lift": [0.0321, -0.012],
        "rel_ci_low": [0.01, -0.05],
        "rel_ci_high": [0.05, 0.026],
        "abs_diff": [0.004, -1.5],
        "p_value": [0.0004, 0.3456],
        "significant": [True, False],
        "window_days": [7.0, 7.0],
    })
    out = format_table(df)
    assert _heads(out) == ["metric", "customers", "relative lift", "relative lift interval",
                           "difference", "p-value", "window (days)"]
    assert _cells(out) == [
        ["conversion", "12,345", "+3.2%", "+1.0% to +5.0%", "+0.004", "< 0.001 *", "7"],
        ["revenue", "20", "-1.2%", "-5.0% to +2.6%", "-1.50", "0.346", "7"],
    ]
    # the significant row's p-value, lift and interval cells are marked; the other's are not
    first, second = out.split("<tbody>")[1].split("</tr>")[:2]
    assert first.count('class="num sig"') == 4
    assert "sig" not in second
    assert "significant" not in _heads(out)
    assert "* and shaded: significant" in out


def test_format_table_suppressed_cells_show_min_group_size():
    df = pd.DataFrame({"channel": ["web", "app"], "customers": pd.array([250, pd.NA], "Int64"),
                       "rate": [0.25, np.nan], "suppressed": [False, True]})
    out = format_table(df, min_group_size=10)
    assert _cells(out) == [["web", "250", "25.0%"], ["app", "<10", "<10"]]
    assert _heads(out) == ["channel", "customers", "rate"]
    assert "&lt;10: fewer than 10 customers, not shown (privacy)." in out
    assert _cells(format_table(df, min_group_size=25))[1] == ["app", "<25", "<25"]


def test_format_table_no_index_column_and_named_index_kept():
    df = pd.DataFrame({"rows": [10, 20]}, index=[5, 7])
    assert _cells(format_table(df)) == [["10"], ["20"]]
    named = pd.DataFrame({"rows": [10]}, index=pd.Index(["events"], name="table"))
    out = format_table(named)
    assert _heads(out) == ["table", "rows"]
    assert _cells(out) == [["events", "10"]]


def test_format_table_missing_value_is_a_dash_not_nan():
    out = format_table(pd.DataFrame({"persona": ["a"], "score": [np.nan]}))
    assert _cells(out) == [["a", "–"]]
    assert "NaN" not in out and "nan" not in out


def test_format_table_scrolls_in_its_own_box_and_escapes():
    out = format_table(pd.DataFrame({"x": ["<b>&"]}), caption="Top <paths>")
    assert out.startswith('<div class="cx-table"><style>')
    assert "div.cx-table{overflow-x:auto;max-width:100%" in out
    assert "&lt;b&gt;&amp;" in out and "Top &lt;paths&gt;" in out


def test_format_table_max_rows_and_notes():
    out = format_table(pd.DataFrame({"n": range(60)}), max_rows=50, notes=["Fell back to X."])
    assert len(_cells(out)) == 50
    assert "10 more rows not shown" in out
    assert "Fell back to X." in out


def test_format_table_kinds_override_and_hide():
    df = pd.DataFrame({"nps_share": [0.5], "secret": [1]})
    out = format_table(df, kinds={"nps_share": "number"}, hide=["secret"])
    assert _cells(out) == [["0.50"]]


def test_answer_box_escapes_and_lists_sentences():
    box = answer_box("Is the data valid?", ["Yes: 0 problems.", "1 < 2"], status="ok")
    assert "<li>Yes: 0 problems.</li><li>1 &lt; 2</li>" in box
    assert "Is the data valid?" in box and "#1b5e20" in box


@dataclass
class _Toy(ResultMixin):
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    min_group_size: int = 5

    def table(self) -> pd.DataFrame:
        return self.frame


@dataclass
class _NoNotes(ResultMixin):
    frame: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return self.frame


def test_result_mixin_protocol():
    df = pd.DataFrame({"group": ["a", "b"], "customers": pd.array([40, pd.NA], "Int64"),
                       "suppressed": [False, True],
                       "when": pd.to_datetime(["2025-01-02", "2025-01-03"])})
    toy = _Toy(df, notes=["a fallback"])
    html_text = toy._repr_html_()
    assert _cells(html_text) == [["a", "40", "2025-01-02"], ["b", "<5", "2025-01-03"]]
    assert "a fallback" in html_text
    d = toy.to_dict()
    json.dumps(d, allow_nan=False)  # JSON-safe
    assert d["table"][1]["customers"] is None and d["notes"] == ["a fallback"]
    assert _NoNotes(df).notes == ()
    assert _NoNotes(df).to_dict()["notes"] == []


# --------------------------------------------------------------------------- figures (item 3)


def test_display_label_has_no_null_state():
    from cxanalysis.plotting import display_label

    assert display_label("(null)") == "no conversion"
    assert display_label("(conversion)") == "conversion"
    assert display_label(None) == "unknown"
    assert display_label(np.nan) == "unknown"
    assert display_label("web") == "web"


def test_use_theme_sets_colorblind_palette_and_concise_dates():
    import matplotlib as mpl
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import seaborn as sns

    from cxanalysis.plotting import date_axis, is_themed, use_theme

    with mpl.rc_context():
        use_theme()
        assert is_themed()
        first = mpl.colors.to_hex(mpl.rcParams["axes.prop_cycle"].by_key()["color"][0])
        assert first == mpl.colors.to_hex(sns.color_palette("colorblind")[0])
        fig, ax = plt.subplots()
        days = pd.date_range("2025-01-01", periods=90, freq="D")
        ax.plot(days.to_pydatetime(), np.arange(90))
        date_axis(ax)
        assert isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert 3 <= len(labels) <= 9  # few, short labels: no overlap
        assert all(len(t) <= 5 for t in labels)
        plt.close(fig)


def test_flow_chart_has_no_null_label_and_draws_no_small_group():
    import matplotlib.pyplot as plt

    from cxanalysis.journeys import PathCounts

    frame = pd.DataFrame({"path": ["web > email", "app", "store"],
                          "journeys": [40, 30, 3], "conversions": [10, 30, 0]})
    ax = PathCounts(frame, inactivity_days=30, min_group_size=10).plot_flow(depth=2)
    texts = {t.get_text() for t in ax.texts}
    assert "(null)" not in texts and "no conversion" in texts and "conversion" in texts
    assert "store" not in texts  # 3 journeys < 10
    heights = sorted(round(p.get_height()) for p in ax.patches)
    assert 3 not in heights  # the small group's bar is not drawn
    ax2 = PathCounts(frame, inactivity_days=30, min_group_size=10).plot_transitions()
    labels = [t.get_text() for t in ax2.get_xticklabels() + ax2.get_yticklabels()]
    assert "(null)" not in labels and "no conversion" in labels
    plt.close("all")


# --------------------------------------------------------------------------- publish and show


def test_publish_shows_a_short_summary_not_raw_json(monkeypatch):
    import IPython.display

    from cxanalysis.results import RESULTS_MIME, publish

    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False: shown.append((obj, raw)))
    clean = publish({"decision": "ship", "experiment_id": "exp_a", "decision_variant": "b",
                     "x": float("nan")})
    (data, raw), = shown
    assert raw and data[RESULTS_MIME] == clean and clean["x"] is None  # the runner's MIME
    assert "<li>exp_a: SHIP (b).</li>" in data["text/html"]
    assert "{" not in data["text/html"] and "{" not in data["text/plain"]
    assert data["text/plain"] == "Published 4 headline figures to NAME.results.json."


def test_show_displays_formatted_html_and_plain_text_for_pins(monkeypatch):
    import IPython.display

    from cxanalysis.formatting import show

    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False: shown.append(obj))
    df = pd.DataFrame({"channel": ["web"], "rate": [0.25]}, index=[3])
    show(df)
    show(_Toy(df.reset_index(drop=True), notes=["n1"]))
    assert _cells(shown[0]["text/html"]) == [["web", "25.0%"]]
    assert shown[0]["text/plain"] == "channel  rate\n    web  0.25"
    assert "n1" in shown[1]["text/html"] and shown[1]["text/plain"] == shown[0]["text/plain"]


def test_every_result_class_follows_the_protocol():
    import inspect

    from cxanalysis import (
        attribution,
        breakdowns,
        comparison,
        experiments,
        funnel,
        journeys,
        overview,
        painpoints,
        personas,
    )

    # experiments is a package: its classes live in its submodules, re-exported.
    classes = {c for m in (attribution, breakdowns, comparison, experiments, funnel, journeys,
                           overview, painpoints, personas)
               for _n, c in inspect.getmembers(m, inspect.isclass)
               if (c.__module__ == m.__name__ or c.__module__.startswith(m.__name__ + "."))
               and "table" in c.__dict__ and "plot" in dir(c)}
    assert len(classes) >= 18
    for c in classes:
        assert issubclass(c, ResultMixin), c
        for attr in ("table", "plot", "to_dict", "notes", "_repr_html_"):
            assert hasattr(c, attr), (c, attr)


def test_intervals_take_the_kind_of_the_column_they_bound():
    df = pd.DataFrame({"step": [1], "conversion_from_first": [0.5], "step_conversion": [0.4],
                       "ci_low": [0.45], "ci_high": [0.55], "step_ci_low": [0.3],
                       "step_ci_high": [0.5], "p_holm": [0.0001], "conversions": [5],
                       "abs_diff": [1.5], "abs_ci_low": [0.5], "abs_ci_high": [2.5]})
    out = format_table(df)
    assert _heads(out) == ["step", "conversion from first step", "step conversion",
                           "interval", "step conversion interval", "p-value (Holm)",
                           "conversions", "difference", "difference interval"]
    assert _cells(out) == [["1", "50.0%", "40.0%", "45.0% to 55.0%", "30.0% to 50.0%",
                            "< 0.001", "5", "+1.50", "+0.50 to +2.50"]]
    shares = pd.DataFrame({"markov": [0.25], "markov_low": [0.2], "markov_high": [0.3]})
    assert _cells(format_table(shares, kinds={"markov": "percent"})) == [
        ["25.0%", "20.0% to 30.0%"]]


def test_say_renders_paragraphs_not_a_console_block(monkeypatch):
    import IPython.display

    from cxanalysis.formatting import say, show_answer

    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False: shown.append(obj))
    say("Horizon:", "reached <today>.\nNext line")
    assert shown[0]["text/plain"] == "Horizon: reached <today>.\nNext line"
    assert shown[0]["text/html"] == (
        '<div class="cx-text"><p style="margin:.25em 0">Horizon: reached &lt;today&gt;.</p>'
        '<p style="margin:.25em 0">Next line</p></div>')
    assert "<pre" not in shown[0]["text/html"]
    show_answer("Valid?", ["Yes.", "No gaps."])
    assert shown[1]["text/plain"] == "Valid?\nYes.\nNo gaps."
    assert "<li>No gaps.</li>" in shown[1]["text/html"]


def test_a_label_index_is_kept_as_a_column_row_numbers_are_not():
    labelled = pd.DataFrame({"share": [0.5, 0.25]}, index=["app", "web"])
    assert _heads(format_table(labelled)) == ["", "share"]
    assert _cells(format_table(labelled)) == [["app", "50.0%"], ["web", "25.0%"]]
    numbered = pd.DataFrame({"share": [0.5]}, index=[4])
    assert _heads(format_table(numbered)) == ["share"]


@pytest.mark.parametrize(("seconds", "text"), [
    (86_400, "1 day"), (604_800, "7 days"), (129_600, "1.5 days"), (43_200, "12 hours"),
    (3_600, "1 hour"), (90, "1.5 minutes"), (1, "1 second"), (30, "30 seconds")])
def test_regression_within_1_days_window_in_words(seconds, text):
    from cxanalysis.formatting import format_duration

    assert format_duration(seconds) == text
