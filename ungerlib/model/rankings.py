"""Per-user rankings of a decoder on both evaluation splits, saved where artefacts expect them.

One beam search per split gives both rankings (every item, history excluded); each is saved as
``{split}_{all,excl}.npy`` (per-user top ``max(ks)``, -1 pads) and scored with
:func:`ungerlib.model.metrics.rank_metrics`; ``metrics.json`` holds the scores. The decoding variants that
cache their own evaluation (:mod:`ungerlib.prior`, :mod:`ungerlib.baselines.discrec`, :mod:`ungerlib.model.neighbours`)
build their artefacts with :func:`save_rankings`. ``stage2.evaluate_stage2`` still holds its own copy of
this loop: moving it here changes every Stage II artefact key (this module would enter its code hash).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ungerlib.infra import config as C
from ungerlib.model.codes import CodeTable
from ungerlib.model.data import Splits
from ungerlib.model.metrics import rank_metrics
from ungerlib.infra.store import atomic_write_json


def save_rankings(model, splits: Splits, table: CodeTable, ev: C.EvalConfig, out: Path,
                  precision: str = "fp32") -> dict[str, Any]:
    """Beam ``ev.beam`` over ``splits``' valid and test users with ``model`` (anything with the
    incremental decoding API), under ``precision`` (the model's ``stage2.precision``:
    :func:`ungerlib.infra.runtime.autocast`); writes the rankings and ``metrics.json`` to ``out`` and
    returns the metrics ``{"valid_all": {...}, "valid_excl": ..., "test_all": ..., "test_excl": ...}``."""
    from ungerlib.infra import runtime
    from ungerlib.model.beam import recommend_both

    res: dict[str, Any] = {}
    device = next(model.parameters()).device
    for split in ("valid", "test"):
        ex = getattr(splits, split)
        with runtime.autocast(precision, device):
            both = recommend_both(model, ex.history, table, beam=ev.beam, topk=max(ev.ks), exclude=ex.exclude)
        for tag, (ranked, _) in zip((f"{split}_all", f"{split}_excl"), both):
            np.save(out / f"{tag}.npy", ranked)
            res[tag] = rank_metrics(ranked, ex.target, ev.ks)
    atomic_write_json(out / "metrics.json", res)
    return res
