"""SASRec and HSTU: next-item transformers over the item ids, rerun on our splits (Table 3; HSTU is the
model of the paper's Fig. 6) and trained by :func:`ungerlib.model.train.fit`.

Both read the splits' right-aligned windows of the last ``max_len`` (20) items (PAD = -1), predict the
next item at the **last** position of each training example (our training split already holds every
prefix of a user's sequence as an example) and score every item with the item embeddings tied to
the output. What they share lives in :class:`NextItemModel`:

* input ``x_t = E[i_t] sqrt(d) + P_t`` (item embedding ``E`` [n_items + 1, d], the extra row is PAD and
  stays zero; learned absolute positions ``P`` [max_len, d]), dropout, padded positions zeroed;
* the loss (the model owns it): softmax cross-entropy over **every** item (``n_negatives = 0``), or a
  sampled softmax over the target and ``n_negatives`` items drawn uniformly and shared by the batch,
  an accidental hit (a negative equal to the row's target) masked out;
* scoring ``scores(hist) -> [B, n_items]``.

**SASRec** (Kang & McAuley, ICDM 2018): ``blocks`` causal self-attention blocks, each
``x + Dropout(SA(LayerNorm(x)))`` then ``x + Dropout(FFN(LayerNorm(x)))`` (the paper's
``g(x) = x + Dropout(g(LayerNorm(x)))``), ``FFN(s) = ReLU(s W1 + b1) W2 + b2``, a final LayerNorm, and the
prediction ``r_i = F_t . E_i`` with the shared item embedding. The paper trains binary cross-entropy
with one negative per position; we train the softmax above (one of the grid's axes).

**HSTU** (Zhai et al., "Actions Speak Louder than Words", ICML 2024), each layer (:class:`HSTULayer`):

    U, V, Q, K = Split(SiLU(f1(X)))                       (Eq. 1)
    A(X) V(X)  = SiLU(Q K^T + rab^p) V / n                (Eq. 2: pointwise, causal, no softmax)
    Y(X)       = f2(Norm(A(X) V(X)) * U(X)) + X           (Eq. 3, with the residual)

``n`` is the window length (20; the released code divides by the padded length), ``rab^p`` a learned bias
per bucket of the relative distance ``i - j`` (:func:`relative_buckets`). Our data have **no
timestamps**, so the time part ``rab^t`` of the paper's ``rab^{p,t}`` is absent. As in the released code
(``generative_recommenders/research``), ``f1`` has no bias, the layer's input is layer-normed, the
dropout sits before ``f2``, and the output is compared with the items by cosine over a temperature
(``temperature``, 0.05 there) instead of a plain dot product. The released code trains every position
of a sequence; we train the last position of every prefix, as for SASRec.

``fit_and_rank(name, params, splits, seed, work_dir)`` trains one setting and returns the four
rankings, the history and notes (:data:`ungerlib.baselines.protocol.Trained`); a killed run started
again with the same ``work_dir`` resumes after its last finished epoch.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ungerlib.baselines.protocol import SELECT, BaselineError, Trained, rank_examples, rank_splits
from ungerlib.model.data import PAD, Splits

MODELS = ("SASRec", "HSTU")
LOSS_NOTES = {
    "SASRec": "softmax cross-entropy at the last position over every item (n_negatives = 0) or over the target "
              "and n_negatives uniform items shared by the batch; dot product with the tied item embeddings "
              "(the SASRec paper: binary cross-entropy, one negative per position)",
    "HSTU": "softmax cross-entropy at the last position over every item (n_negatives = 0) or over the target "
            "and n_negatives uniform items shared by the batch; cosine / temperature with the tied item "
            "embeddings (HSTU's released sampled-softmax recipe)",
}
_SHARED = {"dim": 64, "blocks": 2, "heads": 1, "dropout": 0.2, "lr": 1e-3, "n_negatives": 0, "batch_size": 256,
           "epochs": 100, "patience": 5}
DEFAULTS: dict[str, dict[str, Any]] = {
    "SASRec": dict(_SHARED),
    "HSTU": {**_SHARED, "heads": 2, "rab_buckets": 16, "temperature": 0.05},
}


def _count(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


# setting -> (accepts the value, what it must be)
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dim": (lambda v: _count(v) and v >= 1, "a positive integer"),
    "blocks": (lambda v: _count(v) and v >= 1, "a positive integer"),
    "heads": (lambda v: _count(v) and v >= 1, "a positive integer"),
    "dropout": (lambda v: _real(v) and 0 <= v < 1, "in [0, 1)"),
    "lr": (lambda v: _real(v) and v > 0, "a positive number"),
    "n_negatives": (lambda v: _count(v) and v >= 0, "a non-negative integer (0: softmax over every item)"),
    "batch_size": (lambda v: _count(v) and v >= 1, "a positive integer"),
    "epochs": (lambda v: _count(v) and v >= 1, "a positive integer"),
    "patience": (lambda v: _count(v) and v >= 1, "a positive integer"),
    "rab_buckets": (lambda v: _count(v) and v >= 2, "an integer >= 2"),
    "temperature": (lambda v: _real(v) and v > 0, "a positive number"),
}


def settings(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The full settings of one run: ``name``'s :data:`DEFAULTS` overridden by ``params``. An unknown
    model or setting, or a value out of range, is one :class:`BaselineError` naming it."""
    if name not in MODELS:
        raise BaselineError(f"unknown sequential model {name!r}; known: {MODELS}")
    unknown = sorted(set(params) - set(DEFAULTS[name]))
    if unknown:
        raise BaselineError(f"unknown setting(s) {unknown} for {name}; known: {sorted(DEFAULTS[name])}")
    s = {**DEFAULTS[name], **params}
    for k, v in s.items():
        ok, want = _RULES[k]
        if not ok(v):
            raise BaselineError(f"{name} setting {k} must be {want}, got {v!r}")
    if s["dim"] % s["heads"]:
        raise BaselineError(f"{name} setting dim ({s['dim']}) must be a multiple of heads ({s['heads']})")
    return s


# --------------------------------------------------------------------------- the shared part

class NextItemModel(nn.Module):
    """Item and position embeddings, the loss and the scores; a subclass's ``blocks(x [B, L, d],
    keep [B, L] bool) -> [B, L, d]`` is the sequence encoder."""

    def __init__(self, n_items: int, max_len: int, dim: int, dropout: float):
        super().__init__()
        self.n_items, self.max_len, self.dim = n_items, max_len, dim
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=n_items)  # row n_items: PAD, kept zero
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        for table in (self.item, self.pos):  # small, as both released codes: Adam's steps soon outweigh it
            nn.init.trunc_normal_(table.weight, std=0.02, a=-0.04, b=0.04)
        with torch.no_grad():
            self.item.weight[n_items].zero_()

    def blocks(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hidden(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, L] right-aligned item ids (PAD = -1, L <= max_len) -> [B, d]: the encoder's output at the
        last position (the most recent item), which predicts the next item."""
        L = hist.shape[1]
        if L > self.max_len:
            raise BaselineError(f"histories of {L} items are longer than the model's max_len {self.max_len}")
        keep = hist != PAD
        x = self.item(hist.masked_fill(~keep, self.n_items)) * self.dim ** 0.5 + self.pos.weight[self.max_len - L:]
        x = self.drop(x) * keep[..., None]
        return self.blocks(x, keep)[:, -1]

    def query(self, h: torch.Tensor) -> torch.Tensor:
        """The encoder's output [B, d] as it meets the item embeddings (SASRec: itself)."""
        return h

    def keys(self) -> torch.Tensor:
        """The output's item vectors [n_items, d]: the input item embeddings (tied)."""
        return self.item.weight[:self.n_items]

    def loss(self, hist: torch.Tensor, target: torch.Tensor, neg: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Next-item cross-entropy of histories [B, L] with targets [B]: over every item when ``neg`` is
        None, else over the target and the shared negatives ``neg`` [C] (a negative equal to a row's
        target is masked out of that row). ``ce`` is logged per epoch by :func:`ungerlib.model.train.fit`."""
        q, items = self.query(self.hidden(hist)), self.keys()
        if neg is None:
            ce = F.cross_entropy(q @ items.T, target)
        else:
            pos = (q * items[target]).sum(1, keepdim=True)  # [B, 1]
            negs = (q @ items[neg].T).masked_fill(neg[None, :] == target[:, None], float("-inf"))  # [B, C]
            ce = F.cross_entropy(torch.cat([pos, negs], 1), torch.zeros(len(target), dtype=torch.long))
        return {"loss": ce, "ce": ce.detach()}

    def scores(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, L] histories -> [B, n_items] scores of every item as the next one."""
        return self.query(self.hidden(hist)) @ self.keys().T


def _causal(keep: torch.Tensor) -> torch.Tensor:
    """[B, L] real positions -> [B, L, L] bool, True where query i may read key j: j <= i and j real."""
    L = keep.shape[1]
    return torch.ones(L, L, dtype=torch.bool, device=keep.device).tril() & keep[:, None, :]


# --------------------------------------------------------------------------- SASRec

class SASRecBlock(nn.Module):
    """``x + Dropout(SA(LN(x)))`` then ``x + Dropout(FFN(LN(x)))``, padded positions zeroed."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop, self.heads = nn.Dropout(dropout), heads

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        allowed = _causal(keep) | torch.eye(L, dtype=torch.bool, device=x.device)  # a padded query reads itself (no empty row)
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=~allowed.repeat_interleave(self.heads, 0), need_weights=False)
        x = x + self.drop(a)
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x * keep[..., None]


class SASRec(NextItemModel):
    """SASRec: ``blocks`` :class:`SASRecBlock` and a final LayerNorm; dot-product output."""

    def __init__(self, n_items: int, max_len: int, dim: int, blocks: int, heads: int, dropout: float):
        super().__init__(n_items, max_len, dim, dropout)
        self.layers = nn.ModuleList(SASRecBlock(dim, heads, dropout) for _ in range(blocks))
        self.ln = nn.LayerNorm(dim)

    def blocks(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, keep)
        return self.ln(x)


# --------------------------------------------------------------------------- HSTU

def relative_buckets(n: int, n_buckets: int) -> torch.Tensor:
    """[n, n] int64: the bucket of the distance ``i - j`` from query ``i`` back to key ``j`` (0 where
    j >= i; the causal mask hides j > i). Distances below ``n_buckets // 2`` get a bucket each; longer
    ones share log-spaced buckets up to ``n - 1`` (T5's scheme, one-sided)."""
    d = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).clamp(min=0)
    exact = max(1, n_buckets // 2)
    if n <= exact:
        return d
    far = exact + (torch.log(d.clamp(min=1) / exact) / math.log(n / exact) * (n_buckets - exact)).long()
    return torch.where(d < exact, d, far.clamp(max=n_buckets - 1))


class HSTULayer(nn.Module):
    """One HSTU layer, Eq. 1-3 (module docstring): ``f1`` [d -> 4d] (U, V, Q, K; ``heads`` heads of d /
    heads each), the bias ``rab`` [n_buckets] shared by the heads, ``Norm`` a LayerNorm over the
    concatenated heads, ``f2`` [d -> d]. ``forward(x [B, L, d], keep [B, L]) -> [B, L, d]``."""

    def __init__(self, dim: int, heads: int, dropout: float, max_len: int, n_buckets: int):
        super().__init__()
        self.heads = heads
        self.f1 = nn.Linear(dim, 4 * dim, bias=False)
        self.f2 = nn.Linear(dim, dim)
        self.rab = nn.Parameter(torch.zeros(n_buckets))
        self.register_buffer("bucket", relative_buckets(max_len, n_buckets), persistent=False)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.f1.weight, std=0.02)
        nn.init.normal_(self.rab, std=0.02)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        u, v, q, k = F.silu(self.f1(F.layer_norm(x, (d,)))).chunk(4, dim=-1)  # Eq. 1
        v, q, k = (t.view(B, L, self.heads, -1).transpose(1, 2) for t in (v, q, k))  # [B, H, L, d / H]
        rab = self.rab[self.bucket[-L:, -L:]]  # [L, L]
        a = F.silu(q @ k.transpose(-1, -2) + rab) / L * _causal(keep)[:, None]  # Eq. 2, [B, H, L, L]
        av = (a @ v).transpose(1, 2).reshape(B, L, d)
        y = self.f2(self.drop(F.layer_norm(av, (d,)) * u))  # Eq. 3
        return (x + y) * keep[..., None]


class HSTU(NextItemModel):
    """HSTU: ``blocks`` :class:`HSTULayer`; cosine / ``temperature`` output."""

    def __init__(self, n_items: int, max_len: int, dim: int, blocks: int, heads: int, dropout: float,
                 rab_buckets: int, temperature: float):
        super().__init__(n_items, max_len, dim, dropout)
        self.layers = nn.ModuleList(HSTULayer(dim, heads, dropout, max_len, rab_buckets) for _ in range(blocks))
        self.temperature = temperature

    def blocks(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, keep)
        return x

    def query(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(h, dim=-1, eps=1e-6) / self.temperature

    def keys(self) -> torch.Tensor:
        return F.normalize(self.item.weight[:self.n_items], dim=-1, eps=1e-6)


def build(name: str, s: dict[str, Any], n_items: int, max_len: int) -> NextItemModel:
    """The untrained model ``name`` with settings ``s`` (:func:`settings`)."""
    common = dict(n_items=n_items, max_len=max_len, dim=s["dim"], blocks=s["blocks"], heads=s["heads"],
                  dropout=s["dropout"])
    if name == "SASRec":
        return SASRec(**common)
    if name == "HSTU":
        return HSTU(**common, rab_buckets=s["rab_buckets"], temperature=s["temperature"])
    raise BaselineError(f"unknown sequential model {name!r}; known: {MODELS}")


# --------------------------------------------------------------------------- training and ranking

def fit_and_rank(name: str, params: dict[str, Any], splits: Splits, seed: int, work_dir: Path | None = None,
                 after_epoch: Callable[[int], None] | None = None) -> Trained:
    """Train ``name`` (SASRec or HSTU) with ``params`` (:func:`settings`) on the training split with
    :func:`ungerlib.model.train.fit` (Adam at a constant learning rate, validation NDCG@20 on our
    validation split every epoch, best state kept, early stopping after ``patience`` epochs without
    improvement, a checkpoint per epoch in ``work_dir`` that a killed run resumes from; ``after_epoch``
    is called after each epoch), then rank valid and test. Returns the four rankings, the per-epoch
    history and notes."""
    from ungerlib.model.metrics import rank_metrics
    from ungerlib.model.train import Schedule, fit, shuffled_batches

    s = settings(name, params)
    torch.manual_seed(seed)
    model = build(name, s, splits.n_items, splits.max_len)
    hist, target = torch.from_numpy(splits.train.history), torch.from_numpy(splits.train.target)
    size, n_neg = int(s["batch_size"]), int(s["n_negatives"])

    def loss_fn(idx: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        neg = torch.from_numpy(rng.integers(splits.n_items, size=n_neg)) if n_neg else None
        return model.loss(hist[idx], target[idx], neg)

    def score(h: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.scores(torch.from_numpy(h)).numpy().astype(np.float64)

    def validate() -> dict[str, float]:
        ranked, _ = rank_examples(score, splits.valid)
        return rank_metrics(ranked, splits.valid.target)

    sched = Schedule(epochs=int(s["epochs"]), batch_size=size, lr=float(s["lr"]), warmup_steps=0, lr_decay="none",
                     weight_decay=0.0, patience=int(s["patience"]), clip_norm=0.0)
    res = fit(model, loss_fn, lambda rng: shuffled_batches(len(target), size, rng), validate, SELECT, sched, seed,
              work_dir, name, progress=False, after_epoch=after_epoch)
    info = {"loss": LOSS_NOTES[name], "settings": copy.deepcopy(s), **res.notes(),
            "parameters": sum(p.numel() for p in model.parameters())}
    return rank_splits(score, splits), res.history, info
