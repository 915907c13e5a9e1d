"""Does Stage II earn its place? UNGER's test rankings (decoded with the Stage I neighbours term,
:data:`OURS`, and by the paper's plain beam, :data:`PLAIN`) against the references it must beat
(notebook 04): the cosine kNN on the very Stage I embeddings its codes come from, popularity, and a
same-split SASRec trained with a softmax (cross-entropy) loss and tuned on validation
(:mod:`ungerlib.overall`), each with a paired test over test users.

The kNN ranks with the user's history excluded (with every item ranked its first item would be the
last item itself), so both of UNGER's rankings are compared with that one list; SASRec and UNGER
are compared ranking by ranking.
"""
from __future__ import annotations

import pandas as pd

from . import config as C
from .overall import OURS, REFERENCES, Overall, overall

KNN, POPULARITY = REFERENCES[1], REFERENCES[0]
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def results(cfg: C.RunConfig, sasrec: bool = True) -> Overall:
    """UNGER's, the references' and (``sasrec``) the tuned SASRec's per-user rankings on ``cfg``'s data
    (all cached artefacts; missing ones are trained)."""
    return overall(cfg, models=("SASRec",) if sasrec else ())


def paired(res: Overall, other: str, split: str = "test", mine: str = OURS) -> pd.DataFrame:
    """UNGER (row ``mine``: :data:`OURS`, or :data:`PLAIN` for the paper's decoding) against row ``other``
    of ``res``: per UNGER ranking (all, excl) the means of both, the difference and the paired t-test /
    Wilcoxon p-values over the users of ``split``. ``other`` is compared ranking by ranking where it has
    both, else with its one (history-excluded) list."""
    from .metrics import per_user
    from .significance import paired_test

    out = []
    target = res.targets[split]
    for ranking in ("all", "excl"):
        ours = res.rows[mine][f"{split}_{ranking}"]
        theirs_tag = f"{split}_{ranking}" if f"{split}_{ranking}" in res.rows[other] else f"{split}_excl"
        a, b = per_user(ours, target), per_user(res.rows[other][theirs_tag], target)
        for m in METRICS:
            t = paired_test(a[m], b[m])
            out.append({"dataset": res.dataset, "UNGER row": mine, "versus": other, "UNGER ranking": ranking,
                        "their ranking": theirs_tag.split("_")[1], "metric": m, "UNGER": t["mean_a"],
                        "them": t["mean_b"], "difference": t["mean_a"] - t["mean_b"],
                        "t-test p": t["t_pvalue"], "Wilcoxon p": t["wilcoxon_pvalue"]})
    return pd.DataFrame(out).set_index(["dataset", "UNGER row", "versus", "UNGER ranking", "metric"])


def verdicts(tests: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The issue's targets from :func:`paired` tables: is UNGER above each reference in Recall@10 and
    NDCG@10, in each of its rankings, and is that significant (paired t-test p < ``alpha``)?"""
    out = []
    for (ds, mine, other, ranking), g in tests.groupby(level=[0, 1, 2, 3], sort=False):
        g = g.droplevel([0, 1, 2, 3])
        at10 = g.loc[["recall@10", "ndcg@10"]]
        above = bool((at10["difference"] > 0).all())
        out.append({"dataset": ds, "UNGER row": mine, "versus": other, "UNGER ranking": ranking,
                    "recall@10 difference": g.loc["recall@10", "difference"],
                    "ndcg@10 difference": g.loc["ndcg@10", "difference"],
                    "above in both": "yes" if above else "no",
                    "significant (p < 0.05 both)": "yes" if above and bool((at10["t-test p"] < alpha).all()) else "no"})
    return pd.DataFrame(out).set_index(["dataset", "UNGER row", "versus", "UNGER ranking"])
