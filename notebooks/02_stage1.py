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
# # 02 · Stage I: DIN, modality adaptation (AdaLN) and cross-modality alignment
#
# Regenerates the Stage I evidence behind the paper's Eq. 2–5: training curves of the next-item loss
# (L_seq, Eq. 4) and the alignment loss (L_align, Eq. 3), validation next-item metrics of DIN alone
# (α = 0) against DIN trained jointly with CKA (α = 1, Eq. 5), and cross-modal retrieval: for how many
# items is the nearest adapted semantic vector MAL(E_S) their own? (With α = 0 a probe MAL is trained
# on the side with E_C frozen, so both rows are measured the same way.)
#
# Validation metrics are full-ranking Recall/NDCG over all items on a fixed, seeded sample of
# validation users (`stage1.eval_users`; DIN scores every candidate with target-aware attention).

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the profile's data sets

# %%
import pandas as pd
from ungerlib.baselines import references
from ungerlib.infra import config, report
from ungerlib.model import data, stage1

names = report.profile_datasets(profile, datasets)
rows = {"DIN alone (α=0)": "collaborative_only", "DIN + CKA (α=1)": "ours"}
cfgs = {(n, label): config.variant(config.profile(profile, dataset=n), row) for n in names for label, row in rows.items()}
results = {k: stage1.stage1_embeddings(c) for k, c in cfgs.items()}  # trains if not cached (progress on stderr)

# %% [markdown]
# ## Training curves
# Both losses per epoch; the alignment loss of the α = 0 row trains only the probe MAL.

# %%
curves = pd.DataFrame([{"dataset": n, "run": label, **h} for (n, label), r in results.items() for h in r.history])
panels = {"loss_seq": "next-item loss L_seq (Eq. 4)", "loss_align": "alignment loss L_align (Eq. 3)",
          "valid_recall@20": "validation Recall@20"}
selected = {k: r.valid_metrics["best_epoch"] for k, r in results.items()}
fig = report.curves_figure(curves, panels, row="dataset", hue="run", selected=selected)
report.save_figure(fig, "stage1_curves", curves, list(cfgs.values()))

# %% [markdown]
# *Figure `stage1_curves.png`: per data set (rows), the training losses and the validation Recall@20
# (sampled validation users) per epoch, for DIN alone and DIN trained jointly with CKA; a star marks the
# epoch each run keeps (best validation Recall@20).*

# %% [markdown]
# ## Validation metrics and cross-modal retrieval
# Popularity (most frequent training targets) is the floor every model must clear.

# %%
table = []
for n in names:
    _, splits = data.get_splits(cfgs[(n, "DIN + CKA (α=1)")])
    table.append({"dataset": n, "run": "popularity", **references.popularity(splits, splits.valid)})
    for label in rows:
        r = results[(n, label)]
        table.append({"dataset": n, "run": label, **r.valid_metrics, "crossmodal_top1": r.crossmodal_top1})
table = pd.DataFrame(table).set_index(["dataset", "run"])
report.save_table(table, "stage1_validation", list(cfgs.values()))
table

# %% [markdown]
# CKA makes an item's collaborative embedding retrieve its own semantic vector, while DIN alone does not; next-item accuracy stays on par, so the alignment is gained without losing collaborative signal.

# %% [markdown]
# ## Which vector is the integrated embedding?
#
# The paper does not say which Stage I vector is quantised. Hierarchical k-means groups items that are
# close in the chosen space, so we ask each candidate space on the **validation** split: ranking all
# items by cosine similarity to the user's most recent item, how often is the next item on top?

# %%
from ungerlib.model import semantic

ours_cfg = {n: cfgs[(n, "DIN + CKA (α=1)")] for n in names}
choices = pd.concat({n: references.integrated_choices(results[(n, "DIN + CKA (α=1)")], semantic.semantic_embeddings(c),
                                                    data.get_splits(c)[1].valid) for n, c in ours_cfg.items()})
choices.index.names = ["dataset", "embedding quantised"]
report.save_table(choices, "stage1_integrated_choices", list(ours_cfg.values()))
choices

# %% [markdown]
# The choices of this run ranked by validation NDCG@20, read from the table above (`stage1_integrated_choices.md`):

# %%
for n in names:
    order = list(choices.loc[n, "ndcg@20"].sort_values(ascending=False).index)
    print(f"{n}: " + " > ".join(order) + f"  (default stage1.integrated: {ours_cfg[n].stage1.integrated!r})")

# %% [markdown]
# The default `stage1.integrated` is `collaborative` (E_C trained jointly with CKA): chosen on the `cpu`
# validation runs of this table, where it had the best mean over the three data sets. It is a proxy; the
# short Stage II check that agreed with it is described in the README (not rerun here).

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
for n in names:
    t = table.loc[n]
    assert t.loc["DIN + CKA (α=1)", "crossmodal_top1"] > t.loc["DIN alone (α=0)", "crossmodal_top1"]
    for label in rows:
        assert t.loc[label, "recall@20"] > t.loc["popularity", "recall@20"], (n, label)
        assert 0 <= t.loc[label, "ndcg@10"] <= t.loc[label, "recall@10"] <= t.loc[label, "recall@20"] <= 1
    assert ((choices.loc[n] >= 0) & (choices.loc[n] <= 1)).all().all()
print("all checks passed")
