"""The paper profile builds and runs end to end: its settings on smoke-sized data, its Llama-2-7b path
exercised by a tiny random Llama saved locally (docs/SCALE.md gives its cost on one GPU)."""
from __future__ import annotations

import json

import numpy as np
import torch

from ungerlib.infra import config, pipeline
from ungerlib.model import semantic


def test_the_paper_profile_runs_end_to_end_with_a_tiny_stand_in_llama(tmp_path, monkeypatch, capsys):
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    monkeypatch.setenv("UNGER_ARTEFACTS", str(tmp_path / "store"))
    llama = tmp_path / "tiny-llama"
    AutoTokenizer.from_pretrained(semantic.resolve_encoder("all-MiniLM-L6-v2")).save_pretrained(llama)
    torch.manual_seed(0)
    LlamaModel(LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)).save_pretrained(llama)
    # the paper's settings (K = 256, d 128, 1 + 4 layers, batch 256, beam 100), one epoch each, on 400 items:
    # more than K, so the codes have two levels
    assert pipeline.main(["--profile", "paper", "--dataset", "synthetic", "--set", f"semantic.encoder={llama}",
                          "data.n_users=150", "data.n_items=400", "stage1.epochs=1", "stage2.epochs=1"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cfg = config.profile("paper", "synthetic", data={"n_users": 150, "n_items": 400}, semantic={"encoder": str(llama)},
                         stage1={"epochs": 1}, stage2={"epochs": 1})
    assert (cfg.codes.K, cfg.stage2.dec_layers, cfg.eval.beam, cfg.semantic.pooling) == (256, 4, 100, "last")
    e_s = semantic.semantic_embeddings(cfg)  # the stand-in's last-token states, one per item
    assert e_s.shape == (400, 32) and np.allclose(np.linalg.norm(e_s, axis=1), 1, atol=1e-5)
    assert res["profile"] == "paper" and res["stage2_epochs"] == 1
    assert res["codes"]["K"] == 256 and res["codes"]["max_len"] == 2
    test = res["eval"]["test_all"]
    assert 0 <= test["ndcg@20"] <= test["recall@20"] <= 1
