"""The result tables of the README and docs/RESULTS.md are copies of saved tables, never typed by hand:
each block

    <!-- table: cpu/stage2_metrics -->
    ...
    <!-- /table -->

holds the text of ``figures/cpu/stage2_metrics.md`` (the table and its legend line), so a number in the
README is always the number of a committed table with provenance beside it. This rewrites every block
of :data:`DOCUMENTS` from its file or, with ``--check``, lists the blocks that differ and exits non-zero.

    python tools/readme_tables.py           # after regenerating figures
    python tools/readme_tables.py --check   # CI (tests/test_readme_tables.py calls check())
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = (README, ROOT / "docs" / "RESULTS.md")
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w/.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _source(name: str) -> Path:
    return ROOT / "figures" / f"{name}.md"


def _body(name: str) -> str:
    path = _source(name)
    if not path.is_file():
        raise FileNotFoundError(f"README block 'table: {name}' names {path.relative_to(ROOT)}, which does not exist")
    return path.read_text().rstrip("\n") + "\n"


def rendered(text: str) -> str:
    """``text`` with every table block replaced by its file's current content."""
    return BLOCK.sub(lambda m: m.group(1) + _body(m.group("name")) + m.group(4), text)


def check(readme: Path = README) -> list[str]:
    """One message per block whose content differs from its file or names no file (empty: in step)."""
    bad = []
    for m in BLOCK.finditer(readme.read_text()):
        try:
            if m.group("body") != _body(m.group("name")):
                bad.append(f"{m.group('name')} differs from figures/{m.group('name')}.md (run python tools/readme_tables.py)")
        except FileNotFoundError as e:
            bad.append(str(e))
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="list blocks that differ from their files; exit 1 if any")
    a = ap.parse_args(argv)
    if a.check:
        bad = [f"{doc.name}: {b}" for doc in DOCUMENTS for b in check(doc)]
        print("\n".join(bad) or "README and docs/RESULTS.md tables in step with figures/")
        return 1 if bad else 0
    for doc in DOCUMENTS:
        doc.write_text(rendered(doc.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
