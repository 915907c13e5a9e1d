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
# Two rankings are reported: all items, and items the user already has excluded (no user interacts
# with an item twice in these data sets, so excluding them is legitimate; the paper does not say which
# it did). The `cpu` profile differs from the paper in its text encoder (all-MiniLM-L6-v2 instead of
# Llama-2-7b) and in the data's interaction counts (see notebook 01); **Sports item text is brand +
# categories + keywords, not titles**.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the profile's data sets

# %%
import pandas as pd
import seaborn as sns
from ungerlib import analysis, config, data, report, stage1, stage2

names = report.profile_datasets(profile, datasets)
cfgs = {n: config.profile(profile, dataset=n) for n in names}
histories = {n: stage2.run_stage2(cfgs[n], progress=False)[1] for n in names}
evals = {n: stage2.evaluate_stage2(cfgs[n]) for n in names}

# %% [markdown]
# ## Training curves
# Generation loss, IKD loss and validation NDCG@20 (beam `stage2.eval_beam`) per epoch; the selected epoch is the best validation NDCG@20.

# %%
curves = pd.DataFrame([{"dataset": n, **h} for n, hs in histories.items() for h in hs])
long = curves.melt(id_vars=["dataset", "epoch"], value_vars=["loss_gen", "loss_ikd", "valid_recall@10", "valid_ndcg@20"],
                   var_name="quantity")
g = sns.relplot(long, x="epoch", y="value", row="dataset", col="quantity", kind="line", height=2.4, aspect=1.2,
                facet_kws={"sharey": False})
g.set_titles("{row_name} · {col_name}")
report.save_figure(g.figure, "stage2_curves", curves, list(cfgs.values()))

# %% [markdown]
# ## Validation and test metrics
# Beam `eval.beam`; `excl` drops items already in the user's history. Popularity is the floor; item-kNN
# (cosine to the user's last item on the same Stage I embeddings that were quantised, history excluded)
# is a cheap baseline that uses what UNGER learns from, without Stage II.

# %%
rows = []
for n in names:
    _, splits = data.get_splits(cfgs[n])
    rows.append({"dataset": n, "ranking": "popularity (test)", **analysis.popularity(splits, splits.test)})
    rows.append({"dataset": n, "ranking": "item-kNN on Stage I (test, excl)",
                 **analysis.next_item_knn(stage1.stage1_embeddings(cfgs[n]).integrated, splits.test)})
    for tag in ("valid_all", "valid_excl", "test_all", "test_excl"):
        rows.append({"dataset": n, "ranking": tag, **evals[n][tag]})
metrics = pd.DataFrame(rows).set_index(["dataset", "ranking"])[["recall@10", "recall@20", "ndcg@10", "ndcg@20"]]
report.save_table(metrics, "stage2_metrics", list(cfgs.values()))
metrics

# %% [markdown]
# ## Table 3, UNGER row: ours (test, all items) next to the paper's
#
# Differences we know of: MiniLM instead of Llama-2-7b, slightly different interaction counts, Sports
# text without titles, the beam width, and training length and learning rate: the `cpu` profile trains Stage II for
# 15 epochs (about 30–50 min per data set on 2 cores) with the cosine schedule ending there, at Adam lr 2e-3
# instead of the paper's 1e-3 (chosen on Beauty validation for this short budget, README); a 30-epoch
# run of the same model (earlier codes, README) kept improving validation NDCG@20 until about epoch 22.
# The paper's numbers are quoted from its Table 3, together with its strongest baselines for context.

# %%
ours = pd.DataFrame({n: evals[n]["test_all"] for n in names}).T[["recall@10", "recall@20", "ndcg@10", "ndcg@20"]]
ours.index.name = "dataset"
known = [n for n in names if n in report.PAPER_TABLE3.index.get_level_values(0)]
if known:
    paper = report.PAPER_TABLE3.xs("UNGER", level="model").loc[known]
    table3 = report.compare(ours.loc[known], paper)
    table3["item text"] = [data.TEXT_FIELDS[n] for n in known]
    report.save_table(table3, "table3_unger_row", [cfgs[n] for n in known])
    display(report.PAPER_TABLE3.loc[known])
else:
    table3 = ours
table3

# %% [markdown]
# ## The target on Beauty: the strongest tuned SASRec we know of
# Recall@10 0.0740 / NDCG@10 0.0423 (reported elsewhere, protocol not stated: whether history items were
# ranked is unknown), next to ours with every item ranked and with history items excluded. The margin is
# shown as it is; there is no per-user SASRec ranking here to test it for significance.

# %%
if "Beauty" in names:
    sasrec = pd.Series(report.TUNED_SASREC_BEAUTY)
    target = metrics.loc["Beauty"].loc[["test_all", "test_excl"], list(sasrec.index)]
    target["beats target"] = (target > sasrec).all(axis=1).map({True: "yes", False: "no"})
    target.loc["tuned SASRec (target)"] = [*sasrec, ""]
    report.save_table(target, "stage2_target_beauty", [cfgs["Beauty"]])
    display(target)

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
for n in names:
    m = metrics.loc[n]
    for tag in ("valid_all", "valid_excl", "test_all", "test_excl"):
        assert 0 <= m.loc[tag, "ndcg@10"] <= m.loc[tag, "recall@10"] <= m.loc[tag, "recall@20"] <= 1
    assert m.loc["test_all", "recall@10"] > m.loc["popularity (test)", "recall@10"], n
    assert m.loc["test_excl", "recall@20"] >= m.loc["test_all", "recall@20"] - 1e-9, n
print("all checks passed")
