import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ungerlib.model.train import Schedule, fit, lr_factor, shuffled_batches

ROOT = Path(__file__).resolve().parents[2]


def test_fit_does_not_replay_the_initialisation_random_stream():
    """A reseed inside ``fit`` made the first dropout masks reuse the random numbers that had just
    initialised the weights; on the smoke data DIN then reached valid Recall@10 0.07 instead of 0.51.
    ``fit`` must continue torch's generator from where the model's initialisation left it."""
    torch.manual_seed(0)
    init_draw = torch.rand(8)  # what a model initialised right after seeding would have used
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    drawn = []

    def loss_fn(idx, rng):
        drawn.append(torch.rand(8))
        return {"loss": model(torch.ones(len(idx), 4)).pow(2).mean()}

    sched = Schedule(epochs=1, batch_size=4, lr=1e-2, warmup_steps=1, lr_decay="none", weight_decay=0.0,
                     patience=1, clip_norm=0.0)
    fit(model, loss_fn, lambda rng: shuffled_batches(8, 4, rng), lambda: {"m": 0.0}, "m", sched, seed=0,
        progress=False)
    assert not torch.equal(drawn[0], init_draw)


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 10, "cosine", 100) == 0.1 and lr_factor(9, 10, "cosine", 100) == 1.0
    assert abs(lr_factor(99, 10, "cosine", 100) - 0.0003) < 1e-3 and lr_factor(50, 10, "none", 100) == 1.0


def test_bucketed_batches_cover_every_example_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 21, size=1000)
    batches = shuffled_batches(1000, 50, np.random.default_rng(1), lengths, bucket=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    plain = np.mean([np.ptp(lengths[b]) for b in shuffled_batches(1000, 50, np.random.default_rng(1))])
    assert spread < plain / 2


def _tiny_fit(loss, epochs=4, every=1, patience=9, work_dir=None, validate=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    sched = Schedule(epochs=epochs, batch_size=4, lr=1e-2, warmup_steps=0, lr_decay="none", weight_decay=0.0,
                     patience=patience, clip_norm=0.0)
    return fit(model, lambda idx, rng: {"loss": loss(model, idx)}, lambda rng: shuffled_batches(8, 4, rng),
               validate or (lambda: {"m": float(-model.weight.abs().sum())}), "m", sched, seed=0,
               work_dir=work_dir, name="stage2", progress=False, every=every)


def test_a_diverging_loss_stops_with_one_line_naming_the_learning_rate():
    from ungerlib.model.train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"stage2: the training loss is nan at epoch 1, batch 1: training "
                                               r"diverged; lower the learning rate \(stage2.lr = 0.01\)"):
        _tiny_fit(lambda model, idx: model(torch.ones(len(idx), 4)).sum() * float("nan"))


def test_validation_every_few_epochs_and_early_stopping_counts_validations():
    calls = []

    def validate():
        calls.append(1)
        return {"m": 1.0 if len(calls) == 1 else 0.0}  # the first validation stays the best

    res = _tiny_fit(lambda model, idx: model(torch.ones(len(idx), 4)).pow(2).mean(), epochs=20, every=3,
                    patience=2, validate=validate)
    validated = [h["epoch"] for h in res.history if "valid_m" in h]
    assert validated == [3, 6, 9] and res.best_epoch == 3 and len(res.history) == 9


def test_two_gloo_processes_train_like_one_process(tmp_path, monkeypatch):
    """Stage I (through the artefact store) and Stage II (killed after epoch 2 and resumed) on the smoke
    profile, once in one process and once by ``torchrun --nproc_per_node 2`` on CPU with gloo, both with the
    smoke batch of 128 (64 per rank): the same loss curves, validation metrics and final models.

    Tolerances. The runs differ only in float reduction order (each rank sums half a batch, gloo sums the
    two gradients): measured on the development machine, the largest relative difference of any logged loss
    over the three epochs was 5.7e-7 (Stage I: 4e-8), the validation metrics were equal and the final
    weights agreed to 1e-7. Losses must agree to a relative 5e-6, about ten times that noise and seven
    times below the smallest planted mistake: without the loss times the number of ranks (DDP averages
    gradients) Stage I's losses moved by 3.6e-5 and Stage II's by 6e-2; with every part weighted 1/2
    instead of its share of the batch's code tokens, Stage II's by 9e-4; with the in-batch alignment over
    a rank's own part, Stage I's by 0.28. A metric may differ by one validation user of 600 (a near-tie
    that float rounding breaks the other way), below every planted mistake's 0.008 or more."""
    job = Path(__file__).with_name("ddp_job.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNGER_THREADS": "1", "UNGER_ARTEFACTS": str(tmp_path / "ddp")}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(job), str(tmp_path / "ddp" / "out"), "--kill-after", "2"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = subprocess.run([sys.executable, str(job), str(tmp_path / "one" / "out")],
                         env={**env, "UNGER_ARTEFACTS": str(tmp_path / "one")}, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    single, rank0, rank1 = (json.loads((tmp_path / d / f"out.rank{r}.json").read_text())
                            for d, r in (("one", 0), ("ddp", 0), ("ddp", 1)))
    assert (single["world"], rank0["world"], rank0["resumed"]) == (1, 2, True)
    for stage, users in (("stage1", 600), ("stage2", 600)):
        a, b = single[f"{stage}_history"], rank0[f"{stage}_history"]
        assert [h["epoch"] for h in a] == [h["epoch"] for h in b] == [1, 2, 3]
        for ha, hb in zip(a, b):
            losses = [k for k in ha if k.startswith("loss_")]
            metrics = [k for k in ha if k.startswith("valid_") and not k.endswith("_s")]
            assert len(losses) == 2 and len(metrics) == 4
            assert {k: hb[k] for k in losses} == pytest.approx({k: ha[k] for k in losses}, rel=5e-6, abs=0)
            assert {k: hb[k] for k in metrics} == pytest.approx({k: ha[k] for k in metrics}, abs=1 / users)
    assert rank0["stage1_valid"] == pytest.approx(single["stage1_valid"], abs=1 / 600)
    for name in ("stage1_collaborative", "stage2_params"):  # DDP keeps the replicas identical
        assert rank0[name] == rank1[name] == pytest.approx(single[name], rel=1e-5)
    # rank 0 wrote the Stage I artefact once; both ranks read it; no temporary folder was left
    assert rank0["stage1_built"] == rank1["stage1_built"] == "built"
    assert rank0["stage1_folders"] == rank1["stage1_folders"] == single["stage1_folders"]
    assert len(rank0["stage1_folders"]) == 1


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("auto", torch.float32), ("bf16", torch.bfloat16)])
def test_the_loss_and_validation_run_under_the_precision_asked_for(precision, dtype):
    """``auto`` is float32 on a CPU (bf16 on a CUDA GPU with bf16: runtime.precision); ``bf16`` autocasts."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    seen = []

    def loss_fn(idx, rng):
        out = model(torch.ones(len(idx), 4))
        seen.append(out.dtype)
        return {"loss": out.float().pow(2).mean()}

    def validate():
        seen.append(model(torch.ones(1, 4)).dtype)
        return {"m": 0.0}

    sched = Schedule(epochs=1, batch_size=4, lr=1e-2, warmup_steps=0, lr_decay="none", weight_decay=0.0,
                     patience=1, clip_norm=0.0, precision=precision)
    fit(model, loss_fn, lambda rng: shuffled_batches(8, 4, rng), validate, "m", sched, seed=0, progress=False)
    assert seen == [dtype] * 3 and model.weight.dtype == torch.float32  # the weights stay float32
