"""One module per paper table or study, each a few functions that a notebook calls and that return
tables: the Stage II grid (``stage2_grid``), Table 3 and the references UNGER must beat (``table3``), the ablations of
Tables 5-6 and Figures 8-9 (``ablations``), the semantic-dominance analysis of Table 4 and Figure 3
(``dominance``), clusters and t-SNE (``clusters``), where the model wins and loses (``diagnostics``),
and paired tests over users (``significance``)."""
