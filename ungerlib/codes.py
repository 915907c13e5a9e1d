"""Unicodes: quantise item embeddings into prefix-free code sequences (paper 3.3, Fig 8-9).

* :func:`hierarchical_kmeans`: K clusters, each cluster with more than K items split again
  into K, until every leaf holds one item; an item's code is its path (paper 3.3). A cluster of
  at most K items gives each item its own slot, ordered along the cluster's first principal
  direction, so neighbouring slots hold similar items. Identical or near-identical
  embeddings that k-means cannot separate are split by index, so codes are always distinct.
* :func:`random_codes`: the same code shape with random paths (Fig 8 baseline).
* :func:`rqvae_codes`: a residual-quantised VAE (levels x K) plus a final token that
  disambiguates colliding items, as TIGER does (Fig 8).

:class:`CodeTable` maps items to codes both ways and holds the trie of valid prefixes that
constrained beam search walks: ``next_node[node, token]`` is the child node or -1.
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from . import config as C
from .store import atomic_write_bytes, atomic_write_json, cached


class CodeTable:
    """Item <-> code, plus the trie. ``codes[i]`` is item i's code, a tuple of tokens in [0, K)."""

    def __init__(self, codes: list[tuple[int, ...]], K: int, n_collisions: int = 0):
        self.codes, self.K, self.n_collisions = [tuple(int(t) for t in c) for c in codes], K, n_collisions
        bad = [i for i, c in enumerate(self.codes) if not c or min(c) < 0 or max(c) >= K]
        if bad:
            raise ValueError(f"codes of items {bad[:10]} are empty or have tokens outside [0, {K})")
        self._item = {c: i for i, c in enumerate(self.codes)}
        if len(self._item) != len(self.codes):
            dup = [i for i, c in enumerate(self.codes) if self._item[c] != i]
            raise ValueError(f"codes are not unique: items {dup[:10]} repeat another item's code")
        self.lengths = np.array([len(c) for c in self.codes])
        self.max_len = int(self.lengths.max())
        # trie: node 0 is the root; a node per distinct prefix
        prefixes = {(): 0}
        for c in self.codes:
            for d in range(1, len(c) + 1):
                prefixes.setdefault(c[:d], len(prefixes))
        self.next_node = np.full((len(prefixes), K), -1, dtype=np.int32)
        self.node_item = np.full(len(prefixes), -1, dtype=np.int64)
        self.node_depth = np.zeros(len(prefixes), dtype=np.int64)
        for p, node in prefixes.items():
            if p:
                self.next_node[prefixes[p[:-1]], p[-1]] = node
                self.node_depth[node] = len(p)
        for i, c in enumerate(self.codes):
            node = prefixes[c]
            if (self.next_node[node] >= 0).any():
                raise ValueError(f"codes are not prefix-free: item {i}'s code {c} is a prefix of another code")
            self.node_item[node] = i

    def __len__(self) -> int:
        return len(self.codes)

    def code_of(self, item: int) -> tuple[int, ...]:
        return self.codes[item]

    def item_of(self, code: tuple[int, ...]) -> int:
        try:
            return self._item[tuple(code)]
        except KeyError:
            raise KeyError(f"{tuple(code)} is not the code of any item") from None

    def padded(self) -> np.ndarray:
        """[n, max_len] int64, -1 after each code's end."""
        out = np.full((len(self), self.max_len), -1, dtype=np.int64)
        for i, c in enumerate(self.codes):
            out[i, :len(c)] = c
        return out

    def save(self, folder: str | Path) -> None:
        atomic_write_json(Path(folder) / "codes.json", {"K": self.K, "n_collisions": self.n_collisions,
                                                         "codes": [list(c) for c in self.codes]})

    @classmethod
    def load(cls, folder: str | Path) -> "CodeTable":
        d = json.loads((Path(folder) / "codes.json").read_text())
        return cls([tuple(c) for c in d["codes"]], d["K"], d["n_collisions"])

    def report(self, items: list[dict[str, Any]] | None = None, seed: int = 0) -> dict[str, Any]:
        """Code-length histogram, first-level usage, collisions, and whether prefixes mean something."""
        first = Counter(c[0] for c in self.codes)
        rep: dict[str, Any] = {
            "n_items": len(self), "K": self.K, "length_hist": dict(sorted(Counter(self.lengths.tolist()).items())),
            "mean_length": float(self.lengths.mean()), "first_level_used": len(first),
            "max_items_per_first_code": max(first.values()), "collisions_before_disambiguation": self.n_collisions}
        if items is not None:
            from .semantic import leaf_category

            cat = np.array([str(it.get("topic", "")) or leaf_category(it) for it in items])
            rng = np.random.default_rng(seed)
            f = np.array([c[0] for c in self.codes])
            a, b = rng.integers(len(self), size=(2, 50000))
            # pairs sharing a first-level code: draw an item, then another item of its cluster
            groups = {k: np.flatnonzero(f == k) for k in first if first[k] > 1}
            keys = np.array(list(groups))
            w = np.array([len(groups[k]) for k in keys], float)
            pick = rng.choice(len(keys), size=20000, p=w / w.sum())
            pairs = np.array([rng.choice(groups[keys[g]], 2, replace=False) for g in pick])
            rep["same_category_given_same_prefix"] = float(np.mean(cat[pairs[:, 0]] == cat[pairs[:, 1]]))
            rep["same_category_random_pair"] = float(np.mean(cat[a] == cat[b]))
        return rep


def _check_embeddings(emb: np.ndarray, K: int) -> np.ndarray:
    if K < 2:
        raise C.ConfigError(f"K must be at least 2, got {K}")
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or len(emb) == 0:
        raise ValueError(f"embeddings must be a non-empty [n_items, d] array, got shape {emb.shape}")
    if not np.isfinite(emb).all():
        bad = np.flatnonzero(~np.isfinite(emb).all(1))
        raise ValueError(f"embeddings contain NaN/inf in {len(bad)} row(s), first: {bad[:5].tolist()}")
    return emb


def _order_in_cluster(x: np.ndarray) -> np.ndarray:
    """Indices of ``x`` ordered along its first principal direction (stable, deterministic)."""
    if len(x) < 3:
        return np.arange(len(x))
    xc = x - x.mean(0)
    v = np.linalg.svd(xc, full_matrices=False)[2][0]
    v = v * np.sign(v[np.argmax(np.abs(v))])  # fix the sign
    return np.argsort(xc @ v, kind="stable")


def hierarchical_kmeans(emb: np.ndarray, K: int = 256, seed: int = 0, n_init: int = 1,
                        max_iter: int = 100) -> CodeTable:
    """Paper 3.3: recursive K-way k-means until each leaf is one item. emb [n, d] -> CodeTable."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    emb = _check_embeddings(emb, K)
    codes: list[tuple[int, ...]] = [()] * len(emb)

    def split(idx: np.ndarray, prefix: tuple[int, ...], depth: int) -> None:
        if len(idx) == 1 and prefix:
            codes[idx[0]] = prefix
            return
        if len(idx) <= K:  # one slot per item
            for slot, j in enumerate(idx[_order_in_cluster(emb[idx])]):
                codes[j] = prefix + (slot,)
            return
        with warnings.catch_warnings():  # duplicates: handled just below
            warnings.simplefilter("ignore", ConvergenceWarning)
            labels = KMeans(K, n_init=n_init, max_iter=max_iter, random_state=seed + depth).fit_predict(emb[idx])
        if np.bincount(labels).max() == len(idx):  # k-means made no progress (identical points)
            labels = np.arange(len(idx)) * K // len(idx)
        for k in np.unique(labels):
            split(idx[labels == k], prefix + (int(k),), depth + 1)

    split(np.arange(len(emb)), (), 0)
    return CodeTable(codes, K)


def random_codes(n_items: int, K: int, seed: int = 0, like: CodeTable | None = None) -> CodeTable:
    """Random unique prefix-free codes: ``like``'s tree shape with shuffled leaves, or a balanced tree."""
    if K < 2:
        raise C.ConfigError(f"K must be at least 2, got {K}")
    rng = np.random.default_rng(seed)
    if like is not None:
        if len(like) != n_items:
            raise ValueError(f"like has {len(like)} items, expected {n_items}")
        perm = rng.permutation(n_items)  # same set of leaves, randomly re-assigned
        return CodeTable([like.codes[p] for p in perm], K)
    depth = 1
    while K ** depth < n_items:
        depth += 1
    slots = rng.choice(K ** depth, size=n_items, replace=False)
    return CodeTable([tuple(int(s // K ** (depth - 1 - d) % K) for d in range(depth)) for s in slots], K)


def rqvae_codes(emb: np.ndarray, K: int = 256, levels: int = 3, hidden: tuple[int, ...] = (256, 128),
                latent: int = 32, epochs: int = 200, beta: float = 0.25, lr: float = 1e-3,
                seed: int = 0, batch_size: int = 1024) -> CodeTable:
    """RQ-VAE (TIGER): MLP encoder -> ``levels`` residual codebooks of size K -> MLP decoder.

    Loss: reconstruction + codebook + beta * commitment, straight-through gradients, codebooks
    initialised by k-means on the first batch's residuals. Items whose ``levels`` tokens collide
    get a final token 0, 1, 2, ... to tell them apart (all codes then have ``levels + 1`` tokens).
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sklearn.cluster import KMeans

    x = torch.from_numpy(_check_embeddings(emb, K).astype(np.float32))
    torch.manual_seed(seed)
    dims = [x.shape[1], *hidden, latent]
    mlp = lambda ds: nn.Sequential(*[m for a, b in zip(ds[:-1], ds[1:]) for m in (nn.Linear(a, b), nn.ReLU())][:-1])
    enc, dec = mlp(dims), mlp(dims[::-1])
    books = nn.Parameter(torch.zeros(levels, K, latent))
    with torch.no_grad():
        r = enc(x[:max(batch_size, K)])
        for lvl in range(levels):
            km = KMeans(K, n_init=1, random_state=seed).fit(r.numpy())
            books[lvl] = torch.from_numpy(km.cluster_centers_.astype(np.float32))
            r = r - books[lvl][torch.from_numpy(km.labels_)]
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), books], lr=lr)

    def quantise(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r, q, ids, loss = z, torch.zeros_like(z), [], z.new_zeros(())
        for lvl in range(levels):
            k = torch.cdist(r, books[lvl]).argmin(1)
            e = books[lvl][k]
            loss = loss + F.mse_loss(e, r.detach()) + beta * F.mse_loss(r, e.detach())
            q, r, ids = q + e, r - e.detach(), ids + [k]
        return z + (q - z).detach(), torch.stack(ids, 1), loss

    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            z = enc(x[idx])
            zq, _, qloss = quantise(z)
            loss = F.mse_loss(dec(zq), x[idx]) + qloss
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        ids = quantise(enc(x))[1].numpy()
    seen: Counter = Counter()
    codes = []
    for row in map(tuple, ids.tolist()):
        codes.append(row + (seen[row],))
        seen[row] += 1
    if max(seen.values()) > K:
        raise ValueError(f"{max(seen.values())} items share one RQ-VAE code, more than K={K} can disambiguate")
    n_coll = sum(v for v in seen.values() if v > 1)
    return CodeTable(codes, K, n_collisions=n_coll)


def item_codes(cfg: C.RunConfig, force: bool = False) -> CodeTable:
    """The unicodes of ``cfg``: quantise Stage I's integrated embeddings (cached artefact)."""
    c = cfg.codes

    def build(out: Path, work: Path) -> dict[str, Any]:
        from .stage1 import stage1_embeddings

        emb = stage1_embeddings(cfg).integrated
        if c.method == "hkmeans":
            table = hierarchical_kmeans(emb, c.K, cfg.seed, c.kmeans_n_init, c.kmeans_max_iter)
        elif c.method == "random":
            table = random_codes(len(emb), c.K, cfg.seed, like=hierarchical_kmeans(emb, c.K, cfg.seed))
        elif c.method == "rqvae":
            table = rqvae_codes(emb, c.K, c.rq_levels, c.rq_hidden, c.rq_latent, c.rq_epochs, c.rq_beta, c.rq_lr,
                                cfg.seed)
        else:
            raise C.ConfigError(f"codes.method must be hkmeans, random or rqvae, got {c.method!r}")
        table.save(out)
        return {"report": table.report()}

    return CodeTable.load(cached("codes", C.upstream(cfg, "codes"), build, force=force).path)
