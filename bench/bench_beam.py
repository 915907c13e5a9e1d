"""Benchmark: the batched cached beam search, its per-parent child scoring, and the per-user reference.

    python bench/bench_beam.py [--users 512] [--beams 20 50] [--threads 1] [--ref-users 10]
    python bench/bench_beam.py --set decoder_tokens=level valid_children=false history_tokens=codes
    python bench/bench_beam.py --device cuda --json beam.json   # on a GPU (bench/gpu_check.sh), results as JSON

A cpu-profile-sized model (d 128, 1 + 4 layers, random weights: speed does not depend on training), a
K = 256 code table over 12,101 items (Beauty's size, hierarchical k-means of random vectors),
right-aligned histories of 20 items. The default model is the cpu profile's Stage II, lever row J
(``levers.ADOPTED``: per-node decoder tokens tied with the output, valid children, code sum + item
history; its weight decay does not change the speed); ``--set`` overrides it.

Printed per beam width, time per user for
* ``per parent``: the search as the library runs it (:meth:`UNGER._child_scores_by_parent`: one GEMM
  per distinct parent node);
* ``gathered``: the same search scoring every row's children by gathering their embeddings, padded
  to the widest node (what the beam did before; still the training path), swapped in here;
* ``reference``: the plain per-user beam of the tests, on ``--ref-users`` users only,
and how many users get the same items in the same order with the same scores (1e-6) from each pair.
Hugging Face ``generate`` with ``prefix_allowed_tokens_fn`` is not compared: it needs a
``PreTrainedModel`` wrapper and recomputes a Python callback per beam per step, so it would time
the wrapper rather than the search.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "model"))
from test_beam import reference_beam  # noqa: E402  the oracle of the tests

from ungerlib.model import codes  # noqa: E402
from ungerlib.infra import config  # noqa: E402
from ungerlib.model.beam import beam_search  # noqa: E402
from ungerlib.model.stage2 import UNGER, rows  # noqa: E402


def gathered_scores(model: UNGER):
    """The child scoring the beam and training used before the per-parent and per-pair paths: gather
    every row's children padded to the widest node [R, C, d], then scatter their scores [R, C] into
    the K token columns (padding into a spare column K+1 that is dropped)."""

    def scores(h: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        kids = model.kids[node]
        vals = torch.einsum("rd,rcd->rc", h, rows(model.node_emb, kids.clamp(min=0)))
        vals = (vals + model.node_bias[kids.clamp(min=0)]).masked_fill(kids < 0, -torch.inf)
        return h.new_full((len(h), model.K + 1), -torch.inf).scatter(1, model.kid_tok[node], vals)[:, :model.K]

    return scores


def ranked(items: list[np.ndarray], scores: list[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
    out = []
    for i, s in zip(items, scores):
        order = np.argsort(-s, kind="stable")
        out.append((i[order].tolist(), s[order]))
    return out


def agreement(a: list, b: list) -> str:
    """How many users get identical rankings; for the others, the largest score difference of an item
    both return (float rounding can swap near-tied items, or one at the beam's edge)."""
    same = [ia == ib and np.allclose(sa, sb, atol=1e-6) for (ia, sa), (ib, sb) in zip(a, b)]
    gap = 0.0
    for ok, (ia, sa), (ib, sb) in zip(same, a, b):
        if not ok:
            sb_of = dict(zip(ib, sb))
            gap = max([gap] + [abs(s - sb_of[i]) for i, s in zip(ia, sa) if i in sb_of])
    return f"identical for {sum(same)}/{len(same)} users" + (f" (others: max |score diff| {gap:.1e})" if gap else "")


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--ref-users", type=int, default=10, help="users for the slow per-user reference (0: skip)")
    ap.add_argument("--beams", type=int, nargs="*", default=[20, 50])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="Stage II settings over the cpu profile's (default: none, lever row J)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    table = codes.hierarchical_kmeans(rng.normal(size=(12101, 32)), K=256, seed=0)
    cfg = config.profile("cpu", "Beauty", **config.parse_overrides([f"stage2.{s}" for s in a.set]))
    s2 = cfg.stage2
    device = torch.device(a.device)
    model = UNGER(table, 32, s2, max_hist=20).eval().to(device)
    hist = torch.from_numpy(rng.integers(0, len(table), size=(a.users, 20))).to(device)
    print(f"items {len(table)}, K {table.K}, trie nodes {len(table.node_item)}, users {a.users}, "
          f"threads {torch.get_num_threads()}, decoder {s2.decoder_tokens}, history {s2.history_tokens}, "
          f"valid children {s2.valid_children}, device {device}")
    results = {"device": str(device), "users": a.users, "beams": {}}
    for beam in a.beams:
        rec = results["beams"][str(beam)] = {}
        with torch.no_grad():
            search = lambda h: [beam_search(model, h[s:s + 256], table, beam) for s in range(0, len(h), 256)]
            flat = lambda res: ranked([i for r in res for i in r[0]], [s for r in res for s in r[1]])
            fast, res = timed(lambda: flat(search(hist)))
            rec["per_parent_ms_per_user"] = 1000 * fast / a.users
            line = f"beam {beam:3d}: per parent {1000 * fast / a.users:6.1f} ms/user"
            if model.node_tokens:
                model._child_scores_by_parent = gathered_scores(model)
                slow, old = timed(lambda: flat(search(hist)))
                del model._child_scores_by_parent
                rec["gathered_ms_per_user"], rec["agreement_gathered"] = 1000 * slow / a.users, agreement(res, old)
                line += f", gathered {1000 * slow / a.users:6.1f} ms/user ({slow / fast:.1f}x), {agreement(res, old)}"
            if a.ref_users:  # the reference runs on the CPU (a copy of the model on a GPU run)
                n, on_cpu = a.ref_users, model if device.type == "cpu" else copy.deepcopy(model).cpu()
                ref_t, ref = timed(lambda: [reference_beam(on_cpu, h, table, beam) for h in hist[:n].cpu().numpy()])
                ok = all(r[0] == f[0] and np.allclose(r[1], f[1], atol=1e-6) for r, f in zip(ref, res[:n]))
                gap = max((float(np.max(np.abs(np.asarray(r[1]) - f[1]))) for r, f in zip(ref, res[:n])
                           if r[0] == f[0] and len(r[1])), default=0.0)
                rec.update(reference_ms_per_user=1000 * ref_t / n, same_as_reference=ok,
                           same_items_as_reference=all(r[0] == f[0] for r, f in zip(ref, res[:n])),
                           reference_max_score_diff=gap)
                line += f", reference {1000 * ref_t / n:7.1f} ms/user, same as reference: {ok}"
        print(line)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {results['peak_rss_mib']:.0f} MiB")
    if device.type == "cuda":
        results["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
        print(f"peak GPU memory {results['peak_gpu_mib']:.0f} MiB")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
