"""Semantic dominance: how much of a final representation comes from each modality (paper 4.3, Eq. 9-10).

The paper measures the proportional similarity of the semantic embeddings S and the collaborative
embeddings C to a final representation E (Table 4, Figure 3)::

    Sim_sem = 1 - KL(S||E) / (KL(S||E) + KL(C||E))                         (Eq. 9)
    Sim_col = 1 - KL(C||E) / (KL(S||E) + KL(C||E))                         (Eq. 10)

but does not say how an embedding set becomes a probability distribution. S (384-d MiniLM, or
4096-d Llama), C (128-d) and E (256-d concat, 128-d ours) live in different spaces, so their
coordinates cannot be compared; only the *relations between items* they encode can. We therefore
use **per-item neighbourhood distributions**, the conditional probabilities of SNE / t-SNE
(Hinton & Roweis 2002; van der Maaten & Hinton 2008):

    p_X(j | i) = exp(beta_i cos(x_i, x_j)) / sum_{k != i} exp(beta_i cos(x_i, x_k)),   j != i,

where ``beta_i`` is set per item and per space by bisection so that every distribution has the same
perplexity (``exp`` of its entropy; 30 by default, the t-SNE default). Then

    KL(X || E) = mean over query items i of  sum_j p_X(j|i) log(p_X(j|i) / p_E(j|i)).

Why this definition:

* it depends only on cosine similarities between items, so it is defined for any two embedding
  sets of the same items whatever their dimensions, and is invariant to rotating or rescaling either;
* the per-item calibration removes the one thing cosines do *not* share across spaces, their
  spread: MiniLM item cosines sit around 0.2-0.8, a 128-d ID embedding's around 0 +/- 0.1, and a
  fixed temperature would make one space's distributions peaked and the other's nearly uniform,
  so the KL would measure that mismatch instead of whether the two spaces agree on who an item's
  neighbours are. With equal perplexity each item has the same effective number of neighbours
  (about 30) in every space;
* p_E(j|i) > 0 for every j, so KL(X||E) is always finite, and it is 0 exactly when E ranks and
  weighs every item's neighbours as X does (E = X gives Sim = 1 for that side).

:func:`proportional_similarity` computes Eq. 9-10 this way, on a seeded sample of query items
(each compared against all items) when ``n_queries`` is set. :func:`neighbour_overlap` is a
definition-free cross-check: the share of E's k nearest neighbours that are also X's.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import pandas as pd

from ungerlib.infra import config as C

_BETA_RANGE = (1e-3, 1e7)  # bisection bracket for beta_i (cosines lie in [-1, 1])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def _check(spaces: Mapping[str, np.ndarray]) -> int:
    n = None
    for name, x in spaces.items():
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"embeddings {name!r} have shape {x.shape}; expected [n_items, d]")
        if not np.isfinite(x).all():
            raise ValueError(f"embeddings {name!r} contain NaN or inf")
        if n is not None and x.shape[0] != n:
            raise ValueError(f"embeddings {name!r} have {x.shape[0]} rows, the others {n}; every set "
                             "must hold the same items in the same order")
        n = x.shape[0]
    return int(n)


def neighbourhood_logp(x: np.ndarray, rows: np.ndarray, perplexity: float = 30.0,
                       n_iter: int = 32) -> np.ndarray:
    """log p_X(j | i) for query items ``rows`` [m] against all n items of ``x`` [n, d]: [m, n] float64.

    ``p(. | i)`` is a softmax of ``beta_i * cos(x_i, x_j)`` over j != i (``log p = -inf`` at j = i),
    ``beta_i`` found by bisection on log(beta) so that its perplexity ``exp(entropy)`` equals
    ``perplexity`` (the SNE conditional distribution; :func:`sklearn.manifold.TSNE` computes the same
    from squared distances, since |a - b|^2 = 2 - 2 cos(a, b) for unit vectors).
    """
    x = _unit(x)
    n = x.shape[0]
    if not 1 < perplexity < n - 1:
        raise ValueError(f"perplexity must lie between 1 and n_items - 1 = {n - 1}, got {perplexity}")
    rows = np.asarray(rows)
    cos = x[rows] @ x.T  # [m, n]
    self_ = (np.arange(len(rows)), rows)
    cos[self_] = -np.inf
    cos -= cos.max(1, keepdims=True)  # <= 0, the row maximum at 0: exp never overflows
    cos[self_] = 0.0  # finite placeholder; its weight is zeroed below
    target = np.log(perplexity)
    lo = np.full((len(rows), 1), np.log(_BETA_RANGE[0]))
    hi = np.full((len(rows), 1), np.log(_BETA_RANGE[1]))
    for _ in range(n_iter):  # entropy falls as beta grows
        mid = (lo + hi) / 2
        beta = np.exp(mid)
        w = np.exp(beta * cos)
        w[self_] = 0.0
        z = w.sum(1, keepdims=True)
        entropy = np.log(z) - beta * (w * cos).sum(1, keepdims=True) / z  # H = log Z - beta E_p[cos]
        too_flat = entropy > target
        lo = np.where(too_flat, mid, lo)
        hi = np.where(too_flat, hi, mid)
    logits = np.exp((lo + hi) / 2) * cos
    logits[self_] = -np.inf
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def kl_rows(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """Row-wise KL(p || q) [m] from log-probabilities [m, n] (0 log 0 = 0; q > 0 wherever p > 0)."""
    p = np.exp(logp)
    return (p * np.where(p > 0, logp - np.where(p > 0, logq, 0.0), 0.0)).sum(1)


def query_items(n: int, n_queries: int | None, seed: int = 0) -> np.ndarray:
    """The query items: all ``n`` (``n_queries`` None or >= n), else a sorted seeded sample."""
    if n_queries is None or n_queries >= n:
        return np.arange(n)
    if n_queries < 1:
        raise ValueError(f"n_queries must be positive, got {n_queries}")
    return np.sort(np.random.default_rng(seed).choice(n, n_queries, replace=False))


def _chunks(rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(rows), size):
        yield rows[s:s + size]


def neighbourhood_kl(refs: Mapping[str, np.ndarray], finals: Mapping[str, np.ndarray],
                     perplexity: float = 30.0, n_queries: int | None = None, seed: int = 0,
                     chunk: int = 256) -> pd.DataFrame:
    """Per-query KL(ref || final) for every pair: rows = query items, columns = (final, ref).

    Every reference's and final's neighbourhood distributions are computed once per chunk of query
    items; ``refs`` and ``finals`` map names to [n, d_*] embeddings of the same n items.
    """
    n = _check({**refs, **finals})
    rows = query_items(n, n_queries, seed)
    out = {(f, r): np.empty(len(rows)) for f in finals for r in refs}
    pos = 0
    for q in _chunks(rows, chunk):
        logp = {r: neighbourhood_logp(x, q, perplexity) for r, x in refs.items()}
        for f, e in finals.items():
            loge = neighbourhood_logp(e, q, perplexity)
            for r in refs:
                out[(f, r)][pos:pos + len(q)] = kl_rows(logp[r], loge)
        pos += len(q)
    df = pd.DataFrame(out, index=pd.Index(rows, name="item"))
    df.columns.names = ["final", "reference"]
    return df


def proportional_similarity(semantic: np.ndarray, collaborative: np.ndarray, finals: Mapping[str, np.ndarray],
                            perplexity: float = 30.0, n_queries: int | None = None, seed: int = 0,
                            chunk: int = 256) -> pd.DataFrame:
    """Eq. 9-10 for each final representation in ``finals`` (name -> [n, d_E]).

    semantic [n, d_S], collaborative [n, d_C]. Returns one row per final with ``kl_semantic`` =
    KL(S||E), ``kl_collaborative`` = KL(C||E) (means over the query items, with their standard
    errors ``*_se``), and the shares ``semantic`` (Eq. 9) and ``collaborative`` (Eq. 10), which sum
    to 1. See the module docstring for the neighbourhood distributions the KL is taken between.
    """
    kl = neighbourhood_kl({"semantic": semantic, "collaborative": collaborative}, finals, perplexity,
                          n_queries, seed, chunk)
    rows = []
    for f in finals:
        s, c = kl[(f, "semantic")], kl[(f, "collaborative")]
        ks, kc = float(s.mean()), float(c.mean())
        total = ks + kc
        if total <= 0:
            raise ValueError(f"final {f!r} has zero KL to both references; the shares are undefined")
        rows.append({"final": f, "kl_semantic": ks, "kl_collaborative": kc,
                     "kl_semantic_se": float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else np.nan,
                     "kl_collaborative_se": float(c.std(ddof=1) / np.sqrt(len(c))) if len(c) > 1 else np.nan,
                     "semantic": 1 - ks / total, "collaborative": 1 - kc / total,
                     "perplexity": perplexity, "n_queries": len(s)})
    return pd.DataFrame(rows).set_index("final")


def neighbour_overlap(ref: np.ndarray, final: np.ndarray, k: int = 10, n_queries: int | None = None,
                      seed: int = 0, chunk: int = 1024) -> float:
    """Mean share of each query item's ``k`` cosine-nearest neighbours in ``final`` that are also among
    its ``k`` nearest in ``ref`` (the item itself excluded); 1 = identical neighbourhoods."""
    n = _check({"ref": ref, "final": final})
    if not 0 < k < n:
        raise ValueError(f"k must lie between 1 and n_items - 1 = {n - 1}, got {k}")
    a, b = _unit(ref), _unit(final)
    hits = []
    for q in _chunks(query_items(n, n_queries, seed), chunk):
        na, nb = (_topk(x[q] @ x.T, q, k) for x in (a, b))
        hits.append(np.array([len(np.intersect1d(u, v, assume_unique=True)) for u, v in zip(na, nb)]) / k)
    return float(np.concatenate(hits).mean())


def _topk(sim: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    sim[np.arange(len(rows)), rows] = -np.inf
    return np.argpartition(-sim, k, axis=1)[:, :k]


def weighted_concat(semantic: np.ndarray, collaborative: np.ndarray, weight: float) -> np.ndarray:
    """[l2(S) * weight, l2(C)]: a final representation with a planted semantic weight (``weight`` > 1:
    the semantic block dominates the cosine, < 1: the collaborative block does)."""
    if weight < 0:
        raise ValueError(f"weight must be non-negative, got {weight}")
    return np.concatenate([_unit(semantic) * weight, _unit(collaborative)], axis=1)


def weight_for_share(weights: np.ndarray, shares: np.ndarray, target: float) -> float:
    """The planted semantic block weight at which the semantic share reaches ``target``, by linear
    interpolation in log(weight) between the two swept weights around it (``shares`` must rise with
    ``weights``); NaN where ``target`` lies outside the swept shares."""
    w, s = np.asarray(weights, float), np.asarray(shares, float)
    order = np.argsort(w)
    w, s = w[order], s[order]
    if np.any(np.diff(s) <= 0):
        raise ValueError("the semantic share must rise with the planted weight")
    if not s[0] <= target <= s[-1]:
        return float("nan")
    return float(np.exp(np.interp(target, s, np.log(w))))


# The four embeddings of Table 4 and Figure 5 (paper 4.3) for one data set.
ROLES = ("semantic", "collaborative", "concat", "ours")


def modality_embeddings(cfg: C.RunConfig, progress: bool = True) -> dict[str, np.ndarray]:
    """The embeddings paper 4.3 compares, for ``cfg``'s data set (Stage I runs if not cached):

    * ``semantic`` S: the frozen text embeddings E_S [n, d_S];
    * ``collaborative`` C: E_C of DIN alone (alpha = 0, the ``collaborative_only`` row) [n, d];
    * ``concat``: [l2(E_C of DIN alone), l2(PCA of E_S to d)] [n, 2d] (the ``concat`` row; same run);
    * ``ours``: the integrated embedding of ``cfg`` (``stage1.integrated``; by default E_C trained
      jointly with CKA) [n, d'].
    """
    from ungerlib.model.semantic import semantic_embeddings
    from ungerlib.model.stage1 import stage1_embeddings

    emb = lambda row: stage1_embeddings(C.variant(cfg, row), progress=progress).integrated
    return {"semantic": semantic_embeddings(cfg), "collaborative": emb("collaborative_only"),
            "concat": emb("concat"), "ours": emb("ours")}
