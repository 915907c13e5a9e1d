import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from ungerlib.model import metrics
from ungerlib.analyses import significance


def test_against_sklearn_ndcg_and_a_plain_recall():
    rng = np.random.default_rng(0)
    n_items, N = 50, 200
    scores = rng.normal(size=(N, n_items))
    target = rng.integers(n_items, size=N)
    ranked = metrics.topk_from_scores(scores, 20)
    got = metrics.rank_metrics(ranked, target, ks=(10, 20))
    truth = np.zeros((N, n_items))
    truth[np.arange(N), target] = 1
    for k in (10, 20):
        want_ndcg = np.mean([ndcg_score(truth[i:i + 1], scores[i:i + 1], k=k) for i in range(N)])
        assert got[f"ndcg@{k}"] == pytest.approx(want_ndcg, abs=1e-12)
        want_recall = np.mean([target[i] in np.argsort(-scores[i])[:k] for i in range(N)])
        assert got[f"recall@{k}"] == pytest.approx(want_recall)


def test_repeated_items_count_once():
    ranked = np.array([[3, 3, 3, 7], [1, 2, 1, 5]])
    ranks = metrics.target_rank(ranked, np.array([7, 5]))
    assert ranks.tolist() == [2, 3]
    m = metrics.rank_metrics(ranked, np.array([7, 5]), ks=(2,))
    assert m["recall@2"] == 0.5 and m["ndcg@2"] == pytest.approx(0.5 / np.log2(3))


def test_exclude_and_errors():
    scores = np.array([[0.9, 0.8, 0.1, 0.5]])
    assert metrics.topk_from_scores(scores, 2, exclude=np.array([[0, -1]])).tolist() == [[1, 3]]
    # fewer than k items left after exclusion: excluded items never fill the list
    assert metrics.topk_from_scores(np.array([[0.5, 0.1, 0.9]]), 3, exclude=np.array([[2, 0]])).tolist() == [[1, -1, -1]]
    with pytest.raises(ValueError, match="at least 20"):
        metrics.per_user(np.zeros((2, 10), int), np.zeros(2, int))
    with pytest.raises(ValueError, match="N = len"):
        metrics.target_rank(np.zeros((2, 10), int), np.zeros(3, int))


def test_paired_test_detects_a_real_difference():
    rng = np.random.default_rng(1)
    a = rng.random(500) < 0.3
    b = a & (rng.random(500) < 0.5)
    assert significance.paired_test(a, b)["t_pvalue"] < 1e-6
    assert significance.paired_test(a, a)["wilcoxon_pvalue"] == 1.0


def test_next_item_knn_matches_a_hand_computed_case():
    from ungerlib.baselines import references
    from ungerlib.model import data

    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=float)
    ex = data.Examples(np.arange(2), np.array([[-1, 0], [3, 2]]), np.array([1, 0]))
    # user 0: last item 0 -> ranking 1, 2, 3 (0 is history) -> target 1 at rank 1
    # user 1: last item 2 -> ranking 1 (0.1/|.|), 0 (0), ... with 3 and 2 excluded -> target 0 at rank 2
    m = references.next_item_knn(emb, ex, k=20)
    assert m["recall@10"] == 1.0 and m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 2)


def test_popularity_ranks_training_targets_by_count():
    from ungerlib.baselines import references
    from ungerlib.model import data

    train = data.Examples(np.arange(6), np.full((6, 2), -1), np.array([2, 2, 2, 0, 0, 1]))
    sp = data.Splits(train, train, train, n_items=30, max_len=2)
    ex = data.Examples(np.arange(3), np.full((3, 2), -1), np.array([2, 0, 1]))
    # ranking 2, 0, 1, then the 27 items never a target: targets at ranks 1, 2, 3
    m = references.popularity(sp, ex)
    assert m["recall@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(4)) / 3)
