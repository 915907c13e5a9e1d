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
# # 01 · Data and semantic embeddings
#
# Regenerates **Table 2** (data set statistics) of the paper next to the paper's numbers, shows what
# item text the semantic encoder reads, and checks that the frozen semantic embedding space
# (E_S, paper 3.3) makes sense: nearest neighbours and a similarity histogram.
#
# Profiles: `smoke` (synthetic data, hashing encoder, about half a minute of CPU for the chain), `cpu` (real Amazon 2014, MiniLM),
# `paper` (real data, Llama-2-7b on a GPU).

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the profile's data sets

# %%
import numpy as np
import pandas as pd
import seaborn as sns
from ungerlib.infra import config, report
from ungerlib.analyses.paper import PAPER_TABLE2
from ungerlib.model import data, semantic

names = report.profile_datasets(profile, datasets)
cfgs = {n: config.profile(profile, dataset=n) for n in names}
names

# %% [markdown]
# ## Table 2
#
# Our copies are the widely used S3-Rec/P5 preprocessing of the 2014 dump. Users and items equal the
# paper's; interactions are slightly higher (the `difference` columns of the table, saved as
# `table2_datasets.md`): the paper's counts come from a slightly different de-duplication of the raw
# reviews that we cannot reproduce from its text.
# Sports item text is brand + category path + keywords, **not titles** (no public copy has them).

# %%
ours = data.table2(names)
paper = PAPER_TABLE2.loc[[n for n in names if n in PAPER_TABLE2.index]]
num = ["users", "items", "interactions", "density"]
if len(paper):
    table = pd.concat({"ours": ours[num], "paper": paper[num], "difference": (ours[num] - paper[num]).dropna()}, axis=1)
    table[("item text", "")] = ours["item text"]  # a full-length key: the columns are two levels deep
else:
    table = ours
report.save_table(table, "table2_datasets", list(cfgs.values()))
table

# %% [markdown]
# ## What the encoder reads
# A few item texts per data set, rendered by the configurable template; the fields each data set has are counted.

# %%
rows = []
for n, cfg in cfgs.items():
    ds = data.load_dataset(cfg.data)
    texts, used = semantic.item_texts(ds, cfg.semantic.template, cfg.semantic.allow_missing_text)
    print(n, "fields used (items):", used)
    rows += [{"dataset": n, "item": i, "text": texts[i][:110]} for i in (0, 1, 2)]
pd.DataFrame(rows)

# %% [markdown]
# ## Does the embedding space make sense?
# Embeddings are cached artefacts: a second run loads them instead of re-encoding (the provenance records the encoding time).

# %%
emb, sims, checks = {}, [], []
for n, cfg in cfgs.items():
    art = semantic.semantic_artefact(cfg)
    emb[n] = art.npy("embeddings")
    ds = data.load_dataset(cfg.data)
    s = semantic.similarity_samples(emb[n], ds, n=5000, seed=cfg.seed).assign(dataset=n)
    sims.append(s)
    m = s.groupby("pair").cosine.mean()
    checks.append({"dataset": n, "n_items": ds.n_items, "dim": emb[n].shape[1], "encoder": cfg.semantic.encoder,
                   "encode_s": art.provenance["wall_s"], "cos_random": m["random"],
                   "cos_same_category": m["same leaf category"]})
checks = pd.DataFrame(checks).set_index("dataset")
report.save_table(checks, "embedding_checks", list(cfgs.values()))
checks

# %%
sims = pd.concat(sims, ignore_index=True)
g = sns.displot(sims, x="cosine", hue="pair", col="dataset", kind="hist", stat="density",
                common_norm=False, bins=60, height=3, aspect=1.3)
g.set_titles("{col_name}")
g.set_axis_labels("cosine similarity of two items' text embeddings", "probability density")
g.legend.set_title("item pair")
report.save_figure(g.figure, "embedding_similarity", sims, list(cfgs.values()))

# %% [markdown]
# *Figure `embedding_similarity.png`: per data set, how similar the semantic embeddings E_S of two
# items are, for random pairs and for pairs sharing a leaf category (sampled pairs; each histogram
# integrates to 1).*

# %% [markdown]
# Items sharing a leaf category are markedly more similar than random pairs. Nearest neighbours of three items:

# %%
n0 = names[0]
ds0 = data.load_dataset(cfgs[n0].data)
texts0, _ = semantic.item_texts(ds0, cfgs[n0].semantic.template, cfgs[n0].semantic.allow_missing_text)
semantic.nearest_neighbours(emb[n0], texts0, items=[0, 10, 100], k=3)

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
for n in names:
    assert np.isfinite(emb[n]).all() and emb[n].shape[0] == ours.loc[n, "items"]
    assert checks.loc[n, "cos_same_category"] > checks.loc[n, "cos_random"] + 0.05, n
    if n in PAPER_TABLE2.index:
        assert ours.loc[n, "users"] == PAPER_TABLE2.loc[n, "users"]
        assert ours.loc[n, "items"] == PAPER_TABLE2.loc[n, "items"]
        assert 0 <= ours.loc[n, "interactions"] - PAPER_TABLE2.loc[n, "interactions"] < 200
print("all checks passed")
