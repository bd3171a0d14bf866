"""Packaging facts a user relies on: one dependency list, a current data-model doc, CI = README."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from cxanalysis.schema import data_model_markdown

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_installs_exactly_the_pyproject_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # conda provides only the interpreter and pip; everything else comes from pyproject
    # through the editable install with the dev extra, so the two lists cannot drift.
    assert {_name(d) for d in conda} == {"python", "pip"}
    assert pip == ["-e .[dev,bench]"]
    python_floor = next(d for d in conda if d.startswith("python"))
    assert python_floor.replace("python", "") == project["requires-python"]
    extras = project["optional-dependencies"]
    assert set(extras) == {"dev", "bench"}
    names = {_name(d) for d in project["dependencies"]}
    # the benchmark anchors (issue 15) are a bench extra, never runtime dependencies, and
    # environment.yml says how to add them
    bench = {_name(d) for d in extras["bench"]}
    assert "tea-tasting" in bench and not bench & names
    assert "pip install -e .[dev,bench]" in (ROOT / "environment.yml").read_text()
    for needed in ("pandas", "numpy", "scipy", "duckdb", "ibis-framework", "pyarrow", "seaborn",
                   "matplotlib", "statsmodels", "scikit-learn", "papermill", "nbconvert",
                   "ipykernel", "jupyterlab"):
        assert needed in names, needed
    dev = {_name(d) for d in project["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval", "ruff", "hypothesis", "pytest-benchmark", "pyspark"} <= dev
    # benchmark anchors are never runtime dependencies (issue 15)
    bench = {_name(d) for d in project["optional-dependencies"]["bench"]}
    assert "chdb" in bench and not bench & names


def test_package_never_imports_benchmark_only_dependencies() -> None:
    for path in (ROOT / "src").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+chdb\b", path.read_text(), re.M), path


def test_data_model_doc_is_generated_from_the_schema() -> None:
    assert (ROOT / "docs" / "data-model.md").read_text() == data_model_markdown(), (
        "docs/data-model.md is stale: run `python -m cxanalysis.schema > docs/data-model.md`")


def test_ci_runs_only_what_the_readme_tells_a_user() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line and not line.startswith(("#", "set ",
                                                                                  "cd "))]
    assert commands == ["make test"]
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make reports" in readme


def test_ibis_and_sqlglot_can_replace_a_table() -> None:
    """The dependency trap of ibis 12 with sqlglot 30.18+: ``create_table(overwrite=True)``
    sent an empty ``DROP TABLE IF EXISTS`` and failed with a parser error."""
    import ibis
    import pandas as pd

    con = ibis.duckdb.connect()
    first = ibis.memtable(pd.DataFrame({"a": [1, 2]}))
    con.create_table("replaced", first, overwrite=True)
    con.create_table("replaced", ibis.memtable(pd.DataFrame({"a": [3]})), overwrite=True)
    assert con.table("replaced").to_pandas()["a"].tolist() == [3]
