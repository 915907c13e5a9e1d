"""Provenance names the artefacts each table read; ``reproduce --check`` finds stale outputs."""
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from ungerlib.infra import artefacts, config, report, reproduce, store

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """Empty artefact store and figures folder, an empty read record and a clean commit."""
    monkeypatch.setenv("UNGER_ARTEFACTS", str(tmp_path / "artefacts"))
    monkeypatch.setenv("UNGER_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setattr(store, "_READS", [])
    monkeypatch.setattr(store, "git_commit", lambda: SHA)
    return tmp_path


def _touch(kind, cfg):
    """A stand-in artefact of ``kind`` under the key the pipeline would use (nothing trained)."""
    return artefacts.cached(kind, cfg, lambda out, work: None)


def test_cached_records_every_artefact_it_returns_once_sorted(fresh):
    cfg = config.profile("smoke")
    before = store.read_marker()
    _touch("stage1", cfg)
    _touch("semantic", cfg)  # built
    _touch("stage1", cfg)  # reused: recorded again, listed once
    reads = store.artefacts_read(since=before)
    assert [r["kind"] for r in reads] == ["semantic", "stage1"]
    assert all(r["key_hash"] == store.config_hash(r["key"]) for r in reads)
    assert reads[1]["key"] == json.loads(json.dumps(artefacts.key("stage1", cfg)))
    mark = store.read_marker()
    _touch("codes", cfg)
    assert [r["kind"] for r in store.artefacts_read(since=mark)] == ["codes"]


def test_a_failed_build_is_not_recorded(fresh):
    def broken(out, work):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.cached("codes", artefacts.key("codes", config.profile("smoke")), broken, verbose=False)
    assert store.artefacts_read() == []


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_keys_round_trip_through_the_config_they_record(profile, monkeypatch):
    """``key(kind, config_from_key(key)) == key`` for every kind, on several rows."""
    base = config.profile(profile)
    cfgs = [base, base.replace(seed=7), config.variant(base, "concat"), config.variant(base, "collaborative_only"),
            config.variant(base, "semantic_only"), config.variant(base, "random_codes"),
            base.replace(stage1={"integrated": "sum"}, stage2={"epochs": 3}, eval={"beam": 7})]
    for cfg in cfgs:
        for kind in ("data", "semantic", "stage1", "codes", "stage2", "eval", "stage2_discrec", "eval_discrec"):
            key = json.loads(json.dumps(artefacts.key(kind, cfg)))  # as provenance stores it
            again = artefacts.key(kind, artefacts.config_from_key(key, profile))
            assert again == key, (kind, artefacts.changes(key, again))
            assert again == artefacts.current_key(kind, key, profile)
        key = artefacts.key("eval_neighbours", cfg, neighbour_lambda=[2, 5])
        assert artefacts.current_key("eval_neighbours", key, profile) == key
        key = artefacts.key("baseline.TIGER", cfg, params={"d_model": 64})
        assert artefacts.current_key("baseline.TIGER", key, profile) == key


def test_provenance_names_the_artefacts_read_and_the_code(fresh):
    cfg = config.profile("smoke")
    for kind in ("codes", "stage1", "semantic", "stage1"):
        _touch(kind, cfg)
    report.save_table(pd.DataFrame({"x": [1]}), "t", cfg)
    rec = json.loads((fresh / "figures" / "t.provenance.json").read_text())
    kinds = [(a["kind"], a["key_hash"]) for a in rec["artefacts"]]
    assert kinds == sorted(set(kinds)) and [k for k, _ in kinds] == ["codes", "data", "semantic", "stage1"]
    assert rec["git_commit"] == SHA
    assert "infra.report" in rec["code"] and "infra.config" not in rec["code"] and "infra.store" not in rec["code"]
    assert rec["notebook"] is None  # set by the notebooks runner (UNGER_NOTEBOOK)


def test_check_passes_when_clean_and_names_what_an_edit_made_stale(fresh, monkeypatch, edit_module):
    cfg = config.profile("smoke")
    for kind in ("semantic", "stage1", "codes"):
        _touch(kind, cfg)
    report.save_table(pd.DataFrame({"x": [1]}), "codes_table", cfg)
    monkeypatch.setattr(store, "_READS", [])
    _touch("semantic", cfg)
    report.save_table(pd.DataFrame({"x": [2]}), "semantic_table", cfg)
    assert reproduce.check("smoke") == {}

    # a code change at a kept version: a note, never a stale output (no retraining for a refactor)
    real_path = artefacts._module_path
    edit_module("model.codes", "\nDEFAULT_N_INIT = 10\n")
    found = reproduce.check("smoke")
    assert all(not f.stale for f in found.values())
    assert any("code changed, version kept" in n and "codes" in n for f in found.values() for n in f.notes)
    assert reproduce._report_check("smoke", False) == 0
    monkeypatch.setattr(artefacts, "_module_path", real_path)

    # a version bump of the codes re-keys the codes table's artefacts, not the semantic table's
    monkeypatch.setitem(artefacts.KINDS, "codes", dataclasses.replace(artefacts.KINDS["codes"], version=2))
    stale = reproduce.check("smoke")
    assert any(w.startswith("codes re-keyed") and "versions.codes 1 -> 2" in w for w in stale["codes_table"].stale)
    assert not any(w.startswith("stage1 ") for w in stale["codes_table"].stale)
    assert "semantic_table" not in stale
    assert stale["codes_table"].command == "python -m ungerlib reproduce --profile smoke"
    assert reproduce._report_check("smoke", False) == 1


def test_a_record_without_its_notebook_is_sent_to_the_notebook_that_names_the_output(tmp_path, monkeypatch):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    (nbs / "04_stage2.py").write_text('report.save_table(t, "stage2_curves", cfgs)\nshared = "both"\n')
    (nbs / "05_ablations.py").write_text("report.save_table(t, 'fig8_quantisers', cfgs)\nshared = 'both'\n")
    monkeypatch.setattr(reproduce, "NOTEBOOKS", nbs)
    assert reproduce._command({}, "cpu", "stage2_curves").endswith("--profile cpu --only 04")
    assert reproduce._command({}, "cpu", "fig8_quantisers").endswith("--only 05")
    assert reproduce._command({}, "cpu", "both") == "python -m ungerlib reproduce --profile cpu"  # two name it
    assert reproduce._command({"notebook": "11_overall"}, "cpu", "stage2_curves").endswith("--only 11")
    assert reproduce._command({}, "cpu", "tuning/table3_tuning") == "make tune PROFILE=cpu"


def test_check_flags_a_changed_setting_a_dirty_tree_and_missing_records(fresh, monkeypatch):
    cfg = config.profile("smoke")
    _touch("stage1", cfg)
    report.save_table(pd.DataFrame({"x": [1]}), "a", cfg)
    figs = fresh / "figures"
    rec = json.loads((figs / "a.provenance.json").read_text())
    assert reproduce.check("smoke") == {}

    # the Stage I artefact this table read predates a setting the code has now (it takes the profile's value)
    art = next(a for a in rec["artefacts"] if a["kind"] == "stage1")
    del art["key"]["stage1"]["lr"]
    art["key_hash"] = store.config_hash(art["key"])
    rec["git_commit"] = SHA + "+dirty"
    store.atomic_write_json(figs / "a.provenance.json", rec)
    why = reproduce.check("smoke")["a"].stale
    assert any("stage1.lr (none) -> 0.003" in w for w in why) and any("uncommitted" in w for w in why)
    assert not any("uncommitted" in w for w in reproduce.check("smoke", allow_dirty=True)["a"].stale)
    # a setting that no longer exists
    art["key"]["stage1"].update(lr=0.003, old_knob=1)
    art["key_hash"] = store.config_hash(art["key"])
    store.atomic_write_json(figs / "a.provenance.json", rec)
    assert any("cannot be recomputed" in w and "old_knob" in w for w in reproduce.check("smoke")["a"].stale)

    (figs / "orphan.csv").write_text("x\n1\n")  # no provenance at all
    monkeypatch.setattr(store, "_READS", [])
    report.save_table(pd.DataFrame({"x": [1]}), "nothing_read", None, profile="smoke")  # no artefact, no config
    stale = reproduce.check("smoke")
    assert stale["orphan"].stale == ["no orphan.provenance.json"]
    assert any("names no artefact" in w for w in stale["nothing_read"].stale)


def test_check_notes_a_module_that_changed_since(fresh, monkeypatch, capsys, edit_module):
    """Code outside any artefact (analysis, formatting in report) is noted, with its name."""
    cfg = config.profile("smoke")
    _touch("semantic", cfg)
    report.save_table(pd.DataFrame({"x": [1]}), "a", cfg)
    edit_module("infra.report", "\nFLOAT_FORMAT = '.3g'\n")
    f = reproduce.check("smoke")["a"]
    assert not f.stale and any("report" in n for n in f.notes)
    assert reproduce._report_check("smoke", False, verbose=True) == 0
    assert "note  a: code changed, version kept: infra.report" in capsys.readouterr().out


def test_run_json_paths_are_relative_to_the_repository():
    root = reproduce.REPO_ROOT
    assert reproduce._repo_relative(root / "build" / "cpu" / "notebooks" / "01.ipynb") == "build/cpu/notebooks/01.ipynb"
    assert reproduce._repo_relative("/work/main/build/cpu/notebooks/02.ipynb") == "build/cpu/notebooks/02.ipynb"
    assert reproduce._repo_relative("build/x.ipynb") == "build/x.ipynb"


def test_executed_notebooks_name_no_path_of_the_machine(tmp_path):
    """What reproduce does to each executed copy: the checkout's paths become relative, the kernel's
    temporary cell files ``<cell>``; everything else stays."""
    import tempfile

    root = str(reproduce.REPO_ROOT)
    nb = tmp_path / "01.ipynb"
    nb.write_text(json.dumps({"cells": [{"outputs": [
        {"text": [f"{tempfile.gettempdir()}/ipykernel_27860/859387949.py:6: Pandas4Warning: x\n"]},
        {"data": {"text/plain": [f"PosixPath('{root}/figures/cpu/embedding_similarity.png')"]}}]}],
        "metadata": {"papermill": {"input_path": f"{root}/notebooks/01.ipynb",
                                   "output_path": f"{root}/figures/cpu/notebooks/01.ipynb", "cwd": "/elsewhere"}}}))
    reproduce._without_machine_paths(nb)
    out = json.loads(nb.read_text())
    assert out["metadata"]["papermill"] == {"input_path": "notebooks/01.ipynb",
                                            "output_path": "figures/cpu/notebooks/01.ipynb", "cwd": "/elsewhere"}
    assert out["cells"][0]["outputs"][0]["text"] == ["<cell>:6: Pandas4Warning: x\n"]
    assert out["cells"][0]["outputs"][1]["data"]["text/plain"] == ["PosixPath('figures/cpu/embedding_similarity.png')"]


def test_committed_figures_name_no_path_of_the_machine_that_made_them():
    """No committed output names an absolute path into a checkout or a kernel's temporary file."""
    import re

    into_checkout = re.compile(r"(?<![\w.])(?:/[\w.-]+)+/(?:figures|notebooks|build)/")
    found = [f"{p.relative_to(reproduce.REPO_ROOT)}: {m.group(0)}"
             for p in sorted((reproduce.REPO_ROOT / "figures").rglob("*")) if p.suffix in (".ipynb", ".json", ".md", ".csv")
             for m in [into_checkout.search(p.read_text()) or re.search(r"ipykernel_\d+", p.read_text())] if m]
    assert found == []


def test_determinism_comparison_ignores_wall_times_only(tmp_path):
    sys.path.insert(0, str(reproduce.REPO_ROOT / "tools"))
    import check_determinism as cd

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    df = pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.25], "train_s": [1.0, 2.0]})
    for d, secs in ((a, [1.0, 2.0]), (b, [3.5, 4.0])):
        t = df.assign(train_s=secs)
        (d / "curves.csv").write_text(t.to_csv())
        (d / "curves.md").write_text(t.to_markdown())
    assert cd.compare(a, b) == []
    (b / "curves.csv").write_text(df.assign(loss=[0.5, 0.2500001]).to_csv())
    (b / "extra.md").write_text("| x |\n")
    diffs = cd.compare(a, b)
    assert diffs[0].startswith("curves.csv: line 3 differs") and diffs[1] == "extra.md: only in the second run"


def test_determinism_check_skips_timing_in_reader_tables_and_multiindex_csv(tmp_path):
    """What CI met: the Markdown a reader sees labels ``encode_s`` as ``encoding time (s)``, and a
    table with two column levels puts ``train_s`` in the CSV's second header row."""
    sys.path.insert(0, str(reproduce.REPO_ROOT / "tools"))
    import check_determinism as cd

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d, secs in ((a, 1.25), (b, 7.5)):
        t = pd.DataFrame({("metric", "recall@10"): [0.5], ("run", "train_s"): [secs], ("run", "grid_s"): [secs]})
        (d / "runs.csv").write_text(t.to_csv())
        (d / "runs.md").write_text(report.markdown(t))
    assert "(s)" in (a / "runs.md").read_text()
    assert cd.compare(a, b) == []
    t = pd.DataFrame({("metric", "recall@10"): [0.51], ("run", "train_s"): [1.25], ("run", "grid_s"): [1.25]})
    (b / "runs.md").write_text(report.markdown(t))
    assert [d.split(":")[0] for d in cd.compare(a, b)] == ["runs.md"]


def test_check_flags_a_profile_change_up_to_the_stages_read(fresh, monkeypatch):
    cfg = config.profile("smoke")
    _touch("stage1", cfg)
    report.save_table(pd.DataFrame({"x": [1]}), "s1", cfg)
    over = json.loads(json.dumps(config._PROFILE_OVERRIDES))
    over["smoke"]["stage2"]["epochs"] = 99  # after Stage I: does not concern a table that read Stage I
    monkeypatch.setattr(config, "_PROFILE_OVERRIDES", over)
    assert reproduce.check("smoke") == {}
    over["smoke"]["stage1"]["epochs"] = 99
    assert reproduce.check("smoke")["s1"].stale == ["profile smoke changed (stage1.epochs 20 -> 99)"]


def test_provenance_records_the_thread_count(monkeypatch):
    """Float sums depend on torch's thread count, so every record names it (a run at 2 threads and one
    at 1 can differ in the last bits, and k-means can turn that into other codes)."""
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert store.provenance({"seed": 1})["env"]["torch_threads"] == "3"


def test_provenance_records_the_cpu_and_the_flush_to_zero_mode(tmp_path):
    """Math libraries pick kernels by vector extension, and flush-to-zero changes float rounding: a
    record names both, so two runs of one key that differ can be told apart."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f\n\n"
                    "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert store.cpu_name(info) == "Test CPU 9000 (avx512)"
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2\n")
    assert store.cpu_name(info) == "Old CPU"
    assert store.cpu_name(tmp_path / "missing") != ""
    env = store.provenance({"seed": 1})["env"]
    assert env["flush_denormal"] == "True"  # import ungerlib turned the mode on (runtime.flush_denormals)


def test_determinism_compare_mode_and_a_fresh_run_into_a_used_folder_are_checked(tmp_path, capsys):
    sys.path.insert(0, str(reproduce.REPO_ROOT / "tools"))
    import check_determinism as cd

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d in (a, b):
        (d / "t.csv").write_text("x,train_s\n1,2\n" if d is a else "x,train_s\n1,9\n")
    assert cd.main(["--compare", str(a), str(b)]) == 0
    (b / "t.csv").write_text("x,train_s\n2,2\n")
    assert cd.main(["--compare", str(a), str(b)]) == 1 and "DIFFERS t.csv" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no figures folder"):
        cd.main(["--compare", str(a), str(tmp_path / "missing")])
    (tmp_path / "used" / "artefacts").mkdir(parents=True)
    with pytest.raises(SystemExit, match="not empty"):
        cd.main(["--fresh", str(tmp_path / "used")])


def test_determinism_skips_timing_tables_and_millisecond_columns(tmp_path):
    """Notebook 10's timings differ from run to run by nature: a table whose provenance says
    ``wall_clock`` is not compared, nor is a ``(ms)`` column; every other cell still is."""
    sys.path.insert(0, str(reproduce.REPO_ROOT / "tools"))
    import check_determinism as cd

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d, ms in ((a, 1.5), (b, 2.5)):
        (d / "speed.csv").write_text(f"code,ms per user,x unified\nunified,{ms},1\ndual,{2 * ms},{ms}\n")
        (d / "speed.provenance.json").write_text('{"wall_clock": true}')
        (d / "costs.csv").write_text(f"code,parameters,decoding time per user (ms)\nunified,100,{ms}\n")
    assert cd.compare(a, b) == []
    (b / "costs.csv").write_text("code,parameters,decoding time per user (ms)\nunified,101,2.5\n")
    assert [d.split(":")[0] for d in cd.compare(a, b)] == ["costs.csv"]


def test_determinism_runs_get_absolute_cache_paths(tmp_path, monkeypatch):
    """The notebooks' kernels run in notebooks/: a relative UNGER_FIGURES would write the tables there
    (what CI met with ``--fresh build/determinism``)."""
    sys.path.insert(0, str(reproduce.REPO_ROOT / "tools"))
    import check_determinism as cd

    seen = {}
    monkeypatch.setattr(cd.subprocess, "Popen", lambda cmd, cwd, env, stdout: seen.update(env) or "started")
    monkeypatch.chdir(tmp_path)
    assert cd.start("smoke", None, Path("build/determinism")) == "started"
    assert seen["UNGER_FIGURES"] == str(tmp_path / "build" / "determinism" / "figures")
    assert seen["UNGER_ARTEFACTS"] == str(tmp_path / "build" / "determinism" / "artefacts")
