"""The numbers the paper reports (Tables 2-6), typed once from its text and checked cell by cell
against ``shared/paper/unger-paper.txt`` (``tests/analyses/test_table3.py``). Every table that shows
ours beside the paper's reads them from here."""
from __future__ import annotations

import pandas as pd

from ungerlib.model.metrics import METRICS

# Table 2 of the paper.
PAPER_TABLE2 = pd.DataFrame(
    {"users": [22363, 35598, 19412], "items": [12101, 18357, 11924],
     "interactions": [198360, 296175, 167526], "density": [0.00073, 0.00045, 0.00073]},
    index=pd.Index(["Beauty", "Sports", "Toys"], name="dataset"))

# Table 3 of the paper, every row (Recall@10, Recall@20, NDCG@10, NDCG@20). The paper takes the rows
# without its superscript * from published results (EAGER [39] and S3-Rec [47], i.e. S3-Rec's full-sort
# protocol, which drops items the user has already seen) and reimplemented the starred ones
# (PAPER_TABLE3_REIMPLEMENTED). RecForest is printed "Recorest" in the paper's table.
PAPER_TABLE3 = pd.DataFrame.from_dict({
    ("Beauty", "GRU4Rec"): [0.0283, 0.0479, 0.0137, 0.0187],
    ("Beauty", "Caser"): [0.0347, 0.0556, 0.0176, 0.0229],
    ("Beauty", "SASRec"): [0.0605, 0.0902, 0.0318, 0.0394],
    ("Beauty", "BERT4Rec"): [0.0347, 0.0599, 0.0170, 0.0233],
    ("Beauty", "HGN"): [0.0512, 0.0773, 0.0266, 0.0332],
    ("Beauty", "FDSA"): [0.0407, 0.0656, 0.0208, 0.0270],
    ("Beauty", "S3-Rec"): [0.0647, 0.0994, 0.0327, 0.0414],
    ("Beauty", "RecForest"): [0.0664, 0.0915, 0.0400, 0.0464],
    ("Beauty", "TIGER"): [0.0617, 0.0924, 0.0339, 0.0417],
    ("Beauty", "ColaRec"): [0.0524, 0.0807, 0.0263, 0.0335],
    ("Beauty", "EAGER"): [0.0836, 0.1124, 0.0525, 0.0599],
    ("Beauty", "UNGER"): [0.0939, 0.1289, 0.0559, 0.0646],
    ("Sports", "GRU4Rec"): [0.0204, 0.0333, 0.0110, 0.0142],
    ("Sports", "Caser"): [0.0194, 0.0314, 0.0097, 0.0126],
    ("Sports", "SASRec"): [0.0350, 0.0507, 0.0192, 0.0231],
    ("Sports", "BERT4Rec"): [0.0191, 0.0315, 0.0099, 0.0130],
    ("Sports", "HGN"): [0.0313, 0.0477, 0.0159, 0.0201],
    ("Sports", "FDSA"): [0.0288, 0.0463, 0.0156, 0.0200],
    ("Sports", "S3-Rec"): [0.0385, 0.0607, 0.0204, 0.0260],
    ("Sports", "RecForest"): [0.0247, 0.0375, 0.0133, 0.0164],
    ("Sports", "TIGER"): [0.0376, 0.0577, 0.0196, 0.0246],
    ("Sports", "ColaRec"): [0.0348, 0.0533, 0.0179, 0.0226],
    ("Sports", "EAGER"): [0.0441, 0.0659, 0.0236, 0.0291],
    ("Sports", "UNGER"): [0.0471, 0.0710, 0.0259, 0.0319],
    ("Toys", "GRU4Rec"): [0.0176, 0.0301, 0.0084, 0.0116],
    ("Toys", "Caser"): [0.0270, 0.0420, 0.0141, 0.0179],
    ("Toys", "SASRec"): [0.0675, 0.0941, 0.0374, 0.0441],
    ("Toys", "BERT4Rec"): [0.0203, 0.0358, 0.0099, 0.0138],
    ("Toys", "HGN"): [0.0497, 0.0716, 0.0277, 0.0332],
    ("Toys", "FDSA"): [0.0381, 0.0632, 0.0189, 0.0252],
    ("Toys", "S3-Rec"): [0.0700, 0.1065, 0.0376, 0.0468],
    ("Toys", "RecForest"): [0.0383, 0.0483, 0.0285, 0.0310],
    ("Toys", "TIGER"): [0.0578, 0.0838, 0.0321, 0.0386],
    ("Toys", "ColaRec"): [0.0474, 0.0704, 0.0242, 0.0300],
    ("Toys", "EAGER"): [0.0714, 0.1024, 0.0505, 0.0538],
    ("Toys", "UNGER"): [0.0822, 0.1154, 0.0489, 0.0573],
}, orient="index", columns=METRICS)
PAPER_TABLE3.index = pd.MultiIndex.from_tuples(PAPER_TABLE3.index, names=["dataset", "model"])
PAPER_TABLE3_CLASSICAL = ("GRU4Rec", "Caser", "SASRec", "BERT4Rec", "HGN", "FDSA", "S3-Rec")
PAPER_TABLE3_GENERATIVE = ("RecForest", "TIGER", "ColaRec", "EAGER")
PAPER_TABLE3_REIMPLEMENTED = ("TIGER", "ColaRec")  # starred (*) in the paper: run by its authors
# Table 5 (Beauty).
PAPER_TABLE5 = pd.DataFrame.from_dict({
    "semantic_only": [0.0791, 0.1077, 0.0462, 0.0535],
    "collaborative_only": [0.0744, 0.0997, 0.0469, 0.0532],
    "concat": [0.0759, 0.1071, 0.0452, 0.0530],
    "ours": [0.0939, 0.1289, 0.0559, 0.0646]}, orient="index", columns=METRICS)
# Table 6 (Beauty).
PAPER_TABLE6 = pd.DataFrame.from_dict({
    "none": [0.0759, 0.1071, 0.0452, 0.0530],
    "cka": [0.0827, 0.1122, 0.0509, 0.0583],
    "cka_ikd": [0.0939, 0.1289, 0.0559, 0.0646]}, orient="index", columns=METRICS)
# Table 4 (Beauty): proportional similarity (semantic, collaborative).
PAPER_TABLE4 = pd.DataFrame({"semantic": [0.9733, 0.5989], "collaborative": [0.0267, 0.4011]},
                            index=["concat", "ours"])
