"""ungerlib.recommend: one user's items in, recommendations out, on the smoke profile."""
import numpy as np
import pytest

import ungerlib
from ungerlib import api
from ungerlib.infra import config
from ungerlib.model import data
from ungerlib.model.beam import recommend as beam_recommend
from ungerlib.model.data import DataError


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("UNGER_ARTEFACTS", str(tmp_path_factory.mktemp("artefacts")))
    cfg = config.profile("smoke").replace(stage1={"epochs": 2}, stage2={"epochs": 2})
    r = api.load(cfg, progress=False)  # trains the chain once (cached artefacts, then kept in memory)
    yield r
    mp.undo()


def test_recommend_matches_the_beam_search_on_a_right_aligned_history(rec):
    cfg = rec.cfg
    items = [5, 17, 42, 99]
    out = ungerlib.recommend(cfg, items, k=10, exclude_seen=False)
    assert list(out.columns) == ["item", "asin", "title", "log_prob"] and len(out) == 10
    assert list(out.index) == list(range(1, 11))
    hist = np.full((1, cfg.data.max_len), data.PAD)
    hist[0, -4:] = items
    ref, scores = beam_recommend(rec.model, hist, rec.table, beam=cfg.eval.beam, topk=10)
    assert list(out["item"]) == list(ref[0]) and np.allclose(out["log_prob"], scores[0])
    assert (np.diff(out["log_prob"]) <= 1e-9).all()  # best first
    assert list(out["asin"]) == [rec.items[i]["asin"] for i in out["item"]]


def test_seen_items_are_excluded_and_long_histories_keep_the_last_max_len(rec):
    cfg = rec.cfg
    top = list(ungerlib.recommend(cfg, [5], k=5, exclude_seen=False)["item"])
    out = ungerlib.recommend(cfg, [top[0], 5], k=5)  # the user already has the favourite
    assert top[0] not in set(out["item"]) and 5 not in set(out["item"]) and len(out) == 5
    long = list(range(30))
    a = ungerlib.recommend(cfg, long, k=8, exclude_seen=False)
    b = ungerlib.recommend(cfg, long[-cfg.data.max_len:], k=8, exclude_seen=False)
    assert list(a["item"]) == list(b["item"])
    c = ungerlib.recommend(cfg, long, k=8)  # excluding: every one of the 30 items is gone
    assert not set(c["item"]) & set(long) and len(c) == 8


def test_asin_ids_and_item_numbers_mix(rec):
    cfg = rec.cfg
    by_number = ungerlib.recommend(cfg, [3, 4], k=5)
    by_asin = ungerlib.recommend(cfg, [rec.items[3]["asin"], 4], k=5)
    assert by_number.equals(by_asin)


@pytest.mark.parametrize("items, k, msg", [
    ([], 10, "non-empty list"),
    ("B00", 10, "non-empty list"),
    ([1, 10_000], 10, r"unknown item 10000: item numbers of synthetic lie in \[0, 240\)"),
    ([1, "NOPE"], 10, r"unknown item 'NOPE' in synthetic"),
    ([1, -1], 10, "unknown item -1"),
    ([1, 2], 0, "k must be a positive integer"),
])
def test_bad_input_is_a_clear_error(rec, items, k, msg):
    with pytest.raises((DataError, config.ConfigError), match=msg):
        ungerlib.recommend(rec.cfg, items, k=k)


def test_unknown_items_fail_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setenv("UNGER_ARTEFACTS", str(tmp_path))
    with pytest.raises(DataError, match="unknown item"):
        ungerlib.recommend(config.profile("smoke").replace(seed=99), [1, 999], k=3)
    assert not (tmp_path / "stage1").exists()  # nothing was trained
