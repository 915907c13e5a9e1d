"""Run every stage for one data set and print per-stage wall time and metrics.

    python -m ungerlib pipeline --profile cpu --dataset Beauty [--rows ours collaborative_only]
    python -m ungerlib pipeline --profile smoke                 # the profile's own data (synthetic)
    python -m ungerlib pipeline --profile cpu --set stage2.epochs=30 codes.method=rqvae

Each stage is a cached artefact, so a second run only loads; the notebooks call the same
functions. Useful on a GPU machine, where the whole chain runs in minutes; on several GPUs Stage I and
Stage II train with DistributedDataParallel under torchrun (``docs/SCALE.md``):

    torchrun --standalone --nproc_per_node 4 -m ungerlib pipeline --profile paper --dataset Beauty

Every setting and the data files are checked before any stage starts; a problem is one line naming
it (``--traceback`` for the full traceback). Progress (stage, epoch, time left) goes to stderr, results to stdout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from ungerlib.infra import cli, config, distributed, runtime


class _Stages:
    """Per-stage wall seconds (``<stage>_s``) and, on a GPU, peak GPU memory (``gpu_peak_mib``) into ``out``."""

    def __init__(self, out: dict):
        import torch

        self.out, self.cuda = out, torch.cuda.is_available()
        if self.cuda:
            out["gpu"], out["gpu_peak_mib"] = torch.cuda.get_device_name(), {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        t = time.time()
        yield
        self.out[f"{name}_s"] = round(time.time() - t, 1)
        if self.cuda:
            self.out["gpu_peak_mib"][name] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)


def run(cfg: config.RunConfig, stage2: bool = True) -> dict:
    """Every stage of ``cfg``'s chain, each built or loaded: ``{"dataset", "profile", "<stage>_s", ...}``
    with Stage I's validation metrics, the codes' report, Stage II's epochs and the evaluation."""
    from ungerlib.model.codes import item_codes
    from ungerlib.model.semantic import semantic_embeddings
    from ungerlib.model.stage1 import stage1_embeddings
    from ungerlib.model.stage2 import evaluate_stage2, run_stage2

    tag = f"[pipeline] {cfg.data.dataset}"
    out: dict = {"dataset": cfg.data.dataset, "profile": cfg.profile}
    stage = _Stages(out)
    runtime.log(f"{tag}: semantic embeddings ({cfg.semantic.encoder})")
    with stage("semantic"):
        semantic_embeddings(cfg)
    runtime.log(f"{tag}: Stage I ({cfg.stage1.epochs} epochs at most)")
    with stage("stage1"):
        s1 = stage1_embeddings(cfg)
    out["stage1_valid"], out["crossmodal_top1"] = s1.valid_metrics, s1.crossmodal_top1
    runtime.log(f"{tag}: unicodes ({cfg.codes.method}, K = {cfg.codes.K})")
    with stage("codes"):
        out["codes"] = item_codes(cfg).report()
    if stage2:
        runtime.log(f"{tag}: Stage II ({cfg.stage2.epochs} epochs at most)")
        with stage("stage2"):
            _, hist = run_stage2(cfg)
        out["stage2_epochs"] = len(hist)
        runtime.log(f"{tag}: evaluation (beam {cfg.eval.beam})")
        with stage("eval"):
            out["eval"] = evaluate_stage2(cfg)
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ungerlib pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=config.PROFILES)
    ap.add_argument("--dataset", default=None,
                    help="Beauty, Sports, Toys, synthetic or a folder name under $UNGER_DATA "
                         "(default: the profile's own, synthetic for smoke, Beauty otherwise)")
    ap.add_argument("--rows", nargs="*", default=["ours"], help="paper rows (config.variant names)")
    ap.add_argument("--no-stage2", action="store_true", help="stop after the codes")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help=cli.SET_HELP)
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    return ap


def _main(a: argparse.Namespace) -> None:
    from ungerlib.model.data import load_dataset

    threads = runtime.configure_threads()  # first: the wait policy must precede torch's import
    base = config.profile(a.profile, a.dataset, **config.parse_overrides(a.set))
    cfgs = {row: config.variant(base, row) for row in a.rows}  # every row checked before any work
    load_dataset(base.data)  # the data files too: unknown, missing or damaged -> one line now, not later
    g = distributed.init()  # torchrun's process group, if any
    runtime.log(f"[pipeline] profile {a.profile}, data set {base.data.dataset}, rows {', '.join(cfgs)}; "
                f"{threads} CPU thread(s)" + (f"; {g.world} processes (torchrun)" if g.world > 1 else ""))
    t0 = time.time()
    for row, cfg in cfgs.items():
        res = run(cfg, not a.no_stage2)
        if g.is_main():
            print(json.dumps({"row": row, **res}, default=str), flush=True)
        if "eval" in res:
            m = res["eval"]["test_all"]
            runtime.log(f"[pipeline] {row}: test Recall@10 {m['recall@10']:.4f}, NDCG@10 {m['ndcg@10']:.4f} "
                        f"(every item ranked); rankings and metrics in {res['eval']['path']}")
    from ungerlib.infra.store import artefact_root

    runtime.log(f"[pipeline] done in {runtime.duration(time.time() - t0)}; every stage's artefact is in "
                f"{artefact_root()} (provenance.json beside each); the JSON result is on stdout")


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
