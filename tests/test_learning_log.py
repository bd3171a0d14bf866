"""The learning log: where it is written and how its rows are keyed (issue 11, item 14);
append-only, one row per look (issue 16, item 8)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from cxanalysis import experiments as ex
from cxanalysis.report import read_parameters
from cxanalysis.results import OUT_ENV

ROOT = Path(__file__).resolve().parents[1]


def _result(experiment_id: str = "exp_a", verdict: str = "ship", lift: float = 0.1
            ) -> SimpleNamespace:
    """The parts of an ExperimentResult the log reads (the statistics are tested elsewhere;
    here only the file's location and keys matter)."""
    primary = pd.Series({"variant": "treatment", "metric": "conversion", "abs_diff": 0.01,
                         "abs_ci_low": 0.0, "abs_ci_high": 0.02, "rel_lift": lift,
                         "rel_ci_low": 0.0, "rel_ci_high": 0.2, "p_adjusted": 0.01})
    guards = pd.DataFrame([{"metric": "csat", "variant": "treatment",
                            "bad_direction": "decrease", "abs_ci_low": -0.4,
                            "abs_ci_high": 0.5, "margin_abs": 0.17, "status": "inconclusive"}])
    return SimpleNamespace(
        experiment_id=experiment_id, name="A test", hypothesis="it helps",
        decision=SimpleNamespace(verdict=verdict, variant="treatment", reason="because"),
        primary=lambda variant=None: primary, srm_p_value=0.5,
        counts={"control": 100, "treatment": 100}, data_end=pd.Timestamp("2025-06-30"),
        guardrails=guards, horizon={"text": "running — 200 of 1,000 customers"},
        parameters={"alpha": 0.05, "mde": 0.1, "primary_metric": "conversion"})


def test_item14_learning_log_defaults_to_the_run_output_folder(tmp_path: Path, monkeypatch
                                                               ) -> None:
    out = tmp_path / "run-out"
    monkeypatch.setenv(OUT_ENV, str(out))  # as under `cxanalysis report --out run-out`
    ex.log_learning(_result(), fingerprint="f1")
    assert (out / "learning_log.csv").is_file()
    # Interactively (no runner): ../reports, relative to the notebook's folder.
    monkeypatch.delenv(OUT_ENV)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    ex.log_learning(_result(), fingerprint="f1")
    assert (tmp_path / "reports" / "learning_log.csv").is_file()


def test_item14_learning_log_rows_are_keyed_by_experiment_and_source(tmp_path: Path) -> None:
    log = tmp_path / "learning_log.csv"
    t1 = "2026-01-05T10:00:00Z"
    ex.log_learning(_result(verdict="ship"), log, fingerprint="demo", looked_at=t1)
    ex.log_learning(_result(verdict="don't ship", lift=-0.05), log, fingerprint="other",
                    looked_at=t1)
    table = pd.read_csv(log, dtype=str)
    assert list(zip(table.experiment_id, table.source_fingerprint, table.decision,
                    strict=True)) == [("exp_a", "demo", "ship"), ("exp_a", "other", "don't ship")]
    before = log.read_bytes()
    # The same look written again replaces its own row only.
    ex.log_learning(_result(verdict="keep testing", lift=0.02), log, fingerprint="demo",
                    looked_at=t1)
    table = pd.read_csv(log, dtype=str).set_index("source_fingerprint")
    assert len(table) == 2 and table.loc["demo", "decision"] == "keep testing"
    assert table.loc["other", "decision"] == "don't ship"
    ex.log_learning(_result(verdict="ship"), log, fingerprint="demo", looked_at=t1)
    assert log.read_bytes() == before  # same look, same bytes


def test_item8_learning_log_is_append_only_one_row_per_look(tmp_path: Path) -> None:
    log = tmp_path / "learning_log.csv"
    looks = ["2026-01-05T10:00:00Z", "2026-01-06T09:30:00Z", "2026-01-07T08:00:00Z"]
    verdicts = ["keep running", "keep running", "ship"]
    # written out of order: rows are kept and sorted by look time
    for i in (2, 0, 1):
        ex.log_learning(_result(verdict=verdicts[i]), log, fingerprint="demo",
                        looked_at=looks[i])
    table = pd.read_csv(log, dtype=str, keep_default_na=False)
    assert list(table.looked_at) == looks and list(table.decision) == verdicts
    assert list(table.columns) == ex.LOG_COLUMNS
    row = table.iloc[0]
    assert json.loads(row.guardrails) == {"csat@treatment": {
        "status": "inconclusive", "bad_direction": "decrease", "margin_abs": 0.17,
        "abs_ci": [-0.4, 0.5]}}
    assert json.loads(row.parameters) == {"alpha": 0.05, "mde": 0.1,
                                          "primary_metric": "conversion"}
    assert row.horizon == "running — 200 of 1,000 customers" and row.data_end == "2025-06-30"
    # the default look time is now (UTC), so a later run adds a row, never replaces one
    ex.log_learning(_result(), log, fingerprint="demo")
    table = pd.read_csv(log, dtype=str)
    assert len(table) == 4
    assert pd.Timestamp(table.looked_at.iloc[-1]) > pd.Timestamp(looks[-1])
    # a naive look time is read as UTC
    ex.log_learning(_result(), log, fingerprint="demo", looked_at="2026-01-05 10:00:00")
    assert len(pd.read_csv(log)) == 4


def test_item14_a_log_without_fingerprints_keeps_its_rows(tmp_path: Path) -> None:
    log = tmp_path / "learning_log.csv"
    pd.DataFrame([{"experiment_id": "exp_a", "decision": "ship", "rel_lift": 0.3}]).to_csv(
        log, index=False)
    table = ex.log_learning(_result(verdict="don't ship"), log, fingerprint="demo")
    assert list(table.source_fingerprint) == ["", "demo"]
    assert table.looked_at.iloc[0] == "" and table.looked_at.iloc[1] != ""
    assert list(table.decision) == ["ship", "don't ship"]
    assert list(pd.read_csv(log).columns) == ex.LOG_COLUMNS


def test_item14_notebook_03_logs_into_the_output_folder_by_default() -> None:
    """A relative ``learning_log`` is inside the report folder (output_dir())."""
    nb = ROOT / "notebooks" / "03_test_and_learn.ipynb"
    assert read_parameters(nb)["learning_log"] == "learning_log.csv"
    import nbformat

    code = "\n".join(c.source for c in nbformat.read(nb, as_version=4).cells
                     if c.cell_type == "code")
    assert "else output_dir() / learning_log" in code
    assert "log_learning(res, path, fingerprint=src.fingerprint)" in code
    assert "../reports/learning_log.csv" not in code


@pytest.mark.parametrize("folder", ["notebooks"])
def test_item14_nbval_runs_write_side_files_outside_the_repository(folder: str) -> None:
    """nbval runs the notebooks in notebooks/ (cwd there), where output_dir() would be the
    repository's reports/: notebooks/conftest.py points CXANALYSIS_OUT elsewhere."""
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("nb_conftest", ROOT / folder / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = os.environ.get(OUT_ENV)
    module.pytest_configure(None)
    try:
        tmp = Path(os.environ[OUT_ENV])
        assert tmp.is_dir() and ROOT not in tmp.resolve().parents
    finally:
        module.pytest_unconfigure(None)
    assert os.environ.get(OUT_ENV) == saved and not tmp.exists()
