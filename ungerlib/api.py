"""Recommendations for one user from a list of items: the public entry point for library users.

    import ungerlib
    from ungerlib.infra import config

    cfg = config.profile("cpu", "Beauty")           # or "smoke" (synthetic, seconds)
    ungerlib.recommend(cfg, ["B004756YJA", "B004ZT0SSG"], k=10)   # Amazon ids (asin) or item numbers

The first call trains (or loads the cached) Stage II model of ``cfg`` with everything upstream
(:func:`ungerlib.model.stage2.run_stage2`) and keeps it in memory; later calls only search. The history
is the given items, oldest first; the model reads the last ``data.max_len`` of them, right-aligned
(PAD = -1), and trie-constrained beam search (:func:`ungerlib.model.beam.recommend`) ranks every item.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ungerlib.infra import config as C
from ungerlib.model.data import PAD, DataError


@dataclass
class Recommender:
    """A trained Stage II model with its code table and item metadata (:func:`load`)."""

    cfg: C.RunConfig
    model: Any  # ungerlib.model.stage2.UNGER
    table: Any  # ungerlib.model.codes.CodeTable
    items: list[dict[str, Any]]

    def item_index(self, item_ids: Sequence[int | str]) -> np.ndarray:
        """Item numbers (0..n-1) of ``item_ids`` (see :func:`item_index`)."""
        return item_index(self.items, item_ids, self.cfg.data.dataset)

    def recommend(self, item_ids: Sequence[int | str], k: int = 10, exclude_seen: bool = True,
                  beam: int | None = None) -> pd.DataFrame:
        """Top-``k`` next items for a user who had ``item_ids`` (oldest first).

        Returns a table with one row per recommendation, best first: ``item`` (item number), ``asin``
        and ``title`` where the data set has them, and ``log_prob`` (the model's log-probability of
        the item's code). ``exclude_seen`` drops the given items from the ranking. ``beam``: width of
        the search (default ``eval.beam``, widened to ``k`` + the history length when excluding).
        """
        from ungerlib.model.beam import recommend

        _check_k(k)
        seen = self.item_index(item_ids)
        L = self.cfg.data.max_len
        hist = np.full((1, L), PAD, dtype=np.int64)
        last = seen[-L:]
        hist[0, L - len(last):] = last
        width = beam or self.cfg.eval.beam
        width = max(width, k + len(set(seen.tolist())) if exclude_seen else k)
        items, scores = recommend(self.model, hist, self.table, beam=width, topk=k,
                                  exclude_history=exclude_seen, exclude=seen[None, :])
        keep = items[0] >= 0
        out = pd.DataFrame({"item": items[0][keep], "log_prob": scores[0][keep]})
        for field in ("asin", "title"):
            if any(field in it for it in self.items):
                out.insert(len(out.columns) - 1, field, [self.items[i].get(field) for i in out["item"]])
        out.index = pd.RangeIndex(1, len(out) + 1, name="rank")
        return out


def item_index(items: list[dict[str, Any]], item_ids: Sequence[int | str], dataset: str = "the data set") -> np.ndarray:
    """Item numbers (0..n-1) of ``item_ids``: item numbers or Amazon ids (``asin``), mixed freely.
    An empty list or an unknown item is a :class:`~ungerlib.model.data.DataError` naming it."""
    if isinstance(item_ids, (str, bytes)) or not hasattr(item_ids, "__len__") or not len(item_ids):
        raise DataError(f"item_ids must be a non-empty list of the user's items, oldest first; got {item_ids!r}")
    by_asin = {it.get("asin"): i for i, it in enumerate(items) if it.get("asin")}
    out = []
    for x in item_ids:
        if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
            if not 0 <= int(x) < len(items):
                raise DataError(f"unknown item {int(x)}: item numbers of {dataset} lie in [0, {len(items)})")
            out.append(int(x))
        elif isinstance(x, str) and x in by_asin:
            out.append(by_asin[x])
        else:
            raise DataError(f"unknown item {x!r} in {dataset}: give item numbers (0..{len(items) - 1}) "
                            "or ids from its items.jsonl.gz 'asin' field")
    return np.asarray(out, dtype=np.int64)


def _check_k(k: Any) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise C.ConfigError(f"k must be a positive integer, got {k!r}")


_LOADED: dict[str, Recommender] = {}


def load(cfg: C.RunConfig, progress: bool = True, items: list[dict[str, Any]] | None = None) -> Recommender:
    """The :class:`Recommender` of ``cfg``: the cached Stage II model, trained first (with every stage
    upstream of it) if there is none yet; kept in memory for later calls."""
    from ungerlib.model.codes import item_codes
    from ungerlib.model.data import load_dataset
    from ungerlib.model.stage2 import run_stage2
    from ungerlib.infra.store import config_hash

    if not isinstance(cfg, C.RunConfig):
        raise C.ConfigError(f"cfg must be a RunConfig (e.g. ungerlib.infra.config.profile('smoke')), got {cfg!r}")
    key = config_hash(cfg.to_dict())
    if key not in _LOADED:
        items = items if items is not None else load_dataset(cfg.data).items
        model, _ = run_stage2(cfg, progress=progress)
        _LOADED[key] = Recommender(cfg, model, item_codes(cfg), items)
    return _LOADED[key]


def recommend(cfg: C.RunConfig, item_ids: Sequence[int | str], k: int = 10, exclude_seen: bool = True,
              beam: int | None = None) -> pd.DataFrame:
    """Top-``k`` recommendations for one user whose items were ``item_ids`` (oldest first); see
    :meth:`Recommender.recommend`. Trains or loads ``cfg``'s model on first use (:func:`load`); the
    items and ``k`` are checked before that, so a typo does not wait for training."""
    from ungerlib.model.data import load_dataset
    from ungerlib.infra.store import config_hash

    if not isinstance(cfg, C.RunConfig):
        raise C.ConfigError(f"cfg must be a RunConfig (e.g. ungerlib.infra.config.profile('smoke')), got {cfg!r}")
    _check_k(k)
    items = None
    if config_hash(cfg.to_dict()) not in _LOADED:
        items = load_dataset(cfg.data).items
        item_index(items, item_ids, cfg.data.dataset)
    return load(cfg, items=items).recommend(item_ids, k=k, exclude_seen=exclude_seen, beam=beam)
