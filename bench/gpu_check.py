"""The GPU check: what bench/gpu_check.sh runs on one GPU, results in one JSON file (docs/SCALE.md).

    python bench/gpu_check.py --device cuda --out gpu_check.json     # about 7 minutes on one GPU
    python bench/gpu_check.py --device cpu --dry-run --out check.json  # the same steps, tiny, on a CPU

Sections, in this order, each written to the JSON file as soon as it is done (a check cut off by its
time limit keeps what it finished; ``--budget-s`` skips a section that would start after it):

1. ``smoke``: the smoke chain (``python -m ungerlib pipeline --profile smoke``) from an empty artefact
   store, in float32 (``stage1/2.precision=fp32``), asserting that Stage II's model sits on the device
   and, on a GPU, that each training stage allocated GPU memory; per-stage seconds and peak GPU memory.
2. ``beam``: ``bench/bench_beam.py`` on the device (per-parent and gathered scoring, the reference).
3. ``beauty``: the Beauty chain of the cpu profile, with per-stage seconds and peak GPU memory, at
   ``--beauty-epochs`` (default 2 and 2: a timing sample; per-epoch times are extrapolated to the
   profile's 8 and 15 epochs).
4. ``smoke_bf16``: the smoke chain again at ``precision=auto`` (bf16 autocast on a GPU with bf16), and
   its test metrics minus float32's: the metric difference of mixed precision.

``--dry-run`` runs every section at toy sizes (one epoch, the synthetic data set for Beauty, 16 users in
the beam benchmark), so that the script and its JSON are checked where there is no GPU
(``tests/infra/test_benches.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def machine(device: str) -> dict[str, Any]:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "cuda": torch.version.cuda, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), bf16=torch.cuda.is_bf16_supported(),
                   capability=f"{p.major}.{p.minor}")
    return out


def chain(cfg: Any, device: str) -> dict[str, Any]:
    """The pipeline for ``cfg`` from an empty artefact store; asserts the device was used."""
    import torch

    from ungerlib.infra import pipeline, runtime
    from ungerlib.model import stage2

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as store:
        os.environ["UNGER_ARTEFACTS"] = store
        t0 = time.time()
        out = pipeline.run(cfg)
        out["total_s"] = round(time.time() - t0, 1)
        model, hist = stage2.run_stage2(cfg, progress=False)
    assert next(model.parameters()).device.type == device, f"Stage II ran on {next(model.parameters()).device}"
    if device == "cuda":
        peaks = out["gpu_peak_mib"]
        assert peaks["stage1"] > 0 and peaks["stage2"] > 0 and peaks["eval"] > 0, f"no GPU memory used: {peaks}"
    out["precision"] = {s: runtime.precision(getattr(cfg, s).precision, torch.device(device)) for s in ("stage1", "stage2")}
    out["stage2_epoch_s"] = [round(h["train_s"], 2) for h in hist]
    out["stage2_valid_s"] = [round(h.get("valid_s", 0.0), 2) for h in hist]
    out["test_all"] = out.pop("eval")["test_all"]
    return out


def smoke(device: str, dry: bool, precision: str) -> dict[str, Any]:
    from ungerlib.infra import config

    epochs = {"epochs": 1} if dry else {}
    cfg = config.profile("smoke", stage1={**epochs, "precision": precision}, stage2={**epochs, "precision": precision})
    return chain(cfg, device)


def beauty(device: str, dry: bool, epochs: tuple[int, int]) -> dict[str, Any]:
    from ungerlib.infra import config

    full = config.profile("cpu", "Beauty")
    cfg = config.profile("cpu", "synthetic" if dry else "Beauty", stage1={"epochs": epochs[0]},
                         stage2={"epochs": epochs[1]})
    out = chain(cfg, device)
    per1, per2 = out["stage1_s"] / epochs[0], (out["stage2_s"]) / epochs[1]
    out["epochs"] = list(epochs)
    out["full_profile_estimate_s"] = round(out["semantic_s"] + out["codes_s"] + out["eval_s"]
                                           + per1 * full.stage1.epochs + per2 * full.stage2.epochs, 0)
    return out


def beam(device: str, dry: bool, out_dir: Path) -> dict[str, Any]:
    path = out_dir / "beam.json"
    args = ["--users", "16", "--beams", "5", "--ref-users", "2"] if dry else ["--users", "512", "--ref-users", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_beam.py"), "--device", device,
                          "--json", str(path), *args], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(path.read_text())


def difference(fp32: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """Test metrics (every item ranked) of ``other`` minus those of ``fp32``."""
    return {m: round(other["test_all"][m] - fp32["test_all"][m], 4) for m in METRICS}


def run(device: str, dry: bool, out: Path, budget_s: float, beauty_epochs: tuple[int, int]) -> dict[str, Any]:
    """Every section in order; the result is rewritten to ``out`` after each."""
    started = time.time()
    res: dict[str, Any] = {"machine": machine(device), "dry_run": dry, "sections": {}, "skipped": []}
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("smoke", lambda: smoke(device, dry, "fp32")),
        ("beam", lambda: beam(device, dry, out.parent)),
        ("beauty", lambda: beauty(device, dry, (1, 1) if dry else beauty_epochs)),
        ("smoke_bf16", lambda: smoke(device, dry, "auto")),
    ]
    for name, section in sections:
        if time.time() - started > budget_s:
            res["skipped"].append(name)
            continue
        t0 = time.time()
        res["sections"][name] = {**section(), "section_s": round(time.time() - t0, 1)}
        if name == "smoke_bf16":
            res["smoke_bf16_minus_fp32"] = difference(res["sections"]["smoke"], res["sections"][name])
        res["wall_s"] = round(time.time() - started, 1)
        out.write_text(json.dumps(res, indent=1, default=str))
        print(f"[gpu_check] {name} done in {res['sections'][name]['section_s']}s", file=sys.stderr, flush=True)
    res["ok"] = not res["skipped"]
    out.write_text(json.dumps(res, indent=1, default=str))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--dry-run", action="store_true", help="every section at toy sizes (checks the script, times nothing)")
    ap.add_argument("--budget-s", type=float, default=420, help="start no section after this many seconds")
    ap.add_argument("--beauty-epochs", type=int, nargs=2, default=(2, 2), metavar=("STAGE1", "STAGE2"))
    a = ap.parse_args()
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: the stages pick cuda when they see one
    os.environ.setdefault("UNGER_PROGRESS", "text")
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda but torch sees no GPU (a CPU build of torch, or no driver)")
    from ungerlib.infra import runtime

    runtime.configure_threads()
    res = run(a.device, a.dry_run, a.out, a.budget_s, tuple(a.beauty_epochs))
    print(json.dumps({k: res[k] for k in ("machine", "skipped", "ok")}, indent=1))
    if not res["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
