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
# # 06 · Semantic dominance: Table 4 and Figure 3 (Eq. 9–10)
#
# Regenerates **Table 4** and **Figure 3** of the paper (4.3, Beauty): how much of a final item
# representation E comes from the semantic embeddings S and how much from the collaborative
# embeddings C, as the proportional similarity
#
# Sim_sem = 1 − KL(S‖E) / (KL(S‖E) + KL(C‖E)),  Sim_col = 1 − KL(C‖E) / (KL(S‖E) + KL(C‖E))  (Eq. 9–10),
#
# for E = the concatenation (the paper: 97.33 % semantic / 2.67 % collaborative, "semantic
# dominance") and E = ours (59.89 % / 40.11 %).
#
# The four embeddings (`dominance.modality_embeddings`):
# * **S**: the frozen text embeddings E_S (MiniLM, 384-d, on the `cpu` profile; Llama-2-7b in the paper);
# * **C**: E_C of DIN trained alone (α = 0), the "collaborative only" row;
# * **concat**: [l2(E_C of DIN alone), l2(PCA of E_S to 128-d)], as the paper's 4.3 describes (PCA to
#   the collaborative size, then concatenation);
# * **ours**: the integrated embedding Stage I hands to the quantiser, `stage1.integrated =
#   "collaborative"`: **E_C trained jointly with the cross-modality alignment (CKA, α = 1)**, 128-d
#   (notebook 02 explains the choice). MAL(E_S) is not part of it.
#
# **What the KL is taken between.** The paper does not say how an embedding set becomes a
# distribution. S, C and E have different dimensions, so we compare what they say about the items'
# relations: for each item i and each space X, the t-SNE/SNE neighbourhood distribution
# p_X(j | i) ∝ exp(β_i cos(x_i, x_j)) over the other items j, with β_i set so that every
# distribution has perplexity 30 (about 30 effective neighbours); KL(X‖E) is the mean over items of
# KL(p_X(·|i) ‖ p_E(·|i)). This is defined whatever the dimensions, invariant to rescaling or rotating
# a space, and the per-item calibration removes the spread of the cosines, which differs between
# spaces for reasons unrelated to agreement (MiniLM cosines sit around 0.2–0.8, ID embeddings'
# around 0); with a fixed temperature the KL would mostly measure that mismatch. On real data the KL
# is averaged over a fixed, seeded sample of `n_queries` items, each compared against all items; the
# tables give its standard error.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: synthetic on smoke, else Beauty (the paper's Table 4 data set)
n_queries = 2000  # items whose neighbourhoods are compared (each against all items); None: every item

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown, display
from ungerlib.infra import config, report
from ungerlib.analyses.paper import PAPER_TABLE4
from ungerlib.analyses import dominance

names = list(datasets) if datasets is not None else (["synthetic"] if profile == "smoke" else ["Beauty"])
cfgs = {n: config.profile(profile, dataset=n) for n in names}
run_cfgs = [config.variant(c, row) for c in cfgs.values() for row in ("ours", "collaborative_only", "concat")]
embs = {n: dominance.modality_embeddings(c) for n, c in cfgs.items()}  # cached Stage I artefacts (trained if absent)
pd.DataFrame({(n, r): {"items": x.shape[0], "dim": x.shape[1]} for n, e in embs.items() for r, x in e.items()}).T

# %% [markdown]
# ## Table 4: proportional similarity (Eq. 9–10)
# Our shares next to the paper's, with the difference in share points (ours − paper). The paper's
# values are for Beauty with Llama-2-7b text embeddings.

# %%
PERPLEXITY = 30.0
shares = pd.concat({n: dominance.proportional_similarity(e["semantic"], e["collaborative"],
                                                         {"concat": e["concat"], "ours": e["ours"]},
                                                         PERPLEXITY, n_queries, seed=cfgs[n].seed)
                    for n, e in embs.items()}, names=["dataset", "approach"])
ours = shares[["semantic", "collaborative"]]
paper = PAPER_TABLE4.reindex(ours.index, level="approach")
table4 = pd.concat({"ours": ours, "paper": paper, "ours - paper": ours - paper}, axis=1).swaplevel(axis=1)
table4 = table4[["semantic", "collaborative"]].rename(columns={"semantic": "semantic share",
                                                               "collaborative": "collaborative share"}, level=0)
nq, n_items = int(shares["n_queries"].max()), max(len(e["semantic"]) for e in embs.values())
QUERIES = "every item" if nq == n_items else f"{nq:,} seeded query items (each against all {n_items:,})"
report.save_table(table4, "table4_semantic_dominance", run_cfgs, perplexity=PERPLEXITY, n_queries=n_queries,
                  legend=f"semantic / collaborative share = Sim_semantic / Sim_collaborative of Eq. 9-10 (they sum "
                         f"to 1), KL between per-item neighbourhood distributions (perplexity {PERPLEXITY:g}) "
                         f"averaged over {QUERIES}; concat = [l2(E_C of DIN alone), l2(PCA of E_S)]; ours = E_C "
                         f"trained with CKA; ours - paper in share units; paper = its Table 4 (Beauty, "
                         f"Llama-2-7b text embeddings)")
table4

# %% [markdown]
# The KL divergences behind the shares (mean over the query items, with standard errors):

# %%
shares[["kl_semantic", "kl_semantic_se", "kl_collaborative", "kl_collaborative_se", "n_queries"]]

# %% [markdown]
# ## Figure 3: the shares as bars
# The paper's Figure 3 shows the concatenation; ours is beside it, each with the paper's value.

# %%
bars = pd.concat({"this code": ours, "paper": paper}, names=["source"]).rename_axis(columns="modality")
bars = bars.stack().rename("share").reset_index()
g = sns.catplot(bars, x="modality", y="share", hue="source", col="approach", row="dataset", kind="bar",
                height=3.2, aspect=1.0, palette=["tab:blue", "tab:gray"])
g.set(ylim=(0, 1))
g.set_titles(row_template="{row_name}", col_template="{col_name}")
for ax in g.axes.flat:
    for c in ax.containers:
        ax.bar_label(c, fmt="%.2f", fontsize=8)
report.save_figure(g.figure, "fig3_proportional_similarity", bars, run_cfgs, perplexity=PERPLEXITY,
                   n_queries=n_queries)

# %% [markdown]
# *Figure `fig3_proportional_similarity.png`: the semantic and collaborative shares of Eq. 9–10 for the
# concatenation (the paper's Figure 3) and for ours, this code (blue) beside the paper's Table 4 (grey).*

# %% [markdown]
# ## Does the measure see a planted dominance on these embeddings?
# The concatenation's two blocks are unit vectors, so its cosine is the mean of the collaborative and
# the (PCA) semantic cosine. Scaling the semantic block by w plants a known dominance: w > 1 hands the
# cosine to the semantic side, w < 1 to the collaborative side; w = 1 is the concatenation above. The
# semantic share must rise with w.

# %%
WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
sweep = []
for n, e in embs.items():
    d = e["collaborative"].shape[1]
    finals = {w: dominance.weighted_concat(e["concat"][:, d:], e["concat"][:, :d], w) for w in WEIGHTS}
    s = dominance.proportional_similarity(e["semantic"], e["collaborative"], finals, PERPLEXITY, n_queries,
                                          seed=cfgs[n].seed)
    sweep.append(s.rename_axis("semantic block weight w").reset_index().assign(dataset=n))
sweep = pd.concat(sweep, ignore_index=True)
fig, ax = plt.subplots(figsize=(4.5, 3))
sns.lineplot(sweep, x="semantic block weight w", y="semantic", hue="dataset", marker="o", ax=ax)
ax.set(xscale="log", ylabel="semantic share (Eq. 9)", ylim=(0, 1))
ax.set_xticks(WEIGHTS, [f"{w:g}" for w in WEIGHTS])
ax.minorticks_off()
ax.axhline(0.5, color="gray", lw=0.8, ls=":")
report.save_figure(fig, "fig3_planted_weight_sweep", sweep, run_cfgs, perplexity=PERPLEXITY, n_queries=n_queries)
sweep.set_index(["dataset", "semantic block weight w"])[["semantic", "collaborative", "kl_semantic", "kl_collaborative"]]

# %% [markdown]
# *Figure `fig3_planted_weight_sweep.png`: the semantic share (Eq. 9) of [w · l2(PCA of E_S), l2(E_C)]
# against the planted semantic weight w (log scale); w = 1 is the concatenation of Table 4, the dotted
# line an even split.*
#
# ## How much the answer depends on the neighbourhood size, and a definition-free cross-check
# The shares at perplexity 10, 30 and 100, and the plain overlap of k = 10 nearest-neighbour lists:
# of E's 10 nearest items, how many are also among S's 10 nearest, and how many among C's?

# %%
sens = pd.concat({(n, p): dominance.proportional_similarity(e["semantic"], e["collaborative"],
                                                            {"concat": e["concat"], "ours": e["ours"]},
                                                            p, n_queries, seed=cfgs[n].seed)[["semantic", "collaborative"]]
                  for n, e in embs.items() for p in (10.0, 30.0, 100.0)}, names=["dataset", "perplexity", "approach"])
overlap = pd.DataFrame([{"dataset": n, "approach": a,
                         "10-NN overlap with S": dominance.neighbour_overlap(e["semantic"], e[a], 10, n_queries, cfgs[n].seed),
                         "10-NN overlap with C": dominance.neighbour_overlap(e["collaborative"], e[a], 10, n_queries, cfgs[n].seed)}
                        for n, e in embs.items() for a in ("concat", "ours")]).set_index(["dataset", "approach"])
robust = sens.unstack("perplexity")
robust.columns = [f"{m} share (perplexity {p:g})" for m, p in robust.columns]
robust = robust.join(overlap)
report.save_table(robust, "table4_robustness", run_cfgs, n_queries=n_queries,
                  legend=f"share (perplexity p) = Eq. 9-10 with neighbourhoods of perplexity p, over {QUERIES}; "
                         "10-NN overlap with S / C = mean share of an item's 10 nearest neighbours (cosine) in "
                         "the approach's embedding that are also among its 10 nearest in S / C; no paper value "
                         "(the paper reports neither)")
robust

# %% [markdown]
# ## Which of the paper's claims hold here
# Computed from the tables above: (1) the concatenation is dominated by the semantic side (semantic
# share above one half); (2) ours is more balanced than the concatenation (its semantic share is
# nearer one half); (3) ours keeps more of the collaborative side than the concatenation; (1) and (3)
# also by the definition-free 10-NN overlap.

# %%
claims = pd.DataFrame([{"dataset": n,
                        "concat dominated by semantic": t.loc["concat", "semantic"] > 0.5,
                        "ours more balanced than concat": abs(t.loc["ours", "semantic"] - 0.5) < abs(t.loc["concat", "semantic"] - 0.5),
                        "ours more collaborative than concat": t.loc["ours", "collaborative"] > t.loc["concat", "collaborative"],
                        "concat dominated by semantic (kNN overlap)": overlap.loc[(n, "concat"), "10-NN overlap with S"] > overlap.loc[(n, "concat"), "10-NN overlap with C"],
                        "ours more collaborative than concat (kNN overlap)": overlap.loc[(n, "ours"), "10-NN overlap with C"] > overlap.loc[(n, "concat"), "10-NN overlap with C"]}
                       for n, t in ((n, ours.loc[n]) for n in names)]).set_index("dataset")
claims

# %% [markdown]
# What the numbers say, rendered from the tables above (so the prose cannot drift from them):

# %%
for n in names:
    s, o, held = shares.loc[n], overlap.loc[n], claims.loc[n]
    w = sweep[sweep.dataset == n].set_index("semantic block weight w")["semantic"]
    display(Markdown(
        f"**{n}** (perplexity {PERPLEXITY:g}, {QUERIES}): the concatenation is "
        f"**{s.loc['concat', 'semantic']:.1%} semantic / {s.loc['concat', 'collaborative']:.1%} collaborative**, "
        f"ours **{s.loc['ours', 'semantic']:.1%} / {s.loc['ours', 'collaborative']:.1%}** (the paper's are in Table 4 "
        "above). Claims that hold: " + (", ".join(c for c, v in held.items() if v) or "none") + "; claims that do "
        "not: " + (", ".join(c for c, v in held.items() if not v) or "none") + ". In absolute terms, KL(S‖E) is "
        f"{s.loc['ours', 'kl_semantic']:.2f} for ours against {s.loc['concat', 'kl_semantic']:.2f} for the "
        f"concatenation, KL(C‖E) {s.loc['ours', 'kl_collaborative']:.2f} against "
        f"{s.loc['concat', 'kl_collaborative']:.2f}; the 10-NN overlap with C is "
        f"{o.loc['ours', '10-NN overlap with C']:.1%} against {o.loc['concat', '10-NN overlap with C']:.1%}. "
        f"Planted semantic block weights 2 and 4 give semantic shares of {w.loc[2.0]:.0%} and {w.loc[4.0]:.0%}; "
        f"the paper's {PAPER_TABLE4.loc['concat', 'semantic']:.1%} is reached at a weight of about "
        f"{dominance.weight_for_share(w.index.to_numpy(), w.to_numpy(), PAPER_TABLE4.loc['concat', 'semantic']):.1f} "
        "(log-linear interpolation between the swept weights)."))

# %% [markdown]
# **How to read this against the paper.** (a) On real data the concatenation's semantic dominance is
# far weaker than the paper's 97 %. What drives the share is the blocks' relative weight, not the text
# encoder's width: both blocks are reduced to 128 dimensions and normalised before they are
# concatenated, so Llama-2's 4,096 dimensions (against MiniLM's 384) do not enter it. The
# planted-weight sweep shows it: weight 1 (our concatenation) gives about two thirds, weight 2 already
# about 95 %, and the sentence above gives the weight that reproduces the paper's 97 %. The paper does not
# say how it weighted or normalised its blocks; an unnormalised PCA of large text features would weigh
# the semantic block up in exactly this way (an explanation we cannot test without the paper's
# embeddings). (b) The shares are ratios. In absolute terms ours can be farther from *both*
# references than the concatenation (the KLs above): ours is a new space (E_C retrained with the
# alignment), not a mixture of S and C, while the concatenation contains C's vectors verbatim. Part of
# KL(C‖ours) is run-to-run variation of DIN that no retrained embedding could avoid; we have no second
# DIN-alone seed to measure that floor.

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
for n in names:
    s = shares.loc[n]
    assert np.allclose(s["semantic"] + s["collaborative"], 1) and ((s[["semantic", "collaborative"]] >= 0).all().all())
    assert (s[["kl_semantic", "kl_collaborative"]] > 0).all().all()
    w = sweep[sweep.dataset == n].set_index("semantic block weight w")
    assert w["semantic"].is_monotonic_increasing, "the measure must follow a planted semantic weight"
    assert w.loc[4.0, "semantic"] > 0.5 > w.loc[0.25, "semantic"]
    assert np.isclose(w.loc[1.0, "semantic"], s.loc["concat", "semantic"])  # w = 1 is the concatenation
    assert ((overlap.loc[n] >= 0) & (overlap.loc[n] <= 1)).all().all()
print("all checks passed")
