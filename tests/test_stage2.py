import numpy as np
import pytest
import torch

from ungerlib import codes, config, data, stage2
from ungerlib.beam import recommend
from ungerlib.metrics import rank_metrics


@pytest.fixture(scope="module")
def world():
    """Synthetic data with codes from the planted collaborative clusters (what Stage I should find)."""
    cfg = config.profile("smoke")
    ds, splits = data.get_splits(cfg)
    cluster = np.array([it["cluster"] for it in ds.items])
    rng = np.random.default_rng(0)
    emb = (np.eye(8)[cluster] * 3 + 0.3 * rng.normal(size=(ds.n_items, 8))).astype(np.float32)
    return cfg, splits, codes.hierarchical_kmeans(emb, K=8, seed=0), emb


def test_learns_planted_structure_far_above_popularity(world):
    cfg, splits, table, emb = world
    model, hist = stage2.train_stage2(splits, table, emb, cfg.replace(stage2={"epochs": 8}), progress=False)
    pop = np.argsort(-np.bincount(splits.train.target, minlength=splits.n_items))[:20]
    popular = rank_metrics(np.tile(pop, (len(splits.test), 1)), splits.test.target)
    ranked, _ = recommend(model, splits.test.history, table, beam=20, topk=20)
    ours = rank_metrics(ranked, splits.test.target)
    assert ours["recall@10"] > 2 * popular["recall@10"]
    assert hist[-1]["loss_gen"] < hist[0]["loss_gen"] and hist[-1]["loss_ikd"] < hist[0]["loss_ikd"]
    assert all(0 <= h["valid_ndcg@20"] <= h["valid_recall@20"] <= 1 for h in hist)


def test_killed_run_resumes_to_the_same_result(world, tmp_path):
    cfg, splits, table, emb = world
    cfg = cfg.replace(stage2={"epochs": 3, "patience": 99})
    _, full = stage2.train_stage2(splits, table, emb, cfg, progress=False)

    def kill(epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stage2.train_stage2(splits, table, emb, cfg, work_dir=tmp_path, progress=False, after_epoch=kill)
    _, resumed = stage2.train_stage2(splits, table, emb, cfg, work_dir=tmp_path, progress=False)
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    for a, b in zip(full, resumed):
        same = {k: v for k, v in a.items() if not k.endswith("_s")}  # wall times differ
        assert same == pytest.approx({k: b[k] for k in same}, abs=1e-6)


def test_ikd_switch_and_bad_input(world):
    cfg, splits, table, emb = world
    _, hist = stage2.train_stage2(splits, table, emb, cfg.replace(stage2={"epochs": 1, "ikd": False}), progress=False)
    assert hist[0]["loss_ikd"] == 0.0
    with pytest.raises(ValueError, match="code table has 10 items but the data set has 240"):
        stage2.train_stage2(splits, codes.random_codes(10, 8), emb, cfg, progress=False)
    with pytest.raises(ValueError, match="integrated embeddings have shape"):
        stage2.train_stage2(splits, table, emb[:5], cfg, progress=False)
