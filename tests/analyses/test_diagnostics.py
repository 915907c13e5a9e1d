"""ungerlib.analyses.diagnostics: the same-cluster / other-cluster split of a ranking's hits."""
import numpy as np
import pytest

from ungerlib.model import data
from ungerlib.analyses import diagnostics
from ungerlib.model.codes import CodeTable

# 12 items in 3 first-level clusters of 4: item i has code (i // 4, i % 4).
TABLE = CodeTable([(i // 4, i % 4) for i in range(12)], K=4)


def _examples(rng: np.random.Generator, n: int = 200) -> data.Examples:
    last = rng.integers(0, 12, n)
    same = rng.random(n) < 0.3  # 30% of next items are a sibling of the last item
    sibling = (last // 4) * 4 + (last + 1 + rng.integers(0, 3, n)) % 4
    elsewhere = ((last // 4 + 1 + rng.integers(0, 2, n)) % 3) * 4 + rng.integers(0, 4, n)
    target = np.where(same, sibling, elsewhere)
    hist = np.stack([np.full(n, data.PAD), last], 1)
    return data.Examples(np.arange(n), hist, target)


def test_planted_split_is_recovered():
    """A ranking that finds every sibling target (and nothing else) scores 1 in the same-cluster group
    and 0 elsewhere; one that finds only the others the reverse; the group sizes match the plant."""
    ex = _examples(np.random.default_rng(0))
    same = diagnostics.same_cluster(TABLE, ex)
    assert same.mean() == pytest.approx(0.3, abs=0.08)
    miss = np.full(len(ex), 11 + 100)  # an id no target has
    sib = np.where(same, ex.target, miss)[:, None].repeat(20, 1)
    other = np.where(~same, ex.target, miss)[:, None].repeat(20, 1)
    t = diagnostics.cluster_breakdown({"sib": sib, "other": other}, TABLE, ex)
    assert list(t.index) == list(diagnostics.GROUPS)
    assert t.loc["same cluster", "sib recall@10"] == 1.0 and t.loc["other cluster", "sib recall@10"] == 0.0
    assert t.loc["same cluster", "other ndcg@10"] == 0.0 and t.loc["other cluster", "other ndcg@10"] == 1.0
    assert t.loc["all", "sib recall@20"] == pytest.approx(same.mean())
    assert t.loc["same cluster", "users"] + t.loc["other cluster", "users"] == pytest.approx(1.0)


def test_last_cluster_share_counts_siblings_and_skips_padding():
    ex = _examples(np.random.default_rng(1), 50)
    last = ex.history[:, -1]
    siblings = (last // 4)[:, None] * 4 + np.arange(4)[None, :]  # 4 items in the last item's cluster
    r = np.concatenate([siblings, np.full((len(ex), 4), -1)], 1)  # then padding, which must not count
    away = ((last // 4 + 1) % 3)[:, None] * 4 + np.arange(4)[None, :]
    s = diagnostics.last_cluster_share({"in": r, "half": np.concatenate([siblings[:, :2], away[:, :2]], 1)},
                                       TABLE, ex, k=8)
    assert s["in"] == 1.0 and s["half"] == 0.5


def test_bad_input_is_named():
    ex = _examples(np.random.default_rng(2), 10)
    with pytest.raises(ValueError, match="shape"):
        diagnostics.cluster_breakdown({"short": np.zeros((3, 20), dtype=np.int64)}, TABLE, ex)
    with pytest.raises(ValueError, match="no rankings"):
        diagnostics.cluster_breakdown({}, TABLE, ex)
    empty = data.Examples(np.arange(1), np.full((1, 2), data.PAD), np.array([0]))
    with pytest.raises(ValueError, match="empty history"):
        diagnostics.same_cluster(TABLE, empty)
    outside = data.Examples(np.arange(1), np.array([[data.PAD, 3]]), np.array([40]))
    with pytest.raises(ValueError, match="target item ids"):
        diagnostics.same_cluster(TABLE, outside)


def test_frequency_breakdown_recovers_a_planted_rare_item_gap():
    """Users split by how often their last item is a training target: a ranking that finds the target
    only when the last item is rare scores 1 there and 0 elsewhere; groups partition the users."""
    ex = _examples(np.random.default_rng(3))
    counts = np.array([0, 1, 2, 3, 5, 8, 12, 19, 20, 40, 80, 160])  # items 0-3 rare, 4-7 middle, 8-11 frequent
    last = ex.history[:, -1]
    rare_hits = np.where(last < 4, ex.target, 999)[:, None].repeat(20, 1)
    t = diagnostics.frequency_breakdown({"rare": rare_hits}, counts, ex)
    assert list(t.index) == ["all", "last item trained < 5", "last item trained 5-19", "last item trained >= 20"]
    assert t.loc["last item trained < 5", "rare recall@10"] == 1.0
    assert t.loc["last item trained 5-19", "rare recall@20"] == 0.0 == t.loc["last item trained >= 20", "rare ndcg@10"]
    assert t.loc["last item trained < 5", "users"] == pytest.approx((last < 4).mean())
    assert t["users"].iloc[1:].sum() == pytest.approx(1.0)
    by_target = diagnostics.frequency_breakdown({"rare": rare_hits}, counts, ex, of="target")
    assert by_target.index[1] == "target item trained < 5"
    with pytest.raises(ValueError, match="increasing"):
        diagnostics.frequency_groups(counts, last, edges=(20, 5))
    with pytest.raises(ValueError, match=r"item ids must lie in \[0, 3\)"):
        diagnostics.frequency_groups(counts[:3], last)
    with pytest.raises(ValueError, match="of must be"):
        diagnostics.frequency_breakdown({"rare": rare_hits}, counts, ex, of="first")
