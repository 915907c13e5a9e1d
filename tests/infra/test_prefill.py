"""ungerlib.prefill: the plan lists each run the notebooks read once, in dependency order, and the workers
build artefacts that the notebooks' own calls then load without training."""
from __future__ import annotations

import pytest

from ungerlib.infra import artefacts, config, prefill
from ungerlib.analyses import seeds, stage2_grid, table3
from ungerlib.model import stage2


@pytest.fixture
def tuned_everywhere(monkeypatch):
    """A selection (``make tune``'s selected.json) with the first grid point of every baseline on every
    data set, whatever the committed file holds now."""
    from ungerlib.analyses import tuning

    sel = {"baselines": {n: {m: {"params": table3.full_grid("cpu", m)[0]} for m in table3.RERUN}
                         for n in ("Beauty", "Sports", "Toys")}}
    monkeypatch.setattr(tuning, "load", lambda profile: sel)
    return sel


def test_plan_is_deduplicated_and_in_dependency_order(tuned_everywhere):
    jobs = prefill.plan("cpu", ["tune", "04", "05", "11"], ["Beauty"])
    assert len({(j.kind, j.key_hash) for j in jobs}) == len(jobs)
    assert [j.phase for j in jobs] == sorted(j.phase for j in jobs)
    kinds = {j.kind.split(".")[0] for j in jobs}
    assert kinds == {"semantic", "codes", "stage2", "eval", "baseline", "eval_discrec", "eval_neighbours", "eval_dual"}
    # the neighbours decodings read the default model, so they start after every Stage II training; the
    # grid's three non-zero points at each of Beauty's seeds (notebook 11's seed claims)
    nb = [j for j in jobs if j.kind == "eval_neighbours"]
    assert len(nb) == 3 * seeds.N_SEEDS["cpu"] and min(j.phase for j in nb) > max(j.phase for j in jobs if j.kind in ("eval", "stage2"))
    cfg = config.profile("cpu", "Beauty")
    # the adopted row at the full budget is the profile's default run: evaluated once, not trained twice
    adopted = artefacts.key_hash("stage2", stage2_grid.lever_config(cfg, stage2_grid.ADOPTED, stage2_grid.FULL))
    assert adopted == artefacts.key_hash("stage2", cfg)
    assert not [j for j in jobs if j.kind == "stage2" and j.key_hash == adopted]
    assert [j for j in jobs if j.kind == "eval" and j.label == "Beauty default"]
    # make tune plans every lever row at the screening budget on the first data set and every grid point
    assert len([j for j in jobs if j.label.startswith("Beauty lever ")]) == len(stage2_grid.STAGE2_LEVERS)
    sasrec = [j for j in jobs if j.kind == "baseline.SASRec" and j.cfg.seed == config.profile("cpu").seed]
    assert len(sasrec) == len(table3.grid("cpu", "SASRec"))
    assert len([j for j in jobs if j.kind == "baseline.SASRec"]) == len(sasrec) + seeds.N_SEEDS["cpu"] - 1
    # make figures plans only the selected setting of each baseline
    figures = [j for j in prefill.plan("cpu", ["04", "11"], ["Beauty"]) if j.kind.startswith("baseline.")]
    assert all(j.label.endswith("(tuned)") for j in figures)
    assert len([j for j in figures if j.cfg.seed == cfg.seed]) == len(table3.RERUN)
    # and SASRec and HSTU at the other seeds, for the seed claims
    assert len(figures) == len(table3.RERUN) + len(seeds.BASELINES) * (seeds.N_SEEDS["cpu"] - 1)
    # and the confirmed rows at the full budget on every data set (the adopted one is the default run)
    full = sorted(j.label for j in prefill.plan("cpu", ["04"]) if "full-budget" in j.label)
    assert full == sorted(f"{n} full-budget {r[:1]}" for n in ("Beauty", "Sports", "Toys")
                          for r in stage2_grid.CONFIRM if r != stage2_grid.ADOPTED)
    assert len([j for j in jobs if j.kind == "semantic"]) == 1


def test_by_notebook_plans_each_run_once_with_the_first_notebook_that_reads_it(tuned_everywhere, capsys):
    groups = prefill.by_notebook("cpu", ["04", "11"], ["Beauty"])
    assert [nb for nb, _ in groups] == ["04", "11"]
    (_, first), (_, second) = groups
    assert not set(first) & set(second)
    assert set(first) | set(second) == set(prefill.plan("cpu", ["04", "11"], ["Beauty"]))
    assert set(first) == set(prefill.plan("cpu", ["04"], ["Beauty"]))  # notebook 04 complete in its own group
    assert any(j.kind == "eval_dual" for j in second) and not any(j.kind == "eval_dual" for j in first)
    assert prefill.main(["--profile", "cpu", "--only", "04", "11", "--datasets", "Beauty", "--by-notebook",
                         "--dry-run", "--jobs", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["notebook 04", "notebook 11"]
    assert all("with 2 jobs from now to its end" in line for line in out)


def test_make_tune_prefills_beauty_s_three_best_on_toys_once_beauty_is_tuned(tuned_everywhere):
    def planned(model, dataset):
        return [j.extra["params"] for j in prefill.plan("cpu", ["tune"], ["Beauty", "Toys"])
                if j.kind == artefacts.baseline_kind(model) and j.label.startswith(dataset)]

    assert planned("SASRec", "Beauty") == table3.grid("cpu", "SASRec")
    assert planned("SASRec", "Toys") == []  # Beauty not tuned at this grid: make tune trains Toys after Beauty
    assert planned("BERT4Rec", "Toys") == table3.grid("cpu", "BERT4Rec")  # two points: no wait
    ranked = table3.grid("cpu", "SASRec")[::-1]
    tuned_everywhere["baselines"]["Beauty"]["SASRec"]["ranked"] = ranked
    assert planned("SASRec", "Toys") == ranked[:table3.TRANSFER]


def test_the_figures_plan_names_make_tune_where_a_baseline_is_not_tuned(tuned_everywhere):
    from ungerlib.infra import cli

    del tuned_everywhere["baselines"]["Beauty"]["HSTU"]
    with pytest.raises(cli.Failed, match="no tuned setting of HSTU on Beauty .* run make tune PROFILE=cpu"):
        prefill.plan("cpu", ["11"], ["Beauty"])
    tuned_everywhere["baselines"]["Beauty"]["HSTU"] = {"params": {"dim": 64}}  # not a point of the grid
    with pytest.raises(cli.Failed, match="is not a point of its current cpu grid.*run make tune PROFILE=cpu"):
        prefill.plan("cpu", ["11"], ["Beauty"])


def test_skip_untuned_plans_everything_but_the_untuned_baselines_and_names_them(tuned_everywhere):
    del tuned_everywhere["baselines"]["Beauty"]["HSTU"]
    lines: list[str] = []
    jobs = prefill.plan("cpu", ["08", "11"], ["Beauty"], skip_untuned=True, log=lines.append)
    assert not [j for j in jobs if j.kind == "baseline.HSTU"]  # neither Table 3's, the seeds' nor the scaling's
    assert [j for j in jobs if j.kind == "baseline.SASRec"]  # still tuned: planned
    assert [j for j in jobs if j.kind == "eval_dual"] and [j for j in jobs if "decoder layers" in j.label]
    assert lines == ["[prefill] not planned, not tuned at their current grids (make tune PROFILE=cpu): HSTU on Beauty"]
    everything = prefill.plan("cpu", ["08", "11"], ["Beauty"], skip_untuned=True, log=lines.append)
    tuned_everywhere["baselines"]["Beauty"]["HSTU"] = {"params": table3.grid("cpu", "HSTU")[0]}
    with_hstu = prefill.plan("cpu", ["08", "11"], ["Beauty"])
    assert set(everything) < set(with_hstu)
    assert {j.kind for j in set(with_hstu) - set(everything)} == {"baseline.HSTU"}


def test_dry_run_prints_the_total_and_an_estimate(capsys, tuned_everywhere):
    assert prefill.main(["--profile", "cpu", "--only", "04", "--datasets", "Beauty", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("[prefill] ") and "to build" in out[-1] and "of one-thread work" in out[-1]
    assert all(line.startswith("phase ") for line in out[:-1])


def test_the_estimate_counts_own_times_and_the_unbuilt_runs_a_job_reads(tmp_path, monkeypatch):
    import json

    from ungerlib.infra import store

    monkeypatch.setattr(store, "artefact_root", lambda: tmp_path)

    def stored(kind, dataset, end, wall, own=None, epochs=None, i=[0]):
        i[0] += 1
        (tmp_path / kind / f"run{i[0]}").mkdir(parents=True)
        rec = {"key": {"data": {"dataset": dataset}}, "wall_s": wall,
               "created": f"2026-12-07T{end // 3600:02d}:{end % 3600 // 60:02d}:{end % 60:02d}+0000"}
        (tmp_path / kind / f"run{i[0]}" / "provenance.json").write_text(json.dumps(rec | ({"own_s": own} if own else {})))
        if epochs:  # a trained run's history: each epoch's training and validation seconds
            (tmp_path / kind / f"run{i[0]}" / "history.json").write_text(json.dumps(
                [{"epoch": e + 1, "train_s": t, "valid_s": v} for e, (t, v) in enumerate(epochs)]))

    stored("stage2", "Beauty", 3000, 1000.0)  # trained inside the evaluation below
    stored("codes", "Beauty", 2500, 400.0)  # inside that training: subtracted with it, not twice
    stored("eval", "Beauty", 3600, 3000.0)  # an old record: own time 3000 - 1000
    stored("eval", "Beauty", 9000, 500.0, own=100.0)
    stored("stage2", "Sports", 20000, 3000.0)
    stored("stage2", "synthetic", 30000, 5.0)
    stored("stage2_dual", "Sports", 40000, 300.0, own=300.0, epochs=[(200.0, 100.0)] * 4)  # resumed at epoch 3
    own = prefill.own_times(tmp_path, {"stage2", "codes", "eval", "stage2_dual"})
    assert sorted(own[("eval", "Beauty")]) == [100.0, 2000.0] and own[("stage2", "Beauty")] == [600.0]
    assert own[("stage2_dual", "Sports")] == [1200.0]  # its epochs, not the last attempt's wall time

    def job(kind, dataset):
        extra = ({"params": table3.full_grid("cpu", kind.split(".")[1])[0]} if kind.startswith("baseline.")
                 else {"neighbour_lambda": [5.0]} if kind == "eval_neighbours" else {})
        return prefill.job(kind, config.profile("cpu", dataset), dataset, **extra)

    state = {}  # what is built, by (kind, data set); everything else missing
    monkeypatch.setattr(prefill.Job, "cached", lambda self: state.get((self.kind, self.cfg.data.dataset)) == "built")
    monkeypatch.setattr(store, "state", lambda kind, key, root=None: state.get((kind, key["data"]["dataset"]), "missing"))
    for k in ("semantic", "stage1", "codes", "stage2"):
        state[(k, "Beauty")] = "built"
    assert prefill.estimate([job("eval", "Beauty")]) == 1050  # its decoding only: (2000 + 100) / 2
    del state[("stage2", "Beauty")]
    assert prefill.estimate([job("eval", "Beauty")]) == 1050 + 600  # and the model it trains first
    # two evaluations of one missing model count its training once; a planned training is its own job
    assert prefill.estimate([job("eval", "Beauty"), job("eval_neighbours", "Beauty")]) == 1050 + 600 + prefill.TYPICAL_S["eval_neighbours"]
    assert prefill.estimate([job("stage2", "Beauty"), job("eval", "Beauty")]) == 600 + 1050
    for k in ("semantic", "stage1", "codes"):
        state[(k, "Toys")] = "built"
    assert prefill.estimate([job("stage2", "Toys")]) == pytest.approx(1800)  # the real data sets' runs
    assert prefill.estimate([job("stage2_dual", "Toys")]) == 1200.0  # the same kind on another data set
    assert prefill.estimate([job("eval_dual", "Toys")]) == prefill.TYPICAL_S["eval_dual"] + 1200.0
    assert prefill.estimate([job("baseline.TIGER", "Toys")]) == prefill.TYPICAL_S["baseline.TIGER"]
    assert prefill.estimate([job("baseline.NGCF", "Toys")]) == prefill.TYPICAL_S["baseline"]


def test_bad_arguments_are_named():
    with pytest.raises(config.ConfigError, match="unknown notebook"):
        prefill.plan("smoke", ["99"])
    assert prefill.main(["--profile", "smoke", "--jobs", "0"]) == 1


def test_workers_fill_the_store_and_the_notebook_call_only_loads(monkeypatch):
    plan = prefill.plan("smoke", ["tune", "04"])
    jobs = [j for j in plan if j.kind in ("semantic", "codes") and "default" in j.label]
    lever_a = [j for j in plan if j.label == "synthetic lever A"]
    # a Stage I neighbours decoding of lever A's model, which the same call trains first
    nb = prefill.job("eval_neighbours", lever_a[0].cfg, "synthetic lever A, neighbours", neighbour_lambda=[2.0, 5.0])
    alpharec = [j for j in prefill.plan("smoke", ["11"]) if j.kind == "baseline.AlphaRec"]
    assert len(lever_a) == 1 and len(alpharec) == 1
    jobs += alpharec + lever_a + [nb]  # a baseline: cached() must find it under the key overall.run uses
    built = prefill.prefill(jobs, n_jobs=2, log=lambda s: None)
    assert all(j.cached() for j in jobs)
    assert "synthetic lever A, neighbours" in built and set(built) <= {j.label for j in jobs}
    assert artefacts.state("stage2", lever_a[0].cfg) == "built"

    def no_training(*a, **k):
        raise AssertionError("trained although the store holds the run")

    monkeypatch.setattr(stage2, "train_stage2", no_training)
    _, hist = stage2.run_stage2(lever_a[0].cfg, progress=False)  # what stage2_grid.lever_table calls
    assert hist and hist[-1]["epoch"] >= 1


def test_a_failed_run_is_named_and_its_error_raised(smoke):
    from ungerlib.analyses.table3 import BaselineError

    bad = prefill.Job("baseline.SASRec", "no-such-run", smoke, "synthetic bad SASRec", {"params": {"no_such_setting": 1}})
    lines: list[str] = []
    with pytest.raises(BaselineError, match="unknown setting"):
        prefill.prefill([bad], n_jobs=1, log=lines.append)
    assert any("failed: synthetic bad SASRec" in line for line in lines)


def test_the_submitit_path_builds_the_runs_in_jobs_of_their_own(tmp_path, monkeypatch):
    """submitit's local executor runs the path a SLURM cluster runs: each phase submitted as a job array,
    one job (a process of its own, with its log) per run; the notebook's call then only loads."""
    monkeypatch.setenv("UNGER_ARTEFACTS", str(tmp_path / "store"))  # the jobs inherit it, as on a cluster
    cfg = config.profile("smoke", stage1={"epochs": 2})
    jobs = [prefill.job("semantic", cfg, "synthetic text embeddings"), prefill.job("codes", cfg, "synthetic codes")]
    lines: list[str] = []
    built = prefill.prefill(jobs, log=lines.append, executor=prefill.Submitit(tmp_path / "jobs", cluster="local"))
    assert set(built) == {j.label for j in jobs} and all(j.cached() for j in jobs)
    assert "with submitit (local)" in lines[0]
    assert len(list((tmp_path / "jobs").glob("*_log.out"))) == 2  # two jobs ran, each with its own log

    def no_training(*a, **k):
        raise AssertionError("trained although the store holds the run")

    from ungerlib.model import codes, stage1

    monkeypatch.setattr(stage1, "train_stage1", no_training)
    assert codes.item_codes(cfg).K == cfg.codes.K  # what notebook 03 calls


def test_a_failed_submitit_job_is_one_line_naming_its_log(smoke, tmp_path):
    from ungerlib.infra import cli

    bad = prefill.Job("baseline.SASRec", "no-such-run", smoke, "synthetic bad SASRec", {"params": {"no_such_setting": 1}})
    lines: list[str] = []
    with pytest.raises(cli.Failed, match=r"job \S+ failed: .*unknown setting.* \(log: .*_log.err\)"):
        prefill.prefill([bad], log=lines.append, executor=prefill.Submitit(tmp_path, cluster="local"))
    assert any("failed: synthetic bad SASRec" in line for line in lines)


def test_executor_options_are_checked_before_any_work(capsys, monkeypatch):
    assert prefill.main(["--profile", "smoke", "--partition", "gpu", "--gpus-per-job", "1"]) == 1
    assert "--partition, --gpus-per-job: only for --executor slurm or submitit-local" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "submitit", None)  # not installed
    with pytest.raises(config.ConfigError, match=r"--executor slurm needs submitit: pip install 'ungerlib\[cluster\]'"):
        prefill.Submitit("unused", cluster="slurm")


def test_the_slurm_executor_gets_the_options_or_says_there_is_no_cluster(tmp_path, monkeypatch):
    import submitit

    a = prefill.parser().parse_args(["--executor", "slurm", "--partition", "gpu", "--gpus-per-job", "1",
                                     "--cpus-per-job", "4", "--jobs", "8", "--submitit-dir", str(tmp_path)])
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 0))  # no srun here
    with pytest.raises(config.ConfigError, match=r'--executor slurm: Could not detect "srun".* --executor local'):
        prefill.executor_of(a)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # on a cluster
    params = prefill.executor_of(a).ex._executor.parameters
    assert {k: params[k] for k in ("partition", "gpus_per_node", "cpus_per_task", "array_parallelism", "time")} == \
        {"partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 4, "array_parallelism": 8, "time": 720}


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_prefill_leaves_no_worker_training_on():
    """SIGKILL the process that runs a Local executor: its worker (busy with a long job) goes with it."""
    import os
    import subprocess
    import sys
    import time

    script = ("import time\n"
              "from ungerlib.infra.prefill import Local\n"
              "ex = Local(1)\n"
              "ex.start(time.sleep, [120])\n"
              "time.sleep(10)\n"  # the worker has started and run its initializer
              "print(*ex.pool._processes, flush=True)\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()

    def gone(pid: int) -> bool:  # no such process, or a zombie nobody has reaped yet
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    deadline = time.time() + 20
    while not gone(worker) and time.time() < deadline:
        time.sleep(0.2)
    alive = not gone(worker)
    if alive:
        os.kill(worker, 9)
    assert not alive, "the worker outlived its killed parent"
