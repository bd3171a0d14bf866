"""The report runner: execute notebooks headlessly into HTML reports and headline JSON.

For every notebook ``NAME`` it writes, in the output folder,

- ``NAME.ipynb`` — the executed notebook (on failure: showing the failing cell);
- ``NAME.html`` — a self-contained report without code (opens offline, no CDN);
- ``NAME.results.json`` — strict JSON: ``notebook``, ``status``, ``parameters``, ``source``,
  ``source_fingerprint``, ``package_version``, ``duration_s``, ``error`` and ``results``
  (what the notebook published with :func:`cxanalysis.results.publish`);

and regenerates ``index.html`` linking every report with its status, parameters, data
fingerprint, package version and duration.

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
import html
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

import cxanalysis
from cxanalysis.data import fingerprint
from cxanalysis.results import OUT_ENV, dumps, find_published, to_jsonable

KERNEL = "python3"


class ReportError(ValueError):
    """A report request that cannot run (bad parameters, unknown notebook, missing source)."""


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


def read_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The defaults in a notebook's cell tagged ``parameters`` (literal assignments only)."""
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ReportError(f"{Path(path).name}: no cell tagged 'parameters'")
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
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


def check_parameters(name: str, defaults: Mapping[str, Any], overrides: Mapping[str, Any]
                     ) -> list[str]:
    """Problems with ``overrides`` for notebook ``name`` (empty when they are fine)."""
    problems = []
    for key, value in overrides.items():
        if key not in defaults:
            problems.append(f"{name}: unknown parameter {key!r} (known: "
                            f"{', '.join(sorted(defaults))})")
        elif not _compatible(defaults[key], value):
            problems.append(f"{name}: parameter {key!r} expects {_type_name(defaults[key])} "
                            f"like {defaults[key]!r}, got {_type_name(value)} {value!r}")
    return problems


def parse_cli_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a=1", "b=[x, y]"]`` -> ``{"a": 1, "b": ["x", "y"]}`` (values read as YAML)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ReportError(f"parameter {pair!r} is not NAME=VALUE")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
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


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def to_html(nb: nbformat.NotebookNode, failed_banner: str | None = None) -> str:
    """A self-contained HTML report without code cells (no CDN: opens offline)."""
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
    body, _ = exporter.from_notebook_node(nb)
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
    output folder (see :func:`cxanalysis.results.output_dir`)."""
    saved = {k: os.environ.get(k) for k in ("MPLBACKEND", OUT_ENV)}
    os.environ.pop("MPLBACKEND", None)
    os.environ[OUT_ENV] = str(out_dir)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- running


def _resolve_notebooks(notebooks: Sequence[str], notebooks_dir: Path) -> list[Path]:
    if not notebooks:
        found = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
        if not found:
            raise ReportError(f"no notebooks NN_*.ipynb in {notebooks_dir}")
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


def run_reports(
    notebooks: Sequence[str] = (),
    source: str | os.PathLike[str] | None = None,
    params: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] = "reports",
    notebooks_dir: str | os.PathLike[str] = "notebooks",
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
        an error.
    out : path-like
        Output folder.
    notebooks_dir : path-like
        Folder of the notebooks; also the kernel's working directory.
    per_notebook : mapping, optional
        ``{notebook name: {parameter: value}}``; each name must be known to that notebook.
    echo : bool
        Print a progress line per notebook.
    mapping : path-like or str, optional
        Mapping file or preset name for the source (sets the ``mapping`` parameter; a file
        made absolute). Checked before anything runs.

    Raises
    ------
    ReportError
        Before anything runs, for unknown notebooks, unknown parameters, wrong types or a
        missing source.
    """
    nb_dir = Path(notebooks_dir).resolve()
    out_dir = Path(out).resolve()
    paths = _resolve_notebooks(list(notebooks), nb_dir)
    names = [p.stem for p in paths]
    common = dict(params or {})
    per = {k: dict(v) for k, v in (per_notebook or {}).items()}
    unknown_nb = sorted(set(per) - set(names))
    if unknown_nb:
        raise ReportError(f"parameters given for notebook(s) not being run: {unknown_nb}")
    if source is not None:
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
    for key in common:
        if not any(key in d for d in defaults_by_nb.values()):
            problems.append(f"unknown parameter {key!r}: no selected notebook has it")
    for path in paths:
        defaults = defaults_by_nb[path.stem]
        mine = {k: v for k, v in common.items() if k in defaults}
        problems += check_parameters(path.stem, defaults, mine)
        own = per.get(path.stem, {})
        problems += check_parameters(path.stem, defaults, own)
        mine.update(own)
        plans.append((path, defaults, mine))
    if problems:
        raise ReportError("cannot run reports:\n  - " + "\n  - ".join(problems))

    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, (path, defaults, overrides) in enumerate(plans, 1):
        if echo:
            print(f"[{i}/{len(plans)}] {path.stem} ...", end=" ", flush=True)
        res = _run_one(path, defaults, overrides, out_dir, nb_dir)
        results.append(res)
        if echo:
            tail = f" — {res.error.splitlines()[0][:200]}" if res.error else ""
            print(f"{res.status} ({res.duration_s:.1f} s){tail}", flush=True)
        write_index(out_dir)
    return results


def _run_one(path: Path, defaults: dict[str, Any], overrides: dict[str, Any], out_dir: Path,
             nb_dir: Path) -> ReportResult:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    name = path.stem
    effective = {**defaults, **overrides}
    src_param = effective.get("source")
    src_path = (nb_dir / src_param).resolve() if isinstance(src_param, str) else None
    nb_out = out_dir / f"{name}.ipynb"
    html_out = out_dir / f"{name}.html"
    json_out = out_dir / f"{name}.results.json"
    tmp_nb = out_dir / f".{name}.running.ipynb"
    start = time.perf_counter()
    error = None
    with _kernel_environment(out_dir):
        try:
            pm.execute_notebook(str(path), str(tmp_nb), parameters=overrides,
                                kernel_name=KERNEL, cwd=str(nb_dir), progress_bar=False,
                                log_output=False)
        except PapermillExecutionError as exc:
            error = f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
        except Exception as exc:  # kernel died, notebook unreadable, ...
            error = f"{type(exc).__name__}: {exc}"
    duration = time.perf_counter() - start
    status = "FAILED" if error else "OK"
    published: dict[str, Any] = {}
    if tmp_nb.exists():
        nb = nbformat.read(str(tmp_nb), as_version=4)
        published = find_published(nb) or {}
        os.replace(tmp_nb, nb_out)
    else:
        nb = nbformat.read(str(path), as_version=4)
        with contextlib.suppress(FileNotFoundError):
            nb_out.unlink()  # never leave an older executed notebook looking current
    try:
        page = to_html(nb, failed_banner=error)
    except Exception as exc:  # pragma: no cover - nbconvert failure
        status, error = "FAILED", error or f"HTML export failed: {exc}"
        page = f"<html><body><h1>FAILED: {html.escape(error)}</h1></body></html>"
    atomic_write(html_out, page)
    record = {
        "notebook": name,
        "status": status,
        "parameters": to_jsonable(effective),
        "source": str(src_path) if src_path else None,
        "source_fingerprint": fingerprint(src_path) if src_path and src_path.exists() else None,
        "package_version": cxanalysis.__version__,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration, 2),
        "error": error,
        "results": published,
    }
    atomic_write(json_out, dumps(record) + "\n")
    return ReportResult(name, status, duration, effective, html_out, nb_out, json_out, error,
                        published)


def write_index(out_dir: str | os.PathLike[str]) -> Path:
    """(Re)write ``index.html`` from every ``*.results.json`` in ``out_dir``."""
    out_dir = Path(out_dir)
    rows = []
    for f in sorted(out_dir.glob("*.results.json")):
        try:
            r = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        name = html.escape(str(r.get("notebook", f.stem)))
        status = html.escape(str(r.get("status", "?")))
        color = "#1b5e20" if status == "OK" else "#b00020"
        params = {k: v for k, v in (r.get("parameters") or {}).items()}
        ptext = html.escape(", ".join(f"{k}={json.dumps(v)}" for k, v in params.items()))
        rows.append(
            f'<tr><td><a href="{name}.html">{name}</a></td>'
            f'<td style="color:{color};font-weight:bold">{status}</td>'
            f"<td>{r.get('duration_s', '')} s</td>"
            f"<td><code>{html.escape(str(r.get('source_fingerprint') or ''))}</code></td>"
            f"<td>{html.escape(str(r.get('package_version', '')))}</td>"
            f"<td>{html.escape(str(r.get('finished_at', '')))}</td>"
            f'<td><a href="{name}.results.json">results</a> · '
            f'<a href="{name}.ipynb">notebook</a></td>'
            f"<td style='font-size:0.8em'>{ptext}</td></tr>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>cxanalysis reports</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.4em;vertical-align:top;text-align:left}</style>"
        "</head><body><h1>cxanalysis reports</h1>"
        "<table><tr><th>report</th><th>status</th><th>duration</th><th>data fingerprint</th>"
        "<th>package</th><th>finished (UTC)</th><th>files</th><th>parameters</th></tr>"
        + "".join(rows) + "</table></body></html>\n")
    path = out_dir / "index.html"
    atomic_write(path, page)
    return path


# --------------------------------------------------------------------------- CLI


def main(args: argparse.Namespace) -> int:
    """``cxanalysis report``: 0 when every notebook succeeded, 1 when one failed, 2 when the
    request itself is wrong (nothing was run)."""
    try:
        params = parse_cli_params(args.param)
        per: dict[str, dict[str, Any]] = {}
        nb_dir = Path(args.notebooks_dir)
        if args.params_file:
            data = yaml.safe_load(Path(args.params_file).read_text()) or {}
            if not isinstance(data, Mapping):
                raise ReportError(f"{args.params_file}: expected a mapping of parameters")
            names = [p.stem for p in _resolve_notebooks(list(args.notebooks), nb_dir.resolve())]
            file_common, per = split_params_file(data, names)
            params = {**file_common, **params}  # the command line wins over the file
        results = run_reports(args.notebooks, source=args.source, params=params, out=args.out,
                              notebooks_dir=nb_dir, per_notebook=per,
                              mapping=getattr(args, "mapping", None))
    except ReportError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    failed = [r.name for r in results if r.status != "OK"]
    print(f"{len(results) - len(failed)} of {len(results)} report(s) OK; index: "
          f"{Path(args.out) / 'index.html'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
