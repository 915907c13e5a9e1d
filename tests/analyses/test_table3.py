"""Table 3 assembly (ungerlib.analyses.table3): rows, cited rows, best/second marks, the significance test's
choice of baseline (on validation, never test), grids."""
import numpy as np
import pandas as pd
import pytest

from ungerlib.analyses import table3 as O
from ungerlib.baselines.protocol import BaselineError
from ungerlib.analyses.paper import PAPER_TABLE3


def _ranks(targets, hit_rate, rng, n_items=50):
    """[N, 20] rankings with the target first for a ``hit_rate`` share of users, else absent."""
    r = np.tile(np.arange(100, 120), (len(targets), 1))
    hit = rng.random(len(targets)) < hit_rate
    r[hit, 0] = targets[hit]
    return r


def _overall(dataset="Beauty", n=400, seed=0):
    rng = np.random.default_rng(seed)
    tv, tt = rng.integers(50, size=n), rng.integers(50, size=n)
    rate = {"SASRec": (0.5, 0.2), "GRU4Rec": (0.3, 0.4), "popularity": (0.05, 0.05), O.OURS: (0.4, 0.45),
            O.PAPER_MODEL: (0.3, 0.3)}
    rows = {m: {f"{s}_{r}": _ranks(tv if s == "valid" else tt, v if s == "valid" else t, rng)
                for s in ("valid", "test") for r in ("all", "excl")} for m, (v, t) in rate.items()}
    return O.Overall(dataset, rows, {}, {"valid": tv, "test": tt})


def test_table3_has_every_row_and_the_cited_paper_rows():
    t = O.table3([_overall()])
    assert ("Beauty", "SASRec", "excl") in t.index and ("Beauty", O.OURS, "all") in t.index
    cited = t[t["kind"] == "cited (paper)"]
    assert len(cited) == len(PAPER_TABLE3.loc["Beauty"])
    assert t.loc[("Beauty", "EAGER", "paper"), "recall@10"] == 0.0836
    assert ("Beauty", "TIGER (paper's rerun*)", "paper") in t.index
    assert t.loc[("Beauty", "popularity", "all"), "kind"] == "reference"
    assert O.table3([_overall("synthetic")]).query("kind == 'cited (paper)'").empty


def test_mark_best_bolds_the_best_and_italicises_the_second_within_each_ranking():
    t = pd.DataFrame({"kind": ["rerun"] * 4, "recall@10": [0.1, 0.3, 0.2, 0.25], "recall@20": 0.5,
                      "ndcg@10": 0.1, "ndcg@20": 0.1},
                     index=pd.MultiIndex.from_tuples([("B", "a", "excl"), ("B", "b", "excl"), ("B", "c", "paper"),
                                                      ("B", "d", "all")]))
    m = O.mark_best(t)
    assert m.loc[("B", "b", "excl"), "recall@10"] == "**0.3000**"
    assert m.loc[("B", "c", "paper"), "recall@10"] == "_0.2000_"
    assert m.loc[("B", "a", "excl"), "recall@10"] == "0.1000"
    assert m.loc[("B", "d", "all"), "recall@10"] == "**0.2500**"  # its own group


def test_significance_picks_the_baseline_on_validation_not_test():
    res = _overall()
    sig = O.significance(res)
    assert set(sig["baseline"]) == {"SASRec"}  # best on validation (0.5), worse than GRU4Rec on test
    r10 = sig.loc[("Beauty", "all", "recall@10")]
    assert r10["UNGER"] > r10["baseline value"] and r10["t-test p"] < 0.05 and r10["UNGER better, p < 0.05"]
    del res.rows[O.OURS]
    with pytest.raises(BaselineError, match="UNGER"):
        O.significance(res)


def test_grids_are_stated_and_bad_names_rejected():
    for profile in ("smoke", "cpu", "paper"):
        for model in O.RERUN:
            g = O.grid(profile, model)
            assert g and all(isinstance(p, dict) for p in g)
    assert len(O.grid("cpu", "SASRec")) >= 2
    with pytest.raises(BaselineError, match="unknown rerun baseline"):
        O.grid("cpu", "Caser")
    with pytest.raises(BaselineError, match="unknown profile"):
        O.grid("gpu", "SASRec")


def test_sasrec_hstu_and_ngcf_get_grids_of_equal_effort_whose_points_are_valid_settings():
    from ungerlib.baselines import graph, sequential

    sasrec = O.grid("cpu", "SASRec")
    assert len(sasrec) >= 12 and O.grid("cpu", "HSTU") == sasrec  # the same axes and budget
    assert {p["dim"] for p in sasrec} == {64, 128, 256}
    assert len({p["dropout"] for p in sasrec}) >= 2 and len({p["lr"] for p in sasrec}) >= 2
    assert {p.get("n_negatives", 0) for p in sasrec} == {0, 512}  # the full and the sampled softmax
    assert len(O.grid("cpu", "NGCF")) >= 12
    for profile in ("smoke", "cpu", "paper"):  # a bad point fails here, not hours into make tune
        for m in O.SEQUENTIAL:
            for p in O.grid(profile, m):
                sequential.settings(m, p)
        for p in O.grid(profile, "NGCF"):
            graph.settings("NGCF", p)
    assert all(len(O.grid("smoke", m)) == 1 for m in O.RERUN)


def test_sports_and_toys_get_the_three_best_points_of_beauty(monkeypatch):
    from ungerlib.analyses import tuning

    points = O.grid("cpu", "SASRec")
    ranked = sorted(points, key=lambda p: (p["lr"], -p["dim"], p["dropout"]))  # some order of Beauty's runs
    selection = {"baselines": {"Beauty": {"SASRec": {"params": ranked[0], "ranked": ranked}}}}
    monkeypatch.setattr(tuning, "load", lambda profile: selection)
    assert O.grid("cpu", "SASRec", "Toys") == O.grid("cpu", "SASRec", "Sports") == ranked[:O.TRANSFER]
    assert O.grid("cpu", "SASRec", "Beauty") == O.grid("cpu", "SASRec") == points
    assert O.grid("cpu", "BERT4Rec", "Toys") == O.grid("cpu", "BERT4Rec")  # two points: both
    selection["baselines"]["Beauty"]["SASRec"]["ranked"] = ranked[:-1]  # tuned before the grid gained a point
    assert O.grid("cpu", "SASRec", "Toys") == points
    monkeypatch.setattr(tuning, "load", lambda profile: {})  # Beauty not tuned yet
    assert O.grid("cpu", "SASRec", "Toys") == points


def test_make_tune_tunes_beauty_first_then_the_others_on_its_three_best(monkeypatch, tmp_path):
    from ungerlib.analyses import tuning
    from ungerlib.baselines.protocol import TAGS, RunResult

    monkeypatch.setenv("UNGER_FIGURES", str(tmp_path))
    trained = []

    def score(p):
        return p["dim"] / 1000 + 10 * p["lr"] + p["dropout"] / 100 + p.get("n_negatives", 0) / 1e6

    def fake_run(cfg, model, params, force=False):
        trained.append((cfg.data.dataset, params))
        metrics = {tag: {"recall@10": score(params), "ndcg@20": score(params)} for tag in TAGS}
        return RunResult(model, params, metrics, str(tmp_path), {"best_epoch": 3, "epochs_run": 8, "wall_s": 1.0})

    monkeypatch.setattr(O, "run", fake_run)
    out = tuning.tune("cpu", ["Toys", "Beauty"], ["SASRec"], stage2=False)
    best3 = sorted(O.grid("cpu", "SASRec"), key=score, reverse=True)[:O.TRANSFER]
    assert [p for d, p in trained if d == "Beauty"] == O.grid("cpu", "SASRec") and trained[0][0] == "Beauty"
    assert [p for d, p in trained if d == "Toys"] == best3
    assert out["baselines"]["Beauty"]["SASRec"]["ranked"][:O.TRANSFER] == best3
    assert tuning.selected("cpu", "Toys", "SASRec") == best3[0]  # read back from the selection file written
    assert O.grid("cpu", "SASRec", "Sports") == best3
    rows = tuning.table("cpu", "table3_tuning")
    assert len(rows.loc["Beauty"]) == len(O.grid("cpu", "SASRec")) and len(rows.loc["Toys"]) == O.TRANSFER


def test_make_figures_tunes_first_only_where_a_selection_is_missing_or_stale(monkeypatch):
    """``tune --if-needed`` (make figures' first step): nothing while every multi-point grid has a selection
    at its current points; else the grids train (prefill --only tune) and then tune runs."""
    from ungerlib.analyses import tuning
    from ungerlib.infra import prefill, runtime

    calls = []
    monkeypatch.setattr(runtime, "configure_threads", lambda *a, **k: None)
    monkeypatch.setattr(prefill, "_main", lambda a: calls.append(("prefill", a.only, a.jobs)))
    monkeypatch.setattr(tuning, "tune", lambda *a, **k: calls.append(("tune",)) or {})
    full = {n: {m: {"params": O.full_grid("cpu", m)[0]} for m in O.RERUN} for n in ("Beauty", "Sports", "Toys")}
    monkeypatch.setattr(tuning, "load", lambda profile: {"baselines": full})
    assert tuning.untuned("cpu") == [] and tuning.untuned("smoke") == []
    assert tuning.main(["--profile", "cpu", "--if-needed"]) == 0 and calls == []

    full["Toys"]["SASRec"]["params"] = {**full["Toys"]["SASRec"]["params"], "dim": 1024}  # tuned on an older grid
    del full["Beauty"]["NGCF"]  # never tuned
    assert tuning.untuned("cpu") == ["NGCF on Beauty", "SASRec on Toys"]
    assert "TIGER on Beauty" not in tuning.untuned("cpu")  # one point: nothing to select
    assert tuning.main(["--profile", "cpu", "--if-needed", "--jobs", "2"]) == 0
    assert calls == [("prefill", ["tune"], 2), ("tune",)]


def test_paper_table3_is_the_papers_table():
    """Every cell of paper.PAPER_TABLE3 against the paper's text (skipped where shared/ is absent)."""
    import re

    from ungerlib.infra.store import REPO_ROOT

    paths = [REPO_ROOT.parent / "shared" / "paper" / "unger-paper.txt", REPO_ROOT.parent.parent / "shared" / "paper" / "unger-paper.txt"]
    path = next((p for p in paths if p.exists()), None)
    if path is None:
        pytest.skip("the paper's text (shared/paper) is not beside the repository")
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Dataset\tMetric"))
    models = ["GRU4Rec", "Caser", "SASRec", "BERT4Rec", "HGN", "FDSA", "S3-Rec", "RecForest", "TIGER", "ColaRec",
              "EAGER", "UNGER"]
    n = 0
    for line in lines[start + 2:start + 14]:
        parts = line.split("\t")
        ds = parts[0] or ds  # noqa: F821 (set on the first row of each data set)
        metric = parts[1].lower()
        for model, cell in zip(models, parts[2:]):
            assert PAPER_TABLE3.loc[(ds, model), metric] == float(re.sub(r"[^0-9.]", "", cell)), (ds, model, metric)
            n += 1
    assert n == len(PAPER_TABLE3) * 4 == 144


def test_reproduce_check_recomputes_baseline_discrec_and_neighbours_keys(smoke):
    """`reproduce --check` must recompute the keys of artefacts built outside the pipeline stages."""
    from ungerlib.infra import artefacts, reproduce
    from ungerlib.infra.store import config_hash

    for model in O.RERUN:
        kind = artefacts.baseline_kind(model)
        key = artefacts.key(kind, smoke, params=O.grid("smoke", model)[0])
        art = {"kind": kind, "key_hash": config_hash(key), "key": key}
        assert reproduce._artefact_problem(art, "smoke", {}) is None, model
    stale = {**key, "versions": {**key["versions"], kind: 0}}
    why = reproduce._artefact_problem({"kind": kind, "key_hash": config_hash(stale), "key": stale}, "smoke", {})
    assert why and f"versions.{kind} 0 -> 1" in why
    for kind in ("stage2_discrec", "eval_discrec"):
        key = artefacts.key(kind, smoke)
        assert reproduce._artefact_problem({"kind": kind, "key_hash": config_hash(key), "key": key}, "smoke", {}) is None
    key = artefacts.key("eval_neighbours", smoke, neighbour_lambda=[2.0, 5.0])
    assert reproduce._artefact_problem({"kind": "eval_neighbours", "key_hash": config_hash(key), "key": key},
                                       "smoke", {}) is None
    stale = {**key, "eval": {**key["eval"], "beam": 3}}
    why = reproduce._artefact_problem({"kind": "eval_neighbours", "key_hash": config_hash(stale), "key": stale},
                                      "smoke", {})
    assert why is None  # a recorded setting is recomputed as recorded: the key is still valid
    stale = {**key, "versions": {**key["versions"], "eval": 0}}
    why = reproduce._artefact_problem({"kind": "eval_neighbours", "key_hash": config_hash(stale), "key": stale},
                                      "smoke", {})
    assert why and "versions.eval 0 -> 1" in why


def test_paired_tests_and_verdicts_name_the_unger_row_they_test():
    """Our row and the paper's plain beam are tested separately against the same reference."""
    res = _overall()
    res.rows[O.PLAIN] = res.rows["popularity"]  # a plain row far below SASRec on test
    tests = pd.concat([O.paired(res, "SASRec"), O.paired(res, "SASRec", mine=O.PLAIN)])
    v = O.verdicts(tests)
    assert v.loc[("Beauty", O.OURS, "SASRec", "all"), "above in both"] == "yes"
    assert v.loc[("Beauty", O.OURS, "SASRec", "all"), "significant (p < 0.05 both)"] == "yes"
    assert v.loc[("Beauty", O.PLAIN, "SASRec", "excl"), "above in both"] == "no"
    diff = tests.loc[("Beauty", O.PLAIN, "SASRec", "all", "recall@10"), "difference"]
    assert diff == pytest.approx(O.table3([res]).loc[("Beauty", O.PLAIN, "all"), "recall@10"]
                                 - O.table3([res]).loc[("Beauty", "SASRec", "all"), "recall@10"])
    assert O.kind(O.PAPER_MODEL) == "ours, the paper's model" and O.kind(O.OURS) == "ours, beyond the paper"


def test_headline_puts_the_paper_row_beside_ours_and_sasrec():
    t = O.table3([_overall()])
    h = O.headline(t)
    assert list(h.index) == ["UNGER, the paper's Table 3", O.PAPER_MODEL, O.OURS, "SASRec (rerun, tuned on validation)"]
    assert h.loc["UNGER, the paper's Table 3", ("Beauty", "recall@10")] == 0.0939
    assert h.loc[O.OURS, ("Beauty", "ndcg@10")] == t.loc[("Beauty", O.OURS, "excl"), "ndcg@10"]


def test_code_kind_rows_are_named_and_the_thesis_is_tested_pair_by_pair():
    from ungerlib.analyses import code_kinds as ck

    assert ck.row("unified", "codes only") == O.PAPER_MODEL and ck.row("unified", "item tables") == O.ITEM_TABLES
    assert ck.row("semantic", "codes only") == "semantic code (TIGER-style), codes only"
    assert O.kind(ck.row("dual", "item tables")) == "our engine, another kind of code"
    rng = np.random.default_rng(0)
    tt = rng.integers(50, size=300)
    rates = {"unified": 0.5, "dual": 0.3, "semantic": 0.1}
    rows = {ck.row(k, f): {f"test_{r}": _ranks(tt, rates[k], rng) for r in ("all", "excl")}
            for k in ck.KINDS for f in ck.FORMS}
    t = ck.claims(rows, tt, "Beauty")
    assert len(t) == 2 * 3 * 2 * 4 and t["holds"].all()
    assert t.xs("unified > semantic", level="claim")["holds, p < 0.05"].all()
    text = ck.claims_text(t)
    assert text.count("\n") == 2 * 3 - 1 and "**unified > dual** holds" in text


def test_code_kind_configs_differ_in_the_code_only():
    from ungerlib.analyses import code_kinds as ck
    from ungerlib.infra import artefacts, config

    cfg = config.profile("cpu", "Beauty")
    sem, uni = ck.config(cfg, "semantic", "codes only"), ck.config(cfg, "unified", "codes only")
    assert sem.stage2 == uni.stage2 and sem.codes.method == "rqvae" and sem.stage1.variant == "semantic"
    assert ck.config(cfg, "unified", "item tables").stage2 == cfg.stage2  # row J is the profile's default
    assert artefacts.key_hash("eval", ck.config(cfg, "unified", "codes only")) != artefacts.key_hash("eval", sem)
