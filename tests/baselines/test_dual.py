"""The EAGER-style dual code (ungerlib.baselines.dual): one shared encoder, two streams, EAGER's merge of
the two lists, a planted signal learnt, artefacts of their own."""
import numpy as np
import pytest
import torch

from ungerlib.baselines import dual
from ungerlib.infra import artefacts
from ungerlib.model.metrics import rank_metrics


@pytest.fixture(scope="module")
def data():
    from ungerlib.infra import config

    cfg = config.profile("smoke")
    return cfg, dual.inputs(cfg)


def test_the_streams_share_one_encoder_and_keep_their_own_tables(data):
    cfg, d = data
    m = dual.build(d.tables, d.embeddings, cfg.stage2, d.splits.max_len, 0)
    beh, sem = m.streams["behaviour"], m.streams["semantic"]
    assert beh.encoder is sem.encoder and beh.enc_pos is sem.enc_pos and beh.enc_ln is sem.enc_ln
    assert beh.enc_code is not sem.enc_code and beh.decoder is not sem.decoder
    shared = sum(p.numel() for p in beh.encoder.parameters()) + beh.enc_pos.numel() + \
        sum(p.numel() for p in beh.enc_ln.parameters())
    total = sum(p.numel() for p in m.parameters())
    assert total == sum(p.numel() for p in beh.parameters()) + sum(p.numel() for p in sem.parameters()) - shared
    assert d.tables["behaviour"].codes != d.tables["semantic"].codes  # two different codes per item


def test_merge_is_the_union_rescored_by_both_streams(data):
    """An independent, one-item-at-a-time implementation of EAGER's rerank gives the same lists."""
    cfg, d = data
    torch.manual_seed(0)
    m = dual.build(d.tables, d.embeddings, cfg.stage2, d.splits.max_len, 0).eval()
    ex = d.splits.valid.subset(np.arange(6))
    (ranked, scores), (excl, _) = m.rankings(ex.history, beam=8, topk=5, exclude=ex.exclude)
    from ungerlib.model.beam import recommend

    for u in range(len(ex)):
        h = torch.from_numpy(ex.history[u:u + 1])
        lists = [recommend(s, ex.history[u:u + 1], d.tables[n], beam=8, topk=5)[0][0] for n, s in m.streams.items()]
        cand = sorted({int(i) for lst in lists for i in lst if i >= 0})
        total = {i: sum(float(s.code_log_prob(h, torch.tensor([i]))) for s in m.streams.values()) for i in cand}
        expected = sorted(cand, key=lambda i: (-total[i], i))[:5]
        assert ranked[u][:len(expected)].tolist() == expected
        assert np.allclose(scores[u][:len(expected)], [total[i] for i in expected])
        assert not set(excl[u][excl[u] >= 0]) & set(ex.exclude[u][ex.exclude[u] >= 0])  # history excluded


def test_the_dual_code_learns_the_planted_structure(data):
    cfg, d = data
    model, hist = dual.train_dual(d, cfg.replace(stage2={"epochs": 6}), progress=False)
    t = d.splits.test
    (ranked, _), _ = model.rankings(t.history, beam=20, topk=20, exclude=t.exclude)
    pop = np.argsort(-np.bincount(d.splits.train.target, minlength=d.splits.n_items))[:20]
    assert rank_metrics(ranked, t.target)["recall@10"] > 2 * rank_metrics(np.tile(pop, (len(t), 1)), t.target)["recall@10"]
    assert hist[-1]["loss_gen_behaviour"] < hist[0]["loss_gen_behaviour"]
    assert hist[-1]["loss_gen_semantic"] < hist[0]["loss_gen_semantic"]


def test_dual_artefacts_are_keyed_apart_from_ungers(data):
    cfg, _ = data
    assert artefacts.key_hash("stage2_dual", cfg) != artefacts.key_hash("stage2", cfg)
    assert artefacts.key("eval_dual", cfg)["versions"]["stage2_dual"] == artefacts.KINDS["stage2_dual"].version
