"""ungerlib.infra.distributed: a global batch split into shares that add up to it, and a machine with
fewer GPUs than torchrun processes named (the 2-process training test: tests/model/test_train.py)."""
import numpy as np
import pytest
import torch

from ungerlib.infra import config, distributed


def test_a_batch_is_split_into_shares_that_add_up_to_it(monkeypatch):
    idx = np.arange(10, 17)  # 7 examples on 3 ranks
    parts = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "_GROUP", distributed.Group(rank, 3))
        parts.append(distributed.part(idx))
    assert np.concatenate([p.rows for p in parts]).tolist() == idx.tolist()
    assert sum(p.share(len(p.rows), len(idx)) for p in parts) == pytest.approx(1.0)
    assert sum(p.replicated for p in parts) == pytest.approx(1.0)
    small = []  # fewer examples than ranks: every rank computes the whole batch, rank 0 counts it
    for rank in range(3):
        monkeypatch.setattr(distributed, "_GROUP", distributed.Group(rank, 3))
        small.append(distributed.part(idx[:2]))
    assert all(p.rows.tolist() == [10, 11] for p in small)
    assert [p.share(2, 2) for p in small] == [p.replicated for p in small] == [1.0, 0.0, 0.0]
    with distributed.alone():  # rank 0 building an artefact alone: a world of one
        assert distributed.part(idx).rows.tolist() == idx.tolist() and distributed.current().world == 1


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(config.ConfigError, match=r"torchrun started process 1 on this machine but it has 1 GPU\(s\); "
                                                 r"use --nproc_per_node 1"):
        distributed.backend(1)


def test_without_torchrun_a_process_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed, "_GROUP", None)
    assert distributed.current() == distributed.SINGLE and distributed.is_main()
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    distributed.barrier()  # nothing to wait for
