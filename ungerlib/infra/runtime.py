"""How ungerlib runs on this machine: CPU threads, subnormal floats, GPU precision and progress lines. Nothing here
changes a result beyond float rounding and what rounding does to a training run, and no artefact key
holds any of it (every provenance record names the thread count and the flush-to-zero mode).

Subnormal floats. Weight decay drives weights that get no gradient towards zero, into the subnormal
range (|x| < 1.2e-38), where an Intel Xeon's float math is two orders of magnitude slower; a Stage II
epoch slowed more than fourfold as they accumulated. :func:`flush_denormals`, called by ``import
ungerlib``, makes torch's CPU math treat them as zero (the FTZ / DAZ modes). Values that small are zero
for every purpose, but like a change of thread count the mode changes float rounding, so a training run
can end elsewhere within noise (measurements: ``docs/experiments/settings_choices.md``).

Threads. torch's intra-op pool has one thread per core, and OpenMP's idle threads spin while they
wait for work: on a machine where anything else runs, the threads fight for the cores and
throughput collapses (``bench/bench_threads.py``; measured 4-9x slower steps).
The collapse comes from the spinning, not from the thread count: with idle threads sleeping
(``OMP_WAIT_POLICY=PASSIVE``) two threads were as fast as one or faster in every condition. The
policy (:func:`thread_policy`, :func:`thread_env`):

* idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless ``OMP_WAIT_POLICY`` is set;
* ``UNGER_THREADS=N`` uses N threads (``all`` or 0: one per core); unset: ``OMP_NUM_THREADS`` if
  set, else torch's default, one per core.

The wait policy only takes effect if it is in the environment before torch is imported: ``import
ungerlib`` puts it there when torch is not imported yet, the command-line entry points call
:func:`configure_threads` first, and the notebooks runner starts every kernel with
:func:`thread_env`. Who imports torch before ungerlib sets ``OMP_WAIT_POLICY=PASSIVE`` themselves.

Precision. ``stage1.precision`` and ``stage2.precision`` (:func:`autocast`): ``auto``, the default, is
bf16 autocast on a CUDA GPU that has bf16 and float32 everywhere else, so every CPU run is float32.
Unlike the thread count it changes more than the last bits; like the device it is not in a key at
``auto`` (provenance names the GPU); ``fp32`` and ``bf16`` are keyed.

Under torchrun only rank 0 prints progress (:func:`log`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Iterable, Iterator, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
_configured = False


def thread_policy() -> int | None:
    """The intra-op thread count the policy asks for (None: torch's default, one per core)."""
    raw = os.environ.get("UNGER_THREADS", "").strip().lower()
    if raw in ("all", "0"):
        return None
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if n < 0:
            from ungerlib.infra.config import ConfigError

            raise ConfigError(f"UNGER_THREADS must be a number of threads or 'all', got {raw!r}")
        return n
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)  # the user's own choice
    return None


def thread_env() -> dict[str, str]:
    """Environment variables that apply the policy to a process started with them (notebook kernels)."""
    n = thread_policy()
    env = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    if n is not None:
        env.update(UNGER_THREADS=str(n), OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
    else:
        env["UNGER_THREADS"] = "all"
    return env


def apply_thread_env() -> None:
    """Set the policy's environment variables as defaults if torch is not imported yet (called by
    ``import ungerlib``); an explicit ``OMP_NUM_THREADS`` or ``OMP_WAIT_POLICY`` is kept."""
    if "torch" in sys.modules:
        return
    try:
        env = thread_env()
    except ValueError:
        return  # a bad UNGER_THREADS: configure_threads() reports it
    for k, v in env.items():
        if k != "UNGER_THREADS":
            os.environ.setdefault(k, v)


# Whether flush_denormals() turned the mode on in this process (None: never called); torch cannot be
# asked, so provenance records (store.environment) read this.
FLUSH_DENORMAL: bool | None = None


def flush_denormals() -> bool:
    """Treat subnormal floats as zero in torch's CPU math from now on (module docstring); threads that
    torch starts later inherit the mode. False where the CPU has no such mode."""
    global FLUSH_DENORMAL
    import torch

    FLUSH_DENORMAL = torch.set_flush_denormal(True)
    return FLUSH_DENORMAL


def configure_threads() -> int:
    """Apply the thread policy to this process (entry points call it first); returns torch's thread count."""
    global _configured
    apply_thread_env()
    import torch

    if not _configured:
        n = thread_policy()
        if n is not None:
            torch.set_num_threads(n)
        _configured = True
    return torch.get_num_threads()


def precision(setting: str, device: "torch.device") -> str:
    """The precision a ``precision`` setting means on ``device``: ``fp32`` or ``bf16``. ``auto``: bf16 on a
    CUDA GPU with bf16 (compute capability 8.0 and later), fp32 elsewhere; ``bf16`` on a GPU without it
    is a ConfigError (on a CPU it is torch's CPU autocast: slow without AMX, but it runs)."""
    import torch

    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if setting == "auto":
        return "bf16" if cuda_bf16 else "fp32"
    if setting == "bf16" and device.type == "cuda" and not cuda_bf16:
        from ungerlib.infra.config import ConfigError

        raise ConfigError(f"precision 'bf16' needs a GPU with bf16 (compute capability 8.0+); "
                          f"{torch.cuda.get_device_name(device)} has none: use 'fp32' or 'auto'")
    return setting


def autocast(setting: str, device: "torch.device") -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 where :func:`precision` says bf16, else a context that does nothing."""
    import torch

    if precision(setting, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def log(msg: str) -> None:
    """One progress line on stderr (shown live by the notebooks runner and the command line); under
    torchrun on rank 0 only."""
    if os.environ.get("RANK", "0") not in ("", "0"):
        return
    print(msg, file=sys.stderr, flush=True)


def bar(it: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """A tqdm progress bar on stderr (refreshing at most every 10 s when not on a terminal); a text bar
    when ``UNGER_PROGRESS=text`` (what the notebooks runner sets: it streams the kernels' stderr)."""
    if os.environ.get("UNGER_PROGRESS") == "text":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return iter(tqdm(it, desc=desc, total=total, disable=not enabled, leave=False, file=sys.stderr,
                     mininterval=0.5 if tty else 10.0, dynamic_ncols=tty))


def duration(seconds: float) -> str:
    """'1h 05m', '12m 30s' or '45s'."""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def eta(done: int, total: int, started: float) -> str:
    """'12m 30s left' from the mean time per unit so far."""
    if done <= 0 or done >= total:
        return "0s left" if done >= total else "?"
    return duration((time.time() - started) / done * (total - done)) + " left"
