"""Figure 7 and the alpha/beta sweep (ungerlib.analyses.encoders): each run differs from the default in
exactly one thing, unknown or unavailable encoders are named, existing keys do not move, and the
verdicts read planted numbers right."""
import pandas as pd
import pytest

from ungerlib.analyses import encoders as enc
from ungerlib.infra import artefacts, config, prefill
from ungerlib.infra.config import ConfigError


def _diff(a: dict, b: dict, path: str = "") -> set[str]:
    out = set()
    for k in set(a) | set(b):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out |= _diff(x, y, f"{path}{k}.")
        elif x != y:
            out.add(f"{path}{k}")
    return out


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_sweep_configs_differ_from_the_default_exactly_in_alpha_or_beta(profile):
    cfg = enc.base_config(profile, None if profile == "smoke" else "Beauty")
    sweep = enc.sweep_configs(cfg)
    assert sorted(sweep) == sorted([("alpha", a) for a in enc.ALPHAS] + [("beta", b) for b in enc.BETAS])
    for (weight, value), c in sweep.items():
        d = _diff(c.to_dict(), cfg.to_dict())
        if value == 1.0:
            assert c is cfg and not d  # the paper's alpha = beta = 1 is the default run itself
        else:
            assert d == {f"{enc.WEIGHTS[weight][0]}.{weight}"}
            assert getattr(getattr(c, enc.WEIGHTS[weight][0]), weight) == value
    # alpha moves Stage I and everything after it; beta leaves Stage I and the codes alone
    b = sweep[("beta", 10.0)]
    assert artefacts.key_hash("codes", b) == artefacts.key_hash("codes", cfg)
    assert artefacts.key_hash("stage2", b) != artefacts.key_hash("stage2", cfg)
    a = sweep[("alpha", 0.1)]
    assert artefacts.key_hash("semantic", a) == artefacts.key_hash("semantic", cfg)
    assert artefacts.key_hash("stage1", a) != artefacts.key_hash("stage1", cfg)


def test_encoder_configs_differ_only_in_the_encoder_and_the_default_is_the_profile_run():
    cfg = enc.base_config("cpu", "Beauty")
    assert enc.encoder_config(cfg, "MiniLM") is cfg
    for name in enc.encoders_for("cpu"):
        c = enc.encoder_config(cfg, name)
        assert _diff(c.to_dict(), cfg.to_dict()) <= {"semantic.encoder", "semantic.pooling"}
        assert c.semantic.encoder == enc.ENCODERS[name].encoder
    assert enc.encoder_config(cfg, "BGE-small").semantic.pooling == "cls"
    paper = enc.base_config("paper", "Beauty")
    assert enc.encoder_config(paper, "Llama-2-7b") is paper  # the paper profile's own encoder
    assert enc.encoders_for("paper")[-3:] == ["BERT", "Sentence-T5", "Llama-2-7b"]
    assert not {"BERT", "Sentence-T5", "Llama-2-7b"} & set(enc.encoders_for("cpu"))


def test_an_unknown_encoder_name_is_rejected_naming_it():
    cfg = enc.base_config("smoke")
    for call in (lambda: enc.get("GPT-5"), lambda: enc.encoder_config(cfg, "GPT-5"),
                 lambda: enc.available(["hashing", "GPT-5"])):
        with pytest.raises(ConfigError, match=r"unknown encoder 'GPT-5' for Figure 7; known: hashing, MiniLM") as err:
            call()
        assert "\n" not in str(err.value)


def test_an_uncached_encoder_is_skipped_with_its_one_line_reason(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.delenv("UNGER_ALLOW_DOWNLOAD", raising=False)
    ok, skipped = enc.available(["hashing", "MiniLM", "BGE-small", "Llama-2-7b"])
    assert ok == ["hashing", "MiniLM"]
    assert set(skipped) == {"BGE-small", "Llama-2-7b"}
    assert "'meta-llama/Llama-2-7b-hf'" in skipped["Llama-2-7b"] and "Hugging Face cache" in skipped["Llama-2-7b"]
    assert all("\n" not in r for r in skipped.values())
    runs = enc.run_configs("paper", "Beauty")  # what prefill builds: only what loads here
    assert not any(label.startswith("encoder Llama") or label.startswith("encoder BERT") for label in runs)


def test_existing_keys_do_not_move_and_the_runs_are_shared_with_notebook_05():
    from tests.infra.test_config_store import SMOKE_KEYS

    smoke = config.profile("smoke")
    assert {k: artefacts.key_hash(k, smoke) for k in SMOKE_KEYS} == SMOKE_KEYS
    cfg = enc.base_config("smoke")
    runs = enc.run_configs("smoke", None, ["hashing"])
    from ungerlib.analyses import ablations

    assert artefacts.key_hash("eval", runs["encoder hashing"]) == ablations.run_key(ablations.row_config(cfg, "ours"))
    assert artefacts.key_hash("eval", runs[enc.IKD_OFF]) == ablations.run_key(ablations.row_config(cfg, "cka"))
    assert runs["alpha = 1"] == runs["beta = 1"] == runs["encoder hashing"] == cfg


def test_prefill_plans_notebook_09_once_per_distinct_run():
    jobs = prefill.plan("smoke", ["09"])
    evals = [j for j in jobs if j.kind == "eval"]
    runs = enc.run_configs("smoke")
    assert {j.key_hash for j in evals} == {artefacts.key_hash("eval", c) for c in runs.values()}
    assert len(evals) == len({artefacts.key_hash("eval", c) for c in runs.values()})  # alpha = 1 = beta = 1 once
    # Stage I and codes come first: one codes job per distinct Stage I (alpha and the encoders move it)
    codes = {j.key_hash for j in jobs if j.kind == "codes"}
    assert codes >= {artefacts.key_hash("codes", c) for c in runs.values()}
    assert [j.phase for j in jobs] == sorted(j.phase for j in jobs)


def _sweep_frame(valid: dict[tuple[str, float], float]) -> pd.DataFrame:
    rows = {k: {("valid_all", "ndcg@20"): v, ("p_valid", "ndcg@20"): 0.5} for k, v in valid.items()}
    df = pd.DataFrame(rows).T
    df.index = pd.MultiIndex.from_tuples(df.index, names=["weight", "value"])
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df


def test_robustness_reads_planted_sweeps_right():
    cfg = enc.base_config("smoke")
    flat = {("alpha", a): 0.100 + 0.001 * i for i, a in enumerate(enc.ALPHAS)}  # within 3 % of 0.102
    steep = {("beta", 0.0): 0.100, ("beta", 0.1): 0.099, ("beta", 1.0): 0.100, ("beta", 10.0): 0.080}
    rob = enc.robustness(_sweep_frame({**flat, **steep}), cfg)
    assert bool(rob.loc["alpha", "robust"]) and not bool(rob.loc["beta", "robust"])
    assert rob.loc["beta", "farthest point"] == 10.0 and rob.loc["beta", "largest relative distance"] == pytest.approx(0.2)
    assert rob.loc["alpha", "valid ndcg@20 at default"] == pytest.approx(0.102)
    text = enc.robustness_sentence(rob)
    assert "α: robustness holds" in text and "β: robustness does not hold" in text and "β = 10" in text


def test_encoder_verdicts_check_each_step_of_a_chain():
    names = ["hashing", "MiniLM", "mpnet"]
    t = pd.DataFrame({("encoder", "chain"): [enc.OFFLINE] * 3, ("encoder", "rank"): [0, 1, 2],
                      ("test_all", "ndcg@20"): [0.02, 0.05, 0.04], ("valid_all", "ndcg@20"): [0.03, 0.06, 0.05],
                      ("E_S kNN", "valid ndcg@20"): [0.01, 0.03, 0.02]}, index=names)
    t.columns = pd.MultiIndex.from_tuples(t.columns)
    v = enc.encoder_verdicts(t)
    assert list(zip(v["weaker"], v["stronger"], v["holds"])) == [("hashing", "MiniLM", True), ("MiniLM", "mpnet", False)]
    assert v.loc[0, "test relative"] == pytest.approx(1.5)
    text = enc.encoder_sentence(t, v)
    assert text.startswith("1 of 2 steps") and "best with MiniLM" in text and "Spearman correlation of 1.00" in text
