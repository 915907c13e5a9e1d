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


# every other kind: phase 2; the neighbours decodings read the default Stage II model an eval job trains
PHASE = {"semantic": 0, "inputs": 1, "neighbours": 3}
# the store folders a job of each kind fills (discrec and baseline: below)
STORES = {"semantic": ("semantic",), "inputs": ("stage1", "codes"), "train": ("stage2",), "eval": ("stage2", "eval")}


@dataclass(frozen=True)
class Job:
    """One run to build: ``kind`` (semantic, inputs, train, eval, neighbours, discrec, baseline), its config, for
    a baseline its model and grid parameters, and ``outputs``, the (store folder, key hash) of every
    artefact it builds. Two jobs are the same run exactly when kind and outputs agree."""

    kind: str
    outputs: tuple[tuple[str, str], ...]
    cfg: C.RunConfig = field(compare=False)
    label: str = field(compare=False)
    model: str = field(default="", compare=False)
    params: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def phase(self) -> int:
        return PHASE.get(self.kind, 2)

    def cached(self) -> bool:
        """Whether every artefact of the run is already in the store."""
        return all((artefact_root() / folder / h).is_dir() for folder, h in self.outputs)


def _outputs(kind: str, cfg: C.RunConfig, model: str, params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    if kind == "baseline":  # the key overall.run caches the run under
        from .baselines import run_key
        from .overall import MODULE, USES

        return (("baseline", config_hash(run_key(cfg, model, params, MODULE[model], USES.get(model, ())))),)
    if kind == "discrec":
        from .discrec import _key

        return tuple((f"{k}_discrec", config_hash(_key(cfg, k))) for k in ("stage2", "eval"))
    if kind == "neighbours":  # every lambda of the grid but (0, 0), which is the eval job's own
        from . import neighbours

        return tuple(("eval_neighbours", config_hash(neighbours._key(cfg, lam))) for lam in neighbours.GRID if any(lam))
    return tuple((k, config_hash(C.artefact_key(cfg, k))) for k in STORES[kind])


def _job(kind: str, cfg: C.RunConfig, label: str, model: str = "", params: dict | None = None) -> Job:
    params = dict(params or {})
    return Job(kind, _outputs(kind, cfg, model, params), cfg, label, model, params)


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
        if {"04", "11"} & set(nbs):  # our UNGER row: the default decoded with the Stage I neighbours
            jobs.append(_job("neighbours", cfg, f"{n} default, Stage I neighbours at decoding"))
    if "04" in nbs:
        first = names[0]
        screened = levers.screened_rows(profile)
        jobs += [_job("train", levers.lever_config(cfgs[first], r), f"{first} lever {r[:1]}") for r in screened]
        jobs += [_job("train", levers.lever_config(c, r, levers.FULL), f"{n} full-budget {r[:1]}")
                 for n, c in cfgs.items() for r in levers.confirm_rows(screened if n == first else None)]
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
    evaluated = {o for j in jobs if j.kind == "eval" for o in j.outputs}
    jobs = [j for j in jobs if not (j.kind == "train" and set(j.outputs) <= evaluated)]
    return sorted(dict.fromkeys(jobs), key=lambda j: j.phase)


def _one_thread() -> None:
    """Worker start-up: the thread policy (``runtime``) at one torch thread, before any work."""
    from . import runtime

    os.environ["UNGER_THREADS"] = "1"
    os.environ.update(runtime.thread_env())
    runtime.configure_threads()


def build(job: Job) -> float:
    """Build ``job``'s artefacts (or load them) in this process; its wall seconds."""
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
    elif job.kind == "neighbours":
        from .neighbours import tune

        tune(job.cfg)
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
    done: dict[str, float] = {}
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
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
