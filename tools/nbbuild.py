"""Tiny helper to write a notebook (no outputs) from a list of ("md"|"code"|"params", source) cells."""
from __future__ import annotations

import sys

import nbformat as nbf


def build(path: str, cells: list[tuple[str, str]]) -> None:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbf.v4.new_markdown_cell(src))
        else:
            c = nbf.v4.new_code_cell(src)
            if kind == "params":
                c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
    for i, c in enumerate(nb.cells):  # stable ids keep diffs small
        c["id"] = f"cell-{i:02d}"
    nbf.validate(nb)
    nbf.write(nb, path)
    print("wrote", path, file=sys.stderr)
