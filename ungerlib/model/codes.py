"""Unicodes: quantise item embeddings into unique, prefix-free code sequences (paper 3.3, 4.6).

* :func:`hierarchical_kmeans` (the paper's method, 3.3): k-means into K clusters, each cluster
  with more than K items split again into K, until every leaf holds one item; an item's code is
  its path of cluster indices. A cluster of at most K items gives each item its own slot (what
  recursing to singletons yields), ordered along the cluster's first principal direction so
  neighbouring slots hold similar items. Embeddings k-means cannot separate (identical rows)
  are split by index, so codes are always distinct.
* :func:`random_codes`: random paths; with ``like=`` the same tree shape, leaves shuffled
  (Fig 8's "random assignment" baseline).
* :func:`rqvae_codes`: a residual-quantised VAE (``levels`` codebooks of size K) plus one final
  token telling colliding items apart, as TIGER does (Fig 8).
* :func:`item_codes`: the cached unicodes of a :class:`~ungerlib.infra.config.RunConfig`.

:class:`CodeTable` maps items to codes both ways and holds the trie of valid prefixes that
constrained beam search walks: ``next_node[node, token]`` is the child node, -1 if invalid.
"""
from __future__ import annotations

import io
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ungerlib.infra import artefacts, config as C
from ungerlib.infra.store import atomic_write_bytes, atomic_write_json

PAD = -1


class CodeTable:
    """Item <-> code and the code trie. ``codes[i]``: item i's code, a tuple of tokens in [0, K).

    Attributes: ``lengths`` [n] int64, ``max_len``; trie ``next_node`` [n_nodes, K] int32 (node 0 =
    root, -1 = no such child), ``node_item`` [n_nodes] int64 (item at a leaf, -1 inside),
    ``node_depth`` [n_nodes] int64; ``n_collisions``: items whose raw quantisation collided
    before disambiguation (RQ-VAE; 0 otherwise); ``info``: quantiser diagnostics (JSON-able).
    """

    def __init__(self, codes: list[tuple[int, ...]], K: int, n_collisions: int = 0,
                 info: dict[str, Any] | None = None):
        if K < 2:
            raise ValueError(f"K must be at least 2, got {K}")
        if len(codes) == 0:
            raise ValueError("a code table needs at least one item")
        self.codes = [tuple(int(t) for t in c) for c in codes]
        self.K, self.n_collisions, self.info = int(K), int(n_collisions), dict(info or {})
        bad = [i for i, c in enumerate(self.codes) if not c or min(c) < 0 or max(c) >= K]
        if bad:
            raise ValueError(f"items {bad[:10]} have empty codes or tokens outside [0, {K}): "
                             f"{[self.codes[i] for i in bad[:3]]}")
        # in lexicographic order a duplicate or an extension directly follows its code
        order = sorted(range(len(self.codes)), key=self.codes.__getitem__)
        for a, b in zip(order, order[1:]):
            ca, cb = self.codes[a], self.codes[b]
            if ca == cb:
                raise ValueError(f"codes are not unique: items {a} and {b} both have code {ca}")
            if cb[:len(ca)] == ca:
                raise ValueError(f"codes are not prefix-free: item {a}'s code {ca} is a prefix of item {b}'s {cb}")
        self._item = {c: i for i, c in enumerate(self.codes)}
        self.lengths = np.array([len(c) for c in self.codes], dtype=np.int64)
        self.max_len = int(self.lengths.max())
        node_of = {(): 0}  # one node per distinct prefix, parents before children
        for i in order:
            c = self.codes[i]
            for d in range(1, len(c) + 1):
                node_of.setdefault(c[:d], len(node_of))
        self.next_node = np.full((len(node_of), self.K), -1, dtype=np.int32)
        self.node_item = np.full(len(node_of), -1, dtype=np.int64)
        self.node_depth = np.zeros(len(node_of), dtype=np.int64)
        for p, node in node_of.items():
            if p:
                self.next_node[node_of[p[:-1]], p[-1]] = node
                self.node_depth[node] = len(p)
        for i, c in enumerate(self.codes):
            self.node_item[node_of[c]] = i

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return f"CodeTable(n_items={len(self)}, K={self.K}, max_len={self.max_len}, nodes={len(self.node_item)})"

    def code_of(self, item: int) -> tuple[int, ...]:
        return self.codes[item]

    def item_of(self, code: tuple[int, ...] | list[int]) -> int:
        try:
            return self._item[tuple(int(t) for t in code)]
        except KeyError:
            raise KeyError(f"{tuple(code)} is not the code of any item (K={self.K}, "
                           f"code lengths {sorted(set(self.lengths.tolist()))})") from None

    def padded(self) -> np.ndarray:
        """[n, max_len] int64, PAD (-1) after each code's end."""
        out = np.full((len(self), self.max_len), PAD, dtype=np.int64)
        for i, c in enumerate(self.codes):
            out[i, :len(c)] = c
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodeTable) and (self.K, self.codes) == (other.K, other.codes)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> None:
        """``codes.npy`` (the padded table) and ``codes.json`` (K, collisions, info), each atomic."""
        buf = io.BytesIO()
        np.save(buf, self.padded(), allow_pickle=False)
        atomic_write_bytes(Path(folder) / "codes.npy", buf.getvalue())
        atomic_write_json(Path(folder) / "codes.json", {"K": self.K, "n_items": len(self),
                                                        "n_collisions": self.n_collisions, "info": self.info})

    @classmethod
    def load(cls, folder: str | Path) -> "CodeTable":
        meta = json.loads((Path(folder) / "codes.json").read_text())
        padded = np.load(Path(folder) / "codes.npy", allow_pickle=False)
        if len(padded) != meta["n_items"]:
            raise ValueError(f"{folder}: codes.npy has {len(padded)} rows, codes.json says {meta['n_items']}")
        return cls([tuple(r[r != PAD].tolist()) for r in padded], meta["K"], meta["n_collisions"], meta["info"])

    # ------------------------------------------------------------------ report (Fig 8-9 inputs)
    def report(self, items: list[dict[str, Any]] | Any | None = None) -> dict[str, Any]:
        """Code shape and whether shared prefixes mean something.

        ``items``: item dicts (or a Dataset, its ``.items`` are used). An item's category is its
        ``topic`` (synthetic ground truth) or else the leaf of its first category path; items
        without one are left out. ``same_category_shared_prefix`` is the exact rate at which two
        distinct items with the same first token share a category; ``same_category_random_pair``
        the same over all pairs of distinct items.
        """
        first = Counter(c[0] for c in self.codes)
        rep: dict[str, Any] = {
            "n_items": len(self), "K": self.K, "max_len": self.max_len, "mean_length": float(self.lengths.mean()),
            "length_hist": {int(k): v for k, v in sorted(Counter(self.lengths.tolist()).items())},
            "first_level_used": len(first), "mean_items_per_first_code": len(self) / len(first),
            "max_items_per_first_code": max(first.values()), "n_collisions": self.n_collisions,
            "n_trie_nodes": len(self.node_item), **self.info}
        items = getattr(items, "items", items)
        if items is not None:
            if len(items) != len(self):
                raise ValueError(f"report got {len(items)} items for a table of {len(self)}")
            from ungerlib.model.semantic import leaf_category

            cat = [str(it["topic"]) if it.get("topic") is not None else leaf_category(it) for it in items]
            keep = [i for i, c in enumerate(cat) if c]
            pairs = lambda counts: sum(v * (v - 1) for v in counts)
            same = pairs(Counter((self.codes[i][0], cat[i]) for i in keep).values())
            total = pairs(Counter(self.codes[i][0] for i in keep).values())
            rep["same_category_shared_prefix"] = same / total if total else float("nan")
            rep["same_category_random_pair"] = pairs(Counter(cat[i] for i in keep).values()) / max(
                len(keep) * (len(keep) - 1), 1)
            rep["n_items_with_category"] = len(keep)
        return rep


# --------------------------------------------------------------------------- quantisers

def _check_embeddings(emb: np.ndarray, K: int) -> np.ndarray:
    if K < 2:
        raise C.ConfigError(f"K must be at least 2, got {K}")
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty [n_items, d] array, got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.number):
        raise ValueError(f"embeddings must be numeric, got dtype {emb.dtype}")
    finite = np.isfinite(emb).all(1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"embeddings contain NaN/inf in {len(bad)} row(s), first items: {bad[:5].tolist()}")
    return emb.astype(np.float32)


def _principal_order(x: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``x`` sorted along its first principal direction (sign fixed, stable)."""
    if len(x) < 3:
        return np.arange(len(x))
    xc = x - x.mean(0)
    v = np.linalg.svd(xc.astype(np.float64), full_matrices=False)[2][0]
    v = v * np.sign(v[np.argmax(np.abs(v))])
    return np.argsort(xc @ v, kind="stable")


def hierarchical_kmeans(emb: np.ndarray, K: int = 256, seed: int = 0, n_init: int = 1,
                        max_iter: int = 100) -> CodeTable:
    """Paper 3.3: recursive K-way k-means until each leaf is one item. emb [n, d] -> CodeTable.

    Clusters with more than K items are split by sklearn ``KMeans`` (full Lloyd; 12k x 128 with
    K=256 takes about a second, so MiniBatchKMeans buys nothing). If k-means puts a whole cluster
    into one child (identical points) that cluster is split into K contiguous index ranges
    instead; ``info["index_split_items"]`` counts the items that went through such a split.
    Cluster ids are k-means' labels, so code tokens need not be contiguous. Deterministic given seed.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    x = _check_embeddings(emb, K)
    codes: list[tuple[int, ...]] = [()] * len(x)
    stack: list[tuple[np.ndarray, tuple[int, ...]]] = [(np.arange(len(x)), ())]
    n_index_split, n_kmeans = 0, 0
    while stack:
        idx, prefix = stack.pop()
        if len(idx) <= K:  # one slot per item
            for slot, j in enumerate(idx[_principal_order(x[idx])]):
                codes[j] = prefix + (slot,)
            continue
        with warnings.catch_warnings():  # too few distinct points: handled just below
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(K, n_init=n_init, max_iter=max_iter, random_state=seed + len(prefix))
            labels = km.fit_predict(x[idx])
        n_kmeans += 1
        if np.bincount(labels).max() == len(idx):  # no progress: split by index
            labels, n_index_split = np.arange(len(idx)) * K // len(idx), n_index_split + len(idx)
        for k in np.unique(labels):
            stack.append((idx[labels == k], prefix + (int(k),)))
    return CodeTable(codes, K, info={"index_split_items": n_index_split, "kmeans_fits": n_kmeans})


def random_codes(n_items: int, K: int, seed: int = 0, like: CodeTable | None = None) -> CodeTable:
    """Random unique prefix-free codes (Fig 8 baseline).

    With ``like``: ``like``'s codes randomly re-assigned to items (same tree, same length
    histogram, no relation to content). Without: a random subset of the leaves of the complete
    K-ary tree of minimal depth ceil(log_K n).
    """
    if K < 2:
        raise C.ConfigError(f"K must be at least 2, got {K}")
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    rng = np.random.default_rng(seed)
    if like is not None:
        if len(like) != n_items or like.K != K:
            raise ValueError(f"like has {len(like)} items and K={like.K}, expected {n_items} and K={K}")
        return CodeTable([like.codes[p] for p in rng.permutation(n_items)], K)
    depth = max(1, int(np.ceil(np.log(n_items) / np.log(K) - 1e-9)))
    while K ** depth < n_items:
        depth += 1
    slots = rng.choice(K ** depth, size=n_items, replace=False)
    return CodeTable([tuple(int(s) // K ** (depth - 1 - d) % K for d in range(depth)) for s in slots], K)


def rqvae_codes(emb: np.ndarray, K: int = 256, levels: int = 3, hidden: tuple[int, ...] = (256, 128),
                latent: int = 32, epochs: int = 200, beta: float = 0.25, lr: float = 1e-3,
                seed: int = 0, batch_size: int = 1024) -> CodeTable:
    """RQ-VAE (TIGER, paper 4.6 / Fig 8): emb [n, d] -> codes of length ``levels + 1``.

    MLP encoder -> ``levels`` residual codebooks [K, latent] -> MLP decoder. Loss: reconstruction
    MSE + codebook MSE + ``beta`` x commitment MSE, straight-through gradients; codebooks are
    initialised by k-means on the first shuffled batch's residuals. Items sharing the same
    ``levels`` tokens get a last token 0, 1, 2, ... (TIGER's collision level; every item gets one, so
    all codes have the same length and are prefix-free); ``n_collisions`` counts items that shared a
    code. Where more than K items share one code (a collapsed codebook), the collision index is written
    in as many base-K tokens as it needs, for every item. Deterministic given seed on CPU.
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sklearn.cluster import KMeans

    if levels < 1:
        raise ValueError(f"levels must be at least 1, got {levels}")
    x = torch.from_numpy(_check_embeddings(emb, K))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)

    def mlp(ds: list[int]) -> nn.Sequential:
        layers = [m for a, b in zip(ds[:-1], ds[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        return nn.Sequential(*layers[:-1])

    dims = [x.shape[1], *hidden, latent]
    enc, dec = mlp(dims), mlp(dims[::-1])
    books = nn.Parameter(torch.zeros(levels, K, latent))
    with torch.no_grad():  # k-means init on the first shuffled batch; too few points: jittered copies
        rng = np.random.default_rng(seed)
        r = enc(x[torch.randperm(len(x), generator=g)[:max(batch_size, K)]]).numpy().astype(np.float64)
        for lvl in range(levels):
            k = min(K, len(np.unique(r.round(6), axis=0)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                km = KMeans(k, n_init=1, random_state=seed + lvl).fit(r)
            cent = km.cluster_centers_
            extra = cent[rng.integers(k, size=K - k)]
            cent = np.concatenate([cent, extra + 1e-3 * (r.std() + 1e-6) * rng.standard_normal(extra.shape)])
            books[lvl] = torch.from_numpy(cent.astype(np.float32))
            r = r - cent[km.labels_]
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), books], lr=lr)

    def quantise(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, latent] -> straight-through zq [B, latent], ids [B, levels], codebook+commitment loss."""
        r, q, ids, loss = z, torch.zeros_like(z), [], z.new_zeros(())
        for lvl in range(levels):
            k = torch.cdist(r.detach(), books[lvl]).argmin(1)
            e = books[lvl][k]
            loss = loss + F.mse_loss(e, r.detach()) + beta * F.mse_loss(r, e.detach())
            q, r, ids = q + e, r - e.detach(), ids + [k]
        return z + (q - z).detach(), torch.stack(ids, 1), loss

    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            z = enc(x[idx])
            zq, _, qloss = quantise(z)
            loss = F.mse_loss(dec(zq), x[idx]) + qloss
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        zq, ids, _ = quantise(enc(x))
        recon = float(F.mse_loss(dec(zq), x))
    raw = [tuple(r) for r in ids.tolist()]
    count, seen = Counter(raw), Counter()
    worst, n_worst = count.most_common(1)[0]
    extra = 1  # collision tokens: one where at most K items share a code (TIGER), base-K digits beyond
    while K ** extra < n_worst:
        extra += 1
    codes = []
    for c in raw:
        codes.append(c + tuple(seen[c] // K ** (extra - 1 - d) % K for d in range(extra)))
        seen[c] += 1
    n_coll = sum(v for v in count.values() if v > 1)
    return CodeTable(codes, K, n_collisions=n_coll,
                     info={"max_items_per_raw_code": n_worst, "collision_tokens": extra, "recon_mse": round(recon, 6),
                           "codebook_usage": [len(set(ids[:, lv].tolist())) for lv in range(levels)]})


# --------------------------------------------------------------------------- the cached artefact

def item_codes(cfg: C.RunConfig, force: bool = False) -> CodeTable:
    """The unicodes of ``cfg`` (cached artefact ``codes``): quantise Stage I's integrated embeddings.

    ``codes.method``: ``hkmeans`` (paper), ``rqvae``, or ``random`` (the hkmeans table of the
    same config with its codes shuffled among items, so only the assignment differs).
    """
    c = cfg.codes

    def build(out: Path, work: Path) -> dict[str, Any]:
        from ungerlib.model.stage1 import stage1_embeddings  # lazy: stage1 is upstream and heavy

        emb = stage1_embeddings(cfg).integrated
        if c.method == "hkmeans":
            table = hierarchical_kmeans(emb, c.K, cfg.seed, c.kmeans_n_init, c.kmeans_max_iter)
        elif c.method == "random":
            like = item_codes(cfg.replace(codes={"method": "hkmeans"}))
            table = random_codes(len(emb), c.K, cfg.seed, like=like)
        elif c.method == "rqvae":
            table = rqvae_codes(emb, c.K, c.rq_levels, tuple(c.rq_hidden), c.rq_latent, c.rq_epochs,
                                c.rq_beta, c.rq_lr, cfg.seed)
        else:
            raise C.ConfigError(f"codes.method must be hkmeans, random or rqvae, got {c.method!r}")
        if len(table) != len(emb):
            raise AssertionError(f"{len(table)} codes for {len(emb)} items")
        table.save(out)
        return {"report": table.report()}

    return CodeTable.load(artefacts.cached("codes", cfg, build, force=force).path)
