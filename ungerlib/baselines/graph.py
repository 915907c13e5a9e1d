"""LightGCN, NGCF and AlphaRec: graph collaborative filtering on the user-item graph, beyond the paper's
Table 3 (rerun on our splits, scored with our metrics).

**LightGCN** (He et al., SIGIR 2020): ID embeddings ``E0`` for users and items, ``L`` rounds of
parameter-free propagation over the symmetrically normalised bipartite graph

    A_hat = D^{-1/2} A D^{-1/2},  A = [[0, R], [R^T, 0]],  E = mean(E0, A_hat E0, ..., A_hat^L E0),

score ``e_u . e_i``, trained with BPR (one uniformly sampled negative per interaction) plus L2 on the
batch's layer-0 embeddings (the original recipe).

**NGCF** (Wang et al., SIGIR 2019): ID embeddings ``E0`` and, per layer, two weight matrices; the
propagation rule in matrix form, with ``L = A_hat`` the normalised graph above,

    E^{l+1} = LeakyReLU((L + I) E^l W1 + (L E^l) * E^l W2)       (* element-wise; slope 0.2)

followed by message dropout (``dropout``) and, as in the released code, an L2 normalisation of each
layer's output; the final vector is the concatenation ``[E0 | E1 | ... | E^layers]`` and the score
``e_u . e_i``. Trained like LightGCN: BPR with one uniform negative plus L2 on the batch's layer-0
embeddings (the released code puts it on the concatenated vectors, whose later parts have norm 1, so
the gradient is the same). No biases (the paper's equation; the released code adds them), no node
dropout (off in the released code's defaults).

**AlphaRec** (Sheng et al., "Language representations can be what recommenders need", ICLR 2025):
no ID embeddings at all. An item's layer-0 vector is a linear map of its text embedding
(``W s_i + b``, our :func:`ungerlib.model.semantic.semantic_embeddings`); a user's is the same map of the
mean text embedding of the user's items. Then the same propagation, cosine scores with temperature
``tau``, trained with InfoNCE against ``n_negatives`` uniformly sampled items (shared by the batch,
the positive masked out). Because users are built from their items, AlphaRec is inductive: scoring
the test split rebuilds the graph and the user vectors from everything before the test item
(training items plus the validation item) with the trained map, no retraining.

For the test split the models propagate over the graph with the validation interactions added
(train + valid edges); LightGCN's layer-0 user embeddings are still those learnt without them.

Interactions are the users' training sequences (every item but the last two); the history-excluded
ranking drops every item the user had, as for all rows of Table 3.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from ungerlib.baselines.protocol import BaselineError, Trained, rank_examples
from ungerlib.model.data import PAD, Examples, Splits

MODELS = ("LightGCN", "NGCF", "AlphaRec")
LOSS_NOTES = {
    "LightGCN": "BPR, one uniform negative per interaction, L2 on the batch's layer-0 embeddings (original recipe)",
    "NGCF": "BPR, one uniform negative per interaction, L2 on the batch's layer-0 embeddings (as the released code)",
    "AlphaRec": "InfoNCE on cosine / tau against n_negatives uniform items shared by the batch (AlphaRec paper)",
}
DEFAULTS = {
    "LightGCN": {"dim": 64, "layers": 3, "lr": 1e-3, "reg": 1e-4, "batch_size": 2048, "epochs": 100,
                 "patience": 5, "eval_every": 2},
    "NGCF": {"dim": 64, "layers": 3, "dropout": 0.1, "lr": 1e-3, "reg": 1e-5, "batch_size": 2048, "epochs": 100,
             "patience": 5, "eval_every": 2},
    "AlphaRec": {"dim": 64, "layers": 2, "lr": 5e-4, "tau": 0.15, "n_negatives": 256, "batch_size": 2048,
                 "epochs": 100, "patience": 5, "eval_every": 2},
}


# --------------------------------------------------------------------------- graph

def interactions(ex: Examples, n_items: int) -> sp.csr_matrix:
    """[n_users, n_items] 0/1 matrix of what each row of ``ex`` had before its target
    (``Examples.exclude``: the whole history), one row per example in order."""
    seen = np.asarray(ex.exclude)
    rows, cols = np.nonzero(seen != PAD)
    items = seen[rows, cols]
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise BaselineError(f"item ids outside 0..{n_items - 1} in the interactions")
    m = sp.csr_matrix((np.ones(len(items), np.float32), (rows, items)), shape=(len(seen), n_items))
    m.data[:] = 1.0  # a repeated item is one edge
    return m


def normalised_adjacency(R: sp.csr_matrix) -> torch.Tensor:
    """``D^{-1/2} A D^{-1/2}`` of the bipartite graph ``A = [[0, R], [R^T, 0]]`` as a sparse
    [U + I, U + I] tensor (users first); isolated nodes get zero rows."""
    U, I = R.shape
    A = sp.bmat([[None, R], [R.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(A.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0).astype(np.float32)
    A = sp.diags(inv) @ A @ sp.diags(inv)
    A = A.tocoo()
    idx = torch.from_numpy(np.vstack([A.row, A.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(A.data.astype(np.float32)), (U + I, U + I),
                                   check_invariants=True).coalesce()


def propagate(E0: torch.Tensor, A: torch.Tensor, layers: int) -> torch.Tensor:
    """LightGCN propagation: the mean of ``E0, A E0, ..., A^layers E0`` ([U + I, d])."""
    out, h = E0, E0
    for _ in range(layers):
        h = torch.sparse.mm(A, h)
        out = out + h
    return out / (layers + 1)


# --------------------------------------------------------------------------- models

class LightGCN(nn.Module):
    """ID embeddings [U + I, dim] propagated over the graph; ``embed(A)`` -> (users [U, d], items [I, d])."""

    def __init__(self, n_users: int, n_items: int, dim: int, layers: int):
        super().__init__()
        self.n_users, self.n_items, self.layers = n_users, n_items, layers
        self.E0 = nn.Embedding(n_users + n_items, dim)
        nn.init.normal_(self.E0.weight, std=0.1)

    def layer0(self, R: sp.csr_matrix | None = None) -> torch.Tensor:
        return self.E0.weight

    def embed(self, A: torch.Tensor, R: sp.csr_matrix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        E = propagate(self.layer0(R), A, self.layers)
        return E[:self.n_users], E[self.n_users:]


class NGCF(nn.Module):
    """ID embeddings [U + I, dim] and per layer ``W1``, ``W2`` [dim, dim] (``nn.Linear`` without bias: ``x W^T``);
    ``embed(A)`` -> (users [U, d (layers + 1)], items [I, d (layers + 1)])."""

    def __init__(self, n_users: int, n_items: int, dim: int, layers: int, dropout: float):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.E0 = nn.Embedding(n_users + n_items, dim)
        self.W1 = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(layers))
        self.W2 = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(layers))
        self.drop = nn.Dropout(dropout)
        for w in (self.E0.weight, *(m.weight for m in (*self.W1, *self.W2))):
            nn.init.xavier_uniform_(w)  # the released code's initialisation

    def embed(self, A: torch.Tensor, R: sp.csr_matrix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        E = self.E0.weight
        out = [E]
        for w1, w2 in zip(self.W1, self.W2):
            LE = torch.sparse.mm(A, E)
            E = self.drop(F.leaky_relu(w1(LE + E) + w2(LE * E), 0.2))  # (L + I) E W1 + (L E) * E W2
            out.append(F.normalize(E, dim=1))
        E = torch.cat(out, 1)
        return E[:self.n_users], E[self.n_users:]


class AlphaRec(nn.Module):
    """Layer-0 vectors linearly mapped from text embeddings (items: their own; users: the mean of their
    items'), no ID embeddings; ``embed(A, R)`` -> (users [U, d], items [I, d]) for the graph ``A`` built
    from the interactions ``R`` [U, I]."""

    def __init__(self, semantic: np.ndarray, dim: int, layers: int):
        super().__init__()
        s = np.asarray(semantic, dtype=np.float32)
        if s.ndim != 2 or not np.isfinite(s).all():
            raise BaselineError(f"AlphaRec needs finite item text embeddings [n_items, d]; got shape {s.shape}"
                                + ("" if s.ndim != 2 or np.isfinite(s).all() else " with NaN/inf"))
        self.register_buffer("S", torch.from_numpy(s))
        self.n_items, self.layers = len(s), layers
        self.map = nn.Linear(s.shape[1], dim)
        self._users: tuple[Any, torch.Tensor | None] = (None, None)

    def layer0(self, R: sp.csr_matrix) -> torch.Tensor:
        if R is None or R.shape[1] != self.n_items:
            raise BaselineError(f"AlphaRec needs the interactions [n_users, {self.n_items}] to build users")
        if self._users[0] is not R:  # the users' mean text embedding, once per graph
            counts = np.asarray(R.sum(1)).ravel()
            mean = sp.diags(1.0 / np.maximum(counts, 1)).astype(np.float32) @ R
            self._users = (R, torch.from_numpy((mean @ self.S.numpy()).astype(np.float32)))
        return self.map(torch.cat([self._users[1], self.S]))

    def embed(self, A: torch.Tensor, R: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
        E = propagate(self.layer0(R), A, self.layers)
        return E[:R.shape[0]], E[R.shape[0]:]


def build(name: str, s: dict[str, Any], n_users: int, n_items: int, semantic: np.ndarray | None) -> nn.Module:
    if name == "LightGCN":
        return LightGCN(n_users, n_items, int(s["dim"]), int(s["layers"]))
    if name == "NGCF":
        return NGCF(n_users, n_items, int(s["dim"]), int(s["layers"]), float(s["dropout"]))
    if name == "AlphaRec":
        if semantic is None or len(semantic) != n_items:
            raise BaselineError(f"AlphaRec needs item text embeddings [n_items={n_items}, d]; got "
                                f"{None if semantic is None else np.shape(semantic)}")
        return AlphaRec(semantic, int(s["dim"]), int(s["layers"]))
    raise BaselineError(f"unknown graph model {name!r}; known: {MODELS}")


def batch_loss(name: str, model: nn.Module, s: dict[str, Any], users_e: torch.Tensor, items_e: torch.Tensor,
               u: np.ndarray, i: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """The training loss of one batch of (user, positive item) interactions."""
    n_items = items_e.shape[0]
    ut, it = torch.from_numpy(u), torch.from_numpy(i)
    if name in ("LightGCN", "NGCF"):
        j = torch.from_numpy(rng.integers(n_items, size=len(i)))
        eu, ei, ej = users_e[ut], items_e[it], items_e[j]
        bpr = F.softplus((eu * ej).sum(1) - (eu * ei).sum(1)).mean()
        w = model.E0.weight
        l2 = 0.5 * (w[ut].pow(2).sum() + w[model.n_users + it].pow(2).sum() + w[model.n_users + j].pow(2).sum())
        return bpr + s["reg"] * l2 / len(u)
    neg = torch.from_numpy(rng.integers(n_items, size=int(s["n_negatives"])))
    eu = F.normalize(users_e[ut], dim=1)
    pos = (eu * F.normalize(items_e[it], dim=1)).sum(1, keepdim=True)
    negs = eu @ F.normalize(items_e[neg], dim=1).T
    negs = negs.masked_fill(neg[None, :] == it[:, None], float("-inf"))  # an accidental positive
    logits = torch.cat([pos, negs], 1) / s["tau"]
    return F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long))


class _Scorer:
    """Scores [B, n_items] for the rows of one split, from the graph of what its users had before
    their targets. Rows are matched to users by position (``Examples`` hold one row per user)."""

    def __init__(self, name: str, model: nn.Module, ex: Examples, n_items: int):
        self.name, self.model, self.n_items = name, model, n_items
        self.R = interactions(ex, n_items)
        self.A = normalised_adjacency(self.R)
        self.next = 0

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            u, i = self.model.embed(self.A, self.R)
        if self.name == "AlphaRec":
            u, i = F.normalize(u, dim=1), F.normalize(i, dim=1)
        return u, i

    def ranker(self) -> Any:
        u, i = self.embeddings()
        pos = {"row": 0}

        def score(hist: np.ndarray) -> np.ndarray:
            r = pos["row"]
            pos["row"] += len(hist)
            return (u[r:r + len(hist)] @ i.T).numpy().astype(np.float64)
        return score


def settings(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``name``'s :data:`DEFAULTS` overridden by ``params``; an unknown model or setting, or NGCF's
    dropout outside [0, 1), is a :class:`BaselineError` naming it."""
    if name not in MODELS:
        raise BaselineError(f"unknown graph model {name!r}; known: {MODELS}")
    unknown = sorted(set(params) - set(DEFAULTS[name]))
    if unknown:
        raise BaselineError(f"unknown setting(s) {unknown} for {name}; known: {sorted(DEFAULTS[name])}")
    s = {**DEFAULTS[name], **params}
    if name == "NGCF" and not 0 <= s["dropout"] < 1:
        raise BaselineError(f"NGCF setting dropout must be in [0, 1), got {s['dropout']!r}")
    return s


def fit_and_rank(name: str, params: dict[str, Any], splits: Splits, seed: int,
                 semantic: np.ndarray | None = None, work_dir: Path | None = None) -> Trained:
    """Train ``name`` (LightGCN, NGCF or AlphaRec) on the training interactions with
    :func:`ungerlib.model.train.fit` (Adam at a constant learning rate, validation NDCG@20 on our
    validation split every ``eval_every`` epochs, best state kept, early stopping after ``patience``
    validations without improvement, a checkpoint per epoch in ``work_dir`` that a killed run resumes
    from), and rank valid and test (test on the graph with the validation interactions added). Returns
    the four rankings, the history and notes."""
    from ungerlib.baselines.protocol import SELECT
    from ungerlib.model.metrics import rank_metrics
    from ungerlib.model.train import Schedule, fit

    s = settings(name, params)
    torch.manual_seed(seed)
    n_users, n_items = len(splits.valid), splits.n_items
    if not np.array_equal(splits.valid.user, splits.test.user):
        raise BaselineError("validation and test must hold the same users in the same order")
    model = build(name, s, n_users, n_items, semantic)
    train = _Scorer(name, model, splits.valid, n_items)  # the training graph = what valid users had
    R = train.R.tocoo()
    edges_u, edges_i = R.row.astype(np.int64), R.col.astype(np.int64)
    size = int(s["batch_size"])

    def batches(rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(len(edges_u))
        return [order[b:b + size] for b in range(0, len(order), size)]

    def loss_fn(idx: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        users_e, items_e = model.embed(train.A, train.R)
        return {"loss": batch_loss(name, model, s, users_e, items_e, edges_u[idx], edges_i[idx], rng)}

    def validate() -> dict[str, float]:
        ranked, _ = rank_examples(train.ranker(), splits.valid)
        return rank_metrics(ranked, splits.valid.target)

    sched = Schedule(epochs=int(s["epochs"]), batch_size=size, lr=float(s["lr"]), warmup_steps=0, lr_decay="none",
                     weight_decay=0.0, patience=int(s["patience"]), clip_norm=0.0)
    res = fit(model, loss_fn, batches, validate, SELECT, sched, seed, work_dir, name, progress=False,
              every=int(s["eval_every"]))
    rankings = {}
    for split in ("valid", "test"):
        ex = getattr(splits, split)
        rankings[f"{split}_all"], rankings[f"{split}_excl"] = rank_examples(_Scorer(name, model, ex, n_items).ranker(), ex)
    history = [h for h in res.history if f"valid_{SELECT}" in h]
    info = {"loss": LOSS_NOTES[name], "settings": copy.deepcopy(s), "validations": len(history), **res.notes(),
            "interactions": int(len(edges_u))}
    return rankings, res.history, info
