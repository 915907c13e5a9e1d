"""``python -m ungerlib <command> [options]``: the command-line tools, one entry point.

    python -m ungerlib pipeline --profile smoke          # every stage for one data set
    python -m ungerlib reproduce --profile cpu            # run the notebooks (tables and figures)
    python -m ungerlib reproduce --check --profile cpu    # which outputs are stale, and what to run
    python -m ungerlib prefill --profile cpu --dry-run    # the runs the notebooks read, and an estimate
    python -m ungerlib tune --profile cpu                 # the validation grids; writes the selection
    python -m ungerlib golden --check                     # every kind's numbers at its version
    python -m ungerlib table3 --models SASRec             # one baseline's validation grid
    python -m ungerlib neighbours --dataset Sports        # the Stage I neighbours lambda on validation
    python -m ungerlib diagnostics --dataset Toys         # where UNGER wins and loses (validation)
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"pipeline": "infra.pipeline", "reproduce": "infra.reproduce", "prefill": "infra.prefill",
            "tune": "analyses.tuning", "golden": "infra.golden", "table3": "analyses.table3",
            "neighbours": "model.neighbours", "diagnostics": "analyses.diagnostics"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(f"ungerlib.{COMMANDS[argv[0]]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
