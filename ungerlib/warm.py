"""Fill the artefact cache with several runs side by side, so that the notebooks only load.

    python -m ungerlib.warm --profile cpu --only 04 --datasets Beauty --jobs 2
    python -m ungerlib.warm --profile cpu --only 04 05 11 --dry-run     # the plan and what is cached

A notebook trains its runs one after another in one process. Most of them are independent (the
lever rows of notebook 04, the ablation rows of notebook 05, the baselines of notebook 11), so on a
machine with several cores it is faster to train them side by side, one torch thread each
(``runtime``: two jobs of one thread beat one job of two on 2 cores). This module lists the runs the
chosen notebooks read, with the same configs the notebooks build, and trains the missing ones in
``--jobs`` worker processes, in three phases: the text embeddings of each data set, then each
distinct Stage I and its codes (every later run reads them), then the Stage II runs, evaluations and
baselines. The cache is keyed by config and code, so a notebook run afterwards (``make figures`` or
``python -m ungerlib.reproduce``) finds every artefact and trains nothing; a killed worker's run
resumes from its checkpoint on the next call, like any run.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from . import cli
from . import config as C
from .store import artefact_root, config_hash

NOTEBOOKS = ("02", "03", "04", "05", "06", "07", "11")  # the notebooks that read trained artefacts


@dataclass(frozen=True)
class Job:
    """One artefact to build: ``kind`` (semantic, inputs, train, eval, discrec, baseline), its config,
    and for a baseline its model and grid parameters."""

    phase: int
    kind: str
    cfg: C.RunConfig = field(compare=False)
    label: str = field(compare=False)
    ident: str
    model: str = field(default="", compare=False)
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    def cached(self) -> bool:
        """Whether the artefact is already in the store."""
        folder = {"semantic": "semantic", "train": "stage2", "eval": "eval", "baseline": "baseline"}.get(self.kind)
        if self.kind == "inputs":
            return all((artefact_root() / k / config_hash(C.artefact_key(self.cfg, k))).is_dir()
                       for k in ("stage1", "codes"))
        if self.kind == "discrec":
            from .discrec import _key

            return (artefact_root() / "eval_discrec" / config_hash(_key(self.cfg, "eval"))).is_dir()
        return folder is not None and (artefact_root() / folder / self.ident).is_dir()


def _job(kind: str, cfg: C.RunConfig, label: str, model: str = "", params: dict | None = None) -> Job:
    if kind == "semantic":
        ident = config_hash(C.upstream(cfg, "semantic"))
    elif kind == "inputs":
        ident = config_hash([C.artefact_key(cfg, "stage1"), C.artefact_key(cfg, "codes")])
    elif kind in ("train", "eval"):
        ident = config_hash(C.artefact_key(cfg, "stage2" if kind == "train" else "eval"))
    elif kind == "discrec":
        ident = config_hash(C.artefact_key(cfg, "eval"))
    else:  # the key overall.run caches the run under
        from .baselines import run_key
        from .overall import MODULE, USES

        ident = config_hash(run_key(cfg, model, dict(params or {}), MODULE[model], USES.get(model, ())))
    phase = {"semantic": 0, "inputs": 1}.get(kind, 2)
    return Job(phase, kind, cfg, label, ident, model, dict(params or {}))


def plan(profile: str, notebooks: list[str] | None = None, datasets: list[str] | None = None) -> list[Job]:
    """The runs the chosen notebooks read (default: all), deduplicated, in phase order. The configs
    are built as the notebooks build them (their default parameters)."""
    from . import ablations, levers, overall
    from .report import profile_datasets

    nbs = list(NOTEBOOKS) if not notebooks else notebooks
    unknown = [n for n in nbs if n not in NOTEBOOKS]
    if unknown:
        raise C.ConfigError(f"unknown notebook(s) {unknown}; the ones that train: {list(NOTEBOOKS)}")
    names = profile_datasets(profile, datasets)
    cfgs = {n: C.profile(profile, dataset=n) for n in names}
    jobs: list[Job] = []
    for n, cfg in cfgs.items():  # every notebook reads the default chain
        jobs.append(_job("eval" if {"04", "11"} & set(nbs) else "inputs", cfg, f"{n} default"))
    if "04" in nbs:
        first = names[0]
        jobs += [_job("train", levers.lever_config(cfgs[first], r), f"{first} lever {r[:1]}") for r in
                 (levers.STAGE2_LEVERS if profile != "smoke" else [levers.LITERAL, levers.SCREEN_BEST])]
        jobs += [_job("train", levers.lever_config(c, r, levers.FULL), f"{n} full-budget {r[:1]}")
                 for n, c in cfgs.items() for r in levers.CONFIRM]
        jobs += [_job("baseline", cfgs[first], f"{first} SASRec {p}", "SASRec", p)
                 for p in overall.grid(profile, "SASRec")]
    if "05" in nbs:
        abl = datasets or (["synthetic"] if profile == "smoke" else ["Beauty"])
        for n in abl:
            base = ablations.base_config(profile, n)
            rows = [*ablations.TABLE5, *ablations.TABLE6, *ablations.FIG8, *ablations.k_rows(base)]
            jobs += [_job("eval", rc, f"{n} ablation {r}") for (r, _), rc in ablations.row_configs(base, rows).items()]
    if "11" in nbs:
        for n, cfg in cfgs.items():
            jobs += [_job("baseline", cfg, f"{n} {m} {p}", m, p)
                     for m in overall.RERUN for p in overall.grid(profile, m)]
            jobs.append(_job("discrec", cfg, f"{n} DiscRec"))
    # the inputs every run needs come first; an evaluation also trains, so it replaces a train job
    jobs += [_job("inputs", j.cfg, f"{j.label}: Stage I + codes") for j in list(jobs)
             if j.kind in ("train", "eval", "discrec")]
    jobs += [_job("semantic", j.cfg, f"{j.cfg.data.dataset} text embeddings") for j in list(jobs) if j.kind == "inputs"]
    evaluated = {config_hash(C.artefact_key(j.cfg, "stage2")) for j in jobs if j.kind == "eval"}
    jobs = [j for j in jobs if not (j.kind == "train" and j.ident in evaluated)]
    return sorted(dict.fromkeys(jobs), key=lambda j: j.phase)


def build(job: Job) -> float:
    """Build ``job``'s artefact (or load it) in this process; its wall seconds."""
    from . import runtime

    runtime.configure_threads()
    t0 = time.time()
    if job.kind == "semantic":
        from .semantic import semantic_embeddings

        semantic_embeddings(job.cfg)
    elif job.kind == "inputs":
        from .stage2 import _inputs

        _inputs(job.cfg)
    elif job.kind == "train":
        from .stage2 import run_stage2

        run_stage2(job.cfg, progress=False)
    elif job.kind == "eval":
        from .stage2 import evaluate_stage2, run_stage2

        run_stage2(job.cfg, progress=False)
        evaluate_stage2(job.cfg)
    elif job.kind == "discrec":
        from .discrec import evaluate_discrec, run_discrec

        run_discrec(job.cfg, progress=False)
        evaluate_discrec(job.cfg)
    else:
        from .overall import run

        run(job.cfg, job.model, job.params)
    return time.time() - t0


def warm(jobs: list[Job], n_jobs: int = 2, log=print) -> dict[str, float]:
    """Build every job not yet cached, ``n_jobs`` at a time (one torch thread each), phase by phase.
    Returns the wall seconds of each job built, by label."""
    todo = [j for j in jobs if not j.cached()]
    log(f"[warm] {len(jobs)} runs, {len(jobs) - len(todo)} cached, {len(todo)} to build with {n_jobs} jobs")
    os.environ.update(UNGER_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # inherited by workers
    done: dict[str, float] = {}
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=get_context("spawn")) as pool:
        for phase in sorted({j.phase for j in todo}):
            running = {pool.submit(build, j): j for j in todo if j.phase == phase}
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    j = running.pop(f)
                    if f.exception() is not None:  # say which run failed, then stop with its error
                        log(f"[warm] failed: {j.label} ({j.kind}); runs not started are cancelled, "
                            "running ones finish first")
                        for other in running:
                            other.cancel()
                        raise f.exception()
                    done[j.label] = f.result()
                    log(f"[warm] done {j.label} in {done[j.label]:.0f}s ({len(done)}/{len(todo)}, "
                        f"{time.time() - t0:.0f}s so far)")
    return done


def _main(a: argparse.Namespace) -> None:
    if a.jobs < 1:
        raise C.ConfigError(f"--jobs must be at least 1, got {a.jobs}")
    jobs = plan(a.profile, a.only, a.datasets)
    if a.dry_run:
        for j in jobs:
            print(f"phase {j.phase}  {'cached  ' if j.cached() else 'to build'}  {j.kind:8s} {j.label}")
        return
    print(json.dumps(warm(jobs, a.jobs), indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=C.PROFILES)
    ap.add_argument("--only", nargs="*", help=f"notebook prefixes (default: all that train, {' '.join(NOTEBOOKS)})")
    ap.add_argument("--datasets", nargs="*", help="override the profile's data sets")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: one per core)")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and whether each is cached; build nothing")
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    return cli.run(_main, ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
