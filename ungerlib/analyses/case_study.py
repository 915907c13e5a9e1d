"""What a unicode means (notebook 12): the items under a first-level code, one user written as codes and
as titles, and one number each for how semantic and how collaborative a code's prefixes are.

Three codes are compared, all hierarchical k-means at the profile's K, so only what they quantise differs:

* ``unified``: UNGER's code, of the integrated Stage I embeddings (the profile's default);
* ``semantic-only``: of the frozen text embeddings E_S (Stage I variant ``semantic``);
* ``collaborative-only``: of DIN's item embeddings trained alone (variant ``collab``).

Two numbers per code, over pairs of distinct items that share their first-level code (one pair per
unordered pair, every first-level group counted):

* **semantic coherence**: the share of such pairs whose items have the same leaf category, next to the
  same share over all pairs of items (the chance level);
* **collaborative coherence**: the share of such pairs that occur together in at least one user's
  training sequence, next to the same share over all pairs.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from ungerlib.infra import config as C
from ungerlib.model.codes import CodeTable

CODES = ("unified", "semantic-only", "collaborative-only")


def code_config(cfg: C.RunConfig, code: str) -> C.RunConfig:
    """The config whose ``codes`` artefact is ``code``'s table (hierarchical k-means at ``cfg``'s K)."""
    if code == "unified":
        return cfg
    if code == "semantic-only":
        return cfg.replace(stage1={"variant": "semantic"}, codes={"method": "hkmeans"})
    if code == "collaborative-only":
        return cfg.replace(stage1={"variant": "collab", "alpha": 0.0}, codes={"method": "hkmeans"})
    raise C.ConfigError(f"unknown code {code!r}; known: {CODES}")


def _categories(items: list[dict[str, Any]]) -> list[str]:
    from ungerlib.model.semantic import leaf_category

    return [str(it["topic"]) if it.get("topic") is not None else leaf_category(it) for it in items]


def co_occurring_pairs(sequences: list[np.ndarray]) -> set[tuple[int, int]]:
    """Unordered pairs of distinct items (i < j) that appear together in at least one sequence."""
    pairs: set[tuple[int, int]] = set()
    for s in sequences:
        u = np.unique(s)
        pairs.update(combinations(u.tolist(), 2))
    return pairs


def coherence(table: CodeTable, items: list[dict[str, Any]], training: list[np.ndarray]) -> dict[str, float]:
    """Semantic and collaborative coherence of ``table``'s first-level groups (module docstring), and
    their chance levels over all pairs of items. ``training``: each user's training sequence."""
    cat = _categories(items)
    together = co_occurring_pairs(training)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, code in enumerate(table.codes):
        groups[code[0]].append(i)
    n_pairs = same_cat = co = 0
    for members in groups.values():
        for i, j in combinations(members, 2):
            n_pairs += 1
            same_cat += bool(cat[i]) and cat[i] == cat[j]
            co += (i, j) in together
    n = len(items)
    all_pairs = n * (n - 1) // 2
    cat_pairs = sum(v * (v - 1) // 2 for c, v in Counter(cat).items() if c)
    return {"pairs sharing the first code": n_pairs,
            "same category, shared first code": same_cat / max(n_pairs, 1),
            "same category, any pair": cat_pairs / max(all_pairs, 1),
            "co-occur, shared first code": co / max(n_pairs, 1),
            "co-occur, any pair": len(together) / max(all_pairs, 1)}


def first_level_groups(table: CodeTable, items: list[dict[str, Any]], training: list[np.ndarray],
                       codes: list[int] | None = None, show: int = 5, seed: int = 0) -> pd.DataFrame:
    """For a few first-level codes (default: three drawn with a fixed seed among those with at least
    ``show`` items): up to ``show`` of their items (title or first words of their text, leaf category)
    and the group's share of item pairs bought together (co-occurring in a training sequence)."""
    cat = _categories(items)
    together = co_occurring_pairs(training)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, code in enumerate(table.codes):
        groups[code[0]].append(i)
    if codes is None:
        big = sorted(c for c, m in groups.items() if len(m) >= show)
        codes = sorted(np.random.default_rng(seed).choice(big, min(3, len(big)), replace=False).tolist())
    rows = []
    for c in codes:
        members = groups[c]
        pairs = list(combinations(members, 2))
        co = sum(p in together for p in pairs) / max(len(pairs), 1)
        for i in members[:show]:
            rows.append({"first code": c, "items under it": len(members), "co-occur, pairs of the group": co,
                         "item": i, "code": "-".join(map(str, table.codes[i])), "title": _title(items[i]),
                         "category": cat[i]})
    return pd.DataFrame(rows).set_index(["first code", "item"])


def _title(item: dict[str, Any], words: int = 9) -> str:
    text = item.get("title") or " ".join(str(k) for k in (item.get("keywords") or [])) or item.get("brand") or ""
    parts = str(text).split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def user_story(model: Any, table: CodeTable, items: list[dict[str, Any]], history: np.ndarray, target: int,
               beam: int = 20, k: int = 10) -> pd.DataFrame:
    """One user's history (oldest first) and the model's top ``k`` (history excluded) as codes and as
    titles, with the held-out item marked."""
    from ungerlib.model.beam import recommend

    hist = np.asarray(history)[None]
    (ranked,), (scores,) = recommend(model, hist, table, beam=beam, topk=k, exclude_history=True)
    rows = [{"part": "history", "position": p + 1, "item": int(i), "code": "-".join(map(str, table.codes[i])),
             "title": _title(items[i]), "log-prob": np.nan, "held-out item": False}
            for p, i in enumerate(h for h in hist[0] if h >= 0)]
    rows += [{"part": "recommended", "position": r + 1, "item": int(i), "code": "-".join(map(str, table.codes[i])),
              "title": _title(items[i]), "log-prob": float(s), "held-out item": int(i) == int(target)}
             for r, (i, s) in enumerate(zip(ranked, scores)) if i >= 0]
    return pd.DataFrame(rows).set_index(["part", "position"])
