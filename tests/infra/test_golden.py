"""Artefact identity: every kind's numbers match its golden fingerprint at its current version, and a
planted change to a computation fails the check until the kind's version is bumped (ungerlib.golden)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ungerlib.infra import artefacts, golden


@pytest.fixture(scope="module")
def now():
    return golden.compute()


def test_every_registered_kind_has_a_fingerprint():
    assert set(golden.FINGERPRINTS) == set(artefacts.KINDS)


def test_every_kind_matches_its_golden_fingerprint(now):
    """Fails when a change moved some kind's numbers without a version bump, or when a version was bumped
    and the golden copy not updated (the message says which and what to run)."""
    assert golden.compare(now, golden.load()) == []


def test_thread_count_noise_stays_far_inside_the_tolerance():
    """Two threads sum floats in another order than one: a real source of machine-to-machine noise."""
    one = golden.compute(["stage2", "eval", "eval_neighbours"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = golden.compute(["stage2", "eval", "eval_neighbours"])
    finally:
        torch.set_num_threads(threads)
    assert golden.compare(two, one) == []


def test_a_planted_change_fails_until_the_version_is_bumped_and_the_golden_copy_updated(monkeypatch, now):
    from ungerlib.model import stage1

    real = stage1.DIN.align_loss
    monkeypatch.setattr(stage1.DIN, "align_loss", lambda self, *a, **k: 1.05 * real(self, *a, **k))
    planted = golden.compute(["stage1"])
    (problem,) = golden.compare(planted, {"stage1": now["stage1"]})
    assert problem.startswith("stage1: numbers moved at an unchanged version") and "bump the version" in problem
    # a bump alone is not enough: the golden copy must be remade (and committed) with it
    monkeypatch.setitem(artefacts.KINDS, "stage1", dataclasses.replace(artefacts.KINDS["stage1"], version=2))
    bumped = golden.compute(["stage1"])
    (problem,) = golden.compare(bumped, {"stage1": now["stage1"]})
    assert "golden copy was made at" in problem and "--update" in problem
    assert golden.compare(bumped, bumped) == []


def test_a_planted_change_to_decoding_is_caught(monkeypatch, now):
    from ungerlib.model.stage2 import UNGER

    real = UNGER.logits
    monkeypatch.setattr(UNGER, "logits", lambda self, h, node, level: real(self, h, node, level) * 1.01)
    (problem,) = golden.compare(golden.compute(["eval"]), {"eval": now["eval"]})
    assert problem.startswith("eval: numbers moved")
