"""Recall@k and NDCG@k for leave-one-out full ranking (paper 4.1), per user and averaged.

With one held-out item per user, Recall@k is 1 if the target is in the top k, and NDCG@k is
``1 / log2(rank + 1)`` for the target's 1-based rank ``rank <= k`` (the ideal DCG is 1).
A list that repeats an item counts it once: ranks are taken after dropping repeats.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

EMPTY = -1
# The four numbers every table reports, in the paper's column order (Table 3).
METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]


def dedupe_rows(ranked: np.ndarray) -> np.ndarray:
    """[N, k] item ids -> same shape with later repeats in each row replaced by EMPTY, shifted left."""
    ranked = np.asarray(ranked)
    out = np.full_like(ranked, EMPTY)
    for r, row in enumerate(ranked):
        _, first = np.unique(row, return_index=True)
        keep = row[np.sort(first)]
        keep = keep[keep != EMPTY]
        out[r, :len(keep)] = keep
    return out


def target_rank(ranked: np.ndarray, target: np.ndarray) -> np.ndarray:
    """1-based rank of each row's target in ``ranked`` [N, k] (after de-duplication), 0 if absent."""
    ranked = dedupe_rows(ranked)
    target = np.asarray(target)
    if ranked.ndim != 2 or len(ranked) != len(target):
        raise ValueError(f"ranked must be [N, k] with N = len(target); got {ranked.shape} and {target.shape}")
    hit = ranked == target[:, None]
    return np.where(hit.any(1), hit.argmax(1) + 1, 0)


def per_user(ranked: np.ndarray, target: np.ndarray, ks: tuple[int, ...] = (10, 20)) -> pd.DataFrame:
    """One row per user: ``rank`` and ``recall@k`` / ``ndcg@k`` for each k (for significance tests)."""
    rank = target_rank(ranked, target)
    cols: dict[str, np.ndarray] = {"rank": rank}
    for k in ks:
        if k > np.asarray(ranked).shape[1]:
            raise ValueError(f"metric @{k} needs lists of at least {k} items, got {np.asarray(ranked).shape[1]}")
        inside = (rank > 0) & (rank <= k)
        cols[f"recall@{k}"] = inside.astype(float)
        cols[f"ndcg@{k}"] = np.where(inside, 1.0 / np.log2(np.maximum(rank, 1) + 1), 0.0)
    return pd.DataFrame(cols)


def rank_metrics(ranked: np.ndarray, target: np.ndarray, ks: tuple[int, ...] = (10, 20)) -> dict[str, float]:
    """Mean Recall@k and NDCG@k, keys ``recall@10, ndcg@10, recall@20, ndcg@20``."""
    df = per_user(ranked, target, ks)
    return {f"{m}@{k}": float(df[f"{m}@{k}"].mean()) for k in ks for m in ("recall", "ndcg")}


def topk_from_scores(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """[N, n_items] scores -> [N, k] item ids, best first.

    ``exclude`` [N, L] ids (-1 = none) are never returned: where fewer than k items remain, the
    list is filled with -1 (which :func:`rank_metrics` treats as empty).
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        rows = np.repeat(np.arange(len(scores)), exclude.shape[1])
        cols = exclude.ravel()
        ok = cols >= 0
        scores[rows[ok], cols[ok]] = -np.inf
    part = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, 1)
    if exclude is not None:
        top[np.take_along_axis(scores, top, 1) == -np.inf] = -1
    return top
