"""Full softmax or sampled negatives for Stage I's next-item loss (Eq. 4)? Measured two ways.

    python bench/bench_stage1_softmax.py [--dataset Beauty]

1. Cost on real data: seconds per training example of one DIN step (forward + backward) with the
   target + 256 shared negatives against all items as candidates (DIN's target-aware attention
   makes every candidate cost a pass over the history, so the full softmax scales with the items).
2. Accuracy where both are affordable: the synthetic smoke data set, Stage I trained with full
   softmax and with sampled negatives (same seed, same epochs), validation Recall/NDCG@10/20.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ungerlib.infra import config
from ungerlib.model import data, stage1


def step_seconds(sp: data.Splits, s1: config.Stage1Config, n_negatives: int, batch: int, reps: int = 2) -> float:
    n, rng = sp.n_items, np.random.default_rng(0)
    din = stage1.DIN(n, s1.dim, s1.attn_hidden, s1.dropout)
    opt = torch.optim.Adam(din.parameters())
    times = []
    for _ in range(reps + 1):
        idx = rng.integers(len(sp.train), size=batch)
        hist, tgt = stage1._pad(sp.train.history[idx], n), torch.from_numpy(sp.train.target[idx])
        t0 = time.perf_counter()
        neg = torch.from_numpy(rng.integers(n, size=n_negatives)) if n_negatives else None
        loss = din.seq_loss(hist, tgt, neg)  # the training loss itself (Eq. 4)
        opt.zero_grad(); loss.backward(); opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:])) / batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--batch", type=int, default=32, help="small: the full softmax holds B x L x H x items floats")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = config.profile("cpu", a.dataset)
    _, sp = data.get_splits(cfg)
    sampled = step_seconds(sp, cfg.stage1, cfg.stage1.n_negatives, a.batch)
    full = step_seconds(sp, cfg.stage1, 0, a.batch)
    per_epoch = len(sp.train) / 60
    print(f"{a.dataset} ({sp.n_items} items, {len(sp.train)} training examples): "
          f"sampled ({cfg.stage1.n_negatives} negatives) {1e3 * sampled:.2f} ms/example ~ {sampled * per_epoch:.1f} min/epoch; "
          f"full softmax {1e3 * full:.2f} ms/example ~ {full * per_epoch:.1f} min/epoch ({full / sampled:.0f}x)")
    smoke = config.profile("smoke")
    _, ssp = data.get_splits(smoke)
    from ungerlib.model.semantic import semantic_embeddings

    sem = semantic_embeddings(smoke)
    for neg in (0, smoke.stage1.n_negatives):
        t0 = time.perf_counter()
        res = stage1.train_stage1(ssp, sem, smoke.replace(stage1={"n_negatives": neg}), progress=False)
        m = res.valid_metrics
        print(f"synthetic ({ssp.n_items} items), {'full softmax' if neg == 0 else f'{neg} sampled negatives':>20}: "
              f"valid R@10 {m['recall@10']:.4f} N@10 {m['ndcg@10']:.4f} R@20 {m['recall@20']:.4f} "
              f"N@20 {m['ndcg@20']:.4f} (best epoch {m['best_epoch']}, {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
