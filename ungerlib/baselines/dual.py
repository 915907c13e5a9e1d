"""An EAGER-style dual code on our Stage II engine: two codes per item, two decoders, one shared encoder,
and EAGER's merge of the two ranked lists (Wang et al., KDD 2024; public code yewzz/EAGER).

The paper's thesis is that one unified code beats two separate ones (its Table 1 and Table 3); this is
the "two separate ones", built from the same parts as our UNGER rows so that only the kind of code
differs:

* **codes**: a behaviour code, hierarchical k-means on the collaborative embeddings of DIN trained
  alone (Stage I without CKA, as EAGER's DIN), and a semantic code, hierarchical k-means on the frozen
  text embeddings E_S (EAGER clusters both with k-means, as we do; it uses balanced k-means, K = 128,
  two levels, where we use our hierarchical k-means with the profile's K for both kinds of code);
* **model**: two :class:`~ungerlib.model.stage2.UNGER` streams, one per code, whose Transformer encoder
  (layers, positions, final norm) is one shared module, while each stream keeps its own history-token
  tables, decoder and output (EAGER: one encoder, a separate item-ID table per stream, run once per
  stream). The loss is the sum of both streams' Eq. 8: generation plus IKD against the embedding that
  stream's code quantises, which is EAGER's global contrastive task in our engine's form (EAGER weights
  the semantic stream's 10x; we weight both 1, and leave out its semantic-guided transfer task, which
  its released script switches off);
* **merge**: each stream's trie-constrained beam gives its top k; the union of the two lists is
  rescored by the sum over both streams of the log-probability each gives the candidate's own code,
  ``log p_beh(code_beh(i)) + log p_sem(code_sem(i))``, and the best k are kept. That is the rule of
  EAGER's released code (its ``rerank``): every candidate is scored by both streams, whichever proposed
  it. For the history-excluded ranking each stream's list drops the history before the union.

Two decoder forms, as for every kind of code (``stage2_grid``): codes only (row A) and with item tables
(row J). Artefact kinds ``stage2_dual`` and ``eval_dual`` (:mod:`ungerlib.infra.artefacts`), keyed by the
unified config they are derived from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ungerlib.infra import artefacts
from ungerlib.infra import config as C
from ungerlib.model.codes import CodeTable
from ungerlib.model.data import PAD, Splits
from ungerlib.model.stage2 import DEVICE, UNGER, trim

STREAMS = ("behaviour", "semantic")


def stream_configs(cfg: C.RunConfig) -> dict[str, C.RunConfig]:
    """The config of each stream's code: DIN alone (behaviour) and the frozen text embeddings (semantic),
    each quantised by ``cfg.codes``."""
    return {"behaviour": cfg.replace(stage1={"variant": "collab", "alpha": 0.0}),
            "semantic": cfg.replace(stage1={"variant": "semantic"})}


@dataclass
class Inputs:
    splits: Splits
    tables: dict[str, CodeTable]
    embeddings: dict[str, np.ndarray]  # what each stream's code quantises, [n_items, d]


def inputs(cfg: C.RunConfig) -> Inputs:
    """Splits, both code tables and both embeddings (cached artefacts; missing ones are built)."""
    from ungerlib.model.codes import item_codes
    from ungerlib.model.data import get_splits
    from ungerlib.model.stage1 import stage1_embeddings

    _, splits = get_splits(cfg)
    cfgs = stream_configs(cfg)
    return Inputs(splits, {s: item_codes(c) for s, c in cfgs.items()},
                  {s: stage1_embeddings(c, progress=False).integrated for s, c in cfgs.items()})


class DualUNGER(nn.Module):
    """Two UNGER streams over two code tables with one shared encoder (module docstring)."""

    def __init__(self, tables: dict[str, CodeTable], d_int: dict[str, int], s2: C.Stage2Config, max_hist: int):
        super().__init__()
        if set(tables) != set(STREAMS):
            raise ValueError(f"a dual code needs the streams {STREAMS}, got {sorted(tables)}")
        self.tables = dict(tables)  # the tries each stream's beam searches
        self.streams = nn.ModuleDict({s: UNGER(tables[s], d_int[s], s2, max_hist) for s in STREAMS})
        first, other = self.streams[STREAMS[0]], self.streams[STREAMS[1]]
        other.encoder, other.enc_ln, other.enc_pos = first.encoder, first.enc_ln, first.enc_pos  # one encoder

    def loss(self, hist: torch.Tensor, target: torch.Tensor, E: dict[str, torch.Tensor] | None,
             neg: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The sum of both streams' Eq. 8; ``E``: each stream's embeddings for its IKD term."""
        out: dict[str, torch.Tensor] = {}
        for s, m in self.streams.items():
            terms = m.loss(hist, target, None if E is None else E[s], neg)
            out["loss"] = out.get("loss", 0) + terms["loss"]
            out.update({f"gen_{s}": terms["gen"], f"ikd_{s}": terms["ikd"]})
        return out

    @torch.no_grad()
    def rankings(self, histories: np.ndarray, beam: int, topk: int, exclude: np.ndarray,
                 batch_size: int = 256) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """EAGER's merge, for every item ranked and for the history excluded: ``((items, scores),
        (items, scores))``, each [N, topk], -1 / -inf where fewer candidates exist."""
        from ungerlib.model.beam import recommend_both

        self.eval()
        lists = {s: recommend_both(m, histories, self.tables[s], beam=beam, topk=topk, batch_size=batch_size,
                                   exclude=exclude) for s, m in self.streams.items()}
        # one merge for both rankings: a user's candidates in either are scored once
        every, excluded = self.merge_all(histories, [{s: lists[s][r][0] for s in STREAMS} for r in (0, 1)], topk)
        return every, excluded

    @torch.no_grad()
    def recommend(self, histories: np.ndarray, beam: int, topk: int,
                  batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """EAGER's merge for one ranking, every item ranked (what serving a user costs): each stream's
        beam, then :meth:`merge`. ``(items, scores)``, each [N, topk]."""
        from ungerlib.model.beam import recommend

        self.eval()
        lists = {s: recommend(m, histories, self.tables[s], beam=beam, topk=topk, batch_size=batch_size)[0]
                 for s, m in self.streams.items()}
        return self.merge(histories, lists, topk)

    def merge(self, histories: np.ndarray, lists: dict[str, np.ndarray], topk: int) -> tuple[np.ndarray, np.ndarray]:
        """The union of each stream's list ``lists[s]`` [N, k] (-1 pads) per user, rescored by the sum of
        both streams' log-probabilities of the candidate's own code, best ``topk`` kept (ties by item id)."""
        return self.merge_all(histories, [lists], topk)[0]

    @torch.no_grad()
    def merge_all(self, histories: np.ndarray, rankings: list[dict[str, np.ndarray]],
                  topk: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`merge` of several rankings' lists (e.g. every item ranked, and the history excluded) of
        the same users: each user's candidates in any of them are scored once."""
        pooled = [np.unique(np.concatenate([r[s][u] for r in rankings for s in STREAMS])) for u in range(len(histories))]
        pooled = [c[c >= 0] for c in pooled]
        score = self.candidate_log_probs(histories, pooled)
        out = []
        for r in rankings:
            ranked = np.full((len(histories), topk), PAD, np.int64)
            scores = np.full((len(histories), topk), -np.inf)
            for u, (c, sc) in enumerate(zip(pooled, score)):
                mine = np.unique(np.concatenate([r[s][u] for s in STREAMS]))
                mine = mine[mine >= 0]
                c_sc = sc[np.searchsorted(c, mine)]
                order = np.lexsort((mine, -c_sc))[:topk]  # best summed log-probability; ties by item id
                ranked[u, :len(order)], scores[u, :len(order)] = mine[order], c_sc[order]
            out.append((ranked, scores))
        return out

    @torch.no_grad()
    def candidate_log_probs(self, histories: np.ndarray, cand: list[np.ndarray], chunk: int = 4096) -> list[np.ndarray]:
        """For each user u, the sum over both streams of the log-probability of each item of ``cand[u]``
        (its own code in each stream), given ``histories[u]``. Users with the same number W of candidates
        are scored together, ``chunk`` candidates at a time: each history encoded once, its W candidates
        decoded against it (:meth:`UNGER.code_log_prob`)."""
        self.eval()
        score = [np.zeros(len(c)) for c in cand]
        n = np.array([len(c) for c in cand], dtype=np.int64)
        for w in np.unique(n[n > 0]).tolist():
            users = np.flatnonzero(n == w)
            step = max(1, chunk // w)
            for b in range(0, len(users), step):
                us = users[b:b + step]
                h = torch.from_numpy(trim(histories[us])).to(DEVICE)
                items = torch.from_numpy(np.concatenate([cand[u] for u in us])).to(DEVICE)
                total = sum(m.code_log_prob(h, items).cpu().numpy() for m in self.streams.values())
                for u, sc in zip(us, total.reshape(len(us), w)):
                    score[u] = sc
        return score


def build(tables: dict[str, CodeTable], embeddings: dict[str, np.ndarray], s2: C.Stage2Config, max_hist: int,
          seed: int) -> DualUNGER:
    """A freshly initialised :class:`DualUNGER` on DEVICE (seeded like ``stage2.build_model``)."""
    torch.manual_seed(seed)
    return DualUNGER(tables, {s: e.shape[1] for s, e in embeddings.items()}, s2, max_hist).to(DEVICE)


def train_dual(data: Inputs, cfg: C.RunConfig, work_dir: Path | None = None,
               progress: bool = True) -> tuple[DualUNGER, list[dict[str, float]]]:
    """Train both streams with :func:`ungerlib.model.train.fit` (the Stage II budget and schedule of
    ``cfg``); keep the epoch with the best validation NDCG@20 of the merged ranking (beam ``eval_beam``)."""
    from ungerlib.model.metrics import rank_metrics
    from ungerlib.model.train import Schedule, fit, shuffled_batches

    s2, tr, n = cfg.stage2, data.splits.train, data.splits.n_items
    model = build(data.tables, data.embeddings, s2, data.splits.max_len, cfg.seed)
    E = {s: torch.from_numpy(e.astype(np.float32)).to(DEVICE) for s, e in data.embeddings.items()}

    def loss_fn(idx: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        neg = torch.from_numpy(rng.integers(n, size=s2.ikd_negatives)).to(DEVICE) if s2.ikd else None
        hist = torch.from_numpy(trim(tr.history[idx])).to(DEVICE)
        return model.loss(hist, torch.from_numpy(tr.target[idx]).to(DEVICE), E, neg)

    def validate() -> dict[str, float]:
        v = data.splits.valid
        ranked, _ = model.recommend(v.history, s2.eval_beam, 20)  # every item ranked: the list selection reads
        return rank_metrics(ranked, v.target)

    res = fit(model, loss_fn, lambda rng: shuffled_batches(len(tr), s2.batch_size, rng, tr.lengths, s2.bucket),
              validate, "ndcg@20", Schedule.of(s2), cfg.seed, work_dir, "dual", progress)
    return model, res.history


def run_dual(cfg: C.RunConfig, force: bool = False, progress: bool = True) -> tuple[DualUNGER, list[dict]]:
    """Cached :func:`train_dual` (artefact kind ``stage2_dual``): the selected model and its history."""
    from ungerlib.infra.store import atomic_torch_save, atomic_write_json

    data = inputs(cfg)

    def build_fn(out: Path, work: Path) -> dict[str, Any]:
        model, hist = train_dual(data, cfg, work, progress)
        atomic_torch_save(model.state_dict(), out / "model.pt")
        atomic_write_json(out / "history.json", hist)
        return {"best_epoch": max(hist, key=lambda h: h.get("valid_ndcg@20", -1))["epoch"]}

    art = artefacts.cached("stage2_dual", cfg, build_fn, force=force)
    model = build(data.tables, data.embeddings, cfg.stage2, data.splits.max_len, cfg.seed)
    model.load_state_dict(torch.load(art.path / "model.pt", map_location=DEVICE))
    return model.eval(), art.json("history")


def evaluate_dual(cfg: C.RunConfig, force: bool = False) -> dict[str, Any]:
    """Valid and test rankings of the merged lists (beam ``cfg.eval.beam`` per stream), both rankings
    saved as ``{valid,test}_{all,excl}.npy`` with ``metrics.json`` (artefact kind ``eval_dual``)."""
    from ungerlib.infra.store import atomic_write_json
    from ungerlib.model.metrics import rank_metrics

    def build_fn(out: Path, work: Path) -> dict[str, Any]:
        model, _ = run_dual(cfg)
        splits = inputs(cfg).splits
        res: dict[str, Any] = {}
        for split in ("valid", "test"):
            ex = getattr(splits, split)
            both = model.rankings(ex.history, cfg.eval.beam, max(cfg.eval.ks), ex.exclude)
            for tag, (ranked, _) in zip((f"{split}_all", f"{split}_excl"), both):
                np.save(out / f"{tag}.npy", ranked)
                res[tag] = rank_metrics(ranked, ex.target, cfg.eval.ks)
        atomic_write_json(out / "metrics.json", res)
        return {"metrics": res}

    art = artefacts.cached("eval_dual", cfg, build_fn, force=force)
    return {**art.json("metrics"), "path": str(art.path)}
