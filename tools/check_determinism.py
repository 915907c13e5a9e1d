"""Run the notebooks twice from empty caches and check that every table comes out byte for byte.

    python tools/check_determinism.py [--profile smoke] [--only 01 02 04] [--keep DIR]
    python tools/check_determinism.py --fresh DIR       # one reproduction from empty caches into DIR
    python tools/check_determinism.py --compare A B     # compare two figures folders

CI (``.ci/run``) runs one ``--fresh`` reproduction beside ``make test`` and compares it with the tables
that ``make test``'s own smoke run wrote (``build/smoke/figures``, from caches that start empty on a
fresh machine too): one reproduction fewer than two fresh ones.

Each run is ``python -m ungerlib reproduce --profile P`` in a fresh process with its own empty
``UNGER_ARTEFACTS`` and ``UNGER_FIGURES`` folders, so every artefact is rebuilt. Then every
``.csv`` and ``.md`` of the two runs is compared byte for byte, except columns of wall-clock
time (named ``*_s`` in a CSV, e.g. ``train_s``, and ``... (s)`` or ``... (ms)`` in a table, e.g.
``training time (s)``), which are dropped from both sides first, and tables that measure time as a
whole (provenance ``"wall_clock": true``, e.g. notebook 10's timings), which are not compared. Provenance
records (timestamps) and PNGs (renderer metadata) are not compared. Exit status 1 on any difference.

The guarantee is for one machine: see docs/REPRODUCIBILITY.md for what differs across machines.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPARED = (".csv", ".md")


def _is_timing(name: str) -> bool:
    """A wall-clock column: ``*_s`` in a CSV, ``... (s)`` or ``... (ms)`` in a Markdown table (``report.label``)."""
    name = name.strip()
    return name.endswith("_s") or name.endswith("(s)") or name.endswith("(ms)")


def is_wall_clock(table: Path) -> bool:
    """A table that measures time as a whole (its provenance says ``"wall_clock": true``: notebook 10's
    timings, where every number, ratio and winner comes from a clock)."""
    prov = table.with_name(table.name.rsplit(".", 1)[0] + ".provenance.json")
    try:
        return bool(json.loads(prov.read_text()).get("wall_clock"))
    except (OSError, ValueError):
        return False


HEADER_ROWS = 3  # a CSV of a table with MultiIndex columns has one header row per level


def _csv_rows(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return rows
    timing = {i for r in rows[:HEADER_ROWS] for i, name in enumerate(r) if _is_timing(name)}
    return [[c for i, c in enumerate(r) if i not in timing] for r in rows]


def _md_rows(text: str) -> list[list[str]]:
    """A pipe table's cells per line (other lines as one cell); timing columns dropped."""
    lines = text.splitlines()
    header = next((ln for ln in lines if ln.lstrip().startswith("|")), None)
    if header is None:
        return [[ln] for ln in lines]
    keep = [i for i, name in enumerate(header.split("|")) if not _is_timing(name)]
    return [[c for i, c in enumerate(ln.split("|")) if i in keep] if ln.lstrip().startswith("|") else [ln]
            for ln in lines]


def comparable(path: Path) -> list[list[str]]:
    """The content of a table file as compared: cells per row, wall-clock ``*_s`` columns dropped."""
    text = path.read_text(encoding="utf-8")
    return _csv_rows(text) if path.suffix == ".csv" else _md_rows(text)


def compare(a: Path, b: Path) -> list[str]:
    """Differences between the tables of folders ``a`` and ``b``: one line each (empty: identical).
    Tables that measure time as a whole (:func:`is_wall_clock`) are not compared, only required in both."""
    names = sorted({p.name for d in (a, b) for p in d.iterdir() if p.suffix in COMPARED})
    out = []
    for name in names:
        pa, pb = a / name, b / name
        if not (pa.exists() and pb.exists()):
            out.append(f"{name}: only in {'the first' if pa.exists() else 'the second'} run")
            continue
        if is_wall_clock(pa) or is_wall_clock(pb):
            continue
        ra, rb = comparable(pa), comparable(pb)
        if ra != rb:
            i = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
            show = lambda rows: ",".join(rows[i]) if i < len(rows) else "(no line)"  # noqa: E731
            out.append(f"{name}: line {i + 1} differs: {show(ra)!r} vs {show(rb)!r}")
    return out


def start(profile: str, only: list[str] | None, folder: Path) -> subprocess.Popen:
    """One reproduction into ``folder``, started in its own process (not waited for)."""
    folder = folder.resolve()  # the notebooks' kernels run in notebooks/: a relative path would land there
    env = {**os.environ, "UNGER_ARTEFACTS": str(folder / "artefacts"), "UNGER_FIGURES": str(folder / "figures")}
    cmd = [sys.executable, "-m", "ungerlib.infra.reproduce", "--profile", profile] + (["--only", *only] if only else [])
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)


def run_all(profile: str, only: list[str] | None, folders: list[Path], side_by_side: bool) -> None:
    """The reproductions, side by side (each with the thread count of ``UNGER_THREADS``: 1 under
    ``make determinism``, so two fill two cores) or one after the other."""
    t0 = time.time()

    def finish(f: Path, p: subprocess.Popen) -> None:
        if p.wait() != 0:
            raise SystemExit(f"[determinism] the reproduction into {f} failed (exit {p.returncode})")
        print(f"[determinism] {f.name}: done at {time.time() - t0:.0f} s", flush=True)

    if side_by_side:
        for f, p in [(f, start(profile, only, f)) for f in folders]:
            finish(f, p)
    else:  # a failed run stops the check before the next one starts
        for f in folders:
            finish(f, start(profile, only, f))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--only", nargs="*", help="notebook name prefixes (default: all)")
    ap.add_argument("--keep", help="keep both runs' folders under this path (default: a temporary folder)")
    ap.add_argument("--one-after-the-other", action="store_true",
                    help="run the two reproductions in turn (default: side by side, as two processes)")
    ap.add_argument("--fresh", metavar="DIR", help="only one reproduction, from empty caches, into DIR "
                    "(DIR/artefacts, DIR/figures); compare it later with --compare")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="only compare two figures folders")
    a = ap.parse_args(argv)
    if a.fresh:
        folder = Path(a.fresh)
        if (folder / "artefacts").exists() or (folder / "figures").exists():
            raise SystemExit(f"[determinism] {folder} is not empty: a fresh run needs empty caches")
        run_all(a.profile, a.only, [folder], side_by_side=False)
        return 0
    if a.compare:
        return report(*map(Path, a.compare))
    with tempfile.TemporaryDirectory(prefix="unger-determinism-") as tmp:
        base = Path(a.keep) if a.keep else Path(tmp)
        runs = [base / "run1", base / "run2"]
        run_all(a.profile, a.only, runs, side_by_side=not a.one_after_the_other)
        return report(runs[0] / "figures", runs[1] / "figures")


def report(a: Path, b: Path) -> int:
    """Print every difference between the tables of figures folders ``a`` and ``b``; exit status 1 on any."""
    for folder in (a, b):
        if not folder.is_dir():
            raise SystemExit(f"[determinism] no figures folder {folder}")
    diffs = compare(a, b)
    tables = [p for p in a.iterdir() if p.suffix in COMPARED]
    clocks = sum(map(is_wall_clock, tables))
    for d in diffs:
        print("DIFFERS", d)
    print(f"[determinism] {len(tables) - clocks} table files compared, {len(diffs)} differ (wall-clock columns "
          f"*_s, (s) and (ms) ignored; {clocks} timing tables not compared)", flush=True)
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
