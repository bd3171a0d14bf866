"""Notebook storage policy: execute a notebook on the demo data, then keep only pinned output.

Committed notebooks carry no outputs except the small text outputs of cells marked
``# NBVAL_CHECK_OUTPUT`` (headline numbers on the demo data), with their execution counts:
``pytest --nbval-lax`` compares exactly those cells, and a cell without an execution count is
never compared, so stripping everything would silently switch the checks off. Images are
never kept.

Use ``cxanalysis pin notebooks/NN_name.ipynb`` after editing a notebook.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import nbformat

from cxanalysis.results import OUT_ENV

PIN_MARK = "# NBVAL_CHECK_OUTPUT"
_KEEP_MIME = ("text/plain",)


def is_pinned(cell: nbformat.NotebookNode) -> bool:
    return cell.get("cell_type") == "code" and PIN_MARK in cell.get("source", "")


def strip_unpinned(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove outputs and execution counts of every cell but the pinned ones, drop images
    and execution metadata from pinned ones, and clear papermill's metadata."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        if not is_pinned(cell):
            cell.outputs = []
            cell.execution_count = None
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream":
                kept.append(out)
            elif out.output_type in ("execute_result", "display_data"):
                data = {k: v for k, v in out.get("data", {}).items() if k in _KEEP_MIME}
                if data:
                    out.data = data
                    out.metadata = {}
                    kept.append(out)
        cell.outputs = kept
    return nb


def pin(path: str | os.PathLike[str], parameters: dict | None = None,
        out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Execute ``path`` in its own folder with papermill (kernel ``python3``), then rewrite it
    in place following the storage policy. Raises if the notebook fails.

    Side files the notebook writes (see :func:`cxanalysis.results.output_dir`) go to
    ``out_dir``, by default a temporary folder removed afterwards, so that pinning never
    reads or rewrites the repository's ``reports/``. Pin several notebooks with one
    ``out_dir`` to let a later one reuse an earlier one's side files, as nbval does.
    """
    import papermill as pm

    path = Path(path).resolve()
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="cxanalysis-pin-"))
        from cxanalysis.progress import ENV as PROGRESS_ENV

        saved = {k: os.environ.get(k) for k in (OUT_ENV, PROGRESS_ENV)}
        os.environ[OUT_ENV] = str(out_dir)
        os.environ[PROGRESS_ENV] = "0"  # pinned outputs never hold a progress bar
        try:
            executed = pm.execute_notebook(
                str(path), None, parameters=parameters or {}, kernel_name="python3",
                cwd=str(path.parent), progress_bar=False,
            )
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    nb = nbformat.from_dict(executed)
    # papermill adds an injected-parameters cell only when parameters are given.
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    nbformat.write(strip_unpinned(nb), str(path))
    return path
