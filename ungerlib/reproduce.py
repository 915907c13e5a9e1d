"""Regenerate the paper's tables and figures: run every numbered notebook with papermill.

    python -m ungerlib.reproduce --profile cpu            # the default, real data on CPU
    python -m ungerlib.reproduce --profile paper          # the paper's settings (GPU)
    python -m ungerlib.reproduce --profile smoke --nbval  # CI: every notebook under nbval

Each notebook gets ``profile`` (and ``datasets`` if given) injected into its ``parameters``
cell. Executed copies go to ``build/<profile>/notebooks/`` (build products, never committed);
tables and figures go to ``figures/<profile>/`` (``build/smoke/figures`` for smoke), and
``run.json`` there records what ran, how long it took and at which commit.

Progress: a line per notebook (which one, of how many, time so far), and the kernels' stderr
streamed live: per-batch bars, one line per training epoch with the time left ("[stage1] epoch
3/8 ... 12m 30s left"), "resuming from epoch N" when a checkpoint is picked up. The kernels get
the CPU thread policy of :mod:`ungerlib.runtime`. A failing notebook is one line naming the
notebook, the cell and the error; its executed copy holds the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from . import cli, runtime
from .config import PROFILES
from .report import figures_dir
from .store import REPO_ROOT, atomic_write_json, checkout_root, git_commit

NOTEBOOKS = REPO_ROOT / "notebooks"

# Which notebook regenerates which artefact of the paper ("planned": no notebook yet).
PAPER_ARTEFACTS = {
    "Table 2 (data statistics)": "01_data_and_embeddings",
    "Stage I curves, CKA effect (Eq. 2-5)": "02_stage1",
    "Code report, Fig 8-9 inputs": "03_codes",
    "Table 3 (UNGER row)": "04_stage2",
    "Table 5, Table 6 (ablations)": "05_ablations",
    "Table 4, Fig 3 (semantic dominance, Eq. 9-10)": "06_semantic_dominance",
    "Fig 5 (t-SNE)": "07_tsne",
    "Fig 6 (scaling)": "08_scaling",
    "Fig 7-9 (encoders, quantisers, K)": "09_hyperparameters",
    "Fig 2 (inference speed)": "10_inference_speed",
    "Table 3 (all rows, significance)": "11_overall",
}


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally those whose name starts with one of ``only``."""
    if not NOTEBOOKS.is_dir():
        raise cli.Failed(f"no notebooks at {NOTEBOOKS}: the notebooks runner needs a source checkout "
                         "(git clone, then pip install -e .); an installed package has the library only")
    nbs = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [p for p in nbs if any(p.name.startswith(o) for o in only)]
        if not nbs:
            raise cli.Failed(f"no notebook in {NOTEBOOKS} matches {only}")
    return nbs


def check_inputs(profile: str, datasets: list[str] | None) -> None:
    """Fail before any notebook starts: a bad profile setting or an unknown, missing or damaged data set."""
    from .config import profile as make_profile
    from .data import load_dataset
    from .report import profile_datasets

    for name in profile_datasets(profile, datasets):
        load_dataset(make_profile(profile, dataset=name).data)


@contextlib.contextmanager
def kernel_environment() -> Iterator[None]:
    """The environment notebook kernels start with: the thread policy, text progress bars."""
    env = {**runtime.thread_env(), "UNGER_PROGRESS": "text"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _papermill(nb: Path, out: Path, params: dict, prepare_only: bool) -> None:
    import papermill as pm

    pm.execute_notebook(str(nb), str(out), parameters=params, prepare_only=prepare_only,
                        cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False,
                        stdout_file=None if prepare_only else sys.stdout,
                        stderr_file=None if prepare_only else sys.stderr)


def _execute(nb: Path, out: Path, params: dict, prepare_only: bool) -> None:
    """Run one notebook with papermill, streaming the kernel's output; a failure -> :class:`cli.Failed`."""
    from papermill.exceptions import PapermillExecutionError

    try:
        _papermill(nb, out, params, prepare_only)
    except PapermillExecutionError as e:
        raise cli.Failed(f"notebook {nb.name} failed in cell {e.exec_count}: {e.ename}: "
                         f"{' '.join(str(e.evalue).split())[:500]} (traceback in {out})") from None


def run(profile: str = "cpu", only: list[str] | None = None, datasets: list[str] | None = None,
        nbval: bool = False) -> dict:
    nbs = notebooks(only)
    check_inputs(profile, datasets)
    out_dir = (checkout_root() or Path.cwd()) / "build" / profile / ("nbval" if nbval else "notebooks")
    out_dir.mkdir(parents=True, exist_ok=True)
    params: dict = {"profile": profile}
    if datasets:
        params["datasets"] = datasets
    record = {"profile": profile, "datasets": datasets, "git_commit": git_commit(), "notebooks": []}
    prepared = []
    started = time.time()
    for i, nb in enumerate(nbs, 1):
        t0 = time.time()
        out = out_dir / nb.name
        runtime.log(f"[reproduce] notebook {i}/{len(nbs)}: {nb.stem} ({'prepare' if nbval else 'run'}, "
                    f"profile {profile}; {runtime.duration(t0 - started)} so far)")
        with kernel_environment():
            _execute(nb, out, params, prepare_only=nbval)
        if not nbval:
            runtime.log(f"[reproduce] {nb.stem} done in {runtime.duration(time.time() - t0)}")
        prepared.append(out)
        record["notebooks"].append({"name": nb.name, "datasets": datasets or "profile default",
                                    "git_commit": record["git_commit"],
                                    "wall_s": round(time.time() - t0, 1), "output": str(out)})
    if nbval:  # execute the parameterised copies under nbval: any failing cell (e.g. a final assert) fails
        cmd = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
               f"--rootdir={out_dir}", *map(str, prepared)]
        t0 = time.time()
        with kernel_environment():
            rc = subprocess.call(cmd, cwd=NOTEBOOKS)
        record["nbval"] = {"returncode": rc, "wall_s": round(time.time() - t0, 1)}
        if rc != 0:
            raise SystemExit(rc)
    else:  # update the record of the notebooks that ran, keep the others'
        path = figures_dir(profile) / "run.json"
        old = json.loads(path.read_text()) if path.exists() else {"notebooks": []}
        ran = {n["name"] for n in record["notebooks"]}
        kept = [{"git_commit": old.get("git_commit", "unknown"), **n}  # each notebook keeps its own commit
                for n in old.get("notebooks", []) if n["name"] not in ran]
        record["notebooks"] = sorted(kept + record["notebooks"], key=lambda n: n["name"])
        atomic_write_json(path, record)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ungerlib.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=PROFILES)
    ap.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    ap.add_argument("--datasets", nargs="*", help="override the profile's data sets")
    ap.add_argument("--nbval", action="store_true", help="inject parameters, then execute under pytest --nbval-lax")
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    a = ap.parse_args(argv)
    return cli.run(lambda a: run(a.profile, a.only, a.datasets, a.nbval), a)


if __name__ == "__main__":
    sys.exit(main())
