"""Stage II epoch time before and after length bucketing + trimming, in one run, same machine.

    python bench/bench_stage2_epoch.py --dataset Beauty [--batches 80] [--threads 1]

* before: shuffled batches, every history padded to ``max_len`` (20), the validation beam run in
  user order on 20-wide histories (what Stage II did until this change);
* after: batches of similar history length (``stage2.bucket``), each trimmed to its longest
  history; the validation beam batches users by length and trims likewise.

Both train the cpu profile's model (and the profile's ``decoder_tokens``/``history_tokens``) on
random codes and embeddings of the data set's size: speed does not depend on what was learnt.
Training time is measured on ``--batches`` batches of each kind and extrapolated to an epoch;
validation on ``--users`` users, extrapolated to the split.

With per-node decoder tokens it also trains the "after" batches once more with the children's scores
gathered over K padded children per row, as the code did before ``UNGER._child_scores_by_row``.

Same math: on one fixed sequence of batches, with dropout off, the loss terms of trimmed and
20-wide batches must match to float tolerance (printed, and the script fails if they do not).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ungerlib.model import codes, data, stage2
from ungerlib.infra import config
from ungerlib.model.beam import _rankings
from ungerlib.model.train import shuffled_batches


def train_seconds(model, sp, E, batches, trim: bool) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    model.train()
    t0 = time.perf_counter()
    for idx in batches:
        hist = sp.train.history[idx]
        hist = stage2.trim(hist) if trim else hist
        neg = torch.from_numpy(rng.integers(sp.n_items, size=model.s2.ikd_negatives))
        loss = model.loss(torch.from_numpy(hist), torch.from_numpy(sp.train.target[idx]), E, neg)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / len(batches)


@torch.no_grad()
def valid_seconds(model, sp, table, users: int, beam: int, by_length: bool) -> float:
    hist = sp.valid.history[:users]
    t0 = time.perf_counter()
    if by_length:
        _rankings(model, hist, table, beam, 20, 256, (False,), hist)
    else:  # the previous search: users in order, 20-wide histories
        from ungerlib.model.beam import beam_search

        model.eval()
        for s in range(0, len(hist), 256):
            beam_search(model, torch.from_numpy(hist[s:s + 256]), table, beam)
    return (time.perf_counter() - t0) / users


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--batches", type=int, default=80)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="Stage II settings over the cpu profile's, e.g. decoder_tokens=level")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = config.profile("cpu", a.dataset, **config.parse_overrides([f"stage2.{s}" for s in a.set]))
    s2 = cfg.stage2
    _, sp = data.get_splits(cfg)
    rng = np.random.default_rng(0)
    E = rng.normal(size=(sp.n_items, 128)).astype(np.float32)
    table = codes.hierarchical_kmeans(E, cfg.codes.K, 0)
    model = stage2.build_model(table, E, s2, sp.max_len, 0)
    Et = torch.from_numpy(E)
    n_batches = int(np.ceil(len(sp.train) / s2.batch_size))
    lengths = sp.train.lengths

    # same math: fixed batches (length-bucketed, so trimming removes padding), dropout off
    model.eval()
    worst = 0.0
    with torch.no_grad():
        for idx in shuffled_batches(len(sp.train), s2.batch_size, np.random.default_rng(1), lengths, 8)[:10]:
            neg = torch.from_numpy(rng.integers(sp.n_items, size=s2.ikd_negatives))
            tgt = torch.from_numpy(sp.train.target[idx])
            full = model.loss(torch.from_numpy(sp.train.history[idx]), tgt, Et, neg)
            short = model.loss(torch.from_numpy(stage2.trim(sp.train.history[idx])), tgt, Et, neg)
            worst = max(worst, *(abs(float(full[k]) - float(short[k])) for k in full))
    print(f"same math: max |loss(20-wide) - loss(trimmed)| over 10 fixed batches = {worst:.2e}")
    assert worst < 1e-4, "trimming changed the loss"

    before_b = shuffled_batches(len(sp.train), s2.batch_size, np.random.default_rng(2))[:a.batches]
    after_b = shuffled_batches(len(sp.train), s2.batch_size, np.random.default_rng(2), lengths,
                               max(s2.bucket, 8))[:a.batches]
    pad = lambda bs: np.mean([lengths[b].max() for b in bs])
    tb = train_seconds(model, sp, Et, before_b, trim=False)
    ta = train_seconds(model, sp, Et, after_b, trim=True)
    if model.node_tokens:  # the per-node child scoring before it touched only the real children
        from bench_beam import gathered_scores

        model._child_scores_by_row = gathered_scores(model)
        tg = train_seconds(model, sp, Et, after_b, trim=True)
        del model._child_scores_by_row
    vb = valid_seconds(model, sp, table, a.users, s2.eval_beam, by_length=False)
    va = valid_seconds(model, sp, table, a.users, s2.eval_beam, by_length=True)
    nv = len(sp.valid)
    print(f"{a.dataset}: {len(sp.train)} training examples, {n_batches} batches of {s2.batch_size}, "
          f"torch threads {torch.get_num_threads()}, decoder {s2.decoder_tokens}, history {s2.history_tokens}")
    print(f"  before: train {tb * n_batches:.0f} s/epoch (mean batch width {pad(before_b):.1f}), "
          f"validation beam {s2.eval_beam} {vb * nv:.0f} s")
    print(f"  after:  train {ta * n_batches:.0f} s/epoch (mean batch width {pad(after_b):.1f}), "
          f"validation beam {s2.eval_beam} {va * nv:.0f} s")
    print(f"  epoch incl. validation: {(tb + vb * nv / n_batches) / (ta + va * nv / n_batches):.2f}x faster")
    if model.node_tokens:
        print(f"  per-node child scores gathered over K padded children instead (the earlier code; bench_beam.py "
              f"times the beam): train {tg * n_batches:.0f} s/epoch, {tg / ta:.2f}x the current")


if __name__ == "__main__":
    main()
