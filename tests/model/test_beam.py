"""The fast beam search (batched, cached) against a plain per-user reference and brute force, for
every decoder variant."""
import numpy as np
import pytest
import torch

from ungerlib.model import codes
from ungerlib.infra import config
from ungerlib.model.beam import beam_search, recommend, recommend_both
from ungerlib.model.stage2 import UNGER

VARIANTS = {
    "level": {},
    "level, valid children": {"valid_children": True},
    "node, item history": {"decoder_tokens": "node", "valid_children": True, "history_tokens": "item"},
    "node, both": {"decoder_tokens": "node", "valid_children": True, "history_tokens": "both"},
    "level, both": {"history_tokens": "both"},
}


def reference_beam(model, hist: np.ndarray, table, beam: int) -> tuple[list[int], list[float]]:
    """Obviously right: one beam at a time, each prefix decoded again from <BOS> for every step."""

    def next_logp(toks: tuple[int, ...]) -> torch.Tensor:
        st, logits = model.decode_start(torch.from_numpy(hist[None]))
        for t in toks:
            logits = model.decode_step(st, torch.zeros(1, dtype=torch.long), torch.tensor([t]))
        return torch.log_softmax(logits.double(), -1)[0]

    live, done = [((), 0.0, 0)], []
    for _ in range(table.max_len):
        cands = []
        for toks, score, node in live:
            logp = next_logp(toks)
            for k in range(table.K):
                child = table.next_node[node, k]
                if child >= 0:
                    cands.append((toks + (k,), score + logp[k].item(), int(child)))
        cands.sort(key=lambda c: -c[1])
        live = []
        for toks, score, node in cands[:beam]:
            (done if table.node_item[node] >= 0 else live).append((toks, score, node))
        if not live:
            break
    done.sort(key=lambda c: -c[1])
    return [int(table.node_item[n]) for _, _, n in done], [s for _, s, _ in done]


def teacher_forced_logprob(model, hist: np.ndarray, table) -> np.ndarray:
    """Exact log p(code of item i | history) for every item, by teacher forcing."""
    n = len(table)
    logits, code, _ = model(torch.from_numpy(np.repeat(hist[None], n, 0)), torch.arange(n))
    lp = torch.log_softmax(logits.double(), -1).gather(2, code.clamp(min=0)[..., None])[..., 0]
    return (lp * (code >= 0)).sum(1).numpy()


@pytest.fixture(scope="module")
def base():
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(size=(40, 8)), rng.normal(size=(20, 8)) * 0.01 + 3])  # uneven -> mixed lengths
    table = codes.hierarchical_kmeans(emb, K=4, seed=0)
    assert len(set(table.lengths.tolist())) > 1, "want variable-length codes"
    hist = rng.integers(-1, len(table), size=(5, 6))
    hist[:, -1] = rng.integers(len(table), size=5)
    return table, emb.astype(np.float32), hist


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def setup(request, base):
    table, emb, hist = base
    torch.manual_seed(0)
    s2 = config.profile("smoke").stage2
    s2 = config.from_dict(config.Stage2Config, {**config.to_dict(s2), **VARIANTS[request.param]})
    model = UNGER(table, emb.shape[1], s2, max_hist=6).eval()
    return model, table, hist


@pytest.mark.parametrize("beam", [1, 3, 10])
def test_fast_beam_equals_reference(setup, beam):
    model, table, hist = setup
    with torch.no_grad():
        items, scores = beam_search(model, torch.from_numpy(hist), table, beam)
        for r in range(len(hist)):
            ref_items, ref_scores = reference_beam(model, hist[r], table, beam)
            order = np.argsort(-scores[r], kind="stable")
            assert items[r][order].tolist() == ref_items
            assert np.allclose(scores[r][order], ref_scores, atol=1e-9)


def test_wide_beam_returns_every_item_ranked_by_exact_logprob(setup):
    model, table, hist = setup
    with torch.no_grad():
        ranked, scores = recommend(model, hist, table, beam=len(table) * 4, topk=len(table))
        for r in range(len(hist)):
            exact = teacher_forced_logprob(model, hist[r], table)
            assert sorted(ranked[r].tolist()) == list(range(len(table)))  # every item once, all valid
            assert np.allclose(scores[r], exact[ranked[r]], atol=1e-6)
            assert np.all(np.diff(scores[r]) <= 1e-12)
            if model.s2.valid_children:  # a proper distribution over the items
                assert np.isclose(np.exp(exact).sum(), 1.0, atol=1e-6)


def test_no_duplicates_valid_items_and_history_exclusion(setup):
    model, table, hist = setup
    with torch.no_grad():
        ranked, _ = recommend(model, hist, table, beam=20, topk=10)
        excl, _ = recommend(model, hist, table, beam=20, topk=10, exclude_history=True)
    for r in range(len(hist)):
        got = ranked[r][ranked[r] >= 0]
        assert len(set(got.tolist())) == len(got) and got.max() < len(table)
        assert not np.isin(excl[r][excl[r] >= 0], hist[r]).any()
        # exclusion only removes history items and moves later ones up
        kept = [i for i in ranked[r] if i >= 0 and i not in hist[r]]
        assert excl[r][:len(kept)].tolist() == kept
    with pytest.raises(ValueError, match="beam and topk must be positive"):
        recommend(model, hist, table, beam=0)


def test_exclusion_drops_the_whole_history_not_just_the_window(setup):
    """An item older than the model's input window is still excluded when the caller says so."""
    model, table, hist = setup
    with torch.no_grad():
        ranked, _ = recommend(model, hist, table, beam=30, topk=10)
        old = ranked[:, :1].copy()  # pretend each user's current top item was bought long ago
        seen = np.concatenate([hist, old], 1)
        (_, _), (excl, _) = recommend_both(model, hist, table, beam=30, topk=10, exclude=seen)
    for r in range(len(hist)):
        assert old[r, 0] not in excl[r]


def test_results_do_not_depend_on_batching(setup):
    model, table, hist = setup
    with torch.no_grad():
        a, sa = recommend(model, hist, table, beam=10, topk=10, batch_size=2)
        b, sb = recommend(model, hist, table, beam=10, topk=10, batch_size=64)
    assert np.array_equal(a, b) and np.allclose(sa, sb, atol=1e-9)


def test_inference_child_scores_equal_the_training_path(setup):
    """Under no_grad the per-node decoder scores children one GEMM per distinct parent (the beam's
    path); with grad, one dot product per (row, child) pair (training's). Same logits, same -inf pattern."""
    model, table, hist = setup
    n = len(table)
    h = torch.from_numpy(np.repeat(hist[:1], n, 0))
    with torch.no_grad():
        fast, code, _ = model(h, torch.arange(n))
    train, _, _ = model(h, torch.arange(n))
    assert torch.equal(torch.isinf(fast), torch.isinf(train))
    ok = torch.isfinite(train)
    assert torch.allclose(fast[ok], train.detach()[ok], atol=1e-5)
    if model.node_tokens:  # and both equal <h, child embedding> + bias, child by child
        assert len(torch.unique(model.path[:, 0])) > 1  # the rows span several parents
        rng = np.random.default_rng(1)
        hs = torch.randn(12, model.d, dtype=torch.float32)
        nodes = torch.from_numpy(rng.choice(np.flatnonzero(table.next_node.max(1) >= 0), 12))
        want = torch.full((12, table.K), -torch.inf)
        for r, v in enumerate(nodes.tolist()):
            for k in np.flatnonzero(table.next_node[v] >= 0):
                c = table.next_node[v, k]
                want[r, k] = hs[r] @ model.node_vectors(torch.tensor(c)).detach() + model.node_bias[c].detach()
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                got = model.logits(hs, nodes, 1).detach()
            assert torch.equal(torch.isinf(got), torch.isinf(want))
            assert torch.allclose(got[torch.isfinite(want)], want[torch.isfinite(want)], atol=1e-5)


def test_code_log_prob_is_the_beam_score_of_each_item(setup):
    """Teacher-forced log-probability of an item's code equals the score the beam gives that item."""
    model, table, hist = setup
    with torch.no_grad():
        items, scores = beam_search(model, torch.from_numpy(hist), table, beam=len(table) * 4)
        for r in range(len(hist)):
            h = torch.from_numpy(np.repeat(hist[r:r + 1], len(items[r]), 0))
            forced = model.code_log_prob(h, torch.from_numpy(items[r])).numpy()
            assert np.allclose(forced, scores[r], atol=1e-6)


def test_code_log_prob_scores_several_items_per_history_as_one_history_per_item(setup):
    """Scoring W items against each of a few histories (each encoded once, its items extra queries
    against its memory) gives what one repeated history per item gives, and reads the right history."""
    model, table, hist = setup
    rng = np.random.default_rng(0)
    W = 5
    items = torch.from_numpy(rng.integers(len(table), size=len(hist) * W))
    with torch.no_grad():
        grouped = model.code_log_prob(torch.from_numpy(hist), items)
        each = model.code_log_prob(torch.from_numpy(np.repeat(hist, W, 0)), items)
        shifted = model.code_log_prob(torch.from_numpy(np.roll(hist, 1, 0)), items)
    assert torch.allclose(grouped, each, rtol=0, atol=1e-5)
    assert not torch.allclose(grouped, shifted, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        model.code_log_prob(torch.from_numpy(hist), items[:-1])


@pytest.mark.parametrize("beam", [3, 30])
def test_rankings_equal_a_per_user_sort_of_the_finished_beams(setup, beam):
    """recommend_both sorts and filters every user's finished beams at once; the oracle does it user by
    user (a stable sort by log-prob, then drop the excluded items): the same items and the same bits."""
    model, table, hist = setup
    hist = np.where(hist >= 0, hist, 0)  # full windows: recommend neither trims nor reorders the batch
    seen = np.concatenate([hist, np.arange(len(hist))[:, None] % len(table)], 1)
    with torch.no_grad():
        (ia, sa), (ie, se) = recommend_both(model, hist, table, beam=beam, topk=7, exclude=seen)
        items, scores = beam_search(model, torch.from_numpy(hist), table, beam)
    for r in range(len(hist)):
        order = np.argsort(-scores[r], kind="stable")
        i, s = items[r][order], scores[r][order]
        keep = ~np.isin(i, seen[r])
        for got_i, got_s, (want_i, want_s) in ((ia[r], sa[r], (i, s)), (ie[r], se[r], (i[keep], s[keep]))):
            n = min(7, len(want_i))
            assert got_i[:n].tolist() == want_i[:n].tolist() and np.array_equal(got_s[:n], want_s[:n])
            assert (got_i[n:] == -1).all() and np.isneginf(got_s[n:]).all()
