import numpy as np
import pytest
import torch

from ungerlib.infra import config
from ungerlib.model import data, stage1
from ungerlib.model.metrics import rank_metrics


@pytest.fixture(scope="module")
def world():
    cfg = config.profile("smoke")
    ds, splits = data.get_splits(cfg)
    topic = np.array([it["topic"] for it in ds.items])
    rng = np.random.default_rng(0)
    sem = (np.eye(cfg.data.n_topics)[topic] + 0.3 * rng.normal(size=(ds.n_items, cfg.data.n_topics))).astype(np.float32)
    sem = np.concatenate([sem, 0.3 * rng.normal(size=(ds.n_items, 24)).astype(np.float32)], 1)
    return cfg, splits, sem


@pytest.fixture(scope="module")
def trained(world):
    cfg, splits, sem = world
    return {a: stage1.train_stage1(splits, sem, cfg.replace(stage1={"alpha": a}), progress=False) for a in (0.0, 1.0)}


def test_din_recovers_planted_transitions(world, trained):
    cfg, splits, _ = world
    pop = np.argsort(-np.bincount(splits.train.target, minlength=splits.n_items))[:20]
    popular = rank_metrics(np.tile(pop, (len(splits.valid), 1)), splits.valid.target)
    assert trained[0.0].valid_metrics["recall@10"] > 5 * popular["recall@10"]  # 0.52 vs 0.06


def test_cka_aligns_modalities(trained):
    assert trained[1.0].crossmodal_top1 > trained[0.0].crossmodal_top1 + 0.05
    assert trained[1.0].integrated.shape[0] == trained[1.0].collaborative.shape[0]
    assert np.isfinite(trained[1.0].history[-1]["loss_align"])


def test_adaln_starts_as_layernorm_and_is_input_dependent():
    torch.manual_seed(0)
    x = torch.randn(5, 16)
    ada, plain = stage1.AdaLN(16), torch.nn.LayerNorm(16)
    assert torch.allclose(ada(x), plain(x), atol=1e-5)  # zero-initialised modulation
    torch.nn.init.normal_(ada.mod.weight)
    y = ada(x)
    assert not torch.allclose(y, plain(x), atol=1e-3) and y.shape == (5, 16)


def test_same_seed_same_embeddings_and_resume(world, tmp_path):
    cfg, splits, sem = world
    cfg = cfg.replace(stage1={"epochs": 3, "patience": 99})
    a = stage1.train_stage1(splits, sem, cfg, progress=False)
    b = stage1.train_stage1(splits, sem, cfg, work_dir=tmp_path, progress=False)
    assert np.array_equal(a.integrated, b.integrated)
    # a run that stopped after 2 epochs and resumes ends where the uninterrupted one did
    stage1.train_stage1(splits, sem, cfg.replace(stage1={"epochs": 2}), work_dir=tmp_path / "r", progress=False)
    c = stage1.train_stage1(splits, sem, cfg, work_dir=tmp_path / "r", progress=False)
    assert np.allclose(a.integrated, c.integrated, atol=1e-6)


def test_variants_and_bad_input(world):
    cfg, splits, sem = world
    s = stage1.train_stage1(splits, sem, config.variant(cfg, "semantic_only"), progress=False)
    assert np.array_equal(s.integrated, sem)
    bad = sem.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf in 1 row\(s\), first: \[3\]"):
        stage1.train_stage1(splits, bad, cfg, progress=False)
    with pytest.raises(ValueError, match="one row per item"):
        stage1.train_stage1(splits, sem[:-1], cfg, progress=False)
    with pytest.raises(config.ConfigError, match="integrated must be one of"):
        stage1.train_stage1(splits, sem, cfg.replace(stage1={"integrated": "average"}), progress=False)


def test_din_scores_match_the_textbook_formula():
    """The fused GEMM scoring equals DIN written out per (user, candidate): a_l = MLP([h, t, h-t, h*t])."""
    torch.manual_seed(0)
    n, d, H = 30, 8, 4
    din = stage1.DIN(n, d, H, dropout=0.0, max_len=5).eval()
    with torch.no_grad():
        din.pos.normal_(), din.out.bias.normal_(), din.bias.normal_(), din.att_act.weight.fill_(0.2)
    hist = torch.tensor([[n, n, 3, 7, 9], [1, 2, 3, 4, 5], [n, n, n, n, 0]])  # padding = n
    cand = torch.tensor([[2, 9, 17], [0, 5, 29], [11, 12, 13]])
    expected = torch.zeros(3, 3)
    for b in range(3):
        keep = hist[b] != n
        h = (din.emb(hist[b]) + din.pos)[keep]  # [l, d]
        for c in range(3):
            t = din.emb.weight[cand[b, c]]
            z = din.att_h(h) + din.att_t(t) + (h[:, None, :] * t * din.att_ht).sum(-1)  # [l, H]
            a = din.att_w(din.att_act(z))[:, 0]  # [l], no softmax (DIN)
            u = (a[:, None] * h).sum(0) / len(h)
            expected[b, c] = din.out(u) @ t + din.bias[cand[b, c]]
    with torch.no_grad():
        assert torch.allclose(din.interest(hist, cand), expected, atol=1e-5)
        shared = din.interest(hist, torch.tensor([2, 9, 17]))  # shared-candidate GEMM path
        assert torch.allclose(shared[0], expected[0], atol=1e-5)


def test_integrated_choice_is_applied_on_load_without_retraining(tmp_path, monkeypatch):
    monkeypatch.setenv("UNGER_ARTEFACTS", str(tmp_path))
    cfg = config.profile("smoke").replace(stage1={"epochs": 2})
    a = stage1.stage1_embeddings(cfg, progress=False)
    b = stage1.stage1_embeddings(cfg.replace(stage1={"integrated": "concat"}), progress=False)
    assert len([p for p in (tmp_path / "stage1").iterdir() if not p.name.startswith(".")]) == 1  # trained once
    np.testing.assert_array_equal(a.collaborative, b.collaborative)
    np.testing.assert_array_equal(a.integrated, a.collaborative)  # the default quantises E_C
    assert b.integrated.shape == (a.collaborative.shape[0], 2 * a.collaborative.shape[1])
    with pytest.raises(config.ConfigError, match="integrated"):
        stage1.stage1_embeddings(cfg.replace(stage1={"integrated": "average"}), progress=False)
