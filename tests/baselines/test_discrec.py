"""The DiscRec-style Stage II variant (ungerlib.baselines.discrec): its item vector is the gated mix of the two
branches, the collaborative branch sees only the item's own tokens, it trains through stage2's
model_cls hook and its artefacts never collide with UNGER's."""
import pytest
import torch

from ungerlib.infra import artefacts
from ungerlib.baselines import discrec
from ungerlib.model.codes import item_codes
from ungerlib.model.data import get_splits
from ungerlib.model.stage1 import stage1_embeddings
from ungerlib.model.stage2 import build_model, train_stage2


@pytest.fixture
def parts(smoke):
    _, splits = get_splits(smoke)
    return smoke, splits, item_codes(smoke), stage1_embeddings(smoke, progress=False).integrated


def test_item_vector_is_the_gated_mix_of_the_branches(parts):
    cfg, splits, table, emb = parts
    m = build_model(table, emb, cfg.stage2, splits.max_len, 0, discrec.DiscRecUNGER).eval()
    with torch.no_grad():
        m.gate.normal_()
        items = torch.arange(12).reshape(3, 4)
        x = m.item_vectors(items)
        sem, co = m.branches(items.reshape(-1))
        w = m.gate_weights(sem, co)
    assert x.shape == (3, 4, cfg.stage2.d_model)
    assert torch.allclose(w.sum(1), torch.ones(12)) and (w > 0).all()
    mix = w[:, :1] * sem + w[:, 1:] * co
    if cfg.stage2.history_tokens == "both":  # plus the item's own (leaf node) embedding
        mix = mix + m.node_emb[m.leaf[items.reshape(-1)]].detach()
    torch.testing.assert_close(x.reshape(12, -1), mix)
    # the semantic branch is UNGER's own history token: the sum of the item's code-token embeddings
    plain = build_model(table, emb, cfg.stage2, splits.max_len, 0)
    plain.enc_code.load_state_dict(m.enc_code.state_dict())
    if cfg.stage2.history_tokens == "both":
        (plain.node_emb if plain.node_tokens else plain.item_emb).data.zero_()  # leave out the item embedding
    with torch.no_grad():
        torch.testing.assert_close(sem, plain.item_vectors(items.reshape(-1)))


def test_collaborative_branch_of_an_item_ignores_other_items(parts):
    cfg, splits, table, emb = parts
    m = build_model(table, emb, cfg.stage2, splits.max_len, 0, discrec.DiscRecUNGER).eval()
    with torch.no_grad():
        _, alone = m.branches(torch.tensor([5]))
        _, together = m.branches(torch.tensor([3, 5, 9]))
    torch.testing.assert_close(alone[0], together[1])


def test_trains_through_the_stage2_hook_and_recommends_real_items(parts):
    cfg, splits, table, emb = parts
    cfg = cfg.replace(stage2={"epochs": 2})
    model, hist = train_stage2(splits, table, emb, cfg, progress=False, model_cls=discrec.DiscRecUNGER)
    assert isinstance(model, discrec.DiscRecUNGER) and len(hist) == 2
    assert hist[1]["loss_gen"] < hist[0]["loss_gen"]
    from ungerlib.model.beam import recommend

    ranked, _ = recommend(model, splits.test.history[:20], table, beam=10, topk=10)
    assert ((ranked >= 0) & (ranked < splits.n_items) | (ranked == -1)).all() and (ranked[:, 0] >= 0).all()


def test_keys_differ_from_ungers_and_item_tokens_are_rejected(parts):
    cfg, splits, table, emb = parts

    assert artefacts.key_hash("stage2_discrec", cfg) != artefacts.key_hash("stage2", cfg)
    with pytest.raises(ValueError, match="history_tokens"):
        build_model(table, emb, cfg.replace(stage2={"history_tokens": "item"}).stage2, splits.max_len, 0,
                    discrec.DiscRecUNGER)


def test_provenance_code_hash_covers_the_model_code_not_the_command_line_tools():
    """DiscRec's provenance hashes the modules its training reaches; the reproduce/report/cli tools
    (which only recompute keys and write figures) stay out."""
    closure = artefacts.closure("baselines.discrec")
    assert {"baselines.discrec", "model.stage2", "model.beam", "model.metrics", "model.codes"} <= set(closure)
    assert not {"infra.reproduce", "infra.report", "infra.cli"} & set(closure)
