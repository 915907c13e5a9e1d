"""Cheap reference rankings scored like Stage II: popularity and next-item kNN on embeddings.

:func:`next_item_knn` asks of an item embedding space what hierarchical k-means will exploit:
are an item's nearest neighbours the items that come next? It ranks all items by cosine
similarity to the user's most recent history item and scores the targets with the usual
Recall/NDCG. It is how the integrated-embedding choices of Stage I are compared without
training Stage II for each one, and the simple reference every results table shows.

Both drop the user's whole history (``Examples.exclude``) from the ranking; the ``*_rankings``
functions return the per-user lists [N, k] for paired tests.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ungerlib.model.data import Examples, Splits
from ungerlib.model.metrics import rank_metrics, topk_from_scores
from ungerlib.model.stage1 import INTEGRATED, Stage1Result, integrate


def popularity_rankings(splits: Splits, ex: Examples, k: int = 20, exclude_history: bool = False) -> np.ndarray:
    """[N, k]: the items most often a training target, most frequent first (without the user's
    history items when ``exclude_history``)."""
    counts = np.bincount(splits.train.target, minlength=splits.n_items).astype(np.float64)
    if not exclude_history:
        return np.tile(np.argsort(-counts, kind="stable")[:k], (len(ex), 1))
    top = np.argsort(-counts, kind="stable")[:k + ex.exclude.shape[1]]  # enough to survive any history
    out = np.full((len(ex), k), -1, dtype=np.int64)
    for r in range(len(ex)):
        keep = top[~np.isin(top, ex.exclude[r])][:k]
        out[r, :len(keep)] = keep
    return out


def popularity(splits: Splits, ex: Examples, k: int = 20) -> dict[str, float]:
    """The floor: every user gets the ``k`` items most often a training target, most frequent first."""
    return rank_metrics(popularity_rankings(splits, ex, k), ex.target)


def knn_rankings(emb: np.ndarray, ex: Examples, k: int = 20, batch: int = 2048) -> np.ndarray:
    """[N, k]: items by cosine to each user's last history item, the user's whole history excluded
    (-1 where fewer than k items are left); emb [n, d]."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    last = ex.history[:, -1]
    out = np.full((len(ex), k), -1, dtype=np.int64)
    for s in range(0, len(ex), batch):
        top = topk_from_scores(e[last[s:s + batch]] @ e.T, min(k, len(e)), exclude=ex.exclude[s:s + batch])
        out[s:s + batch, :top.shape[1]] = top
    return out


def next_item_knn(emb: np.ndarray, ex: Examples, k: int = 20, batch: int = 2048) -> dict[str, float]:
    """Recall/NDCG@10/20 of :func:`knn_rankings`."""
    return rank_metrics(knn_rankings(emb, ex, k, batch), ex.target, (10, 20))


def integrated_choices(res: Stage1Result, semantic: np.ndarray, ex: Examples) -> pd.DataFrame:
    """:func:`next_item_knn` for every way of forming the integrated embedding, plus E_S alone."""
    rows = {"semantic E_S (frozen)": next_item_knn(semantic, ex)}
    for how in INTEGRATED:
        rows[how] = next_item_knn(integrate(res.collaborative, res.adapted, how), ex)
    return pd.DataFrame.from_dict(rows, orient="index")
