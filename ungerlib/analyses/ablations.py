"""Stage II variants of one pipeline: the rows of Tables 5 and 6 and Figures 8 and 9 (paper 4.3, 4.4, 4.6).

Every row is a named config, :func:`ungerlib.infra.config.variant` of the profile's config, so a row means
"the profile's default with this one difference" whatever that default is. A config is its
artefacts' key: rows that come out as the same config (``ours``, ``cka_ikd``, ``hkmeans_codes`` and
``K<profile K>``; ``concat`` and ``none``) are trained once and read by every table that shows them.

:func:`run_rows` trains (:func:`ungerlib.model.stage2.run_stage2`, a checkpoint per epoch, so an interrupted
sweep resumes) or loads each row, evaluates it (:func:`ungerlib.model.stage2.evaluate_stage2`, cached with
its per-user top-20 rankings) and tests every row against ``ours`` over the test users (paired
t-test, :func:`ungerlib.analyses.significance.paired_test`). Several seeds give the mean and standard deviation
of each metric; the paired tests then use each user's value averaged over the seeds. :func:`plan` lists
the distinct runs a set of rows needs before any of them trains, :func:`check_claims` tests the
orderings the paper reports, and :func:`seed_spread` says how much a metric moves from seed to seed.
Nothing here selects anything on test: each run's epoch is chosen on validation by Stage II itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ungerlib.infra import artefacts, runtime
from ungerlib.infra import config as C
from ungerlib.model.metrics import METRICS

RANKINGS = ("test_all", "test_excl")  # every item ranked; the user's history removed
REFERENCE = "ours"

TABLE5 = ("semantic_only", "collaborative_only", "concat", "ours")
TABLE6 = ("none", "cka", "cka_ikd")
FIG8 = ("random_codes", "rqvae_codes", "hkmeans_codes")

# What each row is, for a reader (the index of the tables keeps the config.variant name too).
ROW_LABELS = {
    "ours": "ours", "semantic_only": "semantic only (E_S)", "collaborative_only": "collaborative only (DIN alone)",
    "concat": "concat (PCA(E_S) + E_C of DIN alone, no IKD)", "none": "\\ (concat: no CKA, no IKD)",
    "cka": "CKA (no IKD)", "cka_ikd": "CKA + IKD (ours)", "random_codes": "random codes",
    "rqvae_codes": "RQ-VAE", "hkmeans_codes": "hierarchical k-means (ours)",
}


# The Stage II budget every row trains with on a profile, on top of the profile's own settings
# (absent: the profile's budget unchanged). smoke: 4 epochs, so the notebook's eight distinct runs
# fit CI's time; cpu and paper: every row exactly as the profile's default, so "ours" is the default
# run of notebook 04 (the adopted row J needs its full budget: on Beauty its validation NDCG@20 rises
# until epoch 12 of 15, and a screening-budget comparison would compare undertrained models).
PROFILE_STAGE2: dict[str, dict[str, Any]] = {"smoke": {"epochs": 4}}


def base_config(profile: str, dataset: str | None = None) -> C.RunConfig:
    """The config the rows derive from: the profile's, with :data:`PROFILE_STAGE2` applied."""
    cfg = C.profile(profile, dataset)
    budget = PROFILE_STAGE2.get(profile)
    return cfg.replace(stage2=budget) if budget else cfg


def k_rows(cfg: C.RunConfig) -> tuple[str, str, str]:
    """Figure 9's rows relative to the profile's K: K/2, K, 2K (``K128``, ``K256``, ``K512`` at K = 256)."""
    K = cfg.codes.K
    return f"K{max(2, K // 2)}", f"K{K}", f"K{2 * K}"


def row_label(row: str) -> str:
    """A row's name for a reader: ``K128`` -> ``K = 128``, ``cka`` -> ``CKA (no IKD)``."""
    if row.startswith("K") and row[1:].isdigit():
        return f"K = {row[1:]}"
    return ROW_LABELS.get(row, row)


def seeds_of(cfg: C.RunConfig, seeds: Iterable[int] | None) -> list[int]:
    """``seeds`` as a list, or the profile's seed alone; an empty list or a negative seed is an error."""
    out = [cfg.seed] if seeds is None else [int(s) for s in seeds]
    if not out:
        raise C.ConfigError("seeds must name at least one seed (None: the profile's seed)")
    for s in out:
        C.check_setting("", "seed", s, int)
    return list(dict.fromkeys(out))


def row_config(cfg: C.RunConfig, row: str, seed: int | None = None) -> C.RunConfig:
    """The config of ``row`` (:func:`ungerlib.infra.config.variant`) on ``cfg``, with ``seed`` if given."""
    rc = C.variant(cfg, row)
    return rc if seed is None or seed == rc.seed else rc.replace(seed=seed)


def row_configs(cfg: C.RunConfig, rows: Sequence[str], seeds: Iterable[int] | None = None
                ) -> dict[tuple[str, int], C.RunConfig]:
    """``{(row, seed): config}`` for every row and seed; every row name is checked before any work."""
    seeds = seeds_of(cfg, seeds)
    return {(r, s): row_config(cfg, r, s) for r in _rows(rows) for s in seeds}


def _rows(rows: Sequence[str]) -> list[str]:
    if isinstance(rows, str) or not rows or not all(isinstance(r, str) for r in rows):
        raise C.ConfigError(f"rows must be a non-empty list of row names, got {rows!r}")
    return list(dict.fromkeys(rows))


def run_key(cfg: C.RunConfig) -> str:
    """Short hash of ``cfg``'s evaluation artefact key: equal for two configs exactly when they share
    the Stage II run and its evaluation."""
    return artefacts.key_hash("eval", cfg)


def _status(cfg: C.RunConfig) -> str:
    if artefacts.state("eval", cfg) == "built":
        return "evaluated"
    return {"built": "trained", "checkpoint": "checkpoint (resumes)", "missing": "to train"}[artefacts.state("stage2", cfg)]


def plan(cfg: C.RunConfig, rows: Sequence[str], seeds: Iterable[int] | None = None) -> pd.DataFrame:
    """One line per (row, seed) before anything trains: its K, codes method, Stage I variant, IKD,
    the Stage II run it maps to (``run``: hash of its key), the first row with the same run
    (``same_run_as``, empty for a distinct run) and its state in the artefact store (``to train``,
    ``checkpoint (resumes)``, ``trained``, ``evaluated``)."""
    out, first = [], {}
    for (row, seed), rc in row_configs(cfg, rows, seeds).items():
        key = run_key(rc)
        same = first.setdefault(key, row)
        out.append({"row": row, "seed": seed, "K": rc.codes.K, "codes": rc.codes.method,
                    "stage1": rc.stage1.variant, "ikd": rc.stage2.ikd, "run": key,
                    "same_run_as": "" if same == row else same, "state": _status(rc)})
    return pd.DataFrame(out).set_index(["row", "seed"])


# ----------------------------------------------------------------------------- one run

@dataclass
class RowRun:
    """One evaluated Stage II run: metrics per ranking, the per-user values behind them, the epoch
    selected on validation, the epochs run and the training wall time (s)."""

    metrics: dict[str, dict[str, float]]
    per_user: dict[str, pd.DataFrame]
    best_epoch: int
    epochs: int
    train_s: float


_RUNS: dict[str, RowRun] = {}  # run_key -> RowRun, for this process (loading a run again is not free)
_TARGETS: dict[str, np.ndarray] = {}


def _test_targets(cfg: C.RunConfig) -> np.ndarray:
    key = artefacts.key_hash("data", cfg)
    if key not in _TARGETS:
        from ungerlib.model.data import get_splits

        _TARGETS[key] = get_splits(cfg)[1].test.target
    return _TARGETS[key]


def evaluate_row(cfg: C.RunConfig, progress: bool = True) -> RowRun:
    """Train (or load) and evaluate one config; per-user test values from its saved rankings.

    The per-user values are checked against the saved metrics, so a ranking read against the wrong
    targets cannot pass unnoticed."""
    from ungerlib.model.metrics import per_user
    from ungerlib.model.stage2 import evaluate_stage2, run_stage2

    key = run_key(cfg)
    if key in _RUNS:
        return _RUNS[key]
    _, hist = run_stage2(cfg, progress=progress)  # trains (checkpoint per epoch; a killed run resumes) or loads
    ev = evaluate_stage2(cfg)  # beam search on valid and test once, then cached
    target = _test_targets(cfg)
    users = {r: per_user(np.load(Path(ev["path"]) / f"{r}.npy"), target, cfg.eval.ks) for r in RANKINGS}
    for r, df in users.items():
        for m, v in ev[r].items():
            if not np.isclose(df[m].mean(), v, atol=1e-9):
                raise RuntimeError(f"per-user {m} of {r} ({df[m].mean():.6f}) differs from the saved metric "
                                   f"({v:.6f}) in {ev['path']}: rankings and targets do not match")
    best = max(hist, key=lambda h: h["valid_ndcg@20"])
    run = RowRun({r: ev[r] for r in ("valid_all", "valid_excl", *RANKINGS)}, users, int(best["epoch"]),
                 len(hist), float(sum(h.get("train_s", 0) + h.get("valid_s", 0) for h in hist)))
    _RUNS[key] = run
    return run


def _seed_mean_users(runs: list[RowRun], ranking: str) -> pd.DataFrame:
    """Each user's metric values averaged over the seeds' runs (same users, same order)."""
    return sum(r.per_user[ranking][list(METRICS)] for r in runs) / len(runs)


def _pvalue(a: pd.Series, b: pd.Series) -> float:
    from ungerlib.analyses.significance import paired_test

    return float(paired_test(a, b)["t_pvalue"])


# ----------------------------------------------------------------------------- the table of rows

def run_rows(cfg: C.RunConfig, rows: Sequence[str], seeds: Iterable[int] | None = None,
             reference: str = REFERENCE, progress: bool = True) -> pd.DataFrame:
    """Train or load every row (each seed), evaluate it, and test it against ``reference``.

    Returns one line per row (index ``row``, in the given order) with MultiIndex columns:
    ``(test_all | test_excl, metric)`` test metrics (mean over seeds), ``(test_all_se, metric)`` their
    standard error over users, ``(valid_all, ndcg@20)`` (beam ``eval.beam``),
    ``(p_test_all | p_test_excl, metric)`` two-sided paired t-test p-values against ``reference``
    over the test users (each user's values averaged over the seeds; empty for ``reference`` and for
    rows that are the same run), with several seeds ``(<ranking>_std, metric)`` standard deviations
    over seeds, and ``run``: ``K``, ``best_epoch`` (selected on validation; mean over seeds),
    ``epochs``, ``train_s`` (training wall seconds, summed over seeds), ``same_run_as``, ``seeds``.

    Rows whose configs are equal are run once. ``reference`` is run too if not among ``rows``.
    """
    rows = _rows(rows)
    seeds = seeds_of(cfg, seeds)
    cfgs = row_configs(cfg, [*rows, reference], seeds)  # every name checked before any work
    keys = {rs: run_key(c) for rs, c in cfgs.items()}
    todo = list(dict.fromkeys(keys.values()))
    runs: dict[str, RowRun] = {}
    for i, ((row, seed), rc) in enumerate(cfgs.items()):
        k = keys[(row, seed)]
        if k in runs:
            continue
        runtime.log(f"[ablations] run {len(runs) + 1}/{len(todo)}: {row}, seed {seed} ({rc.data.dataset}, "
                    f"K = {rc.codes.K}, codes {rc.codes.method}, Stage I {rc.stage1.variant}, IKD {rc.stage2.ikd})")
        runs[k] = evaluate_row(rc, progress)

    def of(row: str) -> list[RowRun]:
        return [runs[keys[(row, s)]] for s in seeds]

    def same(row: str) -> str:
        for other in [reference, *rows]:
            if other == row:
                return ""
            if all(keys[(other, s)] == keys[(row, s)] for s in seeds):
                return other
        return ""

    ref_users = {r: _seed_mean_users(of(reference), r) for r in RANKINGS}
    out = []
    for row in rows:
        rr = of(row)
        line: dict[tuple[str, str], Any] = {}
        for r in RANKINGS:
            vals = pd.DataFrame([x.metrics[r] for x in rr])[list(METRICS)]
            line.update({(r, m): vals[m].mean() for m in METRICS})
            if r == "test_all":  # standard error over users of the (seed-averaged) per-user values
                users = _seed_mean_users(rr, r)
                line.update({("test_all_se", m): float(users[m].std(ddof=1) / np.sqrt(len(users))) for m in METRICS})
            if len(seeds) > 1:
                line.update({(f"{r}_std", m): vals[m].std(ddof=1) for m in METRICS})
        line[("valid_all", "ndcg@20")] = float(np.mean([x.metrics["valid_all"]["ndcg@20"] for x in rr]))
        is_ref = all(keys[(row, s)] == keys[(reference, s)] for s in seeds)
        for r in RANKINGS:
            users = _seed_mean_users(rr, r)
            line.update({(f"p_{r}", m): np.nan if is_ref else _pvalue(users[m], ref_users[r][m]) for m in METRICS})
        line.update({("run", "K"): cfgs[(row, seeds[0])].codes.K,
                     ("run", "best_epoch"): float(np.mean([x.best_epoch for x in rr])) if len(rr) > 1 else rr[0].best_epoch,
                     ("run", "epochs"): max(x.epochs for x in rr),
                     ("run", "train_s"): round(sum(x.train_s for x in rr), 1),
                     ("run", "same_run_as"): same(row),
                     ("run", "seeds"): ",".join(map(str, seeds))})
        out.append(pd.Series(line, name=row))
    df = pd.DataFrame(out)
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index.name = "row"
    return df


def paper_table(results: pd.DataFrame, rows: Sequence[str], paper: pd.DataFrame | None,
                ranking: str = "test_all") -> pd.DataFrame:
    """``rows`` of :func:`run_results` next to the paper's numbers: ``ours``, ``paper`` and
    ``rel_diff`` = (ours - paper) / paper per metric (:func:`ungerlib.infra.report.compare`; no paper
    columns when ``paper`` is None), the standard deviation over seeds when there are several, and
    ``p_<ranking>``. Index: (row, approach in words)."""
    from ungerlib.infra.report import compare

    missing = [r for r in rows if r not in results.index]
    if missing:
        raise KeyError(f"rows {missing} are not in the results; run them first (run_rows)")
    rows = list(rows)
    ours = results.loc[rows, ranking][list(METRICS)]
    table = compare(ours, paper.reindex(columns=list(METRICS))) if paper is not None else pd.concat({"ours": ours}, axis=1)
    extra = {}
    if f"{ranking}_std" in results:
        extra["ours_std"] = results.loc[rows, f"{ranking}_std"][list(METRICS)]
    extra[f"p_{ranking}"] = results.loc[rows, f"p_{ranking}"][list(METRICS)]
    out = pd.concat([table, pd.concat(extra, axis=1)], axis=1)
    out.index = pd.MultiIndex.from_arrays([out.index, [row_label(r) for r in out.index]], names=["row", "approach"])
    return out


# ----------------------------------------------------------------------------- the paper's claims

@dataclass(frozen=True)
class Claim:
    """An ordering the paper reports: ``better`` beats ``worse`` on every metric in ``metrics``."""

    where: str  # "Table 5", "Figure 9", ...
    text: str
    better: str
    worse: str
    metrics: tuple[str, ...] = tuple(METRICS)


def claims(cfg: C.RunConfig) -> list[Claim]:
    """The orderings of paper 4.3, 4.4 and 4.6 (Figure 9's relative to ``cfg``'s K)."""
    lo, mid, hi = k_rows(cfg)
    R20, N20 = ("recall@20",), ("ndcg@20",)
    return [
        Claim("Table 5", "ours beats semantic only on every metric", "ours", "semantic_only"),
        Claim("Table 5", "ours beats collaborative only on every metric", "ours", "collaborative_only"),
        Claim("Table 5", "ours beats concat on every metric", "ours", "concat"),
        Claim("Table 5", "concat is below semantic only in Recall@10 and Recall@20", "semantic_only", "concat",
              ("recall@10", "recall@20")),
        Claim("Table 6", "CKA + IKD beats CKA alone on every metric", "cka_ikd", "cka"),
        Claim("Table 6", "CKA alone beats the concatenation without CKA or IKD on every metric", "cka", "none"),
        Claim("Figure 8", "hierarchical k-means beats RQ-VAE in Recall@20 and NDCG@20", "hkmeans_codes", "rqvae_codes",
              R20 + N20),
        Claim("Figure 8", "hierarchical k-means beats random codes in Recall@20 and NDCG@20", "hkmeans_codes",
              "random_codes", R20 + N20),
        Claim("Figure 9", f"K = {mid[1:]} beats K = {lo[1:]} in Recall@20 and NDCG@20", mid, lo, R20 + N20),
        Claim("Figure 9", f"K = {hi[1:]} beats K = {mid[1:]} in NDCG@20", hi, mid, N20),
        Claim("Figure 9", f"K = {mid[1:]} beats K = {hi[1:]} in Recall@20 (so K = {mid[1:]} has the best Recall@20)",
              mid, hi, R20),
    ]


def check_claims(cfg: C.RunConfig, results: pd.DataFrame, claim_list: Sequence[Claim] | None = None,
                 seeds: Iterable[int] | None = None, ranking: str = "test_all", alpha: float = 0.05) -> pd.DataFrame:
    """Each claim whose two rows are in ``results``: ``holds`` (the better row is above the worse on
    every listed metric), ``significant`` (and every such p < ``alpha``, paired t-test between the two
    rows over the test users), the margins ``better - worse`` and p-values per metric, and a sentence
    saying so. Reads the runs :func:`run_rows` made (from its memo or the artefact store; never trains
    a run that is missing: such a claim is left out)."""
    seeds = seeds_of(cfg, seeds)
    out = []
    for c in claim_list if claim_list is not None else claims(cfg):
        if c.better not in results.index or c.worse not in results.index:
            continue
        a, b = (_users(cfg, row, seeds, ranking) for row in (c.better, c.worse))
        margin = {m: float(results.loc[c.better, (ranking, m)] - results.loc[c.worse, (ranking, m)]) for m in c.metrics}
        p = {m: _pvalue(a[m], b[m]) for m in c.metrics}
        holds = all(v > 0 for v in margin.values())
        sig = holds and all(p[m] < alpha for m in c.metrics)
        detail = ", ".join(f"{m.replace('recall', 'Recall').replace('ndcg', 'NDCG')} {results.loc[c.better, (ranking, m)]:.4f}"
                           f" vs {results.loc[c.worse, (ranking, m)]:.4f} (p = {p[m]:.2g})" for m in c.metrics)
        verdict = ("holds, significant" if sig else "holds in direction, not significant at p < %g" % alpha if holds
                   else "does not hold")
        out.append({"where": c.where, "claim": c.text, "holds": holds, "significant": sig,
                    **{f"margin {m}": margin.get(m, np.nan) for m in METRICS},
                    **{f"p {m}": p.get(m, np.nan) for m in METRICS},
                    "sentence": f"{c.where}: '{c.text}' {verdict} here ({detail}; {row_label(c.better)} vs "
                                f"{row_label(c.worse)}, {ranking.replace('_', ', ')})."})
    cols = ["where", "claim", "holds", "significant", *(f"margin {m}" for m in METRICS), *(f"p {m}" for m in METRICS),
            "sentence"]
    return pd.DataFrame(out, columns=cols).set_index(["where", "claim"])


def _users(cfg: C.RunConfig, row: str, seeds: list[int], ranking: str) -> pd.DataFrame:
    """``row``'s per-user values averaged over ``seeds``, from runs already made (never trains)."""
    runs = []
    for s in seeds:
        rc = row_config(cfg, row, s)
        key = run_key(rc)
        if key not in _RUNS and _status(rc) != "evaluated":
            raise KeyError(f"no evaluated run of row {row!r}, seed {s} ({cfg.data.dataset}); run_rows first")
        runs.append(_RUNS.get(key) or evaluate_row(rc, progress=False))
    return _seed_mean_users(runs, ranking)


# ----------------------------------------------------------------------------- seed-to-seed noise

def seed_spread(cfg: C.RunConfig, seeds: Iterable[int] | None = None, row: str = REFERENCE,
                progress: bool = True) -> pd.DataFrame:
    """``row`` trained with each seed (each its own cached run: Stage I, codes and Stage II all take
    the seed): one line per seed with the test metrics (every item ranked), validation NDCG@20, the
    selected epoch, and the standard error of each test metric over users within that run."""
    out = []
    for s in seeds_of(cfg, seeds):
        rc = row_config(cfg, row, s)
        runtime.log(f"[ablations] {row}, seed {s}")
        run = evaluate_row(rc, progress)
        users = run.per_user["test_all"]
        out.append({"seed": s, **{m: run.metrics["test_all"][m] for m in METRICS},
                    "valid ndcg@20": run.metrics["valid_all"]["ndcg@20"], "best_epoch": run.best_epoch,
                    **{f"se {m}": float(users[m].std(ddof=1) / np.sqrt(len(users))) for m in METRICS}})
    return pd.DataFrame(out).set_index("seed")


def noise_summary(spread: pd.DataFrame) -> pd.DataFrame:
    """Per metric: mean and standard deviation over seeds (NaN with one seed), the mean within-run
    standard error over users, and ``noise`` = the larger of the two: a difference between two single
    runs smaller than about twice it is not distinguishable from noise."""
    rows = []
    for m in METRICS:
        std = spread[m].std(ddof=1) if len(spread) > 1 else np.nan
        se = spread[f"se {m}"].mean()
        rows.append({"metric": m, "mean": spread[m].mean(), "std over seeds": std, "seeds": len(spread),
                     "se over users": se, "noise": np.nanmax([std, se])})
    return pd.DataFrame(rows).set_index("metric")


def noise_sentence(summary: pd.DataFrame, results: pd.DataFrame | None = None, metric: str = "ndcg@20") -> str:
    """What :func:`noise_summary` says about ``metric`` in words, and, given :func:`run_rows`'s
    ``results``, how many rows differ from ``ours`` by more than twice the noise."""
    s = summary.loc[metric]
    name = metric.replace("recall", "Recall").replace("ndcg", "NDCG")
    if s["seeds"] > 1:
        text = (f"Over {int(s['seeds'])} seeds, test {name} of ours is {s['mean']:.4f} with a standard deviation of "
                f"{s['std over seeds']:.4f} ({100 * s['std over seeds'] / s['mean']:.1f} % of the mean); within one run "
                f"its standard error over test users is {s['se over users']:.4f}.")
    else:
        text = (f"One seed only, so the seed-to-seed spread is not measured here (set noise_seeds to several seeds "
                f"to measure it); within the run, the standard error of test {name} over users is "
                f"{s['se over users']:.4f} (mean {s['mean']:.4f}).")
    text += f" A difference between two single runs below about {2 * s['noise']:.4f} (twice the larger of the two) is noise."
    if results is not None:
        other = results[results[("run", "same_run_as")] == ""].drop(index=REFERENCE, errors="ignore")  # distinct runs
        diff = (other[("test_all", metric)] - results.loc[REFERENCE, ("test_all", metric)]).abs()
        text += (f" {int((diff > 2 * s['noise']).sum())} of the {len(diff)} other distinct runs are farther from ours "
                 f"than that in test {name}.")
    return text


def say(verdicts: pd.DataFrame, where: str) -> str:
    """The sentences of :func:`check_claims` for one table or figure (``"Table 5"``), one per line."""
    part = verdicts[verdicts.index.get_level_values("where") == where]
    return "\n".join(part["sentence"]) if len(part) else f"{where}: none of its claims could be checked (rows missing)."


def rows_figure(results: dict[str, pd.DataFrame], rows: Sequence[str] | None = None,
                metrics: Sequence[str] = ("recall@20", "ndcg@20"), by_k: bool = False) -> tuple[Any, pd.DataFrame]:
    """Test metrics (every item ranked) of ``rows`` per data set, with 95 % intervals (1.96 standard
    errors over users): bars per row, or lines over K (``by_k``, ``rows`` None: every row). One panel
    per (data set, metric). Returns the figure and the long frame it plots."""
    import matplotlib.pyplot as plt

    long = []
    for ds, res in results.items():
        for row in (rows if rows is not None else list(res.index)):
            for m in metrics:
                long.append({"dataset": ds, "row": row, "approach": row_label(row), "K": int(res.loc[row, ("run", "K")]),
                             "metric": m, "value": float(res.loc[row, ("test_all", m)]),
                             "se": float(res.loc[row, ("test_all_se", m)])})
    long = pd.DataFrame(long)
    names = list(results)
    fig, axes = plt.subplots(len(names), len(metrics), figsize=(3.8 * len(metrics), 3.0 * len(names)),
                             squeeze=False, constrained_layout=True)
    for i, ds in enumerate(names):
        for j, m in enumerate(metrics):
            ax, d = axes[i, j], long[(long.dataset == ds) & (long.metric == m)]
            title = f"{ds}: test {m.replace('recall', 'Recall').replace('ndcg', 'NDCG')}"
            if by_k:
                d = d.sort_values("K")
                ax.errorbar(d["K"], d["value"], yerr=1.96 * d["se"], marker="o", capsize=4)
                ax.set_xscale("log", base=2)
                ours = {r for r in d["row"] if r == REFERENCE or results[ds].loc[r, ("run", "same_run_as")] == REFERENCE}
                ax.set_xticks(d["K"], [f"{k}\n(ours)" if r in ours else str(k) for k, r in zip(d["K"], d["row"])])
                ax.minorticks_off()
                ax.set_xlabel("K (branching factor of hierarchical k-means)", fontsize=8)
            else:
                ax.bar(range(len(d)), d["value"], yerr=1.96 * d["se"], capsize=4,
                       color=["tab:blue" if "ours" in a else "tab:gray" for a in d["approach"]])
                ax.set_xticks(range(len(d)), [a.replace(" (ours)", "\n(ours)") for a in d["approach"]], fontsize=8)
            ax.set_title(title, fontsize=9)
            ax.set_ylabel(m.replace("recall", "Recall").replace("ndcg", "NDCG"), fontsize=8)
            ax.tick_params(labelsize=8)
    return fig, long
