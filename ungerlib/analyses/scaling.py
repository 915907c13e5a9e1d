"""Figure 6: does UNGER keep improving with depth, and does it beat HSTU at every depth (Beauty)?

The paper varies "the number of model layers" from 1 to 32 on Beauty and reports that UNGER keeps
improving while HSTU stagnates after 8 layers and then declines, UNGER above HSTU at every depth (up to
+21.42 % NDCG@20). It does not say which layers it scales. We scale **the decoder** and keep the
encoder at 1 (the paper's 1 + 4 is mostly decoder); :data:`ENCODER_POINT` adds one point with a deeper
encoder. HSTU scales its layers (``blocks``) at the setting ``make tune`` selected for it on the data set
(:mod:`ungerlib.baselines.sequential`).

Rows (:data:`ROWS`): UNGER (paper's model), codes only; UNGER + item tables (row J); HSTU. Every point
is one cached run (Stage II artefacts ``stage2``/``eval``, or ``baseline.HSTU``) at the profile's
budget with early stopping on validation, so the depth is the only difference within a row.

* :func:`runs` - what ``prefill --only 08`` builds;
* :func:`points` - one line per (row, depth): test Recall/NDCG@20 in both rankings, validation NDCG@20,
  parameters, training seconds per epoch, epochs run and the best epoch;
* :func:`verdicts` - the paper's two sentences tested on the table: "keeps improving" (each deeper point
  at least the previous one, test NDCG@20) and "beats HSTU at every depth".
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from ungerlib.infra import config as C

DEPTHS = {"smoke": (1, 2), "cpu": (1, 2, 4, 8), "paper": (1, 2, 4, 8, 16, 32)}
ENCODER_POINT = (2, 4)  # (encoder layers, decoder layers) of the one encoder-scaled point
HSTU = "HSTU"
FORMS = {"UNGER (paper's model)": "codes only", "UNGER + item tables": "item tables"}
ROWS = (*FORMS, HSTU)
METRIC_COLUMNS = ("test recall@20", "test ndcg@20", "test excl recall@20", "test excl ndcg@20", "valid ndcg@20")


def depths(profile: str, extra: tuple[int, ...] = ()) -> list[int]:
    """The profile's depths plus ``extra`` (e.g. 16 on ``cpu`` when it fits), sorted; a depth below 1
    is an error."""
    if profile not in DEPTHS:
        raise C.ConfigError(f"unknown profile {profile!r} for the scaling study; known: {sorted(DEPTHS)}")
    out = sorted({*DEPTHS[profile], *map(int, extra)})
    if out[0] < 1:
        raise C.ConfigError(f"depths must be at least 1, got {out}")
    return out


def unger_config(cfg: C.RunConfig, row: str, dec_layers: int, enc_layers: int = 1) -> C.RunConfig:
    """``row``'s Stage II (:data:`FORMS`, via :func:`ungerlib.analyses.code_kinds.config`) with
    ``dec_layers`` decoder and ``enc_layers`` encoder layers; everything else as the row's."""
    from ungerlib.analyses import code_kinds

    if row not in FORMS:
        raise C.ConfigError(f"unknown UNGER row {row!r}; known: {list(FORMS)}")
    return code_kinds.config(cfg, "unified", FORMS[row]).replace(
        stage2={"dec_layers": int(dec_layers), "enc_layers": int(enc_layers)})


def hstu_params(cfg: C.RunConfig, layers: int, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """HSTU's tuned setting on ``cfg``'s data set (or ``tuned``) with ``layers`` layers."""
    from ungerlib.analyses import tuning

    return {**(tuned or tuning.selected(cfg.profile, cfg.data.dataset, HSTU)), "blocks": int(layers)}


def runs(cfg: C.RunConfig, depth_list: list[int] | None = None, encoder_point: bool = False,
         selected: Callable[[str, str, str], dict[str, Any] | None] | None = None
         ) -> list[tuple[str, C.RunConfig, str, dict[str, Any]]]:
    """``(artefact kind, config, label, extra)`` of every point, for ``prefill``. ``selected`` gives HSTU's
    tuned setting (default :func:`ungerlib.analyses.tuning.selected`); where it gives None, HSTU's points
    are left out."""
    from ungerlib.analyses import tuning
    from ungerlib.infra import artefacts

    ds = cfg.data.dataset
    tuned = (selected or tuning.selected)(cfg.profile, ds, HSTU)
    out = []
    for d in depth_list or depths(cfg.profile):
        out += [("eval", unger_config(cfg, row, d), f"{ds} {row}, {d} decoder layers", {}) for row in FORMS]
        if tuned is not None:
            out.append((artefacts.baseline_kind(HSTU), cfg, f"{ds} HSTU, {d} layers", {"params": hstu_params(cfg, d, tuned)}))
    if encoder_point:
        e, d = ENCODER_POINT
        out.append(("eval", unger_config(cfg, next(iter(FORMS)), d, e), f"{ds} {next(iter(FORMS))}, {e} + {d} layers", {}))
    return out


def _unger_point(cfg: C.RunConfig) -> dict[str, Any]:
    from ungerlib.model.stage2 import evaluate_stage2, run_stage2

    model, hist = run_stage2(cfg, progress=False)
    m = evaluate_stage2(cfg)
    best = max(hist, key=lambda h: h["valid_ndcg@20"])
    return {"metrics": m, "parameters": sum(p.numel() for p in model.parameters()),
            "epoch time (s)": float(np.mean([h["train_s"] for h in hist])), "epochs run": len(hist),
            "best epoch": best["epoch"], "epoch cap": cfg.stage2.epochs}


def _hstu_point(cfg: C.RunConfig, layers: int) -> dict[str, Any]:
    from ungerlib.analyses import table3

    r = table3.run(cfg, HSTU, hstu_params(cfg, layers))
    hist = r.history()
    return {"metrics": r.metrics, "parameters": r.info.get("parameters"),
            "epoch time (s)": float(np.mean([h["train_s"] for h in hist])) if hist else np.nan,
            "epochs run": r.info.get("epochs_run"), "best epoch": r.info.get("best_epoch"),
            "epoch cap": r.info.get("settings", {}).get("epochs")}


def _line(row: str, enc: int, dec: int, p: dict[str, Any]) -> dict[str, Any]:
    m = p["metrics"]
    return {"row": row, "layers": dec, "encoder layers": enc,
            "test recall@20": m["test_all"]["recall@20"], "test ndcg@20": m["test_all"]["ndcg@20"],
            "test excl recall@20": m["test_excl"]["recall@20"], "test excl ndcg@20": m["test_excl"]["ndcg@20"],
            "valid ndcg@20": m["valid_all"]["ndcg@20"], "parameters": p["parameters"], "epoch time (s)": p["epoch time (s)"],
            "epochs run": p["epochs run"], "best epoch": p["best epoch"], "epoch cap": p["epoch cap"]}


def points(cfg: C.RunConfig, depth_list: list[int] | None = None, encoder_point: bool = False) -> pd.DataFrame:
    """Every point (cached runs; missing ones train): index (row, layers, encoder layers). ``layers`` is
    the decoder's for UNGER, the number of HSTU layers for HSTU (whose ``encoder layers`` is 0)."""
    out = []
    for d in depth_list or depths(cfg.profile):
        out += [_line(row, 1, d, _unger_point(unger_config(cfg, row, d))) for row in FORMS]
        out.append(_line(HSTU, 0, d, _hstu_point(cfg, d)))
    if encoder_point:
        e, d = ENCODER_POINT
        row = next(iter(FORMS))
        out.append(_line(row, e, d, _unger_point(unger_config(cfg, row, d, e))))
    return pd.DataFrame(out).set_index(["row", "layers", "encoder layers"]).sort_index(level=["row", "layers"], sort_remaining=False)


def verdicts(t: pd.DataFrame, metric: str = "test ndcg@20") -> pd.DataFrame:
    """The paper's two sentences on :func:`points` (decoder-scaled points only; encoder 1 for UNGER):
    per UNGER row, whether ``metric`` never falls as the depth grows ("keeps improving"), the best depth,
    the depths where it is above HSTU and the largest relative gain over HSTU."""
    hstu = t.xs(HSTU, level="row").droplevel("encoder layers")[metric]
    out = []
    for row in FORMS:
        if row not in t.index.get_level_values("row"):
            continue
        s = t.xs((row, 1), level=("row", "encoder layers"))[metric].sort_index()
        shared = s.index.intersection(hstu.index)
        gain = (s[shared] - hstu[shared]) / hstu[shared]
        out.append({"row": row, "depths": ", ".join(map(str, s.index)),
                    "keeps improving": "yes" if bool((s.diff().dropna() >= 0).all()) else "no",
                    "best depth": int(s.idxmax()),
                    "above HSTU at": f"{int((gain > 0).sum())} of {len(shared)} depths",
                    "beats HSTU at every depth": "yes" if bool((gain > 0).all()) and len(shared) else "no",
                    "largest gain over HSTU": float(gain.max()) if len(shared) else np.nan,
                    "HSTU best depth": int(hstu.idxmax())})
    return pd.DataFrame(out).set_index("row")


def verdicts_text(v: pd.DataFrame, metric: str = "test ndcg@20") -> str:
    """:func:`verdicts` in words, one line per UNGER row."""
    lines = []
    for row, r in v.iterrows():
        lines.append(f"- **{row}** ({metric}, depths {r['depths']}): keeps improving with depth: "
                     f"**{r['keeps improving']}** (best at {r['best depth']} layers); beats HSTU at every depth: "
                     f"**{r['beats HSTU at every depth']}** (above at {r['above HSTU at']}, largest gain "
                     f"{r['largest gain over HSTU']:+.1%}; the paper: up to +21.42 %). HSTU is best at {r['HSTU best depth']} layers.")
    return "\n".join(lines)


def figure(t: pd.DataFrame, ranking: str = "test excl") -> Any:
    """Recall@20 and NDCG@20 against the number of layers (log2 axis), one line per row
    (decoder-scaled points only)."""
    import matplotlib.pyplot as plt

    d = t.reset_index()
    d = d[(d["encoder layers"] <= 1)]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), constrained_layout=True)
    for ax, m in zip(axes, ("recall@20", "ndcg@20")):
        for row, g in d.groupby("row", sort=False):
            g = g.sort_values("layers")
            ax.plot(g["layers"], g[f"{ranking} {m}"], marker="o", label=row)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(d["layers"].unique()), [str(x) for x in sorted(d["layers"].unique())])
        ax.set_xlabel("layers (UNGER: decoder, encoder 1; HSTU: its layers)")
        ax.set_ylabel(f"{m} ({'history excluded' if 'excl' in ranking else 'every item'})")
    axes[0].legend(fontsize=8)
    return fig
