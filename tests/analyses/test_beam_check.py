"""The beam-against-exact check (ungerlib.analyses.beam_check) on a tiny untrained model."""
import numpy as np

from ungerlib.analyses import beam_check
from ungerlib.model.data import Examples


def _examples(hist: np.ndarray, n_items: int) -> Examples:
    rng = np.random.default_rng(1)
    return Examples(user=np.arange(len(hist)), history=hist, target=rng.integers(n_items, size=len(hist)),
                    seen=hist)


def test_an_exhaustive_beam_agrees_with_exact_scoring_and_a_narrow_one_does_not(small_unger):
    table, model, hist, _ = small_unger
    ex = _examples(hist, len(table))
    wide = beam_check.exact_vs_beam(model, ex, table, beam=beam_check.exhaustive_beam(table), users=40, k=10)
    assert (wide["overlap@10"] == 1.0).all() and (wide["identical lists"] == 1.0).all()
    assert (wide.filter(like="exact - beam") == 0).all().all()
    narrow = beam_check.exact_vs_beam(model, ex, table, beam=2, users=40, k=10)
    assert (narrow["overlap@10"] < 1.0).all() and narrow.loc["all", "users"] == 40


def test_exhaustive_beam_is_the_widest_trie_level(small_unger):
    table = small_unger[0]
    assert beam_check.exhaustive_beam(table) == max(np.bincount(table.node_depth))
    assert beam_check.exhaustive_beam(table) >= table.K
