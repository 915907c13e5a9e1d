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
    t = _stats.ttest_rel(a, b)
    diff = a - b
    w = _stats.wilcoxon(diff) if np.any(diff != 0) else None
    return {"mean_a": a.mean(), "mean_b": b.mean(), "t_pvalue": float(t.pvalue),
            "wilcoxon_pvalue": float(w.pvalue) if w is not None else 1.0}
