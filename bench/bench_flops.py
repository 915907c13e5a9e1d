"""Benchmark: FLOPs of the paper profile, per training step and per epoch, for docs/SCALE.md.

    python bench/bench_flops.py [--dataset Beauty] [--batches 4] [--json flops.json]

The paper profile's Stage I (DIN + MAL + CKA on 4096-d Llama-2 embeddings, here random: FLOPs do not
depend on the values) and Stage II (d 128, 1 + 4 layers, K = 256 codes over the data set's items, here
hierarchical k-means of random 128-d vectors: about the trie of real codes) are built at the data set's
size. ``torch.utils.flop_counter.FlopCounterMode`` counts one training step (forward and backward) on
``--batches`` real batches of the epoch (Stage II: bucketed and trimmed, as trained), one validation
batch (Stage I: every item scored; Stage II: the beam of ``eval_beam``) and one batch of the
evaluation's beam. The counter counts matrix products and attention only, not element-wise work (DIN's
activation unit over [B, L, H, C] is mostly element-wise), and the aten operators per step are counted
too: on a GPU each is at least one kernel launch, which for models this small costs more than their
FLOPs. Per epoch = per batch x batches per epoch. The text encoding, once per data set, is the usual
2 x parameters x tokens of a forward pass (the attention over 128 tokens adds under 1 %), with the
tokens counted by the MiniLM tokenizer as a stand-in for Llama's.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ungerlib.infra import config
from ungerlib.model import codes, data, stage1, stage2
from ungerlib.model.beam import beam_search
from ungerlib.model.train import shuffled_batches

LLAMA_2_7B_PARAMS = 6.74e9
D_SEMANTIC = 4096  # Llama-2-7b's hidden size: the width of E_S


class OpCounter(TorchDispatchMode):
    """Counts the aten operators run inside it (each is at least one kernel launch on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def counted(fn) -> tuple[float, int, float]:
    """(FLOPs, aten operators, CPU seconds) of ``fn()``."""
    flops, ops = FlopCounterMode(display=False), OpCounter()
    t0 = time.perf_counter()
    with flops, ops:
        fn()
    return float(flops.get_total_flops()), sum(ops.ops.values()), time.perf_counter() - t0


def stage1_costs(cfg: config.RunConfig, splits: data.Splits, n_batches: int) -> dict[str, float]:
    s1, n, tr = cfg.stage1, splits.n_items, splits.train
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    sem = rng.normal(size=(n, D_SEMANTIC)).astype(np.float32)
    model = stage1.DIN(n, s1.dim, s1.attn_hidden, s1.dropout, splits.max_len, sem, s1).train()
    batches = shuffled_batches(len(tr), s1.batch_size, rng)
    steps = []
    for idx in batches[:n_batches]:
        neg = torch.from_numpy(rng.integers(n, size=s1.n_negatives))

        def step() -> None:
            model.loss(stage1._pad(tr.history[idx], n), torch.from_numpy(tr.target[idx]), neg)["loss"].backward()

        steps.append(counted(step))
    model.eval()
    valid_users = s1.eval_users or len(splits.valid)
    with torch.no_grad():
        v = counted(lambda: model.interest(stage1._pad(splits.valid.history[:64], n), torch.arange(n)))
    return {"per_step": float(np.mean([s[0] for s in steps])), "ops_per_step": float(np.mean([s[1] for s in steps])),
            "cpu_s_per_step": float(np.mean([s[2] for s in steps])), "steps_per_epoch": len(batches),
            "valid_per_epoch": v[0] * valid_users / 64, "valid_ops_per_epoch": v[1] * math.ceil(valid_users / 64)}


def stage2_costs(cfg: config.RunConfig, splits: data.Splits, n_batches: int) -> dict[str, float]:
    s2, tr = cfg.stage2, splits.train
    rng = np.random.default_rng(0)
    table = codes.hierarchical_kmeans(rng.normal(size=(splits.n_items, s2.d_model)).astype(np.float32),
                                      K=cfg.codes.K, seed=0)
    E = torch.from_numpy(rng.normal(size=(splits.n_items, cfg.stage1.dim)).astype(np.float32))
    model = stage2.build_model(table, E.numpy(), s2, splits.max_len, 0).train()
    batches = shuffled_batches(len(tr), s2.batch_size, rng, tr.lengths, s2.bucket)
    steps = []
    for idx in batches[:n_batches]:
        neg = torch.from_numpy(rng.integers(splits.n_items, size=s2.ikd_negatives))
        hist = torch.from_numpy(stage2.trim(tr.history[idx]))

        def step() -> None:
            model.loss(hist, torch.from_numpy(tr.target[idx]), E, neg)["loss"].backward()

        steps.append(counted(step))
    model.eval()
    users = torch.from_numpy(splits.valid.history[:256])
    with torch.no_grad():
        valid = counted(lambda: beam_search(model, users, table, s2.eval_beam))
        final = counted(lambda: beam_search(model, users, table, cfg.eval.beam))
    per_user = len(splits.valid) / len(users)
    return {"per_step": float(np.mean([s[0] for s in steps])), "ops_per_step": float(np.mean([s[1] for s in steps])),
            "cpu_s_per_step": float(np.mean([s[2] for s in steps])), "steps_per_epoch": len(batches),
            "valid_per_epoch": valid[0] * per_user, "valid_ops_per_epoch": valid[1] * per_user,
            "eval_beam": final[0] * per_user * 2, "eval_ops": final[1] * per_user * 2,  # valid and test users
            "code_levels": table.max_len, "trie_nodes": len(table.node_item)}


def encoding_cost(cfg: config.RunConfig) -> dict[str, float]:
    from transformers import AutoTokenizer

    from ungerlib.model.semantic import item_texts, resolve_encoder

    ds = data.load_dataset(cfg.data)
    texts, _ = item_texts(ds, cfg.semantic.template, cfg.semantic.allow_missing_text)
    tok = AutoTokenizer.from_pretrained(resolve_encoder("all-MiniLM-L6-v2"))
    tokens = sum(min(len(ids), cfg.semantic.max_length) for ids in tok(texts)["input_ids"])
    return {"tokens": tokens, "flops": 2 * LLAMA_2_7B_PARAMS * tokens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--batches", type=int, default=4, help="training batches counted per stage (their mean)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = config.profile("paper", a.dataset)
    _, splits = data.get_splits(cfg)
    res = {"dataset": a.dataset, "train_examples": len(splits.train), "valid_users": len(splits.valid),
           "items": splits.n_items, "stage1": stage1_costs(cfg, splits, a.batches),
           "stage2": stage2_costs(cfg, splits, a.batches), "encoding": encoding_cost(cfg),
           "epochs": {"stage1": cfg.stage1.epochs, "stage2": cfg.stage2.epochs}}
    for s in ("stage1", "stage2"):
        c = res[s]
        c["train_per_epoch"] = c["per_step"] * c["steps_per_epoch"]
        c["ops_per_epoch"] = c["ops_per_step"] * c["steps_per_epoch"] + c["valid_ops_per_epoch"]
        print(f"{s}: {c['per_step'] / 1e9:.1f} GFLOP per step ({c['ops_per_step']:.0f} aten ops, "
              f"{c['cpu_s_per_step']:.2f} s on this CPU), {c['steps_per_epoch']} steps: "
              f"{c['train_per_epoch'] / 1e12:.2f} TFLOP per epoch of training + {c['valid_per_epoch'] / 1e12:.2f} "
              f"of validation; {c['ops_per_epoch'] / 1e6:.2f} M aten ops per epoch")
    print(f"stage2: evaluation beam {cfg.eval.beam} over valid and test: {res['stage2']['eval_beam'] / 1e12:.2f} TFLOP, "
          f"{res['stage2']['eval_ops'] / 1e6:.2f} M aten ops; codes of {res['stage2']['code_levels']} levels")
    print(f"encoding: {res['encoding']['tokens']} tokens, {res['encoding']['flops'] / 1e15:.1f} PFLOP (Llama-2-7b)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
