"""Eq. 9-10 (semantic dominance) and the cluster agreement of Figure 5, on planted structure."""
import numpy as np
import pytest
from scipy.stats import entropy

from ungerlib.analyses import clusters, dominance
from ungerlib.infra import config
from ungerlib.model import data


@pytest.fixture(scope="module")
def planted():
    """S from the synthetic items' topics, C from their (independent) collaborative clusters, in
    different dimensions, each with noise: S [n, 48], C [n, 16]."""
    ds = data.load_dataset(config.profile("smoke").data)
    topic = np.array([it["topic"] for it in ds.items])
    cluster = np.array([it["cluster"] for it in ds.items])
    rng = np.random.default_rng(0)
    g = topic.max() + 1
    sem = (np.eye(g)[topic] + 0.25 * rng.normal(size=(len(topic), g))) @ rng.normal(size=(g, 48))
    col = np.eye(g)[cluster] + 0.25 * rng.normal(size=(len(topic), g))
    col = np.concatenate([col, 0.2 * rng.normal(size=(len(topic), 8))], 1)
    return sem, col, topic, cluster


def test_neighbourhoods_match_sklearn_tsne_conditionals():
    """Same conditional p(j|i) as sklearn's t-SNE binary search on squared distances of unit vectors."""
    from sklearn.manifold._utils import _binary_search_perplexity

    x = np.random.default_rng(1).normal(size=(200, 12))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    d2 = ((u[:, None] - u[None]) ** 2).sum(-1).astype(np.float32)
    ref = _binary_search_perplexity(d2, 15.0, 0)
    rows = np.arange(0, 200, 7)
    p = np.exp(dominance.neighbourhood_logp(x, rows, 15.0))
    np.testing.assert_allclose(p, ref[rows], atol=1e-5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert (p[np.arange(len(rows)), rows] == 0).all()  # an item is not its own neighbour
    np.testing.assert_allclose([np.exp(entropy(r)) for r in p], 15.0, rtol=1e-5)


def test_kl_rows_match_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(120, 30)), rng.normal(size=(120, 7))
    rows = np.array([0, 5, 77, 119])
    lp, lq = (dominance.neighbourhood_logp(x, rows, 10.0) for x in (a, b))
    ours = dominance.kl_rows(lp, lq)
    ref = [entropy(np.exp(lp[i]), np.exp(lq[i])) for i in range(len(rows))]
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    assert (ours > 0).all()
    np.testing.assert_allclose(dominance.kl_rows(lp, lp), 0.0, atol=1e-12)


def test_kl_is_invariant_to_scale_rotation_and_dimension(planted):
    sem, col, _, _ = planted
    rot = np.linalg.qr(np.random.default_rng(3).normal(size=(48, 48)))[0]
    padded = np.concatenate([sem @ rot * 5.0, np.zeros((len(sem), 30))], 1)  # rotated, scaled, 78-d
    kl = dominance.neighbourhood_kl({"S": sem}, {"S'": padded, "C": col}, perplexity=20)
    assert kl[("S'", "S")].abs().max() < 1e-6
    assert kl[("C", "S")].mean() > 0.5


@pytest.mark.parametrize("weight,dominant", [(3.0, "semantic"), (1 / 3, "collaborative")])
def test_planted_dominance_is_detected(planted, weight, dominant):
    sem, col, _, _ = planted
    e = dominance.weighted_concat(sem, col, weight)
    share = dominance.proportional_similarity(sem, col, {"E": e}, perplexity=20).loc["E"]
    other = "collaborative" if dominant == "semantic" else "semantic"
    assert share[dominant] > 0.75 > 0.25 > share[other]
    assert share["semantic"] + share["collaborative"] == pytest.approx(1.0)
    # swapping the roles of S and C swaps the answer
    swapped = dominance.proportional_similarity(col, sem, {"E": e}, perplexity=20).loc["E"]
    assert swapped["semantic"] == pytest.approx(share["collaborative"])


def test_share_rises_with_the_planted_semantic_weight(planted):
    sem, col, _, _ = planted
    finals = {w: dominance.weighted_concat(sem, col, w) for w in (0.25, 0.5, 1.0, 2.0, 4.0)}
    share = dominance.proportional_similarity(sem, col, finals, perplexity=20, n_queries=120)["semantic"]
    assert share.is_monotonic_increasing and share.iloc[-1] > 0.9 and share.iloc[0] < 0.1
    assert dominance.proportional_similarity(sem, col, {"S": sem}, perplexity=20).loc["S", "semantic"] == 1.0


def test_neighbour_overlap(planted):
    sem, col, _, _ = planted
    e = dominance.weighted_concat(sem, col, 3.0)
    assert dominance.neighbour_overlap(sem, sem, k=5) == 1.0
    assert dominance.neighbour_overlap(sem, e, k=5) > dominance.neighbour_overlap(col, e, k=5) + 0.2


def test_bad_input_is_named():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="same items"):
        dominance.proportional_similarity(x, np.ones((9, 3)), {"E": x})
    with pytest.raises(ValueError, match="perplexity"):
        dominance.neighbourhood_logp(np.random.default_rng(0).normal(size=(10, 3)), np.arange(3), 30.0)
    with pytest.raises(ValueError, match="NaN"):
        dominance.proportional_similarity(x, x, {"E": np.full((10, 3), np.nan)})
    with pytest.raises(ValueError, match="same items"):
        clusters.agreement({"a": np.ones((10, 2)), "b": np.ones((8, 2))}, k=2)


def test_cluster_agreement_recovers_planted_structure(planted):
    sem, col, topic, cluster = planted
    e = dominance.weighted_concat(sem, col, 3.0)
    table, labels = clusters.agreement({"S": sem, "C": col, "E": e}, k=8, seed=0,
                                       references={"topic": topic, "cluster": cluster})
    assert table.loc["S", "topic"] > 0.8 and table.loc["C", "cluster"] > 0.8
    assert table.loc["S", "cluster"] < 0.1  # topic and cluster are independent
    assert table.loc["E", "S"] > table.loc["E", "C"] + 0.5  # the dominated concat clusters like S
    assert table.loc["S", "C"] == pytest.approx(table.loc["C", "S"])  # off-diagonal AMI is symmetric
    assert table.loc["S", "S"] > 0.8  # the diagonal: k-means of S agrees with itself across seeds
    assert set(labels) == {"S", "C", "E"} and all(len(v) == len(topic) for v in labels.values())


def test_weight_for_share_interpolates_in_log_weight_and_says_when_out_of_range():
    w, s = np.array([0.5, 1.0, 2.0, 4.0]), np.array([0.1, 0.6, 0.9, 0.98])
    assert dominance.weight_for_share(w, s, 0.9) == pytest.approx(2.0)
    assert dominance.weight_for_share(w, s, 0.94) == pytest.approx(2.0 * 2 ** 0.5)
    assert np.isnan(dominance.weight_for_share(w, s, 0.99))
    with pytest.raises(ValueError, match="must rise"):
        dominance.weight_for_share(w, s[::-1], 0.5)
