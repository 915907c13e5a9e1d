import numpy as np
import pytest

from ungerlib.infra import config
from ungerlib.model import data, semantic
from ungerlib.infra.config import ConfigError
from ungerlib.model.data import DataError

TEMPLATE = config.SemanticConfig().template


def _ds(items):
    return data.Dataset("t", [np.array([0, 1, 2])], items)


def test_template_uses_the_fields_an_item_has():
    ds = _ds([{"title": "Red &amp; Blue\tpolish", "categories": [["Beauty", "Nails"]], "brand": None},
              {"title": None, "brand": "Tipton", "categories": [["Sports", "Guns"]], "keywords": "gun picks"},
              {"title": "", "categories": [], "brand": "", "keywords": None}])
    with pytest.raises(DataError, match=r"1 item\(s\) of t have no text.*first ids: \[2\]"):
        semantic.item_texts(ds, TEMPLATE)
    texts, used = semantic.item_texts(ds, TEMPLATE, allow_missing=True)
    assert texts[0] == "Red & Blue polish. Category: Beauty > Nails"
    assert texts[1] == "Brand: Tipton. Category: Sports > Guns. Keywords: gun picks"
    assert texts[2] == ""
    assert used == {"title": 1, "brand": 1, "categories": 2, "keywords": 1}
    with pytest.raises(ConfigError, match="unknown field"):
        semantic.item_texts(ds, "{name}", allow_missing=True)


def test_minilm_offline_mean_pooling_is_sensible():
    emb = semantic.encode(["red nail polish", "pink nail varnish", "carbon fishing rod"], "all-MiniLM-L6-v2",
                          progress=False)
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_bundled_minilm_matches_its_own_reference_pooling():
    """Our batching/sorting/padding must not change an item's vector."""
    texts = ["a", "a much longer text about shampoo and conditioner for dry hair", "lipstick"]
    batched = semantic.encode(texts, "all-MiniLM-L6-v2", batch_size=2, progress=False)
    single = np.concatenate([semantic.encode([t], "all-MiniLM-L6-v2", progress=False) for t in texts])
    assert np.allclose(batched, single, atol=1e-5)


def test_unavailable_encoder_is_a_clear_offline_error():
    with pytest.raises(ConfigError, match="cannot load encoder"):
        semantic.encode(["x"], "/nonexistent/model-folder", progress=False)


def test_semantic_embeddings_are_cached_and_recover_topics(smoke):
    e1 = semantic.semantic_embeddings(smoke)
    art = semantic.semantic_artefact(smoke)
    assert (art.npy("embeddings") == e1).all() and art.provenance["fields_used"]["title"] == smoke.data.n_items
    ds = data.load_dataset(smoke.data)
    topic = np.array([it["topic"] for it in ds.items])
    sim = e1 @ e1.T
    same = topic[:, None] == topic[None, :]
    np.fill_diagonal(same, False)
    off = ~np.eye(len(topic), dtype=bool) & ~same
    assert sim[same].mean() > sim[off].mean() + 0.2  # planted semantic signal visible in E_S


def test_decoder_lm_uses_last_token_pooling(tmp_path):
    """The paper's Llama-2 path, on a tiny random GPT-2 saved locally: 'auto' picks the last real token."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    tok = AutoTokenizer.from_pretrained(semantic.resolve_encoder("all-MiniLM-L6-v2"))
    tok.save_pretrained(tmp_path)
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(vocab_size=tok.vocab_size, n_layer=1, n_embd=32, n_head=2, n_positions=64)).eval()
    model.save_pretrained(tmp_path)
    texts = ["short", "a longer text with several more tokens in it"]
    got = semantic.encode(texts, str(tmp_path), batch_size=2, progress=False)
    for text, row in zip(texts, got):
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            last = model(**ids).last_hidden_state[0, -1]
        assert np.allclose(row, torch.nn.functional.normalize(last, dim=0).numpy(), atol=1e-5)
