"""pytest --nbval runs the notebooks here: their side files go to a temporary folder.

A notebook writes side files (the learning log of 03, ...) to
:func:`cxanalysis.results.output_dir`, which is ``../reports`` outside the report runner. Under
nbval that would rewrite the repository's reports; ``make test`` must not modify tracked or
report files, so the kernels nbval starts (which inherit this process's environment) get
``CXANALYSIS_OUT`` set to a temporary folder, removed at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from cxanalysis.results import OUT_ENV

_STATE: dict[str, str | None] = {}


def pytest_configure(config: object) -> None:
    _STATE["saved"] = os.environ.get(OUT_ENV)
    _STATE["tmp"] = tempfile.mkdtemp(prefix="cxanalysis-nbval-")
    os.environ[OUT_ENV] = _STATE["tmp"]


def pytest_unconfigure(config: object) -> None:
    saved, tmp = _STATE.get("saved"), _STATE.get("tmp")
    if saved is None:
        os.environ.pop(OUT_ENV, None)
    else:
        os.environ[OUT_ENV] = saved
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


def pytest_collection_modifyitems(session: object, config: object, items: list) -> None:
    """Pinned cells are compared on ``text/plain`` only, as the pin keeps it (see
    :mod:`cxanalysis.notebooks`): a table shown with :func:`cxanalysis.formatting.show`
    carries ``text/html`` for the reader and ``text/plain`` for this check."""
    for item in items:
        parent = getattr(item, "parent", None)
        skip = getattr(parent, "skip_compare", None)
        if isinstance(skip, tuple) and "text/html" not in skip:
            parent.skip_compare = (*skip, "text/html")
