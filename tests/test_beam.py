"""The fast beam search (batched, cached) against a plain per-user reference and brute force."""
import numpy as np
import pytest
import torch

from ungerlib import codes, config
from ungerlib.beam import beam_search, recommend
from ungerlib.stage2 import UNGER


def reference_beam(model, hist: np.ndarray, table, beam: int) -> tuple[list[int], list[float]]:
    """Obviously right: no cache, recompute the whole prefix for every beam at every step."""
    mem, mask = model.encode(torch.from_numpy(hist[None]))
    live, done = [((), 0.0, 0)], []
    for level in range(table.max_len):
        cands = []
        for toks, score, node in live:
            x = model.dec_tok.weight[model.BOS][None, None] + model.dec_pos[0]
            if toks:
                t = torch.tensor([toks])
                x = torch.cat([x, model.embed_codes(t, 0) + model.dec_pos[1:len(toks) + 1]], 1)
            logp = torch.log_softmax(model.logits(model.decode(x, mem, mask)[:, -1], level).double(), -1)[0]
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
def setup():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(size=(40, 8)), rng.normal(size=(20, 8)) * 0.01 + 3])  # uneven -> mixed lengths
    table = codes.hierarchical_kmeans(emb, K=4, seed=0)
    assert len(set(table.lengths.tolist())) > 1, "want variable-length codes"
    s2 = config.profile("smoke").stage2
    model = UNGER(table.padded(), table.K, 8, s2, max_hist=6).eval()
    hist = rng.integers(-1, len(table), size=(5, 6))
    hist[:, -1] = rng.integers(len(table), size=5)
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
