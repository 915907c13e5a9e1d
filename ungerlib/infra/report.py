"""Tables and figures with provenance, and the numbers the paper reports.

Every table or figure goes to :func:`figures_dir` as ``<name>.csv`` (+ ``.md`` for tables,
``.png`` for figures) next to ``<name>.provenance.json``: the config(s), seeds, data hashes and
git commit of the run that made it. ``cpu`` and ``paper`` runs write to ``figures/<profile>/``;
``smoke`` runs (CI) write to ``build/smoke/figures/`` so they never overwrite real results. Both are
under the source checkout, or under the current folder when the package is installed;
``$UNGER_FIGURES`` puts them anywhere.

A Markdown table (:func:`save_table`) is written for a reader: index levels as plain columns
(``Beauty | hkmeans``, not a tuple), metrics to 4 decimals, relative differences as percentages,
and a legend line for the terms it uses (:data:`TERMS`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ungerlib.infra.config import RunConfig
from ungerlib.infra.store import atomic_write_bytes, atomic_write_json, atomic_write_text, checkout_root, provenance

# ----------------------------------------------------------------------------- where things go


def profile_datasets(profile: str, datasets: Iterable[str] | None = None) -> list[str]:
    """The data sets a notebook runs on: ``datasets`` if given, else synthetic (smoke) or all three."""
    if datasets is not None:
        return list(datasets)
    return ["synthetic"] if profile == "smoke" else ["Beauty", "Sports", "Toys"]


def count_sentence(flags: "pd.Series", claim: str, cells: str, exceptions: str = "not in") -> str:
    """``"<claim> in k of n <cells>; <exceptions>: a, b."`` from a boolean Series indexed by the cells
    (a tuple index is written with spaces), naming every cell where the claim does not hold."""
    bad = [" ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in flags.index[~flags.astype(bool)]]
    return (f"{claim} in {int(flags.astype(bool).sum())} of {len(flags)} {cells}"
            + (f"; {exceptions}: {', '.join(bad)}" if bad else "") + ".")


def figures_dir(profile: str) -> Path:
    """``$UNGER_FIGURES``, else ``figures/<profile>`` (smoke: ``build/smoke/figures``) under the source
    checkout, or under the current folder when the package is installed (created if missing)."""
    env = os.environ.get("UNGER_FIGURES")
    base = checkout_root() or Path.cwd()
    if env:
        d = Path(env).expanduser()
    elif profile == "smoke":
        d = base / "build" / "smoke" / "figures"
    else:
        d = base / "figures" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def _configs(cfg: RunConfig | Iterable[RunConfig] | None) -> list[dict[str, Any]]:
    if cfg is None:
        return []
    cfgs = [cfg] if isinstance(cfg, RunConfig) else list(cfg)
    return [c.to_dict() for c in cfgs]


def _write_provenance(path: Path, name: str, cfg: Any, profile: str, extra: dict[str, Any]) -> None:
    """``<name>.provenance.json``: the configs, data hashes, seeds and commit, plus what
    ``python -m ungerlib reproduce --check`` needs to tell a stale output: ``artefacts``, every
    artefact this process read through :func:`ungerlib.infra.store.cached` (kind, key hash, key) and the
    data of each config (kind ``data``), sorted and de-duplicated; ``code``, the hash of each
    ``ungerlib`` module loaded when it was written (docstrings and comments ignored);
    ``profile_config``, the profile's settings then."""
    from ungerlib.infra import artefacts, config
    from ungerlib.model.data import content_hash
    from ungerlib.infra.store import artefacts_read, config_hash

    cfgs = [cfg] if isinstance(cfg, RunConfig) else list(cfg or [])
    configs = _configs(cfgs)
    data_keys = [artefacts.key("data", c) for c in cfgs]
    read = {(a["kind"], a["key_hash"]): a for a in artefacts_read()}
    read.update({("data", config_hash(k)): {"kind": "data", "key_hash": config_hash(k), "key": k} for k in data_keys})
    rec = provenance({"configs": configs}, name=name, profile=profile,
                     data_hashes={c.data.dataset: content_hash(c.data) for c in cfgs},
                     seeds=sorted({c["seed"] for c in configs}),
                     datasets=sorted({c["data"]["dataset"] for c in configs}),
                     artefacts=[read[k] for k in sorted(read)], code=source_hashes(),
                     profile_config=config.profile(profile).to_dict() if profile in config.PROFILES else None,
                     notebook=os.environ.get("UNGER_NOTEBOOK") or None, **extra)
    rec.pop("key_hash", None)
    atomic_write_json(path, rec)


def source_hashes(modules: Iterable[str] | None = None) -> dict[str, str]:
    """Hash of the normalised source (docstrings, comments and layout ignored) of each ``ungerlib``
    module in ``modules`` (dotted names below the package; default: every one this process has
    imported) except :data:`ungerlib.artefacts.NEUTRAL`: the code that may have shaped an output beyond
    the artefacts it read (analysis, formatting). ``reproduce --check`` reports a change of one as
    information, not as a stale output. A module without a source file is left out."""
    import sys

    from ungerlib.infra import artefacts

    if modules is None:
        modules = {m.split(".", 1)[1] for m in list(sys.modules) if m.startswith("ungerlib.")}
    return {m: artefacts.source_hash(m) for m in sorted(set(modules) - artefacts.NEUTRAL)
            if artefacts._module_path(m).is_file()}


def _profile_of(cfg: Any, profile: str | None) -> str:
    if profile:
        return profile
    cfgs = [cfg] if isinstance(cfg, RunConfig) else list(cfg or [])
    return cfgs[0].profile if cfgs else "cpu"


# ----------------------------------------------------------------------------- tables for a reader

# Column and row names as a reader of a .md table sees them (the CSV keeps the names the code uses).
LABELS = {
    "crossmodal_top1": "cross-modal top-1", "cos_random": "cosine, random pairs",
    "cos_same_category": "cosine, same leaf category", "encode_s": "encoding time (s)", "dim": "dimensions",
    "n_items": "items", "best_epoch": "selected epoch", "n_collisions": "collisions",
    "length_hist": "code lengths (length: items)", "mean_length": "mean code length",
    "first_level_used": "first-level codes used", "mean_items_per_first_code": "items per first-level code (mean)",
    "max_items_per_first_code": "items per first-level code (max)",
    "same_category_shared_prefix": "same category, shared first code",
    "same_category_random_pair": "same category, random pair",
    "rel_diff": "ours vs paper",
    "valid_all": "validation, all items", "valid_excl": "validation, history excluded",
    "test_all": "test, all items", "test_excl": "test, history excluded",
    "p_test_all": "p, test, all items", "p_test_excl": "p, test, history excluded",
    "test_all_se": "standard error, test, all items", "ours_std": "ours, std over seeds",
    "test_all_std": "std over seeds, test, all items", "test_excl_std": "std over seeds, test, history excluded",
    "same_run_as": "same run as", "train_s": "training time (s)",
}
# Terms a table may use, explained in a legend line under it: (pattern in the rendered table, meaning).
TERMS: list[tuple[str, str]] = [
    (r"Recall@\d+", "Recall@k = share of users whose held-out item is among the top k"),
    (r"NDCG@\d+", "NDCG@k = the same, weighted by 1 / log2(1 + rank)"),
    (r"\bvalidation\b|\bvalid\b|\btest\b", "validation / test = each user's second-to-last / last item "
                                           "(leave-one-out)"),
    (r"\ball items\b", "all items = every item ranked, the user's history included"),
    (r"\bexcl\b|history excluded", "excl / history excluded = the user's history items removed from the ranking"),
    (r"ours vs paper", "ours vs paper = (ours - paper) / paper"),
    (r"cross-modal top-1", "cross-modal top-1 = share of items whose nearest adapted semantic vector MAL(E_S) "
                           "is their own"),
    (r"\bcollisions\b", "collisions = items whose code was shared before the disambiguation token"),
    (r"same category, shared first code", "same category, shared first code = chance that two items under one "
                                           "first-level code share a leaf category (random pair: any two items)"),
    (r"\bpopularity\b", "popularity = items ranked by how often they are a training target"),
    (r"\bp, test\b", "p = two-sided paired t-test over the test users against the row ours (each user's values "
                     "averaged over the seeds when there are several; empty for ours and rows that are the same run)"),
    (r"std over seeds", "std over seeds = standard deviation of the metric over the seeds' runs"),
    (r"standard error, test", "standard error = standard deviation of the per-user values / sqrt(users)"),
    (r"same run as", "same run as = the row whose config is identical, so its run is read, not trained again"),
]
_METRIC = re.compile(r"^(?:(valid|test)_)?(recall|ndcg|hit|mrr)@(\d+)$")
_FOUR_DECIMALS = re.compile(r"(recall|ndcg|hit|mrr)@\d+|crossmodal|top1|cos_|same_category|share|rate", re.I)


def label(name: Any) -> str:
    """A column, index or row name as a reader sees it: ``recall@10`` -> ``Recall@10``,
    ``valid_excl`` -> ``validation, history excluded``, ``loss_seq`` -> ``loss seq``, wall-clock seconds
    ``grid_s`` -> ``grid (s)`` (every ``*_s`` name ends in ``(s)``, which the determinism check skips)."""
    if not isinstance(name, str):
        return str(name)
    if name in LABELS:
        return LABELS[name]
    m = _METRIC.match(name)
    if m:
        split, metric, k = m.groups()
        metric = {"recall": "Recall", "ndcg": "NDCG", "hit": "HR", "mrr": "MRR"}[metric]
        return f"{'validation ' if split == 'valid' else split + ' ' if split else ''}{metric}@{k}"
    if re.fullmatch(r"[a-z0-9_]+_s", name):  # wall-clock seconds: ``grid_s`` -> ``grid (s)``
        return name[:-2].replace("_", " ") + " (s)"
    return name.replace("_", " ") if re.fullmatch(r"[a-z0-9_]+", name) else name


def _format_column(values: pd.Series, key: tuple[str, ...]) -> list[str]:
    """Cells of one column: relative differences as signed percentages, metrics to 4 decimals, other
    numbers to 4 significant digits (counts whole, with thousands separators), NaN empty."""
    raw = " ".join(str(k) for k in key)
    percent = "rel_diff" in raw
    four = bool(_FOUR_DECIMALS.search(raw))

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v)).lower()
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}" if abs(int(v)) >= 10000 else str(int(v))
        if isinstance(v, (float, np.floating)):
            if percent:
                return f"{100 * v:+.1f} %"
            if four:
                return f"{v:.4f}"
            if float(v).is_integer() and abs(v) < 1e15:
                return f"{int(v):,}" if abs(v) >= 10000 else str(int(v))
            return f"{v:.4g}"
        return str(v)

    return [cell(v) for v in values]


def markdown(df: pd.DataFrame, legend: str | None = None) -> str:
    """``df`` as a Markdown table for a reader: index levels as leading columns, names through
    :func:`label`, numbers formatted per column (:func:`_format_column`), then a legend line for the
    :data:`TERMS` it uses (and ``legend``, if given)."""
    flat = df.copy()
    keys = [tuple(map(str, c)) if isinstance(c, tuple) else (str(c),) for c in flat.columns]
    cols, align = {}, []
    for key, col in zip(keys, flat.columns):
        name = " ".join(label(k) for k in key if k)
        cols[name] = _format_column(flat[col], key)
        align.append("right" if pd.api.types.is_numeric_dtype(flat[col]) else "left")
    out = pd.DataFrame(cols)
    named = [n for n in flat.index.names if n is not None]
    if named or not isinstance(flat.index, pd.RangeIndex):
        levels = flat.index.to_frame(index=False)
        for i in reversed(range(levels.shape[1])):
            name = flat.index.names[i]
            out.insert(0, label(name) if name is not None else " " * i, [label(v) for v in levels.iloc[:, i]])
            align.insert(0, "left")
    text = out.to_markdown(index=False, disable_numparse=True, colalign=align)
    terms = [meaning for pattern, meaning in TERMS if re.search(pattern, text)]
    lines = ["; ".join(terms) + "." if terms else "", _sentence(legend) if legend else ""]
    lines = " ".join(line for line in lines if line)
    return text + ("\n\n" + lines if lines else "") + "\n"


def _sentence(text: str) -> str:
    """``text`` ending in a full stop, unless it already ends in ``.?!`` (a legend may start with a term
    such as ``excl = ...``, so its case is kept)."""
    text = text.strip()
    return text + ("" if text.endswith((".", "?", "!")) else ".")


def save_table(df: pd.DataFrame, name: str, cfg: RunConfig | Iterable[RunConfig] | None,
               profile: str | None = None, legend: str | None = None, **extra: Any) -> Path:
    """Write ``df`` as ``<name>.csv`` (as is) and ``<name>.md`` (for a reader, :func:`markdown`, with
    ``legend`` added to its terms line) with provenance; returns the CSV path."""
    profile = _profile_of(cfg, profile)
    d = figures_dir(profile)
    atomic_write_text(d / f"{name}.csv", df.to_csv())
    atomic_write_text(d / f"{name}.md", markdown(df, legend))
    _write_provenance(d / f"{name}.provenance.json", name, cfg, profile, extra)
    return d / f"{name}.csv"


def save_text(text: str, name: str, cfg: RunConfig | Iterable[RunConfig] | None, profile: str | None = None,
              **extra: Any) -> Path:
    """Write ``text`` (Markdown: sentences that state what tables show, with their numbers) as
    ``<name>.md`` with provenance; returns its path."""
    profile = _profile_of(cfg, profile)
    d = figures_dir(profile)
    atomic_write_text(d / f"{name}.md", text.rstrip("\n") + "\n")
    _write_provenance(d / f"{name}.provenance.json", name, cfg, profile, extra)
    return d / f"{name}.md"


def curves_figure(curves: pd.DataFrame, panels: Mapping[str, str], row: str = "dataset", hue: str | None = None,
                  selected: Mapping[Any, int] | None = None, x: str = "epoch",
                  selected_label: str = "selected epoch (best validation)") -> Any:
    """Training curves for a reader: one row of panels per value of ``row``, one panel per entry of
    ``panels`` (column -> what it is, in words: the panel's title and y-axis), one line per value of
    ``hue``. ``selected`` marks the selected epoch: ``{row value: epoch}`` draws a dashed line,
    ``{(row value, hue value): epoch}`` a star on that line. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    rows = list(dict.fromkeys(curves[row])) if row in curves else [None]
    hues = list(dict.fromkeys(curves[hue])) if hue else [None]
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(3.7 * len(panels), 2.7 * len(rows)),
                             squeeze=False, constrained_layout=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    selected = dict(selected or {})
    for i, r in enumerate(rows):
        part = curves[curves[row] == r] if r is not None else curves
        for j, (col, text) in enumerate(panels.items()):
            ax = axes[i, j]
            for h_i, h in enumerate(hues):
                c = colours[h_i % len(colours)]
                d = (part[part[hue] == h] if hue else part).sort_values(x)
                if col not in d or d[col].isna().all():
                    continue
                ax.plot(d[x], d[col], marker="o", ms=3, color=c, label=str(h) if hue else None)
                ep = selected.get((r, h))
                if ep is not None and (d[x] == ep).any():
                    ax.plot([ep], d.loc[d[x] == ep, col].iloc[:1], marker="*", ms=13, color=c, mec="black",
                            ls="none", label=selected_label if h_i == 0 else None)
            if r in selected:
                ax.axvline(selected[r], color="grey", ls="--", lw=1, label=selected_label)
            ax.set_title(f"{r}: {text}" if r is not None else text, fontsize=9)
            ax.set_ylabel(text, fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel(x)
            ax.tick_params(labelsize=8)
    from matplotlib.lines import Line2D

    handles = {}
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    if selected_label in handles and isinstance(handles[selected_label], Line2D) and handles[selected_label].get_marker() == "*":
        handles[selected_label] = Line2D([], [], marker="*", ms=13, color="white", mec="black", ls="none")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(4, len(handles)),
                   fontsize=8, frameon=False)
    return fig


def save_figure(fig: Any, name: str, data: pd.DataFrame, cfg: RunConfig | Iterable[RunConfig] | None,
                profile: str | None = None, **extra: Any) -> Path:
    """Write a matplotlib figure as ``<name>.png`` with the CSV behind it and provenance."""
    import io

    profile = _profile_of(cfg, profile)
    d = figures_dir(profile)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    atomic_write_bytes(d / f"{name}.png", buf.getvalue())
    atomic_write_text(d / f"{name}.csv", data.to_csv())
    _write_provenance(d / f"{name}.provenance.json", name, cfg, profile, extra)
    return d / f"{name}.png"


def compare(ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Side by side: ours, paper and the relative difference ``(ours - paper) / paper`` for every
    shared cell (a fraction in the CSV; :func:`save_table` shows it in per cent)."""
    ours, paper = ours.align(paper, join="left")
    diff = (ours - paper) / paper
    return pd.concat({"ours": ours, "paper": paper, "rel_diff": diff}, axis=1)
