"""SASRec and HSTU (ungerlib.baselines.sequential): one HSTU layer equals the paper's equations evaluated
by loops, a planted signal is recovered far above popularity with the full and the sampled softmax, a
killed run resumes to the same result, and bad settings are named."""
import math

import numpy as np
import pytest
import torch

from ungerlib.baselines import protocol as B
from ungerlib.baselines import sequential as S
from ungerlib.baselines.references import popularity
from ungerlib.model.data import PAD, get_splits


def _silu(z: float) -> float:
    return z / (1 + math.exp(-z))


def _layer_norm(z: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return (z - z.mean()) / math.sqrt(z.var() + eps)


def test_hstu_layer_equals_the_papers_equations_evaluated_by_loops():
    """Eq. 1: U, V, Q, K = Split(SiLU(f1(X))); Eq. 2: A(X)V(X) = SiLU(Q K^T + rab) V / n, summed over the
    earlier real positions only; Eq. 3: Y = f2(Norm(A V) * U) + X, one position and head at a time."""
    torch.manual_seed(0)
    B_, L, d, H, buckets = 3, 7, 8, 2, 6
    layer = S.HSTULayer(d, H, dropout=0.0, max_len=L, n_buckets=buckets).eval()
    with torch.no_grad():
        layer.rab.normal_()
        layer.f2.bias.normal_()
    x = torch.randn(B_, L, d)
    keep = torch.ones(B_, L, dtype=torch.bool)
    keep[1, :3] = False  # a left-padded row
    with torch.no_grad():
        got = layer(x * keep[..., None], keep).numpy()

    X = (x * keep[..., None]).numpy().astype(np.float64)
    W1, W2, b2 = (layer.f1.weight.detach().numpy().astype(np.float64), layer.f2.weight.detach().numpy().astype(np.float64),
                  layer.f2.bias.detach().numpy().astype(np.float64))
    rab, bucket = layer.rab.detach().numpy().astype(np.float64), S.relative_buckets(L, buckets).numpy()
    dh = d // H
    for b in range(B_):
        uvqk = np.array([[_silu(z) for z in W1 @ _layer_norm(X[b, t])] for t in range(L)])  # Eq. 1
        U, V, Q, K = uvqk[:, :d], uvqk[:, d:2 * d], uvqk[:, 2 * d:3 * d], uvqk[:, 3 * d:]
        for i in range(L):
            if not keep[b, i]:
                assert np.allclose(got[b, i], 0)
                continue
            av = np.zeros(d)
            for h in range(H):
                sl = slice(h * dh, (h + 1) * dh)
                for j in range(i + 1):  # causal
                    if keep[b, j]:
                        av[sl] += _silu(Q[i, sl] @ K[j, sl] + rab[bucket[i, j]]) / L * V[j, sl]  # Eq. 2
            want = W2 @ (_layer_norm(av) * U[i]) + b2 + X[b, i]  # Eq. 3 and the residual
            np.testing.assert_allclose(got[b, i], want, rtol=1e-4, atol=1e-5)


def test_relative_buckets_are_exact_near_and_logarithmic_far():
    bk = S.relative_buckets(20, 16)
    dist = np.arange(20)
    assert bk[19, 19 - dist].tolist()[:8] == list(range(8))  # distances 0..7: a bucket each
    far = bk[19, 19 - dist].numpy()[8:]
    assert np.all(np.diff(far) >= 0) and far.max() <= 15 and len(set(far)) < len(far)  # shared, ordered
    assert torch.equal(bk.diagonal(), torch.zeros(20, dtype=torch.long)) and bk[0, 5] == 0  # j > i: masked
    assert torch.equal(S.relative_buckets(6, 16), (torch.arange(6)[:, None] - torch.arange(6)).clamp(min=0))


@pytest.mark.parametrize("name", S.MODELS)
def test_scores_ignore_the_padding_and_read_the_whole_window(name):
    """What the PAD row of the item table holds does not change a score (padded positions are zeroed
    and masked), while an earlier item does (the model reads more than the last item)."""
    torch.manual_seed(0)
    model = S.build(name, S.settings(name, {"dim": 16, "heads": 2}), n_items=30, max_len=6).eval()
    a, b = torch.tensor([[PAD, PAD, PAD, 4, 7, 9]]), torch.tensor([[PAD, PAD, 2, 4, 7, 9]])
    with torch.no_grad():
        sa, sb = model.scores(a), model.scores(b)
        assert sa.shape == (1, 30) and torch.isfinite(sa).all() and not torch.allclose(sa, sb)
        model.item.weight[30].normal_()
        assert torch.allclose(model.scores(a), sa, atol=1e-5)


def test_sasrec_scores_a_trimmed_window_alike_and_hstu_divides_by_its_length():
    """SASRec reads positions from the right, so dropping leading padding changes nothing; HSTU's
    pointwise attention is divided by the window length n (Eq. 2), so it does change HSTU's scores."""
    hist = torch.tensor([[PAD, PAD, PAD, 4, 7, 9]])
    for name, alike in (("SASRec", True), ("HSTU", False)):
        torch.manual_seed(0)
        model = S.build(name, S.settings(name, {"dim": 16, "heads": 2}), n_items=30, max_len=6).eval()
        with torch.no_grad():
            assert torch.allclose(model.scores(hist[:, 2:]), model.scores(hist), atol=1e-5) == alike, name


@pytest.mark.parametrize("name", S.MODELS)
def test_sampled_softmax_masks_accidental_hits_and_full_softmax_is_cross_entropy(name):
    torch.manual_seed(0)
    model = S.build(name, S.settings(name, {"dim": 16, "dropout": 0.0}), n_items=30, max_len=6).eval()
    hist, target = torch.tensor([[PAD, 1, 2, 3, 4, 5], [PAD, PAD, 6, 7, 8, 9]]), torch.tensor([6, 10])
    with torch.no_grad():
        full = model.loss(hist, target)["loss"]
        assert torch.isclose(full, torch.nn.functional.cross_entropy(model.scores(hist), target))
        # every item as a negative, the targets among them: masked, so the sampled softmax is the full one
        assert torch.isclose(model.loss(hist, target, torch.arange(30))["loss"], full, atol=1e-5)


@pytest.fixture(scope="module")
def smoke_splits():
    from ungerlib.infra import config

    return get_splits(config.profile("smoke"))[1]


@pytest.mark.parametrize("name,n_negatives", [("SASRec", 0), ("SASRec", 32), ("HSTU", 0), ("HSTU", 32)])
def test_the_planted_transitions_are_recovered(smoke_splits, name, n_negatives):
    """The synthetic next item is one of the current item's three favourite successors 60 % of the time:
    a trained model ranks the test item far above popularity, and training lowered the loss."""
    splits = smoke_splits
    params = {"dim": 32, "lr": 1e-2, "batch_size": 128, "epochs": 8, "n_negatives": n_negatives}
    r, hist, info = S.fit_and_rank(name, params, splits, 0)
    m = B.metrics_of(r, splits)
    assert m["test_all"]["recall@10"] > 4 * popularity(splits, splits.test)["recall@10"], m["test_all"]
    assert hist[-1]["loss_ce"] < 0.7 * hist[0]["loss_ce"] and hist[-1]["valid_ndcg@20"] > 3 * hist[0]["valid_ndcg@20"]
    assert info["best_epoch"] == max(range(len(hist)), key=lambda e: hist[e]["valid_ndcg@20"]) + 1
    assert m["test_excl"]["recall@20"] >= m["test_all"]["recall@20"]


@pytest.mark.parametrize("name", S.MODELS)
def test_killed_run_resumes_to_the_same_result(smoke_splits, tmp_path, name):
    params = {"dim": 16, "batch_size": 256, "epochs": 3, "patience": 9, "n_negatives": 16}
    full, full_hist, _ = S.fit_and_rank(name, params, smoke_splits, 0)

    def kill(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        S.fit_and_rank(name, params, smoke_splits, 0, tmp_path, after_epoch=kill)
    resumed, hist, info = S.fit_and_rank(name, params, smoke_splits, 0, tmp_path)
    assert [h["epoch"] for h in hist] == [1, 2, 3] and info["epochs_run"] == 3
    for a, b in zip(full_hist, hist):
        same = {k: v for k, v in a.items() if not k.endswith("_s")}  # wall times differ
        assert same == pytest.approx({k: b[k] for k in same}, abs=1e-6)
    for tag in B.TAGS:
        assert np.array_equal(full[tag], resumed[tag]), tag


def test_bad_settings_are_named():
    with pytest.raises(B.BaselineError, match=r"unknown setting\(s\) \['hidden'\] for SASRec"):
        S.settings("SASRec", {"hidden": 3})
    with pytest.raises(B.BaselineError, match="unknown setting"):
        S.settings("SASRec", {"temperature": 0.1})  # HSTU's, not SASRec's
    with pytest.raises(B.BaselineError, match="HSTU setting dropout must be in \\[0, 1\\), got 1.5"):
        S.settings("HSTU", {"dropout": 1.5})
    with pytest.raises(B.BaselineError, match="n_negatives must be a non-negative integer"):
        S.settings("SASRec", {"n_negatives": -1})
    with pytest.raises(B.BaselineError, match="dim must be a positive integer, got 64.0"):
        S.settings("SASRec", {"dim": 64.0})
    with pytest.raises(B.BaselineError, match=r"dim \(30\) must be a multiple of heads \(4\)"):
        S.settings("HSTU", {"dim": 30, "heads": 4})
    with pytest.raises(B.BaselineError, match="unknown sequential model"):
        S.settings("GRU4Rec", {})
