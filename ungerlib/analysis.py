"""Cheap reference rankings scored like Stage II: popularity and next-item kNN on embeddings.

:func:`next_item_knn` asks of an item embedding space what hierarchical k-means will exploit:
are an item's nearest neighbours the items that come next? It ranks all items by cosine
similarity to the user's most recent history item and scores the validation targets with the
usual Recall/NDCG. It is how the integrated-embedding choices of Stage I are compared without
training Stage II for each one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .data import Examples, Splits
from .metrics import rank_metrics, topk_from_scores
from .stage1 import INTEGRATED, Stage1Result, integrate


def popularity(splits: Splits, ex: Examples, k: int = 20) -> dict[str, float]:
    """The floor: every user gets the ``k`` items most often a training target, most frequent first."""
    top = np.argsort(-np.bincount(splits.train.target, minlength=splits.n_items))[:k]
    return rank_metrics(np.tile(top, (len(ex), 1)), ex.target)


def next_item_knn(emb: np.ndarray, ex: Examples, k: int = 20, batch: int = 2048) -> dict[str, float]:
    """Rank items by cosine to the last history item (history items excluded); emb [n, d]."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    last = ex.history[:, -1]
    out = np.full((len(ex), k), -1, dtype=np.int64)  # -1 where fewer than k items are left
    for s in range(0, len(ex), batch):
        hist = ex.history[s:s + batch]
        top = topk_from_scores(e[last[s:s + batch]] @ e.T, min(k, len(e)), exclude=hist)
        out[s:s + batch, :top.shape[1]] = top
    return rank_metrics(out, ex.target, (10, 20))


def integrated_choices(res: Stage1Result, semantic: np.ndarray, ex: Examples) -> pd.DataFrame:
    """:func:`next_item_knn` for every way of forming the integrated embedding, plus E_S alone."""
    rows = {"semantic E_S (frozen)": next_item_knn(semantic, ex)}
    for how in INTEGRATED:
        rows[how] = next_item_knn(integrate(res.collaborative, res.adapted, how), ex)
    return pd.DataFrame.from_dict(rows, orient="index")
