"""Regenerate the paper's tables and figures: run every numbered notebook with papermill.

    python -m ungerlib.reproduce --profile cpu            # the default, real data on CPU
    python -m ungerlib.reproduce --profile paper          # the paper's settings (GPU)
    python -m ungerlib.reproduce --profile smoke --nbval  # CI: every notebook under nbval

Each notebook gets ``profile`` (and ``datasets`` if given) injected into its ``parameters``
cell. Executed copies go to ``build/<profile>/notebooks/`` (build products, never committed);
tables and figures go to ``figures/<profile>/`` (``build/smoke/figures`` for smoke), and
``run.json`` there records what ran, how long it took and at which commit.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .config import PROFILES
from .report import figures_dir
from .store import REPO_ROOT, atomic_write_json, git_commit

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
    nbs = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [p for p in nbs if any(p.name.startswith(o) for o in only)]
        if not nbs:
            raise SystemExit(f"no notebook in {NOTEBOOKS} matches {only}")
    return nbs


def run(profile: str = "cpu", only: list[str] | None = None, datasets: list[str] | None = None,
        nbval: bool = False) -> dict:
    import papermill as pm

    out_dir = REPO_ROOT / "build" / profile / ("nbval" if nbval else "notebooks")
    out_dir.mkdir(parents=True, exist_ok=True)
    params: dict = {"profile": profile}
    if datasets:
        params["datasets"] = datasets
    record = {"profile": profile, "datasets": datasets, "git_commit": git_commit(), "notebooks": []}
    prepared = []
    for nb in notebooks(only):
        t0 = time.time()
        out = out_dir / nb.name
        print(f"[reproduce] {nb.name} ({'prepare' if nbval else 'run'}, profile={profile})", flush=True)
        pm.execute_notebook(str(nb), str(out), parameters=params, prepare_only=nbval,
                            cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False)
        prepared.append(out)
        record["notebooks"].append({"name": nb.name, "datasets": datasets or "profile default",
                                    "git_commit": record["git_commit"],
                                    "wall_s": round(time.time() - t0, 1), "output": str(out)})
    if nbval:  # execute the parameterised copies under nbval: any failing cell (e.g. a final assert) fails
        cmd = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
               f"--rootdir={out_dir}", *map(str, prepared)]
        t0 = time.time()
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=PROFILES)
    ap.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    ap.add_argument("--datasets", nargs="*", help="override the profile's data sets")
    ap.add_argument("--nbval", action="store_true", help="inject parameters, then execute under pytest --nbval-lax")
    a = ap.parse_args(argv)
    run(a.profile, a.only, a.datasets, a.nbval)


if __name__ == "__main__":
    main()
