"""Shared fixtures: the synthetic demo world, generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The demo world's size and seed (the same as ``make demo``).
DEMO_CUSTOMERS = 5000
DEMO_SEED = 42

# No progress bar in tests, nor in the notebooks and commands they start (they inherit it).
os.environ["CX_PROGRESS"] = "0"


@pytest.fixture(scope="session", autouse=True)
def _validation_cache(tmp_path_factory: pytest.TempPathFactory):
    """Validation verdicts of this session in a folder of its own (inherited by the
    ``cxanalysis report`` runs the tests start): the user's cache is never read or written,
    and a source the session validated once is not validated again by every notebook."""
    saved = os.environ.get("CX_CACHE_DIR")
    os.environ["CX_CACHE_DIR"] = str(tmp_path_factory.mktemp("cx-cache"))
    yield
    if saved is None:
        os.environ.pop("CX_CACHE_DIR", None)
    else:
        os.environ["CX_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def world_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the demo world (5,000 customers, seed 42), with its ``truth/``.

    Reuses ``data/demo`` when ``make`` has built it; otherwise generates the same world into
    a temporary folder. Tests must treat it as read-only.
    """
    demo = ROOT / "data" / "demo"
    if (demo / "truth" / "truth.json").exists() and not os.environ.get("CX_FRESH_WORLD"):
        return demo
    from cxanalysis.synth import generate

    out = tmp_path_factory.mktemp("world")
    return Path(generate(DEMO_CUSTOMERS, seed=DEMO_SEED, out=out))


@pytest.fixture(scope="session")
def world(world_path: Path):
    """The demo world opened as a validated :class:`cxanalysis.data.Source`."""
    from cxanalysis.data import open_source

    return open_source(world_path)
