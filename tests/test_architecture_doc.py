"""docs/architecture.md stays a true map (issue 13 item 6): every module of the package is
linked from it, and every link of it points to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
SRC = ROOT / "src" / "cxanalysis"


def _links() -> set[Path]:
    return {(DOC.parent / m).resolve()
            for m in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", DOC.read_text())
            if "://" not in m}


def test_architecture_doc_links_every_module() -> None:
    linked = _links()
    modules = [p for p in [*SRC.glob("*.py"), *(SRC / "experiments").glob("*.py")]
               if p.name != "__init__.py" or p.parent.name == "experiments"]
    missing = [str(p.relative_to(SRC)) for p in modules if p.resolve() not in linked]
    assert not missing, f"docs/architecture.md does not link {missing}"


def test_architecture_doc_links_resolve() -> None:
    broken = [str(p) for p in _links() if not p.exists()]
    assert not broken, f"docs/architecture.md links to missing files {broken}"


def test_readme_links_the_architecture_doc() -> None:
    assert "](docs/architecture.md)" in (ROOT / "README.md").read_text()
