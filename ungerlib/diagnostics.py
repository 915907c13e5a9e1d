"""Where one ranking wins and another loses: users split by where their held-out item sits in the
code trie relative to their last history item.

The cosine kNN from the last item (:func:`ungerlib.analysis.knn_rankings`) is the reference Stage II
has the hardest time beating (issue 11, ``docs/experiments/stage2_where_it_loses.md``). The split
that explains the gap is whether the held-out item shares its first unicode token (its first-level
k-means cluster) with the user's last item:

* ``same cluster``: the next item is a sibling of the last one in the trie. A lookup on the
  embeddings that made the clusters ranks siblings by fine-grained similarity;
* ``other cluster``: the next item is elsewhere, where sequence modelling has to do the work.

:func:`cluster_breakdown` gives each ranking's Recall/NDCG@k in each group, and
:func:`last_cluster_share` how much of each ranking's top k stays in the last item's cluster.

    python -m ungerlib.diagnostics --profile cpu --dataset Toys [--set stage2.epochs=30]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from . import cli, config, runtime
from .codes import CodeTable
from .data import PAD, Examples
from .metrics import rank_metrics

GROUPS = ("all", "same cluster", "other cluster")


def first_tokens(table: CodeTable) -> np.ndarray:
    """[n_items] int64: each item's first code token (its first-level cluster)."""
    return np.array([c[0] for c in table.codes], dtype=np.int64)


def same_cluster(table: CodeTable, ex: Examples) -> np.ndarray:
    """[N] bool: the held-out item shares its first code token with the user's last history item."""
    last = ex.history[:, -1]
    if (last == PAD).any():
        raise ValueError(f"{int((last == PAD).sum())} example(s) have an empty history: no last item to compare with")
    first = first_tokens(table)
    for name, ids in (("history", last), ("target", ex.target)):
        if ids.min() < 0 or ids.max() >= len(first):
            raise ValueError(f"{name} item ids must lie in [0, {len(first)}) (the code table's items), "
                             f"got [{ids.min()}, {ids.max()}]")
    return first[last] == first[ex.target]


def _check(rankings: dict[str, np.ndarray], ex: Examples) -> None:
    if not rankings:
        raise ValueError("no rankings to compare")
    for name, r in rankings.items():
        if r.ndim != 2 or len(r) != len(ex):
            raise ValueError(f"ranking {name!r} must be [N = {len(ex)}, k], got shape {r.shape}")


def cluster_breakdown(rankings: dict[str, np.ndarray], table: CodeTable, ex: Examples,
                      ks: tuple[int, ...] = (10, 20)) -> pd.DataFrame:
    """Recall/NDCG@k of each ranking (``rankings[name]`` [N, >= max(ks)] item ids, best first) among
    all users, those whose held-out item is in the last item's cluster, and the others. Index: group
    (:data:`GROUPS`); columns: ``users`` (share of ``ex``) and ``<name> recall@k`` / ``<name> ndcg@k``."""
    _check(rankings, ex)
    same = same_cluster(table, ex)
    out = {}
    for group, m in zip(GROUPS, (np.ones_like(same), same, ~same)):
        row: dict[str, float] = {"users": float(m.mean())}
        for name, r in rankings.items():
            if m.any():
                row.update({f"{name} {k}": v for k, v in rank_metrics(r[m], ex.target[m], ks).items()})
        out[group] = row
    return pd.DataFrame.from_dict(out, orient="index")


def last_cluster_share(rankings: dict[str, np.ndarray], table: CodeTable, ex: Examples, k: int = 10) -> pd.Series:
    """Share of each ranking's top ``k`` items (padding -1 excluded) that are in the user's last
    item's first-level cluster."""
    _check(rankings, ex)
    same_cluster(table, ex)  # checks the ids
    first = first_tokens(table)
    last = first[ex.history[:, -1]][:, None]
    out = {}
    for name, r in rankings.items():
        top = r[:, :k]
        valid = top >= 0
        out[name] = float(((first[np.where(valid, top, 0)] == last) & valid).sum() / max(valid.sum(), 1))
    return pd.Series(out, name=f"top-{k} share in the last item's cluster")


def unger_vs_knn(cfg: config.RunConfig, split: str = "test") -> tuple[pd.DataFrame, pd.Series]:
    """:func:`cluster_breakdown` and :func:`last_cluster_share` of UNGER (``cfg``'s cached Stage II
    evaluation) against the last-item kNN, history excluded (the only ranking the kNN has)."""
    from .codes import item_codes
    from .data import get_splits
    from .overall import REFERENCES, unger_rankings, reference_rankings

    _, splits = get_splits(cfg)
    ex, table = getattr(splits, split), item_codes(cfg)
    tag = f"{split}_excl"
    rankings = {"UNGER": unger_rankings(cfg)[tag], "kNN": reference_rankings(cfg)[REFERENCES[1]][tag]}
    return cluster_breakdown(rankings, table, ex), last_cluster_share(rankings, table, ex)


def _main(a: argparse.Namespace) -> None:
    runtime.configure_threads()
    cfg = config.profile(a.profile, a.dataset, **config.parse_overrides(a.set))
    table, share = unger_vs_knn(cfg, a.split)
    print(f"{cfg.data.dataset}, {a.split} split, history excluded")
    print(table.round(4).to_string())
    print(share.round(4).to_string())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ungerlib.diagnostics", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=config.PROFILES)
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--split", default="test", choices=("valid", "test"))
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help=cli.SET_HELP)
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    return cli.run(_main, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
