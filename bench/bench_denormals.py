"""How much do subnormal floats cost on this CPU? A Stage II-sized matrix product, once with a weight
matrix whose entries are subnormal (|x| < 1.2e-38, where Adam's weight decay leaves weights that get no
gradient) and once with the same matrix flushed to zero, with torch's flush-to-zero mode off and on.

    python bench/bench_denormals.py [--seconds 3] [--threads 1]

On the Intel Xeon of the 2026-12-05 session (one thread, two other jobs on the 2 cores): 1.7 products
a second with subnormal weights against 201 with the mode on (120x); a row-J Stage II epoch on Beauty
went from about 150 s to 650 s as they accumulated. ``import ungerlib`` turns the mode on
(``ungerlib.infra.runtime.flush_denormals``); this script sets it itself, before and after, to show both.
"""
from __future__ import annotations

import argparse
import time

import torch


def rate(x: torch.Tensor, w: torch.Tensor, seconds: float) -> float:
    """Forward-and-backward-shaped products (x @ w.T, then its transpose with x) per second."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        y = x @ w.T
        _ = y.T @ x
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 128, generator=g)  # a batch of 256 x 8 positions, d_model 128
    w = torch.randn(384, 128, generator=g)  # a qkv projection
    w[:, ::2] = 1e-39  # half its weights subnormal
    rows = []
    for mode in (False, True):
        supported = torch.set_flush_denormal(mode) or not mode
        if not supported:
            print("this CPU has no flush-to-zero mode")
            break
        rows.append((mode, rate(x, w, a.seconds), rate(x, torch.where(w.abs() < 1e-37, 0.0, w), a.seconds)))
    torch.set_flush_denormal(False)
    print(f"{'flush to zero':>14} {'subnormal weights':>18} {'zeros instead':>14}"
          f"  (products / s, {a.threads} thread(s))")
    for mode, sub, zero in rows:
        print(f"{str(mode):>14} {sub:18.1f} {zero:14.1f}")


if __name__ == "__main__":
    main()
