"""Claims over seeds (ungerlib.analyses.seeds): which runs the other seeds need, the per-seed table, mean
and std, and whether a claim holds on every seed."""
import numpy as np
import pytest

from ungerlib.analyses import code_kinds as ck
from ungerlib.analyses import seeds as S
from ungerlib.analyses import table3 as O
from ungerlib.infra import config as C


def _ranks(target, hit_rate, rng):
    """[N, 20] rankings with the target first for a ``hit_rate`` share of users, else absent."""
    r = np.tile(np.arange(100, 120), (len(target), 1))
    hit = rng.random(len(target)) < hit_rate
    r[hit, 0] = target[hit]
    return r


def _by_seed(rates_per_seed, n=600):
    """``{seed: {row: rankings}}`` with each row's hit rate per seed; one shared test target."""
    rng = np.random.default_rng(0)
    target = rng.integers(50, size=n)
    out = {}
    for s, rates in rates_per_seed.items():
        out[s] = {row: {f"test_{r}": _ranks(target, rate, rng) for r in ("all", "excl")} for row, rate in rates.items()}
    return out, target


def test_seeds_start_at_the_profiles_seed_and_the_claim_rows_are_named():
    cfg = C.profile("smoke")
    assert S.seeds(cfg)[0] == cfg.seed and len(S.seeds(cfg)) == S.N_SEEDS["smoke"]
    assert S.seeds(C.profile("cpu", dataset="Beauty")) == [42, 43, 44]
    rows = S.claim_rows()
    assert {*O.UNGER_ROWS, "SASRec", "HSTU", ck.row("dual", "codes only"), ck.row("semantic", "item tables")} <= set(rows)


def test_the_other_seeds_runs_differ_from_the_profiles_in_the_seed_only():
    cfg = C.profile("smoke")
    runs = S.runs(cfg)
    assert runs and {c.seed for _, c, _, _ in runs} == set(S.seeds(cfg)[1:])
    for kind, c, label, _ in runs:
        back = c.replace(seed=cfg.seed).to_dict()
        assert back["data"] == cfg.to_dict()["data"], label
    kinds = {k for k, *_ in runs}
    assert {"eval", "eval_neighbours", "eval_dual", "baseline.SASRec", "baseline.HSTU"} <= kinds


def test_table_and_summary_give_the_mean_and_sample_std_over_seeds():
    by_seed, target = _by_seed({1: {"a": 0.2}, 2: {"a": 0.4}, 3: {"a": 0.3}})
    t = S.table(by_seed, target, "Beauty")
    assert sorted(t.index.get_level_values("seed").unique()) == [1, 2, 3]
    s = S.summary(t)
    vals = t.xs(("Beauty", "a"), level=("dataset", "row")).xs("all", level="ranking")["recall@10"]
    assert s.loc[("Beauty", "a", "all"), ("mean", "recall@10")] == pytest.approx(vals.mean())
    assert s.loc[("Beauty", "a", "all"), ("std", "recall@10")] == pytest.approx(np.std(vals, ddof=1))
    assert s.loc[("Beauty", "a", "all"), ("seeds", "n")] == 3


def test_a_claim_survives_only_when_it_holds_on_every_seed():
    strong = {O.PAPER_MODEL: 0.5, "SASRec": 0.1, "HSTU": 0.45}
    weak = {O.PAPER_MODEL: 0.5, "SASRec": 0.1, "HSTU": 0.6}  # HSTU ahead on this seed
    by_seed, target = _by_seed({42: strong, 43: strong, 44: weak})
    c = S.claims(by_seed, target, "Beauty")
    assert set(c.index.get_level_values("seed")) == {42, 43, 44}
    s = S.survival(c)
    assert s.loc[("Beauty", f"{O.PAPER_MODEL} > SASRec", "all"), "on every seed"] == "yes"
    hstu = s.loc[("Beauty", f"{O.PAPER_MODEL} > HSTU", "all")]
    assert hstu["on every seed"] == "no" and hstu["holds on"] <= 2
    text = S.survival_text(s)
    assert "holds on every seed" in text and "of 3 seeds" in text


def test_no_testable_claim_is_an_error():
    by_seed, target = _by_seed({1: {"something": 0.3}})
    with pytest.raises(C.ConfigError, match="no claim"):
        S.claims(by_seed, target, "Beauty")
