"""Notebooks are committed clean, have one parameters cell with a profile, and end with asserts."""
import json
from pathlib import Path

import pytest

from ungerlib.infra import reproduce

NBS = sorted(Path(reproduce.NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert any(p.name.startswith("01_") for p in NBS)


@pytest.mark.parametrize("path", NBS, ids=lambda p: p.name)
def test_notebook_shape(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "commit notebooks without outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and 'profile = "cpu"' in "".join(params[0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown"
    assert "assert" in "".join(code[-1]["source"]), "the last cell must check the notebook's own results"


def test_ipynb_and_py_sources_agree():
    """Each notebook is a reviewed jupytext .py source paired with the .ipynb papermill runs."""
    import sys

    sys.path.insert(0, str(Path(reproduce.NOTEBOOKS).parent / "tools"))
    import nbsync

    assert nbsync.check() == []


def test_every_notebook_is_listed_in_the_paper_map():
    stems = {p.stem for p in NBS}
    assert stems <= set(reproduce.PAPER_ARTEFACTS.values())
