"""DiscRec-style Stage II encoder: a variant of UNGER beyond the paper (Table 3, "beyond the paper").

DiscRec (public code: Ten-Mao/DiscRec) lets a generative recommender keep item-level collaborative
signal next to the semantic code tokens: each item's code tokens get **item-level position
embeddings** (which level of its code a token is), pass through a **collaborative branch** whose
attention is confined to the item's own tokens, and a **gate** mixes the semantic and collaborative
branches per token (``softmax_b(<branch_b, w_b>)``).

UNGER's encoder reads one token per history item, the sum of its code-token embeddings (the
semantic branch here). :class:`DiscRecUNGER` keeps that and adds, per item, the collaborative branch
(code tokens + level positions -> LayerNorm -> self-attention over the item's tokens -> feed-forward,
mean over the item's tokens) and DiscRec's gate between the two; decoder, IKD and beam search are
UNGER's. It is trained by :func:`ungerlib.model.stage2.train_stage2` through its ``model_cls`` hook;
:func:`run_discrec` / :func:`evaluate_discrec` cache it like :func:`ungerlib.model.stage2.run_stage2` /
``evaluate_stage2``, under their own artefact kinds (:mod:`ungerlib.artefacts`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ungerlib.infra import artefacts, config as C
from ungerlib.model.codes import CodeTable
from ungerlib.model.rankings import save_rankings
from ungerlib.model.stage2 import DEVICE, UNGER, _inputs, build_model, rows, train_stage2
from ungerlib.infra.store import atomic_torch_save, atomic_write_json


class DiscRecUNGER(UNGER):
    """UNGER whose encoder item vector is DiscRec's gated mix of a semantic branch (the sum of the
    item's code-token embeddings, as UNGER) and a collaborative branch (see the module docstring)."""

    def __init__(self, table: CodeTable, d_int: int, s2: C.Stage2Config, max_hist: int):
        if s2.history_tokens == "item":
            raise ValueError("DiscRec mixes code tokens: stage2.history_tokens must be 'codes' or 'both', not 'item'")
        super().__init__(table, d_int, s2, max_hist)
        d = s2.d_model
        self.code_pos = nn.Parameter(torch.randn(self.Lc, d) * 0.02)  # item-level position of a code token
        self.co_ln1, self.co_ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.co_attn = nn.MultiheadAttention(d, s2.n_heads, dropout=s2.dropout, batch_first=True)
        self.co_ffn = nn.Sequential(nn.Linear(d, s2.d_ff), nn.ReLU(), nn.Dropout(s2.dropout), nn.Linear(s2.d_ff, d))
        self.gate = nn.Parameter(torch.zeros(2, d))  # DiscRec's gated_w; zeros: both branches weigh 1/2 at start

    def branches(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(semantic [M, d], collaborative [M, d]) for item ids [M]."""
        c = self.codes[items]  # [M, Lc]
        valid = c >= 0
        tok = torch.where(valid, c + 1 + torch.arange(self.Lc, device=c.device) * self.K, 0)
        e = self.enc_code(tok)  # [M, Lc, d]
        sem = e.sum(1)
        x = self.co_ln1(e + self.code_pos)
        a, _ = self.co_attn(x, x, x, key_padding_mask=~valid, need_weights=False)
        x = x + a
        x = x + self.co_ffn(self.co_ln2(x))
        co = (x * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        return sem, co

    def gate_weights(self, sem: torch.Tensor, co: torch.Tensor) -> torch.Tensor:
        """[M, 2]: softmax over the two branches of <branch, w_branch> (DiscRec's gate)."""
        return torch.softmax(torch.stack([(sem * self.gate[0]).sum(-1), (co * self.gate[1]).sum(-1)], -1), -1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        shape = items.shape
        flat = items.reshape(-1)
        sem, co = self.branches(flat)
        w = self.gate_weights(sem, co)
        x = w[:, :1] * sem + w[:, 1:] * co
        if self.s2.history_tokens == "both":
            x = x + (self.node_vectors(self.leaf[flat]) if self.node_tokens else rows(self.item_emb, flat))
        return x.reshape(*shape, -1)


def run_discrec(cfg: C.RunConfig, force: bool = False, progress: bool = True) -> tuple[DiscRecUNGER, list[dict]]:
    """Cached Stage II training of :class:`DiscRecUNGER` (``stage2.train_stage2`` with ``model_cls``)."""
    splits, table, emb = _inputs(cfg)

    def build(out: Path, work: Path) -> dict[str, Any]:
        model, hist = train_stage2(splits, table, emb, cfg, work, progress, model_cls=DiscRecUNGER)
        atomic_torch_save(model.state_dict(), out / "model.pt")
        atomic_write_json(out / "history.json", hist)
        return {"best_epoch": max(hist, key=lambda h: h["valid_ndcg@20"])["epoch"]}

    art = artefacts.cached("stage2_discrec", cfg, build, force=force)
    model = build_model(table, emb, cfg.stage2, splits.max_len, cfg.seed, DiscRecUNGER)
    model.load_state_dict(torch.load(art.path / "model.pt", map_location=DEVICE))
    return model.eval(), art.json("history")


def evaluate_discrec(cfg: C.RunConfig, force: bool = False) -> dict[str, Any]:
    """As ``stage2.evaluate_stage2`` for the DiscRec variant: metrics and ``{valid,test}_{all,excl}.npy``."""
    def build(out: Path, work: Path) -> dict[str, Any]:
        model, _ = run_discrec(cfg)
        splits, table, _ = _inputs(cfg)
        return {"metrics": save_rankings(model, splits, table, cfg.eval, out, cfg.stage2.precision)}

    art = artefacts.cached("eval_discrec", cfg, build, force=force)
    return {**art.json("metrics"), "path": str(art.path)}
