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
# # 07 · t-SNE of the four embeddings: Figure 5
#
# Regenerates **Figure 5** of the paper (4.3, Beauty): t-SNE maps of the semantic, collaborative,
# concatenated and our embeddings, each coloured by its own k-means clustering with 10 clusters. The
# paper reads off them that "the embeddings obtained by the concatenation method are highly similar to
# the distribution of semantic embeddings". The embeddings are those of notebook 06
# (`dominance.modality_embeddings`): S = frozen E_S (MiniLM on `cpu`), C = E_C of DIN alone, concat =
# [l2(E_C), l2(PCA₁₂₈(E_S))], ours = **E_C trained jointly with CKA** (the default integrated embedding).
#
# A map is judged by eye; the number behind it is the **adjusted mutual information (AMI)** between
# the 10-cluster k-means labellings of two embeddings, on all items (0: unrelated partitions, 1: the
# same). The diagonal holds each embedding's agreement with itself under another k-means seed, the
# most another embedding could reach. Every embedding is l2-normalised before k-means and t-SNE
# (cosine geometry). The t-SNE maps (scikit-learn, fixed `random_state`) use a fixed, seeded sample
# of `n_plot` items, the same for all four panels, coloured by the k-means labels computed on all items.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: synthetic on smoke, else Beauty (the paper's Figure 5 data set)
n_plot = 3000  # items in each t-SNE map; None: every item

# %%
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from ungerlib.analyses import clusters, dominance
from ungerlib.infra import config, report
from ungerlib.model import data, semantic

names = list(datasets) if datasets is not None else (["synthetic"] if profile == "smoke" else ["Beauty"])
cfgs = {n: config.profile(profile, dataset=n) for n in names}
run_cfgs = [config.variant(c, row) for c in cfgs.values() for row in ("ours", "collaborative_only", "concat")]
embs = {n: dominance.modality_embeddings(c) for n, c in cfgs.items()}  # cached Stage I artefacts (trained if absent)
K = 10

# %% [markdown]
# ## Cluster agreement (AMI, all items)
# Reference labellings in extra columns: on the synthetic data the planted `topic` (semantic) and
# `cluster` (collaborative) of every item; on real data the item's leaf category (a semantic label).
# The paper reports no number for Figure 5, so there is no paper column.

# %%
def references(n: str) -> dict[str, np.ndarray]:
    items = data.load_dataset(cfgs[n].data).items
    if n == "synthetic":
        return {"topic (planted)": np.array([it["topic"] for it in items]),
                "cluster (planted)": np.array([it["cluster"] for it in items])}
    leaf = pd.Series([semantic.leaf_category(it) for it in items])
    return {"leaf category": pd.factorize(leaf)[0]}


agree, labels = {}, {}
for n, e in embs.items():
    agree[n], labels[n] = clusters.agreement(e, K, seed=cfgs[n].seed, references=references(n))
ami = pd.concat(agree, names=["dataset"])
report.save_table(ami, "fig5_cluster_agreement", run_cfgs, k=K, metric="adjusted mutual information",
                  legend=f"cell = adjusted mutual information between the {K}-cluster k-means labellings of the row's "
                         "and the column's embedding (l2-normalised), all items; diagonal = the same embedding "
                         "under another k-means seed; concat = [l2(E_C of DIN alone), l2(PCA of E_S)], ours = "
                         "E_C trained with CKA; no paper value (the paper shows Figure 5 without a number)")
ami

# %% [markdown]
# ## Figure 5: t-SNE maps

# %%
maps = []
for n, e in embs.items():
    idx = dominance.query_items(len(e["semantic"]), n_plot, cfgs[n].seed)
    for role, x in e.items():
        xy = clusters.tsne_map(x[idx], seed=cfgs[n].seed)
        maps.append(pd.DataFrame({"dataset": n, "embedding": role, "item": idx, "x": xy[:, 0], "y": xy[:, 1],
                                  "kmeans cluster": labels[n][role][idx]}))
maps = pd.concat(maps, ignore_index=True)
g = sns.relplot(maps, x="x", y="y", hue="kmeans cluster", col="embedding", row="dataset", palette="tab10",
                s=4, linewidth=0, height=3.2, facet_kws={"sharex": False, "sharey": False}, legend=False)
g.set(xticks=[], yticks=[], xlabel="", ylabel="")
g.set_titles(row_template="{row_name}", col_template="{col_name}")
report.save_figure(g.figure, "fig5_tsne", maps, run_cfgs, k=K, n_plot=n_plot)

# %% [markdown]
# *Figure `fig5_tsne.png`: t-SNE maps (scikit-learn, l2-normalised inputs, perplexity 30, PCA
# initialisation, fixed seed) of the semantic, collaborative, concatenated and our embeddings on the
# same seeded sample of items, each point coloured by its embedding's own 10-cluster k-means label
# (computed on all items). Colours are comparable within a panel, not across panels.*
#
# ## Which of the paper's claims hold here
# (1) the concatenation's clusters agree with the semantic ones more than with the collaborative
# ones (the paper's "highly similar to the distribution of semantic embeddings"); (2) ours is more
# balanced: the ratio of its agreement with the semantic and with the collaborative clusters is
# nearer 1 than the concatenation's; (3) ours agrees with the collaborative clusters more than the
# concatenation does.

# %%
claims = pd.DataFrame([{"dataset": n,
                        "concat closer to semantic than to collaborative": a.loc["concat", "semantic"] > a.loc["concat", "collaborative"],
                        "AMI(concat, semantic) / AMI(concat, collaborative)": a.loc["concat", "semantic"] / a.loc["concat", "collaborative"],
                        "AMI(ours, semantic) / AMI(ours, collaborative)": a.loc["ours", "semantic"] / a.loc["ours", "collaborative"],
                        "ours more balanced than concat": abs(np.log(a.loc["ours", "semantic"] / a.loc["ours", "collaborative"]))
                                                          < abs(np.log(a.loc["concat", "semantic"] / a.loc["concat", "collaborative"])),
                        "ours closer to collaborative than concat is": a.loc["ours", "collaborative"] > a.loc["concat", "collaborative"]}
                       for n, a in agree.items()]).set_index("dataset")
claims

# %% [markdown]
# What the numbers say, rendered from the tables above:

# %%
def verdict(held: pd.Series, claim: str) -> str:
    return "holds" if held[claim] else "**does not hold**"


for n, a in agree.items():
    held = claims.loc[n]
    extra = (f" Against item leaf categories: semantic {a.loc['semantic', 'leaf category']:.2f}, concat "
             f"{a.loc['concat', 'leaf category']:.2f}, ours {a.loc['ours', 'leaf category']:.2f}, collaborative "
             f"{a.loc['collaborative', 'leaf category']:.2f}." if "leaf category" in a.columns else "")
    display(Markdown(
        f"**{n}**: the concatenation's clusters agree with the semantic ones at AMI {a.loc['concat', 'semantic']:.2f} "
        f"and with the collaborative ones at {a.loc['concat', 'collaborative']:.2f}, so claim (1) "
        f"{verdict(held, 'concat closer to semantic than to collaborative')} (k-means of S agrees with itself across "
        f"seeds at {a.loc['semantic', 'semantic']:.2f}). Ours: {a.loc['ours', 'semantic']:.2f} with S and "
        f"{a.loc['ours', 'collaborative']:.2f} with C, so claim (2) {verdict(held, 'ours more balanced than concat')} and "
        f"claim (3) {verdict(held, 'ours closer to collaborative than concat is')}." + extra))

# %% [markdown]
# In the maps the semantic and concat panels show separated islands, while the collaborative and our
# panels are one blob with coloured regions; ours is visibly not a copy of the semantic map. Where
# claim (3) fails, ours is more balanced because it moved away from S, not towards C.

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
for n, a in agree.items():
    roles = list(embs[n])
    sq = a.loc[roles, roles].to_numpy()
    assert np.allclose(sq - np.diag(np.diag(sq)), (sq - np.diag(np.diag(sq))).T)  # AMI is symmetric
    assert (a.to_numpy() <= 1 + 1e-9).all() and (a.to_numpy() >= -1).all()
    if n == "synthetic":  # the text embeddings' clusters recover the planted topics
        assert a.loc["semantic", "topic (planted)"] > 0.5 > a.loc["semantic", "cluster (planted)"]
    assert all(len(np.unique(labels[n][r])) == K for r in roles)
    m = maps[maps.dataset == n]
    assert np.isfinite(m[["x", "y"]].to_numpy()).all() and m.groupby("embedding").size().nunique() == 1
print("all checks passed")
