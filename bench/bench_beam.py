"""Benchmark: batched cached beam search vs the plain per-user reference beam (tests/test_beam.py).

    python bench/bench_beam.py [--users 40] [--beams 20 50]

A paper-sized model (d 128, 1 + 4 layers, random weights: speed does not depend on training),
a K = 256 code table over 12,101 items (Beauty's size, hierarchical k-means of random vectors),
right-aligned histories of 20 items. Prints time per user for both paths, the speed ratio measured
in this run, whether both return identical items and scores, and peak memory.
Hugging Face ``generate`` with ``prefix_allowed_tokens_fn`` is not compared: it needs a
``PreTrainedModel`` wrapper and recomputes a Python callback per beam per step, so it would time
the wrapper rather than the search.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_beam import reference_beam  # noqa: E402  the oracle of the tests

from ungerlib import codes, config  # noqa: E402
from ungerlib.beam import beam_search  # noqa: E402
from ungerlib.stage2 import UNGER  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--beams", type=int, nargs="*", default=[20, 50])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    table = codes.hierarchical_kmeans(rng.normal(size=(12101, 32)), K=256, seed=0)
    s2 = config.profile("paper").stage2
    model = UNGER(table.padded(), table.K, 128, s2, max_hist=20).eval()
    hist = rng.integers(0, len(table), size=(a.users, 20))
    print(f"items {len(table)}, K {table.K}, code lengths {dict(zip(*np.unique(table.lengths, return_counts=True)))}, "
          f"users {a.users}, threads {a.threads}")
    for beam in a.beams:
        with torch.no_grad():
            t0 = time.perf_counter()
            items, scores = beam_search(model, torch.from_numpy(hist), table, beam)
            fast = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref = [reference_beam(model, h, table, beam) for h in hist]
            slow = time.perf_counter() - t0
        same = all(items[r][np.argsort(-scores[r], kind="stable")].tolist() == ref[r][0]
                   and np.allclose(np.sort(scores[r])[::-1], ref[r][1], atol=1e-9) for r in range(a.users))
        print(f"beam {beam:3d}: fast {1000 * fast / a.users:7.1f} ms/user, reference {1000 * slow / a.users:8.1f} ms/user, "
              f"speed-up {slow / fast:5.1f}x, identical output: {same}")
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
