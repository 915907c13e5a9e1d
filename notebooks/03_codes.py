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
# # 03 · Unicodes: hierarchical k-means vs random vs RQ-VAE
#
# Regenerates the **code report behind Fig 8** (choice of quantisation method) and the inputs of
# **Fig 9** (number of clusters K) of the paper (4.6): Stage I's integrated embeddings are quantised
# three ways at the profile's K (256 in `cpu`/`paper`, on Beauty, Sports and Toys; `smoke` uses the
# synthetic data with K=8):
#
# * **hkmeans**, the paper's method (3.3): recursive K-way k-means until each leaf holds one item;
# * **random**: the hkmeans tree with its codes shuffled among items (same shape, no meaning);
# * **RQ-VAE** (TIGER): `rq_levels` residual codebooks plus a last token that disambiguates
#   colliding items; the paper notes it "suffers from persistent codebook conflicts".
#
# For each table we show the code lengths, first-level usage, collisions before disambiguation,
# and whether items sharing a first-level code share a category more often than random pairs (the
# property 4.6 credits for hkmeans winning). The recommendation metrics of Fig 8-9 come from
# Stage II (notebook 09).

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the profile's data sets

# %%
import pandas as pd
from ungerlib.infra import config, report
from ungerlib.model import data
from ungerlib.model.codes import item_codes

names = report.profile_datasets(profile, datasets)
rows = {"hkmeans": "hkmeans_codes", "random": "random_codes", "rqvae": "rqvae_codes"}
cfgs = {(n, m): config.variant(config.profile(profile, dataset=n), row) for n in names for m, row in rows.items()}
items = {n: data.load_dataset(cfgs[(n, "hkmeans")].data).items for n in names}
tables = {k: item_codes(c) for k, c in cfgs.items()}  # cached artefacts (Stage I runs first if needed)
{n: cfgs[(n, "hkmeans")].codes.K for n in names}

# %% [markdown]
# ## Code report
# One row per data set and quantiser; `n_collisions` counts items whose raw code was shared before the disambiguation token (RQ-VAE only).

# %%
cols = ["n_items", "K", "length_hist", "mean_length", "first_level_used", "mean_items_per_first_code",
        "max_items_per_first_code", "n_collisions", "same_category_shared_prefix", "same_category_random_pair"]
reps = {(n, m): t.report(items[n]) for (n, m), t in tables.items()}
rep = pd.DataFrame({k: {c: r[c] for c in cols} for k, r in reps.items()}).T.rename_axis(["dataset", "method"])
rep["length_hist"] = rep["length_hist"].map(lambda h: ", ".join(f"{k}: {v}" for k, v in h.items()))
for c in cols:
    if c != "length_hist":
        rep[c] = pd.to_numeric(rep[c])
report.save_table(rep, "codes_report", list(cfgs.values()))
rep

# %% [markdown]
# ## Code lengths
# Read from the `code lengths` column above (length: number of items):

# %%
for (n, m), r in reps.items():
    lengths = r["length_hist"]
    what = (f"every item has a code of length {next(iter(lengths))}" if len(lengths) == 1 else
            "codes of length " + ", ".join(f"{k} ({v} items)" for k, v in lengths.items()))
    print(f"{n}, {m}: {what}")

# %% [markdown]
# Hierarchical k-means and its shuffled copy have the same shape, but only hkmeans groups items of the
# same category under a shared first-level code (`same category, shared first code` against `random pair`
# in `codes_report.md`); RQ-VAE codes have `codes.rq_levels` tokens plus a disambiguation token, which
# separates the items its codebooks collide on (`collisions`).

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
for (n, m), t in tables.items():
    assert len(t) == len(items[n]) == rep.loc[(n, m), "n_items"], (n, m)
    assert len(set(t.codes)) == len(t), f"{n}/{m}: codes are not unique"
for n in names:
    r = rep.loc[n]
    assert r.loc["hkmeans", "n_collisions"] == r.loc["random", "n_collisions"] == 0
    assert sorted(tables[(n, "random")].codes) == sorted(tables[(n, "hkmeans")].codes)  # same tree, shuffled
    assert r.loc["hkmeans", "same_category_shared_prefix"] > r.loc["random", "same_category_shared_prefix"], n
print("all checks passed")
