"""Stage II variants (notebook 05): rows are configs, equal configs are one run, p-values come from the
saved rankings, bad rows fail before any work."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ungerlib.infra import artefacts
from ungerlib.analyses import paper
from ungerlib.analyses import ablations as A
from ungerlib.infra import config
from ungerlib.model import data, stage2

# Stage II settings the lead may adopt as the profiles' default (issue 11): the row identities must
# not depend on the default.
LEVERS = {"history_tokens": "codes", "decoder_tokens": "level", "valid_children": False, "weight_decay": 0.0}


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("stage2_default", [{}, LEVERS], ids=["profile", "levers"])
def test_equal_rows_are_one_config_and_one_artefact(profile, stage2_default):
    cfg = config.profile(profile, "synthetic").replace(stage2=stage2_default)
    K = cfg.codes.K
    ours = config.variant(cfg, "ours")
    for row in ("cka_ikd", "hkmeans_codes", f"K{K}"):
        assert config.variant(cfg, row) == ours, row
        assert A.run_key(config.variant(cfg, row)) == A.run_key(ours)
    assert config.variant(cfg, "concat") == config.variant(cfg, "none")
    assert config.variant(cfg, "concat").stage2.ikd is False  # the paper's Concat = its Table 6 "\" row
    rows = [*A.TABLE5, *A.TABLE6, *A.FIG8, *A.k_rows(cfg)]
    assert A.k_rows(cfg) == (f"K{K // 2}", f"K{K}", f"K{2 * K}")
    distinct = {A.run_key(config.variant(cfg, r)) for r in rows}
    # ours, semantic only, collaborative only, concat/none, cka, random, rqvae, K/2, 2K
    assert len(distinct) == 9
    p = A.plan(cfg, rows)
    assert (p["same_run_as"] == "").sum() == 9
    assert p.loc[("cka_ikd", cfg.seed), "same_run_as"] == "ours" and p.loc[("none", cfg.seed), "same_run_as"] == "concat"
    # every stage up to the codes is shared where the rows say so: cka trains the same Stage I and codes as ours
    assert artefacts.key("codes", config.variant(cfg, "cka")) == artefacts.key("codes", ours)
    assert artefacts.key("stage1", config.variant(cfg, "concat")) == \
        artefacts.key("stage1", config.variant(cfg, "collaborative_only"))  # both DIN alone


def test_cpu_k_rows_are_the_papers():
    assert A.k_rows(config.profile("cpu")) == ("K128", "K256", "K512")
    assert A.row_label("K128") == "K = 128" and A.row_label("cka") == "CKA (no IKD)"


def test_bad_rows_and_seeds_fail_before_any_work(smoke, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("nothing may train")

    monkeypatch.setattr(A, "evaluate_row", boom)
    with pytest.raises(config.ConfigError, match=r"unknown paper row 'ours2'.*K<n>"):
        A.run_rows(smoke, ["ours", "cka", "ours2"])
    with pytest.raises(config.ConfigError, match="codes.K must be at least 2, got 1"):
        A.run_rows(smoke, ["ours", "K1"])
    with pytest.raises(config.ConfigError, match="non-empty list of row names"):
        A.run_rows(smoke, "ours")
    with pytest.raises(config.ConfigError, match="at least one seed"):
        A.run_rows(smoke, ["ours"], seeds=[])
    with pytest.raises(config.ConfigError, match="seed must be at least 0"):
        A.run_rows(smoke, ["ours"], seeds=[-1])
    with pytest.raises(config.ConfigError, match="unknown paper row 'Kx'"):
        A.plan(smoke, ["Kx"])


@pytest.fixture(scope="module")
def tiny():
    """Smoke with two epochs per stage: the rows train in seconds."""
    return config.profile("smoke").replace(stage1={"epochs": 2}, stage2={"epochs": 2})


@pytest.fixture(scope="module")
def swept(tiny):
    calls = []
    real = stage2.train_stage2
    mp = pytest.MonkeyPatch()
    mp.setattr(stage2, "train_stage2", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    rows = ["cka", "cka_ikd", "hkmeans_codes", "K8", "random_codes", "concat", "none"]
    res = A.run_rows(tiny, rows, progress=False)
    again = A.run_rows(tiny, rows, progress=False)
    mp.undo()
    return rows, res, again, calls


def test_identical_rows_train_once_and_share_one_artefact(tiny, swept):
    rows, res, again, calls = swept
    # distinct: ours (= cka_ikd, hkmeans_codes, K8), cka, random codes, concat (= none)
    assert len(calls) == 4 and len({A.run_key(c) for c in calls}) == 4
    assert list(res.index) == rows  # ours is run as the reference but not listed
    same = res[("run", "same_run_as")]
    assert same.to_dict() == {"cka": "", "cka_ikd": "ours", "hkmeans_codes": "ours", "K8": "ours",
                              "random_codes": "", "concat": "", "none": "concat"}
    assert res.loc["cka_ikd"].drop(("run", "same_run_as")).equals(res.loc["K8"].drop(("run", "same_run_as")))
    pd.testing.assert_frame_equal(res, again)  # the second sweep read every run, trained none


def test_metrics_and_pvalues_match_an_independent_computation(tiny, swept):
    rows, res, _, _ = swept
    target = data.get_splits(tiny)[1].test.target

    def recall20(row):
        ranked = np.load(f"{stage2.evaluate_stage2(config.variant(tiny, row))['path']}/test_all.npy")
        return (ranked[:, :20] == target[:, None]).any(1).astype(float)

    ours = recall20("ours")
    for row in ("cka", "random_codes", "concat"):
        mine = recall20(row)
        assert res.loc[row, ("test_all", "recall@20")] == pytest.approx(mine.mean())
        assert res.loc[row, ("p_test_all", "recall@20")] == pytest.approx(stats.ttest_rel(mine, ours).pvalue)
        assert res.loc[row, ("test_all_se", "recall@20")] == pytest.approx(mine.std(ddof=1) / np.sqrt(len(mine)))
    p = res[[c for c in res.columns if c[0].startswith("p_")]]
    distinct = res[("run", "same_run_as")] != "ours"
    assert p[distinct].notna().all().all() and ((p[distinct] >= 0) & (p[distinct] <= 1)).all().all()
    assert p[~distinct].isna().all().all()  # the same run as ours: no test
    assert (res[("test_excl", "recall@20")] >= res[("test_all", "recall@20")] - 1e-9).all()


def test_claims_follow_the_table(tiny, swept):
    _, res, _, _ = swept
    v = A.check_claims(tiny, res)
    # only claims whose two rows were run: Table 6 (cka_ikd vs cka, cka vs none), Figure 8 (hkmeans vs random)
    assert set(v.index.get_level_values("where")) == {"Table 6", "Figure 8"} and len(v) == 3
    for (where, claim), line in v.iterrows():
        margins = line.filter(like="margin").dropna()
        assert line["holds"] == bool((margins > 0).all())
        assert ("does not hold" in line["sentence"]) == (not line["holds"])
        assert not line["significant"] or (line.filter(like="p ").dropna() < 0.05).all()
    said = A.say(v, "Table 6")
    assert said.count("Table 6: ") == 2, said
    assert "none of its claims could be checked" in A.say(v, "Table 5")
    planted = [A.Claim("test", "a row beats itself", "cka", "cka")]
    same = A.check_claims(tiny, res, planted)
    assert not same["holds"].iloc[0] and same["p recall@20"].iloc[0] == 1.0


def test_tables_for_a_reader(tiny, swept):
    _, res, _, _ = swept
    t = A.paper_table(res, ("none", "cka", "cka_ikd"), paper.PAPER_TABLE6)
    assert t.loc[("cka", "CKA (no IKD)"), ("paper", "recall@10")] == 0.0827
    ours = t.loc[("cka", "CKA (no IKD)"), ("ours", "recall@10")]
    assert t.loc[("cka", "CKA (no IKD)"), ("rel_diff", "recall@10")] == pytest.approx((ours - 0.0827) / 0.0827)
    assert "p_test_all" in t.columns.get_level_values(0)
    assert "paper" not in A.paper_table(res, ("cka",), None).columns.get_level_values(0)
    with pytest.raises(KeyError, match="not in the results"):
        A.paper_table(res, ("semantic_only",), None)
    fig, long = A.rows_figure({"synthetic": res}, ("random_codes", "hkmeans_codes"))
    assert len(long) == 4 and (long["se"] > 0).all()


def test_several_seeds_give_mean_std_and_noise(tiny):
    res = A.run_rows(tiny, ["ours", "cka"], seeds=[1, 2], progress=False)
    one = {s: A.run_rows(tiny, ["cka"], seeds=[s], progress=False) for s in (1, 2)}
    vals = [one[s].loc["cka", ("test_all", "ndcg@20")] for s in (1, 2)]
    assert res.loc["cka", ("test_all", "ndcg@20")] == pytest.approx(np.mean(vals))
    assert res.loc["cka", ("test_all_std", "ndcg@20")] == pytest.approx(np.std(vals, ddof=1))
    assert res.loc["cka", ("run", "seeds")] == "1,2"
    spread = A.seed_spread(tiny, [1, 2], progress=False)
    summary = A.noise_summary(spread)
    assert summary.loc["ndcg@20", "std over seeds"] == pytest.approx(spread["ndcg@20"].std(ddof=1))
    assert summary.loc["ndcg@20", "noise"] >= summary.loc["ndcg@20", "se over users"]
    assert "Over 2 seeds" in A.noise_sentence(summary, res)
    assert "One seed only" in A.noise_sentence(A.noise_summary(spread.iloc[:1]))


def test_paired_test_of_identical_values_is_one():
    from ungerlib.analyses.significance import paired_test

    a = np.array([1.0, 0.0, 1.0, 0.0])
    assert paired_test(a, a)["t_pvalue"] == 1.0
    with pytest.raises(ValueError, match="equally long"):
        paired_test(a, a[:3])
