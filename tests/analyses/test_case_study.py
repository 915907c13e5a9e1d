"""The case study's numbers (ungerlib.analyses.case_study) against hand counts, and a planted topic
structure recovered by a semantic-only code."""
import numpy as np
import pytest

from ungerlib.analyses import case_study
from ungerlib.model.codes import CodeTable


def _items(cats):
    return [{"title": f"item {i}", "categories": [["Root", c]]} for i, c in enumerate(cats)]


def test_coherence_counts_pairs_by_hand():
    # first codes: {0, 1, 2} share 0, {3, 4} share 1; categories a a b | b b
    table = CodeTable([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], K=3)
    training = [np.array([0, 1]), np.array([3, 2])]  # pairs (0, 1) and (2, 3) occur together
    c = case_study.coherence(table, _items(["a", "a", "b", "b", "b"]), training)
    assert c["pairs sharing the first code"] == 3 + 1
    assert c["same category, shared first code"] == pytest.approx(2 / 4)  # (0, 1) and (3, 4)
    assert c["same category, any pair"] == pytest.approx((1 + 3) / 10)
    assert c["co-occur, shared first code"] == pytest.approx(1 / 4)  # only (0, 1); (2, 3) crosses codes
    assert c["co-occur, any pair"] == pytest.approx(2 / 10)


def test_a_semantic_only_code_groups_the_planted_topics(smoke):
    from ungerlib.model import codes, data

    ds, _ = data.get_splits(smoke)
    training = [s[:-2] for s in ds.sequences]
    sem = codes.item_codes(case_study.code_config(smoke, "semantic-only"))
    c = case_study.coherence(sem, ds.items, training)
    # synthetic items carry their topic (the semantic ground truth, reflected in their titles)
    assert c["same category, shared first code"] > 2 * c["same category, any pair"]
    groups = case_study.first_level_groups(sem, ds.items, training)
    assert groups.index.get_level_values(0).nunique() == 3 and (groups["items under it"] >= 5).all()


def test_unknown_code_is_named(smoke):
    from ungerlib.infra.config import ConfigError

    with pytest.raises(ConfigError, match="unknown code 'mixed'"):
        case_study.code_config(smoke, "mixed")
