"""The registry of artefact kinds: what each kind holds, how it is keyed, which function builds it.

**Identity.** An artefact's key holds what determines its numbers, and nothing else:

* the settings of its own config sections and of every kind upstream of it (the data's location
  excluded: ``data.root`` is where the files are, not what they hold);
* the content hash of the data files, and the seed where the kind or one upstream is seeded;
* ``versions``: the version of its kind and of every kind upstream, e.g. ``{"data": 1, "semantic": 1,
  "stage1": 1, "codes": 1, "stage2": 1}``;
* the kind's own arguments (:attr:`Kind.extra`: a baseline's parameters, the neighbours' lambda).

There is no code hash in a key, so a refactor that changes no number keeps every key and retrains
nothing. A change that moves a kind's numbers must bump that kind's :attr:`Kind.version`, which
re-keys it and everything downstream of it, and nothing else. ``tests/test_golden.py`` enforces this:
it recomputes a short fingerprint of every kind (:mod:`ungerlib.golden`) and fails when one moved
while the versions it depends on did not. The code's hash still goes to each artefact's provenance,
where ``reproduce --check`` reports "code changed, version kept".

A setting added to a section after its kinds' versions were set may declare the value at which the
computation is the one from before it existed: ``field(default=..., metadata={"key_omits": value})``.
At that value it is left out of keys, so adding it re-keys nothing; any other value enters the key.

**One registry.** :data:`KINDS` is the only place that says which kinds exist, how they chain, and
which function builds each (``"module:function"``, called as ``f(cfg, **extra)``). The store
(:mod:`ungerlib.infra.store`) holds folders; :func:`key`, :func:`state`, :func:`current_key` and
:func:`build` are how everything else (the builders, ``warm``, ``reproduce --check``, the ablations,
the notebooks) asks about artefacts.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ungerlib.infra import config as C
from ungerlib.infra.store import Artefact, Builder, config_hash

PACKAGE = "ungerlib"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Kind:
    """One kind of artefact.

    ``version``: bump it when a change moves this kind's numbers (``tests/test_golden.py`` says when).
    ``parent``: the kind this one is computed from (its key extends the parent's).
    ``sections``: config sections this kind adds to the key. ``seeded``: its computation draws random numbers.
    ``extra``: names of the kind's own arguments, which enter the key as given.
    ``build``: ``"module:function"`` that loads or builds it, called as ``f(cfg, **args, **extra)``.
    ``code``: the module whose code computes it (hashed into provenance, named by the golden check).
    ``stored``: False for the data, which is read, not built.
    ``ddp``: trained with DistributedDataParallel under torchrun, so every rank runs its build (rank 0
    writes it); any other kind is built by rank 0 while the others wait (:func:`ungerlib.infra.store.cached`).
    """

    name: str
    version: int
    parent: str | None
    sections: tuple[str, ...] = ()
    seeded: bool = False
    extra: tuple[str, ...] = ()
    build: str = ""
    code: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    stored: bool = True
    doc: str = ""
    ddp: bool = False

    def chain(self) -> list["Kind"]:
        """This kind and every kind upstream of it, the data first."""
        out, k = [], self
        while k is not None:
            out.append(k)
            k = KINDS[k.parent] if k.parent else None
        return out[::-1]

    @property
    def depth(self) -> int:
        """How many kinds lie upstream (the data: 0): ``warm`` builds shallower kinds first."""
        return len(self.chain()) - 1


# Baseline kinds: (model, version, the kind it reads besides the data). Their builder is
# ungerlib.analyses.table3.run(cfg, model, params).
# SASRec 2: ours (baselines.sequential) in place of Cornac's (version 1). TIGER 2: Cornac's model trained by
# our fit (AdamW, a checkpoint per epoch) in place of Cornac's loop (version 1).
BASELINES: tuple[tuple[str, int, str], ...] = (
    ("SASRec", 2, "data"), ("HSTU", 1, "data"), ("BERT4Rec", 1, "data"), ("GRU4Rec", 1, "data"),
    ("TIGER", 2, "semantic"), ("LightGCN", 1, "data"), ("NGCF", 1, "data"), ("AlphaRec", 1, "semantic"),
)
_BASELINE_CODE = {"SASRec": "baselines.sequential", "HSTU": "baselines.sequential", "BERT4Rec": "baselines.cornac",
                  "GRU4Rec": "baselines.cornac", "TIGER": "baselines.tiger", "LightGCN": "baselines.graph",
                  "NGCF": "baselines.graph", "AlphaRec": "baselines.graph"}

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("data", 1, None, ("data",), code="model.data", stored=False,
         doc="the data set's sequences and leave-one-out splits"),
    Kind("semantic", 1, "data", ("semantic",), build="model.semantic:semantic_artefact", code="model.semantic",
         doc="frozen text-encoder embeddings E_S [n_items, d_s]"),
    Kind("stage1", 1, "semantic", ("stage1",), seeded=True, build="model.stage1:stage1_embeddings", code="model.stage1",
         doc="Stage I: DIN's E_C and MAL(E_S), aligned by CKA (Eq. 2-5)", ddp=True),
    Kind("codes", 1, "stage1", ("codes",), build="model.codes:item_codes", code="model.codes",
         doc="one unicode per item: the quantised integrated embeddings"),
    Kind("stage2", 1, "codes", ("stage2",), build="model.stage2:run_stage2", code="model.stage2",
         doc="Stage II: the generative model trained on unicodes with IKD (Eq. 6-8)", ddp=True),
    Kind("eval", 1, "stage2", ("eval",), build="model.stage2:evaluate_stage2", code="model.stage2",
         doc="beam-search rankings of valid and test users and their metrics"),
    Kind("eval_neighbours", 1, "eval", extra=("neighbour_lambda",), build="model.neighbours:evaluate_neighbours",
         code="model.neighbours", doc="Stage II decoded with the Stage I neighbours term (beyond the paper)"),
    Kind("stage2_discrec", 1, "codes", ("stage2",), build="baselines.discrec:run_discrec", code="baselines.discrec",
         doc="the DiscRec-style Stage II variant (beyond the paper)", ddp=True),
    Kind("eval_discrec", 1, "stage2_discrec", ("eval",), build="baselines.discrec:evaluate_discrec", code="baselines.discrec",
         doc="the DiscRec variant's rankings and metrics"),
    Kind("stage2_dual", 1, "codes", ("stage2",), build="baselines.dual:run_dual", code="baselines.dual",
         doc="the EAGER-style dual code on our Stage II engine: two codes, two decoders, one encoder"),
    Kind("eval_dual", 1, "stage2_dual", ("eval",), build="baselines.dual:evaluate_dual", code="baselines.dual",
         doc="the dual code's merged rankings and metrics"),
    *(Kind(f"baseline.{m}", v, parent, seeded=True, extra=("params",), build="analyses.table3:run",
           code=_BASELINE_CODE[m], args={"model": m}, doc=f"the {m} baseline: rankings, metrics, history")
      for m, v, parent in BASELINES),
)}


def get(kind: str) -> Kind:
    """The registered kind ``kind``; an unknown name is a :class:`ungerlib.infra.config.ConfigError`."""
    if kind not in KINDS:
        raise C.ConfigError(f"unknown artefact kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]


def baseline_kind(model: str) -> str:
    return f"baseline.{model}"


# --------------------------------------------------------------------------- keys

def _section(cfg: C.RunConfig, name: str) -> dict[str, Any]:
    """Section ``name`` of ``cfg`` as key values: settings at their ``key_omits`` value left out."""
    obj = getattr(cfg, name)
    out = {}
    for f in dataclasses.fields(obj):
        value = C.to_dict(getattr(obj, f.name))
        if "key_omits" in f.metadata and value == C.to_dict(f.metadata["key_omits"]):
            continue
        out[f.name] = value
    return out


def _stage1_training(section: dict[str, Any], cfg: C.RunConfig) -> dict[str, Any]:
    """Stage I's own key holds what its training uses: ``integrated`` is applied on load, and the two
    DIN-alone rows (``collab``, ``concat``) are one training (concat adds a PCA on load). The codes and
    everything after them are keyed by the full section."""
    out = {k: v for k, v in section.items() if k != "integrated"}
    if cfg.stage1.variant in ("collab", "concat"):
        out.update(variant="collab", alpha=cfg.stage1.effective_alpha())
    return out


def _plain(value: Any) -> Any:
    """A JSON round trip: the form a key has on disk (tuples become lists, keys are sorted)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def key(kind: str, cfg: C.RunConfig, **extra: Any) -> dict[str, Any]:
    """The key of artefact ``kind`` for ``cfg`` (module docstring); ``extra``: the kind's own arguments."""
    from ungerlib.model.data import content_hash

    k = get(kind)
    names = set(extra)
    if names != set(k.extra):
        raise C.ConfigError(f"artefact kind {kind!r} takes {list(k.extra) or 'no arguments'}, got {sorted(names) or 'none'}")
    chain = k.chain()
    out: dict[str, Any] = {}
    for c in chain:
        for s in c.sections:
            out[s] = _section(cfg, s)
    out["data"].pop("root", None)
    if kind == "stage1":
        out["stage1"] = _stage1_training(out["stage1"], cfg)
    out["data_hash"] = content_hash(cfg.data)
    if any(c.seeded for c in chain):
        out["seed"] = cfg.seed
    out["versions"] = {c.name: c.version for c in chain}
    out.update({e: _plain(extra[e]) for e in k.extra})
    return _plain(out)


def key_hash(kind: str, cfg: C.RunConfig, **extra: Any) -> str:
    return config_hash(key(kind, cfg, **extra))


def omitted(section: str) -> dict[str, Any]:
    """The settings of config ``section`` that declare a ``key_omits`` value, with that value."""
    obj = getattr(C.RunConfig(), section, None)
    if obj is None or not dataclasses.is_dataclass(obj):
        return {}
    return {f.name: C.to_dict(f.metadata["key_omits"]) for f in dataclasses.fields(obj) if "key_omits" in f.metadata}


def config_from_key(recorded: dict[str, Any], profile: str = "cpu") -> C.RunConfig:
    """The :class:`RunConfig` a recorded key was made from, as far as the key determines it: its
    sections and seed over profile ``profile``'s settings (``cpu`` for an unknown name); a setting the
    key left out at its ``key_omits`` value takes that value."""
    d = C.profile(profile if profile in C.PROFILES else "cpu").to_dict()
    default = C.RunConfig()
    for s in C.STAGES:
        if s in recorded:
            omitted = {f.name: C.to_dict(f.metadata["key_omits"]) for f in dataclasses.fields(getattr(default, s))
                       if "key_omits" in f.metadata}
            d[s] = {**d[s], **omitted, **recorded[s]}
    if "seed" in recorded:
        d["seed"] = recorded["seed"]
    return C.from_dict(C.RunConfig, d)


def current_key(kind: str, recorded: dict[str, Any], profile: str = "cpu") -> dict[str, Any]:
    """The key the current registry computes for a recorded key of ``kind`` (same settings, seed and
    arguments; versions and data files as they are now): equal to ``recorded`` exactly when the
    artefact is still the one the current code would use."""
    k = get(kind)
    missing = [e for e in k.extra if e not in recorded]
    if missing:
        raise ValueError(f"a recorded {kind} key lacks {', '.join(missing)}")
    return key(kind, config_from_key(recorded, profile), **{e: recorded[e] for e in k.extra})


def changes(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> str:
    """What two keys differ in, as ``a.b old -> new``, at most ``limit`` of them."""
    diffs = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "(none)"), new.get(k, "(none)")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k}.{f} {a.get(f, '(none)')} -> {b.get(f, '(none)')}"
                      for f in sorted(set(a) | set(b)) if a.get(f, "(none)") != b.get(f, "(none)")]
        elif a != b:
            diffs.append(f"{k} {a} -> {b}")
    return ", ".join(diffs[:limit]) + (f" (+{len(diffs) - limit} more)" if len(diffs) > limit else "")


# --------------------------------------------------------------------------- building and asking

def cached(kind: str, cfg: C.RunConfig, build: Builder, *, force: bool = False, **extra: Any) -> Artefact:
    """:func:`ungerlib.infra.store.cached` under :func:`key`, with the kind's code hash in its provenance."""
    from ungerlib.infra import store

    return store.cached(kind, key(kind, cfg, **extra), build, force=force, together=get(kind).ddp,
                        record={"code_hash": code_hash(get(kind).code), "code_module": get(kind).code})


def read(kind: str, cfg: C.RunConfig, **extra: Any) -> Artefact:
    """The built artefact ``kind`` for ``cfg`` (:func:`ungerlib.infra.store.read`: never builds)."""
    from ungerlib.infra import store

    return store.read(kind, key(kind, cfg, **extra))


def state(kind: str, cfg: C.RunConfig, **extra: Any) -> str:
    """``built``, ``checkpoint`` (a killed build left one: the next build resumes it) or ``missing``."""
    from ungerlib.infra import store

    return store.state(kind, key(kind, cfg, **extra))


def builder(kind: str) -> Callable[..., Any]:
    """The function that loads or builds ``kind`` (``f(cfg, **extra)``)."""
    k = get(kind)
    if not k.build:
        raise C.ConfigError(f"artefact kind {kind!r} is read, not built")
    module, fn = k.build.split(":")
    f = getattr(importlib.import_module(f"{PACKAGE}.{module}"), fn)
    return functools.partial(f, **k.args) if k.args else f


def build(kind: str, cfg: C.RunConfig, **extra: Any) -> Any:
    """Load or build artefact ``kind`` for ``cfg`` (and everything upstream of it)."""
    return builder(kind)(cfg, **extra)


# --------------------------------------------------------------------------- code hashes (provenance only)

def _module_path(module: str) -> Path:
    """The source file of ``ungerlib`` module ``module`` (dotted, relative to the package)."""
    p = PACKAGE_DIR.joinpath(*module.split("."))
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


@functools.lru_cache(maxsize=512)
def _imports(source: str, module: str) -> frozenset[str]:
    """The ``ungerlib`` modules (relative names) that ``source`` of ``module`` imports, at any level."""
    import ast

    here = module.split(".")[:-1]  # the module's package, relative to ungerlib
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1] if node.level > 1 else list(here)
                stem = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == PACKAGE:
                stem = node.module.split(".")[1:]
            else:
                continue
            names.add(".".join(stem)) if stem else None
            names.update(".".join(stem + [a.name]) for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith(f"{PACKAGE}."))
    return frozenset(n for n in names if n and _module_path(n).is_file())


# Modules left out of code hashes: configuration, storage and run-time plumbing, never a number.
NEUTRAL = frozenset({"infra", "infra.config", "infra.store", "infra.runtime", "infra.artefacts", "infra.cli"})


def closure(module: str) -> list[str]:
    """``module`` and every ``ungerlib`` module it imports, directly or not (function-level imports
    included), minus :data:`NEUTRAL`; sorted."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_imports(_module_path(m).read_text(encoding="utf-8"), m) - seen)
    return sorted(seen - NEUTRAL)


@functools.lru_cache(maxsize=512)
def _normalised(source: str) -> str:
    """The AST of a source text without docstrings: comments, docstrings and layout do not count."""
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def source_hash(module: str) -> str:
    """Hash of one module's normalised source."""
    return hashlib.sha256(_normalised(_module_path(module).read_text(encoding="utf-8")).encode()).hexdigest()[:12]


def code_hash(module: str) -> str:
    """Hash of the normalised source of every module in :func:`closure` of ``module``."""
    h = hashlib.sha256()
    for m in closure(module):
        h.update(m.encode() + b"\0" + _normalised(_module_path(m).read_text(encoding="utf-8")).encode() + b"\0")
    return h.hexdigest()[:12]
