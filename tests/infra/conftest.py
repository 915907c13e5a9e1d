import pytest


class _Edited:
    """A module's source file as ``artefacts`` reads it, with ``extra`` appended (nothing on disk changes)."""

    def __init__(self, path, extra: str):
        self.path, self.extra = path, extra

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.path.read_text(encoding=encoding) + self.extra

    def is_file(self) -> bool:
        return self.path.is_file()


@pytest.fixture
def edit_module(monkeypatch):
    """``edit(module, text)``: from now on (until the test ends or ``monkeypatch.undo()``) the code hashes
    read module ``module`` (e.g. ``"model.beam"``) with ``text`` appended: an edit that touches no file."""
    from ungerlib.infra import artefacts

    real = artefacts._module_path

    def edit(module: str, text: str) -> None:
        monkeypatch.setattr(artefacts, "_module_path", lambda m: _Edited(real(m), text if m == module else ""))

    return edit
