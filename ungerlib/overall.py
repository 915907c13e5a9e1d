"""Table 3 in full (paper 4.2): rerun baselines, simple references, cited rows and UNGER, with a paired
significance test of UNGER against the best rerun baseline. Notebook 11 shows what this computes.

Rows and where they come from:

* **rerun** on our splits with our metrics (:mod:`ungerlib.baselines` protocol): SASRec, BERT4Rec,
  GRU4Rec and TIGER from Cornac (:mod:`ungerlib.cornac_baselines`; TIGER gets our semantic
  embeddings as item features); *beyond the paper*: LightGCN and AlphaRec (:mod:`ungerlib.alpharec`).
  Each is tuned on validation NDCG@20 over the small grid :data:`GRIDS` states for the profile.
* **references**: popularity and the cosine kNN from the user's last item on the Stage I embeddings
  that are quantised (what notebook 04 computes), so a reader sees how far each model is above them.
* **cited**: the paper's Table 3 rows (:data:`ungerlib.report.PAPER_TABLE3`), other protocols.
* **UNGER**: ``stage2.evaluate_stage2(cfg)``.

Run one model's grid from the command line (what the ``cpu`` profile's baseline jobs do):

    python -m ungerlib.overall --profile cpu --dataset Beauty --models SASRec
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import config as C
from .baselines import SELECT, TAGS, BaselineError, RunResult, cached_run

METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]
RERUN = ("SASRec", "BERT4Rec", "GRU4Rec", "TIGER", "LightGCN", "AlphaRec")
BEYOND_PAPER = ("LightGCN", "AlphaRec")  # not in the paper's Table 3
REFERENCES = ("popularity", "kNN (last item, Stage I)")
CORNAC = ("SASRec", "BERT4Rec", "GRU4Rec", "TIGER")

# Settings shared by every grid point of a model on a profile (epoch caps, early stopping) ...
_BASE: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "SASRec": {"n_epochs": 4, "patience": 2, "embedding_dim": 16, "n_sample": 64, "batch_size": 128},
        "BERT4Rec": {"n_epochs": 4, "patience": 2, "embedding_dim": 16, "n_sample": 64, "batch_size": 64},
        "GRU4Rec": {"n_epochs": 4, "patience": 2, "layers": [16], "n_sample": 64, "batch_size": 64},
        "TIGER": {"n_epochs": 2, "patience": 2, "rqvae_n_epochs": 20, "d_model": 16, "d_ff": 32, "num_heads": 2,
                  "d_kv": 8, "num_enc_layers": 1, "num_dec_layers": 1, "batch_size": 128, "val_users": 200},
        "LightGCN": {"epochs": 3, "patience": 2, "dim": 16},
        "AlphaRec": {"epochs": 3, "patience": 2},
    },
    # cpu: every run capped at about 30 min per data set on one thread of a shared 2-core machine
    "cpu": {
        "SASRec": {"n_epochs": 40, "patience": 3, "batch_size": 512},
        "BERT4Rec": {"n_epochs": 200, "patience": 10, "batch_size": 128},
        "GRU4Rec": {"n_epochs": 20, "patience": 3, "batch_size": 512},
        "TIGER": {"n_epochs": 4, "patience": 2, "val_users": 2000},
        "LightGCN": {"epochs": 60, "patience": 5},
        "AlphaRec": {"epochs": 60, "patience": 5},
    },
    "paper": {
        "SASRec": {"n_epochs": 200, "patience": 10, "batch_size": 512, "embedding_dim": 128},
        "BERT4Rec": {"n_epochs": 500, "patience": 20, "batch_size": 128, "embedding_dim": 128},
        "GRU4Rec": {"n_epochs": 50, "patience": 5, "batch_size": 512, "layers": [128]},
        "TIGER": {"n_epochs": 100, "patience": 10, "d_model": 128, "d_ff": 1024, "num_heads": 6, "d_kv": 64,
                  "num_enc_layers": 4, "num_dec_layers": 4, "n_beams": 50, "val_users": 0},
        "LightGCN": {"epochs": 300, "patience": 10},
        "AlphaRec": {"epochs": 300, "patience": 10},
    },
}
# ... and the small grid tuned on validation NDCG@20 (one entry = no tuning).
_GRID: dict[str, dict[str, list[dict[str, Any]]]] = {
    "smoke": {m: [{}] for m in RERUN},
    "cpu": {
        "SASRec": [{"embedding_dim": d, "dropout": p} for d in (64, 128) for p in (0.5, 0.2)],
        "BERT4Rec": [{"mask_prob": p} for p in (0.2, 0.4)],
        "GRU4Rec": [{"learning_rate": lr} for lr in (0.05, 0.1)],
        "TIGER": [{}],
        "LightGCN": [{"lr": lr} for lr in (1e-3, 5e-3)],
        "AlphaRec": [{"tau": t} for t in (0.15, 0.3)],
    },
    "paper": {
        "SASRec": [{"dropout": p, "learning_rate": lr} for p in (0.2, 0.5) for lr in (5e-4, 1e-3)],
        "BERT4Rec": [{"mask_prob": p} for p in (0.2, 0.4)],
        "GRU4Rec": [{"learning_rate": lr} for lr in (0.05, 0.1)],
        "TIGER": [{}],
        "LightGCN": [{"lr": lr} for lr in (1e-3, 5e-3)],
        "AlphaRec": [{"tau": t} for t in (0.15, 0.3)],
    },
}


def grid(profile: str, model: str) -> list[dict[str, Any]]:
    """The settings tried for ``model`` on ``profile``: its base settings plus each grid entry."""
    if model not in RERUN:
        raise BaselineError(f"unknown rerun baseline {model!r}; known: {RERUN}")
    if profile not in _GRID:
        raise BaselineError(f"unknown profile {profile!r}; known: {sorted(_GRID)}")
    return [{**_BASE[profile][model], **g} for g in _GRID[profile][model]]


def run(cfg: C.RunConfig, model: str, params: dict[str, Any], force: bool = False) -> RunResult:
    """One trained configuration of ``model`` on ``cfg``'s data (cached; see :func:`baselines.cached_run`)."""
    from .data import get_splits

    ds, splits = get_splits(cfg)
    if model == "TIGER":
        from . import cornac_tiger
        from .semantic import semantic_embeddings

        features = semantic_embeddings(cfg)
        return cached_run(cfg, model, params, "cornac_tiger",
                          lambda work: cornac_tiger.fit_and_rank(params, ds, splits, cfg.seed, features, work),
                          splits, ("semantic",), force)
    if model in CORNAC:
        from . import cornac_baselines as cb

        return cached_run(cfg, model, params, "cornac_baselines",
                          lambda work: cb.fit_and_rank(model, params, ds, splits, cfg.seed, work), splits, (), force)
    if model in ("LightGCN", "AlphaRec"):
        from . import alpharec

        features = None
        uses = ()
        if model == "AlphaRec":
            from .semantic import semantic_embeddings

            features, uses = semantic_embeddings(cfg), ("semantic",)
        return cached_run(cfg, model, params, "alpharec",
                          lambda work: alpharec.fit_and_rank(model, params, splits, cfg.seed, features, work),
                          splits, uses, force)
    raise BaselineError(f"unknown rerun baseline {model!r}; known: {RERUN}")


@dataclass
class Tuned:
    """A model's grid on one data set: every setting's validation metrics, and the selected run."""

    model: str
    best: RunResult
    grid: pd.DataFrame  # one row per setting: its grid entry, valid metrics, best epoch, wall time


def tune(cfg: C.RunConfig, model: str) -> Tuned:
    """Train every grid setting of ``model`` (cached) and select the best validation NDCG@20 (all items
    ranked), never looking at test."""
    runs = [run(cfg, model, p) for p in grid(cfg.profile, model)]
    rows = []
    for r, g in zip(runs, _GRID[cfg.profile][model]):
        rows.append({"setting": ", ".join(f"{k}={v}" for k, v in g.items()) or "(base)",
                     **{f"valid {m}": r.metrics["valid_all"][m] for m in ("recall@10", "ndcg@20")},
                     "best epoch": r.info.get("best_epoch"), "epochs run": r.info.get("epochs_run"),
                     "wall s": r.info.get("wall_s")})
    best = max(runs, key=lambda r: r.metrics["valid_all"][SELECT])
    return Tuned(model, best, pd.DataFrame(rows))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=C.PROFILES)
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--models", nargs="+", default=list(RERUN), choices=RERUN)
    ap.add_argument("--only", type=int, nargs="*", help="grid entries to run (0-based), default all")
    a = ap.parse_args(argv)
    cfg = C.profile(a.profile, a.dataset)
    for model in a.models:
        points = grid(a.profile, model)
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
