"""Notebooks 02 and 03 through ``cxanalysis report --source postgres://...``: the same
results.json as on DuckDB, and the password nowhere in what is written (issue 14)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cxanalysis.cli import main
from engines.pgcluster import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ["02_journey_funnel", "03_test_and_learn"]


def _differences(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ (floats to 1e-9 relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only one side" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += _differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {a} vs {b}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def test_notebooks_give_equal_results_on_postgres_and_duckdb(
        engine_world: Path, postgres_url: str, tmp_path: Path, capsys) -> None:
    runs = {}
    for engine, source in (("postgres", postgres_url), ("duckdb", str(engine_world))):
        out = tmp_path / engine
        code = main(["report", *NOTEBOOKS, "--source", source, "--out", str(out),
                     "--notebooks-dir", str(ROOT / "notebooks")])
        assert code == 0, capsys.readouterr().err
        runs[engine] = out
    for nb in NOTEBOOKS:
        pg = json.loads((runs["postgres"] / f"{nb}.results.json").read_text())
        duck = json.loads((runs["duckdb"] / f"{nb}.results.json").read_text())
        assert pg["status"] == duck["status"] == "OK"
        assert pg["results"], nb
        assert _differences(pg["results"], duck["results"]) == [], nb
        assert pg["source"] == postgres_url.replace(f":{PASSWORD}", "")
        assert pg["parameters"]["source"] == pg["source"]
        assert len(pg["source_fingerprint"]) == 16
    leaked = [p.name for p in runs["postgres"].iterdir() if p.is_file()
              and PASSWORD.encode() in p.read_bytes()]
    assert leaked == []
    assert PASSWORD not in capsys.readouterr().out


def test_report_with_wrong_password_stops_before_running(postgres_url: str,
                                                        tmp_path: Path, capsys) -> None:
    wrong = postgres_url.replace(PASSWORD, "not-it")
    code = main(["report", "02_journey_funnel", "--source", wrong, "--out", str(tmp_path),
                 "--notebooks-dir", str(ROOT / "notebooks")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: cannot connect to the postgres source postgres://cx@")
    assert "not-it" not in err and not list(tmp_path.iterdir())


def test_validate_command_takes_a_url(postgres_url: str, capsys) -> None:
    assert main(["validate", postgres_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: customers (300 rows), events (")
