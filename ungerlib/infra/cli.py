"""What the command-line entry points (``python -m ungerlib pipeline``, ``python -m ungerlib reproduce``)
share: a problem the user can fix (a bad setting, a damaged data file or checkpoint, a missing file)
is one line on stderr naming it, and a non-zero exit status; ``--traceback`` (or
``UNGER_TRACEBACK=1``) shows the full traceback instead. Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from ungerlib.infra.config import ConfigError

TRACEBACK_HELP = "show the full traceback of an error instead of one line (also: UNGER_TRACEBACK=1)"
SET_HELP = ("override a setting: section.key=value, value as plain text or JSON, e.g. "
            "--set stage2.epochs=3 codes.method=rqvae stage1.lr=2e-3 eval.ks=10,20 seed=1")


class Failed(Exception):
    """A failure already described in one line (e.g. a notebook that failed, with where to read more)."""


def known_problem(e: BaseException) -> bool:
    """Is ``e`` a problem with the user's input or files (one line), rather than a bug (traceback)?"""
    from ungerlib.model.data import DataError
    from ungerlib.model.train import TrainingDiverged

    if isinstance(e, (Failed, ConfigError, DataError, TrainingDiverged, FileNotFoundError, PermissionError)):
        return True
    # a damaged checkpoint (ungerlib.model.train): the message names the file and what to do
    return isinstance(e, RuntimeError) and str(e).startswith("checkpoint ")


def one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, FileNotFoundError) and e.filename:
        msg = f"no such file: {e.filename}"
    return msg


def run(main: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    """Call ``main(args)``; a known problem -> one line on stderr and exit status 1, Ctrl-C -> 130."""
    show = getattr(args, "traceback", False) or os.environ.get("UNGER_TRACEBACK", "") not in ("", "0")
    try:
        main(args)
        return 0
    except KeyboardInterrupt:
        if show:
            raise
        print("interrupted: run the same command again to resume from the last finished epoch", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted into known problems and bugs below
        if show or not known_problem(e):
            raise
        print(f"error: {one_line(e)}  (--traceback for details)", file=sys.stderr, flush=True)
        return 1
