"""LightGCN, NGCF and AlphaRec (ungerlib.baselines.graph): the propagations equal their dense formulas, a
planted group structure is recovered from text alone (AlphaRec) and from the graph alone (LightGCN,
NGCF), the test split is scored on the graph with the validation item added, and bad input is named."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ungerlib.baselines import graph as A
from ungerlib.baselines.protocol import BaselineError, metrics_of
from ungerlib.model.data import Dataset, leave_one_out


def _grouped(n_groups=6, per_group=10, n_users=240, length=7, seed=0, noise=0.3):
    """Each user buys ``length`` distinct items of one group; an item's text embedding is its group's
    one-hot plus noise. The held-out items are in the user's group."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    group = np.arange(n) // per_group
    seqs = []
    for _ in range(n_users):
        g = rng.integers(n_groups)
        seqs.append(rng.choice(np.flatnonzero(group == g), length, replace=False).astype(np.int64))
    sem = np.eye(n_groups)[group] + noise * rng.normal(size=(n, n_groups))
    ds = Dataset("grouped", seqs, [{} for _ in range(n)])
    return leave_one_out(ds, max_len=20), sem.astype(np.float32), group


def test_propagation_equals_the_dense_lightgcn_formula():
    rng = np.random.default_rng(1)
    dense = (rng.random((5, 4)) < 0.5).astype(np.float32)
    dense[0] = 0  # an isolated user
    R = sp.csr_matrix(dense)
    Ahat = A.normalised_adjacency(R).to_dense().numpy()
    Ad = np.block([[np.zeros((5, 5)), R.toarray()], [R.toarray().T, np.zeros((4, 4))]])
    d = Ad.sum(1)
    inv = np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d > 0)
    np.testing.assert_allclose(Ahat, inv[:, None] * Ad * inv[None, :], atol=1e-6)
    E0 = torch.from_numpy(rng.normal(size=(9, 3)).astype(np.float32))
    want = (E0.numpy() + Ahat @ E0.numpy() + Ahat @ Ahat @ E0.numpy()) / 3
    np.testing.assert_allclose(A.propagate(E0, torch.from_numpy(Ahat).to_sparse(), 2).numpy(), want, atol=1e-5)


def test_ngcf_propagation_equals_the_dense_matrix_rule():
    """E^{l+1} = LeakyReLU((L + I) E^l W1 + (L E^l) * E^l W2) with dense matrices, each layer L2-normalised
    and concatenated after E^0; message dropout only in training."""
    rng = np.random.default_rng(2)
    dense = (rng.random((5, 4)) < 0.5).astype(np.float32)
    dense[1] = 0  # an isolated user
    R = sp.csr_matrix(dense)
    torch.manual_seed(0)
    model = A.NGCF(5, 4, dim=3, layers=2, dropout=0.5).eval()
    Lap = A.normalised_adjacency(R)
    with torch.no_grad():
        users, items = model.embed(Lap)
    L = Lap.to_dense().numpy().astype(np.float64)
    E = model.E0.weight.detach().numpy().astype(np.float64)
    want = [E]
    for w1, w2 in zip(model.W1, model.W2):
        W1, W2 = w1.weight.detach().numpy().T, w2.weight.detach().numpy().T  # x W^T: W = weight^T
        Z = (L + np.eye(9)) @ E @ W1 + ((L @ E) * E) @ W2
        E = np.where(Z > 0, Z, 0.2 * Z)
        want.append(E / np.linalg.norm(E, axis=1, keepdims=True))
    want = np.concatenate(want, 1)
    assert users.shape == (5, 9) and items.shape == (4, 9)
    np.testing.assert_allclose(torch.cat([users, items]).numpy(), want, rtol=1e-5, atol=1e-6)
    model.train()
    with torch.no_grad():
        dropped, _ = model.embed(Lap)
    assert not torch.allclose(dropped, users) and torch.equal(dropped[:, :3], users[:, :3])  # layer 0 kept


def test_interactions_are_the_whole_history_of_each_row():
    splits, _, _ = _grouped()
    R = A.interactions(splits.test, splits.n_items)
    assert R.shape == (len(splits.test), splits.n_items)
    for r in range(5):
        seen = splits.test.exclude[r]
        assert set(R[r].indices) == set(seen[seen >= 0]) and R[r].nnz == 6  # length 7 minus the test item


@pytest.mark.parametrize("name,params,floor", [
    ("AlphaRec", {"epochs": 30, "eval_every": 5, "dim": 16, "lr": 1e-2, "batch_size": 256, "n_negatives": 32}, 0.9),
    ("LightGCN", {"epochs": 60, "eval_every": 10, "dim": 16, "lr": 1e-2, "batch_size": 256}, 0.6),
    ("NGCF", {"epochs": 60, "eval_every": 10, "dim": 16, "lr": 1e-2, "batch_size": 256}, 0.6)])
def test_the_planted_groups_are_recovered(name, params, floor):
    """Popularity ranks the user's group first by chance (1 in 6); the held-out item is one of the 4
    unseen items of the user's group, so a model that learnt the groups has it in its top 10."""
    splits, sem, group = _grouped()
    r, hist, info = A.fit_and_rank(name, params, splits, 0, sem if name == "AlphaRec" else None)
    m = metrics_of(r, splits)
    assert m["test_excl"]["recall@10"] >= floor, m["test_excl"]
    top = r["test_excl"][:, :4]
    user_group = group[splits.test.target]
    assert (group[top] == user_group[:, None]).mean() >= floor
    assert info["best_epoch"] % params["eval_every"] == 0
    assert len([h for h in hist if "valid_ndcg@20" in h]) == info["validations"] and len(hist) == info["epochs_run"]


def test_alpharec_scores_the_test_split_with_the_validation_item_in_the_user():
    splits, sem, _ = _grouped(n_users=30)
    model = A.AlphaRec(sem, 8, 2)
    valid, test = A._Scorer("AlphaRec", model, splits.valid, splits.n_items), A._Scorer("AlphaRec", model, splits.test, splits.n_items)
    assert test.R.sum() == valid.R.sum() + len(splits.valid)  # one more item per user
    uv, _ = valid.embeddings()
    ut, _ = test.embeddings()
    assert not torch.allclose(uv, ut)


def test_alpharec_has_no_id_embeddings():
    splits, sem, _ = _grouped(n_users=30)
    model = A.AlphaRec(sem, 8, 2)
    assert sum(p.numel() for p in model.parameters()) == sem.shape[1] * 8 + 8  # the linear map only


def test_bad_input_is_named():
    splits, sem, _ = _grouped(n_users=30)
    with pytest.raises(BaselineError, match="text embeddings"):
        A.fit_and_rank("AlphaRec", {"epochs": 1}, splits, 0, sem[:5])
    with pytest.raises(BaselineError, match="NaN"):
        A.AlphaRec(np.full((4, 3), np.nan), 8, 1)
    with pytest.raises(BaselineError, match="unknown setting"):
        A.settings("LightGCN", {"tau": 0.1})
    with pytest.raises(BaselineError, match="NGCF setting dropout must be in"):
        A.settings("NGCF", {"dropout": 1.0})
    with pytest.raises(BaselineError, match="unknown graph model"):
        A.settings("GCMC", {})
