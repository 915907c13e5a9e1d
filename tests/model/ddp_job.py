"""The training job of ``test_train.py::test_two_gloo_processes_train_like_one_process``, run once in one
process (``python ddp_job.py OUT``) and once by ``torchrun --nproc_per_node 2`` on CPU (gloo).

It trains, on the smoke profile's data and models (three epochs each, dropout off: a rank draws its own
dropout masks), Stage I through the artefact store (the text embeddings: rank 0 builds, the other rank
waits and loads; Stage I: both ranks train, rank 0 writes) and Stage II on fixed codes with a checkpoint
folder, killed after ``--kill-after`` epochs and resumed. Every rank writes ``OUT.rank<r>.json``: both
histories, Stage I's validation metrics, a fingerprint of each final model and what the store holds.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ungerlib.infra import artefacts, config, distributed, store
from ungerlib.model import codes, data, stage1, stage2

STAGE1 = {"epochs": 3, "dropout": 0.0}
STAGE2 = {"epochs": 3, "dropout": 0.0, "patience": 9}


def run(out: Path, kill_after: int) -> None:
    cfg = config.profile("smoke", stage1=STAGE1, stage2=STAGE2)
    g = distributed.init()
    s1 = stage1.stage1_embeddings(cfg, progress=False)  # through the store

    ds, splits = data.get_splits(cfg)
    cluster = np.array([it["cluster"] for it in ds.items])  # codes fixed here: Stage II alone is compared
    emb = (np.eye(8)[cluster] * 3 + 0.3 * np.random.default_rng(0).normal(size=(ds.n_items, 8))).astype(np.float32)
    table = codes.hierarchical_kmeans(emb, K=8, seed=0)
    work = out.parent / "stage2-work"

    def kill(epoch: int) -> None:
        if epoch == kill_after:
            raise KeyboardInterrupt

    try:
        model, hist2 = stage2.train_stage2(splits, table, emb, cfg, work, progress=False, after_epoch=kill)
        resumed = False
    except KeyboardInterrupt:
        model, hist2 = stage2.train_stage2(splits, table, emb, cfg, work, progress=False)
        resumed = True
    kind_dir = store.artefact_root() / "stage1"
    rec = {"rank": g.rank, "world": g.world, "resumed": resumed,
           "stage1_history": s1.history, "stage1_valid": s1.valid_metrics,
           "stage1_collaborative": float(np.abs(s1.collaborative).sum()),
           "stage2_history": hist2,
           "stage2_params": float(sum(p.detach().abs().sum() for p in model.parameters())),
           "stage1_built": artefacts.state("stage1", cfg),
           "stage1_folders": sorted(p.name for p in kind_dir.iterdir())}
    Path(f"{out}.rank{g.rank}.json").write_text(json.dumps(rec, default=float))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--kill-after", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    run(a.out, a.kill_after)
