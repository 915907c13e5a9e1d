"""Artefacts on disk, keyed by the config that made them, written atomically, with provenance.

An artefact is a folder ``<root>/<kind>/<hash>/`` holding whatever files its builder wrote plus
``provenance.json`` (the key config, seed, git commit, data hash, wall time, library versions).
The folder is built under a temporary name and renamed into place only when the builder returns,
so a killed run never leaves a half-written artefact that a later run would trust.

Builders that run long get a persistent ``work`` folder (``<root>/<kind>/<hash>.work/``) for
checkpoints, so a killed run resumes where it stopped. A failed build removes its temporary folder
and, if no checkpoint was written, its work folder; the leftovers of a killed build (its process is
gone) are removed by the next build in the same folder.

Files and folders are written with the permissions the umask allows (a shared cache stays readable
to colleagues with umask 022), not the owner-only ones of :mod:`tempfile`.

The root (:func:`artefact_root`) is ``$UNGER_ARTEFACTS``, else ``$XDG_CACHE_HOME/ungerlib/artefacts``
(``~/.cache/ungerlib/artefacts``), the convention of Hugging Face and torch: outside any checkout, so a
new clone of the same code reuses what an earlier one built. What a key holds, and which kinds exist,
is :mod:`ungerlib.artefacts`' business; this module only stores folders under the keys it is given.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ungerlib.infra import runtime

REPO_ROOT = Path(__file__).resolve().parents[2]


def checkout_root() -> Path | None:
    """The source checkout the package runs from (``pip install -e .`` or ``PYTHONPATH``), or None
    for an installed package (a wheel in site-packages has no ``pyproject.toml`` and ``notebooks/`` beside it)."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "notebooks").is_dir() else None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ungerlib`` (``~/.cache/ungerlib``): where artefacts are kept by default."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ungerlib"


def artefact_root() -> Path:
    """``$UNGER_ARTEFACTS``, else ``$XDG_CACHE_HOME/ungerlib/artefacts`` (``~/.cache/ungerlib/artefacts``)."""
    env = os.environ.get("UNGER_ARTEFACTS")
    return Path(env).expanduser() if env else user_cache_dir() / "artefacts"


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
    """The repo's HEAD commit, with ``+dirty`` when tracked files other than outputs (``figures/``) differ;
    for an installed package (no checkout), ``ungerlib <version> (installed)``."""
    if checkout_root() is None:  # site-packages may sit inside some other git repository: do not ask git
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"ungerlib {version('ungerlib')} (installed)"
        except PackageNotFoundError:
            return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!figures"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name and its widest vector extension (``amx``, ``avx512``, ``avx2`` or none),
    from ``/proc/cpuinfo``; ``platform.processor()`` where that file does not exist. Two hosts of one
    cloud model name can differ in their extensions, and math libraries pick their kernels (and so
    their float rounding) by extension."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                platform.processor() or "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    ext = next((e for e, f in (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2")) if f in flags), None)
    return f"{name} ({ext})" if ext else name


def environment() -> dict[str, str]:
    import sklearn
    import torch



    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "sklearn": sklearn.__version__,
            "machine": f"{platform.machine()} {os.cpu_count()} cpu",
            "cpu": cpu_name(),
            # float sums depend on the thread count and on the flush-to-zero mode (runtime.flush_denormals),
            # so a run's numbers can only be compared with runs under the same two (docs/REPRODUCIBILITY.md)
            "torch_threads": str(torch.get_num_threads()),
            "flush_denormal": str(runtime.FLUSH_DENORMAL),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"}


def provenance(key: Any, **extra: Any) -> dict[str, Any]:
    """The record written next to every artefact and figure."""
    seed = key.get("seed") if isinstance(key, dict) else None
    return {"key": key, "key_hash": config_hash(key), "seed": seed, "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "env": environment(), **extra}


# --------------------------------------------------------------------------- atomic writes

def umask() -> int:
    """The process's umask (read without changing it where the OS allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-by-setting, restored at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file renamed into place; mode 0666 minus the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it 0600
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

_HOST = socket.gethostname().replace(".", "_")
_OLD_TMP_DAYS = 7  # temporary folders named without their process (older code): removed after a week


def _build_dir(final: Path) -> Path:
    """A fresh temporary folder beside ``final`` whose name says which process builds it:
    ``.<hash>.<host>.<pid>.<random>``, so a later build can tell a killed build's leftovers from a
    live one. Mode 0777 minus the umask (mkdtemp makes it 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.{_HOST}.{os.getpid()}."))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _live(tmp: Path) -> bool:
    """Might a build still be writing temporary folder ``tmp`` (``.<hash>.<host>.<pid>.<random>``)?"""
    parts = tmp.name[1:].split(".")
    if len(parts) == 4 and parts[2].isdigit():
        return parts[1] != _HOST or _pid_alive(int(parts[2]))  # another machine's: cannot tell, keep
    try:  # older name without a process: assume live unless untouched for a week
        return time.time() - tmp.stat().st_mtime < _OLD_TMP_DAYS * 86400
    except FileNotFoundError:
        return False


def sweep(folder: str | Path) -> list[Path]:
    """Remove what killed builds left in an artefact kind's ``folder``: temporary ``.<hash>.*`` folders
    of processes that are gone, and empty ``<hash>.work`` folders no live build uses. Returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, live = [], set()
    for p in folder.iterdir():
        if p.name.startswith(".") and p.is_dir() and not p.name.endswith(".tmp"):
            if _live(p):
                live.add(p.name[1:].split(".")[0])
            else:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    for p in folder.glob("*.work"):
        if p.is_dir() and p.name[:-5] not in live and not any(p.iterdir()):
            try:
                p.rmdir()
                removed.append(p)
            except OSError:  # a build put a checkpoint there meanwhile
                pass
    return removed


def _drop_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when empty: a checkpoint to resume from is kept
    except OSError:
        pass


def path(kind: str, key: dict[str, Any], root: str | Path | None = None) -> Path:
    """Where artefact ``kind`` with ``key`` lives (whether or not it is built)."""
    return (Path(root) if root is not None else artefact_root()) / kind / config_hash(key)


def work_dir(kind: str, key: dict[str, Any], root: str | Path | None = None) -> Path:
    """The folder where a build of artefact ``kind`` with ``key`` keeps its checkpoints."""
    final = path(kind, key, root)
    return final.with_name(final.name + ".work")


def state(kind: str, key: dict[str, Any], root: str | Path | None = None) -> str:
    """``built``; ``checkpoint`` when a killed build left a checkpoint (the next build resumes it);
    else ``missing``."""
    if path(kind, key, root).is_dir():
        return "built"
    work = work_dir(kind, key, root)
    return "checkpoint" if work.is_dir() and any(work.iterdir()) else "missing"


def _reused(kind: str, key: dict[str, Any], final: Path) -> Artefact:
    """The built artefact in ``final``, recorded as read with the code hash of its provenance."""
    art = Artefact(final)
    record_read(kind, key, art.provenance.get("code_hash"))
    return art


def read(kind: str, key: dict[str, Any], root: str | Path | None = None) -> Artefact:
    """The built artefact ``kind`` for ``key``, recorded as read; ``KeyError`` (one line, with the key's
    hash) when it is not built. Never builds, and touches nothing in the store."""
    final = path(kind, key, root)
    if not final.is_dir():
        raise KeyError(f"no built {kind} {final.name} in {final.parent.parent}")
    return _reused(kind, key, final)


def cached(kind: str, key: dict[str, Any], build: Builder, *, force: bool = False,
           root: str | Path | None = None, verbose: bool = True, record: dict[str, Any] | None = None,
           together: bool = False) -> Artefact:
    """Return the artefact ``kind`` for ``key``, calling ``build(out_dir, work_dir)`` if absent.

    ``build`` writes its files into ``out_dir`` (a fresh temporary folder) and may keep
    checkpoints in ``work_dir`` (kept across killed runs, deleted after success). Whatever dict
    it returns is merged into the provenance record (metrics, wall time, notes), as is ``record``.

    Under torchrun (:mod:`ungerlib.infra.distributed`) only rank 0 writes to the store: it decides
    whether to build and builds, alone, while the other ranks wait and then load; with ``together``
    (a DDP training) every rank runs ``build``, the others into a scratch folder outside the store
    that is then removed.
    """
    from ungerlib.infra import distributed

    g = distributed.current()
    if g.world == 1:
        return _cached(kind, key, build, force, root, verbose, record)
    final = path(kind, key, root)
    if distributed.broadcast(final.exists() and not force):  # rank 0 decides, for every rank
        return _reused(kind, key, final)
    if g.is_main():
        if together:
            art = _cached(kind, key, build, force, root, verbose, record)
        else:
            with distributed.alone():  # nothing nested in this build waits for the other ranks
                art = _cached(kind, key, build, force, root, verbose, record)
    elif together:
        scratch = Path(tempfile.mkdtemp(prefix=f"ungerlib-rank{g.rank}-"))
        try:
            build(scratch, work_dir(kind, key, root))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    distributed.barrier()  # rank 0's folder is in place
    if not g.is_main():
        art = _reused(kind, key, final)
    return art


def _cached(kind: str, key: dict[str, Any], build: Builder, force: bool, root: str | Path | None,
            verbose: bool, record: dict[str, Any] | None) -> Artefact:
    """:func:`cached` in one process."""
    final = path(kind, key, root)
    if final.exists() and not force:
        if verbose:
            runtime.log(f"[store] reusing {kind} {final.name}")
        return _reused(kind, key, final)
    with _build_lock(kind, final):
        if final.exists() and not force:  # another process built it while this one waited
            if verbose:
                runtime.log(f"[store] reusing {kind} {final.name}, built meanwhile by another process")
            return _reused(kind, key, final)
        return _build(kind, key, build, final, root, verbose, record)


@contextlib.contextmanager
def _build_lock(kind: str, final: Path) -> Iterator[None]:
    """One build of an artefact at a time, across processes: an exclusive ``flock`` on
    ``<store>/.locks/<kind>.<hash>.lock``, which the OS releases when its holder exits or is killed. A
    second process (another ``make figures``, or a worker left running by a killed one) waits, says so,
    then reuses what the first built instead of training the same run beside it from the same checkpoint."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    locks = final.parent.parent / ".locks"  # outside the kinds' folders, which hold only artefacts
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{kind}.{final.name}.lock", "a") as f:  # closing the file releases the lock
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            runtime.log(f"[store] another process is building {kind} {final.name}; waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _earlier_attempts(attempt: Path, work: Path) -> float:
    """Seconds of work that killed earlier builds left in ``work`` for this one to resume: each from its
    start (recorded in ``attempt``) to its last checkpoint (the newest file in ``work``); what came after
    the checkpoint is redone, so it is not counted. 0 for a first build or an unreadable record."""
    try:
        rec = json.loads(attempt.read_text())
        files = [p.stat().st_mtime for p in work.iterdir()] if work.is_dir() else []
        return float(rec["earlier_s"]) + max(max(files, default=0.0) - float(rec["started"]), 0.0)
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


# Seconds spent in builds nested in each build in progress, innermost last (an evaluation that trains its
# model first): a record's ``own_s`` is its ``wall_s`` less these, what prefill's estimate needs.
_NESTED: list[float] = []


def _build(kind: str, key: dict[str, Any], build: Builder, final: Path, root: str | Path | None,
           verbose: bool, record: dict[str, Any] | None) -> Artefact:
    """Build ``kind`` into ``final`` (the caller holds its lock): in a temporary folder beside it, with
    a work folder for checkpoints, published by one rename with its provenance."""
    sweep(final.parent)  # a killed build's leftovers (never a live build's, nor a checkpoint)
    work = work_dir(kind, key, root)
    work.mkdir(parents=True, exist_ok=True)
    tmp = _build_dir(final)
    t0 = time.time()
    attempt = final.parent.parent / ".locks" / f"{kind}.{final.name}.attempt.json"
    attempt.parent.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_attempts(attempt, work)
    atomic_write_json(attempt, {"started": t0, "earlier_s": earlier})
    _NESTED.append(0.0)
    try:
        extra = build(tmp, work) or {}
        wall = time.time() - t0
        atomic_write_json(tmp / "provenance.json", provenance(
            key, kind=kind, wall_s=round(earlier + wall, 2), own_s=round(earlier + wall - _NESTED[-1], 2),
            **({"resumed_after_s": round(earlier, 2)} if earlier else {}), **(record or {}), **extra))
        if final.exists():  # force=True: replace the old one
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _drop_if_empty(work)
        raise
    finally:
        _NESTED.pop()
        if _NESTED:  # this build ran inside another one's: that one's own time excludes it
            _NESTED[-1] += time.time() - t0
    shutil.rmtree(work, ignore_errors=True)
    attempt.unlink(missing_ok=True)
    if verbose:
        runtime.log(f"[store] built {kind} {final.name} in {time.time() - t0:.1f}s")
    record_read(kind, key, (record or {}).get("code_hash"))
    return Artefact(final)


# --------------------------------------------------------------------------- artefacts read

# Every artefact :func:`cached` returned in this process, in order, repeats included: the record
# behind the ``artefacts`` list of a table's or figure's provenance (``ungerlib.infra.report``).
_READS: list[dict[str, Any]] = []


def record_read(kind: str, key: dict[str, Any], code_hash: str | None = None) -> None:
    """Note that this process used artefact ``kind`` with ``key`` (called by :func:`cached` on reuse
    and after a build), and the hash of the code that built it where known. The key is stored as its
    JSON round trip, the form provenance records."""
    _READS.append({"kind": kind, "key_hash": config_hash(key),
                   "key": json.loads(json.dumps(key, sort_keys=True, default=str)),
                   **({"code_hash": code_hash} if code_hash else {})})


def read_marker() -> int:
    """A position in the record: ``artefacts_read(since=read_marker())`` later lists what came after."""
    return len(_READS)


def artefacts_read(since: int = 0) -> list[dict[str, Any]]:
    """The artefacts returned since ``since`` (default: since the process started), each once, sorted
    by kind and key hash: ``[{"kind", "key_hash", "key"}, ...]``."""
    unique = {(r["kind"], r["key_hash"]): r for r in _READS[since:]}
    return [unique[k] for k in sorted(unique)]
