"""Which recorded numbers are measurements a front, a table or a scheduler may use.

A trial that diverges records NaN or infinite scores (STS-B's correlations of constant or NaN
predictions are NaN). Those values stay on the trial's run as they were measured, tagged
`non_finite`, but count as that trial's failure: they rank last, never become a best score and are
left out of fronts, hypervolumes and table cells. MLflow stores +-inf as +-1.797e308 (the largest
float), so a value read back from a run at that magnitude is infinite too.
"""
from __future__ import annotations

import math
import sys
from typing import Any

NON_FINITE_TAG = "non_finite"  # "true" on a run that recorded a NaN or infinite measurement
NON_FINITE_METRICS_TAG = "non_finite_metrics"  # which ones, at the latest epoch that had any


def finite(value: Any) -> bool:
    """True for a real number that is neither NaN nor infinite (nor MLflow's stand-in for infinity)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and abs(value) < sys.float_info.max)


def non_finite_names(values: dict[str, Any]) -> list[str]:
    """The names of the numbers in `values` that are NaN or infinite, sorted."""
    return sorted(name for name, value in values.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool) and not finite(value))
