"""The Table 3 rerun protocol (ungerlib.baselines.protocol) and the Cornac adapters (ungerlib.baselines.cornac,
ungerlib.baselines.tiger): data handed to Cornac equals our training split, every item is rankable, the
batched scorers equal Cornac's own per-user scoring, bad input is named. Our SASRec and HSTU:
tests/baselines/test_sequential.py."""
import numpy as np
import pytest

from ungerlib.baselines import protocol as B
from ungerlib.model.data import PAD, Dataset, get_splits, leave_one_out
from ungerlib.model.metrics import rank_metrics


def _chain_splits(n_users=40, n_items=30, length=8, seed=0):
    """Users walk i -> i+1 (mod n_items) from a random start: target = last history item + 1."""
    rng = np.random.default_rng(seed)
    seqs = [(rng.integers(n_items) + np.arange(length)) % n_items for _ in range(n_users)]
    ds = Dataset("chain", [s.astype(np.int64) for s in seqs], [{} for _ in range(n_items)])
    return ds, leave_one_out(ds, max_len=5)


def _next_item_scorer(n_items):
    def score(hist):
        out = np.zeros((len(hist), n_items))
        out[np.arange(len(hist)), (hist[:, -1] + 1) % n_items] = 1.0
        return out
    return score


def test_rankings_from_scores_drops_unranked_and_excluded_items():
    scores = np.array([[0.1, 0.9, -np.inf, 0.5], [0.3, 0.2, 0.1, 0.0]])
    top = B.rankings_from_scores(scores, k=4)
    assert top[0].tolist() == [1, 3, 0, -1]  # -inf (outside a beam) is never listed
    assert top[1].tolist() == [0, 1, 2, 3]
    excl = B.rankings_from_scores(scores, k=4, exclude=np.array([[1, -1], [0, 2]]))
    assert excl[0].tolist() == [3, 0, -1, -1] and excl[1].tolist() == [1, 3, -1, -1]
    assert B.rankings_from_scores(scores, k=6).shape == (2, 6)  # padded with -1 past n_items


def test_rankings_from_scores_rejects_nan_and_bad_shapes():
    with pytest.raises(B.BaselineError, match="NaN"):
        B.rankings_from_scores(np.array([[0.1, np.nan]]))
    with pytest.raises(B.BaselineError, match=r"\[B, n_items\]"):
        B.rankings_from_scores(np.zeros(3))


def test_rank_splits_with_an_oracle_scores_perfectly_in_small_batches():
    _, splits = _chain_splits()
    r = B.rank_splits(_next_item_scorer(splits.n_items), splits, batch=7)
    assert set(r) == set(B.TAGS) and all(v.shape == (len(splits.valid), B.K) for v in r.values())
    m = B.metrics_of(r, splits)
    for tag in B.TAGS:
        assert m[tag]["recall@10"] == 1.0 and m[tag]["ndcg@10"] == 1.0, tag
    # history exclusion removes every item the user had (the whole history, not only the window)
    for row, seen in zip(r["test_excl"], splits.test.exclude):
        assert not set(row[row >= 0]) & set(seen[seen >= 0])


def test_rank_examples_checks_the_score_function():
    _, splits = _chain_splits()
    with pytest.raises(B.BaselineError, match="rows"):
        B.rank_examples(lambda h: np.zeros((1, splits.n_items)), splits.valid, batch=8)


def test_validation_tracker_keeps_the_best_state_and_stops_after_patience():
    _, splits = _chain_splits()
    good, bad = _next_item_scorer(splits.n_items), lambda h: np.random.default_rng(0).random((len(h), splits.n_items))
    seq = iter([bad, good, bad, bad])
    state = {"v": 0}
    t = B.ValidationTracker(lambda h: current(h), splits.valid, lambda: dict(state), patience=2)
    with pytest.raises(B.StopTraining):
        for epoch in range(4):
            current = next(seq)
            state["v"] = epoch
            t()
    assert t.best_epoch == 2 and t.best_state == {"v": 1} and len(t.history) == 4
    assert t.history[1]["valid_ndcg@20"] == 1.0


def test_validation_subset_is_fixed_and_ordered():
    _, splits = _chain_splits()
    a, b = B.validation_subset(splits.valid, 10, 3), B.validation_subset(splits.valid, 10, 3)
    assert np.array_equal(a.user, b.user) and len(a) == 10 and np.all(np.diff(a.user) > 0)
    assert B.validation_subset(splits.valid, 0, 3) is splits.valid


def test_cached_run_is_keyed_by_params_and_seed(smoke):
    _, splits = get_splits(smoke)
    calls = []

    def train(work):
        calls.append(1)
        return B.rank_splits(lambda h: np.tile(np.arange(splits.n_items, 0, -1.0), (len(h), 1)), splits), [], {}

    a = B.cached_run(smoke, "SASRec", {"x": 1}, train, splits)
    b = B.cached_run(smoke, "SASRec", {"x": 1}, train, splits)
    c = B.cached_run(smoke, "SASRec", {"x": 2}, train, splits)
    d = B.cached_run(smoke.replace(seed=1), "SASRec", {"x": 1}, train, splits)
    assert len(calls) == 3 and a.path == b.path and len({a.path, c.path, d.path}) == 3
    assert np.array_equal(a.rankings("test_all")[0], np.arange(20))
    assert a.metrics["test_all"] == rank_metrics(a.rankings("test_all"), splits.test.target)
    with pytest.raises(B.BaselineError, match="unknown ranking"):
        a.rankings("train_all")


# --------------------------------------------------------------------------- Cornac

cornac = pytest.importorskip("cornac")
from ungerlib.baselines import cornac as cb  # noqa: E402
from ungerlib.baselines import tiger as ct  # noqa: E402


def test_cornac_prefixes_are_exactly_our_training_split(smoke):
    from cornac.models.seq_utils import session_seq_iter

    ds, splits = get_splits(smoke)
    ts = cb.to_cornac(cb.training_sequences(ds), splits.n_items, 0)
    pad = splits.n_items
    theirs = []
    for _, hist, out in session_seq_iter(ts, pad_index=pad, batch_size=10**6, max_len=splits.max_len, n_sample=0,
                                         rng=np.random.RandomState(0), shuffle=False):
        theirs += [tuple(h) + (t,) for h, t in zip(np.where(hist == pad, PAD, hist).tolist(), out.tolist())]
    ours = [tuple(h) + (t,) for h, t in zip(splits.train.history.tolist(), splits.train.target.tolist())]
    assert sorted(theirs) == sorted(ours)


def test_cornac_knows_every_item_even_one_never_trained_on():
    seqs = [np.array([0, 1, 2, 3, 4]), np.array([1, 2, 3, 0, 5])]  # item 5 only ever a test target
    ts = cb.to_cornac([s[:-2] for s in seqs], 6, 0)
    assert ts.num_items == 6 and list(ts.iid_map.items()) == [(i, i) for i in range(6)]
    with pytest.raises(B.BaselineError, match="outside"):
        cb.to_cornac([np.array([0, 7])], 6, 0)


def _fitted(name, smoke, extra=None):
    ds, splits = get_splits(smoke)
    s = cb.settings(name, {"n_epochs": 1, **(extra or {})})
    model, scorer, _ = cb._build(name, s, 0)
    model.model_selection = "last"
    model.fit(cb.to_cornac(cb.training_sequences(ds), splits.n_items, 0))
    return model, scorer, splits


@pytest.mark.parametrize("name,extra", [("BERT4Rec", {"embedding_dim": 16, "n_sample": 32}),
                                        ("GRU4Rec", {"layers": [16], "n_sample": 32})])
def test_batched_scores_equal_cornac_per_user_score(smoke, name, extra):
    model, scorer, splits = _fitted(name, smoke, extra)
    ex = splits.test.subset(np.arange(6))
    got = scorer(model)(ex.history)
    for r in range(len(ex)):
        want = model.score(0, list(ex.history[r][ex.history[r] != PAD]))
        np.testing.assert_allclose(got[r], want, atol=1e-5)


def test_tiger_batched_beam_equals_cornac_generate_beam(smoke):
    ds, splits = get_splits(smoke)
    ts = cb.to_cornac(cb.training_sequences(ds), splits.n_items, 0)
    from cornac.data import FeatureModality

    fm = FeatureModality(features=np.random.default_rng(0).normal(size=(splits.n_items, 16)).astype("float32"),
                         ids=list(range(splits.n_items)))
    fm.build(id_map=ts.iid_map)
    ts.add_modalities(item_feature=fm)
    s = cb.settings("TIGER", {"n_epochs": 1, "rqvae_n_epochs": 5, "d_model": 16, "d_ff": 32, "num_heads": 2,
                              "d_kv": 8, "num_enc_layers": 1, "num_dec_layers": 1}, ct.DEFAULTS)
    m = ct._tiger(lambda m: None, **{k: v for k, v in s.items() if k not in ("patience", "val_users")}, seed=0,
                  device="cpu")  # untrained: the beams compare all the same
    m.fit(ts)
    ex = splits.test.subset(np.arange(5))
    got = ct.tiger_scores(m, 20)(ex.history)
    for r in range(len(ex)):
        want = m.score(0, list(ex.history[r][ex.history[r] != PAD]))
        beam = want > -1e9
        assert np.array_equal(np.isfinite(got[r]), beam) and beam.sum() == 20
        np.testing.assert_allclose(got[r][beam], want[beam], atol=1e-5)


def test_tiger_trains_by_fit_and_a_killed_run_resumes_to_the_same_result(smoke, tmp_path, monkeypatch, capfd):
    from ungerlib.model import train

    ds, splits = get_splits(smoke)
    feats = np.random.default_rng(0).normal(size=(splits.n_items, 16)).astype("float32")
    params = {"n_epochs": 3, "patience": 9, "rqvae_n_epochs": 5, "d_model": 16, "d_ff": 32, "num_heads": 2,
              "d_kv": 8, "num_enc_layers": 1, "num_dec_layers": 1, "batch_size": 128, "val_users": 100}
    whole = ct.fit_and_rank(params, ds, splits, 0, feats)
    assert [r["epoch"] for r in whole[1]] == [1, 2, 3] and whole[2]["epochs_run"] == 3

    save, saves = train.atomic_torch_save, []

    def killed_after_two(obj, path):  # the run dies right after its second checkpoint
        save(obj, path)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "atomic_torch_save", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        ct.fit_and_rank(params, ds, splits, 0, feats, tmp_path)
    monkeypatch.setattr(train, "atomic_torch_save", save)
    capfd.readouterr()
    again = ct.fit_and_rank(params, ds, splits, 0, feats, tmp_path)
    assert "[TIGER] resuming from epoch 2 of 3" in capfd.readouterr().err
    for tag in whole[0]:
        assert np.array_equal(whole[0][tag], again[0][tag]), tag
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in h]  # noqa: E731
    assert strip(whole[1]) == strip(again[1])


def test_bad_settings_are_named():
    with pytest.raises(B.BaselineError, match="unknown setting"):
        cb.settings("BERT4Rec", {"hidden": 3})
    with pytest.raises(B.BaselineError, match="unknown Cornac baseline"):
        cb.settings("SASRec", {})  # ours now: ungerlib.baselines.sequential


def test_tiger_needs_features_for_every_item(smoke):
    ds, splits = get_splits(smoke)
    with pytest.raises(B.BaselineError, match="TIGER needs item features"):
        ct.fit_and_rank({}, ds, splits, 0, np.zeros((3, 4)))
