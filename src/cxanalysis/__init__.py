"""cxanalysis: customer-experience analysis on an embedded SQL engine.

Modules (one per concept):

- :mod:`cxanalysis.schema`      the data contract: tables, columns, types, rules
- :mod:`cxanalysis.data`        open a source as Ibis tables on DuckDB and validate it; the
                                shared ``DayWindow`` / ``between_days`` and ``Labels``
- :mod:`cxanalysis.errors`      ``ParameterError`` (a wrong call) beside ``CXDataError``
- :mod:`cxanalysis.stats`       statistics from sufficient statistics (intervals, tests)
- :mod:`cxanalysis.privacy`     the one small-group suppression; redaction
- :mod:`cxanalysis.breakdowns`  conversion by group (funnel breakdowns, comparison)
- :mod:`cxanalysis.synth`       the seeded synthetic CX world with ground truth
- :mod:`cxanalysis.overview`    what a source holds (notebook 00)
- :mod:`cxanalysis.report`      run notebooks headlessly into HTML reports
- :mod:`cxanalysis.segments`    rule-based segments and RFM tiers (notebook 01)
- :mod:`cxanalysis.personas`    behavioural personas (notebook 01)
- :mod:`cxanalysis.funnel`      ordered funnels with a conversion window (notebook 02)
- :mod:`cxanalysis.journeys`    paths, transitions and stage durations (notebook 02)
- :mod:`cxanalysis.attribution` channel attribution (notebook 02)
- :mod:`cxanalysis.experiments` experiment evaluation (notebook 03)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
