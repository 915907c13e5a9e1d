"""Notebooks are written as jupytext percent-format sources (``notebooks/NN_name.py``, reviewed and
diffed) and paired with the ``.ipynb`` that papermill runs. This writes every ``.ipynb`` from its
``.py`` (no outputs, stable cell ids) or, with ``--check``, fails if a pair disagrees.

    python tools/nbsync.py            # after editing a notebooks/*.py
    python tools/nbsync.py --check    # CI (tests/test_notebooks.py calls check())
    python tools/nbsync.py --from-ipynb notebooks/04_stage2.ipynb   # after editing in Jupyter without jupytext
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FORMATS = "ipynb,py:percent"
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def _clean(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb.metadata = {"kernelspec": KERNEL, "jupytext": {"formats": FORMATS}}
    for i, c in enumerate(nb.cells):
        c["id"] = f"cell-{i:02d}"
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
        c.metadata = {k: v for k, v in c.metadata.items() if k == "tags"}
    nbformat.validate(nb)
    return nb


def rendered(py: Path) -> str:
    """The ``.ipynb`` text that ``py`` stands for."""
    return nbformat.writes(_clean(jupytext.read(py)), version=4) + "\n"


def pairs() -> list[tuple[Path, Path]]:
    return [(p, p.with_suffix(".ipynb")) for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))]


def check() -> list[str]:
    """Problems with the pairs (empty list: all agree)."""
    bad = []
    pys = {p.stem for p, _ in pairs()}
    for ipynb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        if ipynb.stem not in pys:
            bad.append(f"{ipynb.name} has no paired .py source")
    for py, ipynb in pairs():
        if not ipynb.exists():
            bad.append(f"{py.name} has no .ipynb (run python tools/nbsync.py)")
        elif ipynb.read_text() != rendered(py):
            bad.append(f"{ipynb.name} differs from {py.name} (run python tools/nbsync.py)")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if any pair disagrees")
    ap.add_argument("--from-ipynb", nargs="*", type=Path, help="rewrite these notebooks' .py sources from the .ipynb")
    a = ap.parse_args(argv)
    if a.check:
        bad = check()
        print("\n".join(bad) or "notebook pairs agree")
        return 1 if bad else 0
    for ipynb in a.from_ipynb or []:
        nb = _clean(jupytext.read(ipynb))
        jupytext.write(nb, ipynb.with_suffix(".py"), fmt="py:percent")
    for py, ipynb in pairs():
        ipynb.write_text(rendered(py))
    return 0


if __name__ == "__main__":
    sys.exit(main())
