import dataclasses
import json
import os
import time

import pytest

from ungerlib.infra import artefacts, config, store
from ungerlib.infra.config import ConfigError


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
    h = lambda c, s: store.config_hash(artefacts.key(s, c))
    assert h(cfg, "stage2") == h(beam, "stage2") and h(cfg, "eval") != h(beam, "eval")
    assert h(cfg, "semantic") == h(alpha, "semantic") and h(cfg, "stage1") != h(alpha, "stage1")
    assert h(cfg, "codes") != h(alpha, "codes")
    assert h(cfg, "stage1") != h(cfg.replace(seed=1), "stage1")
    # the data folder's location is not part of the key, its content is
    assert "root" not in artefacts.key("data", cfg)["data"] and "data_hash" in artefacts.key("data", cfg)


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


def test_a_resumed_build_records_the_time_of_every_attempt_up_to_its_last_checkpoint(tmp_path):
    def killed(out, work):
        (work / "ckpt").write_text("epoch 3")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.cached("thing", {"a": 5}, killed, root=tmp_path)
    h = store.config_hash({"a": 5})
    attempt = tmp_path / ".locks" / f"thing.{h}.attempt.json"
    now = time.time()  # pretend: started 100 s ago, last checkpoint 40 s ago (the rest was lost and is redone)
    attempt.write_text(json.dumps({"started": now - 100, "earlier_s": 7.0}))
    os.utime(tmp_path / "thing" / f"{h}.work" / "ckpt", (now - 40, now - 40))
    assert store.state("thing", {"a": 5}, tmp_path) == "checkpoint"

    def nested(out, work):  # a build inside this one (an evaluation training its model) is not its own time
        store.cached("inner", {"b": 1}, lambda o, w: time.sleep(0.2), root=tmp_path)

    prov = store.cached("thing", {"a": 5}, nested, root=tmp_path).provenance
    assert prov["resumed_after_s"] == pytest.approx(7 + 60, abs=0.5)
    assert 67 + 0.2 <= prov["wall_s"] < 67 + 5 and prov["own_s"] == pytest.approx(prov["wall_s"] - 0.2, abs=0.15)
    assert not attempt.exists()
    inner = store.cached("inner", {"b": 1}, None, root=tmp_path).provenance
    assert "resumed_after_s" not in inner and inner["own_s"] == inner["wall_s"] >= 0.2


def test_read_returns_what_is_built_and_never_builds_or_touches_the_store(tmp_path):
    key = {"a": 1}
    with pytest.raises(KeyError, match="no built thing"):
        store.read("thing", key, root=tmp_path)
    assert not (tmp_path / "thing").exists()  # a miss leaves no folder, no work dir
    store.cached("thing", key, lambda out, work: (out / "x.json").write_text("[2]") and None, root=tmp_path)
    mark = store.read_marker()
    assert store.read("thing", key, root=tmp_path).json("x") == [2]
    assert [r["kind"] for r in store.artefacts_read(mark)] == ["thing"]  # recorded in provenance


def test_atomic_write_leaves_no_temp_files(tmp_path):
    store.atomic_write_json(tmp_path / "a.json", {"x": 1})
    store.atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_version_bump_re_keys_its_kind_and_everything_downstream_only(monkeypatch):
    cfg = config.profile("smoke")
    kinds = ["semantic", "stage1", "codes", "stage2", "eval", "eval_neighbours", "stage2_discrec",
             "baseline.SASRec", "baseline.TIGER"]
    extra = {"eval_neighbours": {"neighbour_lambda": [2.0, 5.0]}, "baseline.SASRec": {"params": {"d": 1}},
             "baseline.TIGER": {"params": {}}}
    before = {k: artefacts.key_hash(k, cfg, **extra.get(k, {})) for k in kinds}
    monkeypatch.setitem(artefacts.KINDS, "codes", dataclasses.replace(artefacts.KINDS["codes"], version=2))
    after = {k: artefacts.key_hash(k, cfg, **extra.get(k, {})) for k in kinds}
    moved = {k for k in kinds if before[k] != after[k]}
    assert moved == {"codes", "stage2", "eval", "eval_neighbours", "stage2_discrec"}


def test_keys_hold_no_code_and_do_not_move_when_a_module_is_edited(edit_module):
    """Code is not in a key (a refactor retrains nothing); its hash goes to provenance instead."""
    cfg = config.profile("smoke")
    before = {k: artefacts.key_hash(k, cfg) for k in ("stage1", "codes", "stage2", "eval")}
    code = artefacts.code_hash("model.stage2")
    edit_module("model.beam", "\nEDITED = 1\n")
    assert {k: artefacts.key_hash(k, cfg) for k in before} == before
    assert artefacts.code_hash("model.stage2") != code
    assert {"model.beam", "model.metrics", "model.train"} <= set(artefacts.closure("model.stage2"))


def test_code_hash_covers_the_closure_and_ignores_docstrings_comments_and_neutral_modules(monkeypatch, edit_module):
    before = {m: artefacts.code_hash(m) for m in ("model.stage1", "model.stage2")}

    def edit(text):
        edit_module("model.beam", text)

    edit("\n# a comment\n\n\ndef f():\n    \"\"\"A docstring.\"\"\"\n")
    after_doc = {m: artefacts.code_hash(m) for m in before}
    edit("\ndef f():\n    pass\n")  # the same function, no docstring
    assert after_doc == {m: artefacts.code_hash(m) for m in before}
    assert after_doc["model.stage1"] == before["model.stage1"]  # Stage I does not reach beam.py
    assert after_doc["model.stage2"] != before["model.stage2"]
    monkeypatch.undo()
    for m in artefacts.NEUTRAL:
        assert m not in artefacts.closure("model.stage2")


def test_a_setting_at_its_key_omits_value_stays_out_of_keys(monkeypatch):
    """A setting added later with the value that reproduces the earlier computation re-keys nothing."""
    cfg = config.profile("smoke")
    before = artefacts.key("stage2", cfg)
    f = next(f for f in dataclasses.fields(config.Stage2Config) if f.name == "bucket")
    monkeypatch.setattr(f, "metadata", {"key_omits": cfg.stage2.bucket})
    assert "bucket" not in artefacts.key("stage2", cfg)["stage2"]
    assert artefacts.key("stage2", cfg.replace(stage2={"bucket": 3}))["stage2"]["bucket"] == 3
    again = artefacts.current_key("stage2", artefacts.key("stage2", cfg), "smoke")
    assert again == artefacts.key("stage2", cfg) and before["stage2"]["bucket"] == cfg.stage2.bucket


def test_stage1_key_leaves_out_the_integrated_choice():
    cfg = config.profile("smoke")
    other = cfg.replace(stage1={"integrated": "sum"})
    assert artefacts.key("stage1", cfg) == artefacts.key("stage1", other)
    assert artefacts.key("codes", cfg) != artefacts.key("codes", other)


# --------------------------------------------------------------------------- every setting checked up front

@pytest.mark.parametrize("over, msg", [
    ({"stage1": {"epochs": "3"}}, r"stage1.epochs must be an integer, got '3' \(str\)"),
    ({"codes": {"method": "kmeans"}}, r"codes.method must be one of 'hkmeans', 'random', 'rqvae', got 'kmeans'"),
    ({"stage2": {"batch_size": 0}}, r"stage2.batch_size must be positive, got 0"),
    ({"stage1": {"lr": -1}}, r"stage1.lr must lie in \(0, 1\].*, got -1"),
    ({"stage2": {"lr": 1e9}}, r"stage2.lr must lie in \(0, 1\].*, got 1000000000.0"),
    ({"stage2": {"dropout": 1.0}}, r"stage2.dropout must lie in \[0, 1\)"),
    ({"stage2": {"epochs": 0}}, r"stage2.epochs must be at least 1"),
    ({"codes": {"K": 1}}, r"codes.K must be at least 2"),
    ({"stage1": {"alpha": True}}, r"stage1.alpha must be a number, got True"),
    ({"stage1": {"tau": float("nan")}}, r"stage1.tau must be a number"),
    ({"semantic": {"fp16": "yes"}}, r"semantic.fp16 must be true or false"),
    ({"semantic": {"pooling": "max"}}, r"semantic.pooling must be one of"),
    ({"stage1": {"integrated": "average"}}, r"stage1.integrated must be one of"),
    ({"eval": {"ks": []}}, r"eval.ks must be a non-empty list of integers"),
    ({"eval": {"ks": [10, 0]}}, r"eval.ks must be at least 1"),
    ({"data": {"seq_len": [2, 9]}}, r"data.seq_len must be at least 3"),
    ({"data": {"seq_len": [9, 5]}}, r"data.seq_len must be \(shortest, longest\)"),
    ({"data": {"root": 3}}, r"data.root must be a string or null"),
    ({"stage2": {"n_heads": 3}}, r"stage2.d_model \(32\) must be a multiple of stage2.n_heads \(3\)"),
    ({"seed": -1}, r"seed must be at least 0"),
    ({"stage2": 5}, r"\[stage2\] must be a mapping"),
])
def test_bad_settings_fail_when_the_config_is_built(over, msg):
    with pytest.raises(ConfigError, match=msg):
        config.profile("smoke", **over)


def test_settings_are_normalised_and_dataclasses_check_themselves():
    cfg = config.profile("smoke", stage1={"alpha": 0}, eval={"ks": [5, 10]})
    assert cfg.stage1.alpha == 0.0 and isinstance(cfg.stage1.alpha, float)  # same key as 0.0
    assert cfg.eval.ks == (5, 10)
    assert artefacts.key_hash("stage1", cfg) == store.config_hash(
        artefacts.key("stage1", config.profile("smoke", stage1={"alpha": 0.0}, eval={"ks": [5, 10]})))
    with pytest.raises(ConfigError, match=r"stage2.lr must lie in \(0, 1\]"):
        config.Stage2Config(lr=0.0)  # built directly, not through from_dict
    with pytest.raises(ConfigError, match="stage1.epochs must be at least 1"):
        import dataclasses
        dataclasses.replace(config.profile("smoke").stage1, epochs=0)


def test_every_numeric_setting_has_a_range_and_literals_match_the_code():
    from typing import get_args, get_type_hints

    from ungerlib.model import stage1

    for sec, cls in get_type_hints(config.RunConfig).items():
        if not isinstance(cls, type) or not hasattr(cls, "__dataclass_fields__"):
            hints = {sec: cls}
            sec = ""
        else:
            hints = get_type_hints(cls)
        for name, hint in hints.items():
            kinds = {hint, *get_args(hint)}
            if kinds & {int, float}:
                assert config._rule(sec, name), f"{sec}.{name} has no entry in config.RANGES"
    assert get_args(get_type_hints(config.Stage1Config)["integrated"]) == stage1.INTEGRATED
    assert get_args(get_type_hints(config.Stage1Config)["variant"]) == stage1.VARIANTS


def test_set_accepts_plain_values_and_json():
    over = config.parse_overrides(["codes.method=rqvae", "stage2.epochs=3", "stage1.lr=2e-3", "stage2.ikd=false",
                                   "eval.ks=10,20", "seed=7", "data.root=null", "semantic.encoder=123",
                                   'semantic.template="{title}"', "eval.beam=[5]"])
    assert over == {"codes": {"method": "rqvae"}, "stage2": {"epochs": 3, "ikd": False}, "stage1": {"lr": 0.002},
                    "eval": {"ks": [10, 20], "beam": [5]}, "seed": 7, "data": {"root": None},
                    "semantic": {"encoder": "123", "template": "{title}"}}
    with pytest.raises(ConfigError, match="eval.beam must be an integer"):  # parsed, then checked
        config.profile("smoke", **over)
    cfg = config.profile("smoke", **config.parse_overrides(["codes.method=rqvae", "stage2.epochs=3", "eval.ks=[5]"]))
    assert (cfg.codes.method, cfg.stage2.epochs, cfg.eval.ks) == ("rqvae", 3, (5,))
    with pytest.raises(ConfigError, match=r"stage1.epochs must be an integer, got '3'"):
        config.profile("smoke", **config.parse_overrides(['stage1.epochs="3"']))


@pytest.mark.parametrize("item, msg", [
    ("epochs=3", r"unknown setting 'epochs'; did you mean stage1.epochs or stage2.epochs\?"),
    ("stage3.epochs=3", r"unknown section 'stage3'"),
    ("stage2.epoch=3", r"unknown setting 'epoch' in \[stage2\]"),
    ("stage2.epochs", r"expected section.key=value"),
    ("stage2=3", r"name a setting inside \[stage2\]"),
    ("a.b.c=1", r"expected section.key=value"),
])
def test_bad_set_items_name_the_problem(item, msg):
    with pytest.raises(ConfigError, match=msg):
        config.parse_overrides([item])


# --------------------------------------------------------------------------- permissions and leftovers

@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_and_artefacts_respect_the_umask(tmp_path, umask022):
    store.atomic_write_bytes(tmp_path / "f.bin", b"x")
    store.atomic_torch_save({"a": 1}, tmp_path / "c.pt")
    assert oct((tmp_path / "f.bin").stat().st_mode & 0o777) == oct(0o644)
    assert oct((tmp_path / "c.pt").stat().st_mode & 0o777) == oct(0o644)

    def build(out, work):
        store.atomic_write_json(out / "x.json", [1])
        (out / "y.txt").write_text("y")

    art = store.cached("thing", {"a": 1}, build, root=tmp_path)
    assert oct(art.path.stat().st_mode & 0o777) == oct(0o755)  # mkdtemp would leave 0700
    for p in art.path.iterdir():
        assert oct(p.stat().st_mode & 0o777) == oct(0o644), p.name
    os.umask(0o077)
    store.atomic_write_bytes(tmp_path / "private.bin", b"x")
    assert oct((tmp_path / "private.bin").stat().st_mode & 0o777) == oct(0o600)


def test_prepared_data_and_tables_respect_the_umask(tmp_path, umask022, monkeypatch):
    from ungerlib.model import data
    from ungerlib.infra import report

    data.write_prepared(data.make_synthetic(config.DataConfig(n_users=20, n_items=40, n_topics=4)), tmp_path / "S")
    monkeypatch.setenv("UNGER_FIGURES", str(tmp_path / "fig"))
    import pandas as pd

    report.save_table(pd.DataFrame({"recall@10": [0.5]}), "t", config.profile("smoke"))
    for p in [*(tmp_path / "S").iterdir(), *(tmp_path / "fig").iterdir()]:
        assert oct(p.stat().st_mode & 0o777) == oct(0o644), p


def test_two_builds_of_one_artefact_train_it_once(tmp_path, capsys):
    """The second of two concurrent builds of one key waits for the first (a lock per artefact) and
    reuses its result: one run trained, both callers get the same folder."""
    import threading

    calls = []

    def slow(out, work):
        calls.append(threading.get_ident())
        time.sleep(0.5)
        (out / "x.txt").write_text("built")

    got = []
    threads = [threading.Thread(target=lambda: got.append(store.cached("thing", {"a": 1}, slow, root=tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)  # the first holds the lock before the second asks
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 2 and got[0].path == got[1].path
    assert "another process is building thing" in capsys.readouterr().err
    assert os.listdir(tmp_path / "thing") == [store.config_hash({"a": 1})]  # locks live outside the kind's folder


def test_failed_and_killed_builds_leave_no_empty_folders(tmp_path):
    import subprocess
    import sys

    def fails(out, work):
        (out / "partial").write_text("x")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        store.cached("thing", {"a": 1}, fails, root=tmp_path)
    assert os.listdir(tmp_path / "thing") == []  # neither .<hash>.XXXX nor an empty <hash>.work

    # a killed build (SIGKILL: no handler runs) leaves its temporary folder and an empty work folder
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    h = store.config_hash({"a": 2})
    leftover = tmp_path / "thing" / f".{h}.{store._HOST}.{dead.pid}.abcd1234"
    leftover.mkdir()
    (leftover / "half.npy").write_bytes(b"x")
    (tmp_path / "thing" / f"{h}.work").mkdir()
    live = tmp_path / "thing" / f".{store.config_hash({'a': 3})}.{store._HOST}.{os.getpid()}.efgh5678"
    live.mkdir()  # a build in progress in this process: kept, and so is its (empty) work folder
    (tmp_path / "thing" / f"{store.config_hash({'a': 3})}.work").mkdir()
    kept_ckpt = tmp_path / "thing" / f"{store.config_hash({'a': 4})}.work"
    kept_ckpt.mkdir()
    (kept_ckpt / "stage1.pt").write_bytes(b"checkpoint")  # a killed build's checkpoint: kept to resume

    store.cached("thing", {"a": 5}, lambda out, work: None, root=tmp_path)
    left = sorted(os.listdir(tmp_path / "thing"))
    assert left == sorted([live.name, f"{store.config_hash({'a': 3})}.work", kept_ckpt.name,
                           store.config_hash({"a": 5})])


# The smoke profile's keys, as computed at 870e898 (before the layout moved every module into a
# package): a refactor must leave them as they are; a deliberate change of a key's content (a version
# bump, a new setting without key_omits) updates this table in the same commit.
SMOKE_KEYS = {"semantic": "dcdca2ee27a7", "stage1": "daa34b228d9a", "codes": "247719f5ffe0",
              "stage2": "df54544958d4", "eval": "d8ecc721dfb9"}


def test_the_smoke_keys_have_not_moved():
    cfg = config.profile("smoke")
    assert {k: artefacts.key_hash(k, cfg) for k in SMOKE_KEYS} == SMOKE_KEYS


def test_precision_auto_stays_out_of_keys_and_a_chosen_one_enters():
    cfg = config.profile("smoke")
    assert "precision" not in artefacts.key("stage2", cfg)["stage2"]
    bf16 = cfg.replace(stage2={"precision": "bf16"})
    assert artefacts.key("stage2", bf16)["stage2"]["precision"] == "bf16"
    assert artefacts.key_hash("stage1", bf16) == artefacts.key_hash("stage1", cfg)  # only Stage II and after
    assert artefacts.key_hash("eval", bf16) != artefacts.key_hash("eval", cfg)
    with pytest.raises(ConfigError, match="stage1.precision must be one of 'auto', 'fp32', 'bf16', got 'fp16'"):
        cfg.replace(stage1={"precision": "fp16"})
