"""How stable are hierarchical k-means codes? One-ulp perturbations against a change of seed.

    python bench/bench_code_stability.py [--emb collaborative.npy] [--n-init 1 3 10] [--K 256]

Two machines that train the same Stage I model get embeddings that differ in the last bits of
float32 (other BLAS kernels, other summation order). This measures what such a difference does to
the unicodes: ``codes.hierarchical_kmeans(emb, K, seed, n_init, max_iter)`` on the embeddings and
on the same embeddings moved by one float32 ulp (``np.nextafter(emb, +inf)``) on every entry
(``ulp32 all``) or on a random half of them (``ulp32 half``), computed in float32 (what
``codes`` does today) or in float64 (``ulp64 all``: a float64 ulp, i.e. rounding noise of a float64
computation). The reference for "as different as it could be" is another seed (``seed 1``).

Larger, random differences (``noise r``: every entry times 1 + r N(0, 1)) stand in for a Stage I
trained on another machine, whose weights drift apart over thousands of steps; ``ulp32 +-1`` moves
each entry one ulp up or down at random.

Per row: adjusted Rand index of the first-level clusters (label-free agreement of the first code
token's partition), the share of items whose first token is the same, the share whose full code is
the same, the first-level within-cluster sum of squares per item on the unperturbed embeddings
(``inertia_l1``: lower is a better k-means solution), and the wall time of the run.
``--seeding`` adds, for the first level alone, whether the noise changes the k-means++ seeds or
Lloyd's iterations from the same seeds.

Single-threaded on 2 shared cores, the default run (n_init 1, 3, 10; float32 and float64) takes
about 10 minutes; ``--n-init 1`` about 2.

Input: ``--emb`` (an ``[n, d]`` .npy, e.g. a finished Stage I artefact's ``collaborative.npy``;
read only), else the newest finished Beauty Stage I artefact under ``$UNGER_ARTEFACTS`` (or
``artefacts/``) if there is one, else a synthetic Beauty-sized mixture (12,101 x 128, 300
overlapping clusters of Zipf-distributed sizes in a 32-d subspace plus isotropic noise).
Single-threaded: set OMP_NUM_THREADS=1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

from ungerlib.model import codes
from ungerlib.infra import store


def synthetic(n: int = 12101, d: int = 128, n_clusters: int = 300, seed: int = 0) -> np.ndarray:
    """Beauty-sized stand-in for Stage I embeddings: overlapping clusters of Zipf sizes, float32."""
    rng = np.random.default_rng(seed)
    sizes = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    labels = rng.choice(n_clusters, size=n, p=sizes / sizes.sum())
    basis = np.linalg.qr(rng.normal(size=(d, 32)))[0]  # clusters live in a 32-d subspace
    centres = rng.normal(size=(n_clusters, 32)) @ basis.T
    x = centres[labels] + 0.6 * rng.normal(size=(n, d))
    return (x * rng.lognormal(0, 0.2, size=(n, 1))).astype(np.float32)


def find_stage1(dataset: str = "Beauty") -> Path | None:
    """The newest finished Stage I artefact of ``dataset`` (its collaborative.npy), if any."""
    found = []
    for prov in (store.artefact_root() / "stage1").glob("*/provenance.json"):
        rec = json.loads(prov.read_text())
        if rec.get("key", {}).get("data", {}).get("dataset") == dataset and (prov.parent / "collaborative.npy").exists():
            found.append((prov.stat().st_mtime, prov.parent / "collaborative.npy"))
    return max(found)[1] if found else None


@contextlib.contextmanager
def computed_in(dtype: type) -> object:
    """Make ``codes.hierarchical_kmeans`` compute in ``dtype`` (it casts its input to float32)."""
    real = codes._check_embeddings

    def keep(emb: np.ndarray, K: int) -> np.ndarray:
        real(emb, K)  # the same checks
        return np.asarray(emb, dtype=dtype)

    if dtype != np.float32:
        codes._check_embeddings = keep
    try:
        yield
    finally:
        codes._check_embeddings = real


def run(x: np.ndarray, K: int, seed: int, n_init: int, max_iter: int, dtype: type) -> tuple[np.ndarray, float]:
    """Padded codes [n, max_len] and wall seconds."""
    t0 = time.perf_counter()
    with computed_in(dtype):
        table = codes.hierarchical_kmeans(x, K, seed, n_init, max_iter)
    return table.padded(), time.perf_counter() - t0


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    width = max(a.shape[1], b.shape[1])
    pad = lambda c: np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=-1)  # noqa: E731
    a, b = pad(a), pad(b)
    return {"ari_first_level": adjusted_rand_score(a[:, 0], b[:, 0]),
            "first_token_same": float((a[:, 0] == b[:, 0]).mean()),
            "code_same": float((a == b).all(1).mean())}


def inertia(x: np.ndarray, padded: np.ndarray) -> float:
    """Within-cluster sum of squares of the first-level partition (float64), per item."""
    x = x.astype(np.float64)
    _, lab = np.unique(padded[:, 0], return_inverse=True)
    means = np.zeros((lab.max() + 1, x.shape[1]))
    np.add.at(means, lab, x)
    means /= np.bincount(lab)[:, None]
    return float(((x - means[lab]) ** 2).sum() / len(x))


def seeding_vs_lloyd(emb: np.ndarray, K: int, seed: int, noise: list[float], draws: int) -> list[dict]:
    """First level only: does a perturbation change the k-means++ seeds, or Lloyd's iterations from
    the same seeds? ARI against the unperturbed fit, for a free fit and one started from the
    unperturbed data's k-means++ seeds, and how many of the K seeds moved."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    rng = np.random.default_rng(seed + 1)
    ref = KMeans(K, n_init=1, random_state=seed).fit(emb).labels_
    c0, _ = kmeans_plusplus(emb, K, random_state=seed)
    rows = []
    for rel in noise:
        for draw in range(draws):
            x = (emb * (1 + rel * rng.normal(size=emb.shape))).astype(np.float32)
            c1, _ = kmeans_plusplus(x, K, random_state=seed)
            rows.append({"noise": rel, "draw": draw + 1,
                         "ari_free": adjusted_rand_score(ref, KMeans(K, n_init=1, random_state=seed).fit(x).labels_),
                         "ari_same_seeds": adjusted_rand_score(ref, KMeans(K, init=c0, n_init=1).fit(x).labels_),
                         "seeds_moved": int((np.abs(c0 - c1).max(1) > 1e-2 * np.abs(c0).max()).sum())})
            print("seeding vs Lloyd", {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()},
                  flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emb", help="an [n, d] .npy (read only); default: a Beauty Stage I artefact, else synthetic")
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--n-init", type=int, nargs="*", default=[1, 3, 10])
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, nargs="*", default=[1e-6, 1e-5, 1e-4, 1e-3],
                    help="relative Gaussian noise levels to try as well")
    ap.add_argument("--draws", type=int, default=1, help="independent noise draws per level")
    ap.add_argument("--seeding", action="store_true",
                    help="also: first level only, k-means++ seeding vs Lloyd's iterations under the noise levels")
    ap.add_argument("--csv", help="also write the rows here")
    a = ap.parse_args()
    src = Path(a.emb) if a.emb else find_stage1()
    emb = np.load(src, allow_pickle=False).astype(np.float32) if src else synthetic()
    print(f"embeddings: {src or 'synthetic mixture'} {emb.shape} {emb.dtype}; K={a.K}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    rng = np.random.default_rng(a.seed)
    up32 = np.nextafter(emb, np.float32(np.inf))
    down32 = np.nextafter(emb, np.float32(-np.inf))
    coin = rng.random(emb.shape) < 0.5
    perturbed = {"ulp32 all": up32, "ulp32 half": np.where(coin, up32, emb),
                 "ulp32 +-1": np.where(coin, up32, down32)}
    for rel in a.noise:  # relative Gaussian noise, as a stand-in for Stage I trained on another machine
        for draw in range(a.draws):
            name = f"noise {rel:g}" + (f" #{draw + 1}" if a.draws > 1 else "")
            perturbed[name] = (emb * (1 + rel * rng.normal(size=emb.shape))).astype(np.float32)
    rows = []
    for dtype_name in a.dtypes:
        dtype = np.dtype(dtype_name).type
        for n_init in a.n_init:
            ref, t_ref = run(emb, a.K, a.seed, n_init, a.max_iter, dtype)
            rows.append({"dtype": dtype_name, "n_init": n_init, "vs reference": "(reference)",
                         **agreement(ref, ref), "inertia_l1": inertia(emb, ref), "wall_s": round(t_ref, 1)})
            variants = {name: (x, a.seed) for name, x in perturbed.items()}
            if dtype == np.float64:
                variants["ulp64 all"] = (np.nextafter(emb.astype(np.float64), np.inf), a.seed)
            if n_init == a.n_init[0]:  # determinism on this machine
                variants = {"rerun": (emb, a.seed), **variants}
            variants["seed 1"] = (emb, a.seed + 1)
            print(f"{dtype_name:8s} n_init={n_init:2d} reference ({t_ref:.1f} s)", flush=True)
            for name, (x, seed) in variants.items():
                codes_, t = run(x, a.K, seed, n_init, a.max_iter, dtype)
                rows.append({"dtype": dtype_name, "n_init": n_init, "vs reference": name,
                             **agreement(ref, codes_), "inertia_l1": inertia(emb, codes_), "wall_s": round(t, 1)})
                r = rows[-1]
                print(f"{dtype_name:8s} n_init={n_init:2d} {name:17s} ARI {r['ari_first_level']:.3f} "
                      f"first {r['first_token_same']:.3f} code {r['code_same']:.3f} ({t:.1f} s)", flush=True)
    import pandas as pd

    if a.seeding:
        seeding = pd.DataFrame(seeding_vs_lloyd(emb, a.K, a.seed, a.noise, a.draws))
        print(seeding.to_markdown(index=False, floatfmt=("g", "d", ".3f", ".3f", "d")))

    df = pd.DataFrame(rows)
    print(df.to_markdown(index=False, floatfmt=".3f"))
    if a.csv:
        df.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
