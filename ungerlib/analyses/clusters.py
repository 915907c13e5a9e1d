"""k-means clusterings of item embedding spaces, how well they agree, and t-SNE maps (paper Figure 5).

The paper's Figure 5 shows t-SNE maps of the semantic, collaborative, concatenated and integrated
embeddings coloured by k-means with 10 clusters, and reads off them that the concatenation looks like
the semantic embeddings. :func:`agreement` puts a number on what the eye compares: the adjusted
mutual information (AMI) between the 10-cluster k-means labellings of two embeddings, on all items.
Its diagonal is the agreement of an embedding's k-means with itself under another k-means seed, the
most any other embedding could be expected to reach.

Every embedding is l2-normalised first (k-means and t-SNE then work on cosine geometry, as the
neighbourhood KL of :mod:`ungerlib.analyses.dominance` does, and the concatenation's two unit blocks keep
the weight they have in it).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"embeddings must be a finite [n_items, d] array, got shape {x.shape}")
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def kmeans_labels(x: np.ndarray, k: int = 10, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """k-means labels [n] of the l2-normalised rows of ``x`` [n, d] (sklearn, ``n_init`` restarts)."""
    from sklearn.cluster import KMeans

    if not 1 < k < len(x):
        raise ValueError(f"k must lie between 2 and n_items - 1 = {len(x) - 1}, got {k}")
    return KMeans(k, n_init=n_init, random_state=seed).fit_predict(_unit(x)).astype(np.int64)


def agreement(embeddings: Mapping[str, np.ndarray], k: int = 10, seed: int = 0,
              references: Mapping[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """AMI between the ``k``-means labellings of every pair of ``embeddings`` (name -> [n, d]).

    Returns (table, labels): ``table`` [E, E + R] holds AMI(labels[a], labels[b]) off the diagonal,
    on the diagonal the AMI of ``a``'s labels with ``a``'s labels under k-means seed ``seed + 1``
    (the self-agreement ceiling), and one column per ``references`` labelling (name -> [n] ints,
    e.g. ground-truth topics). ``labels`` are the seed-``seed`` labellings.
    """
    from sklearn.metrics import adjusted_mutual_info_score as ami

    n = {len(x) for x in embeddings.values()} | {len(r) for r in (references or {}).values()}
    if len(n) != 1:
        raise ValueError(f"embeddings and references must hold the same items; got sizes {sorted(n)}")
    labels = {a: kmeans_labels(x, k, seed) for a, x in embeddings.items()}
    table = pd.DataFrame(index=pd.Index(list(embeddings), name="k-means of"), dtype=float)
    for a in embeddings:
        for b in embeddings:
            table.loc[a, b] = (ami(labels[a], kmeans_labels(embeddings[a], k, seed + 1)) if a == b
                               else ami(labels[a], labels[b]))
        for r, ref in (references or {}).items():
            table.loc[a, r] = ami(labels[a], np.asarray(ref))
    return table, labels


def tsne_map(x: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-d t-SNE coordinates [n, 2] of the l2-normalised rows of ``x`` [n, d] (sklearn, PCA init)."""
    from sklearn.manifold import TSNE

    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(_unit(x))

