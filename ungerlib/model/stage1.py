"""Stage I: DIN + modality adaptation layer + cross-modality alignment (paper 3.3, Eq. 2-5).

* DIN (Zhou et al. 2018) encodes the last <= 20 items into a *target-aware* interest vector:
  every candidate item t attends over the history with DIN's local activation unit
  ``a_j = MLP([h_j, t, h_j - t, h_j * t])`` (no softmax, as in DIN), ``u_t = sum_j a_j h_j``.
  The score is ``<W u_t, e_t> + b_t``: a dot product with the candidate's collaborative
  embedding E_C, so E_C lives in a space where inner products mean "comes next" -- the
  space hierarchical k-means later cuts. (DIN's original final MLP tower would make E_C's
  geometry arbitrary.) The activation unit's first layer is split as
  ``A h + B t + C (h * t)`` so only the last term is computed per (history item, candidate).
* L_seq (Eq. 4): softmax over the target and ``n_negatives`` uniformly sampled items shared by
  the batch (with the usual log-Q correction a uniform sampler does not need), or the full
  item set when ``n_negatives = 0``.
* MAL (Eq. 2): ``E_T = AdaLN(W E_S + b)``. AdaLN as in DiT: a LayerNorm without affine whose
  scale and shift are computed from its own input, ``(1 + g(x)) * LN(x) + s(x)`` with g, s
  linear maps initialised to zero, so training starts at plain LN and learns how much
  per-item modulation the semantic signal needs. ``norm="layernorm"`` is the plain
  affine LayerNorm for comparison.
* L_align (Eq. 3): in-batch InfoNCE from each target's E_C to the batch targets' E_T.
* L = L_seq + alpha L_align (Eq. 5).

Which vector is "integrated" (quantised into unicodes) the paper leaves open; see
:data:`INTEGRATED`. Model selection uses the validation split only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ungerlib.infra import artefacts, config as C, distributed
from ungerlib.infra.distributed import Part
from ungerlib.model.data import PAD, Examples, Splits, get_splits
from ungerlib.model.metrics import rank_metrics
from ungerlib.infra.store import atomic_write_json

# "collaborative": E_C trained jointly with CKA; "adapted": E_T = MAL(E_S);
# "sum": l2(E_C) + l2(E_T); "concat": [l2(E_C), l2(E_T)].
INTEGRATED = ("collaborative", "adapted", "sum", "concat")
VARIANTS = ("ours", "collab", "semantic", "concat")


class AdaLN(nn.Module):
    """Adaptive LayerNorm (DiT-style, conditioned on its input): [.., d] -> [.., d]."""

    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.mod = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mod(x).chunk(2, dim=-1)
        return (1 + scale) * self.norm(x) + shift


class MAL(nn.Module):
    """Modality adaptation layer, Eq. 2: [n, d_s] -> [n, d]."""

    def __init__(self, d_sem: int, d: int, norm: str = "adaln"):
        super().__init__()
        self.proj = nn.Linear(d_sem, d)
        if norm not in ("adaln", "layernorm"):
            raise C.ConfigError(f"stage1.norm must be 'adaln' or 'layernorm', got {norm!r}")
        self.norm = AdaLN(d) if norm == "adaln" else nn.LayerNorm(d)

    def forward(self, e_s: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(e_s))


class DIN(nn.Module):
    """DIN with a recency embedding and a dot-product head. Items 0..n-1; index n is padding.

    With ``semantic`` [n, d_s] (frozen E_S) it also holds the modality adaptation layer ``mal``
    and :meth:`loss` is the Stage I objective, Eq. 5: ``L_seq + alpha L_align``.
    """

    def __init__(self, n_items: int, d: int, attn_hidden: int, dropout: float, max_len: int = 20,
                 semantic: np.ndarray | None = None, s1: C.Stage1Config | None = None):
        super().__init__()
        self.n_items = n_items
        self.s1 = s1 or C.Stage1Config(dim=d)
        self.emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        nn.init.normal_(self.emb.weight, std=0.05)
        with torch.no_grad():
            self.emb.weight[n_items].zero_()
        self.pos = nn.Parameter(torch.zeros(max_len, d))  # recency: slot -1 is the latest item
        self.att_h = nn.Linear(d, attn_hidden)  # A h  (absorbs the h part of h - t)
        self.att_t = nn.Linear(d, attn_hidden, bias=False)  # B t (absorbs the t part of h - t)
        self.att_ht = nn.Parameter(torch.randn(attn_hidden, d) / math.sqrt(d))  # C (h * t)
        self.att_act, self.att_w = nn.PReLU(), nn.Linear(attn_hidden, 1)  # activation unit output
        self.out = nn.Linear(d, d)
        self.bias = nn.Parameter(torch.zeros(n_items))
        self.drop = nn.Dropout(dropout)
        self.mal = None  # created last: DIN's own parameters draw the same random numbers with or without it
        if semantic is not None:
            self.register_buffer("e_s", torch.from_numpy(np.asarray(semantic, dtype=np.float32)), persistent=False)
            self.mal = MAL(semantic.shape[1], d, self.s1.norm)

    def encode(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hist [B, L] item ids (padding = n) -> (h [B, L, d], mask [B, L], rows [B, L*(H+1), d])."""
        L = hist.shape[1]
        h = self.drop(self.emb(hist) + self.pos[-L:])
        rows = torch.cat([(h.unsqueeze(2) * self.att_ht).flatten(1, 2),  # h_l * C_k, k < H
                          F.linear(h, self.out.weight)], 1)  # W h_l
        return h, (hist != self.n_items).float(), rows

    def score(self, enc: tuple[torch.Tensor, torch.Tensor, torch.Tensor], cand: torch.Tensor) -> torch.Tensor:
        """Scores [B, C] of candidates ``cand`` ([B, C] per user, or [C] shared) for :meth:`encode`'s output.

        ``score = <W u_t + b, e_t> + bias_t`` with ``u_t = sum_l a_l h_l / |h|`` is computed as
        ``sum_l a_l <W h_l, e_t> / |h| + <b, e_t>``: one GEMM against the candidates yields both the
        attention pairs and the readout, and no [B, C, d] tensor is formed.
        """
        h, mask, rows = enc
        B, L, _ = h.shape
        H = self.att_h.out_features
        t = self.emb(cand)  # [B, C, d] or [C, d]
        if t.dim() == 2:  # shared candidates: one large GEMM
            prod = (rows.reshape(-1, rows.shape[-1]) @ t.T).view(B, L * (H + 1), -1)  # [B, L*(H+1), C]
            tt, tb = self.att_t(t).T[None, None], (t @ self.out.bias)[None]  # [1, 1, H, C], [1, C]
        else:
            prod = torch.bmm(rows, t.transpose(1, 2))
            tt, tb = self.att_t(t).transpose(1, 2)[:, None], t @ self.out.bias  # [B, 1, H, C], [B, C]
        pair = prod[:, :L * H].view(B, L, H, -1)  # [B, L, H, C]
        readout = prod[:, L * H:]  # [B, L, C]: <W h_l, e_t>
        z = self.att_act(pair + self.att_h(h).unsqueeze(-1) + tt)  # [B, L, H, C]
        a = (torch.einsum("blhc,h->blc", z, self.att_w.weight[0]) + self.att_w.bias) * mask.unsqueeze(-1)
        return (a * readout).sum(1) / mask.sum(1, keepdim=True).clamp(min=1) + tb + self.bias[cand]

    def interest(self, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """hist [B, L] item ids (padding = n), cand [B, C] or shared [C] -> scores [B, C]."""
        return self.score(self.encode(hist), cand)

    def seq_loss(self, hist: torch.Tensor, tgt: torch.Tensor, neg: torch.Tensor | None) -> torch.Tensor:
        """L_seq (Eq. 4) for hist [B, L], targets [B]: softmax over the target and the shared negatives
        ``neg`` [S] (accidental hits masked), or over all items when ``neg`` is None."""
        if neg is None:
            return F.cross_entropy(self.interest(hist, torch.arange(self.n_items, device=hist.device)), tgt)
        enc = self.encode(hist)
        neg_logits = self.score(enc, neg).masked_fill(neg[None, :] == tgt[:, None], -1e9)
        logits = torch.cat([self.score(enc, tgt[:, None]), neg_logits], 1)
        return F.cross_entropy(logits, torch.zeros(len(tgt), dtype=torch.long, device=hist.device))

    def align_loss(self, items: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """L_align (Eq. 3): in-batch InfoNCE from E_C of ``items`` [U] (distinct) to their MAL(E_S)."""
        ec, et = self.emb(items), self.mal(self.e_s[items])
        ec = ec.detach() if detach else ec
        if self.s1.sim == "cosine":
            ec, et = F.normalize(ec, dim=-1), F.normalize(et, dim=-1)
        return F.cross_entropy(ec @ et.T / self.s1.tau, torch.arange(len(items), device=items.device))

    def loss(self, hist: torch.Tensor, tgt: torch.Tensor, neg: torch.Tensor | None,
             part: Part | None = None, batch_targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eq. 5 over a batch: ``{"loss", "seq", "align"}``. L_align runs over the batch's distinct
        targets. With alpha = 0 (DIN alone) it still trains the MAL as a probe on a detached E_C, so
        cross-modal retrieval is measured the same way with and without CKA.

        Under DDP ``hist`` [b, L] and ``tgt`` [b] are ``part``, one rank's part of a global batch whose
        targets are ``batch_targets`` [B]: L_seq is weighted by the part's share, and L_align, whose
        negatives are the whole batch, runs over the global batch's distinct targets on every rank,
        weighted by ``part.replicated``; summed over the ranks, the terms are the global batch's."""
        seq = self.seq_loss(hist, tgt, neg)
        if part is not None:
            seq = seq * part.share(len(tgt), len(batch_targets))
        if self.mal is None:
            return {"loss": seq, "seq": seq}
        alpha = self.s1.effective_alpha()
        align = self.align_loss(torch.unique(tgt if batch_targets is None else batch_targets), detach=alpha == 0)
        if part is not None:
            align = align * part.replicated
        return {"loss": seq + (alpha if alpha > 0 else 1.0) * align, "seq": seq, "align": align}


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _pad(hist: np.ndarray, n_items: int) -> torch.Tensor:
    return torch.from_numpy(np.where(hist == PAD, n_items, hist)).to(DEVICE)


@dataclass
class Stage1Result:
    collaborative: np.ndarray  # [n, d] E_C
    adapted: np.ndarray | None  # [n, d] E_T = MAL(E_S), None when no MAL is trained
    integrated: np.ndarray  # [n, d'] the vector quantised into unicodes
    history: list[dict[str, float]] = field(default_factory=list)
    valid_metrics: dict[str, float] = field(default_factory=dict)
    crossmodal_top1: float = float("nan")


def crossmodal_top1(collab: np.ndarray, adapted: np.ndarray) -> float:
    """Share of items whose most cosine-similar adapted-semantic vector is their own."""
    a = collab / np.linalg.norm(collab, axis=1, keepdims=True).clip(1e-12)
    b = adapted / np.linalg.norm(adapted, axis=1, keepdims=True).clip(1e-12)
    hits = 0
    for s in range(0, len(a), 2048):
        hits += int((np.argmax(a[s:s + 2048] @ b.T, 1) == np.arange(s, min(s + 2048, len(a)))).sum())
    return hits / len(a)


@torch.no_grad()
def evaluate_din(model: DIN, ex: Examples, ks=(10, 20), batch: int = 64) -> dict[str, float]:
    """Full-ranking Recall/NDCG of DIN over all items (no exclusion)."""
    model.eval()
    n, top = model.n_items, []
    cand = torch.arange(n, device=DEVICE)
    for s in range(0, len(ex), batch):
        scores = model.interest(_pad(ex.history[s:s + batch], n), cand)
        top.append(scores.topk(max(ks), dim=1).indices.cpu().numpy())
    return rank_metrics(np.concatenate(top), ex.target, ks)


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def integrate(collab: np.ndarray, adapted: np.ndarray | None, how: str) -> np.ndarray:
    if how not in INTEGRATED:
        raise C.ConfigError(f"stage1.integrated must be one of {INTEGRATED}, got {how!r}")
    if adapted is None or how == "collaborative":
        return collab
    if how == "adapted":
        return adapted
    if how == "sum":
        return _l2(collab) + _l2(adapted)
    return np.concatenate([_l2(collab), _l2(adapted)], axis=1)


def _check_semantic(semantic: np.ndarray, n_items: int) -> None:
    if semantic.ndim != 2 or semantic.shape[0] != n_items:
        raise ValueError(f"semantic embeddings have shape {semantic.shape}; expected [{n_items}, d] "
                         "(one row per item)")
    if not np.isfinite(semantic).all():
        bad = np.flatnonzero(~np.isfinite(semantic).all(1))
        raise ValueError(f"semantic embeddings contain NaN/inf in {len(bad)} row(s), first: {bad[:5].tolist()}")


def train_stage1(splits: Splits, semantic: np.ndarray, cfg: C.RunConfig, work_dir: Path | None = None,
                 progress: bool = True, after_epoch: Any = None) -> Stage1Result:
    """Train DIN (+ MAL, CKA) on ``splits.train`` with :func:`ungerlib.model.train.fit`; select the epoch on
    validation Recall@20 (a fixed sample of ``stage1.eval_users`` validation users)."""
    from ungerlib.model.train import Schedule, fit, shuffled_batches

    s1, n = cfg.stage1, splits.n_items
    if s1.variant not in VARIANTS:
        raise C.ConfigError(f"stage1.variant must be one of {VARIANTS}, got {s1.variant!r}")
    if s1.integrated not in INTEGRATED:
        raise C.ConfigError(f"stage1.integrated must be one of {INTEGRATED}, got {s1.integrated!r}")
    _check_semantic(semantic, n)
    if s1.variant == "semantic":  # frozen E_S, nothing to train
        return Stage1Result(semantic, None, semantic.astype(np.float32))
    torch.manual_seed(cfg.seed)
    model = DIN(n, s1.dim, s1.attn_hidden, s1.dropout, splits.max_len, semantic, s1).to(DEVICE)
    eval_idx = np.arange(len(splits.valid))
    if s1.eval_users and s1.eval_users < len(eval_idx):
        eval_idx = np.sort(np.random.default_rng(cfg.seed).choice(eval_idx, s1.eval_users, replace=False))
    valid, tr = splits.valid.subset(eval_idx), splits.train

    def loss_fn(idx: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        neg = torch.from_numpy(rng.integers(n, size=s1.n_negatives)).to(DEVICE) if s1.n_negatives else None
        tgt = lambda rows: torch.from_numpy(tr.target[rows]).to(DEVICE)  # noqa: E731
        if distributed.current().world == 1:
            return model.loss(_pad(tr.history[idx], n), tgt(idx), neg)
        part = distributed.part(idx)  # under torchrun: this rank's share of the global batch
        return model.loss(_pad(tr.history[part.rows], n), tgt(part.rows), neg, part, tgt(idx))

    res = fit(model, loss_fn, lambda rng: shuffled_batches(len(tr), s1.batch_size, rng),
              lambda: evaluate_din(model, valid), "recall@20", Schedule.of(s1), cfg.seed, work_dir,
              "stage1", progress, after_epoch, ddp=True)
    with torch.no_grad():
        collab = model.emb.weight[:n].cpu().numpy().copy()
        adapted = model.mal(model.e_s).cpu().numpy()
    best = next((h for h in res.history if h["epoch"] == res.best_epoch), {})
    out = Stage1Result(collab, adapted, np.zeros(0), res.history,
                       {k[6:]: v for k, v in best.items() if k.startswith("valid_") and not k.endswith("_s")}
                       | {"best_epoch": res.best_epoch})
    out.integrated = integrated_for(cfg, collab, adapted, semantic)
    out.crossmodal_top1 = crossmodal_top1(collab, adapted)
    return out


def integrated_for(cfg: C.RunConfig, collab: np.ndarray, adapted: np.ndarray | None,
                   semantic: np.ndarray | None = None) -> np.ndarray:
    """The vector quantised into unicodes for ``cfg``: ``stage1.integrated`` of E_C and MAL(E_S); E_C
    when alpha = 0; for the Table 5 rows ``semantic`` (E_S) and ``concat`` (paper 4.3: E_S reduced
    by PCA to the collaborative size, l2-normalised and concatenated with E_C) it needs ``semantic``."""
    s1 = cfg.stage1
    if s1.variant in ("semantic", "concat") and semantic is None:
        raise ValueError(f"stage1.variant={s1.variant!r} needs the semantic embeddings")
    if s1.variant == "semantic":
        return semantic.astype(np.float32)
    if s1.variant == "concat":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(collab.shape[1], semantic.shape[1]), random_state=cfg.seed).fit_transform(semantic)
        return np.concatenate([_l2(collab), _l2(pca)], axis=1).astype(np.float32)
    how = "collaborative" if s1.effective_alpha() == 0 else s1.integrated
    return integrate(collab, adapted, how).astype(np.float32)


def stage1_embeddings(cfg: C.RunConfig, force: bool = False, progress: bool = True) -> Stage1Result:
    """Cached :func:`train_stage1` on ``cfg``'s data set and semantic embeddings.

    The artefact stores E_C and MAL(E_S); the integrated vector is derived on load
    (:func:`integrated_for`), so the cache key (:func:`ungerlib.artefacts.key`) leaves out
    ``stage1.integrated`` and treats the two DIN-alone rows (``collab``, ``concat``) as one run:
    comparing integrated choices or Table 5 rows never retrains (codes, downstream, are keyed by them).
    """
    def build(out: Path, work: Path) -> dict[str, Any]:
        from ungerlib.model.semantic import semantic_embeddings

        _, splits = get_splits(cfg)
        res = train_stage1(splits, semantic_embeddings(cfg), cfg, work, progress)
        for name in ("collaborative", "adapted"):
            if getattr(res, name) is not None:
                np.save(out / f"{name}.npy", getattr(res, name))
        meta = {"history": res.history, "valid_metrics": res.valid_metrics, "crossmodal_top1": res.crossmodal_top1}
        atomic_write_json(out / "result.json", meta)
        return {"valid_metrics": res.valid_metrics}

    art = artefacts.cached("stage1", cfg, build, force=force)
    collab = art.npy("collaborative")
    adapted = art.npy("adapted") if (art.path / "adapted.npy").exists() else None
    semantic = None
    if cfg.stage1.variant in ("semantic", "concat"):
        from ungerlib.model.semantic import semantic_embeddings

        semantic = semantic_embeddings(cfg)
    meta = art.json("result")
    return Stage1Result(collab, adapted, integrated_for(cfg, collab, adapted, semantic), meta["history"],
                        meta["valid_metrics"], meta["crossmodal_top1"])
