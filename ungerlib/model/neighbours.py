"""Stage I neighbours at decoding: the cosine to the user's last item added to each child's score
(beyond the paper).

Row J recalls almost none of the test targets that were trained fewer than five times (Sports: 0.0010
Recall@10 against the cosine kNN's 0.0249), while the kNN on the very Stage I embeddings that the codes
quantise recalls them best of every model (``docs/experiments/stage2_rare_items.md``). UNGER's premise
is that Stage I's integrated embeddings carry that knowledge; IKD hands it to Stage II through
training. Here it is also handed over at decoding: each child ``c`` of a prefix gets

    s'(c) = s(c) + lambda_l * cos(e_last, v_c)

with ``s(c)`` the model's score (logit) of child ``c``, ``e_last`` the Stage I integrated embedding of the
user's last history item, ``v_c`` the normalised sum of the Stage I embeddings of the items under
``c`` (at a leaf, the item's own), ``lambda_0`` at the first code level and ``lambda_1`` below it. The
last item itself gets no boost (every-item ranking: it would otherwise be pushed up). The softmax
over each prefix's children and the trie-constrained beam are unchanged, so the beam still generates
each item's unicode and returns valid, distinct items. ``lambda = (0, 0)`` is the model itself.

lambda is a decoding setting chosen on validation NDCG@20 (every item ranked) over :data:`GRID`
(:func:`tune`); nothing is retrained. ``evaluate_neighbours(cfg, lam)`` caches valid and test
rankings (artefact kind ``eval_neighbours``, keyed by Stage II's evaluation key and lambda).

    python -m ungerlib neighbours --profile cpu --dataset Sports
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ungerlib.infra import artefacts, cli, config as C, runtime
from ungerlib.model.rankings import save_rankings

# (lambda_0, lambda_1) tried by :func:`tune`; (0, 0) is the model's own evaluation (the plain beam).
# Why these: docs/experiments/settings_choices.md.
GRID: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.0, 5.0), (2.0, 5.0), (5.0, 10.0))


def node_vectors(path: torch.Tensor, emb: np.ndarray) -> torch.Tensor:
    """[n_nodes, d] unit vectors of the trie nodes: the normalised sum of the unit Stage I embeddings
    of the items under each node (a leaf: its item's own). ``path`` [n, Lc]: each item's node at each
    code level (-1 past its code's end); ``emb`` [n, d]; the root's row is unused."""
    if emb.ndim != 2 or len(emb) != len(path):
        raise ValueError(f"emb must hold one Stage I embedding per item ({len(path)}), got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError("emb holds NaN or infinite values")
    e = torch.from_numpy(emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)).float()
    v = torch.zeros(int(path.max()) + 1, e.shape[1])
    for level in range(path.shape[1]):
        ok = path[:, level] >= 0
        v.index_add_(0, path[ok, level], e[ok])
    return v / v.norm(dim=1, keepdim=True).clamp(min=1e-12)


class NeighbourDecoder(nn.Module):
    """``model`` (an :class:`ungerlib.model.stage2.UNGER`) decoded with the Stage I cosine added to each
    child's score (module docstring). It has the incremental decoding API the beam uses
    (:meth:`decode_start`, :meth:`decode_step`, ``next_node``) and leaves ``model`` untouched."""

    def __init__(self, model: nn.Module, emb: np.ndarray, lam: tuple[float, float]):
        super().__init__()
        if len(lam) != 2 or not all(math.isfinite(x) and x >= 0 for x in lam):
            raise ValueError(f"lambda must be two finite, non-negative weights (first level, below), got {lam}")
        self.model, self.lam = model, (float(lam[0]), float(lam[1]))
        self.next_node = model.next_node
        self.register_buffer("node_vec", node_vectors(model.path.cpu(), emb), persistent=False)

    def _boost(self, logits: torch.Tensor, node: torch.Tensor, level: int) -> torch.Tensor:
        """logits [R, K] of the children of trie nodes ``node`` [R] at code level ``level``, plus
        lambda_level * cos(e_last, v_child); the user's last item gets nothing."""
        lam = self.lam[min(level, 1)]
        if lam == 0:
            return logits
        user = torch.arange(len(node), device=node.device) // (len(node) // len(self._sims))  # [R]
        child = self.next_node[node]  # [R, K], -1 = no such child
        sim = self._sims[user[:, None], child.clamp(min=0)]
        sim = torch.where((child >= 0) & (child != self._last_leaf[user, None]), sim, 0.0)
        return logits + lam * sim

    def decode_start(self, hist: torch.Tensor):
        """As ``UNGER.decode_start``: hist [B, L] (right-aligned) -> state, boosted logits [B, K]."""
        st, logits = self.model.decode_start(hist)
        last = hist[:, -1].clamp(min=0)
        self._last_leaf = self.model.leaf[last]  # a leaf's node vector is its item's unit embedding
        self._sims = self.node_vec[self._last_leaf] @ self.node_vec.T  # [B, n_nodes]: cos(e_last, v_node)
        return st, self._boost(logits, st.node, st.level)

    def decode_step(self, st, parent: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        """As ``UNGER.decode_step`` (each user's rows contiguous, the same number per user)."""
        return self._boost(self.model.decode_step(st, parent, tok), st.node, st.level)


def evaluate_neighbours(cfg: C.RunConfig, neighbour_lambda: tuple[float, float], force: bool = False) -> dict[str, Any]:
    """As ``stage2.evaluate_stage2`` (beam ``cfg.eval.beam``, valid and test, both rankings, rankings
    saved) for ``cfg``'s cached Stage II model decoded by :class:`NeighbourDecoder` with lambda
    ``neighbour_lambda`` (first level, below); ``(0, 0)`` returns ``evaluate_stage2(cfg)`` itself."""
    from ungerlib.model.stage2 import _inputs, evaluate_stage2, run_stage2

    lam = (float(neighbour_lambda[0]), float(neighbour_lambda[1]))
    if lam == (0.0, 0.0):
        return evaluate_stage2(cfg)

    def build(out: Path, work: Path) -> dict[str, Any]:
        model, _ = run_stage2(cfg, progress=False)
        splits, table, emb = _inputs(cfg)
        fused = NeighbourDecoder(model, emb, lam).eval()
        return {"metrics": save_rankings(fused, splits, table, cfg.eval, out, cfg.stage2.precision)}

    art = artefacts.cached("eval_neighbours", cfg, build, force=force, neighbour_lambda=list(lam))
    return {**art.json("metrics"), "path": str(art.path)}


def tune(cfg: C.RunConfig, grid: tuple[tuple[float, float], ...] = GRID) -> tuple[tuple[float, float], pd.DataFrame]:
    """Validation metrics (every item ranked and history excluded) for each lambda in ``grid``, and the
    lambda with the best validation NDCG@20 (every item ranked). Test is not read here."""
    rows = []
    for lam in grid:
        res = evaluate_neighbours(cfg, lam)
        rows.append({"lambda": f"{lam[0]:g}, {lam[1]:g}", **{f"{tag} {m}": v for tag in ("valid_all", "valid_excl")
                                                           for m, v in res[tag].items()}})
    table = pd.DataFrame(rows).set_index("lambda")
    best = grid[int(np.argmax(table["valid_all ndcg@20"].to_numpy()))]
    return best, table


def selected(cfg: C.RunConfig, grid: tuple[tuple[float, float], ...] = GRID) -> tuple[tuple[float, float], dict[str, Any]]:
    """The lambda :func:`tune` selects on validation and its evaluation (``evaluate_neighbours``:
    metrics of every split and ranking, and the ``path`` of the saved rankings)."""
    lam, _ = tune(cfg, grid)
    return lam, evaluate_neighbours(cfg, lam)


def _lam(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"lambda must be 'first,below', e.g. 2,5; got {text!r}") from None
    return a, b


def _main(a: argparse.Namespace) -> None:
    runtime.configure_threads()
    cfg = C.profile(a.profile, a.dataset, **C.parse_overrides(a.set))
    best, table = tune(cfg, tuple(a.grid))
    print(f"{cfg.data.dataset}: validation by lambda (beam {cfg.eval.beam})")
    print(table.round(4).to_string())
    res = evaluate_neighbours(cfg, best)  # the selected lambda's evaluation (cached by tune)
    print(f"selected lambda = {best}; test: " + "; ".join(
        f"{tag} " + " ".join(f"{m}={v:.4f}" for m, v in res[tag].items()) for tag in ("test_all", "test_excl"))
          + f" -> {res['path']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ungerlib neighbours", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=C.PROFILES)
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--grid", nargs="+", type=_lam, default=list(GRID), metavar="L0,L1")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help=cli.SET_HELP)
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    return cli.run(_main, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
