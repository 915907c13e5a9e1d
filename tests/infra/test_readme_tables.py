"""The README's result tables are copies of committed tables (tools/readme_tables.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import readme_tables  # noqa: E402


def test_readme_and_results_tables_are_in_step_with_figures():
    for doc in readme_tables.DOCUMENTS:
        assert readme_tables.check(doc) == [], doc.name


def test_readme_and_results_have_table_blocks():
    assert len(list(readme_tables.BLOCK.finditer(readme_tables.README.read_text()))) >= 1
    assert len(list(readme_tables.BLOCK.finditer(readme_tables.DOCUMENTS[1].read_text()))) >= 10


def test_a_drifted_or_dangling_block_is_reported(tmp_path, monkeypatch):
    (tmp_path / "figures" / "cpu").mkdir(parents=True)
    (tmp_path / "figures" / "cpu" / "t.md").write_text("| a |\n|---|\n| 0.1000 |\n\nlegend\n")
    monkeypatch.setattr(readme_tables, "ROOT", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- table: cpu/t -->\n| a |\n|---|\n| 0.0999 |\n<!-- /table -->\n"
                      "<!-- table: cpu/missing -->\n<!-- /table -->\n")
    bad = readme_tables.check(readme)
    assert len(bad) == 2 and "cpu/t differs" in bad[0] and "does not exist" in bad[1]
    readme.write_text(readme_tables.rendered(readme.read_text().split("<!-- table: cpu/missing")[0]))
    assert readme_tables.check(readme) == [] and "0.1000" in readme.read_text() and "0.0999" not in readme.read_text()
