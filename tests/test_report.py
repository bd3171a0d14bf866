"""The report runner: parameter checks before running, failures, strict JSON, offline HTML."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from cxanalysis.cli import main as cli_main
from cxanalysis.report import (
    ReportError,
    atomic_write,
    check_parameters,
    parse_cli_params,
    read_parameters,
    run_reports,
    split_params_file,
)


def _notebook(path: Path, params: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), p,
                *(nbformat.v4.new_code_cell(c) for c in cells)]
    nbformat.write(nb, str(path))
    return path


SECRET_CODE = "very_secret_code_marker = 1"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """One run of two notebooks (one plots and publishes, one fails), with MPLBACKEND=Agg
    in the caller's environment and an older report of the failing one in the folder."""
    root = tmp_path_factory.mktemp("reports")
    nbs = root / "notebooks"
    nbs.mkdir()
    (root / "data").mkdir()
    (root / "data" / "x.csv").write_text("a\n1\n")
    _notebook(nbs / "00_ok.ipynb", 'source = "../data"\nn = 3\nrate = 0.5',
              f"{SECRET_CODE}\nimport matplotlib.pyplot as plt\n"
              "plt.plot([1, 2, n]); plt.show()",
              "from cxanalysis.results import publish\n"
              "publish({'n': n, 'rate': rate, 'nan': float('nan'), 'cwd_ok': "
              "__import__('os').path.exists(source)})")
    _notebook(nbs / "01_bad.ipynb", 'source = "../data"', "raise RuntimeError('boom here')")
    out = root / "reports"
    out.mkdir()
    (out / "01_bad.html").write_text("<html>OLD REPORT</html>")
    mp = pytest.MonkeyPatch()
    mp.setenv("MPLBACKEND", "Agg")
    try:
        results = run_reports([], params={"n": 4, "rate": 1}, out=out, notebooks_dir=nbs,
                              echo=False)
    finally:
        mp.undo()
    return root, out, {r.name: r for r in results}


def test_statuses_and_published_results(run) -> None:
    _, out, res = run
    assert res["00_ok"].status == "OK" and res["01_bad"].status == "FAILED"
    assert "RuntimeError: boom here" in res["01_bad"].error
    ok = json.loads((out / "00_ok.results.json").read_text())  # strict JSON, no NaN
    assert ok["status"] == "OK" and ok["notebook"] == "00_ok"
    assert ok["parameters"] == {"source": "../data", "n": 4, "rate": 1}
    assert ok["results"] == {"n": 4, "rate": 1, "nan": None, "cwd_ok": True}
    assert len(ok["source_fingerprint"]) == 16 and ok["source"].endswith("data")
    for key in ("package_version", "duration_s", "error"):
        assert key in ok
    bad = json.loads((out / "01_bad.results.json").read_text())
    assert bad["status"] == "FAILED" and "boom here" in bad["error"] and bad["results"] == {}


def test_failed_report_replaces_older_html_and_keeps_failing_cell(run) -> None:
    _, out, _ = run
    page = (out / "01_bad.html").read_text()
    assert "OLD REPORT" not in page and "FAILED: RuntimeError: boom here" in page
    nb = nbformat.read(str(out / "01_bad.ipynb"), as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert errors and errors[0].evalue == "boom here"
    index = (out / "index.html").read_text()
    assert '<a href="01_bad.html">01_bad</a>' in index and "FAILED" in index
    assert '<a href="00_ok.html">00_ok</a>' in index


def test_html_has_no_code_and_nothing_from_the_network(run) -> None:
    _, out, _ = run
    page = (out / "00_ok.html").read_text()
    assert SECRET_CODE not in page
    assert "https://cdn" not in page and 'src="http' not in page
    assert "data:image/png;base64" in page or "image/png" in page


def test_inherited_mplbackend_does_not_drop_figures(run) -> None:
    _, out, _ = run
    nb = nbformat.read(str(out / "00_ok.ipynb"), as_version=4)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 1


def test_no_temporary_files_left(run) -> None:
    _, out, _ = run
    assert sorted(p.name for p in out.iterdir()) == [
        "00_ok.html", "00_ok.ipynb", "00_ok.results.json", "01_bad.html", "01_bad.ipynb",
        "01_bad.results.json", "index.html"]


def test_unknown_parameter_or_wrong_type_stops_before_running(run, capsys) -> None:
    root, _, _ = run
    out = root / "fresh"
    base = ["report", "--notebooks-dir", str(root / "notebooks"), "--out", str(out)]
    assert cli_main([*base, "-p", "nn=3"]) == 2
    assert "unknown parameter 'nn'" in capsys.readouterr().out
    assert cli_main([*base, "-p", "n=three"]) == 2
    assert "parameter 'n' expects int like 3, got str 'three'" in capsys.readouterr().out
    assert cli_main([*base, "--source", str(root / "missing")]) == 2
    assert not out.exists()  # nothing ran, nothing written


def test_check_parameters_rules() -> None:
    defaults = {"a": 1, "x": 0.5, "s": "t", "l": ["a"], "b": True, "o": None, "d": {"k": 1}}
    fine = {"a": 2, "x": 1, "s": "u", "l": [], "b": False, "o": [1], "d": {}}
    assert check_parameters("nb", defaults, fine) == []
    problems = check_parameters("nb", defaults, {"a": 1.5, "b": 1, "l": "a", "zz": 1})
    assert len(problems) == 4
    assert "unknown parameter 'zz'" in problems[3]
    assert check_parameters("nb", defaults, {"a": None}) == []  # unset is allowed


def test_cli_params_and_params_file_split() -> None:
    assert parse_cli_params(["a=1", "b=[x, y]", "c=0.5", "d=true", "e=text", "f="]) == {
        "a": 1, "b": ["x", "y"], "c": 0.5, "d": True, "e": "text", "f": ""}
    with pytest.raises(ReportError, match="not NAME=VALUE"):
        parse_cli_params(["oops"])
    common, per = split_params_file({"seed": 1, "02_journey_funnel": {"mode": "unordered"}},
                                    ["01_x", "02_journey_funnel"])
    assert common == {"seed": 1} and per == {"02_journey_funnel": {"mode": "unordered"}}


def test_read_parameters_rejects_computed_values(tmp_path: Path) -> None:
    good = _notebook(tmp_path / "g.ipynb", "a = 1\nb = [1, 'x']\nc = None")
    assert read_parameters(good) == {"a": 1, "b": [1, "x"], "c": None}
    bad = _notebook(tmp_path / "b.ipynb", "a = 1\nb = a + 1")
    with pytest.raises(ReportError, match="'b' is not a literal"):
        read_parameters(bad)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, "old")
    atomic_write(target, "new content")
    assert target.read_text() == "new content"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_output_dir_follows_the_runner(monkeypatch) -> None:
    from cxanalysis.results import OUT_ENV, output_dir

    monkeypatch.delenv(OUT_ENV, raising=False)
    assert output_dir() == Path("../reports")
    assert output_dir("elsewhere") == Path("elsewhere")
    monkeypatch.setenv(OUT_ENV, "/tmp/run-out")
    assert output_dir() == Path("/tmp/run-out")
