"""The paper's thesis on our data: one unified code against a semantic-only code (TIGER) and two separate
codes (EAGER), on one Stage II engine at the same budget, in two decoder forms.

Three kinds of code, every one trained by the same Stage II (:mod:`ungerlib.model.stage2`: the profile's
epochs, schedule and early stopping on validation NDCG@20; beam ``eval.beam`` at test, at least the
top 20 plus what the history-excluded ranking drops):

* ``semantic``: TIGER's code, an RQ-VAE over the frozen text embeddings E_S (3 levels of K, plus TIGER's
  collision level: items that share the three tokens get a fourth, 0, 1, 2, ...). Differences from
  TIGER's paper: our encoder reads one token per history item (the sum of its code-token embeddings),
  where TIGER reads every token of every item; IKD distils E_S, the embedding the code quantises (TIGER
  has no such term);
* ``dual``: EAGER's two codes, two decoders, one shared encoder and its merge of the two lists
  (:mod:`ungerlib.baselines.dual`, which says where it differs from EAGER's code);
* ``unified``: UNGER's code, hierarchical k-means of the integrated Stage I embeddings.

Two forms each (:data:`FORMS`): ``codes only``, the paper's literal decoder (grid row A, no per-item
parameters), and ``item tables``, row J (one embedding per trie node and per history item). Every
item is evaluated as an item, never as a code: a code is one item (k-means leaves and the collision
level make codes unique), and the beam returns items. :func:`claims` tests the thesis, unified >
dual > semantic-only, pair by pair over test users.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ungerlib.infra import config as C

KINDS = ("semantic", "dual", "unified")
LABELS = {"semantic": "semantic code (TIGER-style)", "dual": "dual code (EAGER-style)",
          "unified": "unified code (UNGER)"}
COLLISIONS = {"semantic": "RQ-VAE: items that share the 3 tokens get a 4th (TIGER's collision level)",
              "dual": "hierarchical k-means per stream: every leaf is one item, no collision",
              "unified": "hierarchical k-means: every leaf is one item, no collision"}


def _forms() -> dict[str, str]:
    from ungerlib.analyses import stage2_grid

    return {"codes only": stage2_grid.LITERAL, "item tables": stage2_grid.ADOPTED}


FORMS = ("codes only", "item tables")


def config(cfg: C.RunConfig, kind: str, form: str) -> C.RunConfig:
    """The config of ``kind`` of code in decoder ``form`` on ``cfg``'s data set, at the profile's budget."""
    from ungerlib.analyses import stage2_grid

    if kind not in KINDS or form not in FORMS:
        raise C.ConfigError(f"unknown kind of code {kind!r} or form {form!r}; known: {KINDS}, {FORMS}")
    base = stage2_grid.lever_config(cfg, _forms()[form], stage2_grid.FULL)
    if kind == "semantic":
        return base.replace(stage1={"variant": "semantic"}, codes={"method": "rqvae", "rq_levels": 3})
    return base  # unified; dual derives its two codes from it (baselines.dual.stream_configs)


def artefact(kind: str) -> str:
    """The artefact kind that holds the rankings of ``kind`` of code."""
    return "eval_dual" if kind == "dual" else "eval"


def row(kind: str, form: str) -> str:
    """The Table 3 row name; the unified rows are UNGER's named rows (``analyses.table3``)."""
    from ungerlib.analyses import table3

    if kind == "unified":
        return table3.PAPER_MODEL if form == "codes only" else table3.ITEM_TABLES
    return f"{LABELS[kind]}, {form}" if form == "codes only" else f"{LABELS[kind]} + item tables"


def rankings(cfg: C.RunConfig, kind: str, form: str) -> dict[str, np.ndarray]:
    """Per-user top-20 rankings ``{valid,test}_{all,excl}`` (cached artefacts; missing ones are trained)."""
    from pathlib import Path

    from ungerlib.infra import artefacts

    path = Path(artefacts.build(artefact(kind), config(cfg, kind, form))["path"])
    return {f"{s}_{r}": np.load(path / f"{s}_{r}.npy") for s in ("valid", "test") for r in ("all", "excl")}


def runs(cfg: C.RunConfig) -> list[tuple[str, C.RunConfig, str]]:
    """``(artefact kind, config, label)`` of every run the comparison reads on ``cfg``'s data set."""
    return [(artefact(k), config(cfg, k, f), f"{cfg.data.dataset} {row(k, f)}") for k in KINDS for f in FORMS]


def claims(rows: dict[str, dict[str, np.ndarray]], target: np.ndarray, dataset: str,
           metrics: tuple[str, ...] = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")) -> pd.DataFrame:
    """The thesis pair by pair, per form and ranking: unified > dual, dual > semantic-only and
    unified > semantic-only, on test, with paired t-test and Wilcoxon p-values over users
    (:func:`ungerlib.analyses.significance.paired_table`). ``rows``: :func:`row` name -> rankings."""
    from ungerlib.analyses.significance import paired_table

    pairs = []
    for form in FORMS:
        for a, b in (("unified", "dual"), ("dual", "semantic"), ("unified", "semantic")):
            for ranking in ("all", "excl"):
                ra, rb = rows.get(row(a, form)), rows.get(row(b, form))
                if ra is None or rb is None:
                    continue
                pairs.append(({"dataset": dataset, "form": form, "claim": f"{a} > {b}", "ranking": ranking},
                              ra[f"test_{ranking}"], rb[f"test_{ranking}"]))
    if not pairs:
        return pd.DataFrame()
    t = paired_table(pairs, target, metrics).rename(columns={"a better, p < 0.05": "holds, p < 0.05"})
    t["holds"] = t["difference"] > 0
    return t.set_index(["dataset", "form", "claim", "ranking", "metric"])


def claims_text(t: pd.DataFrame, metric: str = "ndcg@20") -> str:
    """The claims table in words: one line per (data set, form, claim), both rankings, with numbers."""
    lines = []
    for (ds, form, claim), g in t.xs(metric, level="metric").groupby(level=[0, 1, 2], sort=False):
        g = g.droplevel([0, 1, 2])
        parts = [f"{r}: {g.loc[r, 'a']:.4f} vs {g.loc[r, 'b']:.4f}, p = {g.loc[r, 't-test p']:.2g}"
                 for r in g.index]
        verdict = ("holds (p < 0.05 in both rankings)" if g["holds, p < 0.05"].all() else
                   "holds in the means, not significantly in both rankings" if g["holds"].all() else
                   "does not hold")
        lines.append(f"- {ds}, {form}: **{claim}** {verdict} ({metric}; " + "; ".join(parts) + ")")
    return "\n".join(lines)


def collision_policy(tables: dict[str, Any]) -> pd.DataFrame:
    """Per kind of code: its collision policy and how many items shared a code before it
    (``CodeTable.n_collisions``; for the dual code, per stream)."""
    out = []
    for kind, t in tables.items():
        ts = t if isinstance(t, dict) else {"": t}
        for stream, table in ts.items():
            out.append({"code": LABELS[kind] + (f", {stream}" if stream else ""), "policy": COLLISIONS[kind],
                        "items": len(table), "items that shared a code": table.n_collisions,
                        "code length": table.max_len, "distinct codes": len(set(table.codes))})
    return pd.DataFrame(out).set_index("code")
