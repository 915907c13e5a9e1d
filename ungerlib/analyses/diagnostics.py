"""Where one ranking wins and another loses: users split by where their held-out item sits in the
code trie relative to their last history item.

The cosine kNN from the last item (:func:`ungerlib.baselines.references.knn_rankings`) is the reference Stage II
has the hardest time beating (issue 11, ``docs/experiments/stage2_where_it_loses.md``). The split
that explains the gap is whether the held-out item shares its first unicode token (its first-level
k-means cluster) with the user's last item:

* ``same cluster``: the next item is a sibling of the last one in the trie. A lookup on the
  embeddings that made the clusters ranks siblings by fine-grained similarity;
* ``other cluster``: the next item is elsewhere, where sequence modelling has to do the work.

:func:`cluster_breakdown` gives each ranking's Recall/NDCG@k in each group, and
:func:`last_cluster_share` how much of each ranking's top k stays in the last item's cluster.
:func:`frequency_breakdown` splits users instead by how often their last history item (or their
held-out item) is a training target: a test history ends with the validation item, which is rarer
in training than the last item of a validation history, and a model whose per-item vectors are weak
for rare items loses more from validation to test.

    python -m ungerlib diagnostics --profile cpu --dataset Toys [--by last] [--set stage2.epochs=30]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from ungerlib.infra import cli, config, runtime
from ungerlib.model.codes import CodeTable
from ungerlib.model.data import PAD, Examples
from ungerlib.model.metrics import rank_metrics

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


FREQUENCY_EDGES = (5, 20)


def frequency_names(edges: tuple[int, ...] = FREQUENCY_EDGES) -> list[str]:
    """Group labels for increasing count ``edges``: ``"< e0"``, ``"e0-(e1-1)"``, ..., ``">= e_last"``."""
    if not edges or list(edges) != sorted(set(edges)) or edges[0] < 1:
        raise ValueError(f"edges must be increasing positive counts, got {edges}")
    return [f"< {edges[0]}"] + [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f">= {edges[-1]}"]


def frequency_groups(counts: np.ndarray, items: np.ndarray, edges: tuple[int, ...] = FREQUENCY_EDGES) -> np.ndarray:
    """[N] labels (:func:`frequency_names`) of ``items`` [N] by their training count ``counts[item]``."""
    names = frequency_names(edges)
    if items.min() < 0 or items.max() >= len(counts):
        raise ValueError(f"item ids must lie in [0, {len(counts)}) (the counted items), got [{items.min()}, {items.max()}]")
    return np.asarray(names, dtype=object)[np.searchsorted(edges, counts[items], side="right")]


def frequency_breakdown(rankings: dict[str, np.ndarray], counts: np.ndarray, ex: Examples, of: str = "last",
                        edges: tuple[int, ...] = FREQUENCY_EDGES, ks: tuple[int, ...] = (10, 20)) -> pd.DataFrame:
    """Recall/NDCG@k of each ranking among all users and in groups by the training count ``counts``
    [n_items] (``np.bincount(splits.train.target)``) of each user's last history item (``of="last"``)
    or held-out item (``of="target"``). Columns as :func:`cluster_breakdown`'s."""
    _check(rankings, ex)
    if of not in ("last", "target"):
        raise ValueError(f"of must be 'last' or 'target', got {of!r}")
    items = ex.history[:, -1] if of == "last" else ex.target
    if (items == PAD).any():
        raise ValueError(f"{int((items == PAD).sum())} example(s) have an empty history: no last item to count")
    group = frequency_groups(counts, items, edges)
    out = {}
    for name in ["all", *frequency_names(edges)]:
        m = np.ones(len(ex), bool) if name == "all" else group == name
        row: dict[str, float] = {"users": float(m.mean())}
        for r_name, r in rankings.items():
            if m.any():
                row.update({f"{r_name} {k}": v for k, v in rank_metrics(r[m], ex.target[m], ks).items()})
        out[f"{of} item trained {name}" if name != "all" else "all"] = row
    return pd.DataFrame.from_dict(out, orient="index")


def _unger_and_knn(cfg: config.RunConfig, split: str):
    from ungerlib.model.data import get_splits
    from ungerlib.analyses.table3 import REFERENCES, reference_rankings, unger_rankings

    _, splits = get_splits(cfg)
    tag = f"{split}_excl"
    return splits, {"UNGER": unger_rankings(cfg)[tag], "kNN": reference_rankings(cfg)[REFERENCES[1]][tag]}


def unger_vs_knn(cfg: config.RunConfig, split: str = "valid") -> tuple[pd.DataFrame, pd.Series]:
    """:func:`cluster_breakdown` and :func:`last_cluster_share` of UNGER (``cfg``'s cached Stage II
    evaluation) against the last-item kNN, history excluded (the only ranking the kNN has)."""
    from ungerlib.model.codes import item_codes

    splits, rankings = _unger_and_knn(cfg, split)
    ex, table = getattr(splits, split), item_codes(cfg)
    return cluster_breakdown(rankings, table, ex), last_cluster_share(rankings, table, ex)


def unger_vs_knn_by_frequency(cfg: config.RunConfig, split: str = "valid", of: str = "last") -> pd.DataFrame:
    """:func:`frequency_breakdown` of UNGER against the last-item kNN (history excluded)."""
    splits, rankings = _unger_and_knn(cfg, split)
    counts = np.bincount(splits.train.target, minlength=splits.n_items)
    return frequency_breakdown(rankings, counts, getattr(splits, split), of)


def _main(a: argparse.Namespace) -> None:
    runtime.configure_threads()
    cfg = config.profile(a.profile, a.dataset, **config.parse_overrides(a.set))
    print(f"{cfg.data.dataset}, {a.split} split, history excluded"
          + ("  (TEST SPLIT: a design shaped by this look is post hoc; say so next to its result)" if a.split == "test" else ""))
    if a.by == "cluster":
        table, share = unger_vs_knn(cfg, a.split)
        print(table.round(4).to_string())
        print(share.round(4).to_string())
    else:
        print(unger_vs_knn_by_frequency(cfg, a.split, a.by).round(4).to_string())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ungerlib diagnostics", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=config.PROFILES)
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--split", default="valid", choices=("valid", "test"),
                    help="validation by default: a look at test that shapes a design is post hoc, and must be said")
    ap.add_argument("--by", default="cluster", choices=("cluster", "last", "target"),
                    help="split users by the held-out item's cluster (default), or by how often their last "
                         "history item / held-out item is a training target")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help=cli.SET_HELP)
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    return cli.run(_main, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
