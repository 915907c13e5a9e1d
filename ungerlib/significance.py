"""Paired significance tests over users (the paper: "statistically significant with p < 0.05").

Both rankings being compared must score the same users in the same order; the per-user values
come from :func:`ungerlib.metrics.per_user`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as _stats


def paired_test(a: pd.Series | np.ndarray, b: pd.Series | np.ndarray) -> dict[str, float]:
    """Two-sided paired t-test and Wilcoxon signed-rank test on per-user metric values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a paired test needs two equally long 1-d arrays of at least 2 users, got {a.shape} and {b.shape}")
    diff = a - b
    if not np.any(diff != 0):  # identical values: no evidence of a difference (the t statistic is 0/0)
        return {"mean_a": a.mean(), "mean_b": b.mean(), "t_pvalue": 1.0, "wilcoxon_pvalue": 1.0}
    t = _stats.ttest_rel(a, b)
    w = _stats.wilcoxon(diff)
    return {"mean_a": a.mean(), "mean_b": b.mean(), "t_pvalue": float(t.pvalue), "wilcoxon_pvalue": float(w.pvalue)}
