"""TIGER (Rajput et al., 2023) from Cornac 3.0.1 on our splits, fed OUR semantic embeddings as item
content, so it differs from UNGER in the method only (Table 3, paper 4.2).

TIGER quantises the item text embeddings with an RQ-VAE into semantic IDs (3 levels of 256 codes plus
a level that separates collisions) and trains a T5-style encoder-decoder to generate the next item's
semantic ID from the history's tokens (4 tokens per history item). Cornac's RQ-VAE, semantic IDs and
T5 model are used as they are. The seq2seq model is trained by our one loop,
:func:`ungerlib.model.train.fit`, with Cornac's optimiser (AdamW, constant learning rate, its weight
decay) on our training split (the same (history, next item) pairs as Cornac's prefix iterator, in
another order): a checkpoint after every epoch, so a killed run resumes (Cornac's own loop has none,
and a fair-budget run on ``cpu`` takes hours). Validation is ours (NDCG@20 on a fixed subset of
``val_users`` validation users, since a beam search per epoch over every user does not fit the ``cpu``
budget), and the rankings come from a batched version of Cornac's trie-constrained beam search
(:func:`tiger_scores`, tested equal to ``TIGERSeq2Seq.generate_beam``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ungerlib.baselines.protocol import (SELECT, BaselineError, ScoreFn, Trained, rank_examples, rank_splits,
                                        right_aligned, validation_subset)
from ungerlib.baselines.cornac import _torch_rows, require_cornac, settings, to_cornac, training_sequences
from ungerlib.model.data import Dataset, Splits

LOSS = ("cross-entropy on each token of the next item's semantic ID (teacher forcing); RQ-VAE semantic IDs "
        "from our text embeddings (Cornac TIGER's model, trained by our loop with AdamW as Cornac's)")

# Fixed settings on our protocol (a grid's entries override them). The T5 stacks are Cornac's; sizes
# here are the cpu profile's (the paper profile's grid sets the TIGER paper's 4+4 layers, d_model 128).
DEFAULTS: dict[str, Any] = {
    "max_len": 20, "tokenizer": "rqvae", "rqvae_n_epochs": 200, "d_model": 64, "d_ff": 256, "num_heads": 4,
    "d_kv": 16, "num_enc_layers": 2, "num_dec_layers": 2, "dropout": 0.1, "learning_rate": 1e-3,
    "weight_decay": 1e-4, "batch_size": 256, "n_beams": 20, "val_users": 2000}


def tiger_scores(m: Any, beams: int) -> ScoreFn:
    """Batched version of Cornac's ``TIGERSeq2Seq.generate_beam`` (trie-constrained beam search over
    semantic IDs): the ``beams`` best items get their log-probabilities, every other item -inf."""
    import torch
    import torch.nn.functional as F

    def score(hist: np.ndarray) -> np.ndarray:
        m._ensure_device(torch)  # Cornac's fit leaves the model on the CPU
        model = m.model.eval()
        B = len(hist)
        h = right_aligned(hist[:, -m.max_len:], m.pad_idx)
        enc_tokens = _torch_rows(m.enc_token_table[h].reshape(B, -1), m.device_)
        enc_mask = (enc_tokens != 0).float()
        out = np.full((B, m.total_items), -np.inf)
        with torch.no_grad():
            enc = model.encode_history(enc_tokens, enc_mask)
            prefixes: list[list[tuple[int, ...]]] = [[()] for _ in range(B)]
            lps = [np.zeros(1) for _ in range(B)]
            for level, size in enumerate(model.level_sizes):
                owner = np.repeat(np.arange(B), [len(p) for p in prefixes])
                flat = [p for ps in prefixes for p in ps]
                dec = _torch_rows(np.array(flat, dtype=np.int64).reshape(len(flat), level), m.device_) if level else None
                sel = torch.as_tensor(owner, device=enc.device)
                hs = model._decode(dec, enc[sel], enc_mask[sel])
                logp = F.log_softmax(model.heads[level](hs[:, -1]), dim=-1).cpu().numpy().astype(np.float64)
                allowed = np.full_like(logp, -np.inf)
                for r, p in enumerate(flat):
                    allowed[r, m.prefix_children[level][p]] = 0.0
                total = np.concatenate(lps)[:, None] + logp + allowed
                start = 0
                for b in range(B):
                    n = len(prefixes[b])
                    t = total[start:start + n].ravel()
                    k = min(beams, int(np.isfinite(t).sum()))
                    top = np.argpartition(-t, k - 1)[:k] if k < len(t) else np.arange(len(t))
                    top = top[np.argsort(-t[top], kind="stable")][:k]
                    prefixes[b] = [prefixes[b][j // size] + (int(j % size),) for j in top]
                    lps[b] = t[top]
                    start += n
            for b in range(B):
                for sid, lp in zip(prefixes[b], lps[b]):
                    out[b, m.sid_to_item[sid]] = lp
        return out
    return score


def _tiger(train: Callable[[Any], None], **kw: Any) -> Any:
    """Cornac's TIGER whose ``fit`` builds the semantic IDs and the seq2seq model as Cornac does, then
    hands the model to ``train(self)`` instead of Cornac's training loop."""
    from cornac.models import TIGER

    class OurTIGER(TIGER):
        def _fit_seq2seq(self, torch: Any, val_set: Any) -> None:
            epochs, self.n_epochs = self.n_epochs, 0
            try:  # Cornac's own set-up (model, token tables) with no epoch of its loop
                super()._fit_seq2seq(torch, None)
            finally:
                self.n_epochs = epochs
            train(self)

    return OurTIGER(**kw)


def fit_and_rank(params: dict[str, Any], ds: Dataset, splits: Splits, seed: int, features: np.ndarray,
                 work_dir: Path | None = None) -> Trained:
    """Train TIGER with ``params`` (over :data:`DEFAULTS`) on our training split with ``features``
    [n_items, d] (our semantic embeddings) as item content, by :func:`ungerlib.model.train.fit` (a
    checkpoint per epoch in ``work_dir``, which a killed run resumes from); select the epoch on
    validation NDCG@20; rank valid and test with beam ``max(n_beams, 20)``."""
    require_cornac()
    if features is None or np.ndim(features) != 2 or len(features) != splits.n_items:
        raise BaselineError(f"TIGER needs item features [n_items={splits.n_items}, d]; got "
                            f"{None if features is None else np.shape(features)}")
    s = settings("TIGER", params, DEFAULTS)
    import torch
    from cornac.data import FeatureModality

    from ungerlib.model.metrics import rank_metrics
    from ungerlib.model.train import Schedule, fit, shuffled_batches

    train_set = to_cornac(training_sequences(ds), splits.n_items, seed)
    fm = FeatureModality(features=np.asarray(features, np.float32), ids=list(range(splits.n_items)))
    fm.build(id_map=train_set.iid_map)
    train_set.add_modalities(item_feature=fm)
    beams = max(int(s["n_beams"]), 20)
    valid = validation_subset(splits.valid, int(s["val_users"]), seed)
    tr = splits.train
    sched = Schedule(epochs=int(s["n_epochs"]), batch_size=int(s["batch_size"]), lr=float(s["learning_rate"]),
                     warmup_steps=0, lr_decay="none", weight_decay=float(s["weight_decay"]),
                     patience=int(s["patience"]), clip_norm=0.0, optimizer="adamw")
    result: dict[str, Any] = {}

    def train(m: Any) -> None:
        hist = right_aligned(tr.history[:, -m.max_len:], m.pad_idx)  # [N, L] Cornac's item indices (ours)

        def loss_fn(idx: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
            enc = _torch_rows(m.enc_token_table[hist[idx]].reshape(len(idx), -1), m.device_)  # [B, L * levels]
            loss = m.model(enc, (enc != 0).float(), _torch_rows(m.sid_table[tr.target[idx]], m.device_))
            return {"loss": loss, "ce": loss.detach()}

        def validate() -> dict[str, float]:
            ranked, _ = rank_examples(tiger_scores(m, beams), valid)
            return rank_metrics(ranked, valid.target)

        result["fit"] = fit(m.model, loss_fn, lambda rng: shuffled_batches(len(tr.target), sched.batch_size, rng),
                            validate, SELECT, sched, seed, work_dir, "TIGER", progress=False)

    lib = {k: v for k, v in s.items() if k not in ("patience", "val_users")}
    device = "cuda" if torch.cuda.is_available() else "cpu"  # as Stage II (stage2.DEVICE)
    model = _tiger(train, **lib, seed=seed, verbose=False, device=device)
    model.device_ = device
    model.fit(train_set)
    res = result["fit"]
    rankings = rank_splits(tiger_scores(model, beams), splits)
    info = {"loss": LOSS, "settings": dict(s), **res.notes(), "valid_users_for_selection": len(valid),
            "semantic_id_collisions": int((model.sid_table[:, -1] > 0).sum())}
    return rankings, res.history, info
