"""Benchmark: our trie-constrained beam against Hugging Face's ``generate`` (notebook 10's comparison, alone).

    python bench/bench_hf_generate.py [--dataset Beauty] [--users 256] [--beams 20 50] [--threads 2] [--json out.json]

Our two models at the ``cpu`` profile's Stage II settings (the paper's model, codes only, the T5's like; and
the profiles' decoder with its item tables) and a ``T5ForConditionalGeneration`` of the same
sizes, all untrained (seeded: the per-step work does not depend on the weights), all over the trie of
the data set's unified code (the cached ``codes`` artefact of the profile's default run; built if
missing), top 20, the same test users. Every ``generate`` configuration of
:func:`ungerlib.analyses.efficiency.default_searches` is timed (attention implementation, list or tensor
callback, with or without an end token, batch size), best of ``--repeats``. Prints the grid and, per
beam, ours against Hugging Face's usual call and its fastest configuration (issue 42's goal: 5x at beams
20 and 50). Run it on an otherwise idle machine: the ratios are only read within one run.
"""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--beams", type=int, nargs="+", default=[20, 50])
    ap.add_argument("--topk", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the summary and grid here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from ungerlib.analyses import efficiency
    from ungerlib.infra import config
    from ungerlib.model import codes, data

    cfg = config.profile(a.profile, dataset=a.dataset)
    _, splits = data.get_splits(cfg)
    table = codes.item_codes(efficiency.code_config(cfg, "unified"))
    # the paper's model and the profiles' decoder (as notebook 10); IKD's width is Stage I's integrated embedding's
    ours = {}
    for code, label in (("unified", "paper's model"), ("unified + item tables", "+ item tables")):
        ours[label], t5 = efficiency.untrained_pair(efficiency.code_config(cfg, code), table, cfg.stage1.dim,
                                                    splits.max_len)
    sizes = ", ".join(f"{k} {efficiency.parameters(m):,}" for k, m in ours.items())
    print(f"{a.dataset}: {len(table)} items, ours: {sizes} parameters, T5 {efficiency.parameters(t5):,}; "
          f"{torch.get_num_threads()} thread(s), {a.users} users", flush=True)
    grid = efficiency.hf_grid(ours, table, t5, splits.test.history, beams=tuple(a.beams), topk=a.topk,
                              users_n=a.users, repeats=a.repeats)
    summary = efficiency.hf_summary(grid)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(grid.round(3).to_string(), "\n\n", summary.round(3).to_string(), flush=True)
    print(f"every list valid and distinct: {bool(grid['valid, distinct items'].all())}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": json.loads(summary.reset_index().to_json(orient="records")),
                       "grid": json.loads(grid.reset_index().to_json(orient="records")),
                       "threads": torch.get_num_threads(), "users": a.users, "dataset": a.dataset}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
