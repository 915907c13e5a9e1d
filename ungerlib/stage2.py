"""Stage II: generative recommendation over unicodes with IKD (paper 3.4-3.5, Eq. 6-8).

Encoder (``enc_layers``, paper 1) reads the history; decoder (``dec_layers``, paper 4) reads
``<BOS> c_1 .. c_L [c_dis]`` and predicts ``c_1 .. c_L`` (Eq. 6). The decoder output at
``[c_dis]`` is projected to the Stage I space and contrasted against the target's integrated
embedding and ``ikd_negatives`` random items (Eq. 7); loss = L_gen + beta L_dis (Eq. 8).

Choices the paper leaves open, and ours:
* history tokens: ``"item"`` -- one encoder token per history item, the sum of its code tokens'
  embeddings plus a recency position (20 tokens, cheap); ``"code"`` is not implemented yet.
* code tokens get one embedding table and one output head per level (a token's meaning
  depends on its level); codes may differ in length (prefix-free), so ``[c_dis]`` sits right
  after each target's last token and padded positions are ignored by the loss.
* IKD uses a dot product after a linear projection, temperature ``ikd_tau``, negatives drawn
  uniformly from the other items (shared by the batch).
* schedule: Adam, linear warm-up, cosine decay; model selection on validation NDCG@20.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import config as C
from .codes import CodeTable
from .data import PAD, Examples, Splits, get_splits
from .metrics import rank_metrics
from .store import atomic_torch_save, atomic_write_json, cached

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer with a key/value cache for incremental decoding."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.h, self.drop = heads, dropout
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.q_x, self.kv_x, self.proj_x = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, h, T, d/h]
        return x.view(x.shape[0], x.shape[1], self.h, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mem_mask: torch.Tensor,
                cache: dict | None = None) -> torch.Tensor:
        """x [B*W, T, d]; mem [B, S, d]; mem_mask [B, 1, 1, S] bool (True = attend).

        W > 1 (beam search): rows b*W .. b*W+W-1 of x are user b's beams; they share its memory,
        so the memory is never copied per beam. With ``cache`` (incremental), x holds only the new
        position(s)."""
        p = self.drop if self.training else 0.0
        q, k, v = [self._heads(t) for t in self.qkv(self.ln1(x)).chunk(3, -1)]
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        causal = cache is None or q.shape[2] > 1
        a = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=p)
        x = x + F.dropout(self.proj(a.transpose(1, 2).flatten(2)), p, self.training)
        q = self._heads(self.q_x(self.ln2(x)))
        if cache is not None and "mk" in cache:
            mk, mv = cache["mk"], cache["mv"]
        else:
            mk, mv = [self._heads(t) for t in self.kv_x(mem).chunk(2, -1)]
            if cache is not None:
                cache["mk"], cache["mv"] = mk, mv
        Bm, W, T = mk.shape[0], q.shape[0] // mk.shape[0], q.shape[2]
        if W > 1:  # beam search: a user's W beams are extra queries against its one memory
            q = q.view(Bm, W, self.h, T, -1).transpose(1, 2).reshape(Bm, self.h, W * T, -1)
        a = F.scaled_dot_product_attention(q, mk, mv, attn_mask=mem_mask, dropout_p=p)
        if W > 1:
            a = a.view(Bm, self.h, W, T, -1).transpose(1, 2).reshape(Bm * W, self.h, T, -1)
        x = x + F.dropout(self.proj_x(a.transpose(1, 2).flatten(2)), p, self.training)
        return x + F.dropout(self.ff(self.ln3(x)), p, self.training)


class UNGER(nn.Module):
    """Encoder-decoder over unicodes. ``codes`` [n_items, Lc] (-1 padded) is a fixed buffer."""

    def __init__(self, codes: np.ndarray, K: int, d_int: int, s2: C.Stage2Config, max_hist: int):
        super().__init__()
        n, Lc = codes.shape
        self.K, self.Lc, self.d = K, Lc, s2.d_model
        self.register_buffer("codes", torch.from_numpy(codes))
        # token id per (level, token); id 0 is padding
        self.enc_tok = nn.Embedding(Lc * K + 1, s2.d_model, padding_idx=0)
        self.enc_pos = nn.Parameter(torch.randn(max_hist, s2.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(s2.d_model, s2.n_heads, s2.d_ff, s2.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, s2.enc_layers, enable_nested_tensor=False)
        self.enc_ln = nn.LayerNorm(s2.d_model)
        self.dec_tok = nn.Embedding(Lc * K + 2, s2.d_model)  # + BOS (Lc*K) and [c_dis] (Lc*K+1)
        self.dec_pos = nn.Parameter(torch.randn(Lc + 2, s2.d_model) * 0.02)
        self.decoder = nn.ModuleList(DecoderLayer(s2.d_model, s2.n_heads, s2.d_ff, s2.dropout)
                                     for _ in range(s2.dec_layers))
        self.dec_ln = nn.LayerNorm(s2.d_model)
        self.head = nn.Parameter(torch.randn(Lc, K, s2.d_model) * 0.02)  # one output head per level
        self.ikd = nn.Linear(s2.d_model, d_int)
        self.drop = nn.Dropout(s2.dropout)
        self.BOS, self.DIS = Lc * K, Lc * K + 1

    def encode(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hist [B, L] item ids (PAD = -1, right-aligned) -> memory [B, L, d], mask [B, 1, 1, L]."""
        valid = hist >= 0
        c = self.codes[hist.clamp(min=0)]  # [B, L, Lc]
        tok = torch.where(c >= 0, c + 1 + torch.arange(self.Lc, device=c.device) * self.K, 0)
        x = self.enc_tok(tok).sum(2) + self.enc_pos[-hist.shape[1]:]
        x = self.encoder(self.drop(x), src_key_padding_mask=~valid)
        x = self.enc_ln(x)
        return x, valid[:, None, None, :]

    def embed_codes(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Code tokens [B, T] of levels start.. -> decoder input embeddings [B, T, d]."""
        lvl = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        return self.dec_tok(tokens + lvl * self.K)

    def decode(self, x: torch.Tensor, mem: torch.Tensor, mask: torch.Tensor, caches: list | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.decoder):
            x = layer(x, mem, mask, None if caches is None else caches[i])
        return self.dec_ln(x)

    def logits(self, h: torch.Tensor, level: int | torch.Tensor) -> torch.Tensor:
        """h [B, d] at a position predicting ``level`` -> [B, K]."""
        return torch.einsum("bd,kd->bk", h, self.head[level]) if isinstance(level, int) else \
            torch.einsum("btd,tkd->btk", h, self.head[level])

    def forward(self, hist: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing. Returns logits [B, Lc, K], code targets [B, Lc] (-1 = pad), c_dis output [B, d_int]."""
        mem, mask = self.encode(hist)
        code = self.codes[target]  # [B, Lc]
        B, n_real = len(target), (code >= 0).sum(1)
        inp = torch.full((B, self.Lc + 2), self.DIS, device=code.device)
        inp[:, 0] = self.BOS
        lvl = torch.arange(self.Lc, device=code.device)
        inp[:, 1:self.Lc + 1] = torch.where(code >= 0, code + lvl * self.K, self.DIS)
        x = self.drop(self.dec_tok(inp) + self.dec_pos)
        h = self.decode(x, mem, mask)
        logits = self.logits(h[:, :self.Lc], lvl)
        dis = h[torch.arange(B), n_real + 1]  # [c_dis] right after the last real token
        return logits, code, self.ikd(dis)


def _lr_lambda(s2: C.Stage2Config, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < s2.warmup_steps:
            return (step + 1) / s2.warmup_steps
        if s2.lr_decay == "none":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - s2.warmup_steps) / max(1, total - s2.warmup_steps))))
    return f


def _check_inputs(splits: Splits, table: CodeTable, integrated: np.ndarray) -> None:
    if len(table) != splits.n_items:
        raise ValueError(f"code table has {len(table)} items but the data set has {splits.n_items}")
    if integrated.ndim != 2 or len(integrated) != splits.n_items:
        raise ValueError(f"integrated embeddings have shape {integrated.shape}; expected [{splits.n_items}, d]")
    if not np.isfinite(integrated).all():
        raise ValueError("integrated embeddings contain NaN/inf")


def train_stage2(splits: Splits, table: CodeTable, integrated: np.ndarray, cfg: C.RunConfig,
                 work_dir: Path | None = None, progress: bool = True,
                 after_epoch: Callable[[int], None] | None = None) -> tuple[UNGER, list[dict[str, float]]]:
    """Train with Eq. 8; keep the epoch with the best validation NDCG@20 (beam ``eval_beam``)."""
    from .beam import recommend

    _check_inputs(splits, table, integrated)
    s2 = cfg.stage2
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = UNGER(table.padded(), table.K, integrated.shape[1], s2, splits.max_len).to(DEVICE)
    E = torch.from_numpy(integrated.astype(np.float32)).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=s2.lr, weight_decay=s2.weight_decay)
    tr = splits.train
    steps = s2.epochs * math.ceil(len(tr) / s2.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(s2, steps))
    st: dict[str, Any] = {"epoch": 0, "best": -1.0, "best_epoch": 0, "bad": 0, "history": [], "best_state": None}
    ckpt = work_dir / "stage2.pt" if work_dir else None
    if ckpt and ckpt.exists():
        st = torch.load(ckpt, weights_only=False, map_location=DEVICE)
        model.load_state_dict(st.pop("model")), opt.load_state_dict(st.pop("opt")), sched.load_state_dict(st.pop("sched"))
        rng.bit_generator.state = st.pop("rng")
        torch.set_rng_state(st.pop("torch_rng").cpu())
    n = splits.n_items
    for epoch in range(st["epoch"], s2.epochs):
        if st["bad"] >= s2.patience:
            break
        model.train()
        order = rng.permutation(len(tr))
        t0 = time.time()
        tot = {"loss_gen": 0.0, "loss_ikd": 0.0}
        for s in tqdm(range(0, len(order), s2.batch_size), desc=f"stage2 epoch {epoch + 1}", disable=not progress,
                      leave=False):
            idx = order[s:s + s2.batch_size]
            tgt = torch.from_numpy(tr.target[idx]).to(DEVICE)
            logits, code, dis = model(torch.from_numpy(tr.history[idx]).to(DEVICE), tgt)
            loss_gen = F.cross_entropy(logits.flatten(0, 1), code.flatten(), ignore_index=-1)  # Eq. 6
            loss_ikd = torch.zeros(())
            if s2.ikd:  # Eq. 7: positive = E[target], negatives = random other items
                neg = torch.from_numpy(rng.integers(n, size=s2.ikd_negatives)).to(DEVICE)
                sim = torch.cat([(dis * E[tgt]).sum(1, keepdim=True), dis @ E[neg].T], 1) / s2.ikd_tau
                sim[:, 1:] = sim[:, 1:].masked_fill(neg[None] == tgt[:, None], -1e9)
                loss_ikd = F.cross_entropy(sim, torch.zeros(len(idx), dtype=torch.long, device=DEVICE))
            loss = loss_gen + s2.beta * loss_ikd  # Eq. 8
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot["loss_gen"] += loss_gen.item() * len(idx)
            tot["loss_ikd"] += loss_ikd.item() * len(idx)
        rec = {"epoch": epoch + 1, **{k: v / len(order) for k, v in tot.items()}, "train_s": time.time() - t0}
        t0 = time.time()
        ranked, _ = recommend(model, splits.valid.history, table, beam=s2.eval_beam, topk=20)
        rec.update({f"valid_{k}": v for k, v in rank_metrics(ranked, splits.valid.target).items()})
        rec["valid_s"] = time.time() - t0  # wall times: the only fields a resumed run may not repeat
        st["history"].append(rec)
        if progress:
            print(f"[stage2] epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if k != "epoch"),
                  flush=True)
        if rec["valid_ndcg@20"] > st["best"]:
            st.update(best=rec["valid_ndcg@20"], best_epoch=epoch + 1, bad=0,
                      best_state={k: v.clone() for k, v in model.state_dict().items()})
        else:
            st["bad"] += 1
        st["epoch"] = epoch + 1
        if ckpt:
            atomic_torch_save({**st, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                               "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, ckpt)
        if after_epoch:
            after_epoch(epoch + 1)
    if st["best_state"] is not None:
        model.load_state_dict(st["best_state"])
    model.eval()
    return model, st["history"]


def _inputs(cfg: C.RunConfig) -> tuple[Splits, CodeTable, np.ndarray]:
    from .codes import item_codes
    from .stage1 import stage1_embeddings

    _, splits = get_splits(cfg)
    return splits, item_codes(cfg), stage1_embeddings(cfg).integrated


def run_stage2(cfg: C.RunConfig, force: bool = False, progress: bool = True) -> tuple[UNGER, list[dict]]:
    """Cached :func:`train_stage2`: returns the selected model and the per-epoch history."""
    splits, table, emb = _inputs(cfg)

    def build(out: Path, work: Path) -> dict[str, Any]:
        model, hist = train_stage2(splits, table, emb, cfg, work, progress)
        atomic_torch_save(model.state_dict(), out / "model.pt")
        atomic_write_json(out / "history.json", hist)
        best = max(hist, key=lambda h: h["valid_ndcg@20"])
        return {"best_epoch": best["epoch"], "valid": {k[6:]: v for k, v in best.items() if k.startswith("valid_")}}

    art = cached("stage2", C.upstream(cfg, "stage2"), build, force=force)
    model = UNGER(table.padded(), table.K, emb.shape[1], cfg.stage2, splits.max_len).to(DEVICE)
    model.load_state_dict(torch.load(art.path / "model.pt", map_location=DEVICE))
    return model.eval(), art.json("history")


def evaluate_stage2(cfg: C.RunConfig, force: bool = False) -> dict[str, Any]:
    """Valid and test metrics with beam ``cfg.eval.beam``, with and without excluding history items.

    Per-user top-20 rankings are saved (``{valid,test}_{all,excl}.npy``) next to the metrics so
    anyone can recompute them or run paired tests (:func:`ungerlib.metrics.paired_test`).
    """
    from .beam import recommend_both

    model, _ = run_stage2(cfg)
    splits, table, _ = _inputs(cfg)

    def build(out: Path, work: Path) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for split in ("valid", "test"):
            ex: Examples = getattr(splits, split)
            both = recommend_both(model, ex.history, table, beam=cfg.eval.beam, topk=max(cfg.eval.ks))
            for tag, (ranked, _) in zip((f"{split}_all", f"{split}_excl"), both):
                np.save(out / f"{tag}.npy", ranked)
                res[tag] = rank_metrics(ranked, ex.target, cfg.eval.ks)
        atomic_write_json(out / "metrics.json", res)
        return {"metrics": res}

    art = cached("eval", C.upstream(cfg, "eval"), build, force=force)
    return {**art.json("metrics"), "path": str(art.path)}
