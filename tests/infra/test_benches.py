"""The Stage II benchmarks run, and their built-in checks hold, at tiny sizes.

The benches time things (speed targets live there, not here); what is tested is that they still run
against the current API and that the equalities they print are true: the library's beam equals the
per-user reference and the old gathered scoring, and trimming a batch does not change its loss.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_bench_beam_agrees_with_the_reference_and_the_old_scoring():
    out = run_bench("bench_beam.py", "--users", "16", "--beams", "5", "--ref-users", "3")
    assert "decoder node, history both, valid children True" in out  # the profile's default model
    same, users = map(int, re.search(r"identical for (\d+)/(\d+) users", out).groups())
    assert users == 16 and same >= users - 1  # at most one near-tie may swap two items
    assert "same as reference: True" in out


def test_bench_stage2_epoch_trimming_keeps_the_loss():
    out = run_bench("bench_stage2_epoch.py", "--dataset", "synthetic", "--batches", "2", "--users", "20",
                    "--threads", "1", "--set", "decoder_tokens=level")
    worst = float(re.search(r"over 10 fixed batches = ([0-9.e+-]+)", out).group(1))
    assert worst < 1e-4
    assert "decoder level" in out  # --set takes plain values, as the pipeline's does


def test_the_gpu_check_runs_every_section_and_writes_one_json(tmp_path):
    """bench/gpu_check.sh's script, in its CPU dry run: every section at toy sizes, one JSON file."""
    import json

    out = tmp_path / "check.json"
    run_bench("gpu_check.py", "--device", "cpu", "--dry-run", "--out", str(out))
    res = json.loads(out.read_text())
    assert res["ok"] and res["skipped"] == [] and res["machine"]["device"] == "cpu"
    assert list(res["sections"]) == ["smoke", "beam", "beauty", "smoke_bf16"]
    for name in ("smoke", "beauty", "smoke_bf16"):
        sec = res["sections"][name]
        assert all(sec[f"{s}_s"] >= 0 for s in ("semantic", "stage1", "codes", "stage2", "eval"))
        assert all(0 <= sec["test_all"][m] <= 1 for m in ("recall@10", "ndcg@10"))
    assert res["sections"]["smoke_bf16"]["precision"] == {"stage1": "fp32", "stage2": "fp32"}  # auto on a CPU
    assert res["smoke_bf16_minus_fp32"] == {m: 0.0 for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}
    beauty = res["sections"]["beauty"]
    assert beauty["full_profile_estimate_s"] >= beauty["semantic_s"] + beauty["stage1_s"] + beauty["stage2_s"]
    assert res["sections"]["beam"]["beams"]["5"]["same_as_reference"]
    assert "gpu_check.py --device cuda" in (BENCH / "gpu_check.sh").read_text()


def test_the_gpu_check_names_what_its_time_budget_skipped(tmp_path):
    import json

    out = tmp_path / "check.json"
    res = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--dry-run",
                          "--budget-s", "0", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 1
    assert json.loads(out.read_text())["skipped"] == ["smoke", "beam", "beauty", "smoke_bf16"]


def test_bench_flops_counts_both_stages_and_the_encoding():
    """docs/SCALE.md's FLOP counts come from this bench (there on Beauty; here on the synthetic set)."""
    out = run_bench("bench_flops.py", "--dataset", "synthetic", "--batches", "1")
    gflop = {s: float(re.search(rf"{s}: ([0-9.]+) GFLOP per step", out).group(1)) for s in ("stage1", "stage2")}
    assert gflop["stage1"] > 1 and gflop["stage2"] > 1  # the paper profile's models, batch 256
    assert re.search(r"encoding: \d+ tokens, [0-9.]+ PFLOP", out)


def test_bench_hf_generate_times_every_configuration_on_valid_lists():
    out = run_bench("bench_hf_generate.py", "--profile", "smoke", "--dataset", "synthetic", "--users", "6",
                    "--beams", "4", "--topk", "3", "--repeats", "1", "--threads", "1")
    assert "every list valid and distinct: True" in out
    assert "HF best / ours" in out and "eager" in out and "sdpa" in out  # both attention implementations
