import numpy as np
import pytest
import torch

from ungerlib import codes, config, data, levers, stage2
from ungerlib.beam import recommend
from ungerlib.metrics import rank_metrics
from ungerlib.train import shuffled_batches

NEW = {"history_tokens": "both", "decoder_tokens": "node", "valid_children": True, "init": "stage1", "bucket": 4}
BASE = {"stage1_base": "nodes"}  # the default (row J) with the fixed Stage I vector under every node embedding
HIST_BASE = {"stage1_base": "history"}  # ... under every history item's encoder vector
USED_DECAY = {"table_decay": "when_used"}  # the default with the tables' L2 charged only to the rows a batch reads
LITERAL = levers.STAGE2_LEVERS[levers.LITERAL]  # the paper-literal reading (row A); the default is row J


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


@pytest.mark.parametrize("variant", [LITERAL, {}, NEW, BASE, HIST_BASE, USED_DECAY],
                         ids=["paper-literal", "default", "node+item+init", "node-base", "history-base", "used-decay"])
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


@pytest.mark.parametrize("variant", [LITERAL, {}, NEW, BASE, HIST_BASE],
                         ids=["paper-literal", "default", "node+item+init", "node-base", "history-base"])
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


def test_stage1_init_puts_items_where_stage1_had_them(world):
    """With init='stage1' item embeddings start as the (projected) Stage I vectors: same neighbours."""
    cfg, splits, table, emb = world
    s2 = cfg.replace(stage2=NEW).stage2
    model = stage2.build_model(table, emb, s2, splits.max_len, 0)
    vec = model.node_emb[model.leaf].detach().numpy()
    cos = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    a, b = cos(vec - vec.mean(0)), cos(emb - emb.mean(0))
    np.fill_diagonal(a, -2), np.fill_diagonal(b, -2)
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.95


def test_bucketed_batches_cover_every_example_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 21, size=1000)
    plain = shuffled_batches(1000, 64, np.random.default_rng(1))
    bucketed = shuffled_batches(1000, 64, np.random.default_rng(1), lengths, bucket=4)
    for batches in (plain, bucketed):
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    width = lambda bs: sum(len(b) * lengths[b].max() for b in bs)
    assert width(bucketed) < 0.75 * width(plain)


def test_stage1_base_keeps_the_stage1_vector_under_weight_decay(world):
    """stage1_base="nodes": a node's vector starts as its fixed Stage I vector (same neighbours as Stage
    I). Under weight decay alone (an item never trained), Adam's coupled L2 drives the default's free
    table (row J) to zero, while the free table and the map decay and leave the Stage I vector."""
    cfg, splits, table, emb = world
    model = stage2.build_model(table, emb, cfg.replace(stage2=BASE).stage2, splits.max_len, 0)
    assert torch.equal(model.node_vectors(model.leaf), model.stage1_vec[model.leaf])  # map and free table 0
    vec = model.node_vectors(model.leaf).detach().numpy()
    cos = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    a, b = cos(vec - vec.mean(0)), cos(emb - emb.mean(0))
    np.fill_diagonal(a, -2), np.fill_diagonal(b, -2)
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.95
    plain = stage2.build_model(table, emb, cfg.stage2, splits.max_len, 0)
    with torch.no_grad():  # as after some training: a residual and a map that are not zero
        model.node_emb.normal_(0, 0.1), model.base_map.normal_(0, 0.1)
    for m in (model, plain):
        opt = torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=3e-4)
        for _ in range(300):
            opt.zero_grad()
            (0 * m.node_vectors(m.leaf).sum()).backward()
            opt.step()
    assert plain.node_vectors(plain.leaf).norm(dim=1).max() < 0.05 * plain.d ** 0.5
    kept = model.node_vectors(model.leaf).detach()
    assert torch.nn.functional.cosine_similarity(kept, model.stage1_vec[model.leaf]).min() > 0.99
    with pytest.raises(config.ConfigError, match="stage1_base='nodes' needs"):
        cfg.replace(stage2={"stage1_base": "nodes", "init": "stage1"})
    with pytest.raises(config.ConfigError, match="stage1_base='nodes' needs"):
        cfg.replace(stage2={"stage1_base": "nodes", "decoder_tokens": "level"})


def test_stage1_base_history_adds_the_stage1_vector_to_history_items_only(world):
    """stage1_base="history": the encoder's item vector is row J's plus the item's Stage I vector (map
    M = 0 at the start); the node embeddings the decoder reads and scores with are row J's."""
    cfg, splits, table, emb = world
    plain = stage2.build_model(table, emb, cfg.stage2, splits.max_len, 0)
    based = stage2.build_model(table, emb, cfg.replace(stage2=HIST_BASE).stage2, splits.max_len, 0)
    items = torch.arange(len(table))
    with torch.no_grad():
        assert torch.equal(based.node_vectors(based.leaf), plain.node_vectors(plain.leaf))
        got = based.item_vectors(items) - plain.item_vectors(items)
    assert torch.allclose(got, based.stage1_vec[based.leaf], atol=1e-6)


def test_table_decay_when_used_charges_l2_only_to_the_rows_a_batch_reads(world):
    """table_decay="when_used": a table row's gradient gains weight_decay * row exactly when the batch
    read it; rows it did not read get nothing and stay put under Adam, while Adam's coupled L2 (the
    default, row J) shrinks an unread row on every step. Other parameters keep the optimiser's L2."""
    cfg, splits, table, emb = world
    wd, used = 3e-2, torch.arange(0, len(table), 2)  # the batch reads every second item
    weights = torch.randn(len(used), cfg.stage2.d_model, generator=torch.Generator().manual_seed(0))

    def step(m, opt):
        opt.zero_grad()
        (m.node_vectors(m.leaf[used]) * weights).sum().backward()
        opt.step()

    plain = stage2.build_model(table, emb, cfg.stage2, splits.max_len, 0)
    hooked = stage2.build_model(table, emb, cfg.replace(stage2=USED_DECAY).stage2, splits.max_len, 0)
    groups = stage2.decay_when_used(hooked, wd)
    assert {id(p) for p in groups[0]["params"]} == {id(hooked.node_emb), id(hooked.node_bias), id(hooked.enc_code.weight)}
    assert groups[0]["weight_decay"] == 0 and "weight_decay" not in groups[1]
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(hooked.parameters()))
    for m in (plain, hooked):
        m.zero_grad()
        (m.node_vectors(m.leaf[used]) * weights).sum().backward()
    read = torch.zeros(len(hooked.node_emb), dtype=torch.bool)
    read[hooked.leaf[used]] = True
    extra = hooked.node_emb.grad - plain.node_emb.grad
    assert torch.allclose(extra[read], wd * hooked.node_emb.detach()[read], atol=1e-6)
    assert torch.equal(extra[~read], torch.zeros_like(extra[~read]))
    unread = hooked.leaf[1::2]
    start = hooked.node_emb.detach()[unread].clone()
    opt_used = torch.optim.Adam(groups, lr=1e-2, weight_decay=wd)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=1e-2, weight_decay=wd)
    for _ in range(100):
        step(hooked, opt_used), step(plain, opt_plain)
    assert torch.equal(hooked.node_emb.detach()[unread], start)  # never read, never charged
    shrunk = plain.node_emb.detach()[unread].norm(dim=1) / start.norm(dim=1)
    assert shrunk.max() < 0.5


def test_logit_adjusted_loss_adds_tau_log_prior_to_each_child_in_training_only(world):
    """The ``offset`` of ``UNGER.loss`` shifts each existing child's training score by its node's offset
    (an independent loop over the trie here), a zero offset is the plain loss, and decoding ignores it."""
    import torch.nn.functional as F

    cfg, splits, table, emb = world
    s2 = cfg.replace(stage2={"prior_tau": 1.0}).stage2
    model = stage2.build_model(table, emb, s2, splits.max_len, seed=0).eval()
    hist, target = torch.from_numpy(stage2.trim(splits.train.history[:64])), torch.from_numpy(splits.train.target[:64])
    counts = np.bincount(splits.train.target, minlength=splits.n_items)
    offset = torch.from_numpy(stage2.node_log_prior(table, counts)).float()
    with torch.no_grad():
        plain = model.loss(hist, target, None, None)["gen"]
        assert torch.allclose(model.loss(hist, target, None, None, torch.zeros_like(offset))["gen"], plain)
        logits, code, _ = model(hist, target)
        ref, n = 0.0, 0
        for b, item in enumerate(target.tolist()):
            node = 0
            for lvl, tok in enumerate(table.codes[item]):
                kids = np.flatnonzero(table.next_node[node] >= 0)
                row = logits[b, lvl, kids] + offset[table.next_node[node, kids]]
                ref = ref - F.log_softmax(row, 0)[list(kids).index(tok)]
                n, node = n + 1, table.next_node[node, tok]
        adjusted = model.loss(hist, target, None, None, offset)["gen"]
    assert torch.allclose(adjusted, ref / n, atol=1e-5) and not torch.allclose(adjusted, plain)


def test_logit_adjusted_training_recommends_less_popular_items(world):
    """Trained with the logit-adjusted loss, the model's own (unadjusted) beam recommends items that
    are less often training targets than the plain model's: the prior is left out of the scores it
    decodes with."""
    cfg, splits, table, emb = world
    counts = np.bincount(splits.train.target, minlength=splits.n_items)
    mean_count = {}
    for tau in (0.0, 1.0):
        model, _ = stage2.train_stage2(splits, table, emb, cfg.replace(stage2={"epochs": 4, "prior_tau": tau}),
                                       progress=False)
        ranked, _ = recommend(model, splits.test.history, table, beam=20, topk=10)
        mean_count[tau] = counts[ranked].mean()
    assert mean_count[1.0] < 0.95 * mean_count[0.0], mean_count
