"""Artefacts on disk, keyed by the config that made them, written atomically, with provenance.

An artefact is a folder ``<root>/<kind>/<hash>/`` holding whatever files its builder wrote plus
``provenance.json`` (the key config, seed, git commit, data hash, wall time, library versions).
The folder is built under a temporary name and renamed into place only when the builder returns,
so a killed run never leaves a half-written artefact that a later run would trust.

Builders that run long get a persistent ``work`` folder (``<root>/<kind>/<hash>.work/``) for
checkpoints, so a killed run resumes where it stopped.

The root is ``$UNGER_ARTEFACTS`` or ``<repo>/artefacts``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def artefact_root() -> Path:
    return Path(os.environ.get("UNGER_ARTEFACTS", REPO_ROOT / "artefacts"))


def config_hash(key: Any, n: int = 12) -> str:
    """Stable short hash of a JSON-able object (dict key order does not matter)."""
    blob = json.dumps(key, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str:
    """The repo's HEAD commit, with ``+dirty`` when tracked files other than outputs (``figures/``) differ."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!figures"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict[str, str]:
    import sklearn
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "sklearn": sklearn.__version__,
            "machine": f"{platform.machine()} {os.cpu_count()} cpu",
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def provenance(key: Any, **extra: Any) -> dict[str, Any]:
    """The record written next to every artefact and figure."""
    seed = key.get("seed") if isinstance(key, dict) else None
    return {"key": key, "key_hash": config_hash(key), "seed": seed, "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "env": environment(), **extra}


# --------------------------------------------------------------------------- atomic writes

def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a truncated file behind (for checkpoints)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- the store

class Artefact:
    """A built artefact folder: ``path``, its ``provenance`` and small load helpers."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def provenance(self) -> dict[str, Any]:
        return json.loads((self.path / "provenance.json").read_text())

    def npy(self, name: str) -> np.ndarray:
        return np.load(self.path / f"{name}.npy", allow_pickle=False)

    def json(self, name: str) -> Any:
        return json.loads((self.path / f"{name}.json").read_text())

    def __repr__(self) -> str:
        return f"Artefact({self.path})"


Builder = Callable[[Path, Path], dict[str, Any] | None]


def cached(kind: str, key: dict[str, Any], build: Builder, *, force: bool = False,
           root: str | Path | None = None, verbose: bool = True) -> Artefact:
    """Return the artefact ``kind`` for ``key``, calling ``build(out_dir, work_dir)`` if absent.

    ``build`` writes its files into ``out_dir`` (a fresh temporary folder) and may keep
    checkpoints in ``work_dir`` (kept across killed runs, deleted after success). Whatever dict
    it returns is merged into the provenance record (metrics, wall time, notes).
    """
    root = Path(root) if root is not None else artefact_root()
    final = root / kind / config_hash(key)
    if final.exists() and not force:
        if verbose:
            print(f"[store] reusing {kind} {final.name}")
        record_read(kind, key)
        return Artefact(final)
    work = final.with_name(final.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    t0 = time.time()
    try:
        extra = build(tmp, work) or {}
        atomic_write_json(tmp / "provenance.json",
                          provenance(key, kind=kind, wall_s=round(time.time() - t0, 2), **extra))
        if final.exists():  # force=True: replace the old one
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    if verbose:
        print(f"[store] built {kind} {final.name} in {time.time() - t0:.1f}s")
    record_read(kind, key)
    return Artefact(final)


# --------------------------------------------------------------------------- artefacts read

# Every artefact :func:`cached` returned in this process, in order, repeats included: the record
# behind the ``artefacts`` list of a table's or figure's provenance (``ungerlib.report``).
_READS: list[dict[str, Any]] = []


def record_read(kind: str, key: dict[str, Any]) -> None:
    """Note that this process used artefact ``kind`` with ``key`` (called by :func:`cached` on reuse
    and after a build). The key is stored as its JSON round trip, the form provenance records."""
    _READS.append({"kind": kind, "key_hash": config_hash(key),
                   "key": json.loads(json.dumps(key, sort_keys=True, default=str))})


def read_marker() -> int:
    """A position in the record: ``artefacts_read(since=read_marker())`` later lists what came after."""
    return len(_READS)


def artefacts_read(since: int = 0) -> list[dict[str, Any]]:
    """The artefacts returned since ``since`` (default: since the process started), each once, sorted
    by kind and key hash: ``[{"kind", "key_hash", "key"}, ...]``."""
    unique = {(r["kind"], r["key_hash"]): r for r in _READS[since:]}
    return [unique[k] for k in sorted(unique)]
