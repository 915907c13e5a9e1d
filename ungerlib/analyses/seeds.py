"""Claims that survive seeds: every row that enters a significance claim of Table 3, trained again at
other seeds on the profile's first data set (Beauty), with the claims tested seed by seed.

A seed here reseeds the **whole** chain of a row: Stage I, the k-means (or RQ-VAE) codes, Stage II and
the baselines' training (``RunConfig.seed``; the frozen text embeddings have no seed). Each baseline
keeps the setting ``make tune`` selected at the profile's seed; only its seed changes.

* :func:`rows` - the claim rows' per-user rankings at one seed (cached artefacts; missing ones train);
* :func:`table` - their test metrics, one line per (row, seed, ranking): the committed table with a
  ``seed`` column;
* :func:`summary` - mean and standard deviation over seeds;
* :func:`claims` - the paired tests over test users per seed: each UNGER row against SASRec and HSTU,
  and the thesis (unified > dual > semantic-only) per decoder form; :func:`survival` says whether each
  claim holds (difference > 0 and paired t-test p < 0.05) on every seed.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from ungerlib.infra import config as C

N_SEEDS = {"smoke": 2, "cpu": 3, "paper": 3}  # smoke: two, to keep CI short; the claim needs three
BASELINES = ("SASRec", "HSTU")  # the rerun baselines every UNGER row is tested against
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def seeds(cfg: C.RunConfig) -> list[int]:
    """The seeds of ``cfg``'s profile: its own seed first, then the next ones."""
    return [cfg.seed + i for i in range(N_SEEDS.get(cfg.profile, 3))]


def claim_rows() -> list[str]:
    """Every Table 3 row that enters a claim: the three UNGER rows, the semantic-only (TIGER-style) and
    dual (EAGER-style) codes on our engine in both decoder forms, and :data:`BASELINES`."""
    from ungerlib.analyses import code_kinds as ck
    from ungerlib.analyses import table3

    return [*table3.UNGER_ROWS, *(ck.row(k, f) for k in ("semantic", "dual") for f in ck.FORMS), *BASELINES]


def runs(cfg: C.RunConfig, selected: Callable[[str, str, str], dict[str, Any] | None] | None = None
         ) -> list[tuple[str, C.RunConfig, str, dict[str, Any]]]:
    """``(artefact kind, config, label, extra)`` of every run :func:`rows` reads at the seeds after the
    profile's own (those the profile's runs of notebook 11 already hold), for ``prefill``. ``selected``
    gives a baseline's tuned setting (default :func:`ungerlib.analyses.tuning.selected`); a baseline it
    gives None for is left out."""
    from ungerlib.analyses import code_kinds as ck
    from ungerlib.analyses import table3, tuning
    from ungerlib.infra import artefacts
    from ungerlib.model import neighbours

    out = []
    for s in seeds(cfg)[1:]:
        c = cfg.replace(seed=s)
        tag = f"{cfg.data.dataset} seed {s}"
        out.append(("eval", table3.paper_model_config(c), f"{tag} {table3.PAPER_MODEL}", {}))
        out.append(("eval", c, f"{tag} {table3.ITEM_TABLES}", {}))
        out += [("eval_neighbours", c, f"{tag} Stage I neighbours {lam}", {"neighbour_lambda": list(lam)})
                for lam in neighbours.GRID if any(lam)]
        out += [(kind, rc, f"{tag} {label.split(' ', 1)[1]}", {}) for kind, rc, label in ck.runs(c)
                if kind == "eval_dual" or rc.stage1.variant == "semantic"]
        out += [(artefacts.baseline_kind(m), c, f"{tag} {m} (tuned)", {"params": p}) for m in BASELINES
                if (p := (selected or tuning.selected)(cfg.profile, cfg.data.dataset, m)) is not None]
    return out


def rows(cfg: C.RunConfig) -> dict[str, dict[str, np.ndarray]]:
    """:func:`claim_rows`' per-user top-20 rankings ``{valid,test}_{all,excl}`` at ``cfg.seed``."""
    from ungerlib.analyses import code_kinds as ck
    from ungerlib.analyses import table3

    out = {table3.PAPER_MODEL: table3.unger_rankings(table3.paper_model_config(cfg)),
           table3.ITEM_TABLES: table3.unger_rankings(cfg),
           table3.OURS: table3.neighbour_rankings(cfg)}
    out.update({ck.row(k, f): ck.rankings(cfg, k, f) for k in ("semantic", "dual") for f in ck.FORMS})
    for m in BASELINES:
        t = table3.selected(cfg, m)
        out[m] = {tag: t.best.rankings(tag) for tag in ("valid_all", "valid_excl", "test_all", "test_excl")}
    return out


def collect(cfg: C.RunConfig, seed_list: list[int] | None = None) -> tuple[dict[int, dict[str, dict[str, np.ndarray]]], np.ndarray]:
    """Every seed's :func:`rows` (default :func:`seeds`) and the test targets they are scored against."""
    from ungerlib.model.data import get_splits

    seed_list = seeds(cfg) if seed_list is None else list(seed_list)
    if not seed_list:
        raise C.ConfigError("seeds must name at least one seed")
    _, splits = get_splits(cfg)
    return {s: rows(cfg.replace(seed=s)) for s in seed_list}, splits.test.target


def table(by_seed: dict[int, dict[str, dict[str, np.ndarray]]], target: np.ndarray, dataset: str) -> pd.DataFrame:
    """Test metrics of every row at every seed, both rankings: index (dataset, row, seed, ranking)."""
    from ungerlib.model.metrics import rank_metrics

    out = [{"dataset": dataset, "row": name, "seed": s, "ranking": r, **rank_metrics(ranks[f"test_{r}"], target)}
           for s, rs in by_seed.items() for name, ranks in rs.items() for r in ("all", "excl")]
    return pd.DataFrame(out).set_index(["dataset", "row", "seed", "ranking"])[list(METRICS)]


def summary(t: pd.DataFrame) -> pd.DataFrame:
    """:func:`table` as mean and standard deviation over seeds (sample std, ``ddof=1``), and ``"mean ± std"``
    text per metric: index (dataset, row, ranking)."""
    g = t.groupby(level=["dataset", "row", "ranking"], sort=False)
    mean, std, n = g.mean(), g.std(ddof=1), g.size()
    out = pd.concat({"mean": mean, "std": std}, axis=1)
    for m in METRICS:
        out[("mean ± std", m)] = [f"{a:.4f} ± {b:.4f}" for a, b in zip(mean[m], std[m].fillna(0.0))]
    out[("seeds", "n")] = n
    return out


def claims(by_seed: dict[int, dict[str, dict[str, np.ndarray]]], target: np.ndarray, dataset: str) -> pd.DataFrame:
    """Per seed, paired tests over test users (``paired_table``: t-test and Wilcoxon) of each claim, both
    rankings: each UNGER row > SASRec and > HSTU, and the thesis pairs per decoder form. Index (dataset,
    claim, seed, ranking, metric); ``holds``: difference > 0 and t-test p < 0.05."""
    from ungerlib.analyses import code_kinds as ck
    from ungerlib.analyses import table3
    from ungerlib.analyses.significance import paired_table

    pairs = []
    for s, rs in by_seed.items():
        named = [(u, b) for u in table3.UNGER_ROWS for b in BASELINES]
        named += [(ck.row(a, f), ck.row(b, f)) for f in ck.FORMS
                  for a, b in (("unified", "dual"), ("dual", "semantic"), ("unified", "semantic"))]
        for a, b in named:
            if a in rs and b in rs:
                for r in ("all", "excl"):
                    pairs.append(({"dataset": dataset, "claim": f"{a} > {b}", "seed": s, "ranking": r},
                                  rs[a][f"test_{r}"], rs[b][f"test_{r}"]))
    if not pairs:
        raise C.ConfigError("no claim can be tested: the rows of each claim are missing")
    t = paired_table(pairs, target, METRICS).rename(columns={"a better, p < 0.05": "holds"})
    return t.set_index(["dataset", "claim", "seed", "ranking", "metric"])


def survival(c: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """From :func:`claims`: per (dataset, claim, ranking) the seeds it holds on, the largest p-value and
    ``on every seed`` (yes / no) for ``metric``."""
    g = c.xs(metric, level="metric").groupby(level=["dataset", "claim", "ranking"], sort=False)
    out = pd.DataFrame({"seeds": g.size(), "holds on": g["holds"].sum().astype(int),
                        "largest t-test p": g["t-test p"].max(), "mean difference": g["difference"].mean()})
    out["on every seed"] = np.where(out["holds on"] == out["seeds"], "yes", "no")
    return out


def survival_text(s: pd.DataFrame, metric: str = "ndcg@10") -> str:
    """:func:`survival` in words, one line per claim and ranking."""
    lines = []
    for (ds, claim, ranking), r in s.iterrows():
        verdict = "holds on every seed" if r["on every seed"] == "yes" else f"holds on {r['holds on']} of {r['seeds']} seeds"
        lines.append(f"- {ds}, {ranking} ranking: **{claim}** {verdict} ({metric}, mean difference "
                     f"{r['mean difference']:+.4f}, largest p = {r['largest t-test p']:.2g})")
    return "\n".join(lines)
