"""Shared helpers: JSON-safe results, privacy (suppression, redaction), notebook pinning."""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pandas as pd
import pytest

from cxanalysis.notebooks import PIN_MARK, strip_unpinned
from cxanalysis.privacy import drop_identifiers, redact, suppress_small_groups
from cxanalysis.results import RESULTS_MIME, dumps, find_published, to_jsonable


def test_to_jsonable_makes_strict_json() -> None:
    value = {
        "n": np.int64(3), "x": np.float32(0.5), "nan": float("nan"), "inf": np.inf,
        "flag": np.bool_(True), "ts": pd.Timestamp("2025-01-02", tz="UTC"),
        "arr": np.array([1.0, np.nan]), "tuple": (1, "a"),
        "df": pd.DataFrame({"a": [1, 2], "b": [0.5, None]}),
        "series": pd.Series({"x": 1.5}), "na": pd.NA,
    }
    out = json.loads(dumps(value))
    assert out == {
        "n": 3, "x": 0.5, "nan": None, "inf": None, "flag": True,
        "ts": "2025-01-02T00:00:00+00:00", "arr": [1.0, None], "tuple": [1, "a"],
        "df": [{"a": 1, "b": 0.5}, {"a": 2, "b": None}], "series": {"x": 1.5}, "na": None,
    }
    with pytest.raises(TypeError, match="cannot convert object"):
        to_jsonable(object())


def test_find_published_returns_the_last_published_results() -> None:
    nb = nbformat.v4.new_notebook()
    for payload in ({"a": 1}, {"a": 2}):
        cell = nbformat.v4.new_code_cell("publish(...)")
        cell.outputs = [nbformat.v4.new_output("display_data", data={RESULTS_MIME: payload})]
        nb.cells.append(cell)
    nb.cells.append(nbformat.v4.new_markdown_cell("text"))
    assert find_published(nb) == {"a": 2}
    assert find_published(nbformat.v4.new_notebook()) is None


def test_suppress_small_groups_blanks_every_figure_of_small_groups() -> None:
    table = pd.DataFrame({"group": ["a", "b", "c"], "customers": [50, 9, 10],
                          "rate": [0.2, 0.9, 0.3], "ok": [True, False, True]})
    out = suppress_small_groups(table, "customers", min_group_size=10)
    assert out["suppressed"].tolist() == [False, True, False]
    assert math.isnan(out.loc[1, "rate"]) and pd.isna(out.loc[1, "customers"])
    assert str(out["customers"].dtype) == "Int64"
    assert out.loc[2, "rate"] == 0.3 and out.loc[0, "customers"] == 50
    assert out["group"].tolist() == ["a", "b", "c"]
    assert table.loc[1, "rate"] == 0.9  # input untouched


def test_redact_removes_contact_details_ids_and_introduced_names() -> None:
    text = ("My name is Jane Doe, email jane.doe+x@mail.example.org or call +44 20 7946 0958; "
            "customer C0001234 spoke to Ahmed about the late parcel")
    out = redact(text)
    for secret in ("Jane", "Doe", "jane.doe", "7946", "C0001234", "Ahmed"):
        assert secret not in out
    assert out.startswith("My name is [name], email [email] or call [phone]")
    assert "the late parcel" in out
    assert redact(None) is None


def test_drop_identifiers() -> None:
    df = pd.DataFrame({"customer_id": ["C1"], "comment": ["x"], "nps": [9]})
    assert list(drop_identifiers(df).columns) == ["nps"]


def test_strip_unpinned_keeps_only_pinned_text_outputs_and_their_counts() -> None:
    nb = nbformat.v4.new_notebook()
    plain = nbformat.v4.new_code_cell("x = 1\nx", execution_count=1)
    plain.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "1"},
                                            execution_count=1)]
    pinned = nbformat.v4.new_code_cell(f"{PIN_MARK}\nprint(x)", execution_count=2)
    pinned.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="1\n"),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Fig>"}),
        nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"}),
    ]
    nb.cells = [plain, pinned, nbformat.v4.new_markdown_cell("# title")]
    nb.metadata["papermill"] = {"duration": 1.0}
    out = strip_unpinned(nb)
    assert out.cells[0].outputs == [] and out.cells[0].execution_count is None
    assert out.cells[1].execution_count == 2
    assert [o.output_type for o in out.cells[1].outputs] == ["stream", "display_data"]
    assert out.cells[1].outputs[1].data == {"text/plain": "<Fig>"}
    assert "papermill" not in out.metadata
    nbformat.validate(out)


def test_pin_keeps_side_files_out_of_the_repository_reports(tmp_path) -> None:
    """``cxanalysis pin`` must not write into ``../reports`` (make test must not modify
    report files): side files go to the ``out_dir`` given, or to a removed temporary folder."""
    import nbformat

    from cxanalysis.notebooks import pin

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    (tmp_path / "reports").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "from cxanalysis.results import output_dir\n"
        "output_dir().mkdir(parents=True, exist_ok=True)\n"
        "(output_dir() / 'side.txt').write_text('x')\n"
        f"{PIN_MARK}\nprint(1 + 1)")]
    path = nb_dir / "00_side.ipynb"
    nbformat.write(nb, str(path))
    side = tmp_path / "side"
    pin(path, out_dir=side)
    assert (side / "side.txt").read_text() == "x"
    pin(path)
    assert list((tmp_path / "reports").iterdir()) == []
    pinned = nbformat.read(str(path), as_version=4).cells[0]
    assert pinned.outputs[0]["text"] == "2\n"
