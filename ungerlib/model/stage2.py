"""Stage II: generative recommendation over unicodes with IKD (paper 3.4-3.5, Eq. 6-8).

The encoder (``enc_layers``, paper 1) reads the history, one token per item; the decoder
(``dec_layers``, paper 4) reads ``<BOS> c_1 .. c_L [c_dis]`` and predicts ``c_1 .. c_L`` (Eq. 6).
The decoder output at ``[c_dis]`` is projected to the Stage I space and contrasted against the
target's integrated embedding and ``ikd_negatives`` random items (Eq. 7); the loss is
``L_gen + beta L_dis`` (Eq. 8). :meth:`UNGER.loss` returns these terms, :meth:`UNGER.decode_start`
and :meth:`UNGER.decode_step` are the incremental decoder that :mod:`ungerlib.model.beam` searches with.

Choices the paper leaves open (``Stage2Config``; README and docs/ARCHITECTURE.md say which the
profiles use and why):

* ``history_tokens``: a history item enters the encoder as the sum of its per-level code-token
  embeddings (``codes``), its own embedding (``item``), or both, plus a recency position.
* ``decoder_tokens``: ``level`` gives each code level one token table and one output head shared
  by every prefix (token 7 of cluster 3 and token 7 of cluster 200 share a vector); ``node`` gives
  every trie node (every distinct code prefix, items are the leaves) its own embedding, used both
  as the decoder input after that prefix and, tied, as the output vector that scores it. The root
  node is ``<BOS>``. With ``node`` an item's encoder embedding is its leaf's, so encoder, decoder
  and output share one item table.
* ``valid_children``: the softmax over the next token runs over the children that exist under the
  prefix (about 47 of K = 256 at level 2 on Beauty) instead of all K, in training and in the beam.
* codes may differ in length (prefix-free); ``[c_dis]`` sits right after each target's last token
  and padded positions are ignored by the loss.
* IKD: a linear projection of ``[c_dis]``'s output, dot product or cosine with temperature,
  negatives drawn uniformly from the other items (shared by the batch, accidental hits masked).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ungerlib.infra import artefacts, config as C, distributed
from ungerlib.infra.distributed import Part
from ungerlib.model.codes import CodeTable
from ungerlib.model.data import PAD, Splits, get_splits
from ungerlib.model.metrics import rank_metrics
from ungerlib.infra.store import atomic_torch_save, atomic_write_json

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


@dataclass
class DecodeState:
    """What :meth:`UNGER.decode_step` carries between steps: the encoder memory (one per user), the
    decoder's key/value caches and the trie node each row (beam) has reached."""

    mem: torch.Tensor  # [B, S, d]
    mask: torch.Tensor  # [B, 1, 1, S]
    caches: list[dict[str, torch.Tensor]]
    node: torch.Tensor  # [R] trie node per row; R = B x beams
    level: int  # code level the next token is at


def rows(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``weight[idx]`` [..., d] for a parameter ``weight`` [n, d], through ``F.embedding``: its backward
    sums repeated rows in a fixed order, while plain indexing's backward (``index_put_`` with
    accumulate) adds them in thread order on a multi-core CPU, so the same seed gave different
    gradients in the last float bits and, over an epoch, different models."""
    return F.embedding(idx, weight)


class UNGER(nn.Module):
    """Encoder-decoder over the unicodes of ``table`` (held as buffers, trie included).

    ``d_int``: width of the Stage I integrated embeddings IKD distils.
    """

    def __init__(self, table: CodeTable, d_int: int, s2: C.Stage2Config, max_hist: int):
        super().__init__()
        codes = table.padded()
        n, Lc = codes.shape
        K, d = table.K, s2.d_model
        self.s2, self.K, self.Lc, self.d, self.n_items = s2, K, Lc, d, n
        self.register_buffer("codes", torch.from_numpy(codes))  # [n, Lc], -1 padded
        self.register_buffer("next_node", torch.from_numpy(table.next_node.astype(np.int64)))  # [N, K]
        path = np.full((n, Lc), -1, dtype=np.int64)  # node reached after each prefix of each code
        for i in range(n):
            node = 0
            for lvl, t in enumerate(codes[i][codes[i] >= 0]):
                node = table.next_node[node, t]
                path[i, lvl] = node
        self.register_buffer("path", torch.from_numpy(path))
        self.register_buffer("leaf", torch.from_numpy(path[np.arange(n), table.lengths - 1]))
        n_nodes = len(table.node_item)
        # each node's existing children, packed: child node ids and their tokens [N, C], -1 padded
        n_kids = (table.next_node >= 0).sum(1)
        C_max = max(int(n_kids.max()), 1)
        kids = np.full((n_nodes, C_max), -1, dtype=np.int64)
        kid_tok = np.full((n_nodes, C_max), K, dtype=np.int64)  # padding scatters to the spare column K
        for node in np.flatnonzero(n_kids):
            t = np.flatnonzero(table.next_node[node] >= 0)
            kids[node, :len(t)], kid_tok[node, :len(t)] = table.next_node[node, t], t
        self.register_buffer("kids", torch.from_numpy(kids))
        self.register_buffer("n_kids", torch.from_numpy(n_kids.astype(np.int64)), persistent=False)
        self.register_buffer("kid_tok", torch.from_numpy(kid_tok))

        self.node_tokens = s2.decoder_tokens == "node"
        std = d ** -0.5  # tied output: logits start with unit variance
        if s2.history_tokens in ("codes", "both"):  # one id per (level, token); 0 is padding
            self.enc_code = nn.Embedding(Lc * K + 1, d, padding_idx=0)
        if self.node_tokens:
            self.node_emb = nn.Parameter(torch.randn(n_nodes, d) * std)
            self.node_bias = nn.Parameter(torch.zeros(n_nodes))
        else:
            self.dec_tok = nn.Embedding(Lc * K + 1, d)  # + BOS (id Lc*K)
            self.head = nn.Parameter(torch.randn(Lc, K, d) * 0.02)  # one output head per level
            if s2.history_tokens in ("item", "both"):
                self.item_emb = nn.Parameter(torch.randn(n, d) * std)
        self.dis = nn.Parameter(torch.randn(d) * 0.02)  # the [c_dis] token
        self.enc_pos = nn.Parameter(torch.randn(max_hist, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, s2.n_heads, s2.d_ff, s2.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, s2.enc_layers, enable_nested_tensor=False)
        self.enc_ln = nn.LayerNorm(d)
        self.dec_pos = nn.Parameter(torch.randn(Lc + 2, d) * 0.02)
        self.decoder = nn.ModuleList(DecoderLayer(d, s2.n_heads, s2.d_ff, s2.dropout) for _ in range(s2.dec_layers))
        self.dec_ln = nn.LayerNorm(d)
        self.ikd = nn.Linear(d, d_int)
        self.drop = nn.Dropout(s2.dropout)

    def node_vectors(self, node: torch.Tensor) -> torch.Tensor:
        """Embeddings of trie nodes [..] -> [.., d] (per-node tokens)."""
        return rows(self.node_emb, node)

    # ------------------------------------------------------------------ encoder
    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Encoder embeddings of item ids [..] (no padding) -> [.., d]."""
        x = 0
        if self.s2.history_tokens in ("codes", "both"):
            c = self.codes[items]  # [.., Lc]
            tok = torch.where(c >= 0, c + 1 + torch.arange(self.Lc, device=c.device) * self.K, 0)
            x = self.enc_code(tok).sum(-2)
        if self.s2.history_tokens in ("item", "both"):
            x = x + (self.node_vectors(self.leaf[items]) if self.node_tokens else rows(self.item_emb, items))
        return x

    def encode(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hist [B, L] item ids (PAD = -1, right-aligned) -> memory [B, L, d], mask [B, 1, 1, L]."""
        valid = hist >= 0
        x = self.item_vectors(hist.clamp(min=0)) + self.enc_pos[-hist.shape[1]:]
        x = self.encoder(self.drop(x), src_key_padding_mask=~valid)
        return self.enc_ln(x), valid[:, None, None, :]

    # ------------------------------------------------------------------ decoder
    def _token_vectors(self, tok: torch.Tensor, node: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        """Decoder input for code token ``tok`` at ``level`` that leads to trie ``node`` -> [.., d]."""
        if self.node_tokens:
            return self.node_vectors(node)
        return self.dec_tok(tok + level * self.K)

    def _bos(self) -> torch.Tensor:
        return self.node_vectors(self.kids.new_zeros(())) if self.node_tokens else self.dec_tok.weight[self.Lc * self.K]

    def logits(self, h: torch.Tensor, node: torch.Tensor, level: int) -> torch.Tensor:
        """Scores of the K possible next tokens: h [R, d] at rows whose prefix is trie ``node`` [R] and
        whose next token is at code level ``level`` -> [R, K]; missing children are -inf under
        ``valid_children`` (always with ``node`` tokens)."""
        if self.node_tokens:  # tied: a child's score is <h, its node embedding> + its bias
            if level == 0:  # every row is at the root: one GEMM
                kids = self.kids[0, :self.n_kids[0]]
                vals = h @ self.node_vectors(kids).T + rows(self.node_bias[:, None], kids)[:, 0]
                return h.new_full((len(h), self.K), -torch.inf).index_copy(1, self.kid_tok[0, :len(kids)], vals)
            # training: about one row per parent; inference (the beam): many rows share a parent
            by = self._child_scores_by_row if torch.is_grad_enabled() else self._child_scores_by_parent
            return by(h, node)
        out = h @ self.head[level].T
        if self.s2.valid_children:
            out = out.masked_fill(self.next_node[node] < 0, -torch.inf)
        return out

    # Two ways to the same scores [R, K] of rows h [R, d] at trie nodes ``node`` [R]: each existing
    # child's score is written at its token's column, every other column is -inf (equal to float
    # rounding, tests/test_beam.py). Gathering every row's children padded to the widest node (K at
    # level 1, about 48 real on Beauty) moved [R, K, d] tensors and cost about 40 % of a training step;
    # these touch only the real children.

    def _child_scores_by_row(self, h: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        """One dot product per (row, existing child) pair: the training path (about one row per parent,
        so there is nothing to share)."""
        n = self.n_kids[node]
        row = torch.repeat_interleave(torch.arange(len(h), device=h.device), n)  # [P] pairs
        col = torch.arange(len(row), device=h.device) - (torch.cumsum(n, 0) - n)[row]
        kid, tok = self.kids[node[row], col], self.kid_tok[node[row], col]
        vals = (rows(h, row) * self.node_vectors(kid)).sum(-1) + rows(self.node_bias[:, None], kid)[:, 0]
        return h.new_full((len(h), self.K), -torch.inf).index_put((row, tok), vals)

    def _child_scores_by_parent(self, h: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        """One GEMM per distinct parent, ``h[rows at p] @ E[children of p].T``: the inference path. The
        beam has R = users x beams rows over few distinct parents (at level 1 at most K), so each
        child's embedding is read once per parent, not once per row (``bench/bench_beam.py``); in
        training autograd's per-group overhead makes it slower than :meth:`_child_scores_by_row`."""
        table = self.node_emb
        parents, inv, counts = torch.unique(node, return_inverse=True, return_counts=True)
        groups = torch.argsort(inv, stable=True).split(counts.tolist())
        vals, r_idx, c_idx = [], [], []
        for r, p, n in zip(groups, parents.tolist(), self.n_kids[parents].tolist()):
            kids = self.kids[p, :n]
            vals.append((h[r] @ table[kids].T + self.node_bias[kids]).flatten())
            r_idx.append(r.repeat_interleave(n))
            c_idx.append(self.kid_tok[p, :n].repeat(len(r)))
        out = h.new_full((len(h), self.K), -torch.inf)
        return out.index_put((torch.cat(r_idx), torch.cat(c_idx)), torch.cat(vals))

    def decode(self, x: torch.Tensor, mem: torch.Tensor, mask: torch.Tensor, caches: list | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.decoder):
            x = layer(x, mem, mask, None if caches is None else caches[i])
        return self.dec_ln(x)

    def decode_start(self, hist: torch.Tensor) -> tuple[DecodeState, torch.Tensor]:
        """Encode hist [B, L] and feed ``<BOS>``: the state and the logits [B, K] of the first token."""
        mem, mask = self.encode(hist)
        B = hist.shape[0]
        caches: list[dict[str, torch.Tensor]] = [{} for _ in self.decoder]
        x = (self._bos() + self.dec_pos[0]).expand(B, 1, -1)
        h = self.decode(x, mem, mask, caches)[:, -1]
        root = torch.zeros(B, dtype=torch.long, device=hist.device)
        return DecodeState(mem, mask, caches, root, 0), self.logits(h, root, 0)

    def decode_step(self, st: DecodeState, parent: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        """Extend rows ``parent`` [R'] of the previous step with tokens ``tok`` [R'] (R' may be any
        multiple of the batch size: each user's rows must be contiguous); returns logits [R', K] of the
        token after. ``st`` is updated in place (caches follow their parents). A row whose token is not
        a child of its prefix is a dead beam: it is fed from the root and its logits mean nothing."""
        node = self.next_node[st.node[parent], tok].clamp(min=0)  # a missing child (a dead beam): root, ignored
        for c in st.caches:
            c["k"], c["v"] = c["k"][parent], c["v"][parent]
        x = (self._token_vectors(tok, node, st.level) + self.dec_pos[st.level + 1])[:, None]
        h = self.decode(x, st.mem, st.mask, st.caches)[:, -1]
        st.node, st.level = node, st.level + 1
        return self.logits(h, node, st.level)

    # ------------------------------------------------------------------ training
    def prefixes(self, target: torch.Tensor) -> torch.Tensor:
        """[B, Lc] the trie node each code level of target items [B] is predicted from: the root, then
        the node after each earlier token (a level past the code's end: the root, ignored by the loss)."""
        path = self.path[target]
        return torch.cat([torch.zeros_like(path[:, :1]), path[:, :-1].clamp(min=0)], 1)

    def forward(self, hist: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing on hist [B, L], target items [B]. Returns logits [B, Lc, K], code targets
        [B, Lc] (-1 = past the code's end) and the projected ``[c_dis]`` output [B, d_int]."""
        return self.teacher_forced(*self.encode(hist), target)

    def teacher_forced(self, mem: torch.Tensor, mask: torch.Tensor,
                       target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` from the encoded histories (:meth:`encode`: memory [B, L, d], mask [B, 1, 1, L]).
        The memory may hold U histories for B = U x W targets, W consecutive targets per history."""
        code, path = self.codes[target], self.path[target]  # [B, Lc]
        B, n_real = len(target), (code >= 0).sum(1)
        lvl = torch.arange(self.Lc, device=code.device)
        tok = self._token_vectors(code.clamp(min=0), path.clamp(min=0), lvl)  # [B, Lc, d]
        tok = torch.where((code >= 0)[..., None], tok, self.dis)
        x = torch.cat([self._bos().expand(B, 1, -1), tok, self.dis.expand(B, 1, -1)], 1)  # [c_dis] at n_real + 1
        h = self.decode(self.drop(x + self.dec_pos), mem, mask)
        prefix = self.prefixes(target)
        logits = torch.stack([self.logits(h[:, l], prefix[:, l], l) for l in range(self.Lc)], 1)  # [B, Lc, K]
        logits = torch.where((code >= 0)[..., None], logits, 0.0)  # past a code's end: ignored, kept finite
        dis = h[torch.arange(B), n_real + 1]  # [c_dis] right after the last real token
        return logits, code, self.ikd(dis)

    def loss(self, hist: torch.Tensor, target: torch.Tensor, E: torch.Tensor | None,
             neg: torch.Tensor | None, part: Part | None = None,
             batch_targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eq. 8 on a batch: ``{"loss", "gen", "ikd"}``. ``E`` [n, d_int]: Stage I integrated
        embeddings; ``neg`` [S]: IKD negatives (None or ``ikd=False``: no IKD term).

        Under DDP ``hist`` [b, L] and ``target`` [b] are ``part``, one rank's part of a global batch whose
        targets are ``batch_targets`` [B]: L_gen (a mean over code tokens) and L_dis (over examples) are
        weighted by the part's share of the batch's tokens and examples, so that summed over the ranks
        they are the global batch's terms."""
        logits, code, dis = self(hist, target)
        gen = F.cross_entropy(logits.flatten(0, 1), code.flatten(), ignore_index=-1)  # Eq. 6
        if part is not None:
            gen = gen * part.share((code >= 0).sum(), (self.codes[batch_targets] >= 0).sum())
        if not self.s2.ikd or E is None or neg is None:
            return {"loss": gen, "gen": gen, "ikd": torch.zeros((), device=gen.device)}
        pos, negs = E[target], E[neg]  # Eq. 7
        if self.s2.ikd_sim == "cosine":
            dis, pos, negs = F.normalize(dis, dim=-1), F.normalize(pos, dim=-1), F.normalize(negs, dim=-1)
        sim = torch.cat([(dis * pos).sum(1, keepdim=True), dis @ negs.T], 1) / self.s2.ikd_tau
        sim[:, 1:] = sim[:, 1:].masked_fill(neg[None] == target[:, None], -torch.inf)
        ikd = F.cross_entropy(sim, torch.zeros(len(target), dtype=torch.long, device=sim.device))
        if part is not None:
            ikd = ikd * part.share(len(target), len(batch_targets))
        return {"loss": gen + self.s2.beta * ikd, "gen": gen, "ikd": ikd}

    @torch.no_grad()
    def code_log_prob(self, hist: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B] log-probability of generating each item's code, ``items`` [B], given its history: the sum
        over its levels of the log-softmax that beam search adds up (teacher forcing; eval mode).
        ``hist`` [U, L] with B = U x W: history u scores the W items u*W .. u*W+W-1 and is encoded once;
        its W items are extra queries against its one memory, as a user's beams are in beam search."""
        if len(hist) == 0 or len(items) % len(hist):
            raise ValueError(f"{len(items)} items cannot be split evenly over {len(hist)} histories")
        logits, code, _ = self.teacher_forced(*self.encode(hist), items)
        logp = torch.log_softmax(logits.double(), -1).gather(-1, code.clamp(min=0)[..., None])[..., 0]
        return torch.where(code >= 0, logp, 0.0).sum(1)

    @torch.no_grad()
    def generate(self, hist: torch.Tensor, table: CodeTable, beam: int = 20) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Trie-constrained beam search (:func:`ungerlib.model.beam.beam_search`): per user, the finished
        items and their log-probabilities."""
        from ungerlib.model.beam import beam_search

        return beam_search(self, hist, table, beam)


def trim(hist: np.ndarray) -> np.ndarray:
    """Drop the all-padding columns on the left of right-aligned histories [B, L] (same results:
    padding is masked, positions count from the right)."""
    longest = int((hist != PAD).sum(1).max()) if len(hist) else 1
    return hist[:, hist.shape[1] - max(longest, 1):]


def _check_inputs(splits: Splits, table: CodeTable, integrated: np.ndarray) -> None:
    if len(table) != splits.n_items:
        raise ValueError(f"code table has {len(table)} items but the data set has {splits.n_items}")
    if integrated.ndim != 2 or len(integrated) != splits.n_items:
        raise ValueError(f"integrated embeddings have shape {integrated.shape}; expected [{splits.n_items}, d]")
    if not np.isfinite(integrated).all():
        raise ValueError("integrated embeddings contain NaN/inf")


def build_model(table: CodeTable, integrated: np.ndarray, s2: C.Stage2Config, max_hist: int, seed: int,
                model_cls: type[UNGER] = UNGER) -> UNGER:
    """A freshly initialised ``model_cls`` (UNGER or a subclass: variants outside the paper) on DEVICE."""
    torch.manual_seed(seed)
    return model_cls(table, integrated.shape[1], s2, max_hist).to(DEVICE)


def train_stage2(splits: Splits, table: CodeTable, integrated: np.ndarray, cfg: C.RunConfig,
                 work_dir: Path | None = None, progress: bool = True,
                 after_epoch: Callable[[int], None] | None = None,
                 model_cls: type[UNGER] = UNGER) -> tuple[UNGER, list[dict[str, float]]]:
    """Train with Eq. 8 (:func:`ungerlib.model.train.fit`); keep the epoch with the best validation NDCG@20
    (beam ``eval_beam``, every item ranked). ``model_cls``: a subclass of :class:`UNGER` to train instead."""
    from ungerlib.model.beam import recommend
    from ungerlib.model.train import Schedule, fit, shuffled_batches

    _check_inputs(splits, table, integrated)
    s2 = cfg.stage2
    model = build_model(table, integrated, s2, splits.max_len, cfg.seed, model_cls)
    E = torch.from_numpy(integrated.astype(np.float32)).to(DEVICE)
    tr, n = splits.train, splits.n_items
    lengths = tr.lengths

    def loss_fn(idx: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        neg = torch.from_numpy(rng.integers(n, size=s2.ikd_negatives)).to(DEVICE) if s2.ikd else None
        tgt = lambda rows: torch.from_numpy(tr.target[rows]).to(DEVICE)  # noqa: E731
        if distributed.current().world == 1:
            return model.loss(torch.from_numpy(trim(tr.history[idx])).to(DEVICE), tgt(idx), E, neg)
        part = distributed.part(idx)  # under torchrun: this rank's share of the global batch
        hist = torch.from_numpy(trim(tr.history[part.rows])).to(DEVICE)
        return model.loss(hist, tgt(part.rows), E, neg, part, tgt(idx))

    def validate() -> dict[str, float]:
        ranked, _ = recommend(model, splits.valid.history, table, beam=s2.eval_beam, topk=20)
        return rank_metrics(ranked, splits.valid.target)

    res = fit(model, loss_fn, lambda rng: shuffled_batches(len(tr), s2.batch_size, rng, lengths, s2.bucket),
              validate, "ndcg@20", Schedule.of(s2), cfg.seed, work_dir, "stage2", progress, after_epoch, ddp=True)
    return model, res.history


def _inputs(cfg: C.RunConfig) -> tuple[Splits, CodeTable, np.ndarray]:
    from ungerlib.model.codes import item_codes
    from ungerlib.model.stage1 import stage1_embeddings

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
        return {"best_epoch": best["epoch"],
                "valid": {k[6:]: v for k, v in best.items() if k.startswith("valid_") and not k.endswith("_s")}}

    art = artefacts.cached("stage2", cfg, build, force=force)
    model = build_model(table, emb, cfg.stage2, splits.max_len, cfg.seed)
    model.load_state_dict(torch.load(art.path / "model.pt", map_location=DEVICE))
    return model.eval(), art.json("history")


def evaluate_stage2(cfg: C.RunConfig, force: bool = False) -> dict[str, Any]:
    """Valid and test metrics with beam ``cfg.eval.beam``, every item ranked (``all``) and with the
    user's whole history removed (``excl``).

    Per-user top-20 rankings are saved (``{valid,test}_{all,excl}.npy``) next to the metrics so
    anyone can recompute them or run paired tests (:func:`ungerlib.analyses.significance.paired_test`).
    The model is loaded only when the evaluation is not cached yet.
    """
    from ungerlib.model.rankings import save_rankings

    def build(out: Path, work: Path) -> dict[str, Any]:
        model, _ = run_stage2(cfg)
        splits, table, _ = _inputs(cfg)
        return {"metrics": save_rankings(model, splits, table, cfg.eval, out, cfg.stage2.precision)}

    art = artefacts.cached("eval", cfg, build, force=force)
    return {**art.json("metrics"), "path": str(art.path)}
