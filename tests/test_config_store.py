import json
import os

import pytest

from ungerlib import config, store
from ungerlib.config import ConfigError


def test_profiles_and_unknown_keys():
    assert config.profile("smoke").data.dataset == "synthetic"
    assert config.profile("cpu").data.dataset == "Beauty"
    p = config.profile("paper")
    assert (p.stage2.d_model, p.stage2.enc_layers, p.stage2.dec_layers, p.codes.K, p.stage2.batch_size) == (128, 1, 4, 256, 256)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['alpah'\] in \[stage1\]"):
        config.from_dict(config.RunConfig, {"stage1": {"alpah": 1}})
    with pytest.raises(ConfigError, match="unknown setting 'stage3'"):
        config.profile("cpu").replace(stage3={})
    with pytest.raises(ConfigError, match="unknown profile"):
        config.profile("gpu")
    with pytest.raises(ConfigError, match="K must be at least 2"):
        config.profile("cpu", codes={"K": 1})
    with pytest.raises(ConfigError, match="unknown paper row"):
        config.variant(config.profile("cpu"), "ours2")


def test_json_roundtrip_and_variants():
    cfg = config.profile("cpu", "Toys")
    again = config.from_dict(config.RunConfig, json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert config.variant(cfg, "collaborative_only").stage1.alpha == 0.0
    assert config.variant(cfg, "none").stage2.ikd is False


def test_upstream_keys_change_only_downstream():
    cfg = config.profile("smoke")
    beam = cfg.replace(eval={"beam": 99})
    alpha = cfg.replace(stage1={"alpha": 0.5})
    h = lambda c, s: store.config_hash(config.upstream(c, s))
    assert h(cfg, "stage2") == h(beam, "stage2") and h(cfg, "eval") != h(beam, "eval")
    assert h(cfg, "semantic") == h(alpha, "semantic") and h(cfg, "stage1") != h(alpha, "stage1")
    assert h(cfg, "codes") != h(alpha, "codes")
    assert h(cfg, "stage1") != h(cfg.replace(seed=1), "stage1")
    # the data folder's location is not part of the key, its content is
    assert "root" not in config.upstream(cfg, "data")["data"] and "data_hash" in config.upstream(cfg, "data")


def test_cached_builds_once_atomically_and_records_provenance(tmp_path):
    calls = []

    def build(out, work):
        calls.append(1)
        (out / "x.json").write_text("[1]")
        return {"metric": 0.5}

    key = {"a": 1, "seed": 3}
    a = store.cached("thing", key, build, root=tmp_path)
    b = store.cached("thing", {"seed": 3, "a": 1}, build, root=tmp_path)
    assert len(calls) == 1 and a.path == b.path and a.json("x") == [1]
    prov = a.provenance
    assert prov["seed"] == 3 and prov["metric"] == 0.5 and prov["key"] == key and "git_commit" in prov

    def broken(out, work):
        (work / "ckpt").write_text("epoch 3")
        (out / "partial").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.cached("thing", {"a": 2}, broken, root=tmp_path)
    final = tmp_path / "thing" / store.config_hash({"a": 2})
    assert not final.exists()  # nothing half-written is ever trusted
    assert (final.parent / (final.name + ".work") / "ckpt").read_text() == "epoch 3"  # checkpoints survive

    def resume(out, work):
        (out / "resumed_from").write_text((work / "ckpt").read_text())

    c = store.cached("thing", {"a": 2}, resume, root=tmp_path)
    assert (c.path / "resumed_from").read_text() == "epoch 3"
    assert not (final.parent / (final.name + ".work")).exists()


def test_atomic_write_leaves_no_temp_files(tmp_path):
    store.atomic_write_json(tmp_path / "a.json", {"x": 1})
    store.atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert os.listdir(tmp_path) == ["a.json"]


def test_code_changes_change_the_key(monkeypatch):
    cfg = config.profile("smoke")
    before = {s: config.upstream(cfg, s)["code_hash"] for s in config.STAGES}
    real = config.source_hash
    monkeypatch.setattr(config, "source_hash", lambda stage: real(stage) + ("x" if stage != "data" else ""))
    after = {s: config.upstream(cfg, s)["code_hash"] for s in config.STAGES}
    assert before["data"] == after["data"] and before["stage2"] != after["stage2"]
    # a stage's hash covers every module upstream of it
    assert real("stage2") != real("codes") != real("stage1")


def _edited(monkeypatch, module: str, text: str) -> None:
    real = config._source
    monkeypatch.setattr(config, "_source", lambda m: real(m) + (text if m == module else ""))


@pytest.mark.parametrize("module", ["beam", "metrics", "train"])
def test_editing_a_module_the_stage2_code_reaches_changes_its_key(monkeypatch, module):
    """beam.py and metrics.py pick Stage II's best epoch, train.py runs it: all are in its key."""
    cfg = config.profile("smoke")
    before = store.config_hash(config.artefact_key(cfg, "stage2"))
    _edited(monkeypatch, module, "\nBEAM_WIDTH_FUDGE = 2\n")
    assert store.config_hash(config.artefact_key(cfg, "stage2")) != before


def test_docstrings_comments_and_neutral_modules_do_not_change_keys(monkeypatch):
    cfg = config.profile("smoke")
    before = {k: store.config_hash(config.artefact_key(cfg, k)) for k in ("stage1", "stage2")}
    _edited(monkeypatch, "beam", "\n# a comment\n\n\ndef f():\n    \"\"\"A docstring.\"\"\"\n")
    after_doc = {k: store.config_hash(config.artefact_key(cfg, k)) for k in ("stage1", "stage2")}
    monkeypatch.undo()
    _edited(monkeypatch, "beam", "\ndef f():\n    pass\n")  # the same function, no docstring
    assert after_doc == {k: store.config_hash(config.artefact_key(cfg, k)) for k in ("stage1", "stage2")}
    assert after_doc["stage1"] == before["stage1"]  # Stage I does not reach beam.py
    for m in config.NEUTRAL_MODULES:
        assert m not in config.module_closure("stage2")


def test_stage1_key_leaves_out_the_integrated_choice():
    cfg = config.profile("smoke")
    other = cfg.replace(stage1={"integrated": "sum"})
    assert config.artefact_key(cfg, "stage1") == config.artefact_key(other, "stage1")
    assert config.artefact_key(cfg, "codes") != config.artefact_key(other, "codes")
