"""How ungerlib runs on this machine: CPU threads and progress lines. Nothing here changes a number
(see ``config.NEUTRAL_MODULES``), so editing it never retrains an artefact.

Threads: torch's intra-op pool defaults to one thread per core. On a machine shared with other
jobs those threads wait on each other and throughput collapses (measured in
``bench/bench_threads.py``). :func:`configure_threads` applies the policy once per process:
``$UNGER_THREADS`` if set, else torch's default.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_configured = False


def configure_threads() -> int:
    """Apply the thread policy (``$UNGER_THREADS``, else torch's default) once; returns the count."""
    global _configured
    import torch

    if not _configured:
        n = os.environ.get("UNGER_THREADS")
        if n:
            torch.set_num_threads(max(1, int(n)))
        _configured = True
    return torch.get_num_threads()


def log(msg: str) -> None:
    """One progress line on stderr (shown live by the notebooks runner and the command line)."""
    print(msg, file=sys.stderr, flush=True)


def bar(it: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """A tqdm progress bar on stderr (refreshing at most every 10 s when not on a terminal)."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    return iter(tqdm(it, desc=desc, total=total, disable=not enabled, leave=False, file=sys.stderr,
                     mininterval=0.5 if tty else 10.0, dynamic_ncols=tty))


def eta(done: int, total: int, started: float) -> str:
    """'12m 30s left' from the mean time per unit so far."""
    if done <= 0 or done >= total:
        return "0s left" if done >= total else "?"
    left = (time.time() - started) / done * (total - done)
    m, s = divmod(int(left), 60)
    h, m = divmod(m, 60)
    return (f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s") + " left"
