"""Every rerun baseline of Table 3 behind one protocol (``protocol``: our splits, our metrics, our cache):
Cornac's SASRec, BERT4Rec and GRU4Rec (``cornac``), TIGER (``tiger``), LightGCN and AlphaRec (``graph``),
the DiscRec-style Stage II variant (``discrec``), and the simple references, popularity and the
last-item kNN (``references``)."""
