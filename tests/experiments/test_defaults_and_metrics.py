"""The metric objects and the defaults of :func:`analyze` against notebook 03's parameters."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from cxanalysis import experiments as ex
from cxanalysis.errors import ParameterError
from cxanalysis.report import read_parameters

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_test_and_learn.ipynb"


def test_analyze_defaults_equal_notebook_03_parameter_defaults() -> None:
    """Issue 13, item 3: a call with the code's defaults is the notebook's default run."""
    nb = read_parameters(NOTEBOOK)
    sig = inspect.signature(ex.analyze).parameters
    compared = [p for p in sig if p not in ("source", "experiment_id")]
    assert set(compared) <= set(nb), set(compared) - set(nb)
    for name in compared:
        code = sig[name].default
        if name == "guardrails":  # None: the default guardrails the source can measure
            assert code is None
            code = dict(ex.DEFAULT_GUARDRAILS)
        if isinstance(code, tuple):
            code = list(code)
        assert code == nb[name], f"{name}: code {code!r} vs notebook {nb[name]!r}"
    assert sig["mde"].default == 0.10  # the example of the issue


def test_every_metric_declares_its_aggregates_in_one_place() -> None:
    """Each registered metric's y (and covariate) is produced by its own aggregates or
    derived columns: adding a metric touches only its class and the registry."""
    import ibis

    t = ibis.table({"customer_id": "string", "variant": "string", "close_day": "int32",
                    "te": "int64", "t0": "int64", "src": "int8", "v1": "float64",
                    "v2": "float64", "ev": "string"}, name="rows")
    for name in [*ex.METRICS, "event:checkout"]:
        m = ex.metric_spec(name)
        agg = m.aggregates(t)
        act = t.group_by(["customer_id", "variant", "close_day"]).aggregate(**agg)
        cols = set(agg) | set(m.derived(act))
        assert m.y in cols, name
        if m.x is not None:
            assert m.x in cols, name
        assert set(m.sums(act.mutate(**m.derived(act)))) == (
            {f"{name}__sy", f"{name}__syy"} | ({f"{name}__sx", f"{name}__sxx", f"{name}__sxy"}
                                              if m.x else set()))


def test_metric_kinds_pick_the_test() -> None:
    assert isinstance(ex.metric_spec("conversion"), ex.Proportion)
    assert isinstance(ex.metric_spec("revenue"), ex.Mean)
    assert isinstance(ex.metric_spec("nps"), ex.Ratio)
    assert ex.metric_spec("event:checkout").kind == "proportion"
    assert ex.metric_spec("event:checkout").y == "ev_checkout"
    assert not ex.metric_spec("nps").has_covariate and ex.metric_spec("orders").has_covariate
    defs = ex.metric_definitions().set_index("metric")
    assert list(defs.index) == list(ex.METRICS)
    assert defs.loc["revenue_per_order", "kind"] == "ratio"
    assert defs.loc["conversion", "covariate"] == "pre_converted"


def test_parameter_errors_are_parameter_errors_not_data_errors() -> None:
    with pytest.raises(ParameterError, match="unknown metric 'profit'"):
        ex.metric_spec("profit")
    with pytest.raises(ParameterError, match="no pre-period covariate"):
        from cxanalysis.stats import Moments
        m = Moments(10, 5, 5)
        ex.compare(ex.metric_spec("nps"), m, m, adjust=True)
    with pytest.raises(ParameterError, match="bad direction"):
        ex.guardrail_specs({"csat": "down"})


def test_effect_row_is_the_one_conversion() -> None:
    from cxanalysis.stats import Moments, welch

    e = welch(Moments(50, 60.0, 100.0), Moments(50, 50.0, 80.0))
    row = ex.effect_row(e)
    assert list(row) == [*ex.EFFECT_COLUMNS, "method"]
    assert (row["abs_ci_low"], row["abs_ci_high"]) == e.abs_ci
    assert (row["rel_ci_low"], row["rel_ci_high"]) == e.rel_ci
    # the breakdown and the monitor use the same names
    assert {"abs_ci_low", "abs_ci_high", "p_value"} <= set(ex.SEQ_COLS)


def test_default_guardrails_are_those_the_source_can_measure(world, tmp_path: Path) -> None:
    import pandas as pd

    from cxanalysis.data import open_source

    assert ex.default_guardrails(world) == dict(ex.DEFAULT_GUARDRAILS)
    # a source with orders only: no events, no feedback, so no default guardrail
    folder = tmp_path / "w"
    folder.mkdir()
    at = pd.Timestamp("2025-03-01", tz="UTC")
    pd.DataFrame({"customer_id": ["a", "b"], "signup_date": [at.date()] * 2}).to_parquet(
        folder / "customers.parquet", index=False)
    pd.DataFrame({"experiment_id": "e", "customer_id": ["a", "b"],
                  "variant": ["control", "t"], "assigned_at": [at, at]}).to_parquet(
        folder / "assignments.parquet", index=False)
    pd.DataFrame({"order_id": ["o"], "customer_id": ["a"], "ts": [at], "channel": "web",
                  "amount": [1.0]}).to_parquet(folder / "orders.parquet", index=False)
    assert ex.default_guardrails(open_source(folder)) == {}
