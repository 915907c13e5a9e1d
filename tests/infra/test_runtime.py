"""The CPU thread policy (measured in bench/bench_threads.py) and its knob, UNGER_THREADS."""
import os
import subprocess
import sys

import pytest

from ungerlib.infra import config, runtime


@pytest.mark.parametrize("env, cpus, want", [
    ({}, 2, None), ({}, 8, None),  # unset: torch's default, one per core (with sleeping idle threads)
    ({"UNGER_THREADS": "3"}, 2, 3), ({"UNGER_THREADS": "all"}, 8, None), ({"UNGER_THREADS": "0"}, 8, None),
    ({"OMP_NUM_THREADS": "2"}, 8, 2),  # the user's own OpenMP setting is kept
    ({"UNGER_THREADS": "1", "OMP_NUM_THREADS": "4"}, 8, 1),
])
def test_thread_policy(monkeypatch, env, cpus, want):
    for k in ("UNGER_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert runtime.thread_policy() == want
    kernel = runtime.thread_env()
    assert kernel["OMP_WAIT_POLICY"] == "PASSIVE"
    assert kernel.get("OMP_NUM_THREADS") == (str(want) if want else None)


def test_bad_unger_threads_is_a_config_error(monkeypatch):
    monkeypatch.setenv("UNGER_THREADS", "two")
    with pytest.raises(config.ConfigError, match="UNGER_THREADS must be a number of threads or 'all', got 'two'"):
        runtime.thread_policy()


def test_import_ungerlib_before_torch_applies_the_policy():
    """In a fresh process: the policy reaches torch through the environment (so the wait policy works)."""
    code = ("import os, ungerlib, torch; print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["UNGER_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "PASSIVE"]


def test_notebook_kernels_get_the_policy(monkeypatch):
    from ungerlib.infra import reproduce

    monkeypatch.setenv("UNGER_THREADS", "1")
    monkeypatch.delenv("UNGER_PROGRESS", raising=False)
    with reproduce.kernel_environment():
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["UNGER_PROGRESS"] == "text"
    assert "UNGER_PROGRESS" not in os.environ  # restored afterwards


def test_import_ungerlib_flushes_subnormal_floats_to_zero():
    """Weight decay leaves weights in the subnormal range, where the CPU's float math is two orders of
    magnitude slower (bench/bench_denormals.py); after ``import ungerlib`` torch reads and writes them
    as zero, in a fresh process and in the threads torch starts there."""
    code = ("import ungerlib, torch; torch.set_num_threads(2); "
            "x = torch.full((64, 64), 1e-39); "
            "print(float((x * 1.0).abs().max()), float((x @ torch.eye(64)).abs().max()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    supported = subprocess.run([sys.executable, "-c", "import torch; print(torch.set_flush_denormal(True))"],
                               capture_output=True, text=True, check=True).stdout.strip() == "True"
    if not supported:
        pytest.skip("this CPU has no flush-to-zero mode")
    assert out == ["0.0", "0.0"]


def test_precision_is_bf16_only_on_a_gpu_with_bf16_unless_asked(monkeypatch):
    import torch

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert [runtime.precision(p, cpu) for p in ("auto", "fp32", "bf16")] == ["fp32", "fp32", "bf16"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert [runtime.precision(p, gpu) for p in ("auto", "fp32", "bf16")] == ["bf16", "fp32", "bf16"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    assert runtime.precision("auto", gpu) == "fp32"
    with pytest.raises(config.ConfigError, match=r"precision 'bf16' needs a GPU with bf16 .*Tesla V100 has none"):
        runtime.precision("bf16", gpu)
    with runtime.autocast("auto", cpu):  # every CPU run stays in float32
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    with runtime.autocast("bf16", cpu):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


def test_only_rank_0_prints_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    runtime.log("from rank 1")
    monkeypatch.setenv("RANK", "0")
    runtime.log("from rank 0")
    assert capsys.readouterr().err == "from rank 0\n"
