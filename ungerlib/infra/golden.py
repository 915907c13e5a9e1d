"""Golden fingerprints: a short, fixed computation per artefact kind, compared against committed values,
so that a change which moves a kind's numbers fails CI unless that kind's version was bumped.

    python -m ungerlib golden --check     # what tests/test_golden.py runs
    python -m ungerlib golden --update    # after a deliberate change and a version bump

Why a fingerprint per kind, on fixed inputs, and not the smoke tables. A float-level difference
between two CPUs (kernels picked by vector extension, reduction order) is about 1e-7 relative. A long
run amplifies it: a different k-means split, other codes, another Stage II. So each kind is checked
in isolation, on inputs fixed here (a tiny synthetic data set, well-separated embeddings, a fixed code
table), through a computation of a few dozen steps, where that noise stays small: continuous values
are compared with a relative tolerance of :data:`RTOL`, far above the noise and far below what a
change of a computation does; discrete values (codes, rankings) must agree on :data:`AGREE` of their
entries. ``docs/ARTEFACTS.md`` gives the measured noise (1 against 2 threads, flush-to-zero off and
on) against these tolerances.

Each entry of the golden file records the versions of the kind's chain it was made at
(:mod:`ungerlib.artefacts`). A check fails when

* the values moved while those versions did not: the change needs a version bump (or is a bug);
* the versions moved while the golden copy did not: ``--update`` and commit the file.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ungerlib.infra import artefacts, cli
from ungerlib.infra import config as C

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "golden" / "fingerprints.json"
RTOL, ATOL = 2e-3, 1e-5  # continuous values
AGREE = 0.95  # share of discrete entries (codes, ranked items) that must be equal


# --------------------------------------------------------------------------- fixed inputs

def _cfg() -> C.RunConfig:
    """The smoke profile on a tiny synthetic data set, trained for two epochs."""
    return C.profile("smoke", data={"n_users": 120, "n_items": 48, "n_topics": 4, "seq_len": [5, 9], "seed": 3},
                     stage1={"epochs": 2, "dim": 8, "n_negatives": 16, "batch_size": 64},
                     codes={"K": 4, "rq_epochs": 30},
                     stage2={"epochs": 2, "d_model": 16, "d_ff": 32, "batch_size": 64, "ikd_negatives": 8,
                             "eval_beam": 10},
                     eval={"beam": 10})


def _splits(cfg: C.RunConfig):
    from ungerlib.model.data import leave_one_out, make_synthetic

    ds = make_synthetic(cfg.data)
    return ds, leave_one_out(ds, cfg.data.max_len)


def _blobs(n: int = 48, d: int = 8, k: int = 4, seed: int = 0) -> np.ndarray:
    """``n`` points in ``k`` well-separated clusters (k-means cannot split them two ways)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    return (centres[np.arange(n) % k] + rng.normal(size=(n, d)) * 0.3).astype(np.float32)


def _table(emb: np.ndarray):
    from ungerlib.model.codes import hierarchical_kmeans

    return hierarchical_kmeans(emb, K=4, seed=0)


def _floats(x: Any) -> list[float]:
    return [float(v) for v in np.asarray(x, dtype=np.float64).ravel()]


def _history(hist: list[dict[str, float]], keys: tuple[str, ...]) -> list[float]:
    return [float(h[k]) for h in hist for k in keys if k in h]


# --------------------------------------------------------------------------- one fingerprint per kind

def _data() -> dict[str, Any]:
    from ungerlib.model.data import leave_one_out, load_dataset

    cfg = _cfg()
    _, sp = _splits(cfg)
    toys = leave_one_out(load_dataset(C.profile("cpu", "Toys").data))
    out = {}
    for name, s in (("synthetic", sp), ("Toys", toys)):
        out[f"{name} ints"] = [len(s.train), len(s.valid), int(s.train.target.sum()), int(s.valid.target.sum()),
                               int(s.test.target.sum()), int((s.train.history >= 0).sum()), int((s.test.seen >= 0).sum())]
    return out


def _semantic() -> dict[str, Any]:
    from ungerlib.model.semantic import encode, hashing_encode, item_texts

    ds, _ = _splits(_cfg())
    texts, _ = item_texts(ds, C.SemanticConfig().template)
    minilm = encode(texts[:4], "all-MiniLM-L6-v2", batch_size=4, fp16=False)
    return {"hashing": _floats(hashing_encode(texts[:6])[:, :16]), "minilm": _floats(minilm[:, :16]),
            "text lengths": [len(t) for t in texts[:12]]}


def _stage1() -> dict[str, Any]:
    from ungerlib.model.semantic import hashing_encode, item_texts
    from ungerlib.model.stage1 import train_stage1

    cfg = _cfg()
    ds, sp = _splits(cfg)
    sem = hashing_encode(item_texts(ds, cfg.semantic.template)[0])
    res = train_stage1(sp, sem, cfg, progress=False)
    return {"losses": _history(res.history, ("loss_seq", "loss_align")),
            "collaborative": _floats(np.abs(res.collaborative).mean(1)[:12]),
            "adapted": _floats(np.abs(res.adapted).mean(1)[:12])}


def _codes() -> dict[str, Any]:
    from ungerlib.model.codes import random_codes, rqvae_codes

    emb = _blobs()
    hk = _table(emb)
    spread = np.random.default_rng(0).normal(size=emb.shape).astype(np.float32)  # RQ-VAE collapses on blobs
    rq = rqvae_codes(spread, 16, 3, (32,), 8, 30, 0.25, 1e-3, 0)
    rnd = random_codes(len(emb), 4, 0, like=hk)
    flat = lambda t: [v for code in t.codes for v in code]  # noqa: E731
    return {"hkmeans codes": flat(hk), "rqvae codes": flat(rq), "random codes": flat(rnd)}


_MODELS: dict[str, Any] = {}


def _stage2_model(row: str, model_cls: Any = None):
    """Row ``row`` of :data:`ungerlib.analyses.stage2_grid.STAGE2_LEVERS` trained two epochs on the fixed inputs."""
    from ungerlib.analyses import stage2_grid as levers
    from ungerlib.model.stage2 import UNGER, train_stage2

    name = (row, model_cls.__name__ if model_cls else "UNGER")
    if name not in _MODELS:
        cfg = levers.lever_config(_cfg(), row, {"epochs": 2})
        _, sp = _splits(cfg)
        emb = _blobs()
        _MODELS[name] = (*train_stage2(sp, _table(emb), emb, cfg, progress=False, model_cls=model_cls or UNGER), sp, emb, cfg)
    return _MODELS[name]


def _stage2() -> dict[str, Any]:
    from ungerlib.analyses import stage2_grid as levers

    out = {}
    for row in (levers.LITERAL, levers.ADOPTED):
        _, hist, *_ = _stage2_model(row)
        out[f"row {row[0]} losses"] = _history(hist, ("loss_gen", "loss_ikd"))
    return out


def _decoded(model: Any, sp: Any, emb: np.ndarray, beam: int = 10) -> dict[str, Any]:
    import torch

    from ungerlib.model.beam import beam_search

    hist = torch.from_numpy(sp.valid.history[:8])
    items, scores = beam_search(model, hist, _table(emb), beam)
    top = [np.sort(s)[::-1][:5] for s in scores]
    ranked = [it[np.argsort(-s, kind="stable")][:5] for it, s in zip(items, scores)]
    return {"top log-probs": _floats(np.concatenate(top)), "top items": [int(i) for r in ranked for i in r]}


def _eval() -> dict[str, Any]:
    from ungerlib.analyses import stage2_grid as levers

    model, _, sp, emb, _ = _stage2_model(levers.ADOPTED)
    return _decoded(model, sp, emb)


def _eval_neighbours() -> dict[str, Any]:
    from ungerlib.analyses import stage2_grid as levers
    from ungerlib.model.neighbours import NeighbourDecoder

    model, _, sp, emb, _ = _stage2_model(levers.ADOPTED)
    return _decoded(NeighbourDecoder(model, emb, (2.0, 5.0)).eval(), sp, emb)


def _stage2_discrec() -> dict[str, Any]:
    from ungerlib.analyses import stage2_grid as levers
    from ungerlib.baselines.discrec import DiscRecUNGER

    _, hist, *_ = _stage2_model(levers.ADOPTED, DiscRecUNGER)
    return {"losses": _history(hist, ("loss_gen", "loss_ikd"))}


def _eval_discrec() -> dict[str, Any]:
    from ungerlib.analyses import stage2_grid as levers
    from ungerlib.baselines.discrec import DiscRecUNGER

    model, _, sp, emb, _ = _stage2_model(levers.ADOPTED, DiscRecUNGER)
    return _decoded(model, sp, emb)


def _dual_model():
    """The EAGER-style dual code trained two epochs on two fixed code tables."""
    from ungerlib.analyses import stage2_grid
    from ungerlib.baselines import dual

    if "dual" not in _MODELS:
        cfg = stage2_grid.lever_config(_cfg(), stage2_grid.ADOPTED, {"epochs": 2})
        _, sp = _splits(cfg)
        emb = {"behaviour": _blobs(), "semantic": _blobs(seed=1)}
        data = dual.Inputs(sp, {s: _table(e) for s, e in emb.items()}, emb)
        _MODELS["dual"] = (*dual.train_dual(data, cfg, progress=False), sp)
    return _MODELS["dual"]


def _stage2_dual() -> dict[str, Any]:
    _, hist, _ = _dual_model()
    return {"losses": _history(hist, ("loss_gen_behaviour", "loss_ikd_behaviour", "loss_gen_semantic",
                                      "loss_ikd_semantic"))}


def _eval_dual() -> dict[str, Any]:
    model, _, sp = _dual_model()
    (ranked, scores), _ = model.rankings(sp.valid.history[:8], beam=10, topk=5, exclude=sp.valid.exclude[:8])
    return {"top log-probs": _floats(scores), "top items": [int(i) for i in ranked.ravel()]}


def _baseline(model: str) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        from ungerlib.analyses import table3 as overall
        from ungerlib.model.semantic import hashing_encode, item_texts

        cfg = _cfg()
        ds, sp = _splits(cfg)
        params = {**overall.grid("smoke", model)[0], **_BASELINE_BUDGET.get(model, {})}
        with tempfile.TemporaryDirectory() as work:
            if model == "TIGER":
                from ungerlib.baselines.tiger import fit_and_rank

                feats = hashing_encode(item_texts(ds, cfg.semantic.template)[0])
                rankings, hist, _ = fit_and_rank(params, ds, sp, 0, feats, Path(work))
            elif model in ("LightGCN", "NGCF", "AlphaRec"):
                from ungerlib.baselines.graph import fit_and_rank

                feats = hashing_encode(item_texts(ds, cfg.semantic.template)[0]) if model == "AlphaRec" else None
                rankings, hist, _ = fit_and_rank(model, params, sp, 0, feats, Path(work))
            elif model in ("SASRec", "HSTU"):
                from ungerlib.baselines.sequential import fit_and_rank

                rankings, hist, _ = fit_and_rank(model, params, sp, 0, Path(work))
            else:
                from ungerlib.baselines.cornac import fit_and_rank

                rankings, hist, _ = fit_and_rank(model, params, ds, sp, 0, Path(work))
        return {"ranked items": [int(i) for i in rankings["valid_all"][:30, :10].ravel()]}
    return run


# two epochs without early stopping, on the fixed inputs
_BASELINE_BUDGET = {"SASRec": {"epochs": 2, "patience": 9}, "HSTU": {"epochs": 2, "patience": 9},
                    "BERT4Rec": {"n_epochs": 2, "patience": 9}, "GRU4Rec": {"n_epochs": 2, "patience": 9},
                    "TIGER": {"n_epochs": 1, "patience": 9, "rqvae_n_epochs": 5}, "LightGCN": {"epochs": 2, "patience": 9},
                    "NGCF": {"epochs": 2, "patience": 9}, "AlphaRec": {"epochs": 2, "patience": 9}}

FINGERPRINTS: dict[str, Callable[[], dict[str, Any]]] = {
    "data": _data, "semantic": _semantic, "stage1": _stage1, "codes": _codes, "stage2": _stage2,
    "eval": _eval, "eval_neighbours": _eval_neighbours, "stage2_discrec": _stage2_discrec,
    "eval_discrec": _eval_discrec, "stage2_dual": _stage2_dual, "eval_dual": _eval_dual,
    **{artefacts.baseline_kind(m): _baseline(m) for m, _, _ in artefacts.BASELINES},
}


# --------------------------------------------------------------------------- compute and compare

def versions(kind: str) -> dict[str, int]:
    return {k.name: k.version for k in artefacts.get(kind).chain()}


def compute(kinds: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{kind: {"versions": ..., "values": ...}}`` for ``kinds`` (default: every registered kind)."""
    from ungerlib.infra import runtime

    runtime.configure_threads()
    _MODELS.clear()
    out = {}
    for kind in kinds or list(artefacts.KINDS):
        if kind not in FINGERPRINTS:
            raise C.ConfigError(f"artefact kind {kind!r} has no golden fingerprint in ungerlib.golden.FINGERPRINTS")
        out[kind] = {"versions": versions(kind), "values": FINGERPRINTS[kind]()}
    return out


def _differs(a: list, b: list) -> str | None:
    """Why two value lists disagree beyond the tolerances, or None."""
    if len(a) != len(b):
        return f"{len(a)} values against {len(b)}"
    if all(isinstance(v, int) for v in a + b):
        agree = np.mean(np.asarray(a) == np.asarray(b)) if a else 1.0
        return None if agree >= AGREE else f"{agree:.0%} of entries equal (need {AGREE:.0%})"
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    bad = ~np.isclose(x, y, rtol=RTOL, atol=ATOL)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return f"{int(bad.sum())} of {len(x)} values differ, first {x[i]:.6g} against {y[i]:.6g}"
    return None


def compare(now: dict[str, dict[str, Any]], golden: dict[str, dict[str, Any]]) -> list[str]:
    """One line per kind whose fingerprint disagrees with the golden copy, saying what to do."""
    problems = []
    for kind, rec in now.items():
        old = golden.get(kind)
        if old is None:
            problems.append(f"{kind}: no golden fingerprint; run python -m ungerlib golden --update")
            continue
        if old["versions"] != rec["versions"]:
            problems.append(f"{kind}: versions {rec['versions']} but the golden copy was made at {old['versions']}; "
                            "run python -m ungerlib golden --update and commit tests/golden/fingerprints.json")
            continue
        why = [f"{name} ({w})" for name in sorted(set(rec["values"]) | set(old["values"]))
               if (w := _differs(rec["values"].get(name, []), old["values"].get(name, [])))]
        if why:
            problems.append(f"{kind}: numbers moved at an unchanged version: {'; '.join(why)}. If the change is meant, "
                            f"bump the version of {kind} (or of the kind upstream that moved) in "
                            "ungerlib/artefacts.py (KINDS) and run python -m ungerlib golden --update")
    return problems


def load(path: Path = GOLDEN) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise cli.Failed(f"no golden fingerprints at {path}; run python -m ungerlib golden --update")
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def save(fps: dict[str, dict[str, Any]], path: Path = GOLDEN) -> None:
    """Write the golden copy, one line per value list (a reviewer sees which list moved)."""
    import re

    from ungerlib.infra.store import atomic_write_text, environment

    env = environment()
    rec = {"_made_on": {k: env[k] for k in ("cpu", "torch", "torch_threads", "flush_denormal")}, **fps}
    text = json.dumps(rec, indent=2, sort_keys=True)
    text = re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
    atomic_write_text(path, text + "\n")


def _main(a: argparse.Namespace) -> None:
    fps = compute(a.kinds)
    if a.update:
        save({**(load() if a.kinds and GOLDEN.is_file() else {}), **fps})
        print(f"[golden] wrote {len(fps)} fingerprints to {GOLDEN}")
        return
    problems = compare(fps, load())
    for p in problems:
        print(p)
    print(f"[golden] {len(fps)} kinds, {len(problems)} disagree")
    if problems:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ungerlib golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="compare every kind's fingerprint with the golden copy")
    g.add_argument("--update", action="store_true", help="write the golden copy (after a version bump)")
    ap.add_argument("--kinds", nargs="*", help="only these kinds (default: all)")
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    return cli.run(_main, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
