"""Shared fixtures: the synthetic demo world, generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The demo world's size and seed (the same as ``make demo``).
DEMO_CUSTOMERS = 5000
DEMO_SEED = 42


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
