"""Progress bars (tqdm): on stderr for long steps, never in tests, reports or pinned outputs."""

from __future__ import annotations

import os
from pathlib import Path

from cxanalysis import progress
from cxanalysis.progress import bar, enabled


def test_bars_are_off_under_pytest_and_with_cx_progress_0(monkeypatch) -> None:
    monkeypatch.delenv("CX_PROGRESS", raising=False)
    assert "PYTEST_CURRENT_TEST" in os.environ
    assert enabled() is False            # under pytest, by default
    assert enabled(True) is True         # the caller may ask for one
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert enabled() is True             # a terminal or a notebook
    assert enabled(False) is False
    for off in ("0", "false", "No", " off "):
        monkeypatch.setenv("CX_PROGRESS", off)
        assert enabled() is False and enabled(True) is False  # the environment wins


def test_bar_writes_to_stderr_only_when_enabled(monkeypatch, capsys) -> None:
    monkeypatch.delenv("CX_PROGRESS", raising=False)
    assert sum(bar(range(5), desc="quiet", enable=False)) == 10
    got = capsys.readouterr()
    assert got.out == got.err == ""
    assert sum(bar(range(5), desc="shown", enable=True, delay=0, mininterval=0)) == 10
    got = capsys.readouterr()
    assert got.out == ""                 # stdout (and so nbval's compared text) stays clean
    assert "shown" in got.err and "5/5" in got.err
    monkeypatch.setenv("CX_PROGRESS", "0")
    with bar(total=3, desc="manual", enable=True) as b:
        b.update(3)
    assert capsys.readouterr().err == ""


def test_report_kernels_and_pinning_run_without_bars(monkeypatch, tmp_path: Path) -> None:
    from cxanalysis.report import _kernel_environment

    monkeypatch.setenv("CX_PROGRESS", "1")
    with _kernel_environment(tmp_path):
        assert os.environ[progress.ENV] == "0"
    assert os.environ[progress.ENV] == "1"  # restored after the run

    import nbformat
    import papermill

    from cxanalysis.notebooks import pin

    seen = []

    def fake(path, out, **kw):  # records the environment the kernel would inherit
        seen.append(os.environ.get(progress.ENV))
        return nbformat.read(path, as_version=4)

    nb = tmp_path / "x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]), nb)
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    pin(nb)
    assert seen == ["0"] and os.environ[progress.ENV] == "1"


def test_tqdm_is_a_declared_dependency() -> None:
    root = Path(__file__).resolve().parents[1]
    assert '"tqdm>=' in (root / "pyproject.toml").read_text()
    # environment.yml installs the package from pyproject (tests/test_packaging.py)
    assert "-e .[dev" in (root / "environment.yml").read_text()  # with or without bench
