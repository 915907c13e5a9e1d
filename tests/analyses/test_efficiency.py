"""Notebook 10's measurements (ungerlib.analyses.efficiency): parameter and byte counts against a hand
calculation, decoder steps counted against the code length, Hugging Face's generate and our beam on the
same T5 weights returning the same top k, and bad input named."""
import numpy as np
import pytest
import torch

from ungerlib.analyses import efficiency as E
from ungerlib.baselines.dual import DualUNGER
from ungerlib.infra import config
from ungerlib.model import codes
from ungerlib.model.stage2 import UNGER


def _s2(**kw):
    s2 = config.profile("smoke").stage2
    return config.from_dict(config.Stage2Config, {**config.to_dict(s2), **kw})


LITERAL = dict(history_tokens="codes", decoder_tokens="level", valid_children=False)
ROW_J = dict(history_tokens="both", decoder_tokens="node", valid_children=True)


def hand_parameters(s2, table, d_int, max_hist, encoder=True):
    """UNGER's parameters from its sizes alone (stage2.UNGER's layers written out)."""
    d, f, Lc, K, n = s2.d_model, s2.d_ff, table.max_len, table.K, len(table)
    nodes = len(table.node_item)
    lin = lambda i, o: i * o + o  # noqa: E731
    enc_layer = lin(d, 3 * d) + lin(d, d) + lin(d, f) + lin(f, d) + 2 * 2 * d
    dec_layer = 3 * 2 * d + lin(d, 3 * d) + lin(d, d) + lin(d, d) + lin(d, 2 * d) + lin(d, d) + lin(d, f) + lin(f, d)
    p = d + (Lc + 2) * d + s2.dec_layers * dec_layer + 2 * d + lin(d, d_int)  # [c_dis], dec_pos, decoder, dec_ln, IKD
    if encoder:
        p += max_hist * d + s2.enc_layers * enc_layer + 2 * d  # positions, layers, final norm
    if s2.history_tokens in ("codes", "both"):
        p += (Lc * K + 1) * d
    if s2.decoder_tokens == "node":
        p += nodes * d + nodes
    else:
        p += (Lc * K + 1) * d + Lc * K * d + (n * d if s2.history_tokens in ("item", "both") else 0)
    return p


@pytest.fixture(scope="module")
def tables():
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(size=(40, 8)), rng.normal(size=(20, 8)) * 0.01 + 3])
    varied = codes.hierarchical_kmeans(emb, K=4, seed=0)
    assert len(set(varied.lengths.tolist())) > 1
    fixed = codes.CodeTable(sorted({tuple(rng.integers(6, size=3).tolist()) for _ in range(300)})[:120], K=6)
    assert set(fixed.lengths.tolist()) == {3}
    return varied, fixed


@pytest.mark.parametrize("form", [LITERAL, ROW_J], ids=["codes only", "item tables"])
def test_parameters_equal_a_hand_count(tables, form):
    varied, _ = tables
    s2 = _s2(**form)
    model = UNGER(varied, 8, s2, max_hist=6)
    assert E.parameters(model) == hand_parameters(s2, varied, 8, 6)
    nodes, d = len(varied.node_item), s2.d_model
    assert E.item_table_bytes(model) == (4 * (nodes * d + nodes) if form is ROW_J else 0)


def test_a_dual_code_counts_its_shared_encoder_once(tables):
    varied, fixed = tables
    fixed = codes.CodeTable(fixed.codes[:len(varied)], K=fixed.K)  # the same items in both streams
    s2 = _s2(**LITERAL)
    model = DualUNGER({"behaviour": varied, "semantic": fixed}, {"behaviour": 8, "semantic": 5}, s2, 6)
    assert E.parameters(model) == (hand_parameters(s2, varied, 8, 6) + hand_parameters(s2, fixed, 5, 6, encoder=False))


def test_code_bytes_by_hand(tables):
    varied, fixed = tables
    assert E.token_bytes(256) == 1 and E.token_bytes(257) == 2 and E.token_bytes(70000) == 4
    assert E.code_bytes(fixed) == 120 * 3  # one byte per token, one length for all
    assert E.code_bytes(varied) == sum(len(c) for c in varied.codes) + len(varied)  # + a length byte per item


def test_decoder_steps_counted_equal_the_code_length(tables):
    varied, fixed = tables
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    hist = rng.integers(0, len(varied), size=(7, 6))
    uni = UNGER(varied, 8, _s2(**ROW_J), max_hist=6).eval()
    dual = DualUNGER({"behaviour": varied, "semantic": codes.CodeTable(fixed.codes[:len(varied)], K=fixed.K)},
                     {"behaviour": 8, "semantic": 8}, _s2(**LITERAL), 6).eval()
    decs = {"unified": E.Decoder("unified", uni, {"": varied}), "dual": E.Decoder("dual", dual, dict(dual.tables))}
    t = E.costs(decs, hist, beam=8, topk=3)
    assert t.loc["unified", "decoder steps per user, counted"] == varied.max_len
    assert t.loc["dual", "decoder steps per user, counted"] == varied.max_len + 3
    assert (t["decoder steps per user, counted"] == t["decoder steps per user, analytic"]).all()
    assert t.loc["dual", "code bytes"] == E.code_bytes(varied) + 3 * len(varied)
    assert not hasattr(uni.__dict__, "decode_step") and "decode_step" not in uni.__dict__  # counters removed
    times = E.time_decoders(decs, hist, E.Timing(beams=(4, 8), topk=3, users=5, repeats=1, warmup_users=2))
    assert set(times.index) == {(c, b) for c in decs for b in (4, 8)}
    assert (times["ms per user"] > 0).all() and np.allclose(times.xs("unified", level="code")["x unified"], 1)


@pytest.fixture(scope="module")
def t5(tables):
    _, fixed = tables
    return E.t5_model(_s2(dec_layers=3, enc_layers=1), fixed, seed=0)  # more decoder than encoder layers


@pytest.mark.parametrize("search", [E.HFSearch("eager", "list", True, 3), E.HFSearch("sdpa", "tensor", True, 8),
                                    E.HFSearch("sdpa", "list", False, 8), E.HFSearch("eager", "tensor", False, 2)],
                         ids=lambda s: s.name)
def test_hf_generate_and_our_beam_give_the_same_topk_on_the_same_weights(tables, t5, search):
    _, fixed = tables
    rng = np.random.default_rng(2)
    hist = torch.from_numpy(rng.integers(-1, len(fixed), size=(5, 6)))
    hist[:, -1] = torch.from_numpy(rng.integers(len(fixed), size=5))
    hf = E.hf_generate(t5, fixed, hist, beam=12, topk=6, search=search)
    ours = E.ours_on_t5(t5, fixed, hist, beam=12, topk=6)
    assert E.valid_distinct(hf[0], len(fixed)) and E.valid_distinct(ours[0], len(fixed))
    agree = E.same_topk(ours, hf)
    assert agree["same items, same order"] == 1.0 and agree["scores equal (atol)"]


def test_hf_returns_valid_distinct_items_on_codes_of_different_lengths(tables):
    varied, _ = tables
    model = E.t5_model(_s2(), varied, seed=1)
    hist = torch.from_numpy(np.random.default_rng(3).integers(0, len(varied), size=(4, 6)))
    for search in (E.HFSearch("sdpa", "tensor", True, 4), E.HFSearch("eager", "list", False, 4)):
        items, scores = E.hf_generate(model, varied, hist, beam=10, topk=5, search=search)
        assert E.valid_distinct(items, len(varied)) and np.isfinite(scores).all()


def test_hf_grid_times_every_configuration_on_valid_items(tables):
    varied, _ = tables
    torch.manual_seed(0)
    ours = {"codes only": UNGER(varied, 8, _s2(), max_hist=6).eval(),
            "item tables": UNGER(varied, 8, _s2(**ROW_J), max_hist=6).eval()}
    model = E.t5_model(_s2(), varied, seed=1)
    hist = np.random.default_rng(4).integers(0, len(varied), size=(6, 6))
    searches = (E.USUAL, E.HFSearch("sdpa", "tensor", False, 2))
    g = E.hf_grid(ours, varied, model, hist, beams=(5,), topk=5, searches=searches, users_n=6, repeats=1)
    ours_rows = [(5, f"ours ({n}), batch {b}") for n in ours for b in (2, 256)]  # every batch size the searches use
    assert list(g.index) == ours_rows + [(5, s.name) for s in searches]
    assert g["valid, distinct items"].all() and g.loc[ours_rows[:2], "x ours"].min() == 1
    assert list(g["model"]) == ["codes only"] * 2 + ["item tables"] * 2 + ["T5"] * 2
    s = E.hf_summary(g)
    assert list(s.index) == [(5, "codes only"), (5, "item tables")]
    for n in ours:
        mine = g[g["model"] == n]["ms per user"].min()
        assert s.loc[(5, n), "ours (ms per user)"] == mine
        assert s.loc[(5, n), "HF best / ours"] == pytest.approx(g[g["model"] == "T5"]["ms per user"].min() / mine)


def test_bad_input_is_named(tables, t5):
    _, fixed = tables
    with pytest.raises(E.EfficiencyError, match="cannot return the top 5"):
        E.Timing(beams=(3, 20), topk=5)
    with pytest.raises(E.EfficiencyError, match="positive"):
        E.Timing(users=0)
    with pytest.raises(config.ConfigError, match="unknown kind of code 'triple'"):
        E.code_config(config.profile("smoke"), "triple")
    with pytest.raises(E.EfficiencyError, match="needs a beam of at least 6"):
        E.hf_generate(t5, fixed, torch.zeros(1, 6, dtype=torch.long), beam=4, topk=6)
    with pytest.raises(E.EfficiencyError, match="attn eager|sdpa"):
        E.HFSearch("flash")
    with pytest.raises(E.EfficiencyError, match="no histories"):
        E.users(np.zeros((0, 6), np.int64), 3)


def previous_beam_search(model, hist, table, beam):
    """ungerlib.model.beam.beam_search as it was before the in-place candidates (commit ac009fe): the
    oracle that the optimised search must equal bit for bit."""
    B = hist.shape[0]
    node_item = torch.from_numpy(table.node_item)
    st, logits = model.decode_start(hist)
    score = torch.zeros(B, 1, dtype=torch.float64)
    items, scores = [[] for _ in range(B)], [[] for _ in range(B)]
    for _ in range(table.max_len):
        W = score.shape[1]
        logp = torch.log_softmax(logits.double(), -1).view(B, W, -1)
        child = model.next_node[st.node].view(B, W, -1)
        cand = torch.where(child >= 0, score[..., None] + logp, -torch.inf).view(B, -1)
        new_score, flat = cand.topk(min(beam, cand.shape[1]), dim=1)
        parent, tok = flat // table.K, flat % table.K
        new_node = child.view(B, -1).gather(1, flat)
        ok = torch.isfinite(new_score)
        leaf = ok & (node_item[new_node.clamp(min=0)] >= 0)
        for b in torch.nonzero(leaf.any(1)).flatten().tolist():
            items[b].append(node_item[new_node[b, leaf[b]]])
            scores[b].append(new_score[b, leaf[b]])
        alive = ok & ~leaf
        if not alive.any():
            break
        score = torch.where(alive, new_score, -torch.inf)
        rows = (torch.arange(B)[:, None] * W + parent).flatten()
        logits = model.decode_step(st, rows, tok.flatten())
    return ([torch.cat(i).numpy() if i else np.zeros(0, np.int64) for i in items],
            [torch.cat(s).numpy() if s else np.zeros(0) for s in scores])


@pytest.mark.parametrize("form", [LITERAL, ROW_J, dict(ROW_J, history_tokens="item")],
                         ids=["codes only", "item tables", "item history"])
@pytest.mark.parametrize("beam", [1, 4, 30])
def test_optimised_beam_is_bit_identical_to_the_previous_one(tables, form, beam):
    from ungerlib.model.beam import beam_search

    varied, _ = tables
    torch.manual_seed(3)
    model = UNGER(varied, 8, _s2(**form), max_hist=6).eval()
    hist = torch.from_numpy(np.random.default_rng(5).integers(-1, len(varied), size=(9, 6)))
    hist[:, -1] = torch.from_numpy(np.random.default_rng(6).integers(len(varied), size=9))
    with torch.no_grad():
        new, old = beam_search(model, hist, varied, beam), previous_beam_search(model, hist, varied, beam)
    for a, b in zip(new[0] + new[1], old[0] + old[1]):
        assert np.array_equal(a, b)  # same items, same order, the same float64 bits
