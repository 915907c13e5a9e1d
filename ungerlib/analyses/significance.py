"""Paired significance tests over users (the paper: "statistically significant with p < 0.05").

Both rankings being compared must score the same users in the same order; the per-user values
come from :func:`ungerlib.model.metrics.per_user`. :func:`paired_table` is the one place a table of
such tests is built (Table 3, the references of notebook 04, the ablations).
"""
from __future__ import annotations

from typing import Any

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


def paired_table(pairs: list[tuple[dict[str, Any], np.ndarray, np.ndarray]], target: np.ndarray,
                 metrics: tuple[str, ...] | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (pair, metric): ``pairs`` holds ``(labels, ranked_a [N, k], ranked_b [N, k])``, both
    rankings of the same users in the order of ``target`` [N]. Columns: the labels, ``metric``, both
    means, ``difference`` (a - b), ``relative`` (difference / b), the t-test and Wilcoxon p-values and
    ``a better, p < alpha``."""
    from ungerlib.model.metrics import METRICS, per_user

    out = []
    for labels, ranked_a, ranked_b in pairs:
        a, b = per_user(ranked_a, target), per_user(ranked_b, target)
        for m in metrics or METRICS:
            t = paired_test(a[m], b[m])
            diff = t["mean_a"] - t["mean_b"]
            out.append({**labels, "metric": m, "a": t["mean_a"], "b": t["mean_b"], "difference": diff,
                        "relative": diff / t["mean_b"] if t["mean_b"] else np.nan,
                        "t-test p": t["t_pvalue"], "Wilcoxon p": t["wilcoxon_pvalue"],
                        f"a better, p < {alpha:g}": bool(diff > 0 and t["t_pvalue"] < alpha)})
    return pd.DataFrame(out)
