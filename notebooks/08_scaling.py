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
# # 08 · Scaling with depth (Figure 6)
#
# The paper varies the number of layers from 1 to 32 on Beauty and reports that UNGER keeps improving
# with depth, while HSTU, the ID-based generative recommender, stagnates after 8 layers and then
# declines, UNGER above HSTU at every depth (up to +21.42 % NDCG@20). The paper does not say which layers
# it scales: we scale **the decoder** and keep the encoder at 1 (the paper's 1 + 4 is mostly decoder);
# HSTU scales its layers at the setting `make tune` selected for it. Every point trains at the profile's
# budget with early stopping on validation (`ungerlib.analyses.scaling`). The `cpu` profile runs depths
# 1, 2, 4 and 8 (16 if `extra_depths` asks for it); `paper` runs 1 to 32.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the profile's first data set (synthetic on smoke, Beauty otherwise)
extra_depths = []  # depths beyond the profile's, e.g. [16] on cpu when the budget allows
encoder_point = None  # one point with a 2-layer encoder (2 + 4); None: on the paper profile only

# %%
import pandas as pd
from IPython.display import Markdown, display
from ungerlib.analyses import scaling
from ungerlib.infra import config, report

name = report.profile_datasets(profile, datasets)[0]
cfg = config.profile(profile, dataset=name)
depth_list = scaling.depths(profile, tuple(extra_depths))
with_encoder = profile == "paper" if encoder_point is None else bool(encoder_point)
t = scaling.points(cfg, depth_list, with_encoder)
run_cfgs = [c for _, c, _, _ in scaling.runs(cfg, depth_list, with_encoder)]

# %% [markdown]
# ## Figure 6
# Test Recall@20 and NDCG@20 against the number of layers, the user's history excluded (the ranking
# comparable with the paper's). The table beside it has both rankings, the validation NDCG@20 the runs
# were selected on, the parameters, the training time per epoch (one thread on the `cpu` profile) and
# the best epoch against the cap.

# %%
fig = scaling.figure(t)
report.save_figure(fig, "fig6_scaling", t, run_cfgs)
report.save_table(t, "fig6_scaling_points", run_cfgs, legend=f"{name}; test unless marked valid.")
t

# %% [markdown]
# ## Do the paper's two sentences hold here?

# %%
v = scaling.verdicts(t, "test excl ndcg@20")
text = (f"# Scaling with depth on {name} (test, history excluded, NDCG@20)\n\n"
        + scaling.verdicts_text(v, "test excl ndcg@20"))
report.save_text(text, "fig6_scaling_claims", run_cfgs)
display(Markdown(text))
v

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
assert set(t.index.get_level_values("row")) == set(scaling.ROWS)
for row in scaling.ROWS:
    assert sorted(t.xs(row, level="row").index.get_level_values("layers").unique()) == depth_list, row
assert ((t["test ndcg@20"] > 0) & (t["test ndcg@20"] <= t["test recall@20"])).all()
assert (t["parameters"].xs(scaling.HSTU, level="row").diff().dropna() > 0).all()  # deeper means more weights
assert (t["best epoch"] <= t["epochs run"]).all()
assert set(v["keeps improving"]) <= {"yes", "no"} and len(v) == 2
print("all checks passed")
