"""The report runner: execute notebooks headlessly into HTML reports and headline JSON.

For every notebook ``NAME`` it writes, in the output folder,

- ``NAME.ipynb`` — the executed notebook (on failure: showing the failing cell);
- ``NAME.html`` — a self-contained report without code (opens offline, no CDN);
- ``NAME.results.json`` — strict JSON: ``notebook``, ``status``, ``parameters``, ``source``,
  ``source_fingerprint``, ``package_version``, ``duration_s``, ``error`` and ``results``
  (what the notebook published with :func:`cxanalysis.results.publish`);

and regenerates ``index.html`` linking the reports of the current run with their status,
parameters, data fingerprint, package version and duration. The run is recorded in
``cxanalysis-run.json`` (the run manifest: run id, source, notebooks, state and a hash of the
``index.html`` it wrote). Reports in the folder from older runs are listed apart, marked stale,
with their source and time; ``*.results.json`` files not written by this runner are ignored.
An existing ``index.html`` is overwritten only when the manifest shows that the runner wrote
it (or it is an older runner's page); any other ``index.html`` stops the run before anything
runs.

Date parameters may be given unquoted (``-p start=2025-03-01``; YAML reads a date): every date
becomes its ISO string before the notebook runs. Ctrl-C stops the run with one line, leaves
the interrupted notebook's previous report untouched and removes the temporary files. The
kernel's own log (stderr) goes to a temporary file, not the console; errors go to stderr.

Parameters are checked against each notebook's ``parameters`` cell before anything runs:
an unknown name or a value of the wrong type is an error (papermill alone only warns).
Notebooks run with kernel ``python3`` in the notebooks folder, as in JupyterLab and nbval.
Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import functools
import hashlib
import html
import io
import json
import os
import re
import sys
import tempfile
import time
import tokenize
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

import cxanalysis
from cxanalysis.data import fingerprint
from cxanalysis.files import atomic_write
from cxanalysis.formatting import headline
from cxanalysis.results import OUT_ENV, dumps, find_published, to_jsonable

KERNEL = "python3"
#: The run manifest the runner keeps in its output folder.
MANIFEST = "cxanalysis-run.json"
#: How every page written by the runner's :func:`write_index` starts (also before manifests
#: existed), so that an older runner's ``index.html`` is recognised as the runner's own.
_INDEX_HEAD = ("<!doctype html><html><head><meta charset='utf-8'>"
               "<title>cxanalysis reports</title>")


class ReportError(ValueError):
    """A report request that cannot run (bad parameters, unknown notebook, missing source)."""


class ReportInterrupted(Exception):
    """The run was interrupted (Ctrl-C) while ``name`` ran; nothing was published for it.

    ``results`` holds the reports finished before the interruption.
    """

    def __init__(self, name: str, results: list[ReportResult]):
        super().__init__(f"interrupted; nothing published for {name}")
        self.name = name
        self.results = results


@dataclass
class ReportResult:
    """What running one notebook produced."""

    name: str
    status: str  # "OK" or "FAILED"
    duration_s: float
    parameters: dict[str, Any]
    html: Path
    notebook: Path
    results_json: Path
    error: str | None = None
    results: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- parameters


def _parameters_cell(path: str | os.PathLike[str]) -> str:
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ReportError(f"{Path(path).name}: no cell tagged 'parameters'")
    return cells[0].source


def read_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The defaults in a notebook's cell tagged ``parameters`` (literal assignments only)."""
    params: dict[str, Any] = {}
    for node in ast.parse(_parameters_cell(path)).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise ReportError(f"{Path(path).name}: the parameters cell must hold only "
                              "'name = literal' assignments")
        try:
            params[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError as exc:
            raise ReportError(f"{Path(path).name}: parameter {node.targets[0].id!r} is not a "
                              "literal") from exc
    return params


def _is_iso_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def read_parameter_kinds(path: str | os.PathLike[str]) -> dict[str, str]:
    """The date parameters of a notebook: ``{name: "date" | "window"}``.

    A parameter is a date when its default is an ISO date string, or when its default is
    None and its comment mentions an "ISO date"; it is a window (``[start, end]``) when its
    default is a list of two ISO dates, or when its default is None and its comment
    contains ``[start, end]``. The comment is how a None default still declares a type, so that
    a wrong value is rejected before anything runs.
    """
    source = _parameters_cell(path)
    defaults = read_parameters(path)
    comments: dict[int, str] = {}
    with contextlib.suppress(tokenize.TokenError):
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip().lower()
    kinds = {}
    for node in ast.parse(source).body:
        name = node.targets[0].id  # type: ignore[attr-defined]
        default = defaults[name]
        comment = " ".join(comments.get(i, "") for i in range(node.lineno,
                                                               (node.end_lineno or 0) + 1))
        window = "[start, end]" in comment
        if _is_iso_date(default) or (default is None and "iso date" in comment
                                     and not window):
            kinds[name] = "date"
        elif ((isinstance(default, list) and len(default) == 2
               and all(_is_iso_date(v) for v in default)) or (default is None and window)):
            kinds[name] = "window"
    return kinds


def _kind_ok(kind: str, value: Any) -> bool:
    if value is None:
        return True
    if kind == "date":
        return _is_iso_date(value)
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(_is_iso_date(v) for v in value)
            and dt.datetime.fromisoformat(value[0]) <= dt.datetime.fromisoformat(value[1]))


def iso_dates(value: Any) -> Any:
    """``value`` with every date and datetime (also inside lists and mappings) replaced by
    its ISO string: YAML reads an unquoted ``2025-03-01`` as a date, which papermill cannot
    pass to a notebook (it is not JSON), and notebooks take dates as ISO strings."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: iso_dates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [iso_dates(v) for v in value]
    return value


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _compatible(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True  # None means "not set": any value, and any parameter may be unset
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def check_parameters(name: str, defaults: Mapping[str, Any], overrides: Mapping[str, Any],
                     kinds: Mapping[str, str] | None = None) -> list[str]:
    """Problems with ``overrides`` for notebook ``name`` (empty when they are fine).

    ``kinds`` (see :func:`read_parameter_kinds`) marks date and window parameters: their
    values must be ISO dates (``[start, end]`` with start <= end for a window) or None,
    also when the default is None.
    """
    kinds = kinds or {}
    problems = []
    for key, value in overrides.items():
        if key not in defaults:
            problems.append(f"{name}: unknown parameter {key!r} (known: "
                            f"{', '.join(sorted(defaults))})")
        elif key in kinds:
            if not _kind_ok(kinds[key], value):
                want = ("an ISO date like '2025-03-01'" if kinds[key] == "date" else
                        "[start, end] ISO dates like [2025-01-01, 2025-03-31]")
                problems.append(f"{name}: parameter {key!r} expects {want} (or null), got "
                                f"{_type_name(value)} {value!r}")
        elif not _compatible(defaults[key], value):
            problems.append(f"{name}: parameter {key!r} expects {_type_name(defaults[key])} "
                            f"like {defaults[key]!r}, got {_type_name(value)} {value!r}")
    return problems


def parse_cli_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b=[x, y]"]`` -> ``{"a": 1, "b": ["x", "y"]}`` (values read as YAML; dates,
    quoted or not, become ISO strings: ``d=2025-03-01`` -> ``{"d": "2025-03-01"}``)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ReportError(f"parameter {pair!r} is not NAME=VALUE")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = iso_dates(yaml.safe_load(raw)) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ReportError(f"parameter {key!r}: cannot read value {raw!r}: {exc}") from exc
    return out


def split_params_file(data: Mapping[str, Any], notebook_names: Sequence[str]
                      ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split a parameters file into (for every notebook, per notebook).

    A top-level key naming a notebook (e.g. ``02_journey_funnel``) whose value is a mapping
    holds that notebook's own parameters; every other key applies to every notebook that has
    the parameter.
    """
    common: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for key, value in (data or {}).items():
        if key in notebook_names and isinstance(value, Mapping):
            per[key] = dict(value)
        else:
            common[key] = value
    return common, per


# --------------------------------------------------------------------------- writing


@functools.cache
def _exporter():
    """One HTML exporter per process: building one compiles its templates again (about a
    quarter of an export), and an exporter converts any number of notebooks, as in
    ``jupyter nbconvert``."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    # Every asset nbconvert would fetch from a CDN is switched off; figures are embedded.
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    exporter.mermaid_js_url = ""
    exporter.mermaid_layout_elk_js_url = ""
    return exporter


def to_html(nb: nbformat.NotebookNode, failed_banner: str | None = None) -> str:
    """A self-contained HTML report without code cells (no CDN: opens offline)."""
    body, _ = _exporter().from_notebook_node(nb)
    if failed_banner:
        banner = ('<div style="background:#b00020;color:white;padding:1em;font:bold 1.2em '
                  f'sans-serif">FAILED: {html.escape(failed_banner)}</div>')
        body = body.replace("<body", "<body", 1)
        i = body.find(">", body.find("<body")) + 1
        body = body[:i] + banner + body[i:]
    return body


@contextlib.contextmanager
def _kernel_environment(out_dir: Path) -> Iterator[None]:
    """Environment for the kernel: without MPLBACKEND (an inherited Agg backend silently
    produced zero figures in executed notebooks), with ``CXANALYSIS_OUT`` naming the run's
    output folder (see :func:`cxanalysis.results.output_dir`) and progress bars off
    (``CX_PROGRESS=0``, :mod:`cxanalysis.progress`)."""
    from cxanalysis.engines import CREDENTIALS_ENV, credentials_env
    from cxanalysis.progress import ENV as PROGRESS_ENV

    saved = {k: os.environ.get(k) for k in ("MPLBACKEND", OUT_ENV, CREDENTIALS_ENV,
                                            PROGRESS_ENV)}
    os.environ.pop("MPLBACKEND", None)
    os.environ[OUT_ENV] = str(out_dir)
    os.environ[PROGRESS_ENV] = "0"  # a report holds results, never a progress bar
    # The source URL's password reaches the kernel here, never as a notebook parameter.
    if credentials_env():
        os.environ[CREDENTIALS_ENV] = credentials_env()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _quiet_kernel_manager(log: Path) -> type:
    """A kernel manager class whose kernel writes its own log (stdout/stderr of the kernel
    process, not the notebook's outputs) to ``log`` instead of the console: the log holds
    ipykernel's "running over TCP without encryption" warning on every start and, after
    Ctrl-C, the zmq tracebacks of a kernel whose sockets are being closed."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            with log.open("ab") as fh:  # the child keeps its own copy of the descriptor
                kw["stdout"] = kw["stderr"] = fh
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return QuietKernelManager


def _log_tail(log: Path, lines: int = 3) -> str:
    """The last non-empty lines of a kernel log ('' when there is none)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def first_problem(error: str, limit: int = 300) -> str:
    """One console line for an error: its first line, followed by the first problem when
    the first line only announces a list (``CXDataError: 1 data contract error(s):`` is
    followed by the first rule broken), and the failing cell."""
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()]
    if not lines:
        return ""
    head = lines[0]
    if head.endswith(":") and len(lines) > 1:
        head = f"{head} {lines[1].removeprefix('- ')}"
    if len(head) > limit:
        head = head[:limit - 1] + "…"
    cell = re.search(r"\(cell \d+\)$", lines[-1])
    return head if cell is None or head.endswith(cell.group()) else f"{head} {cell.group()}"


# --------------------------------------------------------------------------- running


def find_notebooks_dir(notebooks_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the project's notebooks.

    ``notebooks_dir`` when given; otherwise ``./notebooks`` when it holds ``NN_*.ipynb``
    notebooks, else the ``notebooks`` folder next to the package's source tree (an editable
    install or a checkout: ``<project>/src/cxanalysis`` -> ``<project>/notebooks``), so that
    ``cxanalysis report`` works from any working directory.

    Raises
    ------
    ReportError
        When no candidate holds notebooks; the message names the folders tried and
        ``--notebooks-dir``.
    """
    if notebooks_dir is not None:
        return Path(notebooks_dir).expanduser().resolve()
    here = Path.cwd() / "notebooks"
    beside_package = Path(cxanalysis.__file__).resolve().parents[2] / "notebooks"
    for candidate in (here, beside_package):
        if any(candidate.glob("[0-9][0-9]_*.ipynb")):
            return candidate.resolve()
    raise ReportError(f"no notebooks NN_*.ipynb in {here} nor in {beside_package} (next to "
                      "the installed package); run from the project's root folder or pass "
                      "--notebooks-dir FOLDER")


def _resolve_notebooks(notebooks: Sequence[str], notebooks_dir: Path) -> list[Path]:
    if not notebooks:
        found = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
        if not found:
            raise ReportError(f"no notebooks NN_*.ipynb in {notebooks_dir}; pass "
                              "--notebooks-dir FOLDER (the project's notebooks folder)")
        return found
    out = []
    for item in notebooks:
        p = Path(item)
        candidates = [p, notebooks_dir / p.name, notebooks_dir / f"{p.name}.ipynb"]
        hit = next((c for c in candidates if c.suffix == ".ipynb" and c.is_file()), None)
        if hit is None:
            raise ReportError(f"notebook {item!r} not found (looked in {notebooks_dir})")
        out.append(hit.resolve())
    return out


def _notebooks_dir_for(notebooks: Sequence[str],
                       notebooks_dir: str | os.PathLike[str] | None) -> Path:
    """:func:`find_notebooks_dir`, except that notebooks named by their path run in their
    own folder when no project notebooks folder is found."""
    try:
        return find_notebooks_dir(notebooks_dir)
    except ReportError:
        files = [Path(n) for n in notebooks if Path(n).suffix == ".ipynb" and Path(n).is_file()]
        if notebooks and len(files) == len(notebooks):
            return files[0].resolve().parent
        raise


def run_reports(
    notebooks: Sequence[str] = (),
    source: str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] = "reports",
    notebooks_dir: str | os.PathLike[str] | None = None,
    per_notebook: Mapping[str, Mapping[str, Any]] | None = None,
    echo: bool = True,
    mapping: str | os.PathLike[str] | None = None,
) -> list[ReportResult]:
    """Execute notebooks and write their reports; see the module docstring.

    Parameters
    ----------
    notebooks : sequence of str
        Notebook paths or names (default: every ``NN_*.ipynb`` in ``notebooks_dir``).
    source : path-like, optional
        Data source for every notebook (sets the ``source`` parameter, made absolute).
    params : mapping, optional
        Parameters for every notebook that has them; a name no selected notebook knows is
        an error. Dates (``datetime.date``) become ISO strings.
    out : path-like
        Output folder.
    notebooks_dir : path-like, optional
        Folder of the notebooks; also the kernel's working directory. Default: found by
        :func:`find_notebooks_dir` (``./notebooks``, else the project's notebooks folder).
    per_notebook : mapping, optional
        ``{notebook name: {parameter: value}}``; each name must be known to that notebook.
    echo : bool
        Print a progress line per notebook (stdout) and each failure's first problem
        (stderr).
    mapping : path-like or str, optional
        Mapping file or preset name for the source (sets the ``mapping`` parameter; a file
        made absolute). Checked before anything runs.

    Raises
    ------
    ReportError
        Before anything runs, for unknown notebooks, unknown parameters, wrong types, values
        a notebook cannot receive, a missing source, or an ``index.html`` in ``out`` that
        the runner did not write.
    ReportInterrupted
        On Ctrl-C: the running notebook's temporary files are removed, its previous report
        is left as it was, and the run manifest and index say the run was interrupted.
    """
    nb_dir = _notebooks_dir_for(list(notebooks), notebooks_dir)
    out_dir = Path(out).resolve()
    paths = _resolve_notebooks(list(notebooks), nb_dir)
    names = [p.stem for p in paths]
    common = iso_dates(dict(params or {}))
    per = {k: iso_dates(dict(v)) for k, v in (per_notebook or {}).items()}
    unknown_nb = sorted(set(per) - set(names))
    if unknown_nb:
        raise ReportError(f"parameters given for notebook(s) not being run: {unknown_nb}")
    from cxanalysis import engines

    src: Path | None = None
    engines.forget()
    if source is None and engines.is_url(common.get("source")):
        source = common["source"]  # -p source=URL: redacted like --source
    if source is not None and engines.is_url(str(source)):
        # Notebooks, results.json and the index see the URL without its password
        common["source"] = engines.remember(str(source))
        from cxanalysis.data import CXDataError, open_source

        try:  # unreachable or wrong credentials: stop before any report is replaced
            open_source(str(source), validate=False).close()
        except CXDataError as exc:
            raise ReportError(str(exc)) from exc
    elif source is not None:
        src = Path(source).expanduser().resolve()
        if not src.exists():
            raise ReportError(f"source {src} does not exist")
        common["source"] = str(src)
    if mapping is not None:
        from cxanalysis.data import CXDataError
        from cxanalysis.mapping import mapping_parameter

        try:
            common["mapping"] = mapping_parameter(mapping)
            if "source" in common:
                # Files, tables and columns the mapping names are checked against the source
                # here (schema only, no data scanned), so that a wrong entry stops the run
                # before any report is replaced by a failed one.
                from cxanalysis.data import open_source

                open_source(common["source"], mapping=common["mapping"], validate=False).close()
        except CXDataError as exc:
            raise ReportError(str(exc)) from exc

    plans: list[tuple[Path, dict[str, Any], dict[str, Any]]] = []
    problems: list[str] = []
    defaults_by_nb = {p.stem: read_parameters(p) for p in paths}
    kinds_by_nb = {p.stem: read_parameter_kinds(p) for p in paths}
    for key in common:
        if not any(key in d for d in defaults_by_nb.values()):
            problems.append(f"unknown parameter {key!r}: no selected notebook has it")
    for path in paths:
        defaults = defaults_by_nb[path.stem]
        mine = {k: v for k, v in common.items() if k in defaults}
        kinds = kinds_by_nb[path.stem]
        problems += check_parameters(path.stem, defaults, mine, kinds)
        own = per.get(path.stem, {})
        problems += check_parameters(path.stem, defaults, own, kinds)
        mine.update(own)
        try:  # papermill stores the parameters in the notebook as JSON: check it now
            json.dumps(mine)
        except (TypeError, ValueError) as exc:
            problems.append(f"{path.stem}: parameters cannot be passed to a notebook: {exc}")
        plans.append((path, defaults, mine))
    if problems:
        raise ReportError("cannot run reports:\n  - " + "\n  - ".join(problems))
    previous = _check_index_is_ours(out_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "written_by": "cxanalysis report",
        "run_id": uuid.uuid4().hex[:12],
        "state": "running",
        "started_at": _now(),
        "finished_at": None,
        "package_version": cxanalysis.__version__,
        "source": str(src) if src else common.get("source"),
        "source_fingerprint": fingerprint(src) if src else _url_fingerprint(common.get("source")),
        "notebooks": names,
        "finished": [],
        "interrupted": None,
        "index_sha256": previous,
    }
    _write_run(out_dir, manifest)
    results: list[ReportResult] = []
    name = ""
    try:
        for i, (path, defaults, overrides) in enumerate(plans, 1):
            name = path.stem
            if echo:
                print(f"[{i}/{len(plans)}] {name} ...", end=" ", flush=True)
            res = _run_one(path, defaults, overrides, out_dir, nb_dir, manifest["run_id"])
            results.append(res)
            manifest["finished"].append(name)
            if echo:
                print(f"{res.status} ({res.duration_s:.1f} s)", flush=True)
                if res.error:
                    print(f"error: {name}: {first_problem(res.error)}", file=sys.stderr,
                          flush=True)
            _write_run(out_dir, manifest)
    except KeyboardInterrupt:
        if echo:
            print(flush=True)  # end the progress line
        manifest.update(state="interrupted", interrupted=name, finished_at=_now())
        _write_run(out_dir, manifest)
        raise ReportInterrupted(name, results) from None
    manifest.update(state="complete", finished_at=_now())
    _write_run(out_dir, manifest)
    return results


def _url_fingerprint(url: Any) -> str | None:
    """Fingerprint of a database source given by its (redacted) URL, None otherwise."""
    from cxanalysis.engines import is_url

    if not is_url(url):
        return None
    from cxanalysis.data import open_source

    try:
        with open_source(url, validate=False) as source:
            return source.fingerprint
    except Exception:  # unreachable now: the record says so by having none
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _run_one(path: Path, defaults: dict[str, Any], overrides: dict[str, Any], out_dir: Path,
             nb_dir: Path, run_id: str | None = None) -> ReportResult:
    """Run one notebook into a temporary file, then publish its report.

    Nothing of an earlier report of the same notebook is touched until the run has ended
    and the new report is ready in memory; an interruption (Ctrl-C) publishes nothing and
    removes the temporary files.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    name = path.stem
    effective = {**defaults, **overrides}
    src_param = effective.get("source")
    from cxanalysis.engines import is_url

    src_path = ((nb_dir / src_param).resolve() if isinstance(src_param, str)
                and not is_url(src_param) else None)
    nb_out = out_dir / f"{name}.ipynb"
    html_out = out_dir / f"{name}.html"
    json_out = out_dir / f"{name}.results.json"
    tmp_nb = out_dir / f".{name}.running.ipynb"
    fd, log_name = tempfile.mkstemp(prefix=f"cxanalysis-{name}-", suffix=".kernel.log")
    os.close(fd)
    kernel_log = Path(log_name)
    start = time.perf_counter()
    error = None
    try:
        with _kernel_environment(out_dir):
            try:
                pm.execute_notebook(str(path), str(tmp_nb), parameters=overrides,
                                    kernel_name=KERNEL, cwd=str(nb_dir), progress_bar=False,
                                    log_output=False,
                                    kernel_manager_class=_quiet_kernel_manager(kernel_log))
            except PapermillExecutionError as exc:
                error = f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
            except Exception as exc:  # kernel died, notebook unreadable, ...
                error = f"{type(exc).__name__}: {exc}"
                tail = _log_tail(kernel_log)
                if tail:
                    error += f"\nkernel log:\n{tail}"
        duration = time.perf_counter() - start
        status = "FAILED" if error else "OK"
        published: dict[str, Any] = {}
        executed = tmp_nb.exists()
        if executed:
            nb = nbformat.read(str(tmp_nb), as_version=4)
            published = find_published(nb) or {}
        else:
            nb = nbformat.read(str(path), as_version=4)
        try:
            page = to_html(nb, failed_banner=error)
        except Exception as exc:  # pragma: no cover - nbconvert failure
            status, error = "FAILED", error or f"HTML export failed: {exc}"
            page = f"<html><body><h1>FAILED: {html.escape(error)}</h1></body></html>"
        record = {
            "notebook": name,
            "status": status,
            "parameters": to_jsonable(effective),
            "source": str(src_path) if src_path else (
                src_param if is_url(src_param) else None),  # a URL: already redacted
            "source_fingerprint": (fingerprint(src_path) if src_path and src_path.exists()
                                   else _url_fingerprint(src_param)),
            "package_version": cxanalysis.__version__,
            "finished_at": _now(),
            "duration_s": round(duration, 2),
            "error": error,
            "results": published,
            "run_id": run_id,
        }
        text = dumps(record) + "\n"
        # Publish: the notebook, the page, then the record the index reads.
        if executed:
            os.replace(tmp_nb, nb_out)
        else:
            nb_out.unlink(missing_ok=True)  # never leave an older executed notebook current
        atomic_write(html_out, page)
        atomic_write(json_out, text)
    finally:
        tmp_nb.unlink(missing_ok=True)
        kernel_log.unlink(missing_ok=True)
    return ReportResult(name, status, duration, effective, html_out, nb_out, json_out, error,
                        published)


# --------------------------------------------------------------------------- index


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == "cxanalysis report" \
        else None


def _check_index_is_ours(out_dir: Path) -> str | None:
    """The hash of the runner's ``index.html`` in ``out_dir`` (None when there is none).

    Raises
    ------
    ReportError
        When ``index.html`` exists but the runner did not write it: its content matches no
        hash in the run manifest (and it is not an older runner's page, recognisable by its
        first line, in a folder without a manifest).
    """
    index = out_dir / "index.html"
    if not index.is_file():
        return None
    data = index.read_bytes()
    digest = _sha256(data)
    manifest = _read_manifest(out_dir)
    if manifest is not None:
        ours = digest in (manifest.get("index_sha256"), manifest.get("previous_index_sha256"))
    else:  # written before run manifests existed
        ours = data.startswith(_INDEX_HEAD.encode())
    if not ours:
        raise ReportError(f"{index} was not written by cxanalysis report (or was edited "
                          f"since; see {MANIFEST}): it is left untouched; move it away or "
                          "choose another --out")
    return digest


def _report_records(out_dir: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The runner's ``*.results.json`` records in ``out_dir`` by notebook, and the names of
    the ``*.results.json`` files it did not write (no ``notebook``/``package_version`` keys,
    or a ``notebook`` that is not the file's name)."""
    records: dict[str, dict[str, Any]] = {}
    foreign: list[str] = []
    for f in sorted(out_dir.glob("*.results.json")):
        stem = f.name.removesuffix(".results.json")
        try:
            r = json.loads(f.read_text())
        except (OSError, ValueError):
            r = None
        if (isinstance(r, dict) and r.get("notebook") == stem and "package_version" in r
                and "status" in r):
            records[stem] = r
        else:
            foreign.append(f.name)
    return records, foreign


def _params_text(r: Mapping[str, Any]) -> str:
    params = r.get("parameters") or {}
    return html.escape(", ".join(f"{k}={json.dumps(v)}" for k, v in params.items()))


_INDEX_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    "table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}"
    ".stale{color:#666}.run{color:#444;overflow-wrap:anywhere}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:1em}"
    ".card{border:1px solid #d0d7de;border-radius:8px;padding:.8em 1em;background:#fff;"
    "overflow-wrap:anywhere}"
    ".card h2{font-size:1.15em;margin:.1em 0 .4em 0}"
    ".card ul{margin:.3em 0 .6em 0;padding-left:1.2em}.card li{margin:.2em 0}"
    ".status{font-weight:bold;margin:.2em 0}.ok{color:#1b5e20}.failed{color:#b00020}"
    ".warn{color:#8a6d00}.meta{font-size:.8em;color:#555;margin:.2em 0}"
    "details{font-size:.8em;color:#555}")


def _when(iso: Any) -> str:
    """An ISO time as "2025-03-01 14:05 UTC" (the text itself when it is not one)."""
    try:
        t = dt.datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso or "")
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _card(name: str, r: Mapping[str, Any]) -> str:
    """One report's card on the index: its headline (from its results), status, source,
    data fingerprint, time, and links."""
    e = html.escape
    status = str(r.get("status", "?"))
    cls = "ok" if status == "OK" else "failed"
    lines = headline(r.get("results") or {})
    body = ("<ul>" + "".join(f"<li>{e(t)}</li>" for t in lines) + "</ul>" if lines else
            "<p class='meta'>No headline published.</p>" if status == "OK" else "")
    if r.get("error"):
        body += f"<p class='failed'>{e(first_problem(str(r['error'])))}</p>"
    src = r.get("source")
    return (f"<section class='card'><h2><a href=\"{e(name)}.html\">{e(name)}</a></h2>"
            f"<p class='status {cls}'>{e(status)}</p>{body}"
            f"<p class='meta'>source <code>{e(str(src or 'not recorded'))}</code>, data "
            f"fingerprint <code>{e(str(r.get('source_fingerprint') or 'none'))}</code></p>"
            f"<p class='meta'>finished {e(_when(r.get('finished_at')))} in "
            f"{e(str(r.get('duration_s', '')))} s, cxanalysis "
            f"{e(str(r.get('package_version', '')))}</p>"
            f"<p class='meta'><a href=\"{e(name)}.html\">report</a> · "
            f"<a href=\"{e(name)}.results.json\">results</a> · "
            f"<a href=\"{e(name)}.ipynb\">notebook</a></p>"
            f"<details><summary>parameters</summary>{_params_text(r)}</details></section>")


def _index_page(out_dir: Path, manifest: Mapping[str, Any] | None) -> str:
    records, foreign = _report_records(out_dir)
    e = html.escape
    run_id = manifest.get("run_id") if manifest else None
    if manifest:
        planned = list(manifest.get("notebooks") or [])
        current = {n: records[n] for n in planned
                   if n in records and records[n].get("run_id") == run_id}
        stale = {n: r for n, r in records.items() if n not in current}
    else:  # no manifest (write_index on a folder of reports): every report is listed
        planned, current, stale = sorted(records), records, {}
    cards = []
    for n in planned:
        r = current.get(n)
        if r is None:
            if manifest and manifest.get("interrupted") == n:
                state = "INTERRUPTED: nothing published"
            elif manifest and manifest.get("state") == "running":
                state = "NOT RUN YET"
            else:
                state = "NOT RUN"
            cards.append(f"<section class='card'><h2>{e(n)}</h2>"
                         f"<p class='status warn'>{state}</p></section>")
            continue
        cards.append(_card(n, r))
    parts = [_INDEX_HEAD,
             "<meta name='generator' content='cxanalysis report'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<style>{_INDEX_STYLE}</style></head><body><h1>cxanalysis reports</h1>"]
    if manifest:
        state = str(manifest.get("state"))
        if state == "interrupted":
            state += f" while {manifest.get('interrupted')} ran"
        src = manifest.get("source")
        parts.append(
            f"<p class='run'>Run <code>{e(str(run_id))}</code> ({e(state)}), started "
            f"{e(str(manifest.get('started_at')))}"
            + (f", source <code>{e(str(src))}</code> (fingerprint "
               f"<code>{e(str(manifest.get('source_fingerprint')))}</code>)" if src else "")
            + f", cxanalysis {e(str(manifest.get('package_version')))}.</p>")
    parts.append("<div class='cards'>" + "".join(cards) + "</div>")
    if stale:
        def link(n: str) -> str:  # no dead link when an older report's page is gone
            return f'<a href="{e(n)}.html">{e(n)}</a>' if (out_dir / f"{n}.html").is_file() \
                else e(n)

        srows = "".join(
            f'<tr class="stale"><td>{link(n)}</td>'
            f"<td>STALE ({e(str(r.get('status', '?')))})</td>"
            f"<td><code>{e(str(r.get('source') or ''))}</code></td>"
            f"<td><code>{e(str(r.get('source_fingerprint') or ''))}</code></td>"
            f"<td>{e(str(r.get('finished_at', '')))}</td>"
            f"<td>{e(str(r.get('package_version', '')))}</td></tr>"
            for n, r in sorted(stale.items()))
        parts.append("<h2>Older reports in this folder (stale: not from this run)</h2>"
                     "<div style='overflow-x:auto'><table><tr><th>report</th><th>status</th>"
                     "<th>source</th><th>data fingerprint</th><th>finished (UTC)</th>"
                     "<th>package</th></tr>" + srows + "</table></div>")
    if foreign:
        parts.append("<p class='stale'>Not listed: " + e(", ".join(foreign))
                     + " (not written by cxanalysis report).</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _write_run(out_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``index.html`` and the manifest that records its hash. The manifest goes first
    and keeps the previous hash too, so that an interruption between the two writes never
    makes the runner's own index look foreign."""
    page = _index_page(out_dir, manifest)
    digest = _sha256(page.encode())
    if manifest.get("index_sha256") != digest:
        manifest["previous_index_sha256"] = manifest.get("index_sha256")
        manifest["index_sha256"] = digest
    atomic_write(out_dir / MANIFEST, dumps(manifest) + "\n")
    path = out_dir / "index.html"
    atomic_write(path, page)
    return path


def write_index(out_dir: str | os.PathLike[str]) -> Path:
    """(Re)write ``index.html`` in ``out_dir`` for the run recorded in its manifest (every
    report of the runner in the folder when there is no manifest).

    Raises
    ------
    ReportError
        When the folder's ``index.html`` was not written by the runner.
    """
    out_dir = Path(out_dir)
    _check_index_is_ours(out_dir)
    manifest = _read_manifest(out_dir)
    if manifest is None:
        path = out_dir / "index.html"
        atomic_write(path, _index_page(out_dir, None))
        return path
    return _write_run(out_dir, manifest)


# --------------------------------------------------------------------------- CLI


def main(args: argparse.Namespace) -> int:
    """``cxanalysis report``: 0 when every notebook succeeded, 1 when one failed, 2 when the
    request itself is wrong (nothing was run), 130 when interrupted (Ctrl-C). Progress goes
    to stdout; errors, failures and the interruption to stderr."""
    try:
        params = parse_cli_params(args.param)
        per: dict[str, dict[str, Any]] = {}
        nb_dir = _notebooks_dir_for(list(args.notebooks), args.notebooks_dir)
        if args.params_file:
            try:
                data = yaml.safe_load(Path(args.params_file).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ReportError(f"{args.params_file}: cannot read: {exc}") from exc
            if not isinstance(data, Mapping):
                raise ReportError(f"{args.params_file}: expected a mapping of parameters")
            names = [p.stem for p in _resolve_notebooks(list(args.notebooks), nb_dir)]
            file_common, per = split_params_file(iso_dates(data), names)
            params = {**file_common, **params}  # the command line wins over the file
        results = run_reports(args.notebooks, source=args.source, params=params, out=args.out,
                              notebooks_dir=nb_dir, per_notebook=per,
                              mapping=getattr(args, "mapping", None))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except ReportInterrupted as exc:
        print(exc, file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:  # before any notebook ran
        print("interrupted; nothing was run", file=sys.stderr, flush=True)
        return 130
    failed = [r.name for r in results if r.status != "OK"]
    line = (f"{len(results) - len(failed)} of {len(results)} report(s) OK; index: "
            f"{Path(args.out) / 'index.html'}" + (f"; FAILED: {', '.join(failed)}" if failed
                                                  else ""))
    print(line, file=sys.stderr if failed else sys.stdout, flush=True)
    return 1 if failed else 0
