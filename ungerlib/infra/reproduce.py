"""Regenerate the paper's tables and figures: run every numbered notebook with papermill.

    python -m ungerlib reproduce --profile cpu            # the default, real data on CPU
    python -m ungerlib reproduce --profile paper          # the paper's settings (GPU)
    python -m ungerlib reproduce --profile smoke --nbval  # CI: every notebook under nbval
    python -m ungerlib reproduce --check [--profile P]    # list stale tables/figures, exit 1 if any
    python -m ungerlib reproduce --only 11 --datasets Beauty --param models=SASRec,LightGCN discrec=false

Each notebook gets ``profile`` (and ``datasets`` if given, and every ``--param NAME=VALUE``)
injected into its ``parameters`` cell; ``run.json`` records the parameters each notebook ran with.
Tables and figures go to ``figures/<profile>/`` (``build/smoke/figures`` for smoke), the executed
notebooks beside them in ``figures/<profile>/notebooks/`` (committed for ``cpu``: every table and plot
visible without running anything), and ``run.json`` records what ran, how long it took and at which commit.

Progress: a line per notebook (which one, of how many, time so far), and the kernels' stderr
streamed live: per-batch bars, one line per training epoch with the time left ("[stage1] epoch
3/8 ... 12m 30s left"), "resuming from epoch N" when a checkpoint is picked up. The kernels get
the CPU thread policy of :mod:`ungerlib.infra.runtime`. A failing notebook is one line naming the
notebook, the cell and the error; its executed copy holds the traceback.

``--check`` recomputes, with the current code and configs, the key of every artefact each
output's provenance says it read (see :func:`check`); run it before trusting a figure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ungerlib.infra import artefacts, cli, config, runtime
from ungerlib.infra.config import PROFILES
from ungerlib.infra.report import figures_dir, source_hashes
from ungerlib.infra.store import REPO_ROOT, atomic_write_json, checkout_root, config_hash, git_commit

NOTEBOOKS = REPO_ROOT / "notebooks"

# Which notebook regenerates which artefact of the paper ("planned": no notebook yet).
PAPER_ARTEFACTS = {
    "Table 2 (data statistics)": "01_data_and_embeddings",
    "Stage I curves, CKA effect (Eq. 2-5)": "02_stage1",
    "Code report, Fig 8-9 inputs": "03_codes",
    "Table 3 (UNGER row)": "04_stage2",
    "Table 5, Table 6, Fig 8, Fig 9 (ablations: modalities, CKA/IKD, quantisers, K)": "05_ablations",
    "Table 4, Fig 3 (semantic dominance, Eq. 9-10)": "06_semantic_dominance",
    "Fig 5 (t-SNE)": "07_tsne",
    "Fig 6 (scaling)": "08_scaling",
    "Fig 7 (semantic encoders), robustness to alpha and beta": "09_encoders",
    "Fig 2 (inference speed), Table 1 (costs)": "10_efficiency",
    "Table 3 (all rows, significance), the thesis on one engine": "11_overall",
    "Case study: what a unicode means": "12_case_study",
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


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` items -> notebook parameters, values read as ``--set`` reads them
    (:func:`ungerlib.infra.config.parse_value`): JSON where it parses (``discrec=false``, ``epochs=3``,
    ``models='["SASRec"]'``), else text; a text with a comma is a list (``models=SASRec,LightGCN``; a
    trailing comma makes a one-item list: ``models=SASRec,``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, eq, raw = item.partition("=")
        if not eq or not name.isidentifier():
            raise cli.Failed(f"--param {item!r}: expected NAME=VALUE, e.g. discrec=false")
        if name in ("profile", "datasets"):
            raise cli.Failed(f"--param {name}: use --{name} instead")
        out[name] = config.parse_value(raw, tuple[Any, ...] if "," in raw else Any)
    return out


def check_params(nbs: list[Path], params: dict[str, Any]) -> None:
    """Every ``--param`` must be a parameter of every selected notebook (papermill would only warn)."""
    from papermill import inspect_notebook

    for nb in nbs if params else []:
        known = set(inspect_notebook(str(nb)))
        unknown = sorted(set(params) - known)
        if unknown:
            raise cli.Failed(f"--param {', '.join(unknown)}: notebook {nb.name} has no such parameter; "
                             f"its parameters: {', '.join(sorted(known))}")


def check_inputs(profile: str, datasets: list[str] | None) -> None:
    """Fail before any notebook starts: a bad profile setting or an unknown, missing or damaged data set."""
    from ungerlib.infra.config import profile as make_profile
    from ungerlib.model.data import load_dataset
    from ungerlib.infra.report import profile_datasets

    for name in profile_datasets(profile, datasets):
        load_dataset(make_profile(profile, dataset=name).data)


@contextlib.contextmanager
def kernel_environment(notebook: str = "") -> Iterator[None]:
    """The environment notebook kernels start with: the thread policy, text progress bars, and the
    notebook's name (recorded in the provenance of what it saves)."""
    env = {**runtime.thread_env(), "UNGER_PROGRESS": "text", "UNGER_NOTEBOOK": notebook}
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
    if not prepare_only:  # an executed copy is a product: it names no path of this machine
        _without_machine_paths(out)


def run(profile: str = "cpu", only: list[str] | None = None, datasets: list[str] | None = None,
        nbval: bool = False, extra: dict[str, Any] | None = None) -> dict:
    """Run the notebooks ``only`` selects (default all) on ``profile``; ``extra``: more notebook
    parameters (:func:`parse_params`), checked against each notebook's ``parameters`` cell first."""
    nbs = notebooks(only)
    check_params(nbs, extra or {})
    check_inputs(profile, datasets)
    # executed copies are products: beside the figures they made (figures/<profile>/notebooks/), so a
    # visitor sees every table and plot on the repository page; nbval's copies are build files
    out_dir = (checkout_root() or Path.cwd()) / "build" / profile / "nbval" if nbval else figures_dir(profile) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params: dict = {"profile": profile}
    if datasets:
        params["datasets"] = datasets
    params.update(extra or {})
    record = {"profile": profile, "datasets": datasets, "git_commit": git_commit(), "notebooks": []}
    prepared = []
    started = time.time()
    for i, nb in enumerate(nbs, 1):
        t0 = time.time()
        out = out_dir / nb.name
        runtime.log(f"[reproduce] notebook {i}/{len(nbs)}: {nb.stem} ({'prepare' if nbval else 'run'}, "
                    f"profile {profile}; {runtime.duration(t0 - started)} so far)")
        with kernel_environment(nb.stem):
            _execute(nb, out, params, prepare_only=nbval)
        if not nbval:
            runtime.log(f"[reproduce] {nb.stem} done in {runtime.duration(time.time() - t0)}")
        prepared.append(out)
        record["notebooks"].append({"name": nb.name, "datasets": datasets or "profile default",
                                    **({"parameters": extra} if extra else {}),
                                    "git_commit": record["git_commit"],
                                    "wall_s": round(time.time() - t0, 1), "output": _repo_relative(out)})
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
        kept = [{"git_commit": old.get("git_commit", "unknown"), **n, "output": _repo_relative(n.get("output", ""))}
                for n in old.get("notebooks", []) if n["name"] not in ran]  # each notebook keeps its own commit
        record["notebooks"] = sorted(kept + record["notebooks"], key=lambda n: n["name"])
        atomic_write_json(path, record)
    return record


def _without_machine_paths(nb: Path) -> None:
    """Rewrite the executed notebook ``nb`` (a committed product) so that it names no path of the machine
    that ran it, as run.json does not (:func:`_repo_relative`): papermill's input and output paths and
    every path inside the checkout (a figure's returned path) become relative to it, and the kernel's
    temporary cell files (the first line of a warning) become ``<cell>``."""
    text = nb.read_text()
    for root in dict.fromkeys(str(r) for r in (REPO_ROOT, checkout_root()) if r):
        text = text.replace(root + os.sep, "")
    text = re.sub(re.escape(tempfile.gettempdir()) + r"/ipykernel_\d+/\d+\.py", "<cell>", text)
    nb.write_text(text)


def _repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository (run.json must not name the machine that ran it); an
    absolute path from another checkout keeps its part from ``build/`` on."""
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        parts = p.parts
        return str(Path(*parts[len(parts) - 1 - parts[::-1].index("build"):])) if "build" in parts else p.name


# --------------------------------------------------------------------------- stale outputs

OUTPUT_SUFFIXES = (".csv", ".md", ".png")


@dataclass
class Finding:
    """What ``--check`` found about one output: why it is stale (empty: it is current), notes that do
    not make it stale (code that changed while every artefact kept its version), and the command
    that makes it current."""

    stale: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    command: str = ""


def _artefact_problem(art: dict[str, Any], profile: str, memo: dict) -> str | None:
    """Why a recorded artefact would not be the one the current registry and configs use, or None."""
    kind, recorded = art.get("kind"), art.get("key_hash")
    if (kind, recorded, profile) not in memo:
        key = art.get("key") or {}
        try:
            if config_hash(key) != recorded:
                raise ValueError(f"its recorded key does not hash to {recorded}")
            current = artefacts.current_key(kind, key, profile)
            why = None if config_hash(current) == recorded else f"{kind} re-keyed ({artefacts.changes(key, current)})"
        except Exception as e:  # unknown kind, settings that no longer load, missing data files
            why = f"{kind} cannot be recomputed ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        memo[kind, recorded, profile] = why
    return memo[kind, recorded, profile]


def _profile_changes(rec: dict[str, Any], arts: list[dict[str, Any]]) -> list[str]:
    """How the profile's settings, up to the last stage whose artefact ``rec`` read, differ from those
    recorded when it was written (a changed default re-keys what the notebooks would build now)."""
    then, name = rec.get("profile_config"), rec.get("profile")
    if not then or name not in PROFILES:
        return []
    sections = {s for a in arts if a.get("kind") in artefacts.KINDS
                for k in artefacts.get(a["kind"]).chain() for s in k.sections}
    keep = [s for s in config.STAGES if s in sections] + ["seed"]
    now = config.profile(name).to_dict()
    # a setting added since, at the value that reproduces the computation before it (key_omits), is no change
    then = {k: {**artefacts.omitted(k), **v} if isinstance(v, dict) else v for k, v in then.items()}
    diff = artefacts.changes({k: then.get(k) for k in keep}, {k: now.get(k) for k in keep})
    return [f"profile {name} changed ({diff})"] if diff else []


def _command(rec: dict[str, Any], profile: str, name: str = "") -> str:
    """What makes output ``name`` current: the command its record names, else its notebook's run (from
    the record, or for a record older than that field the one notebook source that names the output)."""
    if rec.get("command"):
        return rec["command"]
    if name.startswith("tuning/"):
        from ungerlib.analyses.tuning import COMMAND

        return COMMAND.format(profile)
    nb = rec.get("notebook") or _writer(Path(name).name)
    return f"python -m ungerlib reproduce --profile {profile}" + (f" --only {nb[:2]}" if nb else "")


def _writer(output: str) -> str | None:
    """The notebook whose source names ``output`` as a quoted string, if exactly one does."""
    found = [p.stem for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
             if f'"{output}"' in (text := p.read_text()) or f"'{output}'" in text] if NOTEBOOKS.is_dir() else []
    return found[0] if len(found) == 1 else None


def check(profile: str = "cpu", allow_dirty: bool = False, folder: str | Path | None = None) -> dict[str, Finding]:
    """Every table or figure in ``folder`` (default :func:`~ungerlib.infra.report.figures_dir` of
    ``profile``) with something to say: ``{name: Finding}``; an output is stale when
    ``Finding.stale`` is not empty.

    Stale: no provenance record; a record that names no artefact; an artefact whose key the current
    registry computes differently (:func:`ungerlib.artefacts.current_key`: a setting, a data file or a
    kind's version changed); profile settings changed since in a section it read; made from a tree with
    uncommitted changes (unless ``allow_dirty``) or at an unknown commit. A note, not stale: the code of
    a module it loaded changed while every artefact kept its key ("code changed, version kept").
    """
    d = Path(folder) if folder is not None else figures_dir(profile)
    names: dict[str, set[str]] = {}
    for p in sorted(d.rglob("*")) if d.is_dir() else []:
        rel = str(p.relative_to(d))
        if p.name.endswith(".provenance.json"):
            names.setdefault(rel[: -len(".provenance.json")], set()).add("provenance")
        elif p.suffix in OUTPUT_SUFFIXES and not p.name.startswith(".") and "notebooks" not in p.relative_to(d).parts:
            names.setdefault(rel[: -len(p.suffix)], set()).add(p.suffix)
    out: dict[str, Finding] = {}
    memo: dict = {}
    for name, kinds in sorted(names.items()):
        if "provenance" not in kinds:
            out[name] = Finding([f"no {name}.provenance.json"], command=_command({}, profile, name))
            continue
        rec = json.loads((d / f"{name}.provenance.json").read_text())
        f = Finding(command=_command(rec, rec.get("profile") or profile, name))
        commit = str(rec.get("git_commit", "unknown"))
        if commit in ("", "unknown"):
            f.stale.append("made at an unknown commit")
        elif commit.endswith("+dirty") and not allow_dirty:
            f.stale.append(f"made from uncommitted changes ({commit[:12]})")
        arts = rec.get("artefacts") or []
        if not arts:
            f.stale.append("its provenance names no artefact it read")
        prof = rec.get("profile") or profile
        f.stale += [w for w in (_artefact_problem(a, prof, memo) for a in arts) if w]
        f.stale += _profile_changes(rec, arts)
        code = rec.get("code") or {}
        now = source_hashes(code)
        moved = sorted(m for m, h in code.items() if now.get(m) != h)
        moved += sorted({a["kind"] for a in arts if a.get("code_hash") and a.get("kind") in artefacts.KINDS
                         and artefacts.code_hash(artefacts.get(a["kind"]).code) != a["code_hash"]} - set(moved))
        if moved:
            f.notes.append(f"code changed, version kept: {', '.join(moved[:4])}" + (f" (+{len(moved) - 4})" if len(moved) > 4 else ""))
        if f.stale or f.notes:
            out[name] = f
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ungerlib reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=PROFILES)
    ap.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 02")
    ap.add_argument("--datasets", nargs="*", help="override the profile's data sets")
    ap.add_argument("--param", nargs="*", default=[], metavar="NAME=VALUE",
                    help="more notebook parameters, e.g. --param models=SASRec,LightGCN discrec=false")
    ap.add_argument("--nbval", action="store_true", help="inject parameters, then execute under pytest --nbval-lax")
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)
    ap.add_argument("--check", action="store_true", help="list stale tables/figures (see check()); exit 1 if any")
    ap.add_argument("--allow-dirty", action="store_true", help="with --check: accept outputs of an uncommitted tree")
    ap.add_argument("--verbose", action="store_true", help="with --check: also list the outputs whose code changed at kept versions")
    a = ap.parse_args(argv)
    if a.check:
        return _report_check(a.profile, a.allow_dirty, a.verbose)
    return cli.run(lambda a: run(a.profile, a.only, a.datasets, a.nbval, parse_params(a.param)), a)


def _report_check(profile: str, allow_dirty: bool, verbose: bool = False) -> int:
    """Print one short line per stale output with the command that makes it current, then a summary;
    the exit status (1 if anything is stale). ``verbose`` adds the notes (code changed, version kept)."""
    d = figures_dir(profile)
    found = check(profile, allow_dirty)
    n = len({str(p.relative_to(d)).split(".")[0] for p in d.rglob("*")
             if p.suffix in OUTPUT_SUFFIXES and "notebooks" not in p.relative_to(d).parts})
    where = _repo_relative(d) if d.resolve().is_relative_to(REPO_ROOT) else str(d)
    stale = {k: f for k, f in found.items() if f.stale}
    for name, f in stale.items():
        extra = f" (+{len(f.stale) - 1} more)" if len(f.stale) > 1 else ""
        print(f"STALE {name}: {f.stale[0][:160]}{extra} -> {f.command}")
    noted = [k for k, f in found.items() if f.notes and not f.stale]
    if verbose:
        for name in noted:
            print(f"note  {name}: {found[name].notes[0][:160]}")
    commands = sorted({f.command for f in stale.values()})
    print(f"[check] {where}: {n} tables/figures, {len(stale)} stale, {len(noted)} with code changed at kept versions"
          + (f"; to make them current: {' && '.join(commands)}" if commands else ""), flush=True)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
