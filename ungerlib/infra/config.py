"""Dataclass configs and the three run profiles (paper section 4.1).

A :class:`RunConfig` holds one sub-config per pipeline stage. Each stage's artefact is keyed by its
own section *and every section upstream of it* (:func:`ungerlib.artefacts.key`), so a changed setting
never reuses a stale result while an unrelated change (say, the beam width) does not retrain Stage I.

Profiles:

``smoke``  synthetic data, tiny models, about half a minute of CPU for the whole chain; what CI runs.
``cpu``    real Amazon data, sized to finish on 2 CPU cores (the default).
``paper``  the paper's settings (hidden 128, 1+4 layers, K=256, batch 256); meant for a GPU.

Every setting is checked when its config is built (:func:`check_setting`, from ``__post_init__``):
its type against the dataclass hint (``int``, ``float``, ``bool``, ``str``, ``Literal`` choices, tuples),
its range against :data:`RANGES`, and :func:`from_dict` rejects unknown keys by name, so a bad
value fails before any work starts, with a :class:`ConfigError` naming the setting.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

PROFILES = ("smoke", "cpu", "paper")
DATASETS = ("Beauty", "Sports", "Toys")


class ConfigError(ValueError):
    """A setting is unknown, of the wrong type or out of range."""


class _Checked:
    """Base of the config dataclasses: every setting is checked (and ints given for floats become
    floats, lists given for tuples become tuples) when a config is built, however it is built."""

    def __post_init__(self) -> None:
        _check_fields(self)
        _validate(self)


@dataclass
class DataConfig(_Checked):
    dataset: str = "Beauty"  # Beauty | Sports | Toys | synthetic
    root: str | None = None  # folder holding <dataset>/; None: $UNGER_DATA, else the bundled copy
    max_len: int = 20  # history cap (paper 4.1)
    # synthetic data set (smoke profile and tests), see ungerlib.model.data.make_synthetic
    n_users: int = 600
    n_items: int = 240
    n_topics: int = 8
    seq_len: tuple[int, int] = (6, 14)
    seed: int = 0


@dataclass
class SemanticConfig(_Checked):
    encoder: str = "all-MiniLM-L6-v2"  # HF id or local path; this name resolves to the PyPI-shipped copy
    template: str = "{title}. Brand: {brand}. Category: {categories}. Keywords: {keywords}"
    pooling: Literal["auto", "mean", "last", "cls"] = "auto"  # auto: mean for encoders, last for decoder LMs
    max_length: int = 128
    batch_size: int = 64
    fp16: bool = True  # only on CUDA
    allow_missing_text: bool = False  # an item with no text is an error unless this is set


@dataclass
class Stage1Config(_Checked):
    dim: int = 128  # collaborative embedding size (paper: 128)
    variant: Literal["ours", "collab", "semantic", "concat"] = "ours"  # Table 5 rows
    alpha: float = 1.0  # weight of L_align (Eq. 5); 0 = DIN alone
    tau: float = 0.07  # InfoNCE temperature (Eq. 3)
    sim: Literal["cosine", "dot"] = "cosine"
    norm: Literal["adaln", "layernorm"] = "adaln"  # MAL normalisation (Eq. 2)
    # Which vector is quantised (ungerlib.model.stage1.INTEGRATED). "collaborative" is E_C trained jointly
    # with CKA, i.e. the ID embedding the alignment pulled towards the semantics; chosen on validation
    # (notebook 02; docs/experiments/settings_choices.md).
    integrated: Literal["collaborative", "adapted", "sum", "concat"] = "collaborative"  # = stage1.INTEGRATED
    # sampled-softmax negatives for L_seq (0 = full softmax); sampled because a full-softmax step costs
    # far more on Beauty (docs/experiments/settings_choices.md, bench/bench_stage1_softmax.py)
    n_negatives: int = 256
    attn_hidden: int = 16  # DIN local activation unit width (its cost is B x L x candidates x width)
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 200
    lr_decay: Literal["none", "cosine"] = "none"  # after warm-up
    weight_decay: float = 0.0
    clip_norm: float = 0.0  # gradient-norm clipping (0 = none)
    patience: int = 3  # early stopping on validation
    eval_users: int = 0  # validation users scored per epoch, a fixed seeded subset (0 = all)
    # bf16 autocast of training and validation: "auto" = on a CUDA GPU with bf16, float32 elsewhere
    # (every CPU run); at "auto" it stays out of keys (ungerlib.infra.runtime.precision)
    precision: Literal["auto", "fp32", "bf16"] = field(default="auto", metadata={"key_omits": "auto"})

    def effective_alpha(self) -> float:
        """The weight of L_align training uses: 0 for the DIN-alone Table 5 rows (collab, concat)."""
        return 0.0 if self.variant in ("collab", "concat") else self.alpha


@dataclass
class CodesConfig(_Checked):
    method: Literal["hkmeans", "random", "rqvae"] = "hkmeans"
    K: int = 256  # branching factor / codebook size (paper: 256)
    kmeans_n_init: int = 1
    kmeans_max_iter: int = 100
    # RQ-VAE (Fig 8): levels x K with a final disambiguation token
    rq_levels: int = 3
    rq_hidden: tuple[int, ...] = (256, 128)
    rq_latent: int = 32
    rq_epochs: int = 200
    rq_beta: float = 0.25  # commitment weight
    rq_lr: float = 1e-3


@dataclass
class Stage2Config(_Checked):
    # The lever defaults (history_tokens, decoder_tokens, valid_children, init, IKD form, dropout,
    # weight_decay) follow ungerlib.analyses.stage2_grid.ADOPTED, the row Beauty validation supports at the full
    # budget (notebook 04, README): row J, per-node tokens tied with the output, softmax over valid
    # children, code sum + item embedding in the history, weight decay 3e-4 (the paper's text fixes
    # none of them).
    d_model: int = 128  # paper: 128
    enc_layers: int = 1  # paper: 1
    dec_layers: int = 4  # paper: 4
    n_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    # What one history item is to the encoder (one token per item either way): the sum of its
    # per-level code-token embeddings ("codes"), its own item embedding ("item"), or both summed.
    history_tokens: Literal["codes", "item", "both"] = "both"
    # Decoder token embeddings and output layer: one table and head per code level, shared by all
    # prefixes ("level"), or one embedding per trie node, tied with the output ("node").
    decoder_tokens: Literal["level", "node"] = "node"
    # Normalise the loss and the beam's softmax over the prefix's existing children only
    # (required by decoder_tokens="node", which has no embedding for a missing child).
    valid_children: bool = True
    ikd: bool = True  # intra-modality knowledge distillation (Eq. 7)
    beta: float = 1.0  # weight of L_distillation (Eq. 8)
    ikd_negatives: int = 256
    ikd_sim: Literal["dot", "cosine"] = "dot"  # c_dis . E / tau, or cos(c_dis, E) / tau (EAGER)
    ikd_tau: float = 1.0
    epochs: int = 30
    batch_size: int = 256
    # Training batches hold histories of similar length: the epoch's permutation is cut into
    # chunks of this many batches, each sorted by length (0 = plain shuffled batches). Every batch
    # is trimmed to its longest history either way (the same math as padding to max_len).
    bucket: int = 8
    lr: float = 1e-3
    warmup_steps: int = 500
    lr_decay: Literal["none", "cosine"] = "cosine"
    weight_decay: float = 3e-4  # Adam's coupled L2 on every parameter (row J)
    clip_norm: float = 1.0  # gradient-norm clipping (0 = none)
    patience: int = 5  # early stopping on validation NDCG@20
    eval_beam: int = 20  # beam used for per-epoch validation
    # bf16 autocast of training and of every decoding of this model (validation, evaluation): as stage1.precision
    precision: Literal["auto", "fp32", "bf16"] = field(default="auto", metadata={"key_omits": "auto"})


@dataclass
class EvalConfig(_Checked):
    beam: int = 50
    ks: tuple[int, ...] = (10, 20)


@dataclass
class RunConfig(_Checked):
    profile: str = "cpu"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    codes: CodesConfig = field(default_factory=CodesConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self, **changes: Any) -> "RunConfig":
        """Copy with nested changes, e.g. ``cfg.replace(stage1={"alpha": 0.0}, seed=1)``."""
        d = self.to_dict()
        for key, value in changes.items():
            if key not in d:
                raise ConfigError(f"unknown setting {key!r} for RunConfig; known: {sorted(d)}")
            if isinstance(d[key], dict) and isinstance(value, dict):
                d[key] = {**d[key], **value}
            else:
                d[key] = value
        return from_dict(RunConfig, d)


# Stage order: each stage's artefact depends on its own section and those before it.
STAGES = ("data", "semantic", "stage1", "codes", "stage2", "eval")

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type[T], d: dict[str, Any] | None, path: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict; an unknown key, a value of the wrong type or out
    of range is a :class:`ConfigError` naming the setting."""
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"[{path or cls.__name__}] must be a mapping of settings, got {d!r}")
    d = dict(d or {})
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        where = f" in [{path}]" if path else ""
        raise ConfigError(f"unknown setting(s) {unknown}{where}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        hint = hints[name]
        if isinstance(hint, type) and is_dataclass(hint):
            kwargs[name] = value if isinstance(value, hint) else from_dict(hint, value, f"{path}.{name}" if path else name)
        else:
            kwargs[name] = value  # type and range: checked by the dataclass (_check_fields)
    return cls(**kwargs)


# --------------------------------------------------------------------------- checking settings

_Rule = tuple[Callable[[Any], bool], str]
_POSITIVE: _Rule = (lambda v: v > 0, "must be positive")
_AT_LEAST_1: _Rule = (lambda v: v >= 1, "must be at least 1")
_NON_NEGATIVE: _Rule = (lambda v: v >= 0, "must be at least 0")
_PROBABILITY: _Rule = (lambda v: 0 <= v < 1, "must lie in [0, 1)")
# Adam's step is about lr per weight: above 1 a step moves every weight by more than its usual scale
_LEARNING_RATE: _Rule = (lambda v: 0 < v <= 1, "must lie in (0, 1] (Adam moves each weight by about lr a step)")

# The allowed range of every numeric setting: "section.name", or "*.name" for every section with that
# field. A tuple's rule holds for each element. tests/test_config_store.py checks that every int and
# float setting has one, so a new setting cannot slip through unchecked.
RANGES: dict[str, _Rule] = {
    "seed": _NON_NEGATIVE,
    "*.batch_size": _POSITIVE, "*.epochs": _AT_LEAST_1, "*.lr": _LEARNING_RATE, "*.dropout": _PROBABILITY,
    "*.warmup_steps": _NON_NEGATIVE, "*.weight_decay": _NON_NEGATIVE, "*.clip_norm": _NON_NEGATIVE,
    "*.patience": _AT_LEAST_1,
    "data.max_len": _AT_LEAST_1, "data.n_users": _AT_LEAST_1, "data.n_items": _AT_LEAST_1,
    "data.n_topics": _AT_LEAST_1, "data.seq_len": (lambda v: v >= 3, "must be at least 3 (leave-one-out "
                                                   "needs a training, a validation and a test item)"),
    "data.seed": _NON_NEGATIVE,
    "semantic.max_length": _AT_LEAST_1,
    "stage1.dim": _AT_LEAST_1, "stage1.alpha": _NON_NEGATIVE, "stage1.tau": _POSITIVE,
    "stage1.n_negatives": _NON_NEGATIVE, "stage1.attn_hidden": _AT_LEAST_1, "stage1.eval_users": _NON_NEGATIVE,
    "codes.K": (lambda v: v >= 2, "must be at least 2"), "codes.kmeans_n_init": _AT_LEAST_1,
    "codes.kmeans_max_iter": _AT_LEAST_1, "codes.rq_levels": _AT_LEAST_1, "codes.rq_hidden": _AT_LEAST_1,
    "codes.rq_latent": _AT_LEAST_1, "codes.rq_epochs": _AT_LEAST_1, "codes.rq_beta": _NON_NEGATIVE,
    "codes.rq_lr": _LEARNING_RATE,
    "stage2.d_model": _AT_LEAST_1, "stage2.enc_layers": _AT_LEAST_1, "stage2.dec_layers": _AT_LEAST_1,
    "stage2.n_heads": _AT_LEAST_1, "stage2.d_ff": _AT_LEAST_1, "stage2.beta": _NON_NEGATIVE,
    "stage2.ikd_negatives": _AT_LEAST_1, "stage2.ikd_tau": _POSITIVE, "stage2.bucket": _NON_NEGATIVE,
    "stage2.eval_beam": _AT_LEAST_1,
    "eval.beam": _AT_LEAST_1, "eval.ks": _AT_LEAST_1,
}


def _section(obj: Any) -> str:
    return {DataConfig: "data", SemanticConfig: "semantic", Stage1Config: "stage1", CodesConfig: "codes",
            Stage2Config: "stage2", EvalConfig: "eval"}.get(type(obj), "")


def _rule(section: str, name: str) -> _Rule | None:
    key = f"{section}.{name}" if section else name
    return RANGES.get(key) or (RANGES.get(f"*.{name}") if section else None)


def _describe(hint: Any) -> str:
    if hint in (int, float, bool, str):
        return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a non-empty list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
        return f"a list of {len(args)}: " + ", ".join(_describe(a) for a in args)
    return str(hint)


class _Mismatch(Exception):
    pass


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` wants it (int -> float, list -> tuple), or :class:`_Mismatch`."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif origin in (Union, types.UnionType):
        for arm in args:
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, arm)
            except _Mismatch:
                pass
    elif origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) > 0:
                return tuple(_coerce(v, args[0]) for v in value)
        elif len(value) == len(args):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
    raise _Mismatch


def check_setting(section: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` of setting ``section.name`` checked against its type ``hint`` and :data:`RANGES`;
    returns it normalised (an int for a float setting becomes a float, a list for a tuple a tuple).

    >>> check_setting("stage2", "lr", 1, float)
    1.0
    >>> check_setting("stage2", "batch_size", 0, int)
    Traceback (most recent call last):
    ...
    ungerlib.infra.config.ConfigError: stage2.batch_size must be positive, got 0
    """
    where = f"{section}.{name}" if section else name
    try:
        value = _coerce(value, hint)
    except _Mismatch:
        raise ConfigError(f"{where} must be {_describe(hint)}, got {value!r}"
                          + (f" ({type(value).__name__})" if not isinstance(value, str) or get_origin(hint) is not Literal
                             else "")) from None
    rule = _rule(section, name)
    if rule and value is not None:
        ok, says = rule
        for v in (value if isinstance(value, tuple) else (value,)):
            if not isinstance(v, bool) and isinstance(v, (int, float)) and not ok(v):
                raise ConfigError(f"{where} {says}, got {v if not isinstance(value, tuple) else value}")
    return value


def _check_fields(obj: Any) -> None:
    hints = get_type_hints(type(obj))
    section = _section(obj)
    for f in fields(obj):
        hint = hints[f.name]
        if isinstance(hint, type) and is_dataclass(hint):
            if not isinstance(getattr(obj, f.name), hint):
                raise ConfigError(f"[{f.name}] must be a {hint.__name__}, got {getattr(obj, f.name)!r}")
            continue
        object.__setattr__(obj, f.name, check_setting(section, f.name, getattr(obj, f.name), hint))


def _validate(obj: Any) -> None:
    """Checks that span several settings (one setting's type and range: :func:`check_setting`)."""
    if isinstance(obj, DataConfig) and obj.seq_len[0] > obj.seq_len[1]:
        raise ConfigError(f"data.seq_len must be (shortest, longest), got {obj.seq_len}")
    if isinstance(obj, Stage2Config) and obj.d_model % obj.n_heads:
        raise ConfigError(f"stage2.d_model ({obj.d_model}) must be a multiple of stage2.n_heads ({obj.n_heads})")
    if isinstance(obj, Stage2Config) and obj.decoder_tokens == "node" and not obj.valid_children:
        raise ConfigError("stage2.decoder_tokens='node' needs stage2.valid_children=True (a tied output "
                          "layer has no embedding for a child that does not exist)")
    if isinstance(obj, RunConfig) and obj.profile not in PROFILES:
        raise ConfigError(f"unknown profile {obj.profile!r}; known: {PROFILES}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Command-line ``--set`` items -> nested overrides for :func:`profile`.

    ``section.key=value`` (or ``seed=value``). A value is read as JSON when it parses (``3``, ``2e-3``,
    ``true``, ``[10, 20]``, ``null``), else taken as plain text (``rqvae``); a comma-separated value
    sets a tuple setting (``eval.ks=10,20``). The result is checked like any config.

    >>> parse_overrides(["codes.method=rqvae", "stage2.epochs=3", "eval.ks=10,20", "seed=1"])
    {'codes': {'method': 'rqvae'}, 'stage2': {'epochs': 3}, 'eval': {'ks': [10, 20]}, 'seed': 1}
    """
    hints = get_type_hints(RunConfig)
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. stage2.epochs=3")
        parts = key.strip().split(".")
        if len(parts) == 1:
            sec, name = None, parts[0]
            if name not in hints:
                where = [f"{s}.{name}" for s, h in hints.items() if is_dataclass(h) and name in h.__dataclass_fields__]
                hint_ = f"; did you mean {' or '.join(where)}?" if where else ""
                raise ConfigError(f"--set {item!r}: unknown setting {name!r}{hint_}")
            hint = hints[name]
            if is_dataclass(hint):
                raise ConfigError(f"--set {item!r}: name a setting inside [{name}], e.g. {name}.<key>=value")
        elif len(parts) == 2:
            sec, name = parts
            if sec not in hints or not is_dataclass(hints[sec]):
                raise ConfigError(f"--set {item!r}: unknown section {sec!r}; known: {list(STAGES)}")
            sub = get_type_hints(hints[sec])
            if name not in sub:
                raise ConfigError(f"--set {item!r}: unknown setting {name!r} in [{sec}]; known: {sorted(sub)}")
            hint = sub[name]
        else:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. stage2.epochs=3")
        value = parse_value(raw, hint)
        if sec is None:
            out[name] = value
        else:
            out.setdefault(sec, {})[name] = value
    return out


def parse_value(raw: str, hint: Any) -> Any:
    """A command-line value: JSON where it parses, else plain text; a text for a tuple-typed ``hint``
    is a comma-separated list (each part JSON or text). Shared by ``--set`` and ``reproduce --param``."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # plain text
    if get_origin(hint) is tuple and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        parts = [p.strip() for p in str(raw).split(",") if p.strip()]
        vals = []
        for p in parts:
            try:
                vals.append(json.loads(p))
            except json.JSONDecodeError:
                vals.append(p)
        return vals
    if _accepts_text(hint) and not isinstance(value, str) and value is not None:
        return raw  # a text setting keeps its text (semantic.encoder=123 is the string '123')
    return value


def _accepts_text(hint: Any) -> bool:
    if hint is str:
        return True
    return get_origin(hint) in (Union, types.UnionType) and str in get_args(hint)


# --------------------------------------------------------------------------- profiles

_PROFILE_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "data": {"dataset": "synthetic"},
        "semantic": {"encoder": "hashing", "batch_size": 256},
        "stage1": {"dim": 32, "epochs": 20, "batch_size": 128, "n_negatives": 64, "warmup_steps": 10,
                   "attn_hidden": 16, "lr": 3e-3, "tau": 0.1},
        # why these numbers: docs/experiments/settings_choices.md
        "codes": {"K": 8, "rq_epochs": 200, "rq_hidden": (64,), "rq_latent": 16},
        "stage2": {"d_model": 32, "dec_layers": 2, "n_heads": 2, "d_ff": 64, "epochs": 30, "lr": 1e-2, "patience": 10,
                   "batch_size": 128, "warmup_steps": 10, "ikd_negatives": 32, "eval_beam": 20},
        "eval": {"beam": 20},
    },
    "cpu": {
        "stage1": {"dim": 128, "epochs": 8, "attn_hidden": 4, "eval_users": 2000, "patience": 2},
        # 15 epochs (cosine over them) and lr 2e-3, both chosen on validation: docs/experiments/settings_choices.md
        "stage2": {"d_model": 128, "epochs": 15, "lr": 2e-3},
        "eval": {"beam": 50},
    },
    "paper": {
        "semantic": {"encoder": "meta-llama/Llama-2-7b-hf", "pooling": "last", "batch_size": 16},
        "stage1": {"dim": 128, "epochs": 30},
        "stage2": {"d_model": 128, "enc_layers": 1, "dec_layers": 4, "epochs": 100, "patience": 10},
        "eval": {"beam": 100},
    },
}


def profile(name: str = "cpu", dataset: str | None = None, **overrides: Any) -> RunConfig:
    """The :class:`RunConfig` of profile ``name`` for ``dataset``, with optional section overrides.

    >>> profile("smoke").data.dataset
    'synthetic'
    >>> profile("cpu", "Toys", stage1={"alpha": 0.0}).stage1.alpha
    0.0
    """
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; known: {PROFILES}")
    d = {"profile": name, **json.loads(json.dumps(_PROFILE_OVERRIDES[name]))}
    if dataset is not None:
        d.setdefault("data", {})["dataset"] = dataset
    cfg = from_dict(RunConfig, d)
    return cfg.replace(**overrides) if overrides else cfg


# --------------------------------------------------------------------------- paper rows

# The named rows of the paper's ablation tables and figures; each is a change to the profile's config,
# so a row means "the profile's default with this difference", whatever the default is. Rows that need
# no change (ours, cka_ikd, hkmeans_codes, K<profile K>) are the default config itself, and so share
# its artefacts (a config is its artefacts' key).
PAPER_ROWS: dict[str, dict[str, Any]] = {
    "ours": {},
    "cka_ikd": {},
    "semantic_only": {"stage1": {"variant": "semantic"}},
    "collaborative_only": {"stage1": {"variant": "collab", "alpha": 0.0}},
    # Table 5's Concat numbers equal Table 6's "\\" row (no CKA, no IKD) in the paper, so both rows are
    # the same config: E_C of DIN alone concatenated with PCA(E_S), Stage II without IKD.
    "concat": {"stage1": {"variant": "concat"}, "stage2": {"ikd": False}},
    "none": {"stage1": {"variant": "concat"}, "stage2": {"ikd": False}},
    "cka": {"stage2": {"ikd": False}},
    "random_codes": {"codes": {"method": "random"}},
    "rqvae_codes": {"codes": {"method": "rqvae"}},
    "hkmeans_codes": {"codes": {"method": "hkmeans"}},
}


def variant(cfg: RunConfig, row: str) -> RunConfig:
    """The config of one named row of the paper's tables, derived from ``cfg``.

    Table 5: ``semantic_only``, ``collaborative_only``, ``concat`` (= ``none``), ``ours``.
    Table 6: ``none`` (concat, no IKD), ``cka`` (no IKD), ``cka_ikd`` (= ours).
    Fig 8:   ``random_codes``, ``rqvae_codes``, ``hkmeans_codes`` (= ours).
    Fig 9:   ``K<n>``, e.g. ``K128``: hierarchical k-means with branching factor n (``K<cfg K>`` = ours).

    >>> variant(profile("cpu"), "K512").codes.K
    512
    >>> variant(profile("cpu"), "cka_ikd") == variant(profile("cpu"), "ours")
    True
    """
    import re

    m = re.fullmatch(r"K(\d+)", row)
    if m:
        return cfg.replace(codes={"K": int(m.group(1))})  # a K below 2 fails the range check, naming codes.K
    if row not in PAPER_ROWS:
        raise ConfigError(f"unknown paper row {row!r}; known: {sorted(PAPER_ROWS)} or K<n> (codebook size, e.g. K128)")
    return cfg.replace(**PAPER_ROWS[row]) if PAPER_ROWS[row] else dataclasses.replace(cfg)
