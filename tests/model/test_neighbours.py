"""ungerlib.model.neighbours: the Stage I cosine to the last item added to each child's score at decoding."""
import numpy as np
import pytest
import torch

from ungerlib.model import neighbours
from ungerlib.model.beam import recommend


def test_each_childs_score_moves_by_lambda_times_the_cosine(small_unger):
    """Eq. of the module docstring, checked against a cosine computed here from the raw embeddings."""
    table, model, hist, emb = small_unger
    dec = neighbours.NeighbourDecoder(model, emb, (2.0, 3.0))
    h = torch.from_numpy(hist[:5])
    with torch.no_grad():
        st0, base = model.decode_start(h)
        st1, boosted = dec.decode_start(h)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    last = hist[:5, -1]
    for tok in np.flatnonzero(table.next_node[0] >= 0):
        node = table.next_node[0, tok]
        members = np.flatnonzero(model.path[:, 0].numpy() == node)
        v = unit[members].sum(0)
        cos = unit[last] @ (v / np.linalg.norm(v))
        assert np.allclose((boosted - base)[:, tok].numpy(), 2.0 * cos, atol=1e-5)
    # one level down: a leaf's boost is 3 x its item's cosine, the user's last item gets none
    tok = boosted.argmax(1)
    with torch.no_grad():
        nxt0 = model.decode_step(st0, torch.arange(5), tok)
        nxt1 = dec.decode_step(st1, torch.arange(5), tok)
    path = model.path.numpy()
    for r in range(5):
        node = table.next_node[0, tok[r]]
        for t in np.flatnonzero(table.next_node[node] >= 0):
            child = table.next_node[node, t]
            v = unit[(path == child).any(1)].sum(0)  # a leaf: its item's own vector
            want = 0.0 if table.node_item[child] == last[r] else 3.0 * unit[last[r]] @ (v / np.linalg.norm(v))
            assert (nxt1 - nxt0)[r, t].item() == pytest.approx(want, abs=1e-5)


def test_zero_lambda_is_the_model_and_a_large_one_recovers_the_nearest_neighbour(small_unger):
    table, model, hist, emb = small_unger
    n = len(table)
    with torch.no_grad():
        plain, _ = recommend(model, hist, table, beam=n, topk=n)
        same, _ = recommend(neighbours.NeighbourDecoder(model, emb, (0.0, 0.0)), hist, table, beam=n, topk=n)
        knn, _ = recommend(neighbours.NeighbourDecoder(model, emb, (1e4, 1e4)), hist, table, beam=n, topk=n,
                           exclude_history=True, exclude=hist[:, -1:])
    assert np.array_equal(same, plain)
    for u in range(len(hist)):  # every item but the last one, exactly once
        assert sorted(knn[u, :n - 1]) == sorted(set(range(n)) - {hist[u, -1]}) and knn[u, n - 1] == -1
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = unit[hist[:, -1]] @ unit.T
    sim[np.arange(len(hist)), hist[:, -1]] = -np.inf
    # the planted signal: with the cosine dominating, the first item is the last item's nearest neighbour
    # among its siblings (the trie is searched top-down), and it is the kNN's first item for most users
    path, lengths = model.path.numpy(), table.lengths
    for u in range(len(hist)):
        item = knn[u, 0]
        parent = path[item, lengths[item] - 2]
        siblings = np.flatnonzero(path[np.arange(n), lengths - 2] == parent)
        assert sim[u, item] == sim[u, siblings].max()
    assert (knn[:, 0] == sim.argmax(1)).mean() > 0.3  # 0.4 here; a random first item: 1 in 59
    assert (plain[:, 0] == sim.argmax(1)).mean() < (knn[:, 0] == sim.argmax(1)).mean()


def test_bad_input_is_named(small_unger):
    table, model, _, emb = small_unger
    with pytest.raises(ValueError, match="non-negative"):
        neighbours.NeighbourDecoder(model, emb, (-1.0, 2.0))
    with pytest.raises(ValueError, match="finite"):
        neighbours.NeighbourDecoder(model, emb, (float("nan"), 2.0))
    with pytest.raises(ValueError, match="one Stage I embedding per item"):
        neighbours.NeighbourDecoder(model, emb[:-1], (1.0, 1.0))
    bad = emb.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        neighbours.NeighbourDecoder(model, bad, (1.0, 1.0))
    with pytest.raises(SystemExit):
        neighbours.main(["--grid", "2"])
