"""No sideways imports between analysis modules (issue 13 item 2).

An analysis module may import the shared rooms (data, stats, privacy, formatting,
breakdowns, ...) and only the analysis modules whose *results it takes as input* (listed in
``INPUTS``): attribution reads journey paths, pain points read a computed funnel. Helpers
that two analyses need live in a shared module, not in one of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cxanalysis"
ANALYSES = {"overview", "segments", "personas", "comparison", "funnel", "journeys",
            "attribution", "painpoints", "experiments"}
#: analysis -> analyses whose results it takes as input (and the names it may import)
INPUTS = {"attribution": {"journeys": {"NO_TOUCH", "SEP", "PathCounts"}},
          "painpoints": {"funnel": {"FunnelResult", "funnel"}}}


def _imports(module: str) -> list[tuple[str, str]]:
    """(imported cxanalysis module, imported name) pairs of ``module``'s source."""
    path = SRC / f"{module}.py"
    if not path.exists():  # a package (e.g. experiments/): every file of it
        files = sorted((SRC / module).glob("*.py"))
    else:
        files = [path]
    out = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("cxanalysis."):
                target = node.module.split(".")[1]
                out += [(target, a.name) for a in node.names]
    return out


@pytest.mark.parametrize("module", sorted(ANALYSES - {"personas"}))
def test_no_sideways_imports(module: str) -> None:
    allowed = INPUTS.get(module, {})
    bad = [f"{t}.{n}" for t, n in _imports(module)
           if t in ANALYSES and t != module and n not in allowed.get(t, set())]
    assert not bad, f"{module} imports {bad} from another analysis module"
