"""Per-stage wall time of the cpu profile on this machine (extrapolated from a few batches).

    python bench/bench_cpu_stages.py --dataset Beauty

Times 40 training batches of Stage I and Stage II and one validation pass on 1,000 users, then
extrapolates to a full epoch / the full validation split. Uses random weights: speed does not
depend on what the model has learnt.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ungerlib.model import codes, data, stage1
from ungerlib.infra import config
from ungerlib.model.beam import recommend
from ungerlib.model.stage2 import UNGER, trim


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--batches", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = config.profile("cpu", a.dataset)
    _, sp = data.get_splits(cfg)
    n, s1, s2 = sp.n_items, cfg.stage1, cfg.stage2
    steps = int(np.ceil(len(sp.train) / s1.batch_size))
    rng = np.random.default_rng(0)
    sem = rng.normal(size=(n, 384)).astype(np.float32)  # speed does not depend on the text
    din = stage1.DIN(n, s1.dim, s1.attn_hidden, s1.dropout, sp.max_len, sem, s1)
    opt = torch.optim.Adam(din.parameters())
    t0 = time.perf_counter()
    for b in range(a.batches):
        idx = rng.integers(len(sp.train), size=s1.batch_size)
        hist, tgt = stage1._pad(sp.train.history[idx], n), torch.from_numpy(sp.train.target[idx])
        neg = torch.from_numpy(rng.integers(n, size=s1.n_negatives))
        loss = din.loss(hist, tgt, neg)["loss"]  # the training loss itself (Eq. 5)
        opt.zero_grad(); loss.backward(); opt.step()
    t1 = (time.perf_counter() - t0) / a.batches * steps
    t0 = time.perf_counter()
    stage1.evaluate_din(din, sp.valid.subset(np.arange(500)))
    e1 = (time.perf_counter() - t0) / 500 * (s1.eval_users or len(sp.valid))
    print(f"Stage I  ({a.dataset}, dim {s1.dim}, {s1.n_negatives} negatives): {t1 / 60:.1f} min/epoch train, "
          f"{e1 / 60:.1f} min validation ({s1.eval_users or len(sp.valid)} users); "
          f"{s1.epochs} epochs ~ {(t1 + e1) * s1.epochs / 60:.0f} min")
    E = rng.normal(size=(n, s1.dim)).astype(np.float32)
    table = codes.hierarchical_kmeans(E, cfg.codes.K, 0)
    model = UNGER(table, s1.dim, s2, sp.max_len, E)
    opt = torch.optim.Adam(model.parameters())
    E = torch.from_numpy(E)
    t0 = time.perf_counter()
    for b in range(a.batches):
        idx = rng.integers(len(sp.train), size=s2.batch_size)
        tgt = torch.from_numpy(sp.train.target[idx])
        neg = torch.from_numpy(rng.integers(n, size=s2.ikd_negatives))
        loss = model.loss(torch.from_numpy(trim(sp.train.history[idx])), tgt, E, neg)["loss"]  # Eq. 8
        opt.zero_grad(); loss.backward(); opt.step()
    t2 = (time.perf_counter() - t0) / a.batches * int(np.ceil(len(sp.train) / s2.batch_size))
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        recommend(model, sp.valid.history[:1000], table, beam=s2.eval_beam, topk=20)
    e2 = (time.perf_counter() - t0) / 1000 * len(sp.valid)
    print(f"Stage II ({a.dataset}, d {s2.d_model}, {s2.enc_layers}+{s2.dec_layers} layers): {t2 / 60:.1f} min/epoch train, "
          f"{e2 / 60:.1f} min validation beam {s2.eval_beam} ({len(sp.valid)} users); "
          f"{s2.epochs} epochs ~ {(t2 + e2) * s2.epochs / 60:.0f} min")


if __name__ == "__main__":
    main()
