import numpy as np
import pytest
import torch

from ungerlib.model import codes, data, stage2
from ungerlib.infra import config
from ungerlib.analyses import stage2_grid
from ungerlib.model.beam import recommend
from ungerlib.model.metrics import rank_metrics
from ungerlib.model.train import shuffled_batches

NEW = {"history_tokens": "both", "decoder_tokens": "node", "valid_children": True, "bucket": 4}
LITERAL = stage2_grid.STAGE2_LEVERS[stage2_grid.LITERAL]  # the paper-literal reading (row A); the default is row J


@pytest.fixture(scope="module")
def world():
    """Synthetic data with codes from the planted collaborative clusters (what Stage I should find)."""
    cfg = config.profile("smoke")
    ds, splits = data.get_splits(cfg)
    cluster = np.array([it["cluster"] for it in ds.items])
    rng = np.random.default_rng(0)
    emb = (np.eye(8)[cluster] * 3 + 0.3 * rng.normal(size=(ds.n_items, 8))).astype(np.float32)
    return cfg, splits, codes.hierarchical_kmeans(emb, K=8, seed=0), emb


def _popularity(splits):
    pop = np.argsort(-np.bincount(splits.train.target, minlength=splits.n_items))[:20]
    return rank_metrics(np.tile(pop, (len(splits.test), 1)), splits.test.target)


@pytest.mark.parametrize("variant", [LITERAL, {}, NEW],
                         ids=["paper-literal", "default", "node+item"])
def test_learns_planted_structure_far_above_popularity(world, variant):
    cfg, splits, table, emb = world
    model, hist = stage2.train_stage2(splits, table, emb, cfg.replace(stage2={"epochs": 8, **variant}), progress=False)
    ranked, _ = recommend(model, splits.test.history, table, beam=20, topk=20)
    ours = rank_metrics(ranked, splits.test.target)
    assert ours["recall@10"] > 2 * _popularity(splits)["recall@10"]
    assert hist[-1]["loss_gen"] < hist[0]["loss_gen"] and hist[-1]["loss_ikd"] < hist[0]["loss_ikd"]
    assert all(0 <= h["valid_ndcg@20"] <= h["valid_recall@20"] <= 1 for h in hist)


def test_same_seed_gives_bit_identical_gradients_on_several_threads(world):
    """Rows of a shared parameter gathered by plain indexing summed their gradients in thread order
    (the smoke curves of two CI runs differed in the 8th digit after one epoch); ``stage2.rows``
    goes through ``F.embedding``, whose backward adds them in a fixed order."""
    cfg, splits, table, emb = world
    s2 = cfg.replace(stage2=NEW).stage2
    hist = torch.from_numpy(stage2.trim(splits.train.history[:128]))
    target, E = torch.from_numpy(splits.train.target[:128]), torch.from_numpy(emb)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        grads = []
        for _ in range(2):
            model = stage2.build_model(table, emb, s2, splits.max_len, seed=0).train()
            torch.manual_seed(1)
            model.loss(hist, target, E, torch.arange(20))["loss"].backward()
            grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    finally:
        torch.set_num_threads(threads)
    assert "node_emb" in grads[0]
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


def test_killed_run_resumes_to_the_same_result(world, tmp_path):
    cfg, splits, table, emb = world
    cfg = cfg.replace(stage2={"epochs": 3, "patience": 99, **NEW})
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


def test_corrupt_checkpoint_names_the_file(world, tmp_path):
    cfg, splits, table, emb = world
    (tmp_path / "stage2.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"checkpoint .*stage2.pt cannot be read"):
        stage2.train_stage2(splits, table, emb, cfg.replace(stage2={"epochs": 1}), work_dir=tmp_path, progress=False)


def test_ikd_switch_and_bad_input(world):
    cfg, splits, table, emb = world
    _, hist = stage2.train_stage2(splits, table, emb, cfg.replace(stage2={"epochs": 1, "ikd": False}), progress=False)
    assert hist[0]["loss_ikd"] == 0.0
    with pytest.raises(ValueError, match="code table has 10 items but the data set has 240"):
        stage2.train_stage2(splits, codes.random_codes(10, 8), emb, cfg, progress=False)
    with pytest.raises(ValueError, match="integrated embeddings have shape"):
        stage2.train_stage2(splits, table, emb[:5], cfg, progress=False)
    with pytest.raises(config.ConfigError, match="needs stage2.valid_children=True"):
        cfg.replace(stage2={"decoder_tokens": "node", "valid_children": False})


@pytest.mark.parametrize("variant", [LITERAL, {}, NEW],
                         ids=["paper-literal", "default", "node+item"])
def test_trimming_padding_is_the_same_math(world, variant):
    """A batch trimmed to its longest history gives the same loss terms as the 20-wide one."""
    cfg, splits, table, emb = world
    s2 = cfg.replace(stage2=variant).stage2
    model = stage2.build_model(table, emb, s2, splits.max_len, 0).eval()
    idx = np.argsort(splits.train.lengths)[:64]  # short histories: lots of padding
    full = torch.from_numpy(splits.train.history[idx])
    short = torch.from_numpy(stage2.trim(splits.train.history[idx]))
    assert short.shape[1] < full.shape[1]
    tgt, E, neg = torch.from_numpy(splits.train.target[idx]), torch.from_numpy(emb), torch.arange(5)
    with torch.no_grad():
        a, b = model.loss(full, tgt, E, neg), model.loss(short, tgt, E, neg)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_valid_children_put_no_mass_on_codes_that_do_not_exist(world):
    cfg, splits, _, emb = world
    table = codes.hierarchical_kmeans(emb, K=16, seed=0)  # 240 items: first-level clusters have < 16 children
    model = stage2.build_model(table, emb, cfg.replace(stage2={"valid_children": True}).stage2, splits.max_len, 0)
    with torch.no_grad():
        logits, code, _ = model(torch.from_numpy(splits.train.history[:16]), torch.from_numpy(splits.train.target[:16]))
    prefix = model.path[torch.from_numpy(splits.train.target[:16]), 0]  # level-2 rows: prefix = the first-level node
    missing = model.next_node[prefix] < 0
    assert missing.any() and torch.isinf(logits[:, 1][missing]).all() and torch.isfinite(logits[:, 1][~missing]).all()


def test_bucketed_batches_cover_every_example_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 21, size=1000)
    plain = shuffled_batches(1000, 64, np.random.default_rng(1))
    bucketed = shuffled_batches(1000, 64, np.random.default_rng(1), lengths, bucket=4)
    for batches in (plain, bucketed):
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    width = lambda bs: sum(len(b) * lengths[b].max() for b in bs)
    assert width(bucketed) < 0.75 * width(plain)




@pytest.mark.parametrize("variant", [LITERAL, {}], ids=["paper-literal", "default"])
def test_bf16_autocast_trains_and_decodes_like_float32(world, variant):
    """The mixed-precision path of a GPU (``stage2.precision``), here through torch's CPU autocast: loss terms
    equal to float32's within bf16's precision, float32 gradients, and a beam that still ranks real items."""
    from ungerlib.infra import runtime

    cfg, splits, table, emb = world
    model = stage2.build_model(table, emb, cfg.replace(stage2=variant).stage2, splits.max_len, 0).eval()
    idx = np.arange(64)
    hist, tgt = torch.from_numpy(stage2.trim(splits.train.history[idx])), torch.from_numpy(splits.train.target[idx])
    E, neg = torch.from_numpy(emb), torch.arange(20)
    full = model.loss(hist, tgt, E, neg)
    with runtime.autocast("bf16", torch.device("cpu")):
        low = model.loss(hist, tgt, E, neg)
    for k in ("gen", "ikd"):
        a, b = float(low[k].detach()), float(full[k].detach())
        assert a == pytest.approx(b, rel=2e-2) and a != b
    low["loss"].backward()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.grad is not None)
    with runtime.autocast("bf16", torch.device("cpu")):
        ranked, _ = recommend(model, splits.valid.history[:32], table, beam=10, topk=10)
    exact, _ = recommend(model, splits.valid.history[:32], table, beam=10, topk=10)
    assert (ranked >= 0).all() and all(len(set(r)) == 10 for r in ranked)
    assert np.mean(ranked[:, 0] == exact[:, 0]) >= 0.8  # bf16 may swap near-tied items, not the ranking
