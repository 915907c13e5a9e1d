"""BERT4Rec, GRU4Rec and TIGER from Cornac 3.0.1, trained on our splits and scored with our metrics
(Table 3, paper 4.2). Cornac is an optional dependency (``pip install ungerlib[baselines]``). SASRec
is ours since issue 41 (:mod:`ungerlib.baselines.sequential`, trained by our one loop).

How Cornac is used, and the traps this avoids:

* **Data.** Each user's training sequence (everything but the last two items, oldest first) is one
  Cornac session, so Cornac's prefix iterator yields exactly our training split's (history, target)
  pairs (tested). The item id map is given up front with **every** item (``item i -> index i``), so
  items that never occur in training can still be ranked.
* **Evaluation.** Cornac's own sequential evaluation (sessions split by time, last item of each
  session) is never used. Validation during training is ours: Cornac's ``model_selection="best"``
  calls a validation hook after every epoch, which is replaced by
  :class:`ungerlib.baselines.protocol.ValidationTracker` (NDCG@20 on our validation split, best state kept,
  early stopping). Final rankings come from batched scoring functions written against each model's
  own scoring code (``score`` / ``predict`` / ``generate_beam``; tested equal on a few users).
* **Losses.** Cornac's sequential models default to a *softmax cross-entropy over the batch's
  targets plus ``n_sample`` popularity-sampled negatives* (``loss="ce"``; ``sample_alpha`` the
  popularity exponent). :data:`LOSS_NOTES` states what each rerun used.

``fit_and_rank(name, params, ds, splits, features, seed)`` trains one configuration and returns the
four rankings ``{valid,test}_{all,excl}``, the per-epoch validation history and notes.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import numpy as np

from ungerlib.baselines.protocol import (BaselineError, ScoreFn, StopTraining, Trained, ValidationTracker, rank_splits,
                        right_aligned)
from ungerlib.model.data import Dataset, Splits

MODELS = ("BERT4Rec", "GRU4Rec")  # TIGER: ungerlib.baselines.tiger

# What each rerun optimises (Cornac's own defaults unless a grid says otherwise).
LOSS_NOTES = {
    "BERT4Rec": "Cloze (masked-item) objective, softmax cross-entropy over masked targets + n_sample "
                "popularity-sampled negatives (Cornac TransformerRec backbone='bert', objective='mlm')",
    "GRU4Rec": "session-parallel mini-batches, softmax cross-entropy over the batch + n_sample "
               "popularity-sampled negatives (Cornac loss='cross-entropy', Adagrad)",
}


def require_cornac() -> None:
    try:
        import cornac  # noqa: F401
    except ImportError:
        raise BaselineError("the Cornac baselines need cornac==3.0.1: pip install 'ungerlib[baselines]'") from None


def training_sequences(ds: Dataset) -> list[np.ndarray]:
    """Each user's training sequence: every item but the last two (validation, test), oldest first."""
    return [np.asarray(s[:-2]) for s in ds.sequences]


def to_cornac(sequences: list[np.ndarray], n_items: int, seed: int) -> Any:
    """A ``cornac.data.SequentialDataset`` with one session per user and the full item list up front
    (Cornac index = our item id), so never-seen items keep a row in every model."""
    require_cornac()
    from cornac.data import SequentialDataset

    bad = [u for u, s in enumerate(sequences) if len(s) and (s.min() < 0 or s.max() >= n_items)]
    if bad:
        raise BaselineError(f"user {bad[0]} has item ids outside 0..{n_items - 1}")
    rows = [(u, u, int(i), t) for u, s in enumerate(sequences) for t, i in enumerate(s)]
    iid_map = OrderedDict((i, i) for i in range(n_items))
    uid_map = OrderedDict((u, u) for u in range(len(sequences)))
    return SequentialDataset.build(rows, fmt="USIT", global_uid_map=uid_map, global_iid_map=iid_map, seed=seed)


class _OurValidation:
    """Stands in for Cornac's ``val_set``: Cornac only calls ``reset()`` on it and passes it to the
    validation hook, which here is ours."""

    def reset(self) -> None:
        pass


# --------------------------------------------------------------------------- batched scoring

def _torch_rows(a: np.ndarray, device: str = "cpu") -> Any:
    import torch

    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.long, device=device)


def _two_d(scores: np.ndarray, b: int) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64).reshape(b, -1)


def transformer_scores(m: Any) -> ScoreFn:
    """Batched ``TransformerRec.score`` (BERT4Rec): Cloze models append the mask token after the last
    ``max_len - 1`` items and read it; causal models read the last item."""
    def score(hist: np.ndarray) -> np.ndarray:
        m.model.eval()
        seq = right_aligned(hist, m.pad_idx)
        if m.objective_.uses_mask_token:
            seq = np.concatenate([seq, np.full((len(seq), 1), m.mask_idx)], 1)
        seq = seq[:, -m.max_len:]
        if seq.shape[1] < m.max_len:
            seq = np.pad(seq, ((0, 0), (m.max_len - seq.shape[1], 0)), constant_values=m.pad_idx)
        return _two_d(m.model.predict(None, _torch_rows(seq, m.device), -1), len(hist))
    return score


def gru4rec_scores(m: Any) -> ScoreFn:
    """Batched ``GRU4Rec.score``: the GRU runs over each history from its first item (hidden state
    zero until then, as for a fresh session) and the last output scores every item."""
    import torch

    def score(hist: np.ndarray) -> np.ndarray:
        m.model.eval()
        B = len(hist)
        H = [torch.zeros((B, h), dtype=torch.float32, device=m.device) for h in m.layers]
        pad = torch.as_tensor(hist < 0, device=m.device)
        x = right_aligned(hist, m.total_items)
        out = None
        with torch.no_grad():
            for t in range(hist.shape[1]):
                out = m.model.forward(_torch_rows(x[:, t], m.device), H, None, training=False)
                for i in range(len(H)):
                    H[i] = torch.where(pad[:, t, None], torch.zeros_like(H[i]), H[i])
        return out[:, :m.total_items].cpu().numpy().astype(np.float64)
    return score


# --------------------------------------------------------------------------- models

def _defaults(name: str) -> dict[str, Any]:
    """Fixed settings of each model on our protocol (a grid's entries override them)."""
    common = {"max_len": 20, "n_sample": 2048, "sample_alpha": 0.5}
    return {
        "BERT4Rec": {**common, "loss": "ce", "embedding_dim": 64, "num_blocks": 2, "num_heads": 2, "dropout": 0.2,
                     "learning_rate": 1e-3, "batch_size": 256, "mask_prob": 0.2},
        "GRU4Rec": {"loss": "cross-entropy", "layers": [64], "learning_rate": 0.05, "batch_size": 256,
                    "n_sample": 2048, "sample_alpha": 0.5, "dropout_p_hidden": 0.0, "momentum": 0.0},
    }[name]


def settings(name: str, params: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full settings of one run: the model's defaults overridden by ``params`` (unknown keys
    rejected); ``n_epochs`` (cap) and ``patience`` (early stopping on validation) are always accepted."""
    if defaults is None:
        if name not in MODELS:
            raise BaselineError(f"unknown Cornac baseline {name!r}; known: {MODELS}")
        defaults = _defaults(name)
    unknown = sorted(set(params) - set(defaults) - {"n_epochs", "patience"})
    if unknown:
        raise BaselineError(f"unknown setting(s) {unknown} for {name}; known: {sorted(defaults)} + n_epochs, patience")
    return {**defaults, "n_epochs": 30, "patience": 5, **params}


def _build(name: str, s: dict[str, Any], seed: int) -> tuple[Any, Callable[[Any], ScoreFn], str]:
    """The Cornac model, its batched scorer, and the module whose ``val_score`` hook its ``fit`` calls."""
    import cornac.models as cm

    lib = {k: v for k, v in s.items() if k != "patience"}
    common = dict(seed=seed, verbose=False, model_selection="best", val_eval_every=1)
    if name == "BERT4Rec":
        m = cm.TransformerRec(name="BERT4Rec", backbone="bert", objective="mlm", loss_at="all", **lib, **common)
        return m, transformer_scores, "cornac.models.transformer_rec.recom_transformer_rec"
    if name == "GRU4Rec":
        return cm.GRU4Rec(**lib, **common), gru4rec_scores, "cornac.models.gru4rec.recom_gru4rec"
    raise BaselineError(f"unknown Cornac baseline {name!r}; known: {MODELS}")


def fit_tracked(model: Any, scorer: Callable[[Any], ScoreFn], hook_module: str, train_set: Any,
                splits: Splits, s: dict[str, Any]) -> tuple[dict[str, np.ndarray], list, dict]:
    """``model.fit`` with our per-epoch validation in place of Cornac's (``hook_module``'s ``val_score``
    patched for the call), the best validation state restored, then the four rankings. Returns
    rankings, history, notes."""
    valid = splits.valid
    tracker = ValidationTracker(lambda h: scorer(model)(h), valid, lambda: model.model.state_dict(),
                                patience=int(s["patience"]))
    stopped = False
    with mock.patch(f"{hook_module}.val_score", lambda *a, **k: tracker()):
        try:
            model.fit(train_set, _OurValidation())
        except StopTraining:
            stopped = True
    if tracker.best_state is None:
        raise BaselineError(f"{model.name} finished without a validation epoch (n_epochs={s['n_epochs']})")
    model.model.load_state_dict(tracker.best_state)
    model.model.eval()
    rankings = rank_splits(scorer(model), splits)
    info = {"settings": copy.deepcopy(s), "epochs_run": len(tracker.history), "best_epoch": tracker.best_epoch,
            "early_stopped": stopped, "valid_users_for_selection": len(valid)}
    return rankings, tracker.history, info


def fit_and_rank(name: str, params: dict[str, Any], ds: Dataset, splits: Splits, seed: int,
                 work_dir: Path | None = None) -> Trained:
    """Train Cornac's ``name`` (BERT4Rec or GRU4Rec) with ``params`` (see :func:`settings`) on
    our training split, keep the epoch with the best validation NDCG@20 (our metric, our validation
    split), and rank valid and test. Returns the four rankings, the per-epoch history and notes (loss,
    epochs run, best epoch). Cornac has no checkpoints: a killed run starts again."""
    require_cornac()
    s = settings(name, params)
    model, scorer, hook_module = _build(name, s, seed)
    train_set = to_cornac(training_sequences(ds), splits.n_items, seed)
    rankings, history, info = fit_tracked(model, scorer, hook_module, train_set, splits, s)
    return rankings, history, {"loss": LOSS_NOTES[name], **info}
