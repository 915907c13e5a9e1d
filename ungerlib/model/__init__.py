"""The paper's model (UNGER, paper 3.3-3.5 and 4.1), one module per step of the data flow:

``data`` (Amazon 2014, leave-one-out) -> ``semantic`` (frozen text embeddings E_S) -> ``stage1`` (DIN,
MAL, CKA; Eq. 2-5) -> ``codes`` (hierarchical k-means unicodes) -> ``stage2`` (encoder-decoder with
IKD; Eq. 6-8) -> ``beam`` (trie-constrained beam search) -> ``rankings`` and ``metrics`` (Recall and
NDCG at 10 and 20). ``train`` holds the one training loop (``fit``) both stages use. ``neighbours`` is
a decoding variant beyond the paper (the Stage I neighbours term), named as such wherever it is shown.
"""
