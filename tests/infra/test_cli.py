"""Command-line entry points: one line naming the problem and a non-zero exit for bad input; the
traceback behind --traceback. Called in-process (main(argv) returns the exit status)."""
import json
import shutil

import pytest

from ungerlib.infra import artefacts, cli, config, pipeline, reproduce, store
from ungerlib.model.data import BUNDLED_ROOT


def _one_line_error(capsys, rc, *needles):
    """Exit status 1, no traceback, the last stderr line (after any progress lines) names the problem."""
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("error: ") and not any("Traceback" in l or l.startswith("error") for l in err[:-1]), err
    for n in needles:
        assert n in err[-1], (n, err[-1])
    return err[-1]


@pytest.mark.parametrize("argv, needles", [
    (["--set", "stage1.epochs=\"3\""], ["stage1.epochs must be an integer, got '3'"]),
    (["--set", "codes.method=kmeans"], ["codes.method must be one of", "'kmeans'"]),
    (["--set", "stage2.batch_size=0"], ["stage2.batch_size must be positive"]),
    (["--set", "stage1.lr=-1"], ["stage1.lr must lie in (0, 1]"]),
    (["--set", "stage2.lr=1e9"], ["stage2.lr must lie in (0, 1]", "1000000000.0"]),
    (["--set", "epochs=3"], ["did you mean stage1.epochs or stage2.epochs"]),
    (["--dataset", "Movies"], ["no data set 'Movies'", "known: Beauty, Sports, Toys, synthetic"]),
    (["--rows", "ours2"], ["unknown paper row 'ours2'"]),
])
def test_pipeline_bad_input_is_one_line(capsys, argv, needles):
    rc = pipeline.main(["--profile", "smoke", "--no-stage2", *argv])
    _one_line_error(capsys, rc, *needles)


def test_traceback_flag_shows_the_exception(capsys):
    with pytest.raises(config.ConfigError, match="codes.method"):
        pipeline.main(["--profile", "smoke", "--set", "codes.method=kmeans", "--traceback"])


def test_truncated_data_file_is_one_line_naming_it(tmp_path, capsys):
    shutil.copytree(BUNDLED_ROOT / "Toys", tmp_path / "Toys")
    seq = tmp_path / "Toys" / "sequences.tsv.gz"
    seq.write_bytes(seq.read_bytes()[: seq.stat().st_size // 2])
    rc = pipeline.main(["--profile", "smoke", "--dataset", "Toys", "--no-stage2", "--set", f"data.root={tmp_path}"])
    _one_line_error(capsys, rc, str(seq), "truncated or corrupt")


def test_pipeline_smoke_defaults_to_synthetic_data_and_corrupt_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNGER_ARTEFACTS", str(tmp_path))
    cfg = config.profile("smoke")
    assert pipeline.parser().parse_args(["--profile", "smoke"]).dataset is None  # -> the profile's own
    work = store.work_dir("stage1", artefacts.key("stage1", cfg))
    work.mkdir(parents=True)
    (work / "stage1.pt").write_bytes(b"PK\x03\x04 not a zip")
    rc = pipeline.main(["--profile", "smoke", "--no-stage2"])
    line = _one_line_error(capsys, rc, f"checkpoint {work / 'stage1.pt'} cannot be read", "delete it")
    assert (tmp_path / "semantic").is_dir() and "synthetic" in str(cfg.data.dataset)  # ran on synthetic data
    assert "Beauty" not in line


def test_reproduce_checks_data_sets_before_any_notebook(capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(reproduce, "_execute", lambda *a, **k: ran.append(a))
    rc = reproduce.main(["--profile", "smoke", "--only", "01", "--datasets", "Movies"])
    _one_line_error(capsys, rc, "no data set 'Movies'")
    assert ran == []


def test_a_failing_notebook_is_one_line_naming_it(capsys, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    def fail(nb, out, params, prepare_only):
        raise PapermillExecutionError(3, 4, "x", "DataError", "bad\nthing", [])

    monkeypatch.setattr(reproduce, "_papermill", fail)
    rc = reproduce.main(["--profile", "smoke", "--only", "01"])
    _one_line_error(capsys, rc, "notebook 01_data_and_embeddings.ipynb failed in cell 4: DataError: bad thing")


def test_unexpected_errors_keep_their_traceback():
    def bug(args):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        cli.run(bug, type("A", (), {"traceback": False})())


def test_help_shows_a_set_example(capsys):
    with pytest.raises(SystemExit):
        pipeline.main(["--help"])
    out = capsys.readouterr().out
    assert "--set stage2.epochs=3 codes.method=rqvae" in " ".join(out.split())


def test_reproduce_outside_a_checkout_says_so(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(reproduce, "NOTEBOOKS", tmp_path / "notebooks")
    rc = reproduce.main(["--profile", "smoke"])
    _one_line_error(capsys, rc, "the notebooks runner needs a source checkout")


def test_reproduce_params_plain_values_and_lists():
    assert reproduce.parse_params(["discrec=false", "models=SASRec,LightGCN", "one=SASRec,", "k=3", 'm=["a"]', "name=x"]) == {
        "discrec": False, "models": ["SASRec", "LightGCN"], "one": ["SASRec"], "k": 3, "m": ["a"], "name": "x"}


def test_reproduce_params_reach_the_notebook(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(reproduce, "_execute", lambda nb, out, params, prepare_only: ran.append(params))
    monkeypatch.setattr(reproduce, "figures_dir", lambda profile: tmp_path)
    assert reproduce.main(["--profile", "smoke", "--only", "11", "--param", "discrec=false", "models=SASRec,"]) == 0
    assert ran == [{"profile": "smoke", "discrec": False, "models": ["SASRec"]}]
    assert json.loads((tmp_path / "run.json").read_text())["notebooks"][0]["parameters"] == {
        "discrec": False, "models": ["SASRec"]}


@pytest.mark.parametrize("param, message", [
    ("modles=SASRec", "--param modles: notebook 11_overall.ipynb has no such parameter; its parameters: "
                      "beam_check_users, code_kinds, datasets, discrec, models, profile"),
    ("profile=cpu", "--param profile: use --profile instead"),
    ("discrec", "--param 'discrec': expected NAME=VALUE"),
])
def test_reproduce_bad_params_fail_before_any_notebook(capsys, monkeypatch, param, message):
    ran = []
    monkeypatch.setattr(reproduce, "_execute", lambda *a, **k: ran.append(a))
    rc = reproduce.main(["--profile", "smoke", "--only", "11", "--param", param])
    _one_line_error(capsys, rc, message)
    assert ran == []
