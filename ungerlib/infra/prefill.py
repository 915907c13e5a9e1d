"""Fill the artefact cache with several runs side by side, so that the notebooks only load.

    python -m ungerlib prefill --profile cpu --only 04 --datasets Beauty --jobs 2
    python -m ungerlib prefill --profile cpu --dry-run      # the plan, what is cached, a time estimate
    python -m ungerlib prefill --profile cpu --by-notebook --only 04 05 09 --jobs 2   # whole notebooks first
    python -m ungerlib prefill --profile cpu --executor slurm --partition gpu --gpus-per-job 1

A notebook trains its runs one after another in one process. Most of them are independent (the
Stage II rows of notebook 04, the ablation rows of notebook 05, the baselines of notebook 11), so on a
machine with several cores it is faster to train them side by side, one torch thread each
(``runtime``: two jobs of one thread beat one job of two on 2 cores). This module lists the runs the
chosen notebooks read, with the same configs the notebooks build, and builds the missing ones,
``--jobs`` at a time, shallow kinds first (text embeddings, then Stage I and codes, then Stage II, then
what decodes it). A run is one artefact of :mod:`ungerlib.artefacts` (a kind, a config and the kind's
arguments) and is built by that kind's registered builder, the very call a notebook makes, so a
notebook run afterwards finds every artefact and trains nothing. A killed run resumes from its last
finished epoch on the next call, like any run.

Where the runs execute is an :class:`Executor`: worker processes on this machine (:class:`Local`, the
default) or a scheduler through submitit (:class:`Submitit`): ``--executor slurm`` submits each phase
as a SLURM job array, one run per job; ``--executor submitit-local`` runs the same path as local
processes (every run of a phase at once: for trying the path, not for sweeps). On a cluster the
artefact store must be a folder that the jobs and the notebooks share (``UNGER_ARTEFACTS``); the
notebooks then only load.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from ungerlib.infra import artefacts, cli
from ungerlib.infra import config as C

NOTEBOOKS = ("02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12")  # the notebooks that read trained artefacts
TUNE = "tune"  # the validation grids make tune trains (ungerlib.analyses.tuning)

# Seconds a run of a kind takes by itself (not counting the kinds it reads: an evaluation is its decoding
# only) on one thread of the 2-core development machine beside another job (cpu profile, Beauty;
# docs/REPRODUCIBILITY.md, docs/experiments/cpu_regeneration.md). The estimate uses them where the store
# has no run of the kind on a real data set yet. A key "baseline.X" is one baseline, "baseline" the
# others. Smoke runs take seconds.
TYPICAL_S = {"semantic": 120, "stage1": 1500, "codes": 300, "stage2": 5000, "eval": 300, "eval_neighbours": 240,
             "stage2_discrec": 5000, "eval_discrec": 300, "stage2_dual": 6600, "eval_dual": 600,
             "baseline.TIGER": 10800, "baseline": 3300}


@dataclass(frozen=True)
class Job:
    """One run to build: artefact ``kind`` for ``cfg`` with the kind's arguments ``extra``. Two jobs are
    the same run exactly when kind and key agree."""

    kind: str
    key_hash: str
    cfg: C.RunConfig = field(compare=False)
    label: str = field(compare=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def phase(self) -> int:
        return artefacts.get(self.kind).depth

    def state(self) -> str:
        return artefacts.state(self.kind, self.cfg, **self.extra)

    def cached(self) -> bool:
        return self.state() == "built"


def job(kind: str, cfg: C.RunConfig, label: str, **extra: Any) -> Job:
    return Job(kind, artefacts.key_hash(kind, cfg, **extra), cfg, label, extra)


def plan(profile: str, notebooks: list[str] | None = None, datasets: list[str] | None = None,
         skip_untuned: bool = False, log: Callable[[str], None] = print) -> list[Job]:
    """The runs the chosen notebooks read (default: all), deduplicated, shallow kinds first. The configs
    are built as the notebooks build them (their default parameters).

    A baseline the notebooks read at its tuned setting needs ``make tune``'s selection at the current
    grid: without one, planning stops with a line that names ``make tune``; with ``skip_untuned`` those
    baselines are left out instead (one ``log`` line names them) and everything else is planned, so the
    UNGER side can train before the grids are tuned."""
    from ungerlib.analyses import ablations, code_kinds, stage2_grid as levers, table3 as overall, tuning
    from ungerlib.model import neighbours
    from ungerlib.infra.report import profile_datasets

    untuned: list[str] = []

    def selected(profile: str, dataset: str, model: str) -> dict[str, Any] | None:
        """``tuning.selected``, or None (noted) for a baseline not tuned at its current grid."""
        try:
            return tuning.selected(profile, dataset, model)
        except cli.Failed:
            if not skip_untuned:
                raise
            untuned.append(f"{model} on {dataset}")
            return None

    def tuned_jobs(cfg: C.RunConfig, name: str, models: tuple[str, ...]) -> list[Job]:
        return [job(artefacts.baseline_kind(m), cfg, f"{name} {m} (tuned)", params=p)
                for m in models if (p := selected(profile, name, m)) is not None]

    nbs = list(NOTEBOOKS) if not notebooks else notebooks
    unknown = [n for n in nbs if n not in (*NOTEBOOKS, TUNE)]
    if unknown:
        raise C.ConfigError(f"unknown notebook(s) {unknown}; the ones that train: {list(NOTEBOOKS)}, or {TUNE!r} "
                            "(the validation grids of make tune)")
    names = profile_datasets(profile, datasets)
    cfgs = {n: C.profile(profile, dataset=n) for n in names}
    jobs: list[Job] = []
    for n, cfg in cfgs.items():  # every notebook reads the default chain
        if {"04", "11"} & set(nbs):
            jobs.append(job("eval", cfg, f"{n} default"))
            # our row: the default decoded with the Stage I neighbours term, every lambda of the grid
            jobs += [job("eval_neighbours", cfg, f"{n} default, Stage I neighbours {lam}", neighbour_lambda=list(lam))
                     for lam in neighbours.GRID if any(lam)]
        else:
            jobs.append(job("codes", cfg, f"{n} default"))
    if TUNE in nbs:  # every grid point: the Stage II grid on the first data set, each baseline's on each data set
        first = names[0]
        jobs += [job("stage2", levers.lever_config(cfgs[first], r), f"{first} lever {r[:1]}")
                 for r in levers.screened_rows(profile)]
        jobs += [job(artefacts.baseline_kind(m), cfg, f"{n} {m} {p}", params=p)
                 for n, cfg in cfgs.items() for m in overall.RERUN for p in _tuning_points(profile, m, n)]
    if "04" in nbs:
        jobs += [job("eval", levers.lever_config(c, r, levers.FULL), f"{n} full-budget {r[:1]}")
                 for n, c in cfgs.items() for r in levers.CONFIRM]
        for n, c in cfgs.items():
            jobs += tuned_jobs(c, n, ("SASRec",))
    if {"02", "06", "07"} & set(nbs):  # notebook 02 (every data set), 06 and 07 (Beauty) read DIN alone too
        for n in (names if "02" in nbs else datasets or (["synthetic"] if profile == "smoke" else ["Beauty"])):
            jobs.append(job("stage1", C.variant(C.profile(profile, dataset=n), "collaborative_only"),
                            f"{n} DIN alone (Stage I without CKA)"))
    if "12" in nbs:  # the case study: the first data set's default model and three codes
        from ungerlib.analyses import case_study

        first = cfgs[names[0]]
        jobs.append(job("stage2", first, f"{names[0]} default Stage II"))
        jobs += [job("codes", case_study.code_config(first, c), f"{names[0]} {c} code") for c in case_study.CODES]
    if "05" in nbs:
        for n in datasets or (["synthetic"] if profile == "smoke" else ["Beauty"]):
            base = ablations.base_config(profile, n)
            rows = [*ablations.TABLE5, *ablations.TABLE6, *ablations.FIG8, *ablations.k_rows(base)]
            jobs += [job("eval", rc, f"{n} ablation {r}") for (r, _), rc in ablations.row_configs(base, rows).items()]
    if "08" in nbs:  # Figure 6: UNGER's decoder and HSTU's layers scaled on the first data set
        from ungerlib.analyses import scaling

        jobs += [job(kind, c, label, **extra) for kind, c, label, extra in scaling.runs(cfgs[names[0]], selected=selected)]
    if "09" in nbs:  # Figure 7 and the alpha/beta sweep on Beauty: every encoder that loads offline here
        from ungerlib.analyses import encoders

        for n in encoders.datasets_of(profile, datasets):
            jobs += [job("eval", c, f"{n} {label}") for label, c in encoders.run_configs(profile, n).items()]
    if "10" in nbs:  # Figure 2 and Table 1 time the first data set's trained models of each kind of code
        from ungerlib.analyses import efficiency

        first = cfgs[names[0]]
        jobs += [job("stage2_dual" if c == "dual" else "stage2", efficiency.code_config(first, c), f"{names[0]} {c} model")
                 for c in efficiency.CODES]
    if "11" in nbs:
        for n, cfg in cfgs.items():
            jobs += tuned_jobs(cfg, n, overall.RERUN)
            jobs.append(job("eval_discrec", cfg, f"{n} DiscRec"))
            jobs += [job(kind, c, label) for kind, c, label in code_kinds.runs(cfg)]  # the thesis: three kinds of code
        from ungerlib.analyses import seeds  # the claim rows at the other seeds, on the first data set

        jobs += [job(kind, c, label, **extra) for kind, c, label, extra in seeds.runs(cfgs[names[0]], selected)]
    # what every Stage II run reads comes first: the text embeddings, then Stage I and the codes (the
    # dual code reads two codes, one per stream)
    jobs += [job("codes", j.cfg, f"{j.cfg.data.dataset} Stage I + codes of {j.label}") for j in list(jobs)
             if artefacts.get(j.kind).depth > artefacts.get("codes").depth and "codes" in _chain(j.kind)
             and "dual" not in j.kind]
    from ungerlib.baselines.dual import stream_configs

    jobs += [job("codes", c, f"{j.cfg.data.dataset} {s} code of {j.label}") for j in list(jobs)
             if "dual" in j.kind for s, c in stream_configs(j.cfg).items()]
    jobs += [job("semantic", j.cfg, f"{j.cfg.data.dataset} text embeddings") for j in list(jobs)
             if "semantic" in _chain(j.kind) and j.kind != "semantic"]
    # a run that an evaluation of the same config builds anyway is not a job of its own
    evaluated = {artefacts.key_hash("stage2", j.cfg) for j in jobs if j.kind == "eval"}
    jobs = [j for j in jobs if not (j.kind == "stage2" and j.key_hash in evaluated)]
    if untuned:
        log(f"[prefill] not planned, not tuned at their current grids (make tune PROFILE={profile}): "
            + ", ".join(dict.fromkeys(untuned)))
    return sorted(dict.fromkeys(jobs), key=lambda j: j.phase)


def _tuning_points(profile: str, model: str, dataset: str) -> list[dict[str, Any]]:
    """The grid points ``make tune`` trains for ``model`` on ``dataset`` (:func:`ungerlib.analyses.table3.grid`),
    except on a data set that takes Beauty's 3 best points while Beauty is not tuned yet: none here, as
    ``make tune`` trains them itself once Beauty is (prefilling the whole grid there would be wasted)."""
    from ungerlib.analyses import table3
    from ungerlib.infra.report import profile_datasets

    points = table3.grid(profile, model, dataset)
    waits = dataset != profile_datasets(profile)[0] and len(points) > table3.TRANSFER
    return [] if waits else points


def _chain(kind: str) -> list[str]:
    return [k.name for k in artefacts.get(kind).chain()]


def _one_thread() -> None:
    """Worker start-up: dies with its parent (:func:`_die_with_parent`), then the thread policy
    (``runtime``) at one torch thread, before any work."""
    from ungerlib.infra import runtime

    _die_with_parent()
    os.environ["UNGER_THREADS"] = "1"
    os.environ.update(runtime.thread_env())
    runtime.configure_threads()


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the prefill that started it dies. Ctrl-C reaches the whole
    process group anyway, but a parent killed alone (``kill``, a scheduler) would otherwise leave its
    workers training on. A run cut off this way resumes from its last finished epoch, as after Ctrl-C."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import multiprocessing
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: the worker may outlive a killed parent
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before prctl took effect
        os._exit(1)


def build(j: Job) -> float:
    """Build ``j``'s artefact (or load it) in this process with its kind's registered builder; its wall seconds."""
    t0 = time.time()
    artefacts.build(j.kind, j.cfg, **j.extra)
    return time.time() - t0


def estimate(jobs: list[Job]) -> float:
    """Seconds of one-thread work to build the jobs not yet built, and the runs they read that are
    neither built nor jobs themselves (an evaluation trains its model first), each counted once.

    A run's cost is the mean own time (:func:`own_times`) of the runs of its kind in the store on the
    same data set, else on the other real data sets, else :data:`TYPICAL_S`; 0 for smoke. A run resumed
    after a kill counts its earlier attempts where they were recorded (builds since ``own_s``), and a
    trained run at least the sum of its epochs' times (:func:`_epochs_s`), which older resumed records
    lack."""
    from ungerlib.infra import store

    if not jobs:
        return 0.0
    needed = {k.name for j in jobs for k in artefacts.get(j.kind).chain()}
    own = own_times(store.artefact_root(), needed)

    def cost(kind: str, dataset: str) -> float:
        past = own.get((kind, dataset)) or [s for (k, n), v in own.items() if k == kind and n != "synthetic" for s in v]
        return sum(past) / len(past) if past else TYPICAL_S.get(kind, TYPICAL_S.get(kind.split(".")[0], TYPICAL_S["baseline"]))

    planned = {(j.kind, j.key_hash) for j in jobs}
    counted: set[tuple[str, str]] = set()
    total = 0.0
    for j in jobs:
        if j.cfg.profile == "smoke" or j.cached():
            continue
        total += cost(j.kind, j.cfg.data.dataset)
        for up in artefacts.get(j.kind).chain()[:-1]:
            if not (up.stored and up.build):
                continue
            key = artefacts.key(up.name, j.cfg)
            run = (up.name, store.config_hash(key))
            if run not in planned and run not in counted:
                counted.add(run)
                if store.state(up.name, key) != "built":
                    total += cost(up.name, j.cfg.data.dataset)
    return total


def own_times(root: Path, kinds: set[str]) -> dict[tuple[str, str], list[float]]:
    """``{(kind, data set): [seconds]}``: each stored run's own time, its ``own_s``; a record made before
    that field has its ``wall_s`` less the wall times of the runs of upstream kinds that finished within
    it (the outermost ones, so a model trained inside an evaluation is subtracted once). A trained run
    counts at least the sum of its epochs' times (:func:`_epochs_s`)."""
    import datetime as dt

    recs = []
    for kind in kinds:
        folder = root / kind
        for p in folder.glob("*/provenance.json") if folder.is_dir() else []:
            try:
                r = json.loads(p.read_text())
                end = dt.datetime.strptime(r["created"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
                recs.append((kind, r["key"]["data"]["dataset"], end - float(r["wall_s"]), end, float(r["wall_s"]),
                             r.get("own_s"), _epochs_s(p.parent)))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    out: dict[tuple[str, str], list[float]] = {}
    for kind, data, start, end, wall, own_s, epochs_s in recs:
        if own_s is None:
            upstream = {k.name for k in artefacts.get(kind).chain()[:-1]}
            inner = sorted((r for r in recs if r[0] in upstream and r[1] == data and start <= r[2] and r[3] <= end),
                           key=lambda r: -r[4])
            outermost: list[tuple] = []
            for r in inner:
                if not any(o[2] <= r[2] and r[3] <= o[3] for o in outermost):
                    outermost.append(r)
            own_s = max(wall - sum(r[4] for r in outermost), 0.0)
        out.setdefault((kind, data), []).append(max(float(own_s), epochs_s))
    return out


def _epochs_s(folder: Path) -> float:
    """The seconds a trained run's epochs took, training and validation, summed over its ``history.json``
    (0 where it has none). A run resumed before the store recorded earlier attempts has a ``wall_s`` of its
    last attempt only; its epochs still add up to the whole run."""
    try:
        history = json.loads((folder / "history.json").read_text())
        return float(sum(r.get("train_s", 0.0) + r.get("valid_s", 0.0) for r in history if isinstance(r, dict)))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


class Executor(Protocol):
    """Where :func:`prefill` runs its jobs. ``start(fn, jobs)`` starts ``fn(job)`` for every job of a phase
    and returns one handle per job (anything with ``result()``); ``as_completed(handles)`` yields them as
    they finish; ``failure(handle)``: the error of a failed run, else None; ``close()``: after the last
    phase or a failure (what was not started is cancelled; what runs finishes first); ``name``: where, in words."""

    name: str

    def start(self, fn: Callable[[Job], float], jobs: list[Job]) -> list[Any]: ...

    def as_completed(self, handles: list[Any]) -> Iterator[Any]: ...

    def failure(self, handle: Any) -> BaseException | None: ...

    def close(self) -> None: ...


class Local:
    """``jobs`` worker processes on this machine, one torch thread each (the default executor)."""

    def __init__(self, jobs: int):
        self.name = f"{jobs} jobs"
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_one_thread)

    def start(self, fn: Callable[[Job], float], jobs: list[Job]) -> list[Any]:
        return [self.pool.submit(fn, j) for j in jobs]

    def as_completed(self, handles: list[Any]) -> Iterator[Any]:
        return as_completed(handles)

    def failure(self, handle: Any) -> BaseException | None:
        return handle.exception()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class Submitit:
    """One job per run through submitit: ``cluster="slurm"`` submits each phase as a SLURM job array
    (``jobs``: how many run at once; ``partition``, ``gpus``, ``cpus`` and ``time_min`` per job; ``cpus``
    is also the run's torch thread count), ``cluster="local"`` runs them as processes here. Logs and
    submitit's pickles go to ``folder``."""

    def __init__(self, folder: str | Path, cluster: str = "slurm", jobs: int | None = None,
                 partition: str | None = None, gpus: int = 0, cpus: int = 1, time_min: int = 720):
        try:
            import submitit
        except ImportError:
            raise C.ConfigError(f"--executor {'slurm' if cluster == 'slurm' else 'submitit-local'} needs submitit: "
                                "pip install 'ungerlib[cluster]' (or submitit itself)") from None
        self.cluster, self.cpus, self.name = cluster, cpus, f"submitit ({cluster})"
        try:
            self.ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        except RuntimeError as e:  # submitit: 'Could not detect "srun", are you indeed on a slurm cluster?'
            raise C.ConfigError(f"--executor slurm: {e} (here: --executor local, or submitit-local)") from None
        params: dict[str, Any] = {"timeout_min": time_min, "cpus_per_task": cpus, "gpus_per_node": gpus,
                                  "name": "ungerlib-prefill"}
        if partition:
            params["slurm_partition"] = partition
        if jobs:
            params["slurm_array_parallelism"] = jobs
        self.ex.update_parameters(**params)

    def start(self, fn: Callable[[Job], float], jobs: list[Job]) -> list[Any]:
        return self.ex.map_array(functools.partial(_with_threads, fn, self.cpus), jobs)

    def as_completed(self, handles: list[Any]) -> Iterator[Any]:
        from submitit.helpers import as_completed as done

        return done(handles, poll_frequency=1 if self.cluster == "local" else 30)

    def failure(self, handle: Any) -> BaseException | None:
        err = handle.exception()
        if err is None:
            return None
        # submitit's message: a header, the run's traceback between two rules of dashes, where the logs are
        trace = next((part for part in str(err).split("-" * 22) if "Traceback" in part), str(err))
        last = next((ln.strip() for ln in reversed(trace.splitlines()) if ln.strip()), type(err).__name__)
        return cli.Failed(f"job {handle.job_id} failed: {last} (log: {handle.paths.stderr})")

    def close(self) -> None:
        pass


def _with_threads(fn: Callable[[Job], float], threads: int, j: Job) -> float:
    """A submitit job: the thread policy at ``threads`` torch threads, then ``fn(j)``."""
    from ungerlib.infra import runtime

    os.environ["UNGER_THREADS"] = str(threads)
    runtime.configure_threads()
    return fn(j)


def prefill(jobs: list[Job], n_jobs: int = 2, log=print, executor: Executor | None = None) -> dict[str, float]:
    """Build every job not yet cached, shallow kinds first, on ``executor`` (default: ``n_jobs`` local
    worker processes of one torch thread each). Returns the wall seconds of each job built, by label."""
    from ungerlib.infra import runtime

    todo = [j for j in jobs if not j.cached()]
    executor = executor or Local(n_jobs)
    log(f"[prefill] {len(jobs)} runs, {len(jobs) - len(todo)} cached, {len(todo)} to build with {executor.name}"
        + (f" (about {runtime.duration(estimate(todo) / max(1, min(n_jobs, len(todo))))})" if todo else ""))
    done: dict[str, float] = {}
    t0 = time.time()
    try:
        for phase in sorted({j.phase for j in todo}):
            batch = [j for j in todo if j.phase == phase]
            handles = executor.start(build, batch)
            job_of = {id(h): j for h, j in zip(handles, batch)}
            for h in executor.as_completed(handles):
                j = job_of[id(h)]
                err = executor.failure(h)
                if err is not None:  # say which run failed, then stop with its error
                    log(f"[prefill] failed: {j.label} ({j.kind}); runs not started are cancelled, "
                        "running ones finish first")
                    raise err
                done[j.label] = h.result()
                log(f"[prefill] done {j.label} in {done[j.label]:.0f}s ({len(done)}/{len(todo)}, "
                    f"{runtime.duration(time.time() - t0)} so far)")
    finally:
        executor.close()
    return done


SLURM_OPTIONS = ("partition", "gpus_per_job", "cpus_per_job", "time_min")  # options of the submitit executors


def check_options(a: argparse.Namespace) -> None:
    """Command-line options that do not fit together: a ConfigError naming them, before any work."""
    if a.jobs is not None and a.jobs < 1:
        raise C.ConfigError(f"--jobs must be at least 1, got {a.jobs}")
    given = [f"--{o.replace('_', '-')}" for o in SLURM_OPTIONS if getattr(a, o) is not None]
    if a.executor == "local" and given:
        raise C.ConfigError(f"{', '.join(given)}: only for --executor slurm or submitit-local (the local "
                            "executor runs worker processes on this machine)")


def executor_of(a: argparse.Namespace) -> Executor:
    """The executor the command line asks for: ``--executor``, ``--jobs`` and the SLURM options."""
    if a.executor == "local":
        return Local(a.jobs or os.cpu_count() or 1)
    from ungerlib.infra.store import artefact_root

    folder = a.submitit_dir or artefact_root().parent / "submitit"  # beside the (shared) store
    return Submitit(folder, "slurm" if a.executor == "slurm" else "local", a.jobs, a.partition,
                    a.gpus_per_job or 0, a.cpus_per_job or 1, a.time_min or 720)


def by_notebook(profile: str, notebooks: list[str] | None = None, datasets: list[str] | None = None,
                skip_untuned: bool = False, log: Callable[[str], None] = print) -> list[tuple[str, list[Job]]]:
    """The plan notebook by notebook, in the order given (default :data:`NOTEBOOKS`): each notebook's runs
    that no notebook before it reads, so that building the groups in turn finishes whole notebooks early
    (a long regeneration over several sittings leaves complete notebooks behind, not half of every one)."""
    seen: set[Job] = set()
    out = []
    for nb in notebooks or list(NOTEBOOKS):
        jobs = [j for j in plan(profile, [nb], datasets, skip_untuned, log) if j not in seen]
        seen.update(jobs)
        out.append((nb, jobs))
    return out


def _main(a: argparse.Namespace) -> None:
    from ungerlib.infra import runtime

    check_options(a)
    if a.by_notebook:
        groups = by_notebook(a.profile, a.only, a.datasets, a.skip_untuned, runtime.log)
        n, total, built = a.jobs or os.cpu_count() or 1, 0.0, {}
        for nb, jobs in groups:
            todo = [j for j in jobs if not j.cached()]
            if not a.dry_run:
                if todo:  # prefill logs its own estimate
                    runtime.log(f"[prefill] notebook {nb}")
                    built.update(prefill(jobs, log=runtime.log, executor=executor_of(a)))
                continue
            work = estimate(todo)
            total += work
            print(f"notebook {nb}: {len(jobs)} runs not read by an earlier notebook, {len(todo)} to build, "
                  f"about {runtime.duration(work)} of one-thread work "
                  f"({runtime.duration(total / n)} with {n} jobs from now to its end)")
        if not a.dry_run:
            print(json.dumps(built, indent=1))
            runtime.log(f"[prefill] {len(built)} runs built; artefacts in {artefacts_root()}")
        return
    jobs = plan(a.profile, a.only, a.datasets, skip_untuned=a.skip_untuned, log=runtime.log)
    if a.dry_run:
        n = a.jobs or os.cpu_count() or 1
        states = [j.state() for j in jobs]
        for j, s in zip(jobs, states):
            print(f"phase {j.phase}  {s:10s}  {j.kind:18s} {j.label}")
        todo = [j for j, s in zip(jobs, states) if s != "built"]
        work = estimate(todo)
        print(f"[prefill] {len(jobs)} runs: {len(jobs) - len(todo)} built, {len(todo)} to build "
              f"({sum(s == 'checkpoint' for s in states)} resume from a checkpoint); about "
              f"{runtime.duration(work)} of one-thread work, {runtime.duration(work / n)} with {n} jobs")
        return
    built = prefill(jobs, log=runtime.log, executor=executor_of(a))
    print(json.dumps(built, indent=1))
    runtime.log(f"[prefill] {len(built)} runs built; artefacts in {artefacts_root()}")


def artefacts_root() -> str:
    from ungerlib.infra.store import artefact_root

    return str(artefact_root())


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ungerlib prefill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=C.PROFILES)
    ap.add_argument("--only", nargs="*", help=f"notebook prefixes (default: all that train, {' '.join(NOTEBOOKS)})")
    ap.add_argument("--datasets", nargs="*", help="override the profile's data sets")
    ap.add_argument("--jobs", type=int, default=None,
                    help="runs at once (local: worker processes, default one per core; slurm: array parallelism)")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and whether each is built; build nothing")
    ap.add_argument("--by-notebook", action="store_true",
                    help="build notebook by notebook in --only's order (each one's runs finished before the next "
                         "one's start), not all runs by depth: whole notebooks are done early in a long regeneration")
    ap.add_argument("--skip-untuned", action="store_true",
                    help="leave out the baselines that make tune has not selected at their current grids (one line "
                         "names them) instead of stopping; everything else is planned")
    ap.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local",
                    help="where the runs execute: worker processes here (default), SLURM jobs through submitit, "
                         "or submitit's local executor (the SLURM path without a cluster)")
    ap.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    ap.add_argument("--gpus-per-job", type=int, help="GPUs per run (default 0)")
    ap.add_argument("--cpus-per-job", type=int, help="CPU cores per run, also its torch threads (default 1)")
    ap.add_argument("--time-min", type=int, help="time limit per run in minutes (default 720; a run cut off "
                                                  "resumes from its last epoch on the next call)")
    ap.add_argument("--submitit-dir", type=Path, help="submitit's logs and pickles (default: beside the artefact store)")
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    return ap


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
