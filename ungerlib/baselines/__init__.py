"""Every rerun baseline of Table 3 behind one protocol (``protocol``: our splits, our metrics, our cache):
SASRec and HSTU (``sequential``), Cornac's BERT4Rec and GRU4Rec (``cornac``), TIGER (``tiger``), LightGCN,
NGCF and AlphaRec (``graph``), the DiscRec-style Stage II variant (``discrec``), the EAGER-style dual code
(``dual``), and the simple references, popularity and the last-item kNN (``references``)."""
