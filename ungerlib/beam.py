"""Trie-constrained beam search over unicodes (paper 3.5), batched with a decoder cache.

Every step expands only children that exist in the code trie (``CodeTable.next_node``), so
each finished beam is a real item and no item can appear twice. Among all expansions of all
live beams, the ``beam`` best by total log-probability survive; those that reach a leaf leave
the beam as finished items (codes may differ in length). The ranking is the finished items
sorted by log-probability. Keys/values of the decoder are cached: each step feeds one token, and
a user's beams attend to its encoder memory together (the memory is never copied per beam).
"""
from __future__ import annotations

import numpy as np
import torch

from .codes import CodeTable


@torch.no_grad()
def beam_search(model, hist: torch.Tensor, table: CodeTable, beam: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """hist [B, L] -> per user: finished item ids and their log-probs (unsorted)."""
    B, dev = hist.shape[0], hist.device
    nxt = torch.from_numpy(table.next_node).long().to(dev)
    node_item = torch.from_numpy(table.node_item).to(dev)
    mem, mask = model.encode(hist)
    caches = [{} for _ in model.decoder]
    x = model.dec_tok.weight[model.BOS].expand(B, 1, -1) + model.dec_pos[0]
    h = model.decode(x, mem, mask, caches)[:, -1]  # [B, d]
    score = torch.zeros(B, 1, dtype=torch.float64, device=dev)
    node = torch.zeros(B, 1, dtype=torch.long, device=dev)
    items: list[list[torch.Tensor]] = [[] for _ in range(B)]
    scores: list[list[torch.Tensor]] = [[] for _ in range(B)]
    for level in range(table.max_len):
        W = score.shape[1]
        logp = torch.log_softmax(model.logits(h, level).double(), -1).view(B, W, -1)  # [B, W, K]
        child = nxt[node]  # [B, W, K]
        cand = torch.where(child >= 0, score[..., None] + logp, -torch.inf).view(B, -1)
        new_score, flat = cand.topk(min(beam, cand.shape[1]), dim=1)  # [B, W']
        parent, tok = flat // table.K, flat % table.K
        new_node = child.view(B, -1).gather(1, flat)
        ok = torch.isfinite(new_score)
        leaf = ok & (node_item[new_node.clamp(min=0)] >= 0)
        for b in torch.nonzero(leaf.any(1)).flatten().tolist():
            items[b].append(node_item[new_node[b, leaf[b]]])
            scores[b].append(new_score[b, leaf[b]])
        alive = ok & ~leaf
        if not alive.any():
            break
        score = torch.where(alive, new_score, -torch.inf)
        node = torch.where(alive, new_node, 0)
        rows = (torch.arange(B, device=dev)[:, None] * W + parent).flatten()  # each new beam's parent row
        for c in caches:  # self-attention caches follow their beams; the memory stays per user
            c["k"], c["v"] = c["k"][rows], c["v"][rows]
        x = (model.embed_codes(tok.view(-1, 1), level) + model.dec_pos[level + 1])
        h = model.decode(x, mem, mask, caches)[:, -1]
    out_i = [torch.cat(i).cpu().numpy() if i else np.zeros(0, np.int64) for i in items]
    out_s = [torch.cat(s).cpu().numpy() if s else np.zeros(0) for s in scores]
    return out_i, out_s


def recommend(model, histories: np.ndarray, table: CodeTable, beam: int = 20, topk: int = 20,
              exclude_history: bool = False, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Top-``topk`` items per user [N, topk] (-1 pads) and their log-probs, best first.

    With ``exclude_history`` the user's history items are dropped from the beam's results and
    the next ones move up (a beam of at least topk + history length keeps the list full).
    """
    return _rankings(model, histories, table, beam, topk, batch_size, (exclude_history,))[0]


def recommend_both(model, histories: np.ndarray, table: CodeTable, beam: int = 20, topk: int = 20,
                   batch_size: int = 256) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """One beam search, two rankings: ``(all_items, all_scores), (excl_items, excl_scores)``.

    The second drops the user's history items (see :func:`recommend`); both come from the same
    finished beams, so evaluating both costs one search.
    """
    all_, excl = _rankings(model, histories, table, beam, topk, batch_size, (False, True))
    return all_, excl


def _rankings(model, histories: np.ndarray, table: CodeTable, beam: int, topk: int, batch_size: int,
              excludes: tuple[bool, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One beam search; per entry of ``excludes``, top-``topk`` (items, log-probs) with or without history."""
    if beam < 1 or topk < 1:
        raise ValueError(f"beam and topk must be positive, got beam={beam}, topk={topk}")
    model.eval()
    N = len(histories)
    out = [(np.full((N, topk), -1, dtype=np.int64), np.full((N, topk), -np.inf)) for _ in excludes]
    for s in range(0, N, batch_size):
        hist = histories[s:s + batch_size]
        its, scs = beam_search(model, torch.from_numpy(hist).to(next(model.parameters()).device), table, beam)
        for r, (i, sc) in enumerate(zip(its, scs)):
            order = np.argsort(-sc, kind="stable")
            i, sc = i[order], sc[order]
            for excl, (out_i, out_s) in zip(excludes, out):
                keep = ~np.isin(i, hist[r]) if excl else slice(None)
                ki, ks = i[keep][:topk], sc[keep][:topk]
                out_i[s + r, :len(ki)], out_s[s + r, :len(ks)] = ki, ks
    return out
