"""Validation grids and the settings they select: ``make tune`` runs them, ``make figures`` reads them.

Two grids are tuned on validation only:

* the Stage II grid (:mod:`ungerlib.analyses.stage2_grid`): every row at the screening budget on the
  first data set (notebook 04's first table); the profiles' Stage II default follows the row the
  selection rule adopts (``stage2_grid.ADOPTED``);
* every rerun baseline's grid (:func:`ungerlib.analyses.table3.grid`), the best validation NDCG@20
  selected (Table 3, notebook 11; SASRec also in notebook 04): the whole grid on the first data set
  (Beauty), which is tuned first, and its :data:`ungerlib.analyses.table3.TRANSFER` (3) best points
  there on the other data sets (:func:`transferred`).

``python -m ungerlib tune --profile cpu`` (``make tune``) trains every grid point (cached), writes the
tables to ``figures/<profile>/tuning/`` with provenance and the selection to
``figures/<profile>/tuning/selected.json``, a committed file: per data set and model the selected
``params``, its validation NDCG@20 and ``ranked``, every point tried, best first. The notebooks then
train only the selected settings (:func:`selected`) and show the committed tuning tables, so
regenerating the figures does not retrain grids. A profile whose grid has one point (smoke) needs no
file. ``make figures`` starts with ``tune --if-needed``: where a baseline has no selection at its current
grid (one that changed since it was tuned), it trains the grids side by side and tunes, so that one command
regenerates everything; otherwise it does nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ungerlib.infra import cli
from ungerlib.infra import config as C

SELECTED = "selected.json"
COMMAND = "make tune PROFILE={}"


def folder(profile: str) -> Path:
    from ungerlib.infra.report import figures_dir

    return figures_dir(profile) / "tuning"


def load(profile: str) -> dict[str, Any]:
    """The selection of ``profile``: the one in the figures folder in use (``$UNGER_FIGURES``), else the
    one committed in the checkout; empty where there is none."""
    from ungerlib.infra.store import checkout_root

    paths = [folder(profile) / SELECTED]
    if checkout_root():
        paths.append(checkout_root() / "figures" / profile / "tuning" / SELECTED)
    path = next((p for p in paths if p.is_file()), None)
    return json.loads(path.read_text()) if path else {}


def transferred(profile: str, model: str, selection: dict[str, Any] | None = None) -> list[dict[str, Any]] | None:
    """The :data:`ungerlib.analyses.table3.TRANSFER` best points of ``model``'s grid on the profile's first
    data set (Beauty), best first, from ``selection`` (default: :func:`load`); None where that data set
    was not tuned over exactly the current grid (never, or before the grid or its fixed settings changed)."""
    from ungerlib.analyses import table3
    from ungerlib.infra.report import profile_datasets

    rec = (load(profile) if selection is None else selection).get("baselines", {}).get(
        profile_datasets(profile)[0], {}).get(model, {})
    ranked, points = rec.get("ranked"), table3.full_grid(profile, model)
    if not ranked or len(ranked) != len(points) or any(p not in ranked for p in points):
        return None
    return ranked[:table3.TRANSFER]


def selected(profile: str, dataset: str, model: str) -> dict[str, Any]:
    """The settings of ``model`` that ``make tune`` selected on ``dataset`` (its only grid point where the
    grid has one). A missing selection, or one that is no longer a point of the current grid (the grid
    or its fixed settings changed since), is a :class:`ungerlib.infra.cli.Failed` saying what to run."""
    from ungerlib.analyses import table3

    points = table3.full_grid(profile, model)
    if len(points) == 1:
        return points[0]
    rec = load(profile).get("baselines", {}).get(dataset, {}).get(model)
    if rec is None:
        raise cli.Failed(f"no tuned setting of {model} on {dataset} for profile {profile} in "
                         f"{folder(profile) / SELECTED}: run make tune PROFILE={profile}")
    if rec["params"] not in points:
        raise cli.Failed(f"the tuned setting of {model} on {dataset} ({rec['params']}) is not a point of its current "
                         f"{profile} grid (the grid changed since it was tuned): run make tune PROFILE={profile}")
    return rec["params"]


def untuned(profile: str, datasets: list[str] | None = None) -> list[str]:
    """``"<model> on <data set>"`` for every rerun baseline whose selection is missing or no longer a point
    of its current grid (:func:`selected` would fail on it); empty when ``make figures`` can plan."""
    from ungerlib.analyses import table3
    from ungerlib.infra.report import profile_datasets

    out = []
    for n in profile_datasets(profile, datasets):
        for m in table3.RERUN:
            try:
                selected(profile, n, m)
            except cli.Failed:
                out.append(f"{m} on {n}")
    return out


def tune(profile: str, datasets: list[str] | None = None, models: list[str] | None = None,
         stage2: bool = True) -> dict[str, Any]:
    """Train every grid point (cached), save the tuning tables and write the selection file. The first data
    set is tuned first; the others get its :data:`ungerlib.analyses.table3.TRANSFER` best points
    (:func:`transferred`, from this run's selection where it tuned the first data set)."""
    from ungerlib.analyses import stage2_grid, table3
    from ungerlib.infra import report
    from ungerlib.infra.store import atomic_write_json

    names = report.profile_datasets(profile, datasets)
    cfgs = {n: C.profile(profile, dataset=n) for n in names}
    out = load(profile)
    out.setdefault("baselines", {})
    if stage2:
        rows = stage2_grid.screened_rows(profile)
        screen = stage2_grid.lever_table(cfgs[names[0]], rows, progress=False)
        report.save_table(screen, "tuning/stage2_grid", [stage2_grid.lever_config(cfgs[names[0]], r) for r in rows],
                          profile=profile, legend=f"{names[0]}, validation split, every item ranked, best epoch of "
                                                  "each row at the screening budget.", command=COMMAND.format(profile))
        out["stage2"] = {"dataset": names[0], "best_at_screening": screen["ndcg@20"].idxmax(),
                         "adopted": stage2_grid.ADOPTED}
    first = report.profile_datasets(profile)[0]
    results = []
    for n in sorted(cfgs, key=lambda n: n != first):  # the first data set before the others
        tuned = {}
        for m in models or table3.RERUN:
            points = None if n == first else transferred(profile, m, out)
            tuned[m] = table3.tune(cfgs[n], m, points or table3.full_grid(profile, m))
            out["baselines"].setdefault(n, {})[m] = {
                "params": tuned[m].best.params, "valid ndcg@20": tuned[m].best.metrics["valid_all"]["ndcg@20"],
                "ranked": [r.params for r in tuned[m].runs]}
        results.append(table3.Overall(n, {}, tuned, {}))
    report.save_table(table3.tuning(results), "tuning/table3_tuning", list(cfgs.values()), profile=profile,
                      command=COMMAND.format(profile))
    report.save_table(table3.times(results), "tuning/table3_times", list(cfgs.values()), profile=profile,
                      command=COMMAND.format(profile))
    atomic_write_json(folder(profile) / SELECTED, out)
    return out


def table(profile: str, name: str) -> pd.DataFrame:
    """A committed tuning table (``stage2_grid``, ``table3_tuning``, ``table3_times``) as saved."""
    path = folder(profile) / f"{name}.csv"
    if not path.is_file():
        raise cli.Failed(f"no tuning table {path}: run make tune PROFILE={profile}")
    df = pd.read_csv(path)
    index = [c for c in ("dataset", "model", "setting", "row") if c in df.columns]
    return df.set_index(index) if index else df


def stage2_screen(cfg: C.RunConfig) -> pd.DataFrame:
    """The Stage II grid at the screening budget on ``cfg``'s data set, as notebook 04 shows it: the
    committed tuning table; on the smoke profile (tiny, and never committed) computed here."""
    from ungerlib.analyses import stage2_grid

    if cfg.profile == "smoke":
        return stage2_grid.lever_table(cfg, stage2_grid.screened_rows("smoke"))
    return table(cfg.profile, "stage2_grid")


def baseline_table(profile: str, name: str, computed: pd.DataFrame) -> pd.DataFrame:
    """The committed tuning table ``name`` (``table3_tuning`` or ``table3_times``); on the smoke profile,
    whose grids have one point, ``computed`` (what the notebook's runs give)."""
    return computed if profile == "smoke" else table(profile, name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ungerlib tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=C.PROFILES)
    ap.add_argument("--datasets", nargs="*", help="override the profile's data sets")
    ap.add_argument("--models", nargs="*", help="rerun baselines to tune (default: all)")
    ap.add_argument("--no-stage2", action="store_true", help="leave the Stage II grid as it is")
    ap.add_argument("--if-needed", action="store_true",
                    help="(make figures) tune only when a baseline has no selection at its current grid: then train "
                         "every grid point first, side by side (prefill --only tune), and tune; else do nothing")
    ap.add_argument("--jobs", type=int, default=None, help="with --if-needed: runs at once (default one per core)")
    ap.add_argument("--traceback", action="store_true", help=cli.TRACEBACK_HELP)

    def run(a: argparse.Namespace) -> None:
        from ungerlib.infra import prefill, runtime

        if a.if_needed:
            missing = untuned(a.profile, a.datasets)
            if not missing:
                runtime.log(f"[tune] every baseline of {a.profile} has a selection at its current grid "
                            f"({folder(a.profile) / SELECTED}): nothing to tune")
                return
            runtime.log(f"[tune] not tuned at the current grids: {', '.join(missing)}; the validation grids "
                        "train first (as make tune)")
            prefill._main(prefill.parser().parse_args(
                ["--profile", a.profile, "--only", prefill.TUNE, *(["--datasets", *a.datasets] if a.datasets else []),
                 *(["--jobs", str(a.jobs)] if a.jobs else [])]))
        runtime.configure_threads()
        out = tune(a.profile, a.datasets, a.models, not a.no_stage2)
        runtime.log(f"[tune] selection written to {folder(a.profile) / SELECTED}")
        print(json.dumps(out, indent=1))
    return cli.run(run, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
