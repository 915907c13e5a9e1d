"""Which CPU thread policy holds up on a shared machine? Training steps per second under each policy,
on a quiet machine and with a second CPU-bound job running.

    python bench/bench_threads.py [--steps 12] [--rounds 3] [--loads none busy]

Policies (each in a fresh process: the thread count and ``OMP_WAIT_POLICY`` only take effect
before torch is imported):

* ``torch default``: torch's own choice, one intra-op thread per core, OpenMP's default wait policy
  (its threads spin while waiting for work, which costs a loaded machine dearly);
* ``1 thread``: ``OMP_NUM_THREADS=1``;
* ``2 threads, passive``: ``OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep).

Work: training steps (forward, backward, Adam) of the ``cpu``-profile models on Beauty-sized random
data (12,101 items, histories of 1-20 items, batch 256): Stage I (DIN + MAL + CKA, 256 sampled
negatives) and Stage II (UNGER 1 + 4 layers, d 128, K = 256, length-2 codes, IKD). Speed does not
depend on what the model has learnt, so random data and weights are enough.

Loads: ``none`` (whatever else runs on the machine; the script prints the load average and the
busiest other processes so the report can say what that was) and ``busy`` (a second process
spinning one core, like a second job on a laptop). Policies are interleaved round by round, so
every policy sees the same background; the median step time per (load, policy) is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

POLICIES = {
    "torch default": {},
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "2 threads, passive": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "UNGER_THREADS", "GOMP_SPINCOUNT")


def child(steps: int) -> None:
    """Time ``steps`` training steps of each stage in this process; print one JSON line."""
    import numpy as np
    import torch

    from ungerlib.model import codes, stage1, stage2
    from ungerlib.infra import config

    cfg = config.profile("cpu", "Beauty")
    n, L, B = 12101, 20, 256
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, L + 1, size=B * 4)
    hist = np.full((len(lengths), L), -1, dtype=np.int64)
    for i, k in enumerate(lengths):
        hist[i, L - k:] = rng.integers(n, size=k)
    target = rng.integers(n, size=len(lengths))

    def timed(step) -> float:
        for _ in range(2):  # warm-up: allocator, thread pool
            step()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    s1 = cfg.stage1
    sem = rng.normal(size=(n, 384)).astype(np.float32)
    din = stage1.DIN(n, s1.dim, s1.attn_hidden, s1.dropout, L, sem, s1)
    opt1 = torch.optim.Adam(din.parameters(), lr=s1.lr)

    def step1() -> None:
        idx = rng.integers(len(hist), size=B)
        h = stage1._pad(hist[idx], n)
        loss = din.loss(h, torch.from_numpy(target[idx]), torch.from_numpy(rng.integers(n, size=s1.n_negatives)))
        opt1.zero_grad()
        loss["loss"].backward()
        opt1.step()

    table = codes.random_codes(n, cfg.codes.K, seed=0)
    E = rng.normal(size=(n, s1.dim)).astype(np.float32)
    model = stage2.build_model(table, E, cfg.stage2, L, cfg.seed)
    Et = torch.from_numpy(E)
    opt2 = torch.optim.Adam(model.parameters(), lr=cfg.stage2.lr)

    def step2() -> None:
        idx = rng.integers(len(hist), size=B)
        h = torch.from_numpy(stage2.trim(hist[idx]))
        neg = torch.from_numpy(rng.integers(n, size=cfg.stage2.ikd_negatives))
        loss = model.loss(h, torch.from_numpy(target[idx]), Et, neg)
        opt2.zero_grad()
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.stage2.clip_norm)
        opt2.step()

    out = {"threads": torch.get_num_threads(), "stage1_s": timed(step1), "stage2_s": timed(step2)}
    print(json.dumps(out), flush=True)


def background() -> str:
    """The load average and the busiest processes other than this benchmark."""
    load = os.getloadavg()
    ps = subprocess.run(["ps", "-eo", "pcpu,nlwp,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    busy = [l.strip()[:110] for l in ps.splitlines()[1:] if float(l.split()[0]) >= 20 and "bench_threads" not in l]
    return f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; busy processes: {busy or 'none'}"


def run_policy(name: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(POLICIES[name])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="timed steps per stage and run (after 2 warm-up steps)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of every policy per load, interleaved")
    ap.add_argument("--loads", nargs="*", default=["none", "busy"], choices=["none", "busy"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.steps)
    print(f"{os.cpu_count()} CPUs; before: {background()}", flush=True)
    rows = []
    for load in a.loads:
        spinner = None
        if load == "busy":  # a second CPU-bound job: one core spinning in pure Python
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            times: dict[str, list[dict]] = {p: [] for p in POLICIES}
            for r in range(a.rounds):
                for p in POLICIES:
                    times[p].append(run_policy(p, a.steps))
                    print(f"  load={load} round {r + 1} {p}: {times[p][-1]}", flush=True)
            print(f"during load={load}: {background()}", flush=True)
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()
        for p, ts in times.items():
            rows.append({"load": load, "policy": p, "threads": ts[0]["threads"],
                         "stage1_ms": 1e3 * statistics.median(t["stage1_s"] for t in ts),
                         "stage2_ms": 1e3 * statistics.median(t["stage2_s"] for t in ts)})
    print("\n| load | policy | threads | Stage I step (ms) | Stage II step (ms) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['load']} | {r['policy']} | {r['threads']} | {r['stage1_ms']:.0f} | {r['stage2_ms']:.0f} |")


if __name__ == "__main__":
    main()
