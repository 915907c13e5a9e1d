"""ungerlib.prior: logit adjustment over the code trie."""
import numpy as np
import pytest
import torch

from ungerlib import config, prior
from ungerlib.beam import recommend
from ungerlib.stage2 import UNGER


def test_log_prior_is_a_distribution_over_each_parents_children(small_unger):
    table, _, _, _ = small_unger
    counts = np.arange(len(table)) % 7
    lp = prior.node_log_prior(table, counts)
    assert lp[0] == 0 and np.isfinite(lp).all()
    for parent in np.flatnonzero((table.next_node >= 0).any(1)):
        kids = table.next_node[parent][table.next_node[parent] >= 0]
        assert np.exp(lp[kids]).sum() == pytest.approx(1.0)
    # a leaf's prior follows its item's count among its siblings
    item = int(np.argmax(counts))
    leaf = np.flatnonzero(table.node_item == item)[0]
    parent = np.flatnonzero((table.next_node == leaf).any(1))[0]
    kids = table.next_node[parent][table.next_node[parent] >= 0]
    assert lp[leaf] == lp[kids].max()


def test_adjustment_shifts_each_childs_logit_and_demotes_a_popular_item(small_unger):
    table, model, hist, _ = small_unger
    counts = np.ones(len(table))
    with torch.no_grad():
        plain, _ = recommend(model, hist, table, beam=len(table), topk=len(table))
    top = np.bincount(plain[:, 0], minlength=len(table)).argmax()  # the item the model ranks first most often
    counts[top] = 1000.0
    lp = prior.node_log_prior(table, counts)
    same = prior.adjusted(model, lp, 0.0)
    shifted = prior.adjusted(model, lp, 1.0)
    h = torch.randn(3, model.d)
    node = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        a, b = model.logits(h, node, 0), shifted.logits(h, node, 0)
    kids = torch.from_numpy(table.next_node[0][table.next_node[0] >= 0])
    toks = torch.from_numpy(np.flatnonzero(table.next_node[0] >= 0))
    assert torch.allclose(b[:, toks] - a[:, toks], -torch.as_tensor(lp, dtype=torch.float32)[kids].expand(3, -1), atol=1e-5)
    with torch.no_grad():
        r0, _ = recommend(same, hist, table, beam=len(table), topk=len(table))
        r1, _ = recommend(shifted, hist, table, beam=len(table), topk=len(table))
    assert np.array_equal(r0, plain)  # tau = 0 is the model itself
    rank = lambda r: np.argmax(r == top, axis=1).mean()
    assert rank(r1) > rank(plain) + 1  # the popular item moves down
    assert (np.sort(r1, axis=1) == np.arange(len(table))).all()  # still every valid item exactly once
    assert torch.equal(model.node_bias, model.node_bias)  # the original is untouched
    assert not torch.equal(model.node_bias, shifted.node_bias)


def test_bad_input_is_named(small_unger):
    table, model, _, _ = small_unger
    with pytest.raises(ValueError, match="one per item"):
        prior.node_log_prior(table, np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        prior.node_log_prior(table, -np.ones(len(table)))
    with pytest.raises(ValueError, match="alpha must be positive"):
        prior.node_log_prior(table, np.ones(len(table)), alpha=0)
    lp = prior.node_log_prior(table, np.ones(len(table)))
    with pytest.raises(ValueError, match="tau must be non-negative"):
        prior.adjusted(model, lp, -1.0)
    with pytest.raises(ValueError, match="trie nodes"):
        prior.adjusted(model, lp[:-1], 1.0)
    level = UNGER(table, 8, config.from_dict(config.Stage2Config, {**config.to_dict(config.profile("smoke").stage2),
                                                                   "decoder_tokens": "level"}), max_hist=6)
    with pytest.raises(ValueError, match="per-node tokens"):
        prior.adjusted(level, lp, 1.0)
