"""The Stage II grid: ways to embed and score code tokens that the paper leaves open, compared on
validation only (notebook 04; ``make tune`` screens them, ``make figures`` trains the selected rows).

Each row of :data:`STAGE2_LEVERS` names every lever setting, so a row means the same model whatever
the profile's defaults are. Rows add one change at a time to the paper-literal reading of the model
(row A: codes only, no item tables), then vary the IKD form and regularisation of row E. Selection
uses validation NDCG@20 (every item ranked) on Beauty and nothing else: rows within :data:`NOISE`
(about one standard error) of the best count as tied, and among tied rows the one closest to the
paper's text wins. The measurements behind :data:`ADOPTED` are in ``docs/experiments/stage2_levers_screening.md``
and ``docs/experiments/stage2_weight_decay.md``; rows retired since (Stage I initialisation, fixed Stage I
vectors, per-row weight decay, the logit-adjusted loss: all below row J on validation) are recorded in
``docs/experiments/stage2_rare_items.md`` and kept in git under the tag ``retired-levers-2026-12-07``.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from ungerlib.infra import config as C

# The settings every row names (the profile's values of other Stage II fields apply unchanged).
LEVER_FIELDS = ("history_tokens", "decoder_tokens", "valid_children", "ikd", "beta", "ikd_sim", "ikd_tau",
                "dropout", "weight_decay")

_LITERAL = {"history_tokens": "codes", "decoder_tokens": "level", "valid_children": False, "ikd": True,
            "beta": 1.0, "ikd_sim": "dot", "ikd_tau": 1.0, "dropout": 0.1, "weight_decay": 0.0}
_NODE = {**_LITERAL, "decoder_tokens": "node", "valid_children": True}
_E = {**_NODE, "history_tokens": "both"}

STAGE2_LEVERS: dict[str, dict[str, Any]] = {
    "A paper-literal: code-sum history, per-level tokens, softmax over all K": _LITERAL,
    "B = A + softmax over valid children": {**_LITERAL, "valid_children": True},
    "C = B + per-node tokens tied with the output": _NODE,
    "D = C + item embedding in the history (item only)": {**_NODE, "history_tokens": "item"},
    "E = C + item embedding in the history (code sum + item)": _E,
    "G = E with IKD cosine / tau 0.1 (EAGER)": {**_E, "ikd_sim": "cosine", "ikd_tau": 0.1},
    "H = E without IKD (beta = 0)": {**_E, "ikd": False},
    "I = E with dropout 0.3": {**_E, "dropout": 0.3},
    "J = E with weight decay 3e-4 (Adam L2)": {**_E, "weight_decay": 3e-4},
}
# Row A is the paper's model as its text specifies it: codes only, no item tables. Rows C-J add tables
# with one row per trie node (one per item at the leaves) and, from D on, one per item in the history.
LITERAL = next(iter(STAGE2_LEVERS))
SCREEN_BEST = "E = C + item embedding in the history (code sum + item)"
ADOPTED = "J = E with weight decay 3e-4 (Adam L2)"  # the profiles' Stage II default (tests/test_levers.py)
NOISE = 0.0013  # one standard error of a Beauty validation NDCG@20: rows this close are tied
# The screening budget: a full cosine schedule over few epochs, length-bucketed batches. It ranks rows,
# not budgets; the rows in CONFIRM are trained again at the profile's own budget (FULL) on every data set.
SCREEN = {"epochs": 5, "bucket": 8}
FULL: dict[str, Any] = {}
CONFIRM = (LITERAL, SCREEN_BEST, ADOPTED)


def screened_rows(profile: str) -> list[str]:
    """The rows ``make tune`` screens on the first data set: every row (smoke: A and E, to stay quick)."""
    return list(STAGE2_LEVERS) if profile != "smoke" else [LITERAL, SCREEN_BEST]


def lever_config(cfg: C.RunConfig, row: str, budget: dict[str, Any] | None = None) -> C.RunConfig:
    """``cfg`` with lever row ``row``'s settings and the screening budget (or ``budget``; :data:`FULL`
    keeps the profile's own)."""
    if row not in STAGE2_LEVERS:
        raise C.ConfigError(f"unknown Stage II lever row {row!r}; known: {list(STAGE2_LEVERS)}")
    return cfg.replace(stage2={**STAGE2_LEVERS[row], **(SCREEN if budget is None else budget)})


def lever_table(cfg: C.RunConfig, rows: list[str] | None = None, budget: dict[str, Any] | None = None,
                progress: bool = True) -> pd.DataFrame:
    """Best validation epoch of every lever row on ``cfg``'s data set: Recall/NDCG@10/20, the epoch,
    and the median training seconds per epoch (``epoch_train_s``). Trains rows not in the artefact cache."""
    from ungerlib.model.stage2 import run_stage2

    out = []
    for row in list(STAGE2_LEVERS) if rows is None else rows:
        _, hist = run_stage2(lever_config(cfg, row, budget), progress=progress)
        best = max(hist, key=lambda h: h["valid_ndcg@20"])
        train_s = sorted(h["train_s"] for h in hist)[len(hist) // 2]
        out.append({"row": row, **{k[6:]: best[k] for k in ("valid_recall@10", "valid_ndcg@10",
                                                                "valid_recall@20", "valid_ndcg@20")},
                    "best epoch": best["epoch"], "epochs": len(hist), "epoch_train_s": round(train_s)})
    return pd.DataFrame(out).set_index("row")
