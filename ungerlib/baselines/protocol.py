"""The protocol every rerun baseline of Table 3 follows (paper 4.2): our splits, our metrics, our cache.

Baselines are trained on the training split of :func:`ungerlib.model.data.get_splits` (every prefix of a
user's sequence without its last two items), selected on the validation split and scored on the test
split exactly like Stage II: Recall/NDCG@10/20 from :func:`ungerlib.model.metrics.rank_metrics` on per-user
top-20 lists, once with every item ranked (``all``) and once with the user's whole history removed
(``excl``, ``Examples.exclude``). Histories are the splits' right-aligned windows of the last
``max_len`` (20) items for every model.

This module holds what the model adapters share (:mod:`ungerlib.baselines.cornac`,
:mod:`ungerlib.baselines.graph`). Each model is its own artefact kind (``baseline.<model>`` in
:mod:`ungerlib.artefacts`, with its own version), so a change to one adapter re-keys that model only.

* :func:`rank_splits`: scores -> the four rankings ``{valid,test}_{all,excl}`` [N, 20].
* :class:`ValidationTracker`: per-epoch validation with our metric on our validation split, the best
  state kept, early stopping after ``patience`` epochs without a better value.
* :func:`cached_run`: one trained configuration as an artefact (rankings, metrics, per-epoch history,
  wall times), keyed by the data, the model's version, its parameters and the seed.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ungerlib.infra import artefacts, config as C
from ungerlib.model.data import PAD, Examples, Splits
from ungerlib.model.metrics import rank_metrics, topk_from_scores
from ungerlib.infra.store import Artefact, atomic_write_json

K = 20  # length of every saved per-user ranking
TAGS = ("valid_all", "valid_excl", "test_all", "test_excl")
SELECT = "ndcg@20"  # the validation metric every model is selected on (as Stage II)

# scores [B, n_items] for histories [B, max_len] (right-aligned, PAD = -1); -inf = not ranked
ScoreFn = Callable[[np.ndarray], np.ndarray]


class BaselineError(ValueError):
    """A baseline was asked for with settings it cannot run."""


class StopTraining(Exception):
    """Raised by :class:`ValidationTracker` to end a library's training loop early."""


def rankings_from_scores(scores: np.ndarray, k: int = K, exclude: np.ndarray | None = None) -> np.ndarray:
    """[B, n] scores -> [B, k] item ids, best first; items scored -inf (not ranked by the model, e.g.
    outside a beam) or in ``exclude`` [B, L] (-1 = none) are never listed, -1 fills the rest."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise BaselineError(f"scores must be [B, n_items], got shape {scores.shape}")
    if np.isnan(scores).any():
        raise BaselineError("scores contain NaN (diverged training?)")
    top = topk_from_scores(scores, min(k, scores.shape[1]), exclude=exclude)
    top[np.take_along_axis(scores, np.clip(top, 0, None), 1) == -np.inf] = -1
    if top.shape[1] < k:
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
    return top


def rank_examples(score: ScoreFn, ex: Examples, k: int = K, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(all items, history excluded) rankings [N, k] of ``ex`` under ``score``."""
    all_, excl = np.full((len(ex), k), -1, np.int64), np.full((len(ex), k), -1, np.int64)
    for s in range(0, len(ex), batch):
        sc = np.asarray(score(ex.history[s:s + batch]), dtype=np.float64)
        if sc.shape[0] != min(batch, len(ex) - s):
            raise BaselineError(f"score function returned {sc.shape[0]} rows for {min(batch, len(ex) - s)} histories")
        all_[s:s + batch] = rankings_from_scores(sc, k)
        excl[s:s + batch] = rankings_from_scores(sc, k, ex.exclude[s:s + batch])
    return all_, excl


def rank_splits(score: ScoreFn, splits: Splits, k: int = K, batch: int = 512) -> dict[str, np.ndarray]:
    """The four per-user rankings ``{valid,test}_{all,excl}`` [N, k] that every rerun row saves."""
    out = {}
    for split in ("valid", "test"):
        out[f"{split}_all"], out[f"{split}_excl"] = rank_examples(score, getattr(splits, split), k, batch)
    return out


def metrics_of(rankings: dict[str, np.ndarray], splits: Splits) -> dict[str, dict[str, float]]:
    """Recall/NDCG@10/20 of each ranking against its split's targets."""
    return {tag: rank_metrics(r, getattr(splits, tag.split("_")[0]).target) for tag, r in rankings.items()}


def validation_subset(ex: Examples, n: int, seed: int) -> Examples:
    """A fixed, seeded subset of ``n`` validation users (all of them when ``n`` is 0 or too large),
    in their original order."""
    if n <= 0 or n >= len(ex):
        return ex
    idx = np.sort(np.random.default_rng(seed).choice(len(ex), n, replace=False))
    return ex.subset(idx)


@dataclass
class ValidationTracker:
    """Per-epoch validation with our metric: ``__call__`` scores ``valid`` under ``score``, records the
    epoch, snapshots ``state()`` when ``select`` improved, and raises :class:`StopTraining` once
    ``patience`` epochs in a row did not improve it. ``best_state`` is the snapshot to restore."""

    score: ScoreFn
    valid: Examples
    state: Callable[[], dict[str, Any]]
    patience: int = 5
    select: str = SELECT
    history: list[dict[str, float]] = field(default_factory=list)
    best: float = -np.inf
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    _t: float = field(default_factory=time.time)

    def __call__(self) -> float:
        from ungerlib.infra import runtime

        train_s = time.time() - self._t
        t0 = time.time()
        ranked, _ = rank_examples(self.score, self.valid)
        m = rank_metrics(ranked, self.valid.target)
        epoch = len(self.history) + 1
        self.history.append({"epoch": epoch, **{f"valid_{k}": v for k, v in m.items()},
                             "train_s": round(train_s, 2), "valid_s": round(time.time() - t0, 2)})
        if m[self.select] > self.best:
            self.best, self.best_epoch, self.best_state = m[self.select], epoch, copy.deepcopy(self.state())
        runtime.log(f"[baseline] epoch {epoch} valid {self.select}={m[self.select]:.4f} recall@10={m['recall@10']:.4f}"
                    f" (best epoch {self.best_epoch}; {train_s:.0f}s train, {time.time() - t0:.0f}s valid)")
        self._t = time.time()
        if epoch - self.best_epoch >= self.patience:
            raise StopTraining
        return m[self.select]


@dataclass
class RunResult:
    """One trained configuration: its artefact folder holds ``{valid,test}_{all,excl}.npy`` [N, 20],
    ``metrics.json`` and ``history.json`` (per-epoch validation)."""

    model: str
    params: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    path: str
    info: dict[str, Any]

    def rankings(self, tag: str) -> np.ndarray:
        if tag not in TAGS:
            raise BaselineError(f"unknown ranking {tag!r}; known: {TAGS}")
        return np.load(Path(self.path) / f"{tag}.npy")

    def history(self) -> list[dict[str, float]]:
        """The per-epoch validation record (``history.json``)."""
        return Artefact(Path(self.path)).json("history")


# what a builder returns: the four rankings, the per-epoch history and free-form info
Trained = tuple[dict[str, np.ndarray], list[dict[str, float]], dict[str, Any]]


def cached_run(cfg: C.RunConfig, model: str, params: dict[str, Any], train: Callable[[Path], Trained],
               splits: Splits, force: bool = False) -> RunResult:
    """Train once per key (``train(work_dir)`` returns :data:`Trained`), save the rankings, metrics and
    history atomically, and return them. Wall time (``wall_s``), threads and machine go to provenance."""
    from ungerlib.infra import runtime

    def build(out: Path, work: Path) -> dict[str, Any]:
        threads = runtime.configure_threads()
        t0 = time.time()
        rankings, history, info = train(work)
        for tag in TAGS:
            np.save(out / f"{tag}.npy", rankings[tag])
        res = metrics_of(rankings, splits)
        atomic_write_json(out / "metrics.json", res)
        atomic_write_json(out / "history.json", history)
        atomic_write_json(out / "info.json", {**info, "threads": threads, "run_s": round(time.time() - t0, 1)})
        return {"metrics": res, "threads": threads, **info}

    art: Artefact = artefacts.cached(artefacts.baseline_kind(model), cfg, build, force=force, params=params)
    info = art.json("info")
    info["wall_s"] = art.provenance.get("wall_s")
    return RunResult(model, params, art.json("metrics"), str(art.path), info)


def right_aligned(hist: np.ndarray, pad: int) -> np.ndarray:
    """Our histories [B, L] (PAD = -1) with PAD replaced by a library's padding index ``pad``."""
    return np.where(hist == PAD, pad, hist)
