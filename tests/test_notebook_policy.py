"""Every committed notebook follows the storage and parameter policy (see README)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from cxanalysis.notebooks import is_pinned

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_four_notebooks_exist() -> None:
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_policy(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    # A kernelspec tied to one venv breaks other machines (NoSuchKernel).
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse(params[0].source)
    names = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), "parameters cell holds only assignments"
        names[node.targets[0].id] = ast.literal_eval(node.value)  # literals only
    assert names.get("source") == "../data/demo"
    assert "min_group_size" in names or path.stem.startswith("00")
    pinned = [c for c in code if is_pinned(c)]
    assert pinned, "at least one # NBVAL_CHECK_OUTPUT cell pins headline numbers"
    for cell in code:
        if is_pinned(cell):
            # nbval never compares a cell without an execution count.
            assert cell.execution_count is not None and cell.outputs, "pinned cell not run"
        else:
            assert not cell.outputs, "only pinned cells keep outputs in git"
        for out in cell.outputs:
            assert "image/png" not in out.get("data", {}), "no images in git"
    assert "publish(" in code[-1].source, "the last cell publishes the headline results"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_readme_documents_every_parameter(path: Path) -> None:
    readme = (path.parents[1] / "README.md").read_text()
    section = readme.split(f"### `notebooks/{path.stem}`", 1)
    assert len(section) == 2, f"README has no parameter table for {path.stem}"
    table = section[1].split("###", 1)[0].split("\n## ", 1)[0]
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for node in ast.parse(cell.source).body:
        name = node.targets[0].id
        default = ast.get_source_segment(cell.source, node.value)
        assert f"| `{name}` | `{default}` |" in table, f"{name} = {default} not in README"
