"""Popularity-adjusted decoding for Stage II: logit adjustment over the code trie (beyond the paper).

A Stage II model trained with a softmax over each prefix's children learns the training prior: an
item that is rarely a training target gets a low bias and a weak embedding, so the beam almost never
reaches it. Test targets are rarer than validation targets (the last item of a sequence is often a
new one), and the cosine kNN, which ignores popularity, wins on them
(``docs/experiments/stage2_rare_items.md``). Logit adjustment (Menon et al., "Long-tail learning via
logit adjustment", ICLR 2021) divides each conditional by its prior to a power tau:

    p'(c_l | c_<l, x)  ∝  p(c_l | c_<l, x) / pi(c_l | c_<l)^tau

with pi(child | parent) the share of the parent's training targets under the child (Laplace
smoothing ``alpha``). Under per-node tokens this is exactly a shift of each node's output bias by
``-tau log pi(node | parent)``, so :func:`adjusted` returns a copy of the model with shifted biases
and the trie-constrained beam search is unchanged: it still generates the item's unicode and can only
return valid, distinct items. tau = 0 is the model itself. The same prior inside the training loss
instead of at decoding time is ``Stage2Config.prior_tau`` (the logit-adjusted loss, lever row O).

tau is a decoding setting chosen on validation NDCG@20 (every item ranked) over :data:`TAUS`
(:func:`tune`); nothing is retrained. ``evaluate_prior(cfg, tau)`` caches valid and test rankings
(artefact kind ``eval_prior``, keyed by Stage II's evaluation key plus tau, alpha and this module's
code hash).

    python -m ungerlib.prior --profile cpu --dataset Beauty
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import cli, config as C, runtime
from .rankings import save_rankings
from .stage2 import ALPHA, node_log_prior  # the trie's prior, shared with the logit-adjusted loss
from .store import cached

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def adjusted(model, log_prior: np.ndarray, tau: float):
    """A copy of ``model`` (per-node tokens: ``decoder_tokens="node"``) whose output bias of every node
    is lowered by ``tau * log_prior[node]``: its beam then decodes with the adjusted conditionals."""
    if not getattr(model, "node_tokens", False):
        raise ValueError("popularity adjustment needs per-node tokens (stage2.decoder_tokens='node'): "
                         "the per-level heads have no bias per trie node")
    if tau < 0:
        raise ValueError(f"tau must be non-negative, got {tau}")
    if len(log_prior) != len(model.node_bias):
        raise ValueError(f"log_prior has {len(log_prior)} entries for {len(model.node_bias)} trie nodes")
    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        out.node_bias -= tau * torch.as_tensor(log_prior, dtype=out.node_bias.dtype, device=out.node_bias.device)
    return out


def _key(cfg: C.RunConfig, tau: float, alpha: float) -> dict[str, Any]:
    return {**C.artefact_key(cfg, "eval"), "prior_tau": float(tau), "prior_alpha": float(alpha),
            "prior_code": C.module_hash("prior")}


def evaluate_prior(cfg: C.RunConfig, tau: float, alpha: float = ALPHA, force: bool = False) -> dict[str, Any]:
    """As ``stage2.evaluate_stage2`` (beam ``cfg.eval.beam``, valid and test, both rankings, rankings
    saved) for ``cfg``'s cached Stage II model decoded with popularity adjustment ``tau``."""
    from .stage2 import _inputs, run_stage2

    model, _ = run_stage2(cfg, progress=False)
    splits, table, _ = _inputs(cfg)

    def build(out: Path, work: Path) -> dict[str, Any]:
        counts = np.bincount(splits.train.target, minlength=splits.n_items)
        m = adjusted(model, node_log_prior(table, counts, alpha), tau)
        return {"metrics": save_rankings(m, splits, table, cfg.eval, out)}

    art = cached("eval_prior", _key(cfg, tau, alpha), build, force=force)
    return {**art.json("metrics"), "path": str(art.path)}


def tune(cfg: C.RunConfig, taus: tuple[float, ...] = TAUS, alpha: float = ALPHA) -> tuple[float, pd.DataFrame]:
    """Validation metrics (every item ranked and history excluded) for each tau, and the tau with the
    best validation NDCG@20 (every item ranked, the rule Stage II's epochs are selected by). Test is not
    read here."""
    rows = []
    for tau in taus:
        res = evaluate_prior(cfg, tau, alpha)
        rows.append({"tau": tau, **{f"{tag} {m}": v for tag in ("valid_all", "valid_excl")
                                    for m, v in res[tag].items()}})
    table = pd.DataFrame(rows).set_index("tau")
    return float(table["valid_all ndcg@20"].idxmax()), table


def _main(a: argparse.Namespace) -> None:
    runtime.configure_threads()
    cfg = C.profile(a.profile, a.dataset, **C.parse_overrides(a.set))
    best, table = tune(cfg, tuple(a.taus))
    print(f"{cfg.data.dataset}: validation by tau (beam {cfg.eval.beam})")
    print(table.round(4).to_string())
    res = evaluate_prior(cfg, best)
    print(f"selected tau = {best}; test: " + "; ".join(
        f"{tag} " + " ".join(f"{m}={v:.4f}" for m, v in res[tag].items()) for tag in ("test_all", "test_excl")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ungerlib.prior", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=C.PROFILES)
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--taus", nargs="+", type=float, default=list(TAUS))
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help=cli.SET_HELP)
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    return cli.run(_main, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
