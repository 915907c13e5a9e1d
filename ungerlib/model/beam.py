"""Trie-constrained beam search over unicodes (paper 3.5), batched, on the model's incremental decoder.

Every step expands only children that exist in the code trie (``CodeTable.next_node``), so
each finished beam is a real item and no item can appear twice. Among all expansions of all
live beams, the ``beam`` best by total log-probability survive; those that reach a leaf leave
the beam as finished items (codes may differ in length). The ranking is the finished items
sorted by log-probability. The model's :meth:`~ungerlib.model.stage2.UNGER.decode_step` caches keys and
values, so each step feeds one token, and a user's beams attend to its encoder memory together.
"""
from __future__ import annotations

import numpy as np
import torch

from ungerlib.model.codes import CodeTable
from ungerlib.model.data import PAD


@torch.no_grad()
def finished_beams(model, hist: torch.Tensor, table: CodeTable, beam: int, has_child: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hist [B, L] -> every finished beam as three flat tensors ``(user [F], item [F], log-prob [F])``,
    grouped by user (ascending) and, within a user, in the order they finished (step, then rank).

    Each step works on the ``[B, W, K]`` candidates in place: the log-softmax (float64) gets each beam's
    score added and the missing children masked with a boolean trie (``has_child`` [n_nodes, K],
    ``model.next_node >= 0``; pass it to reuse it across batches), and only the ``beam`` survivors look
    their child up. The same float64 operations as before on every candidate, so the same scores and
    the same rankings (tests/analyses/test_efficiency.py keeps the previous implementation as the
    oracle). The finished beams of a step are gathered with one mask over all users, not user by user."""
    B, dev = hist.shape[0], hist.device
    node_item = torch.from_numpy(table.node_item).to(dev)
    if has_child is None:
        has_child = model.next_node >= 0  # [n_nodes, K] bool
    st, logits = model.decode_start(hist)
    score = torch.zeros(B, 1, dtype=torch.float64, device=dev)
    user = torch.arange(B, device=dev)
    done: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    K = table.K
    for _ in range(table.max_len):
        W = score.shape[1]
        cand = torch.log_softmax(logits.double(), -1).view(B, W, K)  # [B, W, K]
        cand.add_(score[..., None]).masked_fill_(~has_child[st.node].view(B, W, K), -torch.inf)
        new_score, flat = cand.view(B, -1).topk(min(beam, W * K), dim=1)  # [B, W']
        parent, tok = flat // K, flat % K
        rows = (user[:, None] * W + parent).flatten()  # each new beam's parent row
        new_node = model.next_node[st.node[rows], tok.flatten()].view(B, -1)
        ok = torch.isfinite(new_score)
        item = node_item[new_node.clamp(min=0)]
        leaf = ok & (item >= 0)
        done.append((user[:, None].expand_as(leaf)[leaf], item[leaf], new_score[leaf]))  # row-major: by user, then rank
        alive = ok & ~leaf
        if not alive.any():
            break
        score = torch.where(alive, new_score, -torch.inf)
        logits = model.decode_step(st, rows, tok.flatten())
    u, i, s = (torch.cat(t) for t in zip(*done))
    order = torch.sort(u, stable=True).indices  # by user; each user's beams keep their finishing order
    return u[order], i[order], s[order]


def beam_search(model, hist: torch.Tensor, table: CodeTable, beam: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """hist [B, L] -> per user: finished item ids and their log-probs (unsorted; :func:`finished_beams`)."""
    u, i, s = (t.cpu().numpy() for t in finished_beams(model, hist, table, beam))
    cut = np.cumsum(np.bincount(u, minlength=len(hist)))[:-1]
    return np.split(i, cut), np.split(s, cut)


def recommend(model, histories: np.ndarray, table: CodeTable, beam: int = 20, topk: int = 20,
              exclude_history: bool = False, batch_size: int = 256,
              exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``topk`` items per user [N, topk] (-1 pads) and their log-probs, best first.

    With ``exclude_history`` the items in ``exclude`` [N, S] (PAD = -1; default: ``histories``) are
    dropped from the beam's results and the next ones move up (a beam of at least topk + history
    length keeps the list full). Pass a split's ``Examples.exclude`` to drop the whole history, not
    just the model's input window.
    """
    return _rankings(model, histories, table, beam, topk, batch_size,
                     (exclude_history,), histories if exclude is None else exclude)[0]


def recommend_both(model, histories: np.ndarray, table: CodeTable, beam: int = 20, topk: int = 20,
                   batch_size: int = 256, exclude: np.ndarray | None = None
                   ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """One beam search, two rankings: ``(all_items, all_scores), (excl_items, excl_scores)``.

    The second drops the items in ``exclude`` (see :func:`recommend`); both come from the same
    finished beams, so evaluating both costs one search.
    """
    all_, excl = _rankings(model, histories, table, beam, topk, batch_size, (False, True),
                           histories if exclude is None else exclude)
    return all_, excl


def _rankings(model, histories: np.ndarray, table: CodeTable, beam: int, topk: int, batch_size: int,
              excludes: tuple[bool, ...], exclude: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """One beam search; per entry of ``excludes``, top-``topk`` (items, log-probs) without / with the
    ``exclude`` items. Users are batched by history length and each batch is trimmed to its longest
    history (padding is masked, so the rankings do not depend on the batching)."""
    if beam < 1 or topk < 1:
        raise ValueError(f"beam and topk must be positive, got beam={beam}, topk={topk}")
    if len(exclude) != len(histories):
        raise ValueError(f"exclude has {len(exclude)} rows for {len(histories)} histories")
    model.eval()
    dev = next(model.parameters()).device
    has_child = model.next_node >= 0
    N = len(histories)
    out = [(np.full((N, topk), -1, dtype=np.int64), np.full((N, topk), -np.inf)) for _ in excludes]
    by_length = np.argsort((histories != PAD).sum(1), kind="stable")
    for s in range(0, N, batch_size):
        users = by_length[s:s + batch_size]
        hist = histories[users]
        longest = max(int((hist != PAD).sum(1).max()), 1)
        found = finished_beams(model, torch.from_numpy(hist[:, -longest:]).to(dev), table, beam, has_child)
        items, scores = _best_first(*(t.cpu().numpy() for t in found), len(users))
        for excl, (out_i, out_s) in zip(excludes, out):
            keep = items >= 0
            if excl:
                keep &= ~_in_rows(items, exclude[users], len(table))
            rank = np.cumsum(keep, 1) - 1
            r, c = np.nonzero(keep & (rank < topk))
            out_i[users[r], rank[r, c]], out_s[users[r], rank[r, c]] = items[r, c], scores[r, c]
    return out


def _best_first(user: np.ndarray, item: np.ndarray, score: np.ndarray, B: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat finished beams (:func:`finished_beams`) -> items [B, M] and log-probs [B, M] per user, best
    first (a stable sort, so equal scores keep their finishing order), -1 / -inf padded."""
    counts = np.bincount(user, minlength=B)
    pos = np.arange(len(user)) - (np.cumsum(counts) - counts)[user]
    items = np.full((B, max(int(counts.max(initial=0)), 1)), PAD, dtype=np.int64)
    scores = np.full(items.shape, -np.inf)
    items[user, pos], scores[user, pos] = item, score
    order = np.argsort(-scores, axis=1, kind="stable")  # finished beams are finite: the pads sort last
    return np.take_along_axis(items, order, 1), np.take_along_axis(scores, order, 1)


def _in_rows(items: np.ndarray, exclude: np.ndarray, n_items: int) -> np.ndarray:
    """[B, M] bool: whether ``items[b, j]`` is among ``exclude[b]`` ([B, S], PAD = -1 ignored)."""
    rows = np.arange(len(items))[:, None]
    banned = (rows * n_items + exclude)[exclude >= 0]
    return np.isin(rows * n_items + items, banned)
