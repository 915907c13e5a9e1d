"""Table 3 in full (paper 4.2): rerun baselines, simple references, cited rows and UNGER, with a paired
significance test of UNGER against the best rerun baseline. Notebook 11 shows what this computes.

Rows and where they come from:

* **rerun** on our splits with our metrics (:mod:`ungerlib.baselines.protocol` protocol): SASRec (ours,
  :mod:`ungerlib.baselines.sequential`), BERT4Rec, GRU4Rec and TIGER from Cornac (:mod:`ungerlib.baselines.cornac`;
  TIGER gets our semantic embeddings as item features); *beyond the paper's Table 3*: HSTU (the paper's
  Fig. 6 model; :mod:`ungerlib.baselines.sequential`), LightGCN, NGCF and AlphaRec
  (:mod:`ungerlib.baselines.graph`). Each is tuned on validation NDCG@20 over the grid that :func:`grid`
  states for the profile (fixed settings ``_BASE``, tuned entries ``_GRID``): the whole grid on the
  profile's first data set (Beauty), its :data:`TRANSFER` best points there on the others.
* **references**: popularity and the cosine kNN from the user's last item on the Stage I embeddings
  that are quantised (what notebook 04 computes), so a reader sees how far each model is above them.
* **cited**: the paper's Table 3 rows (:data:`ungerlib.analyses.paper.PAPER_TABLE3`), other protocols.
* **UNGER (ours)**: the profile's Stage II decoded with the Stage I neighbours term, lambda chosen on
  validation (:func:`ungerlib.model.neighbours.selected`; beyond the paper), and beside it the same model
  decoded by the paper's plain beam (``stage2.evaluate_stage2(cfg)``).

Run one model's grid from the command line (what the ``cpu`` profile's baseline jobs do):

    python -m ungerlib table3 --profile cpu --dataset Beauty --models SASRec
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ungerlib.infra import config as C
from ungerlib.model.metrics import METRICS
from ungerlib.baselines.protocol import SELECT, TAGS, BaselineError, RunResult, cached_run

RERUN = ("SASRec", "HSTU", "BERT4Rec", "GRU4Rec", "TIGER", "LightGCN", "NGCF", "AlphaRec")
BEYOND_PAPER = ("HSTU", "LightGCN", "NGCF", "AlphaRec")  # not in the paper's Table 3 (HSTU: its Fig. 6)
REFERENCES = ("popularity", "kNN (last item, Stage I)")
# Every UNGER row is named for what it is (docs/RESULTS.md). PAPER_MODEL is the paper's model as its text
# specifies it: codes only (Stage II grid row A), the paper's plain beam. ITEM_TABLES (row J, the profiles'
# default) adds one embedding per trie node, one per item at the leaves, and an item embedding in the
# history: an item table, beyond the paper. OURS decodes that model with the Stage I neighbours term,
# lambda chosen on validation (ungerlib.model.neighbours; beyond the paper, and designed after a look at
# the test split, docs/experiments/stage2_rare_items.md).
PAPER_MODEL = "UNGER (paper's model)"
PLAIN = ITEM_TABLES = "UNGER + item tables"
OURS = "UNGER + item tables + Stage I neighbours"
UNGER_ROWS = (PAPER_MODEL, ITEM_TABLES, OURS)
DISCREC = "DiscRec (UNGER variant)"  # ungerlib.baselines.discrec: DiscRec's gated encoder in our Stage II
CORNAC = ("BERT4Rec", "GRU4Rec", "TIGER")
SEQUENTIAL = ("SASRec", "HSTU")  # ungerlib.baselines.sequential; LightGCN, NGCF, AlphaRec: ungerlib.baselines.graph
TRANSFER = 3  # grid points carried from the first data set's tuning to the others
# SASRec and HSTU at equal effort (issue 41): every embedding size x dropout x learning rate with the
# softmax over every item (12 points), and the sampled softmax (512 uniform negatives) at each size (3).
_TRANSFORMERS = ([{"dim": d, "dropout": p, "lr": lr} for d in (64, 128, 256) for p in (0.2, 0.5) for lr in (5e-4, 1e-3)]
                 + [{"dim": d, "dropout": 0.5, "lr": 1e-3, "n_negatives": 512} for d in (64, 128, 256)])
# NGCF (12 points): learning rate x message dropout x L2 weight, 64-d and 3 layers as its paper.
_NGCF = [{"lr": lr, "dropout": p, "reg": r} for lr in (2e-3, 5e-3, 1e-2) for p in (0.1, 0.3) for r in (1e-5, 1e-4)]
# Settings shared by every grid point of a model on a profile (epoch caps, early stopping) ...
_BASE: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "SASRec": {"epochs": 4, "patience": 2, "dim": 16, "n_negatives": 64, "batch_size": 128},
        "HSTU": {"epochs": 4, "patience": 2, "dim": 16, "n_negatives": 64, "batch_size": 128},
        "BERT4Rec": {"n_epochs": 4, "patience": 2, "embedding_dim": 16, "n_sample": 64, "batch_size": 64},
        "GRU4Rec": {"n_epochs": 4, "patience": 2, "layers": [16], "n_sample": 64, "batch_size": 64},
        "TIGER": {"n_epochs": 2, "patience": 2, "rqvae_n_epochs": 20, "d_model": 16, "d_ff": 32, "num_heads": 2,
                  "d_kv": 8, "num_enc_layers": 1, "num_dec_layers": 1, "batch_size": 128, "val_users": 200},
        "LightGCN": {"epochs": 3, "patience": 2, "dim": 16},
        "NGCF": {"epochs": 3, "patience": 2, "dim": 16},
        "AlphaRec": {"epochs": 3, "patience": 2},
    },
    # cpu: one thread of a shared 2-core machine per run. The caps of SASRec, HSTU and NGCF do not bind:
    # early stopping ends every run well before them (docs/BASELINES.md, "Grids").
    "cpu": {
        "SASRec": {"epochs": 100, "patience": 5, "batch_size": 256},
        "HSTU": {"epochs": 100, "patience": 5, "batch_size": 256},
        "BERT4Rec": {"n_epochs": 60, "patience": 8, "batch_size": 128},
        "GRU4Rec": {"n_epochs": 20, "patience": 3, "batch_size": 512},
        # Cornac's TIGER as an outside cross-check at a fair budget: d_model 128 and the paper's 1 + 4 layers,
        # an epoch cap that early stopping ends, a beam of 50 that fills the history-excluded top 20
        # (before 2026-12-07: 1 + 1 layers of 64 and 4 epochs, a floor; docs/experiments/settings_choices.md)
        "TIGER": {"n_epochs": 30, "patience": 3, "val_users": 2000, "num_enc_layers": 1, "num_dec_layers": 4,
                  "d_model": 128, "d_ff": 512, "num_heads": 4, "d_kv": 32, "n_beams": 50},
        "LightGCN": {"epochs": 60, "patience": 5},
        "NGCF": {"epochs": 200, "patience": 5},
        "AlphaRec": {"epochs": 60, "patience": 5},
    },
    "paper": {
        "SASRec": {"epochs": 200, "patience": 10, "batch_size": 256},
        "HSTU": {"epochs": 200, "patience": 10, "batch_size": 256},
        "BERT4Rec": {"n_epochs": 500, "patience": 20, "batch_size": 128, "embedding_dim": 128},
        "GRU4Rec": {"n_epochs": 50, "patience": 5, "batch_size": 512, "layers": [128]},
        "TIGER": {"n_epochs": 100, "patience": 10, "d_model": 128, "d_ff": 1024, "num_heads": 6, "d_kv": 64,
                  "num_enc_layers": 4, "num_dec_layers": 4, "n_beams": 50, "val_users": 0},
        "LightGCN": {"epochs": 300, "patience": 10},
        "NGCF": {"epochs": 400, "patience": 10},
        "AlphaRec": {"epochs": 300, "patience": 10},
    },
}
# ... and the grid tuned on validation NDCG@20 (one entry = no tuning). The cpu and paper profiles tune the
# same points; the paper profile's runs are longer (its settings above), not more.
_FULL_GRID: dict[str, list[dict[str, Any]]] = {
    "SASRec": _TRANSFORMERS,
    "HSTU": _TRANSFORMERS,
    "BERT4Rec": [{"mask_prob": p} for p in (0.2, 0.4)],
    "GRU4Rec": [{"learning_rate": lr} for lr in (0.05, 0.1)],
    "TIGER": [{}],
    "LightGCN": [{"lr": lr} for lr in (1e-3, 5e-3)],
    "NGCF": _NGCF,
    "AlphaRec": [{"tau": t} for t in (0.15, 0.3)],
}
_GRID: dict[str, dict[str, list[dict[str, Any]]]] = {
    "smoke": {m: [{}] for m in RERUN},
    "cpu": _FULL_GRID,
    "paper": _FULL_GRID,
}


def full_grid(profile: str, model: str) -> list[dict[str, Any]]:
    """Every point of ``model``'s grid on ``profile``: its base settings plus each grid entry."""
    if model not in RERUN:
        raise BaselineError(f"unknown rerun baseline {model!r}; known: {RERUN}")
    if profile not in _GRID:
        raise BaselineError(f"unknown profile {profile!r}; known: {sorted(_GRID)}")
    return [{**_BASE[profile][model], **g} for g in _GRID[profile][model]]


def grid(profile: str, model: str, dataset: str | None = None) -> list[dict[str, Any]]:
    """The settings tried for ``model`` on ``profile`` and ``dataset``: the whole grid (:func:`full_grid`) on
    the profile's first data set (Beauty) or with no data set named; on another data set the
    :data:`TRANSFER` best points of the first data set's committed tuning
    (:func:`ungerlib.analyses.tuning.transferred`), or the whole grid where that data set is not tuned
    at the current grid."""
    from ungerlib.infra.report import profile_datasets

    points = full_grid(profile, model)
    if dataset is None or dataset == profile_datasets(profile)[0] or len(points) <= TRANSFER:
        return points
    from ungerlib.analyses.tuning import transferred

    return transferred(profile, model) or points


def setting(profile: str, model: str, params: dict[str, Any]) -> str:
    """``params`` as text: its grid entry (e.g. ``dim=64, dropout=0.2, lr=0.0005``), or what it changes in
    the base settings where it is not a grid point."""
    entry = next((g for p, g in zip(full_grid(profile, model), _GRID[profile][model]) if p == params), None)
    if entry is None:
        base = _BASE[profile][model]
        entry = {k: v for k, v in params.items() if k not in base or base[k] != v}
    return ", ".join(f"{k}={v}" for k, v in entry.items()) or "(base)"


def run(cfg: C.RunConfig, model: str, params: dict[str, Any], force: bool = False) -> RunResult:
    """One trained configuration of ``model`` on ``cfg``'s data (cached as artefact kind
    ``baseline.<model>``; see :func:`baselines.cached_run`)."""
    from ungerlib.model.data import get_splits

    if model not in RERUN:
        raise BaselineError(f"unknown rerun baseline {model!r}; known: {RERUN}")
    ds, splits = get_splits(cfg)

    def train(work):
        if model in SEQUENTIAL:
            from ungerlib.baselines import sequential

            return sequential.fit_and_rank(model, params, splits, cfg.seed, work)
        if model == "TIGER":
            from ungerlib.baselines import tiger as cornac_tiger
            from ungerlib.model.semantic import semantic_embeddings

            return cornac_tiger.fit_and_rank(params, ds, splits, cfg.seed, semantic_embeddings(cfg), work)
        if model in CORNAC:
            from ungerlib.baselines import cornac as cb

            return cb.fit_and_rank(model, params, ds, splits, cfg.seed, work)
        from ungerlib.baselines import graph
        from ungerlib.model.semantic import semantic_embeddings

        features = semantic_embeddings(cfg) if model == "AlphaRec" else None
        return graph.fit_and_rank(model, params, splits, cfg.seed, features, work)

    return cached_run(cfg, model, params, train, splits, force)


@dataclass
class Tuned:
    """A model's grid on one data set: every setting's validation metrics, and the selected run."""

    model: str
    best: RunResult
    grid: pd.DataFrame  # one row per setting: its grid entry, valid metrics, best epoch, wall time
    runs: list[RunResult] = field(default_factory=list)  # the grid's runs, best validation NDCG@20 first


def _grid_row(cfg: C.RunConfig, r: RunResult) -> dict[str, Any]:
    return {"setting": setting(cfg.profile, r.model, r.params),
            **{f"valid {m}": r.metrics["valid_all"][m] for m in ("recall@10", "ndcg@20")},
            "best epoch": r.info.get("best_epoch"), "epochs run": r.info.get("epochs_run"), "wall_s": r.info.get("wall_s")}


def tune(cfg: C.RunConfig, model: str, points: list[dict[str, Any]] | None = None) -> Tuned:
    """Train every point of ``model``'s grid on ``cfg``'s data set (``points``, default :func:`grid`;
    cached) and select the best validation NDCG@20 (all items ranked), never looking at test
    (``make tune``, :mod:`ungerlib.analyses.tuning`)."""
    runs = [run(cfg, model, p) for p in (points or grid(cfg.profile, model, cfg.data.dataset))]
    ranked = sorted(runs, key=lambda r: -r.metrics["valid_all"][SELECT])
    return Tuned(model, ranked[0], pd.DataFrame([_grid_row(cfg, r) for r in runs]), ranked)


def selected(cfg: C.RunConfig, model: str) -> Tuned:
    """The setting of ``model`` that ``make tune`` selected on ``cfg``'s data set, trained (cached); its
    grid table holds that one run (the whole grid is the committed tuning table)."""
    from ungerlib.analyses.tuning import selected as chosen

    r = run(cfg, model, chosen(cfg.profile, cfg.data.dataset, model))
    return Tuned(model, r, pd.DataFrame([_grid_row(cfg, r)]), [r])


# --------------------------------------------------------------------------- the other rows

def reference_rankings(cfg: C.RunConfig) -> dict[str, dict[str, np.ndarray]]:
    """Per-user top-20 rankings of the simple references: popularity (training-target counts; both
    rankings) and the cosine kNN from the user's last item on the Stage I embeddings that Stage II
    quantises (history excluded only: with every item ranked, its first item is the last item itself)."""
    from ungerlib.baselines.references import knn_rankings, popularity_rankings
    from ungerlib.model.data import get_splits
    from ungerlib.model.stage1 import stage1_embeddings

    _, splits = get_splits(cfg)
    emb = stage1_embeddings(cfg, progress=False).integrated
    pop, knn = {}, {}
    for split in ("valid", "test"):
        ex = getattr(splits, split)
        pop[f"{split}_all"] = popularity_rankings(splits, ex, 20)
        pop[f"{split}_excl"] = popularity_rankings(splits, ex, 20, exclude_history=True)
        knn[f"{split}_excl"] = knn_rankings(emb, ex, 20)
    return {REFERENCES[0]: pop, REFERENCES[1]: knn}


def unger_rankings(cfg: C.RunConfig) -> dict[str, np.ndarray]:
    """Stage II's per-user top-20 rankings under the paper's plain beam
    (:func:`ungerlib.model.stage2.evaluate_stage2`, cached artefact)."""
    from ungerlib.model.stage2 import evaluate_stage2

    return _load_rankings(evaluate_stage2(cfg)["path"])


def paper_model_config(cfg: C.RunConfig) -> C.RunConfig:
    """``cfg`` with the paper's Stage II: codes only (grid row A), at the profile's own budget."""
    from ungerlib.analyses import stage2_grid

    return stage2_grid.lever_config(cfg, stage2_grid.LITERAL, stage2_grid.FULL)


def neighbour_rankings(cfg: C.RunConfig) -> dict[str, np.ndarray]:
    """Stage II's per-user top-20 rankings decoded with the Stage I neighbours term, lambda selected on
    validation (:func:`ungerlib.model.neighbours.selected`, cached artefacts)."""
    from ungerlib.model.neighbours import selected

    return _load_rankings(selected(cfg)[1]["path"])


def _load_rankings(path: str) -> dict[str, np.ndarray]:
    from pathlib import Path

    return {tag: np.load(Path(path) / f"{tag}.npy") for tag in TAGS}


@dataclass
class Overall:
    """Everything Table 3 needs for one data set: per-row rankings (``rows[name][tag]``), the tuned
    rerun models and the targets of each split."""

    dataset: str
    rows: dict[str, dict[str, np.ndarray]]
    tuned: dict[str, Tuned]
    targets: dict[str, np.ndarray]


def overall(cfg: C.RunConfig, models: tuple[str, ...] | list[str] = RERUN, with_unger: bool = True,
            with_discrec: bool = False, grids: bool = False, code_kinds: bool = False) -> Overall:
    """Every rerun model in ``models`` at the setting ``make tune`` selected (or, with ``tuned``, its whole
    grid trained and selected here: ``grids``), and the references' and UNGER's rankings (:data:`OURS` and
    :data:`PLAIN`; and, with ``with_discrec``, the DiscRec-style Stage II variant's,
    :mod:`ungerlib.baselines.discrec`; with ``code_kinds``, the semantic-only and dual codes on our engine in
    both decoder forms, :mod:`ungerlib.analyses.code_kinds`)."""
    from ungerlib.model.data import get_splits

    _, splits = get_splits(cfg)
    tuned = {m: (tune if grids else selected)(cfg, m) for m in models}
    rows: dict[str, dict[str, np.ndarray]] = {m: {t: t_.best.rankings(t) for t in TAGS} for m, t_ in tuned.items()}
    rows.update(reference_rankings(cfg))
    if with_unger:
        rows[PAPER_MODEL] = unger_rankings(paper_model_config(cfg))
        rows[ITEM_TABLES] = unger_rankings(cfg)
        rows[OURS] = neighbour_rankings(cfg)
    if with_discrec:
        from ungerlib.baselines.discrec import evaluate_discrec

        rows[DISCREC] = _load_rankings(evaluate_discrec(cfg)["path"])
    if code_kinds:
        from ungerlib.analyses import code_kinds as ck

        rows.update({ck.row(k, f): ck.rankings(cfg, k, f) for k in ("semantic", "dual") for f in ck.FORMS})
    return Overall(cfg.data.dataset, rows, tuned, {"valid": splits.valid.target, "test": splits.test.target})


def kind(row: str) -> str:
    """Where a row of Table 3 comes from."""
    if row in BEYOND_PAPER:
        return "rerun, beyond the paper"
    if row in RERUN:
        return "rerun"
    if row in REFERENCES:
        return "reference"
    if row == DISCREC:
        return "ours, variant beyond the paper"
    if row == PAPER_MODEL:
        return "ours, the paper's model"
    if row.startswith(("semantic code", "dual code")):
        return "our engine, another kind of code"
    if row in (ITEM_TABLES, OURS):
        return "ours, beyond the paper"
    return "cited (paper)"


def table3(results: list[Overall], split: str = "test") -> pd.DataFrame:
    """Table 3, long form: one row per (data set, model, ranking) with Recall/NDCG@10/20 on ``split``,
    every rerun row, reference and UNGER scored by :func:`ungerlib.model.metrics.rank_metrics`, plus the
    paper's cited rows (its numbers, its protocols) under the ranking ``excl``."""
    from ungerlib.model.metrics import rank_metrics
    from ungerlib.analyses.paper import PAPER_TABLE3, PAPER_TABLE3_REIMPLEMENTED

    out = []
    for res in results:
        for name, ranks in res.rows.items():
            for ranking in ("all", "excl"):
                tag = f"{split}_{ranking}"
                if tag in ranks:
                    out.append({"dataset": res.dataset, "model": name, "kind": kind(name), "ranking": ranking,
                                **rank_metrics(ranks[tag], res.targets[split])})
        if split == "test" and res.dataset in PAPER_TABLE3.index.get_level_values(0):
            for model, vals in PAPER_TABLE3.loc[res.dataset].iterrows():
                note = " (paper's rerun*)" if model in PAPER_TABLE3_REIMPLEMENTED else ""
                out.append({"dataset": res.dataset, "model": f"{model}{note}", "kind": "cited (paper)",
                            "ranking": "paper", **vals.to_dict()})
    df = pd.DataFrame(out).set_index(["dataset", "model", "ranking"])
    return df[["kind", *METRICS]]


def best_mask(table: pd.DataFrame, place: int = 1) -> pd.DataFrame:
    """True where a metric of :func:`table3` is the ``place``-th best (1: best) of its column within its
    data set: among the rows ranked with history excluded together with the cited rows (the fair
    comparison: the paper's classical rows come from S3-Rec's full-sort protocol, which drops seen
    items), and separately among the rows with every item ranked."""
    mask = pd.DataFrame(False, index=table.index, columns=list(METRICS))
    for ds in table.index.get_level_values(0).unique():
        for group in (("excl", "paper"), ("all",)):
            sel = table.index.get_level_values(0).isin([ds]) & table.index.get_level_values(2).isin(group)
            for col in METRICS:
                vals = table.loc[sel, col].dropna().sort_values(ascending=False)
                if place <= len(vals):
                    mask.loc[vals.index[place - 1], col] = True
    return mask


def mark_best(table: pd.DataFrame) -> pd.DataFrame:
    """Table 3 as text with the best value of each column **bold** and the second best _italic_
    (:func:`best_mask`)."""
    shown = table.copy()
    for col in METRICS:
        shown[col] = table[col].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    for place, fmt in ((1, "**{}**"), (2, "_{}_")):
        mask = best_mask(table, place)
        for col in METRICS:
            shown.loc[mask[col], col] = shown.loc[mask[col], col].map(fmt.format)
    return shown


def headline(table: pd.DataFrame, metrics: tuple[str, ...] = ("recall@10", "ndcg@10")) -> pd.DataFrame:
    """The README's first table from :func:`table3`: the paper's UNGER row next to ours (the paper's
    model, then the rows beyond it) and the tuned SASRec, on test with the history excluded (the ranking
    comparable with the paper's), one column per (data set, metric)."""
    wanted = [("UNGER", "paper", "UNGER, the paper's Table 3"), *((r, "excl", r) for r in UNGER_ROWS),
              ("SASRec", "excl", "SASRec (rerun, tuned on validation)")]
    out = {}
    for ds in table.index.get_level_values(0).unique():
        for model, ranking, name in wanted:
            if (ds, model, ranking) in table.index:
                for m in metrics:
                    out.setdefault(name, {})[(ds, m)] = table.loc[(ds, model, ranking), m]
    df = pd.DataFrame.from_dict(out, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns, names=["dataset", "metric"])
    df.index.name = "row"
    return df


def versus_paper(results: list[Overall]) -> pd.DataFrame:
    """Each rerun model's test metrics, both rankings, next to the paper's number for the same model
    (where its Table 3 has one) and the relative difference of the history-excluded ranking."""
    from ungerlib.analyses.paper import PAPER_TABLE3

    t = table3(results)
    rows = []
    for (ds, model, ranking), r in t.iterrows():
        if r["kind"].startswith("rerun") and ranking == "excl":
            paper = PAPER_TABLE3.loc[(ds, model)] if (ds, model) in PAPER_TABLE3.index else None
            for m in METRICS:
                p = None if paper is None else float(paper[m])
                rows.append({"dataset": ds, "model": model, "metric": m, "ours, all items": t.loc[(ds, model, "all"), m],
                             "ours, history excluded": r[m], "paper": p,
                             "excl vs paper": None if p is None else (r[m] - p) / p})
    return pd.DataFrame(rows).set_index(["dataset", "model", "metric"])


def tuning(results: list[Overall]) -> pd.DataFrame:
    """Every grid setting tried, its validation metrics (all items), best epoch and wall time; the
    selected one marked."""
    out = []
    for res in results:
        for model, t in res.tuned.items():
            g = t.grid.copy()
            g["selected"] = [r == t.best.metrics["valid_all"][SELECT] for r in g["valid ndcg@20"]]
            g.insert(0, "model", model)
            g.insert(0, "dataset", res.dataset)
            out.append(g)
    return pd.concat(out).set_index(["dataset", "model", "setting"]) if out else pd.DataFrame()


def times(results: list[Overall]) -> pd.DataFrame:
    """Per rerun model and data set: the selected run's wall time (training, per-epoch validation and
    the final rankings), epochs run and selected, threads, the whole grid's wall time, and the loss."""
    out = []
    for res in results:
        for model, t in res.tuned.items():
            i = t.best.info
            out.append({"dataset": res.dataset, "model": model, "selected_run_s": i.get("wall_s"),
                        "grid_s": float(t.grid["wall_s"].sum()), "grid size": len(t.grid),
                        "epochs run": i.get("epochs_run"), "best epoch": i.get("best_epoch"),
                        "threads": i.get("threads"), "loss": i.get("loss")})
    return pd.DataFrame(out).set_index(["dataset", "model"])


def significance(res: Overall, metrics: tuple[str, ...] = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")) -> pd.DataFrame:
    """Paired tests over test users of UNGER against the best rerun baseline, for each ranking.

    The best baseline is chosen on **validation** NDCG@20 (same ranking), never on test; the tests are
    :func:`ungerlib.analyses.significance.paired_table`'s (two-sided paired t-test and Wilcoxon)."""
    from ungerlib.analyses.significance import paired_table
    from ungerlib.model.metrics import rank_metrics

    if OURS not in res.rows:
        raise BaselineError("significance needs UNGER's rankings (overall(..., with_unger=True))")
    rerun = [m for m in res.rows if m in RERUN]
    if not rerun:
        raise BaselineError("significance needs at least one rerun baseline")
    pairs = []
    for ranking in ("all", "excl"):
        best = max(rerun, key=lambda m: rank_metrics(res.rows[m][f"valid_{ranking}"], res.targets["valid"])[SELECT])
        pairs.append(({"dataset": res.dataset, "ranking": ranking, "baseline": best},
                      res.rows[OURS][f"test_{ranking}"], res.rows[best][f"test_{ranking}"]))
    t = paired_table(pairs, res.targets["test"], metrics)
    t = t.rename(columns={"a": "UNGER", "b": "baseline value", "a better, p < 0.05": "UNGER better, p < 0.05"})
    return t.drop(columns="difference").set_index(["dataset", "ranking", "metric"])


# --------------------------------------------------------------------------- against the references

KNN, POPULARITY = REFERENCES[1], REFERENCES[0]


def references(cfg: C.RunConfig, sasrec: bool = True) -> Overall:
    """UNGER's, the references' and (``sasrec``) the tuned SASRec's per-user rankings on ``cfg``'s data
    (all cached artefacts; missing ones are trained): what notebook 04 tests UNGER against."""
    return overall(cfg, models=("SASRec",) if sasrec else ())


def paired(res: Overall, other: str, split: str = "test", mine: str = OURS) -> pd.DataFrame:
    """UNGER (row ``mine``: :data:`OURS`, or :data:`PLAIN` for the paper's decoding) against row ``other``
    of ``res``: per UNGER ranking (all, excl) the means of both, the difference and the paired t-test /
    Wilcoxon p-values over the users of ``split``. ``other`` is compared ranking by ranking where it has
    both, else with its one (history-excluded) list (the kNN: with every item ranked its first item
    would be the last item itself)."""
    from ungerlib.analyses.significance import paired_table

    pairs = []
    for ranking in ("all", "excl"):
        theirs = f"{split}_{ranking}" if f"{split}_{ranking}" in res.rows[other] else f"{split}_excl"
        pairs.append(({"dataset": res.dataset, "UNGER row": mine, "versus": other, "UNGER ranking": ranking,
                       "their ranking": theirs.split("_")[1]},
                      res.rows[mine][f"{split}_{ranking}"], res.rows[other][theirs]))
    t = paired_table(pairs, res.targets[split], ("recall@10", "ndcg@10", "recall@20", "ndcg@20"))
    t = t.rename(columns={"a": "UNGER", "b": "them"}).drop(columns=["relative", "a better, p < 0.05"])
    return t.set_index(["dataset", "UNGER row", "versus", "UNGER ranking", "metric"])


def verdicts(tests: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """From :func:`paired` tables: is UNGER above each reference in Recall@10 and NDCG@10, in each of its
    rankings, and is that significant (paired t-test p < ``alpha``)?"""
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=C.PROFILES)
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--models", nargs="+", default=list(RERUN), choices=RERUN)
    ap.add_argument("--only", type=int, nargs="*", help="grid entries to run (0-based), default all")
    a = ap.parse_args(argv)
    cfg = C.profile(a.profile, a.dataset)
    for model in a.models:  # every grid point (make tune selects among them: ungerlib.analyses.tuning)
        points = grid(a.profile, model, cfg.data.dataset)
        for i, p in enumerate(points):
            if a.only is not None and i not in a.only:
                continue
            r = run(cfg, model, p)
            print(f"{cfg.data.dataset} {model} {p}: valid ndcg@20={r.metrics['valid_all']['ndcg@20']:.4f} "
                  f"test recall@10={r.metrics['test_all']['recall@10']:.4f} ndcg@10={r.metrics['test_all']['ndcg@10']:.4f} "
                  f"(excl {r.metrics['test_excl']['recall@10']:.4f} / {r.metrics['test_excl']['ndcg@10']:.4f}) "
                  f"best epoch {r.info.get('best_epoch')} wall {r.info.get('wall_s')}s -> {r.path}", flush=True)


if __name__ == "__main__":
    main()
