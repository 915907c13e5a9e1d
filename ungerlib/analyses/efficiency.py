"""What a unified code saves at serving time (notebook 10: the paper's Figure 2 and Table 1), and our
trie-constrained beam against Hugging Face's ``generate``.

**Four kinds of code** (:data:`CODES`), each a Stage II model of :mod:`ungerlib.analyses.code_kinds`:

* ``semantic-only``: TIGER's code (RQ-VAE over E_S, 3 levels plus the collision level), codes only;
* ``dual``: EAGER's two codes, two decoders over one shared encoder, and its merge (the union of both
  streams' top k rescored by both streams, :meth:`ungerlib.baselines.dual.DualUNGER.recommend`), codes only;
* ``unified``: UNGER's code, the paper's model (grid row A, codes only);
* ``unified + item tables``: the same code with the profiles' decoder (row J: one embedding per trie
  node, tied with the output, and per history item).

**Figure 2** (:func:`time_decoders`): seconds per user of a top-k ranking (the paper: top 5, beam 100,
Beauty) for every kind of code, on the same users, one after another within each repeat (so a slow
spell of a shared machine hits all of them), the best of the repeats kept. **Table 1** (:func:`costs`):
parameters (shared ones counted once), bytes of the item -> code table (:func:`code_bytes`) and of the
item tables (parameters with one row per item or trie node), decoder steps per user (counted during a
search, :func:`count_steps`; the analytic value is the code length, summed over a dual code's streams),
and the decoding time of Figure 2 at the paper's beam.

**Against Hugging Face** (:func:`hf_grid`): a ``T5ForConditionalGeneration`` of our sizes
(:func:`t5_config`: d_model, d_ff, heads, 1 encoder and 4 decoder layers), the same code trie, searched
by ``generate(num_beams=...)`` with a trie callback (:class:`HFSearch`: attention implementation,
batch size, the callback as ``prefix_allowed_tokens_fn`` over a Python dict trie or as a tensor
``LogitsProcessor`` over our ``next_node`` array, with or without an end token), against our beam on
our model. :class:`T5Decoder` runs our beam on the T5's own weights, so the two searches can be
compared item for item (:func:`same_topk`). ``generate`` on a T5 with more decoder than encoder
layers needs a fresh ``EncoderDecoderCache`` (its default cache is sized by the encoder's layer count);
:func:`hf_generate` passes one.

**Where our time goes** (:func:`beam_profile`): torch's profiler over our beam, time per part of a
decoder step (encoder, the decoder's linear layers, attention, the children's scores, softmax, top-k,
cache reordering and bookkeeping).
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from ungerlib.infra import config as C
from ungerlib.model.codes import CodeTable
from ungerlib.model.data import PAD

CODES = ("semantic-only", "dual", "unified", "unified + item tables")
KIND_FORM = {"semantic-only": ("semantic", "codes only"), "dual": ("dual", "codes only"),
             "unified": ("unified", "codes only"), "unified + item tables": ("unified", "item tables")}
PAPER_RATIO = 2.8  # Figure 2: the unified code decodes 2.8x faster than two separate codes (Beauty)
PAPER_BEAM, PAPER_TOPK = 100, 5


class EfficiencyError(ValueError):
    """Bad input to a measurement (one line naming the problem)."""


@dataclass(frozen=True)
class Timing:
    """How decoding is timed: ``users`` users drawn with ``seed`` from the histories given, searched in
    batches of ``batch_size`` at every beam in ``beams`` for the top ``topk``; ``repeats`` rounds (every
    decoder once per round, in turn), the fastest round kept; one untimed warm-up batch of
    ``warmup_users`` first."""

    beams: tuple[int, ...] = (20, 50, 100)
    topk: int = PAPER_TOPK
    users: int = 512
    batch_size: int = 256
    repeats: int = 2
    warmup_users: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        bad = {k: v for k, v in (("topk", self.topk), ("users", self.users), ("batch_size", self.batch_size),
                                 ("repeats", self.repeats)) if v < 1}
        if bad or not self.beams or min(self.beams) < 1:
            raise EfficiencyError(f"Timing needs positive beams, topk, users, batch_size, repeats; got "
                                  f"{bad or {'beams': self.beams}}")
        if min(self.beams) < self.topk:
            raise EfficiencyError(f"a beam of {min(self.beams)} cannot return the top {self.topk}")


# ----------------------------------------------------------------------------- the decoders

@dataclass
class Decoder:
    """One kind of code ready to decode: ``model`` (an :class:`~ungerlib.model.stage2.UNGER` or a
    :class:`~ungerlib.baselines.dual.DualUNGER`) and the code table(s) it searches, by stream."""

    code: str
    model: Any
    tables: dict[str, CodeTable]
    cfg: C.RunConfig | None = None

    @property
    def dual(self) -> bool:
        return len(self.tables) > 1

    def streams(self) -> dict[str, Any]:
        """The UNGER model of each stream (one for a single code)."""
        return dict(self.model.streams) if self.dual else {"": self.model}

    def recommend(self, histories: np.ndarray, beam: int, topk: int, batch_size: int = 256) -> np.ndarray:
        """Top-``topk`` items [N, topk] of histories [N, L] (every item ranked; -1 pads)."""
        from ungerlib.model.beam import recommend

        if self.dual:
            return self.model.recommend(histories, beam, topk, batch_size)[0]
        (table,) = self.tables.values()
        return recommend(self.model, histories, table, beam=beam, topk=topk, batch_size=batch_size)[0]


def code_config(cfg: C.RunConfig, code: str) -> C.RunConfig:
    """The config of ``code``'s Stage II model (:func:`ungerlib.analyses.code_kinds.config`)."""
    from ungerlib.analyses import code_kinds

    if code not in KIND_FORM:
        raise C.ConfigError(f"unknown kind of code {code!r}; known: {CODES}")
    return code_kinds.config(cfg, *KIND_FORM[code])


def trained(cfg: C.RunConfig, codes: tuple[str, ...] = CODES) -> dict[str, Decoder]:
    """The trained model of each kind of code on ``cfg``'s data set (cached artefacts ``stage2`` and
    ``stage2_dual``, the runs notebook 11 reads; missing ones are trained)."""
    from ungerlib.baselines import dual
    from ungerlib.model import codes as codes_mod, stage2

    out = {}
    for code in codes:
        c = code_config(cfg, code)
        if code == "dual":
            model, _ = dual.run_dual(c, progress=False)
            out[code] = Decoder(code, model, dict(model.tables), c)
        else:
            model, _ = stage2.run_stage2(c, progress=False)
            out[code] = Decoder(code, model, {"": codes_mod.item_codes(c)}, c)
    return out


def users(histories: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows of ``histories`` [N, L] drawn without replacement with ``seed`` (all if N <= n)."""
    if len(histories) == 0:
        raise EfficiencyError("no histories to time")
    if n >= len(histories):
        return histories
    return histories[np.sort(np.random.default_rng(seed).choice(len(histories), n, replace=False))]


def _threads() -> int:
    return torch.get_num_threads()


def time_decoders(decoders: dict[str, Decoder], histories: np.ndarray, timing: Timing = Timing()) -> pd.DataFrame:
    """Figure 2's measurement: per (code, beam), milliseconds per user of a top-``timing.topk`` ranking
    of the same users (module docstring). Columns: ``ms per user`` (the fastest repeat), ``ms per user,
    every repeat``, ``users``, ``threads``, and ``x unified`` (the code's time over the unified code's
    at the same beam, where ``unified`` is timed)."""
    if not decoders:
        raise EfficiencyError("no decoders to time")
    hist = users(histories, timing.users, timing.seed)
    rows = []
    with torch.no_grad():
        for d in decoders.values():  # warm-up: first calls allocate and pick kernels
            d.recommend(hist[:timing.warmup_users], min(timing.beams), timing.topk, timing.batch_size)
        for beam in timing.beams:
            runs: dict[str, list[float]] = {c: [] for c in decoders}
            for _ in range(timing.repeats):
                for code, d in decoders.items():
                    t0 = time.perf_counter()
                    d.recommend(hist, beam, timing.topk, timing.batch_size)
                    runs[code].append(1000 * (time.perf_counter() - t0) / len(hist))
            for code, r in runs.items():
                rows.append({"code": code, "beam": beam, "ms per user": min(r),
                             "ms per user, every repeat": " ".join(f"{x:.2f}" for x in r),
                             "users": len(hist), "threads": _threads()})
    out = pd.DataFrame(rows).set_index(["code", "beam"])
    if "unified" in decoders:
        base = out.xs("unified", level="code")["ms per user"]
        out["x unified"] = [v / base[b] for (c, b), v in out["ms per user"].items()]
    return out


def figure2(times: pd.DataFrame, paper_ratio: float = PAPER_RATIO) -> Any:
    """Figure 2 as bars: milliseconds per user per kind of code, one group per beam, each bar labelled
    with its time over the unified code's; the paper's 2.8x (dual over unified) in the title."""
    import matplotlib.pyplot as plt

    codes = list(dict.fromkeys(times.index.get_level_values("code")))
    beams = list(dict.fromkeys(times.index.get_level_values("beam")))
    fig, ax = plt.subplots(figsize=(1.9 + 1.6 * len(beams), 3.2), constrained_layout=True)
    w = 0.8 / len(codes)
    for i, code in enumerate(codes):
        vals = [times.loc[(code, b), "ms per user"] for b in beams]
        bars = ax.bar(np.arange(len(beams)) + (i - (len(codes) - 1) / 2) * w, vals, w, label=code)
        if "x unified" in times:
            ax.bar_label(bars, [f"{times.loc[(code, b), 'x unified']:.1f}x" for b in beams], fontsize=7)
    ax.set_xticks(np.arange(len(beams)), [f"beam {b}" for b in beams])
    ax.set_ylabel("ms per user (top 5)")
    ax.set_title(f"Decoding time per user; paper (Beauty, beam 100): dual = {paper_ratio}x unified", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------- Table 1

def token_bytes(K: int) -> int:
    """Bytes of one code token: the smallest of 1, 2, 4 that holds K values."""
    return next(b for b in (1, 2, 4) if K <= 2 ** (8 * b))


def code_bytes(table: CodeTable) -> int:
    """Bytes to store the item -> code table: every item's tokens in one flat array of
    :func:`token_bytes`, plus one byte per item for its length where code lengths differ."""
    return int(table.lengths.sum()) * token_bytes(table.K) + (len(table) if len(set(table.lengths.tolist())) > 1 else 0)


ITEM_TABLES = ("node_emb", "node_bias", "item_emb")  # UNGER's parameters with a row per trie node or item


def item_table_bytes(model: Any) -> int:
    """Bytes of the parameters with one row per item or trie node (per-node decoder tokens, per-item
    history embeddings), shared ones once."""
    seen, n = set(), 0
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in ITEM_TABLES and id(p) not in seen:
            seen.add(id(p))
            n += p.numel() * p.element_size()
    return n


def parameters(model: Any) -> int:
    """Parameters of ``model``, shared ones (the dual code's encoder) counted once."""
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def count_steps(models: dict[str, Any]) -> Iterator[dict[str, int]]:
    """Count the decoder calls (``decode_start`` + ``decode_step``) each model in ``models`` makes while
    the block runs: ``{name: calls}``, filled in place."""
    counts = {k: 0 for k in models}
    saved = []
    for k, m in models.items():
        for meth in ("decode_start", "decode_step"):
            f = getattr(m, meth)

            def wrapped(*a, _f=f, _k=k, **kw):
                counts[_k] += 1
                return _f(*a, **kw)

            saved.append((m, meth))
            setattr(m, meth, wrapped)
    try:
        yield counts
    finally:
        for m, meth in saved:
            delattr(m, meth)  # the instance attribute goes, the class's method shows again


def costs(decoders: dict[str, Decoder], histories: np.ndarray, times: pd.DataFrame | None = None,
          beam: int = PAPER_BEAM, topk: int = PAPER_TOPK) -> pd.DataFrame:
    """Table 1, measured: per kind of code its parameters, bytes of the codes and item tables, the code
    length, decoder steps per user (analytic: the code length, summed over streams; counted: decoder
    calls in one search of ``histories`` as one batch, summed over streams), and ``times``' ms per user
    at ``beam`` (or at the largest beam timed)."""
    rows = []
    for code, d in decoders.items():
        streams = d.streams()
        with count_steps(streams) as calls, torch.no_grad():
            d.recommend(histories, beam, topk, batch_size=len(histories))
        row = {"code": code, "streams": len(streams), "parameters": parameters(d.model),
               "code bytes": sum(code_bytes(t) for t in d.tables.values()),
               "item table bytes": item_table_bytes(d.model),
               "code length (mean, per stream)": " + ".join(f"{t.lengths.mean():.2f}" for t in d.tables.values()),
               "decoder steps per user, analytic": sum(t.max_len for t in d.tables.values()),
               "decoder steps per user, counted": sum(calls.values()),
               "merge: rescoring passes": len(streams) if d.dual else 0}
        if times is not None and code in times.index.get_level_values("code"):
            t = times.xs(code, level="code")
            b = beam if beam in t.index else int(t.index.max())
            row[f"decoding time per user, beam {b}, top {topk} (ms)"] = float(t.loc[b, "ms per user"])
        rows.append(row)
    out = pd.DataFrame(rows).set_index("code")
    out["bytes, codes + item tables"] = out["code bytes"] + out["item table bytes"]
    return out


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 (analytic costs, n: decoding one code, m: storing one)."""
    return pd.DataFrame({"TIGER": ["O(n)", "O(m)", "Semantic Only"], "EAGER": ["O(2n)", "O(2m)", "Semantic + Collaborative"],
                         "UNGER (Ours)": ["O(n)", "O(m)", "Semantic + Collaborative"]},
                        index=pd.Index(["Computation Cost", "Storage Cost", "Used Modality"], name="paper"))


# ----------------------------------------------------------------------------- Hugging Face

def level_tokens(table: CodeTable) -> int:
    """Vocabulary of a TIGER-style T5 over ``table``: pad (0, also the decoder start), end (1), then one
    token per (level, code token): ``2 + level * K + token``."""
    return 2 + table.max_len * table.K


def t5_config(s2: C.Stage2Config, table: CodeTable, attn: str = "sdpa") -> Any:
    """A ``T5Config`` of our Stage II sizes (d_model, d_ff, heads, encoder and decoder layers, GELU
    feed-forward, no dropout) over :func:`level_tokens` of ``table``."""
    from transformers import T5Config

    cfg = T5Config(vocab_size=level_tokens(table), d_model=s2.d_model, d_ff=s2.d_ff, num_heads=s2.n_heads,
                   d_kv=s2.d_model // s2.n_heads, num_layers=s2.enc_layers, num_decoder_layers=s2.dec_layers,
                   feed_forward_proj="gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0, tie_word_embeddings=True)
    cfg._attn_implementation = attn
    return cfg


def t5_model(s2: C.Stage2Config, table: CodeTable, seed: int = 0, attn: str = "sdpa",
             device: torch.device | str = "cpu") -> Any:
    """A randomly initialised ``T5ForConditionalGeneration`` of :func:`t5_config` (eval mode, seeded)."""
    from transformers import T5ForConditionalGeneration

    torch.manual_seed(seed)
    return T5ForConditionalGeneration(t5_config(s2, table, attn)).eval().to(device)


def untrained_pair(cfg: C.RunConfig, table: CodeTable, d_int: int, max_hist: int,
                   device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """What the comparison with ``generate`` times: our Stage II model (``cfg``'s, IKD width ``d_int``) and
    a T5 of its sizes (:func:`t5_model`), both over ``table``, untrained and seeded with ``cfg.seed``."""
    from ungerlib.model.stage2 import UNGER

    torch.manual_seed(cfg.seed)
    ours = UNGER(table, d_int, cfg.stage2, max_hist).eval().to(device)
    return ours, t5_model(cfg.stage2, table, seed=cfg.seed, device=device)


def t5_inputs(model: Any, table: CodeTable, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One encoder token per history item, as ours reads it: the sum of the T5's embeddings of the
    item's level tokens. hist [B, L] (PAD = -1) -> inputs_embeds [B, L, d], attention_mask [B, L]."""
    codes = torch.from_numpy(table.padded()).to(hist.device)[hist.clamp(min=0)]  # [B, L, Lc]
    lvl = torch.arange(table.max_len, device=hist.device) * table.K
    tok = torch.where(codes >= 0, codes + 2 + lvl, 0)
    emb = (model.shared(tok) * (codes >= 0)[..., None]).sum(-2)
    return emb, (hist >= 0).long()


class TrieTokens:
    """The code trie in the T5's vocabulary: for each decoded prefix (a row of T5 token ids after the
    decoder start), the tokens allowed next. ``end``: after a complete code only the end token (1) is
    allowed; without it, only pad (0) until the longest code's length (codes of one length need neither)."""

    def __init__(self, table: CodeTable, end: bool = True):
        self.table, self.end, self.K = table, end, table.K
        self.next_node = torch.from_numpy(table.next_node.astype(np.int64))
        self.node_item = torch.from_numpy(table.node_item)
        self.depth = torch.from_numpy(table.node_depth)
        children: dict[int, list[int]] = {}
        for node in range(len(table.node_item)):
            t = np.flatnonzero(table.next_node[node] >= 0)
            children[node] = (2 + int(table.node_depth[node]) * table.K + t).tolist()
        self.children = children
        self.done = [1] if end else [0]
        # per-node tensor rows of allowed T5 tokens: [n_nodes, V] bool
        V = level_tokens(table)
        allowed = torch.zeros(len(table.node_item), V, dtype=torch.bool)
        for node, toks in children.items():
            allowed[node, toks if toks else self.done] = True
        self.allowed = allowed

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``next_node`` and ``allowed`` on ``device`` (copied once per device)."""
        if not hasattr(self, "_on") or self._on[0] != device:
            self._on = (device, self.next_node.to(device), self.allowed.to(device))
        return self._on[1], self._on[2]

    def node_of(self, prefix: list[int]) -> int:
        """The trie node a prefix of T5 tokens (without the decoder start) leads to; -1: the code ended."""
        node = 0
        for lvl, t in enumerate(prefix):
            if t in (0, 1):
                return -1
            node = int(self.table.next_node[node, t - 2 - lvl * self.K])
        return node

    def allowed_list(self, batch_id: int, ids: torch.Tensor) -> list[int]:
        """``prefix_allowed_tokens_fn``: Python lists from a dict trie, one prefix walk per call."""
        node = self.node_of(ids[1:].tolist())
        return self.done if node < 0 else (self.children[node] or self.done)

    def processor(self) -> Any:
        """A ``LogitsProcessor`` that masks every row with one tensor gather (the trie walked once per
        row per step from the last token)."""
        from transformers import LogitsProcessor

        trie = self

        class TrieMask(LogitsProcessor):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                next_node, allowed = trie.on(input_ids.device)
                node = torch.zeros(len(input_ids), dtype=torch.long, device=input_ids.device)
                ended = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
                for lvl in range(1, input_ids.shape[1]):
                    t = input_ids[:, lvl]
                    ended |= t < 2
                    tok = (t - 2 - (lvl - 1) * trie.K).clamp(0, trie.K - 1)
                    node = torch.where(ended, node, next_node[node, tok].clamp(min=0))
                done = torch.zeros_like(allowed[:1])
                done[:, trie.done] = True
                ok = torch.where(ended[:, None], done, allowed[node])
                return scores.masked_fill(~ok, -torch.inf)

        return TrieMask()

    def items(self, sequences: torch.Tensor) -> np.ndarray:
        """Generated rows [R, T] (decoder start first) -> item ids [R] (-1: not a complete code)."""
        out = []
        for row in sequences.tolist():
            node = 0
            for lvl, t in enumerate(row[1:]):
                if t in (0, 1):
                    break
                node = int(self.table.next_node[node, t - 2 - lvl * self.K]) if node >= 0 else -1
            out.append(int(self.table.node_item[node]) if node >= 0 else -1)
        return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class HFSearch:
    """One way to call ``generate``: ``attn`` (the T5's attention implementation: eager, sdpa),
    ``callback`` (``list``: ``prefix_allowed_tokens_fn`` over a dict trie; ``tensor``: a
    ``LogitsProcessor`` gathering from the trie array), ``end`` (an end token after each code, or pad
    tokens up to the longest code and a fixed number of steps) and ``batch_size``."""

    attn: str = "sdpa"
    callback: str = "list"
    end: bool = True
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.attn not in ("eager", "sdpa") or self.callback not in ("list", "tensor") or self.batch_size < 1:
            raise EfficiencyError(f"HFSearch: attn eager|sdpa, callback list|tensor, batch_size >= 1; got {self}")

    @property
    def name(self) -> str:
        return f"{self.attn}, {self.callback} callback, {'end token' if self.end else 'no end token'}, batch {self.batch_size}"


USUAL = HFSearch("eager", "list", True, 256)  # a TIGER reproduction's call: eager T5, list callback, end token


def hf_generate(model: Any, table: CodeTable, hist: torch.Tensor, beam: int, topk: int, search: HFSearch = USUAL,
                trie: TrieTokens | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``topk`` items [B, topk] and their log-probabilities by ``model.generate`` (beam ``beam``) over
    ``table``'s trie: log-softmax renormalised over the allowed tokens (as our beam's softmax over a
    prefix's children), no length penalty, a fresh ``EncoderDecoderCache``."""
    from transformers import DynamicCache, EncoderDecoderCache, LogitsProcessorList

    if topk > beam:
        raise EfficiencyError(f"top {topk} needs a beam of at least {topk}, got {beam}")
    trie = trie or TrieTokens(table, search.end)
    if trie.end != search.end:
        raise EfficiencyError(f"the trie was built with end={trie.end}, the search asks end={search.end}")
    model.config._attn_implementation = search.attn
    for m in model.modules():
        if hasattr(m, "config"):
            m.config._attn_implementation = search.attn
    items, scores = [], []
    for s in range(0, len(hist), search.batch_size):
        h = hist[s:s + search.batch_size]
        emb, mask = t5_inputs(model, table, h)
        kw: dict[str, Any] = ({"prefix_allowed_tokens_fn": trie.allowed_list} if search.callback == "list"
                              else {"logits_processor": LogitsProcessorList([trie.processor()])})
        out = model.generate(inputs_embeds=emb, attention_mask=mask, num_beams=beam, num_return_sequences=topk,
                             max_new_tokens=table.max_len + int(search.end), min_new_tokens=0,
                             do_sample=False, early_stopping=True, length_penalty=0.0, renormalize_logits=True,
                             eos_token_id=1 if search.end else None, pad_token_id=0,
                             cache=EncoderDecoderCache(DynamicCache(), DynamicCache()),
                             output_scores=True, return_dict_in_generate=True, **kw)
        items.append(trie.items(out.sequences).reshape(len(h), topk))
        scores.append(out.sequences_scores.double().cpu().numpy().reshape(len(h), topk))
    return np.concatenate(items), np.concatenate(scores)


class T5Decoder(torch.nn.Module):
    """Our beam on a T5's own weights: the incremental decoder API of
    :class:`~ungerlib.model.stage2.UNGER` (``decode_start``, ``decode_step``, ``next_node``) over
    ``model`` with its key/value cache, scores over the level's K tokens (missing children -inf)."""

    def __init__(self, model: Any, table: CodeTable):
        super().__init__()
        self.t5, self.table, self.K = model, table, table.K
        self.register_buffer("next_node", torch.from_numpy(table.next_node.astype(np.int64)))

    def _logits(self, out: Any, node: torch.Tensor, level: int) -> torch.Tensor:
        full = out.logits[:, -1].float()
        lv = full[:, 2 + level * self.K: 2 + (level + 1) * self.K]
        return lv.masked_fill(self.next_node[node] < 0, -torch.inf)

    def decode_start(self, hist: torch.Tensor) -> tuple[Any, torch.Tensor]:
        from transformers import DynamicCache, EncoderDecoderCache

        from ungerlib.model.stage2 import DecodeState

        emb, mask = t5_inputs(self.t5, self.table, hist)
        enc = self.t5.encoder(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        start = torch.zeros(len(hist), 1, dtype=torch.long, device=hist.device)
        out = self.t5(encoder_outputs=(enc,), attention_mask=mask, decoder_input_ids=start, cache=cache,
                      use_cache=True)
        root = torch.zeros(len(hist), dtype=torch.long, device=hist.device)
        st = DecodeState(enc, mask, [out.past_key_values], root, 0)
        return st, self._logits(out, root, 0)

    def decode_step(self, st: Any, parent: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        node = self.next_node[st.node[parent], tok].clamp(min=0)
        cache = st.caches[0]
        B, R = st.mem.shape[0], len(parent)
        if R != cache.self_attention_cache.layers[0].keys.shape[0] or R != B:
            cache.reorder_cache(parent)
        W = R // B
        enc, mask = st.mem.repeat_interleave(W, 0), st.mask.repeat_interleave(W, 0)
        if cache.cross_attention_cache.layers[0].keys.shape[0] != R:  # cross keys: one copy per beam
            cache.cross_attention_cache.reorder_cache(torch.arange(B, device=parent.device).repeat_interleave(W))
        out = self.t5(encoder_outputs=(enc,), attention_mask=mask,
                      decoder_input_ids=(2 + st.level * self.K + tok)[:, None], cache=cache, use_cache=True)
        st.caches[0], st.node, st.level = out.past_key_values, node, st.level + 1
        return self._logits(out, node, st.level)


def ours_on_t5(model: Any, table: CodeTable, hist: torch.Tensor, beam: int, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """Our beam (:func:`ungerlib.model.beam.beam_search`) on the T5's weights: top ``topk`` items and
    log-probabilities per user, [B, topk] (-1 / -inf pads)."""
    from ungerlib.model.beam import beam_search

    with torch.no_grad():
        its, scs = beam_search(T5Decoder(model, table), hist, table, beam)
    items = np.full((len(hist), topk), PAD, np.int64)
    scores = np.full((len(hist), topk), -np.inf)
    for u, (i, s) in enumerate(zip(its, scs)):
        order = np.argsort(-s, kind="stable")[:topk]
        items[u, :len(order)], scores[u, :len(order)] = i[order], s[order]
    return items, scores


def valid_distinct(items: np.ndarray, n_items: int) -> bool:
    """Every row of ``items`` [N, k] holds only real item ids (0 <= id < n_items), none twice."""
    return bool(((items >= 0) & (items < n_items)).all()) and all(len(set(r)) == len(r) for r in items.tolist())


def same_topk(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], atol: float = 1e-4) -> dict[str, float]:
    """How far two top-k lists (items, scores) [N, k] agree: share of users with the same items in the
    same order, with the same set of items, and the largest score difference of an item both rank."""
    (ia, sa), (ib, sb) = a, b
    same_order = (ia == ib).all(1)
    same_set = np.array([set(x) == set(y) for x, y in zip(ia.tolist(), ib.tolist())])
    gap = max((abs(s1 - dict(zip(y, sy))[i]) for x, sx, y, sy in zip(ia.tolist(), sa, ib.tolist(), sb)
               for i, s1 in zip(x, sx) if i in set(y)), default=0.0)
    return {"users": len(ia), "same items, same order": float(same_order.mean()),
            "same set of items": float(same_set.mean()), "max |score difference|": float(gap),
            "scores equal (atol)": bool(gap <= atol)}


class PeakRSS:
    """Peak resident memory growth of this process while the block runs, in MiB, sampled every
    ``every`` seconds from /proc (CPU), or ``torch.cuda.max_memory_allocated`` on a GPU."""

    def __init__(self, every: float = 0.002):
        self.every, self.peak_mib = every, 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakRSS":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base, self._peak, self._stop = self._rss(), 0, threading.Event()

        def watch() -> None:
            while not self._stop.is_set():
                self._peak = max(self._peak, self._rss())
                time.sleep(self.every)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if torch.cuda.is_available():
            self.peak_mib = (torch.cuda.max_memory_allocated() - self._base) / 2 ** 20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mib = (self._peak - self._base) / 2 ** 20


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


BATCH_SIZES = (32, 128, 256)  # users per call, for ours and for every generate configuration alike


def hf_grid(ours: Any | dict[str, Any], ours_table: CodeTable, t5: Any, histories: np.ndarray,
            beams: tuple[int, ...] = (20, 50), topk: int = 20, searches: tuple[HFSearch, ...] | None = None,
            users_n: int = 256, repeats: int = 2, seed: int = 0) -> pd.DataFrame:
    """Our beam on our model(s) ``ours`` (one model, or ``{name: model}``) against every ``generate``
    configuration in ``searches`` (default :func:`default_searches`) on ``t5``, same users, same trie,
    one after another per beam; ours runs at every batch size the searches use, so both sides get the
    same choice. Columns: ``model`` (our model's name, or ``T5``), ms per user (best of ``repeats``),
    peak memory growth (MiB, a separate untimed run), whether every list holds only valid, distinct
    items, and each time over the fastest run of our first model. Rows ``(beam, method)``; method
    ``ours (<name>), batch N`` or the search's name."""
    from ungerlib.model.beam import recommend

    models = ours if isinstance(ours, dict) else {"ours": ours}
    searches = searches or default_searches()
    batch_sizes = sorted({s.batch_size for s in searches})
    hist_np = users(histories, users_n, seed)
    hist = torch.from_numpy(hist_np).to(next(t5.parameters()).device)
    tries = {end: TrieTokens(ours_table, end) for end in {s.end for s in searches}}
    rows = []
    with torch.no_grad():
        for m in models.values():  # warm-up
            recommend(m, hist_np[:8], ours_table, beam=min(beams), topk=topk)
        hf_generate(t5, ours_table, hist[:4], min(beams), topk, searches[0], tries[searches[0].end])
        for beam in beams:
            calls = {f"ours ({name}), batch {bs}": (name, lambda m=m, bs=bs: recommend(
                m, hist_np, ours_table, beam=beam, topk=topk, batch_size=bs)[0])
                for name, m in models.items() for bs in batch_sizes}
            for s in searches:
                calls[s.name] = ("T5", lambda s=s: hf_generate(t5, ours_table, hist, beam, topk, s, tries[s.end])[0])
            for method, (model, fn) in calls.items():
                secs, items = _timed(fn, repeats)
                with PeakRSS() as mem:
                    fn()
                rows.append({"beam": beam, "method": method, "model": model, "ms per user": 1000 * secs / len(hist),
                             "peak memory growth (MiB)": mem.peak_mib,
                             "valid, distinct items": valid_distinct(items, len(ours_table)),
                             "users": len(hist), "threads": _threads()})
    out = pd.DataFrame(rows).set_index(["beam", "method"])
    fastest = out["ms per user"][out["model"] == next(iter(models))].groupby(level="beam").min()
    out["x ours"] = [v / fastest[b] for (b, _), v in out["ms per user"].items()]
    return out


def default_searches(batch_sizes: tuple[int, ...] = BATCH_SIZES) -> tuple[HFSearch, ...]:
    """The usual TIGER-style call and the variations worth trying: both attention implementations, both
    callbacks, with and without an end token, at ``batch_sizes``."""
    out = [USUAL]
    for attn in ("eager", "sdpa"):
        for cb in ("list", "tensor"):
            for end in (True, False):
                for bs in batch_sizes:
                    s = HFSearch(attn, cb, end, bs)
                    if s not in out:
                        out.append(s)
    return tuple(out)


def hf_summary(grid: pd.DataFrame) -> pd.DataFrame:
    """Per beam and each of our models (:func:`hf_grid`): its fastest batch size, Hugging Face's usual
    call and its fastest configuration, with the ratios. Rows ``(beam, ours)``."""
    rows = []
    for beam, g in grid.groupby(level="beam"):
        g = g.droplevel("beam")
        hf = g[g["model"] == "T5"]
        best = hf["ms per user"].idxmin()
        usual = hf.loc[USUAL.name, "ms per user"] if USUAL.name in hf.index else np.nan
        for model, ours in g[g["model"] != "T5"].groupby("model", sort=False):
            me = ours["ms per user"].idxmin()
            t = ours.loc[me, "ms per user"]
            rows.append({"beam": beam, "ours": model, "ours (ms per user)": t, "ours configuration": me.rsplit(", ", 1)[-1],
                         "HF usual (ms per user)": usual, "HF best (ms per user)": hf.loc[best, "ms per user"],
                         "HF best configuration": best, "HF usual / ours": usual / t,
                         "HF best / ours": hf.loc[best, "ms per user"] / t,
                         "ours peak memory (MiB)": ours.loc[me, "peak memory growth (MiB)"],
                         "HF best peak memory (MiB)": hf.loc[best, "peak memory growth (MiB)"]})
    return pd.DataFrame(rows).set_index(["beam", "ours"])


# ----------------------------------------------------------------------------- where our time goes

PARTS = ("encoder", "decoder linear layers", "attention and norms", "children's scores", "softmax", "top-k",
         "cache reorder and bookkeeping")


def beam_profile(model: Any, table: CodeTable, histories: np.ndarray, beam: int, batch_size: int = 256) -> pd.Series:
    """Milliseconds per user of each part of our beam (:data:`PARTS`) on ``histories`` [N, L], from
    torch's profiler (which adds overhead: compare shares, not totals, with :func:`time_decoders`).
    Only for :class:`~ungerlib.model.stage2.UNGER` models with their ``decoder`` layers."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from ungerlib.model.beam import recommend

    patched: list[tuple[Any, str]] = []

    def wrap(obj: Any, meth: str, label: str) -> None:
        f = getattr(obj, meth)

        def g(*a: Any, **kw: Any) -> Any:
            with record_function(label):
                return f(*a, **kw)

        setattr(obj, meth, g)
        patched.append((obj, meth))

    wrap(model, "encode", "p.encoder")
    wrap(model, "decode", "p.decoder")
    wrap(model, "logits", "p.children")
    wrap(model, "decode_step", "p.step")
    for layer in model.decoder:
        for name in ("qkv", "proj", "q_x", "kv_x", "proj_x", "ff"):
            wrap(getattr(layer, name), "forward", "p.linear")
    try:
        with torch.no_grad():
            recommend(model, histories[:8], table, beam=beam, topk=min(beam, 5))
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                recommend(model, histories, table, beam=beam, topk=min(beam, 5), batch_size=batch_size)
                wall = time.perf_counter() - t0
    finally:
        for obj, meth in patched:
            delattr(obj, meth)
    tot = {e.key: e.cpu_time_total / 1000 for e in prof.key_averages()}  # ms, inclusive
    n = len(histories)
    enc = tot.get("p.encoder", 0)
    dec, lin, kids, step = tot.get("p.decoder", 0), tot.get("p.linear", 0), tot.get("p.children", 0), tot.get("p.step", 0)
    soft = tot.get("aten::log_softmax", 0)
    topk = tot.get("aten::topk", 0)
    wall_ms = 1000 * wall
    parts = {"encoder": enc, "decoder linear layers": lin, "attention and norms": dec - lin, "children's scores": kids,
             "softmax": soft, "top-k": topk}
    parts["cache reorder and bookkeeping"] = wall_ms - sum(parts.values())
    s = pd.Series({k: v / n for k, v in parts.items()}, name=f"ms per user, beam {beam}")
    s.attrs["step_ms"] = step / n
    return s
