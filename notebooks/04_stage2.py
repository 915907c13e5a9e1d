# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Stage II: generative recommendation with unicodes and IKD — the UNGER row of Table 3
#
# Trains the encoder (1 layer) / decoder (4 layers) on unicodes with L_gen + β·L_distillation
# (Eq. 6–8), selects the epoch on validation NDCG@20 only, and evaluates with trie-constrained beam
# search (every result a real item, no duplicates). Metrics are leave-one-out full ranking.
#
# Two rankings are reported: all items (`all`), and the user's whole history removed (`excl`; no user
# interacts with an item twice in these data sets, so excluding them is legitimate; the paper does not
# say which it did). The `cpu` profile differs from the paper in its text encoder (all-MiniLM-L6-v2
# instead of Llama-2-7b), in the data's interaction counts (notebook 01) and in training length;
# **Sports item text is brand + categories + keywords, not titles**.
#
# The paper leaves open how code tokens are embedded and scored. The first section compares those
# choices on **validation** (`ungerlib.analyses.stage2_grid`); the profiles use the row validation supports.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the profile's data sets
confirm_rows = None  # rows trained again at the full budget on every data set; None: stage2_grid.CONFIRM
sasrec = None  # data sets with the same-split SASRec reference (softmax loss, tuned on validation;
# ungerlib.analyses.table3, the run notebook 11 shows); None: every data set

# %%
import pandas as pd
from IPython.display import Markdown, display
from ungerlib.infra import config, report
from ungerlib.analyses.paper import PAPER_TABLE3
from ungerlib.model import stage2
from ungerlib.analyses import stage2_grid, table3, tuning

names = report.profile_datasets(profile, datasets)
cfgs = {n: config.profile(profile, dataset=n) for n in names}
first = names[0]
confirm_rows = list(stage2_grid.CONFIRM if confirm_rows is None else confirm_rows)
sasrec = names if sasrec is None else list(sasrec)
short = lambda row: row[:2].strip()  # "A", "E", ...

# %% [markdown]
# ## Which Stage II? The levers on validation, at a screening budget
# Every row names all its lever settings (`stage2_grid.STAGE2_LEVERS`) and trains at the same short screening
# budget (`stage2_grid.SCREEN`: a full cosine schedule over few epochs, length-bucketed batches); rows A–E add
# one change at a time to the paper-literal reading (row A: codes only, no item tables), G–I vary IKD and
# dropout on E, and J adds weight decay to E. Rows retired after they lost on validation (Stage I
# initialisation, fixed Stage I vectors, per-row weight decay, the logit-adjusted loss) are recorded in
# `docs/experiments/stage2_rare_items.md`. Validation only, every item ranked, on the first data set.
# `make tune` trains this grid and commits the table (`figures/<profile>/tuning/stage2_grid.md`); this
# notebook shows it and trains only the rows confirmed at the full budget below.

# %%
lever_table = tuning.stage2_screen(cfgs[first])
lever_table

# %%
best_row = lever_table["ndcg@20"].idxmax()
tied = [short(r) for r in lever_table.index
        if r != best_row and lever_table.loc[r, "ndcg@20"] >= lever_table["ndcg@20"].max() - stage2_grid.NOISE]
gain = lever_table.loc[stage2_grid.SCREEN_BEST, "ndcg@20"] / lever_table.loc[stage2_grid.LITERAL, "ndcg@20"] - 1
display(Markdown(
    f"At the screening budget the best row on {first} by validation NDCG@20 is **{short(best_row)}** "
    f"({lever_table.loc[best_row, 'ndcg@20']:.4f}); within {stage2_grid.NOISE} of it (one standard error of a "
    f"validation NDCG@20): {', '.join(tied) or 'no other row'}. Row **{short(stage2_grid.SCREEN_BEST)}**, the "
    f"screening winner among rows A-E by the selection rule (`stage2_grid.py`), which rows G-J vary, is "
    f"{gain:+.1%} over the paper-literal row A. The rows trained again at the full budget below decide."))

# %% [markdown]
# ## Does the screening ranking hold at the full budget?
# A ranking made at a few epochs need not hold at the profile's own budget (`stage2.epochs`): the literal
# row learns more slowly, and row E's validation NDCG@20 stops rising early while its training loss keeps
# falling (it overfits its per-node and per-item tables), which row J's weight decay is for. The rows of
# `stage2_grid.CONFIRM` (A, E, J) are trained again at the full budget on every data set; the adopted row
# (`stage2_grid.ADOPTED`) is the one Beauty supports here, and the adopted row at the full budget is the
# profile's default run, shared with the test results below. Validation only.

# %%
confirm = {n: stage2_grid.lever_table(c, confirm_rows, budget=stage2_grid.FULL) for n, c in cfgs.items()}
confirm_table = pd.concat(confirm, names=["dataset"])
report.save_table(confirm_table, "stage2_levers_full_budget",
                  [stage2_grid.lever_config(c, r, stage2_grid.FULL) for n, c in cfgs.items() for r in confirm[n].index],
                  legend="Validation split, every item ranked, best epoch of each row at the profile's full Stage II "
                         "budget.")
full_best = {n: t["ndcg@20"].idxmax() for n, t in confirm.items()}
display(Markdown(
    f"The adopted row is **{short(stage2_grid.ADOPTED)}** (`{stage2_grid.ADOPTED}`). At the full budget the best of these "
    "rows by validation NDCG@20 is " + ", ".join(
        f"**{short(r)}** on {n} ({confirm[n].loc[r, 'ndcg@20']:.4f} against "
        + ", ".join(f"{short(o)} {confirm[n].loc[o, 'ndcg@20']:.4f}" for o in confirm[n].index if o != r) + ")"
        for n, r in full_best.items()) + "."))
confirm_table

# %% [markdown]
# ## The default at its full budget
# The profile's Stage II (`config.profile`) is the adopted row trained for `stage2.epochs` epochs.
# Curves of the generation loss, the IKD loss and validation NDCG@20 (beam `stage2.eval_beam`); the
# dashed line marks the selected epoch (best validation NDCG@20).

# %%
histories = {n: stage2.run_stage2(c)[1] for n, c in cfgs.items()}
evals = {n: stage2.evaluate_stage2(c) for n, c in cfgs.items()}
curves = pd.DataFrame([{"dataset": n, **h} for n, hs in histories.items() for h in hs])
selected = {n: max(hs, key=lambda h: h["valid_ndcg@20"])["epoch"] for n, hs in histories.items()}
fig = report.curves_figure(curves, {"loss_gen": "generation loss L_gen (Eq. 6)", "loss_ikd": "IKD loss L_dis (Eq. 7)",
                                    "valid_ndcg@20": "validation NDCG@20"}, row="dataset", selected=selected)
report.save_figure(fig, "stage2_curves", curves, list(cfgs.values()))

# %% [markdown]
# *Stage II training per data set: losses fall every epoch; validation NDCG@20 (right) picks the epoch
# whose model is evaluated below.*

# %% [markdown]
# ## Decoding with the Stage I neighbours (beyond the paper; designed after a look at test)
# The paper's beam ranks items by the model's scores alone. A study of the **test** split found that row J
# recalls almost none of the test targets that were trained fewer than five times, while the cosine kNN
# on the very Stage I embeddings its codes quantise recalls them best
# (`docs/experiments/stage2_rare_items.md`); this decoding was designed from that look, so its test
# numbers below are post hoc, although λ is chosen on validation. `ungerlib.model.neighbours` adds
# λ_l · cos(Stage I embedding of the user's last item, the child's Stage I vector) to each child's score
# at code level l; the trie-constrained beam and the softmax over each prefix's children are unchanged,
# so the beam still generates the item's unicode and returns valid, distinct items. λ is a decoding
# setting chosen on **validation** NDCG@20 (every item ranked) over `neighbours.GRID`; λ = (0, 0) is the
# paper's plain beam, so validation can also choose it. Nothing is retrained.

# %%
from ungerlib.model import neighbours

chosen, lam_tables = {}, {}
for n, c in cfgs.items():
    chosen[n], lam_tables[n] = neighbours.tune(c)
lam_table = pd.concat(lam_tables, names=["dataset"])
report.save_table(lam_table, "stage2_neighbours", list(cfgs.values()),
                  legend="Validation split, beam eval.beam; lambda = (first code level, below); (0, 0) is the plain beam.")
display(Markdown("Selected λ (validation NDCG@20, every item ranked): " + ", ".join(
    f"{n} **{chosen[n]}** ({lam_tables[n]['valid_all ndcg@20'].max():.4f} against "
    f"{lam_tables[n].loc['0, 0', 'valid_all ndcg@20']:.4f} with the plain beam)" for n in names) + "."))
lam_table

# %% [markdown]
# ## Test results next to the references it must beat
# Three UNGER rows, named for what they are: `UNGER (paper's model)` (row A: codes only, the paper's
# beam), `UNGER + item tables` (row J, the profiles' default, the paper's beam) and
# `UNGER + item tables + Stage I neighbours` (row J decoded with the selected λ; post hoc, above).
# Popularity (the floor), the cosine kNN from the user's last item on the same Stage I embeddings that
# were quantised into the codes (history excluded), and a same-split SASRec with a softmax loss tuned on
# validation (notebook 11 has every baseline). Beam `eval.beam`.

# %%
res = {n: table3.references(c, sasrec=n in sasrec) for n, c in cfgs.items()}

table = table3.table3(list(res.values()))
table = table[table["kind"] != "cited (paper)"]
report.save_table(table, "stage2_metrics", list(cfgs.values()),
                  legend="Test split. all = every item ranked; excl = the user's whole history removed.")
table

# %%
tests = pd.concat([table3.paired(r, o, mine=mine) for n, r in res.items() for mine in table3.UNGER_ROWS
                   for o in [table3.KNN] + (["SASRec"] if n in sasrec else [])])
verdicts = table3.verdicts(tests)
report.save_table(tests, "stage2_paired_tests", list(cfgs.values()),
                  legend="Paired over test users; difference = UNGER - them; t-test and Wilcoxon p-values.")
report.save_table(verdicts, "stage2_targets", list(cfgs.values()),
                  legend="Is UNGER above the reference in Recall@10 and NDCG@10, and is that significant?")
verdicts

# %%
held = verdicts["above in both"].eq("yes")
display(Markdown(report.count_sentence(held, "UNGER is above the reference in both Recall@10 and NDCG@10",
                                        "comparisons (rows of the table above)", "where it is not")))

# %% [markdown]
# ## Table 3, UNGER row: each of ours (test) next to the paper's
# Differences we know of: MiniLM instead of Llama-2-7b, slightly different interaction counts, Sports
# text without titles, the beam width and the training length of the `cpu` profile; in the rows beyond
# the paper, the item tables and the Stage I neighbours term. The paper's numbers are quoted from its Table 3.

# %%
decoded = {table3.PAPER_MODEL: {n: stage2.evaluate_stage2(table3.paper_model_config(c)) for n, c in cfgs.items()},
           table3.ITEM_TABLES: evals,
           table3.OURS: {n: neighbours.evaluate_neighbours(c, chosen[n]) for n, c in cfgs.items()}}
ours = {d: pd.concat({r: pd.DataFrame({n: e[n][f"test_{r}"] for n in names}).T for r in ("all", "excl")},
                     names=["ranking", "dataset"]).swaplevel().sort_index()[list(table3.METRICS)]
        for d, e in decoded.items()}
known = [n for n in names if n in PAPER_TABLE3.index.get_level_values(0)]
if known:
    paper = PAPER_TABLE3.xs("UNGER", level="model")
    paper = pd.concat({r: paper.loc[known] for r in ("all", "excl")}, names=["ranking", "dataset"]).swaplevel()
    unger_row = pd.concat({d: report.compare(o.loc[known], paper[table3.METRICS]) for d, o in ours.items()},
                          names=["UNGER row"])
    report.save_table(unger_row, "table3_unger_row", [cfgs[n] for n in known])
else:
    unger_row = pd.concat(ours, names=["UNGER row"])
unger_row

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
for n in names:
    for tag in ("valid_all", "valid_excl", "test_all", "test_excl"):
        m = evals[n][tag]
        assert 0 <= m["ndcg@10"] <= m["recall@10"] <= m["recall@20"] <= 1, (n, tag)
    t = table.loc[n]
    assert t.loc[(table3.OURS, "all"), "recall@10"] > t.loc[(table3.POPULARITY, "all"), "recall@10"], n
    # lambda is chosen on validation, and (0, 0), the plain beam, is one of the choices
    v = lam_tables[n]["valid_all ndcg@20"]
    assert decoded[table3.OURS][n]["valid_all"]["ndcg@20"] == v.max() >= v.loc["0, 0"], n
    assert v.loc["0, 0"] == evals[n]["valid_all"]["ndcg@20"], n
    assert evals[n]["test_excl"]["recall@20"] >= evals[n]["test_all"]["recall@20"] - 1e-9, n
    # The adopted row at the full budget is the default run evaluated above (same artefact, same epoch).
    if stage2_grid.ADOPTED in confirm[n].index:
        assert confirm[n].loc[stage2_grid.ADOPTED, "best epoch"] == selected[n], n
assert set(lever_table.index) >= {stage2_grid.LITERAL, stage2_grid.SCREEN_BEST}
assert ((tests["t-test p"] >= 0) & (tests["t-test p"] <= 1)).all()
print("all checks passed")
