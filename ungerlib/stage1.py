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
from tqdm.auto import tqdm

from . import config as C
from .data import PAD, Examples, Splits, get_splits
from .metrics import rank_metrics
from .store import atomic_torch_save, cached

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
    """DIN with a recency embedding and a dot-product head. Items 0..n-1; index n is padding."""

    def __init__(self, n_items: int, d: int, attn_hidden: int, dropout: float, max_len: int = 20):
        super().__init__()
        self.n_items = n_items
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
    model.train()
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
                 progress: bool = True) -> Stage1Result:
    """Train DIN (+ MAL, CKA) on ``splits.train``; select the epoch on validation Recall@20."""
    s1, n = cfg.stage1, splits.n_items
    if s1.variant not in VARIANTS:
        raise C.ConfigError(f"stage1.variant must be one of {VARIANTS}, got {s1.variant!r}")
    if s1.integrated not in INTEGRATED:
        raise C.ConfigError(f"stage1.integrated must be one of {INTEGRATED}, got {s1.integrated!r}")
    _check_semantic(semantic, n)
    if s1.variant == "semantic":  # frozen E_S, nothing to train
        return Stage1Result(semantic, None, semantic.astype(np.float32))
    alpha = _alpha(s1)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = DIN(n, s1.dim, s1.attn_hidden, s1.dropout, splits.max_len).to(DEVICE)
    mal = MAL(semantic.shape[1], s1.dim, s1.norm).to(DEVICE)
    e_s = torch.from_numpy(semantic.astype(np.float32)).to(DEVICE)
    params = list(model.parameters()) + list(mal.parameters())
    opt = torch.optim.Adam(params, lr=s1.lr, weight_decay=s1.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, s1.warmup_steps)))
    eval_idx = np.arange(len(splits.valid))
    if s1.eval_users and s1.eval_users < len(eval_idx):
        eval_idx = np.sort(np.random.default_rng(cfg.seed).choice(eval_idx, s1.eval_users, replace=False))
    valid = splits.valid.subset(eval_idx)
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad": 0, "history": [], "best_state": None}
    ckpt = work_dir / "stage1.pt" if work_dir else None
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=DEVICE)
        model.load_state_dict(state["model"]), mal.load_state_dict(state["mal"])
        opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
    tr = splits.train
    for epoch in range(state["epoch"], s1.epochs):
        if state["bad"] >= s1.patience:
            break
        order = rng.permutation(len(tr))
        sums = {"loss_seq": 0.0, "loss_align": 0.0}
        bar = tqdm(range(0, len(order), s1.batch_size), desc=f"stage1 epoch {epoch + 1}/{s1.epochs}",
                   disable=not progress, leave=False)
        for s in bar:
            idx = order[s:s + s1.batch_size]
            hist, tgt = _pad(tr.history[idx], n), torch.from_numpy(tr.target[idx]).to(DEVICE)
            if s1.n_negatives:  # target + shared uniform negatives; mask accidental hits
                neg = torch.from_numpy(rng.integers(n, size=s1.n_negatives)).to(DEVICE)
                enc = model.encode(hist)
                neg_logits = model.score(enc, neg).masked_fill(neg[None, :] == tgt[:, None], -1e9)
                logits = torch.cat([model.score(enc, tgt[:, None]), neg_logits], 1)
                loss_seq = F.cross_entropy(logits, torch.zeros(len(idx), dtype=torch.long, device=DEVICE))
            else:
                loss_seq = F.cross_entropy(model.interest(hist, torch.arange(n, device=DEVICE)), tgt)
            # Eq. 3 over the batch's unique targets. With alpha = 0 the same loss trains only a
            # probe MAL (E_C detached), so cross-modal retrieval is comparable with and without CKA.
            items = torch.unique(tgt)
            ec, et = model.emb(items), mal(e_s[items])
            ec = ec if alpha > 0 else ec.detach()
            if s1.sim == "cosine":
                ec, et = F.normalize(ec, dim=-1), F.normalize(et, dim=-1)
            loss_align = F.cross_entropy(ec @ et.T / s1.tau, torch.arange(len(items), device=DEVICE))
            loss = loss_seq + (alpha if alpha > 0 else 1.0) * loss_align
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums["loss_seq"] += loss_seq.item() * len(idx)
            sums["loss_align"] += loss_align.item() * len(idx)
            bar.set_postfix(seq=f"{loss_seq.item():.3f}", align=f"{loss_align.item():.3f}")
        rec = {"epoch": epoch + 1, **{k: v / len(order) for k, v in sums.items()}}
        rec.update({f"valid_{k}": v for k, v in evaluate_din(model, valid).items()})
        state["history"].append(rec)
        if progress:
            print(f"[stage1] epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if k != "epoch"))
        if rec["valid_recall@20"] > state["best"]:
            state.update(best=rec["valid_recall@20"], best_epoch=epoch + 1, bad=0,
                         best_state=({k: v.clone() for k, v in model.state_dict().items()},
                                     {k: v.clone() for k, v in mal.state_dict().items()}))
        else:
            state["bad"] += 1
        state["epoch"] = epoch + 1
        if ckpt:
            atomic_torch_save({**state, "model": model.state_dict(), "mal": mal.state_dict(), "opt": opt.state_dict(),
                               "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                               "torch_rng": torch.get_rng_state()}, ckpt)
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"][0]), mal.load_state_dict(state["best_state"][1])
    model.eval(), mal.eval()
    with torch.no_grad():
        collab = model.emb.weight[:n].cpu().numpy().copy()
        adapted = mal(e_s).cpu().numpy()
    best = next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), {})
    res = Stage1Result(collab, adapted, np.zeros(0), state["history"],
                       {k[6:]: v for k, v in best.items() if k.startswith("valid_")} | {"best_epoch": state["best_epoch"]})
    if s1.variant == "concat":  # paper 4.3: PCA of E_S to the collaborative size, concatenated
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(s1.dim, semantic.shape[1]), random_state=cfg.seed).fit_transform(semantic)
        res.integrated = np.concatenate([_l2(collab), _l2(pca)], axis=1).astype(np.float32)
    else:
        res.integrated = integrated_for(cfg, collab, adapted)
    res.crossmodal_top1 = crossmodal_top1(collab, adapted)
    return res


def _alpha(s1: C.Stage1Config) -> float:
    """The weight of L_align actually used: 0 for the DIN-alone variants (collab, concat)."""
    return 0.0 if s1.variant in ("collab", "concat") else s1.alpha


def integrated_for(cfg: C.RunConfig, collab: np.ndarray, adapted: np.ndarray | None) -> np.ndarray:
    """The vector quantised into unicodes for ``cfg`` (``stage1.integrated``; E_C when alpha = 0)."""
    how = "collaborative" if _alpha(cfg.stage1) == 0 else cfg.stage1.integrated
    return integrate(collab, adapted, how).astype(np.float32)


def stage1_embeddings(cfg: C.RunConfig, force: bool = False, progress: bool = True) -> Stage1Result:
    """Cached :func:`train_stage1` on ``cfg``'s data set and semantic embeddings.

    The cache key leaves out ``stage1.integrated``: the choice is applied to the stored E_C and E_T
    on load, so comparing the choices never retrains (codes, downstream, are keyed by it).
    """
    names = ("collaborative", "adapted", "integrated")

    def build(out: Path, work: Path) -> dict[str, Any]:
        from .semantic import semantic_embeddings

        _, splits = get_splits(cfg)
        res = train_stage1(splits, semantic_embeddings(cfg), cfg, work, progress)
        for name in names:
            if getattr(res, name) is not None and (name != "integrated" or cfg.stage1.variant == "concat"):
                np.save(out / f"{name}.npy", getattr(res, name))
        meta = {"history": res.history, "valid_metrics": res.valid_metrics, "crossmodal_top1": res.crossmodal_top1}
        (out / "result.json").write_text(__import__("json").dumps(meta, indent=1))
        return {"valid_metrics": res.valid_metrics}

    key = C.upstream(cfg, "stage1")
    key["stage1"] = {k: v for k, v in key["stage1"].items() if k != "integrated"}
    art = cached("stage1", key, build, force=force)
    arrays = {n: (art.npy(n) if (art.path / f"{n}.npy").exists() else None) for n in names}
    if arrays["integrated"] is None:  # concat stores its PCA-based vector; the others are derived
        arrays["integrated"] = integrated_for(cfg, arrays["collaborative"], arrays["adapted"])
    meta = art.json("result")
    return Stage1Result(arrays["collaborative"], arrays["adapted"], arrays["integrated"], meta["history"],
                        meta["valid_metrics"], meta["crossmodal_top1"])
