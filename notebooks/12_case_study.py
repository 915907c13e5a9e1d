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
# # 12 · What a unicode means: a case study
#
# The paper argues that one code can carry both kinds of knowledge: items under a shared prefix should
# be alike in what they are (semantic) and in who buys them together (collaborative). This notebook
# looks inside the unicodes of the first data set: the items under a few first-level codes, one user's
# history and recommendations written as codes and as titles, and one number each for how semantic and
# how collaborative a code's prefixes are, for UNGER's unified code against a semantic-only and a
# collaborative-only code (all three hierarchical k-means at the same K; `ungerlib.analyses.case_study`).
# No paper value: the paper shows no such study. Validation users only; nothing is selected on test.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the profile's first data set (synthetic on smoke, Beauty otherwise)
user_seed = 0  # which validation user the story shows (drawn with this seed, not chosen by hand)

# %%
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from ungerlib.analyses import case_study
from ungerlib.infra import config, report
from ungerlib.model import codes, data, stage2

name = report.profile_datasets(profile, datasets)[0]
cfg = config.profile(profile, dataset=name)
ds, splits = data.get_splits(cfg)
training = [s[:-2] for s in ds.sequences]  # what the coherence numbers may look at: the training items
tables = {c: codes.item_codes(case_study.code_config(cfg, c)) for c in case_study.CODES}

# %% [markdown]
# ## Items under a first-level code (UNGER's unified code)
# Three first-level codes drawn with a fixed seed among those with at least five items: five of their
# items with title (or, for Sports, brand and keywords) and leaf category, and how often the group's item
# pairs occur together in a user's training sequence.

# %%
groups = case_study.first_level_groups(tables["unified"], ds.items, training)
report.save_table(groups, "case_study_groups", cfg, legend=f"{name}, unified code (UNGER).")
groups

# %% [markdown]
# ## One user, as codes and as titles
# A validation user drawn with `user_seed`: the history (oldest first) and the top 10 of the profile's
# Stage II (`UNGER + item tables`, the paper's plain beam, history excluded), each item with its unicode.

# %%
model, _ = stage2.run_stage2(cfg, progress=False)
u = int(np.random.default_rng(user_seed).integers(len(splits.valid)))
story = case_study.user_story(model, tables["unified"], ds.items, splits.valid.history[u],
                              int(splits.valid.target[u]), beam=cfg.eval.beam)
report.save_table(story, "case_study_user", cfg, legend=f"{name}, validation user {u} (drawn with seed {user_seed}).")
story

# %% [markdown]
# ## How semantic, how collaborative is a shared prefix?
# Over pairs of items that share their first-level code: the share of the same leaf category (semantic)
# and the share bought together, i.e. in one user's training sequence (collaborative), each next to its
# chance level over all pairs.

# %%
coh = pd.DataFrame({c: case_study.coherence(t, ds.items, training) for c, t in tables.items()}).T
coh.index.name = "code"
report.save_table(coh, "case_study_coherence", [case_study.code_config(cfg, c) for c in case_study.CODES],
                  legend=f"{name}; every code hierarchical k-means at K = {cfg.codes.K}.")
s = coh["same category, shared first code"] / coh["same category, any pair"]
c = coh["co-occur, shared first code"] / coh["co-occur, any pair"]
display(Markdown(
    f"Items that share a first code share a category {s['unified']:.1f}x as often as random pairs in the unified "
    f"code, against {s['semantic-only']:.1f}x (semantic-only) and {s['collaborative-only']:.1f}x "
    f"(collaborative-only); they are bought together {c['unified']:.1f}x as often as random pairs, against "
    f"{c['semantic-only']:.1f}x and {c['collaborative-only']:.1f}x."))
coh

# %%
# Checks on this notebook's own results (nbval fails if any does not hold).
share_cols = [col for col in coh.columns if col != "pairs sharing the first code"]
assert ((coh[share_cols] >= 0) & (coh[share_cols] <= 1)).all().all()
assert (coh["pairs sharing the first code"] > 0).all()
assert s["semantic-only"] > 1, "a semantic-only code must group items of a category above chance"
assert story.loc["recommended"].shape[0] == 10 and not story.loc["recommended", "item"].isin(
    splits.valid.exclude[u]).any()
print("all checks passed")
