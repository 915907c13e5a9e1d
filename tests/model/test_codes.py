"""Unicodes (paper 3.3, Fig 8): unique, prefix-free codes, a correct trie, planted structure recovered."""
import sys
import types
from collections import Counter

import numpy as np
import pytest

from ungerlib.model import codes as U
from ungerlib.model.codes import CodeTable, hierarchical_kmeans, random_codes, rqvae_codes

RQ = dict(levels=2, hidden=(32,), latent=8, epochs=5, lr=3e-3)  # tiny RQ-VAE


def with_duplicates(n=100, d=16, dup=20, seed=0):
    """n random rows, then ``dup`` identical rows and 5 rows differing by 1e-9."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    same = np.tile(rng.standard_normal(d), (dup, 1))
    near = same[:5] + 1e-9 * rng.standard_normal((5, d))
    return np.concatenate([x, same, near]).astype(np.float32)


def blobs(n_per=30, k=4, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = 20 * np.eye(k, d)
    x = np.concatenate([c + rng.standard_normal((n_per, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(k), n_per)


def assert_valid(t: CodeTable, n: int):
    """Unique, prefix-free (independent check), and the trie leads every code to its item."""
    assert len(t) == n and len(set(t.codes)) == n
    prefixes = {c[:d] for c in t.codes for d in range(1, len(c))}
    assert not prefixes & set(t.codes), "a code is a prefix of another"
    assert all(0 <= tok < t.K for c in t.codes for tok in c)
    for i, c in enumerate(t.codes):
        node = 0
        for tok in c:
            assert t.node_item[node] == -1  # internal node on the way
            node = t.next_node[node, tok]
            assert node > 0
        assert t.node_item[node] == i and t.node_depth[node] == len(c)
        assert (t.next_node[node] == -1).all()  # a leaf: nothing continues
        assert t.item_of(c) == i and t.code_of(i) == c
    assert set(np.flatnonzero(t.next_node[0] >= 0)) == {c[0] for c in t.codes}
    assert (t.node_item >= 0).sum() == n
    p = t.padded()
    assert p.shape == (n, t.max_len) and ((p >= 0).sum(1) == t.lengths).all()


@pytest.mark.parametrize("K", [2, 4, 256])
def test_hkmeans_unique_prefix_free_with_duplicates(K):
    x = with_duplicates()
    t = hierarchical_kmeans(x, K, seed=0)
    assert_valid(t, len(x))
    assert t.n_collisions == 0
    if K < 125:
        assert t.info["index_split_items"] >= 20  # identical rows had to be split by index
        assert t.max_len >= 2
    else:
        assert t.max_len == 1  # n <= K: one slot per item


def test_hkmeans_all_identical_rows():
    t = hierarchical_kmeans(np.ones((50, 3)), 3, seed=0)
    assert_valid(t, 50)
    assert t.max_len == int(np.ceil(np.log(50) / np.log(3)))  # index splits give a balanced tree


def test_random_codes_unique_and_minimal_depth():
    for n, K, depth in [(4, 4, 1), (5, 4, 2), (16, 4, 2), (17, 4, 3), (125, 8, 3)]:
        t = random_codes(n, K, seed=1)
        assert_valid(t, n)
        assert set(t.lengths) == {depth}


def test_rqvae_unique_and_counts_collisions():
    x = with_duplicates()
    t = rqvae_codes(x, K=32, seed=0, **RQ)
    assert_valid(t, len(x))
    assert set(t.lengths) == {RQ["levels"] + 1}
    dup = [t.codes[i] for i in range(100, 120)]
    assert len({c[:-1] for c in dup}) == 1  # identical rows collide ...
    assert sorted(c[-1] for c in dup) == list(range(20))  # ... and the last token tells them apart
    assert t.n_collisions >= 20
    raw = Counter(c[:-1] for c in t.codes)
    assert t.n_collisions == sum(v for v in raw.values() if v > 1)


def test_rqvae_more_duplicates_than_k_get_two_collision_tokens():
    t = rqvae_codes(with_duplicates(dup=20), K=8, seed=0, **RQ)
    assert_valid(t, len(with_duplicates(dup=20)))
    assert t.info["collision_tokens"] == 2 and len(set(t.codes)) == len(t)


def test_same_seed_same_codes():
    x = with_duplicates()
    assert hierarchical_kmeans(x, 4, seed=3) == hierarchical_kmeans(x, 4, seed=3)
    assert rqvae_codes(x, 32, seed=3, **RQ) == rqvae_codes(x, 32, seed=3, **RQ)
    assert random_codes(len(x), 4, seed=3) == random_codes(len(x), 4, seed=3)
    assert random_codes(len(x), 4, seed=3) != random_codes(len(x), 4, seed=4)


def test_planted_blobs_share_first_code():
    x, blob = blobs()
    t = hierarchical_kmeans(x, 4, seed=0)
    assert_valid(t, len(x))
    first = np.array([c[0] for c in t.codes])
    for b in range(4):
        assert len(set(first[blob == b])) == 1, f"blob {b} split across first-level codes"
    assert len(set(first)) == 4
    items = [{"topic": int(b)} for b in blob]
    rep = t.report(items)
    assert rep["same_category_shared_prefix"] == 1.0
    assert rep["same_category_random_pair"] == pytest.approx(4 * 30 * 29 / (120 * 119))
    shuffled = random_codes(len(x), 4, seed=0, like=t).report(types.SimpleNamespace(items=items))
    assert shuffled["same_category_shared_prefix"] < 0.6


def test_report_uses_leaf_category_and_shape():
    t = CodeTable([(0, 0), (0, 1), (1, 0), (1, 1, 0), (1, 1, 1)], K=2)
    cats = [[["A", "x"]], [["B", "x"]], [["A", "y"]], [["y"]], []]  # leaf of the first path; last has none
    rep = t.report([{"categories": c} for c in cats])
    assert rep["length_hist"] == {2: 3, 3: 2} and rep["first_level_used"] == 2
    assert rep["max_items_per_first_code"] == 3 and rep["n_items_with_category"] == 4
    assert rep["same_category_shared_prefix"] == 1.0  # (0,*): x,x; (1,*): y,y
    assert rep["same_category_random_pair"] == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match="items"):
        t.report([{}])


@pytest.mark.parametrize("fn", [lambda x, K: hierarchical_kmeans(x, K), lambda x, K: rqvae_codes(x, K, **RQ)])
def test_bad_embeddings_are_clear_errors(fn):
    x = np.random.default_rng(0).standard_normal((40, 4))
    with pytest.raises(ValueError, match="K must be at least 2"):
        fn(x, 1)
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf.*\[7\]"):
        fn(bad, 4)
    bad[7, 2] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        fn(bad, 4)
    for shape in [(0, 4), (40,), (2, 3, 4)]:
        with pytest.raises(ValueError, match="non-empty"):
            fn(np.zeros(shape), 4)


def test_random_codes_errors():
    with pytest.raises(ValueError, match="K must be at least 2"):
        random_codes(10, 1)
    with pytest.raises(ValueError, match="expected 5"):
        random_codes(5, 2, like=random_codes(6, 2))


def test_malformed_tables_are_rejected():
    with pytest.raises(ValueError, match="not unique: items 0 and 2"):
        CodeTable([(0, 1), (1,), (0, 1)], K=2)
    with pytest.raises(ValueError, match="not prefix-free: item 1's code \\(0,\\) is a prefix of item 2"):
        CodeTable([(1,), (0,), (0, 1)], K=2)
    with pytest.raises(ValueError, match=r"items \[1\].*outside"):
        CodeTable([(0,), (2,)], K=2)
    with pytest.raises(ValueError, match=r"items \[0\]"):
        CodeTable([(-1,), (1,)], K=2)
    with pytest.raises(ValueError, match=r"items \[1\]"):
        CodeTable([(0,), ()], K=2)
    with pytest.raises(ValueError, match="K must be"):
        CodeTable([(0,)], K=1)
    with pytest.raises(KeyError, match=r"\(1, 1\) is not the code of any item"):
        CodeTable([(0,), (1, 0)], K=2).item_of((1, 1))


def test_save_load_round_trip(tmp_path):
    t = rqvae_codes(with_duplicates(), 32, seed=0, **RQ)
    t.save(tmp_path / "c")
    u = CodeTable.load(tmp_path / "c")
    assert u == t and u.n_collisions == t.n_collisions and u.info == t.info
    for a in ("next_node", "node_item", "node_depth", "lengths"):
        np.testing.assert_array_equal(getattr(u, a), getattr(t, a))
    mixed = CodeTable([(0,), (1, 0), (1, 1, 1), (1, 1, 0)], K=3)
    mixed.save(tmp_path / "m")
    assert CodeTable.load(tmp_path / "m").codes == mixed.codes
    assert not list((tmp_path / "m").glob(".*.tmp"))  # atomic writes leave no temp files


def test_random_like_keeps_length_histogram():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((60, 4)), 30 + rng.standard_normal((6, 4))])  # imbalanced
    h = hierarchical_kmeans(x, 3, seed=0)
    assert len(set(h.lengths)) > 1  # the test needs a tree with mixed depths
    r = random_codes(len(x), 3, seed=0, like=h)
    assert_valid(r, len(x))
    assert Counter(r.lengths.tolist()) == Counter(h.lengths.tolist())
    assert set(r.codes) == set(h.codes) and r.codes != h.codes


@pytest.mark.parametrize("method", ["hkmeans", "random", "rqvae"])
def test_item_codes_cached_on_fake_stage1(smoke, monkeypatch, method):
    n = smoke.data.n_items
    emb = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    calls = []
    fake = types.ModuleType("ungerlib.model.stage1")
    fake.stage1_embeddings = lambda cfg: calls.append(cfg) or types.SimpleNamespace(integrated=emb)
    monkeypatch.setitem(sys.modules, "ungerlib.model.stage1", fake)
    cfg = smoke.replace(codes={"method": method, "rq_epochs": 3}, seed={"hkmeans": 1, "random": 2, "rqvae": 3}[method])
    t = U.item_codes(cfg)
    assert_valid(t, n)
    assert U.item_codes(cfg) == t and len(calls) == (2 if method == "random" else 1)  # second call: cache
    if method == "random":
        h = U.item_codes(cfg.replace(codes={"method": "hkmeans"}))
        assert len(calls) == 2 and Counter(h.lengths.tolist()) == Counter(t.lengths.tolist())


def test_rqvae_tells_apart_more_than_k_items_on_one_code_with_more_collision_tokens():
    """A collapsed codebook (every item on one raw code) still gives every item its own prefix-free code."""
    emb = np.tile(np.random.default_rng(0).standard_normal((1, 6)), (40, 1)).astype(np.float32)
    emb += 1e-4 * np.random.default_rng(1).standard_normal(emb.shape).astype(np.float32)
    t = rqvae_codes(emb, K=4, levels=2, hidden=(8,), latent=4, epochs=2, seed=0)
    assert_valid(t, 40)
    assert t.info["max_items_per_raw_code"] > 4 and t.info["collision_tokens"] >= 2
    assert len(set(t.lengths.tolist())) == 1 and len(set(t.codes)) == 40
