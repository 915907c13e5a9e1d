"""ungerlib.warm: the plan lists each run the notebooks read once, in dependency order, and the workers
build artefacts that the notebooks' own calls then load without training."""
from __future__ import annotations

import pytest

from ungerlib import config, levers, stage2, warm
from ungerlib.store import artefact_root, config_hash


def test_plan_is_deduplicated_and_in_dependency_order():
    jobs = warm.plan("cpu", ["04", "05", "11"], ["Beauty"])
    assert len({(j.kind, j.outputs) for j in jobs}) == len(jobs)
    assert [j.phase for j in jobs] == sorted(j.phase for j in jobs)
    kinds = {j.kind for j in jobs}
    assert kinds == {"semantic", "inputs", "train", "eval", "baseline", "discrec", "neighbours"}
    # the neighbours decodings read the default model, so they start after every Stage II training
    (nb,) = [j for j in jobs if j.kind == "neighbours"]
    assert nb.phase > max(j.phase for j in jobs if j.kind in ("eval", "train", "discrec"))
    cfg = config.profile("cpu", "Beauty")
    # the adopted row at the full budget is the profile's default run: evaluated once, not trained twice
    adopted = config_hash(config.artefact_key(levers.lever_config(cfg, levers.ADOPTED, levers.FULL), "stage2"))
    assert adopted == config_hash(config.artefact_key(cfg, "stage2"))
    assert not [j for j in jobs if j.kind == "train" and ("stage2", adopted) in j.outputs]
    assert [j for j in jobs if j.kind == "eval" and j.label == "Beauty default"]
    # every lever row at the screening budget is planned on the first data set
    assert len([j for j in jobs if j.label.startswith("Beauty lever ")]) == len(levers.STAGE2_LEVERS)
    # and at the full budget the confirmed rows, the screening's best row on the first data set only
    full = sorted(j.label for j in warm.plan("cpu", ["04"]) if "full-budget" in j.label)
    assert full == sorted([f"{n} full-budget {r[:1]}" for n in ("Beauty", "Sports", "Toys")
                           for r in levers.CONFIRM if r != levers.ADOPTED] + ["Beauty full-budget M"])
    assert len([j for j in jobs if j.kind == "semantic"]) == 1


def test_bad_arguments_are_named():
    with pytest.raises(config.ConfigError, match="unknown notebook"):
        warm.plan("smoke", ["99"])
    assert warm.main(["--profile", "smoke", "--jobs", "0"]) == 1


def test_workers_fill_the_store_and_the_notebook_call_only_loads(monkeypatch):
    jobs = [j for j in warm.plan("smoke", ["04"]) if (j.phase < 2 and "default" in j.label) or j.kind == "semantic"]
    lever_a = [j for j in warm.plan("smoke", ["04"]) if j.label == "synthetic lever A"]
    # Stage I neighbours decodings (phase 3) of lever A's model, which the same call trains (phase 2)
    jobs.append(warm._job("neighbours", lever_a[0].cfg, "synthetic lever A, Stage I neighbours at decoding"))
    alpharec = [j for j in warm.plan("smoke", ["11"]) if j.model == "AlphaRec"]
    assert len(lever_a) == 1 and len(alpharec) == 1
    jobs += alpharec  # a baseline: cached() must find it under the key overall.run uses
    built = warm.warm(jobs + lever_a, n_jobs=2, log=lambda s: None)
    assert all(j.cached() for j in jobs + lever_a)
    assert "synthetic lever A, Stage I neighbours at decoding" in built
    assert set(built) <= {j.label for j in jobs + lever_a}
    assert (artefact_root() / "stage2" / dict(lever_a[0].outputs)["stage2"]).is_dir()

    def no_training(*a, **k):
        raise AssertionError("trained although the store holds the run")

    monkeypatch.setattr(stage2, "train_stage2", no_training)
    _, hist = stage2.run_stage2(lever_a[0].cfg, progress=False)  # what levers.lever_table calls
    assert hist and hist[-1]["epoch"] >= 1


def test_a_failed_run_is_named_and_its_error_raised(smoke):
    from ungerlib.overall import BaselineError

    bad = warm.Job("baseline", (("baseline", "no-such-run"),), smoke, "synthetic NoSuchModel", "NoSuchModel", {})
    lines: list[str] = []
    with pytest.raises(BaselineError, match="unknown rerun baseline"):
        warm.warm([bad], n_jobs=1, log=lines.append)
    assert any("failed: synthetic NoSuchModel" in line for line in lines)
