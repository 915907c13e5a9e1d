"""Run every stage for one data set and print per-stage wall time and metrics.

    python -m ungerlib.pipeline --profile cpu --dataset Beauty [--rows ours collaborative_only]

Each stage is a cached artefact, so a second run only loads; the notebooks call the same
functions. Useful on a GPU machine, where the whole chain runs in minutes.
"""
from __future__ import annotations

import argparse
import json
import time

from . import config
from .codes import item_codes
from .semantic import semantic_embeddings
from .stage1 import stage1_embeddings
from .stage2 import evaluate_stage2, run_stage2


def run(cfg: config.RunConfig, stage2: bool = True) -> dict:
    out, t = {"dataset": cfg.data.dataset, "profile": cfg.profile}, time.time()
    semantic_embeddings(cfg)
    out["semantic_s"], t = round(time.time() - t, 1), time.time()
    s1 = stage1_embeddings(cfg)
    out["stage1_s"], t = round(time.time() - t, 1), time.time()
    out["stage1_valid"], out["crossmodal_top1"] = s1.valid_metrics, s1.crossmodal_top1
    out["codes"] = item_codes(cfg).report()
    out["codes_s"], t = round(time.time() - t, 1), time.time()
    if stage2:
        _, hist = run_stage2(cfg)
        out["stage2_s"], out["stage2_epochs"], t = round(time.time() - t, 1), len(hist), time.time()
        out["eval"] = evaluate_stage2(cfg)
        out["eval_s"] = round(time.time() - t, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=config.PROFILES)
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--rows", nargs="*", default=["ours"], help="paper rows (config.variant names)")
    ap.add_argument("--no-stage2", action="store_true", help="stop after the codes")
    ap.add_argument("--set", nargs="*", default=[], help="overrides as section.key=json, e.g. stage2.epochs=5")
    a = ap.parse_args(argv)
    over: dict = {}
    for item in a.set:
        key, val = item.split("=", 1)
        sec, k = key.split(".")
        over.setdefault(sec, {})[k] = json.loads(val)
    base = config.profile(a.profile, a.dataset, **over)
    for row in a.rows:
        res = run(config.variant(base, row), not a.no_stage2)
        print(json.dumps({"row": row, **res}, default=str), flush=True)


if __name__ == "__main__":
    main()
