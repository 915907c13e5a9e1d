"""Is the beam finding the model's best items? The beam's top k against exact scoring.

A generative recommender ranks by beam search, which can miss an item whose first tokens score low
and whose later ones score high. Exact scoring gives every item the sum of its code's log-probabilities
(the model's probability of generating it); a beam at least as wide as the widest level of the code
trie keeps every prefix alive, so it is exact (``tests/model/test_beam.py`` checks it against teacher
forcing item by item). For a fixed sample of validation users this compares the two top-k lists: how
many items they share, how often they are identical, and what the difference does to Recall and NDCG
(the check Cornac runs for its generative models). Validation only.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ungerlib.model.codes import CodeTable
from ungerlib.model.data import Examples
from ungerlib.model.metrics import rank_metrics


def exhaustive_beam(table: CodeTable) -> int:
    """The beam width at which beam search keeps every prefix of ``table``'s trie alive: exact scoring."""
    return int(np.bincount(table.node_depth).max())


def exact_vs_beam(model: Any, ex: Examples, table: CodeTable, beam: int, users: int = 1000, k: int = 20,
                  seed: int = 0) -> pd.DataFrame:
    """One row per ranking (``all``: every item; ``excl``: the user's history removed): mean overlap
    of the exact and the beam top ``k`` (share of the k items in both), the share of users whose two
    lists are identical, and Recall/NDCG@10 and @20 of both and their difference (exact - beam), on
    a fixed seeded sample of ``users`` rows of ``ex``."""
    from ungerlib.model.beam import recommend_both

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(ex), min(users, len(ex)), replace=False))
    sub = ex.subset(idx)
    exact = recommend_both(model, sub.history, table, beam=exhaustive_beam(table), topk=k, batch_size=1,
                           exclude=sub.exclude)
    approx = recommend_both(model, sub.history, table, beam=beam, topk=k, exclude=sub.exclude)
    rows = []
    for ranking, (e, _), (a, _) in zip(("all", "excl"), exact, approx):
        shared = np.array([len(set(x[x >= 0]) & set(y[y >= 0])) for x, y in zip(e, a)]) / k
        ks = tuple(x for x in (10, 20) if x <= k)
        me, ma = rank_metrics(e, sub.target, ks), rank_metrics(a, sub.target, ks)
        rows.append({"ranking": ranking, "users": len(idx), "beam": beam, "exact beam": exhaustive_beam(table),
                     f"overlap@{k}": float(shared.mean()), "identical lists": float(np.mean([np.array_equal(x, y)
                                                                                            for x, y in zip(e, a)])),
                     **{f"exact {m}": v for m, v in me.items()}, **{f"beam {m}": v for m, v in ma.items()},
                     **{f"exact - beam {m}": me[m] - ma[m] for m in me}})
    return pd.DataFrame(rows).set_index("ranking")
