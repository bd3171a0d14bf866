"""Code defaults equal notebook defaults (issue 13 item 3).

Each notebook's ``parameters`` cell is parsed (literals only) and every parameter that feeds
a function is compared with that function's default for the argument it is passed to. A
notebook listed in ``COMPLETE`` must account for every parameter: a row in ``ROWS`` or a
reason in ``NO_CODE_DEFAULT``, so a new parameter cannot slip by.

To cover another notebook, add its rows (``notebook, parameter, function, argument``), its
parameters without a code default to ``NO_CODE_DEFAULT``, and its name to ``COMPLETE``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NB00 = "00_data_overview.ipynb"
NB02 = "02_journey_funnel.ipynb"

#: (notebook, parameter, "module:qualified.function", argument name)
ROWS: list[tuple[str, str, str, str]] = [
    (NB00, "start", "cxanalysis.overview:volume_over_time", "start"),
    (NB00, "end", "cxanalysis.overview:volume_over_time", "end"),
    (NB00, "freq", "cxanalysis.overview:volume_over_time", "freq"),
    (NB00, "start", "cxanalysis.overview:channel_mix", "start"),
    (NB00, "end", "cxanalysis.overview:channel_mix", "end"),
    (NB00, "min_group_size", "cxanalysis.overview:channel_mix", "min_group_size"),
    (NB00, "start", "cxanalysis.overview:stage_coverage", "start"),
    (NB00, "end", "cxanalysis.overview:stage_coverage", "end"),
    (NB00, "min_group_size", "cxanalysis.overview:stage_coverage", "min_group_size"),
    (NB00, "start", "cxanalysis.overview:feedback_distributions", "start"),
    (NB00, "end", "cxanalysis.overview:feedback_distributions", "end"),
    (NB00, "min_group_size", "cxanalysis.overview:experiments_present", "min_group_size"),
    (NB00, "mapping", "cxanalysis.data:open_source", "mapping"),
    (NB02, "mapping", "cxanalysis.data:open_source", "mapping"),
    (NB02, "window_seconds", "cxanalysis.funnel:funnel", "window_seconds"),
    (NB02, "mode", "cxanalysis.funnel:funnel", "mode"),
    (NB02, "unit", "cxanalysis.funnel:funnel", "unit"),
    (NB02, "start", "cxanalysis.funnel:funnel", "start"),
    (NB02, "end", "cxanalysis.funnel:funnel", "end"),
    (NB02, "exclude", "cxanalysis.funnel:funnel", "exclude"),
    (NB02, "breakdown", "cxanalysis.funnel:FunnelResult.breakdown", "by"),
    (NB02, "min_group_size", "cxanalysis.funnel:FunnelResult.breakdown", "min_group_size"),
    (NB02, "min_group_size", "cxanalysis.funnel:FunnelResult.dropoff", "min_group_size"),
    (NB02, "start", "cxanalysis.journeys:journey_paths", "start"),
    (NB02, "end", "cxanalysis.journeys:journey_paths", "end"),
    (NB02, "inactivity_days", "cxanalysis.journeys:journey_paths", "inactivity_days"),
    (NB02, "min_group_size", "cxanalysis.journeys:journey_paths", "min_group_size"),
    (NB02, "inactivity_days", "cxanalysis.journeys:stage_durations", "inactivity_days"),
    (NB02, "min_group_size", "cxanalysis.journeys:stage_durations", "min_group_size"),
    (NB02, "attribution_bootstrap", "cxanalysis.attribution:attribute", "n_boot"),
    (NB02, "seed", "cxanalysis.attribution:attribute", "seed"),
    (NB02, "n_themes", "cxanalysis.painpoints:comment_themes", "n_themes"),
    (NB02, "seed", "cxanalysis.painpoints:comment_themes", "seed"),
    (NB02, "min_group_size", "cxanalysis.painpoints:comment_themes", "min_group_size"),
    (NB02, "min_group_size", "cxanalysis.painpoints:feedback_by_touchpoint", "min_group_size"),
    (NB02, "seed", "cxanalysis.painpoints:moments_of_truth", "seed"),
    (NB02, "min_group_size", "cxanalysis.painpoints:adjusted_dropoff", "min_group_size"),
    (NB02, "sweep_windows_days", "cxanalysis.painpoints:window_sweep", "windows_days"),
    (NB02, "min_group_size", "cxanalysis.painpoints:window_sweep", "min_group_size"),
    (NB02, "moments_calibration", "cxanalysis.periods:windows", "calibration"),
    (NB02, "moments_outcome", "cxanalysis.periods:windows", "holdout"),
]

#: Parameters that feed no function default, with the reason.
NO_CODE_DEFAULT: dict[tuple[str, str], str] = {
    (NB00, "source"): "the data to read: open_source has no default",
    (NB02, "source"): "the data to read: open_source has no default",
    (NB02, "steps"): "funnel steps are the analyst's choice: funnel has no default",
}

#: Notebooks whose every parameter must be accounted for above.
COMPLETE = (NB00, NB02)


def notebook_parameters(name: str) -> dict[str, Any]:
    """The literal values of the notebook's ``parameters`` cell."""
    nb = json.loads((NOTEBOOKS / name).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one parameters cell"
    out = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def code_default(target: str, argument: str) -> Any:
    module, qual = target.split(":")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    param = inspect.signature(obj).parameters[argument]
    assert param.default is not inspect.Parameter.empty, f"{target}({argument}) has no default"
    return param.default


def _same(value: Any) -> Any:
    """Sequences compare by their items (a notebook's list, the code's tuple or range)."""
    if isinstance(value, (list, tuple, range)):
        return [_same(v) for v in value]
    return value


@pytest.mark.parametrize(("notebook", "parameter", "target", "argument"), ROWS,
                         ids=[f"{r[0][:2]}-{r[1]}-{r[2].split(':')[1]}" for r in ROWS])
def test_notebook_default_equals_code_default(notebook: str, parameter: str, target: str,
                                              argument: str) -> None:
    params = notebook_parameters(notebook)
    assert parameter in params, f"{notebook} has no parameter {parameter!r}"
    assert _same(params[parameter]) == _same(code_default(target, argument)), (
        f"{notebook}: {parameter} = {params[parameter]!r} but {target}({argument}=...) "
        f"defaults to {code_default(target, argument)!r}")


@pytest.mark.parametrize("notebook", COMPLETE)
def test_every_notebook_parameter_is_compared(notebook: str) -> None:
    covered = {p for nb, p, _t, _a in ROWS if nb == notebook}
    covered |= {p for nb, p in NO_CODE_DEFAULT if nb == notebook}
    missing = sorted(set(notebook_parameters(notebook)) - covered)
    assert not missing, (f"{notebook}: parameters {missing} are not compared with a code "
                         "default; add rows to ROWS (or a reason to NO_CODE_DEFAULT)")


def test_a_differing_default_is_caught() -> None:
    """The comparison can fail: a different default is not equal."""
    assert _same([1, 3, 7, 14]) == _same((1, 3, 7, 14))
    assert _same([2, 8]) != _same(range(2, 9))
