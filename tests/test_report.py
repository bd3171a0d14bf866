"""The report runner: parameter checks before running, failures, strict JSON, offline HTML."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nbformat
import pytest

from cxanalysis.cli import main as cli_main
from cxanalysis.report import (
    ReportError,
    atomic_write,
    check_parameters,
    find_notebooks_dir,
    first_problem,
    parse_cli_params,
    read_parameter_kinds,
    read_parameters,
    run_reports,
    split_params_file,
    write_index,
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
OLD_RECORD = {"notebook": "02_old", "status": "OK", "package_version": "0.0.9",
              "source": "/elsewhere/other-source", "source_fingerprint": "abcdef0123456789",
              "finished_at": "2025-01-02T03:04:05+00:00", "duration_s": 1.0, "error": None,
              "parameters": {}, "results": {}, "run_id": "oldrun"}


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
    # An older run's report of another notebook, and a results file cxanalysis did not write.
    (out / "02_old.results.json").write_text(json.dumps(OLD_RECORD))
    (out / "notes.results.json").write_text('{"a": 1}')
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
        "01_bad.results.json", "02_old.results.json", "cxanalysis-run.json", "index.html",
        "notes.results.json"]


def test_unknown_parameter_or_wrong_type_stops_before_running(run, capsys) -> None:
    root, _, _ = run
    out = root / "fresh"
    base = ["report", "--notebooks-dir", str(root / "notebooks"), "--out", str(out)]
    assert cli_main([*base, "-p", "nn=3"]) == 2
    assert "unknown parameter 'nn'" in capsys.readouterr().err
    assert cli_main([*base, "-p", "n=three"]) == 2
    assert "parameter 'n' expects int like 3, got str 'three'" in capsys.readouterr().err
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


# --------------------------------------------------------------------------- issue 11 / 10
# Fast runs: papermill.execute_notebook replaced by a fake that "executes" a notebook by
# copying it (no kernel), records what it was given, and can fail or be interrupted.


class FakePapermill:
    def __init__(self, interrupt: bool = False):
        self.calls: list[dict] = []
        self.interrupt = interrupt

    def __call__(self, input_path, output_path, parameters=None, **kwargs):
        self.calls.append({"input": input_path, "parameters": dict(parameters or {}),
                           **kwargs})
        nb = nbformat.read(input_path, as_version=4)
        nb.metadata["papermill"] = {"parameters": parameters}
        nbformat.write(nb, output_path)  # papermill writes its output as it goes
        json.dumps(parameters)  # what papermill does with them: they must be JSON
        if self.interrupt:
            raise KeyboardInterrupt
        return nb


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> tuple[Path, Path, FakePapermill]:
    """Two tiny notebooks (00 with a date window defaulting to None) and a fake papermill."""
    import papermill

    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    (tmp_path / "data").mkdir()
    _notebook(nbs / "00_ok.ipynb", 'source = "../data"\nn = 3\nstart = "2025-01-01"\n'
              "calibration = None  # [start, end] of the fit; None means from the data\n"
              "end = None  # last day (ISO date); None means the end of the data\n"
              "label = None  # any text")
    _notebook(nbs / "01_two.ipynb", 'source = "../data"')
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    return tmp_path, nbs, fake


def _index_sections(index: str) -> tuple[str, str]:
    current, _, stale = index.partition("Older reports in this folder")
    return current, stale


def test_item12_index_lists_only_this_run_and_marks_older_reports_stale(run) -> None:
    _, out, _ = run
    current, stale = _index_sections((out / "index.html").read_text())
    assert '<a href="00_ok.html">00_ok</a>' in current
    assert '<a href="01_bad.html">01_bad</a>' in current
    assert "02_old" not in current  # an older run's report is not listed as this run's
    assert "<td>02_old</td>" in stale and "STALE (OK)" in stale  # no page: no dead link
    assert "/elsewhere/other-source" in stale and "2025-01-02T03:04:05+00:00" in stale
    # A results file cxanalysis did not write is no report: no link, no row.
    assert 'href="notes.html"' not in current + stale and "notes.results.json" in stale
    manifest = json.loads((out / "cxanalysis-run.json").read_text())
    assert manifest["state"] == "complete" and manifest["notebooks"] == ["00_ok", "01_bad"]
    page = (out / "index.html").read_text()
    assert write_index(out).read_text() == page  # the same run, the same page
    assert json.loads((out / "00_ok.results.json").read_text())["run_id"] == manifest["run_id"]


def test_item12_reused_out_folder_marks_the_previous_run_stale(project) -> None:
    root, nbs, _ = project
    out = root / "out"
    run_reports([], out=out, notebooks_dir=nbs, echo=False)
    first = json.loads((out / "01_two.results.json").read_text())
    run_reports(["00_ok"], out=out, notebooks_dir=nbs, echo=False)
    current, stale = _index_sections((out / "index.html").read_text())
    assert '<a href="00_ok.html">00_ok</a>' in current and "01_two" not in current
    assert '<a href="01_two.html">01_two</a>' in stale
    assert first["finished_at"] in stale and first["source"] in stale


def test_item12_index_html_not_written_by_the_runner_is_never_overwritten(project) -> None:
    root, nbs, fake = project
    out = root / "out"
    out.mkdir()
    (out / "index.html").write_text("<html>my own page</html>")
    with pytest.raises(ReportError, match="index.html was not written by cxanalysis report"):
        run_reports([], out=out, notebooks_dir=nbs, echo=False)
    assert fake.calls == [] and (out / "index.html").read_text() == "<html>my own page</html>"
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    # The runner's own page is overwritten by the next run, but not once someone edited it.
    (out / "index.html").unlink()
    run_reports(["00_ok"], out=out, notebooks_dir=nbs, echo=False)
    run_reports(["00_ok"], out=out, notebooks_dir=nbs, echo=False)
    (out / "index.html").write_text((out / "index.html").read_text() + "<!-- my notes -->")
    with pytest.raises(ReportError, match="was not written by cxanalysis report"):
        run_reports(["00_ok"], out=out, notebooks_dir=nbs, echo=False)
    assert len(fake.calls) == 2
    # An older runner's page (before manifests) is recognised as the runner's own.
    legacy = root / "legacy"
    legacy.mkdir()
    (legacy / "index.html").write_text("<!doctype html><html><head><meta charset='utf-8'>"
                                       "<title>cxanalysis reports</title></head></html>")
    run_reports(["00_ok"], out=legacy, notebooks_dir=nbs, echo=False)
    assert '<a href="00_ok.html">00_ok</a>' in (legacy / "index.html").read_text()


def test_item13_ctrl_c_prints_one_line_and_leaves_no_temporary_files(
        project, monkeypatch, capsys, tmp_path: Path) -> None:
    root, nbs, fake = project
    out = root / "out"
    out.mkdir()
    (out / "00_ok.html").write_text("<html>PREVIOUS</html>")
    (out / "00_ok.ipynb").write_text("PREVIOUS NOTEBOOK")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmpdir))  # where the kernel log goes
    fake.interrupt = True
    code = cli_main(["report", "--notebooks-dir", str(nbs), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err == "interrupted; nothing published for 00_ok\n"
    assert "Traceback" not in captured.out + captured.err
    assert len(fake.calls) == 1  # 01 never started
    # Nothing published for 00: its previous report is untouched, no temporary file left.
    assert (out / "00_ok.html").read_text() == "<html>PREVIOUS</html>"
    assert (out / "00_ok.ipynb").read_text() == "PREVIOUS NOTEBOOK"
    assert not list(out.glob(".*")) and not list(tmpdir.iterdir())
    manifest = json.loads((out / "cxanalysis-run.json").read_text())
    assert manifest["state"] == "interrupted" and manifest["interrupted"] == "00_ok"
    index = (out / "index.html").read_text()
    assert "INTERRUPTED: nothing published" in index and "interrupted while 00_ok ran" in index


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_item15_reports_are_written_with_the_umask(project, umask: int) -> None:
    root, nbs, _ = project
    out = root / f"out{umask:o}"
    old = os.umask(umask)
    try:
        atomic_write(root / f"f{umask:o}.txt", "x")
        run_reports(["00_ok"], out=out, notebooks_dir=nbs, echo=False)
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((root / f"f{umask:o}.txt").stat().st_mode) == expected
    for name in ("00_ok.html", "00_ok.results.json", "index.html", "cxanalysis-run.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == expected, name


def test_item16_console_shows_the_first_problem_on_stderr_without_kernel_noise(
        tmp_path: Path, capfd) -> None:
    """A real kernel: its own log (the TCP-without-encryption warning) stays off the
    console, and a failed notebook's line names the first rule broken, on stderr."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "00_fine.ipynb", "x = 1", "print('hello')")
    _notebook(nbs / "01_contract.ipynb", "x = 1",
              "from cxanalysis.data import CXDataError\n"
              "raise CXDataError('2 data contract error(s):\\n"
              "  - events.ts: 3 row(s) have no time zone\\n  - orders.amount: 2 negative')")
    code = cli_main(["report", "--notebooks-dir", str(nbs), "--out", str(tmp_path / "out")])
    captured = capfd.readouterr()
    assert code == 1
    assert "IPKernelApp" not in captured.err + captured.out
    assert "without encryption" not in captured.err + captured.out
    assert "[1/2] 00_fine ... OK" in captured.out and "[2/2] 01_contract ... FAILED" in captured.out
    assert ("error: 01_contract: CXDataError: 2 data contract error(s): events.ts: 3 row(s) "
            "have no time zone (cell 2)") in captured.err.splitlines()
    assert "error" not in captured.out
    assert "FAILED: 01_contract" in captured.err


def test_item16_first_problem() -> None:
    assert first_problem("CXDataError: 1 data contract error(s):\n  - feedback.score: 4 rows "
                         "outside 0..10\n (cell 3)") == (
        "CXDataError: 1 data contract error(s): feedback.score: 4 rows outside 0..10 (cell 3)")
    assert first_problem("RuntimeError: boom (cell 2)") == "RuntimeError: boom (cell 2)"
    assert first_problem("ValueError: first line\nsecond line (cell 5)") == (
        "ValueError: first line (cell 5)")
    assert first_problem("") == ""


def test_item17_report_from_another_working_directory(tmp_path: Path, monkeypatch, capsys
                                                      ) -> None:
    repo_notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    monkeypatch.chdir(tmp_path)
    assert find_notebooks_dir() == repo_notebooks
    # The request reaches parameter checking (the notebooks were found); nothing runs.
    assert cli_main(["report", "--out", str(tmp_path / "out"), "-p", "no_such=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'no_such'" in err and "no notebooks" not in err
    assert not (tmp_path / "out").exists()
    # Without a project next to the package either, the error says how.
    import cxanalysis

    monkeypatch.setattr(cxanalysis, "__file__", str(tmp_path / "x" / "src" / "cxanalysis" /
                                                    "__init__.py"))
    assert cli_main(["report", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no notebooks NN_*.ipynb in" in err and "--notebooks-dir" in err


def test_issue10_unquoted_dates_become_iso_strings(project, capsys) -> None:
    root, nbs, fake = project
    assert parse_cli_params(["start=2025-03-01", "calibration=[1997-01-01, 1997-12-31]",
                             "t=2025-03-01 10:30:00", "q='2025-03-01'"]) == {
        "start": "2025-03-01", "calibration": ["1997-01-01", "1997-12-31"],
        "t": "2025-03-01T10:30:00", "q": "2025-03-01"}
    base = ["report", "00_ok", "--notebooks-dir", str(nbs), "--out", str(root / "out")]
    assert cli_main([*base, "-p", "start=2025-03-01",
                     "-p", "calibration=[1997-01-01, 1997-12-31]"]) == 0
    assert fake.calls[-1]["parameters"] == {"start": "2025-03-01",
                                            "calibration": ["1997-01-01", "1997-12-31"]}
    params_file = root / "params.yaml"
    params_file.write_text("start: 2024-02-29\n00_ok:\n  calibration: [1997-01-01, 1997-06-30]\n")
    assert cli_main([*base, "--params-file", str(params_file)]) == 0
    assert fake.calls[-1]["parameters"] == {"start": "2024-02-29",
                                            "calibration": ["1997-01-01", "1997-06-30"]}
    saved = json.loads((root / "out" / "00_ok.results.json").read_text())["parameters"]
    assert saved["calibration"] == ["1997-01-01", "1997-06-30"]
    # A None default takes a string or a list; a wrong type is still rejected before running.
    assert check_parameters("00_ok", {"calibration": None}, {"calibration": "2025-01-01"}) == []
    calls = len(fake.calls)
    capsys.readouterr()
    assert cli_main([*base, "-p", "n=2025-03-01"]) == 2
    assert "parameter 'n' expects int like 3, got str '2025-03-01'" in capsys.readouterr().err
    assert len(fake.calls) == calls


def test_issue10_a_request_failing_validation_keeps_the_previous_report(project) -> None:
    root, nbs, fake = project
    out = root / "out"
    out.mkdir()
    for name in ("00_ok.ipynb", "00_ok.html", "00_ok.results.json"):
        (out / name).write_text("PREVIOUS")
    with pytest.raises(ReportError, match="cannot be passed to a notebook"):
        run_reports(["00_ok"], params={"calibration": {1, 2}}, out=out, notebooks_dir=nbs,
                    echo=False)
    with pytest.raises(ReportError, match="expects int"):
        run_reports(["00_ok"], params={"n": "2025-03-01"}, out=out, notebooks_dir=nbs,
                    echo=False)
    assert fake.calls == []
    assert sorted(p.name for p in out.iterdir()) == [
        "00_ok.html", "00_ok.ipynb", "00_ok.results.json"]
    assert all((out / n).read_text() == "PREVIOUS" for n in ("00_ok.ipynb", "00_ok.html"))


def test_issue10_date_parameters_with_a_none_default_still_reject_a_wrong_type(
        project, capsys) -> None:
    root, nbs, fake = project
    assert read_parameter_kinds(nbs / "00_ok.ipynb") == {
        "start": "date", "calibration": "window", "end": "date"}
    repo = Path(__file__).resolve().parents[1] / "notebooks" / "00_data_overview.ipynb"
    assert read_parameter_kinds(repo) == {"start": "date", "end": "date"}
    base = ["report", "00_ok", "--notebooks-dir", str(nbs), "--out", str(root / "out")]
    for bad, message in [
            ("calibration=5", "'calibration' expects [start, end] ISO dates"),
            ("calibration=2025-03-01", "'calibration' expects [start, end] ISO dates"),
            ("calibration=[2025-03-01, 2025-01-01]", "got list ['2025-03-01', '2025-01-01']"),
            ("end=tomorrow", "'end' expects an ISO date like '2025-03-01' (or null), got str"),
            ("start=[2025-01-01]", "'start' expects an ISO date")]:
        assert cli_main([*base, "-p", bad]) == 2, bad
        assert message in capsys.readouterr().err, bad
    assert fake.calls == []
    assert cli_main([*base, "-p", "end=2025-03-01", "-p", "calibration=null",
                     "-p", "label=[any, thing]"]) == 0
    assert fake.calls[-1]["parameters"] == {"end": "2025-03-01", "calibration": None,
                                            "label": ["any", "thing"]}


def test_issue15_one_html_exporter_per_process_gives_the_same_pages() -> None:
    """The exporter is built once per process (its templates compiled once); a page must
    not depend on which notebooks it exported before."""
    import nbformat

    from cxanalysis import report

    def notebook(text: str, lexer: str) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        nb.metadata["language_info"] = {"name": lexer, "pygments_lexer": lexer}
        cell = nbformat.v4.new_code_cell("print(1)")
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {text}"), cell]
        return nb

    a, b = notebook("first report", "ipython3"), notebook("second report", "python")
    report._exporter.cache_clear()
    fresh_b = report.to_html(b)
    report._exporter.cache_clear()
    reused = [report.to_html(a), report.to_html(b, failed_banner="x"), report.to_html(b)]
    assert report._exporter.cache_info().misses == 1 and report._exporter.cache_info().hits == 2
    assert reused[2] == fresh_b
    assert "FAILED: x" in reused[1] and "FAILED" not in reused[2]
    assert "second report" in fresh_b and "first report" not in fresh_b
    assert "print(1)" not in fresh_b  # code still excluded by the shared exporter
