"""ExperimentResult.breakdown takes labels in the one shape of data.Labels.of (issue 13 item 2).

Every form — a customers column by name, a Series indexed by customer id, a DataFrame or an
Ibis table with customer_id and a label column, a Labels — gives the same table; the old call
forms (a column name with source=, a two-column DataFrame) keep working; a customer without a
label is data.UNKNOWN, as Labels.join names it, and no customer is dropped.
"""

from __future__ import annotations

from pathlib import Path

import ibis
import numpy as np
import pandas as pd
import pytest

from cxanalysis import experiments as ex
from cxanalysis.data import UNKNOWN, Labels
from cxanalysis.errors import ParameterError


@pytest.fixture(scope="module")
def checkout(world):
    return ex.analyze(world, "exp_checkout_redesign", secondary_metrics=[], guardrails={},
                      sequential=False)


@pytest.fixture(scope="module")
def personas(world_path: Path) -> pd.DataFrame:
    return pd.read_parquet(world_path / "truth" / "personas.parquet")[["customer_id",
                                                                      "persona"]]


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["group", "variant"]
    pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True),
                                  b.sort_values(key).reset_index(drop=True))


def test_breakdown_takes_labels_in_every_shape_with_the_same_numbers(world, checkout,
                                                                     personas) -> None:
    old = checkout.breakdown(personas).table()  # the old DataFrame form
    assert len(old) >= 3 and old.p_value.notna().all()
    series = personas.set_index("customer_id").persona
    for by in (series, Labels.of(personas), ibis.memtable(personas),
               personas.assign(extra=1)):
        kw = {"column": "persona"} if "extra" in getattr(by, "columns", []) else {}
        seg = checkout.breakdown(by, **kw)
        assert seg.by == "persona"
        _same(seg.table(), old)


def test_breakdown_by_customers_column_equals_labels_of_the_customers_table(world,
                                                                            checkout) -> None:
    old = checkout.breakdown("region", source=world)  # the old column-name form
    new = checkout.breakdown(Labels.of(world.table("customers"), "region"))
    assert old.by == new.by == "region"
    _same(old.table(), new.table())


def test_breakdown_unlabelled_customers_are_unknown_and_none_is_dropped(checkout,
                                                                        personas) -> None:
    """Half the customers have no label (left out, or a missing value in the Series): they
    are one group UNKNOWN, and the groups' customers add up to the overall analysis."""
    part = personas.iloc[: len(personas) // 2]
    seg = checkout.breakdown(part).table()
    assert UNKNOWN in set(seg.group)
    series = personas.set_index("customer_id").persona.astype(object)
    series.iloc[len(series) // 2:] = None
    seg2 = checkout.breakdown(series).table()
    assert "nan" not in set(seg2.group) and "None" not in set(seg2.group)
    # the same customers are missing in both forms: the tables agree
    _same(seg.drop(columns=[]), seg2)
    eff = checkout.effects
    for v in checkout.treatments:
        e = eff[(eff.metric == checkout.primary_metric) & (eff.variant == v)].iloc[0]
        g = seg[seg.variant == v]
        assert g.n_treatment.sum() == e.n_treatment
        assert g.n_control.sum() == e.n_control
        np.testing.assert_allclose((g.treatment_mean * g.n_treatment).sum()
                                   / g.n_treatment.sum(), e.treatment_mean, rtol=1e-12)


def test_breakdown_bad_labels_raise_parameter_error(checkout) -> None:
    with pytest.raises(ParameterError, match="one group column"):
        checkout.breakdown(pd.DataFrame({"customer_id": ["a"], "x": [1], "y": [2]}))
    with pytest.raises(ParameterError, match="labels must be"):
        checkout.breakdown([1, 2, 3])
