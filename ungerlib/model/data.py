"""Amazon 2014 data: raw readers, 5-core, chronological order, leave-one-out, synthetic data.

Two ways in:

* the *prepared* format, one folder per data set (``sequences.tsv.gz``: ``user_id<TAB>item ids``
  oldest first; ``items.jsonl.gz``: one JSON object per item id). The package ships the three
  benchmark folders as package data in ``ungerlib/bundled/amazon2014/`` (provenance in each
  ``SOURCE.md``), so a wheel or ``pip install git+...`` finds them too; ``$UNGER_DATA`` or
  ``DataConfig.root`` points elsewhere.
* the *raw* McAuley files (:func:`prepare_from_raw`), for users who rebuild from scratch.

Leave-one-out follows the paper (4.1): last item = test, second last = validation, the rest =
training where every prefix is one example; histories keep the last ``max_len`` (20) items.
Validation and test examples also carry ``seen``: every item the user had before the target, not
capped, which is what a "history excluded" ranking must drop.
"""
from __future__ import annotations

import ast
import contextlib
import csv
import functools
import gzip
import io
import json
import os
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from ungerlib.infra.config import DataConfig, RunConfig
from ungerlib.infra.store import atomic_write_bytes, file_sha256

if TYPE_CHECKING:  # pandas is imported where a table is made
    import pandas as pd

PAD = -1
BUNDLED_ROOT = Path(__file__).resolve().parent.parent / "bundled" / "amazon2014"

# Official download locations of the raw Amazon 2014 (McAuley) files.
RAW_BASE = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
RAW_CATEGORY = {"Beauty": "Beauty", "Sports": "Sports_and_Outdoors", "Toys": "Toys_and_Games"}


def raw_urls(dataset: str) -> dict[str, str]:
    """Where the raw files of ``dataset`` can be downloaded (reviews, ratings-only CSV, metadata)."""
    c = RAW_CATEGORY[dataset]
    return {"reviews": f"{RAW_BASE}reviews_{c}.json.gz", "reviews_5core": f"{RAW_BASE}reviews_{c}_5.json.gz",
            "ratings": f"{RAW_BASE}ratings_{c}.csv", "meta": f"{RAW_BASE}meta_{c}.json.gz"}


# sha256 of the prepared files whose provenance SOURCE.md describes
KNOWN_SHA256 = {
    "Beauty": {"sequences.tsv.gz": "2e1914f0ed043a5c8bb158d1f7d6a4b1817174df6ea2510e7fd51d3633490ba8",
               "items.jsonl.gz": "1ec5161a4b444347869e902f52c6e4371b4a3e2fae40aad7aaf750078a6b0757"},
    "Sports": {"sequences.tsv.gz": "dee70037f25f3b5291f78e1288004a840fdffeb01db55962604704057a485b8f",
               "items.jsonl.gz": "f858b57ab9908e38c594f6855acf60ee8b3530bd44d40aa67d8d074b09ecd7bf"},
    "Toys": {"sequences.tsv.gz": "8fb9da4f129d5093889b5d0c98b9a3d740ba1b5a8a672c625082ed6769a08d9c",
               "items.jsonl.gz": "bea91f69e169840698594349fdef5538e29785b6bbb41216c0288ea95928751c"},
}


class DataError(ValueError):
    """Input data is missing or malformed."""


@dataclass
class Dataset:
    """User sequences (item ids 0..n_items-1, oldest first) and per-item metadata."""

    name: str
    sequences: list[np.ndarray]
    items: list[dict[str, Any]]
    source: str = ""
    sha256: dict[str, str] | None = None

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def stats(self) -> dict[str, float]:
        """Table 2 row: users, items, interactions, density."""
        return {"users": self.n_users, "items": self.n_items, "interactions": self.n_interactions,
                "density": self.n_interactions / (self.n_users * self.n_items)}


# --------------------------------------------------------------------------- prepared format

def data_root(cfg: DataConfig) -> Path:
    return Path(cfg.root or os.environ.get("UNGER_DATA") or BUNDLED_ROOT)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a damaged file's low-level error (truncated gzip, bad bytes) into a DataError naming it."""
    try:
        yield
    except (EOFError, OSError, UnicodeDecodeError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DataError(f"{path}: cannot read the file ({type(e).__name__}: {e}); it is truncated or "
                        "corrupt, restore it from the repository or rebuild it") from None


def read_prepared(folder: str | Path, name: str | None = None) -> Dataset:
    """Read ``sequences.tsv.gz`` + ``items.jsonl.gz`` from ``folder``, checking every line."""
    folder = Path(folder)
    seq_path, items_path = folder / "sequences.tsv.gz", folder / "items.jsonl.gz"
    for p in (seq_path, items_path):
        if not p.is_file():
            raise DataError(f"missing data file {p}; expected the prepared format "
                            "(sequences.tsv.gz + items.jsonl.gz), see ungerlib.model.data")
    items: list[dict[str, Any]] = []
    with _reading(items_path), gzip.open(items_path, "rt", encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{items_path}:{ln}: not valid JSON ({e.msg})") from None
            if item.get("item_id") != len(items):
                raise DataError(f"{items_path}:{ln}: item_id {item.get('item_id')!r}, expected {len(items)} "
                                "(items must be listed in id order 0..n-1)")
            items.append(item)
    sequences: list[np.ndarray] = []
    with _reading(seq_path), gzip.open(seq_path, "rt", encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
        if header != "user_id\titem_ids":
            raise DataError(f"{seq_path}:1: header {header!r}, expected 'user_id\\titem_ids'")
        for ln, line in enumerate(f, 2):
            parts = line.rstrip("\n").split("\t")
            try:
                if len(parts) != 2 or int(parts[0]) != len(sequences):
                    raise ValueError
                seq = np.array([int(x) for x in parts[1].split()], dtype=np.int64)
            except ValueError:
                raise DataError(f"{seq_path}:{ln}: malformed line {line[:60]!r}; expected "
                                f"'{len(sequences)}<TAB>space-separated item ids'") from None
            if len(seq) == 0:
                raise DataError(f"{seq_path}:{ln}: user {len(sequences)} has no items")
            bad = seq[(seq < 0) | (seq >= len(items))]
            if len(bad):
                raise DataError(f"{seq_path}:{ln}: item id {int(bad[0])} is outside [0, {len(items)}) "
                                f"({items_path.name} lists {len(items)} items)")
            sequences.append(seq)
    if not sequences:
        raise DataError(f"{seq_path}: no users (only the header); a data set needs at least one sequence")
    if not items:
        raise DataError(f"{items_path}: no items")
    sha = {p.name: file_sha256(p) for p in (seq_path, items_path)}
    return Dataset(name or folder.name, sequences, items, str(folder), sha)


def write_prepared(ds: Dataset, folder: str | Path) -> None:
    """Write ``ds`` in the prepared format (atomically, deterministic gzip bytes)."""
    folder = Path(folder)
    seq = "user_id\titem_ids\n" + "".join(f"{u}\t{' '.join(map(str, s))}\n" for u, s in enumerate(ds.sequences))
    items = "".join(json.dumps({"item_id": i, **{k: v for k, v in it.items() if k != "item_id"}},
                               ensure_ascii=False) + "\n" for i, it in enumerate(ds.items))
    for name, text in (("sequences.tsv.gz", seq), ("items.jsonl.gz", items)):
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            gz.write(text.encode("utf-8"))
        atomic_write_bytes(folder / name, buf.getvalue())


def dataset_folder(cfg: DataConfig) -> Path:
    """The prepared folder of ``cfg.dataset``; a DataError naming the known data sets if there is none."""
    folder = data_root(cfg) / cfg.dataset
    if not folder.is_dir():
        known = sorted({"synthetic", *(q.parent.name for q in data_root(cfg).glob("*/sequences.tsv.gz"))})
        raise DataError(f"no data set {cfg.dataset!r} at {folder} (known: {', '.join(known)}; set "
                        "DataConfig.root or $UNGER_DATA to another folder)")
    return folder


def load_dataset(cfg: DataConfig) -> Dataset:
    """The data set ``cfg.dataset``: ``synthetic`` or a prepared folder under :func:`data_root`.

    The bundled copies are checked against the hashes their provenance names; a folder
    elsewhere is read as is (its hashes are recorded in every artefact's provenance).
    """
    if cfg.dataset == "synthetic":
        return make_synthetic(cfg)
    folder = dataset_folder(cfg)
    ds = read_prepared(folder, cfg.dataset)
    known = KNOWN_SHA256.get(cfg.dataset)
    if folder.resolve() == (BUNDLED_ROOT / cfg.dataset).resolve() and known and all(known.values()):
        bad = [n for n, h in known.items() if ds.sha256 and ds.sha256[n] != h]
        if bad:
            raise DataError(f"bundled {cfg.dataset} files {bad} do not match the sha256 recorded in "
                            f"ungerlib.model.data.KNOWN_SHA256 (see {folder / 'SOURCE.md'}); the copy was changed")
    return ds


# --------------------------------------------------------------------------- leave-one-out

@dataclass
class Examples:
    """(history, target) pairs. ``history`` [N, max_len] is right-aligned: most recent item last,
    left-padded with PAD (-1). ``seen`` [N, S] (validation and test only, else None) holds every
    item the user had before the target, PAD-filled: the whole history, not just the model's
    ``max_len`` window, so a "history excluded" ranking drops all of it."""

    user: np.ndarray
    history: np.ndarray
    target: np.ndarray
    seen: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.target)

    @property
    def lengths(self) -> np.ndarray:
        return (self.history != PAD).sum(1)

    @property
    def exclude(self) -> np.ndarray:
        """What a history-excluded ranking drops: ``seen`` where known, else ``history``."""
        return self.history if self.seen is None else self.seen

    def subset(self, idx: np.ndarray | slice) -> "Examples":
        return Examples(self.user[idx], self.history[idx], self.target[idx],
                        None if self.seen is None else self.seen[idx])


@dataclass
class Splits:
    train: Examples
    valid: Examples
    test: Examples
    n_items: int
    max_len: int


def _pad_left(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    out = np.full((len(seqs), max_len), PAD, dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[r, max_len - len(s):] = s
    return out


def leave_one_out(ds: Dataset, max_len: int = 20) -> Splits:
    """Paper 4.1: test = last item, valid = second last, train = every prefix of the rest.

    A user with n items gives n-3 training examples (targets seq[1..n-3]), one validation
    example (history seq[:n-2]) and one test example (history seq[:n-1]).
    """
    tr_u, tr_h, tr_t, users = [], [], [], []
    for u, s in enumerate(ds.sequences):
        if len(s) < 3:
            raise DataError(f"user {u} has {len(s)} interactions; leave-one-out needs at least 3")
        users.append(u)
        for t in range(1, len(s) - 2):
            tr_u.append(u)
            tr_h.append(s[max(0, t - max_len):t])
            tr_t.append(s[t])
    seqs = ds.sequences
    users_a = np.array(users, dtype=np.int64)
    train = Examples(np.array(tr_u, dtype=np.int64), _pad_left(tr_h, max_len), np.array(tr_t, dtype=np.int64))
    longest = max(len(s) for s in seqs)
    valid = Examples(users_a, _pad_left([s[:-2] for s in seqs], max_len), np.array([s[-2] for s in seqs]),
                     _pad_left([s[:-2] for s in seqs], longest - 2).astype(np.int32))
    test = Examples(users_a, _pad_left([s[:-1] for s in seqs], max_len), np.array([s[-1] for s in seqs]),
                    _pad_left([s[:-1] for s in seqs], longest - 1).astype(np.int32))
    return Splits(train, valid, test, ds.n_items, max_len)


def get_splits(cfg: RunConfig) -> tuple[Dataset, Splits]:
    ds = load_dataset(cfg.data)
    return ds, leave_one_out(ds, cfg.data.max_len)


@functools.lru_cache(maxsize=32)
def _folder_hash(folder: str, mtimes: tuple[float, ...]) -> str:
    return "+".join(file_sha256(Path(folder) / n)[:16] for n in ("sequences.tsv.gz", "items.jsonl.gz"))


def content_hash(cfg: DataConfig) -> str:
    """Hash of the files ``cfg`` reads (synthetic data: its generator settings are the content)."""
    if cfg.dataset == "synthetic":
        return "synthetic"
    folder = dataset_folder(cfg)
    files = [folder / n for n in ("sequences.tsv.gz", "items.jsonl.gz")]
    if not all(f.is_file() for f in files):
        raise DataError(f"missing data files in {folder} (need sequences.tsv.gz and items.jsonl.gz)")
    return _folder_hash(str(folder), tuple(f.stat().st_mtime for f in files))


def dataset_hash(ds: Dataset) -> str:
    """One hash for the data set's content (recorded in provenance)."""
    if ds.sha256:
        return "+".join(f"{k}:{v[:12]}" for k, v in sorted(ds.sha256.items()))
    return f"synthetic:{ds.source}"


# --------------------------------------------------------------------------- raw files

def _open_text(path: Path) -> io.TextIOBase:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _parse_record(line: str, path: Path, ln: int) -> dict[str, Any]:
    """One line of a McAuley file: strict JSON (reviews) or a Python literal (meta)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        pass
    try:
        rec = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        raise DataError(f"{path}:{ln}: neither JSON nor a Python dict literal: {line[:80]!r}") from None
    if not isinstance(rec, dict):
        raise DataError(f"{path}:{ln}: expected a dict, got {type(rec).__name__}")
    return rec


def read_raw_interactions(path: str | Path) -> Iterator[tuple[str, str, int]]:
    """(reviewerID, asin, unixReviewTime) from ``reviews_*.json.gz`` or a ``ratings_*.csv``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing raw file {path}")
    with _reading(path), _open_text(path) as f:
        if ".csv" in path.name:
            for ln, row in enumerate(csv.reader(f), 1):
                if len(row) != 4:
                    raise DataError(f"{path}:{ln}: expected user,item,rating,timestamp; got {row!r}")
                try:
                    yield row[0], row[1], int(float(row[3]))
                except ValueError:
                    raise DataError(f"{path}:{ln}: timestamp {row[3]!r} is not a number") from None
            return
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = _parse_record(line, path, ln)
            try:
                yield rec["reviewerID"], rec["asin"], int(rec["unixReviewTime"])
            except (KeyError, ValueError, TypeError):
                raise DataError(f"{path}:{ln}: a review needs reviewerID, asin and unixReviewTime") from None


def read_raw_meta(path: str | Path, asins: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """asin -> {title, brand, categories, description} from ``meta_*.json.gz`` (Python literals)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing raw file {path}")
    out: dict[str, dict[str, Any]] = {}
    with _reading(path), _open_text(path) as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = _parse_record(line, path, ln)
            asin = rec.get("asin")
            if asin is None:
                raise DataError(f"{path}:{ln}: metadata record without 'asin'")
            if asins is None or asin in asins:
                out[asin] = {k: rec.get(k) for k in ("title", "brand", "categories", "description")}
    return out


def five_core(triples: Iterable[tuple[str, str, int]], k: int = 5) -> list[tuple[str, str, int]]:
    """Iteratively drop users and items with fewer than ``k`` interactions until none is left.

    A repeated (user, item) pair keeps its first occurrence (none occur in the benchmark files).
    """
    seen: set[tuple[str, str]] = set()
    rows = []
    for u, i, t in triples:
        if (u, i) not in seen:
            seen.add((u, i))
            rows.append((u, i, t))
    while True:
        uc, ic = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
        kept = [r for r in rows if uc[r[0]] >= k and ic[r[1]] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept


def prepare_from_raw(reviews: str | Path, meta: str | Path | None, out: str | Path,
                     name: str = "dataset", k: int = 5) -> Dataset:
    """Raw McAuley files -> prepared folder, the S3-Rec/P5 way.

    5-core filter, each user's items sorted by ``unixReviewTime`` (a stable sort, so same-day
    reviews keep file order), users and items numbered 0.. by first appearance.
    """
    rows = five_core(read_raw_interactions(reviews), k)
    if not rows:
        raise DataError(f"nothing survives {k}-core filtering of {reviews}")
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for pos, (u, i, t) in enumerate(rows):
        by_user[u].append((t, pos, i))
    item_id: dict[str, int] = {}
    sequences = []
    for u in by_user:  # dicts keep first-appearance order
        seq = [i for _, _, i in sorted(by_user[u])]
        sequences.append(np.array([item_id.setdefault(i, len(item_id)) for i in seq], dtype=np.int64))
    metas = read_raw_meta(meta, set(item_id)) if meta else {}
    items = []
    for asin in item_id:
        m = metas.get(asin, {})
        items.append({"asin": asin, "title": m.get("title"), "brand": m.get("brand"),
                      "categories": m.get("categories"), "description": m.get("description")})
    ds = Dataset(name, sequences, items, str(reviews))
    write_prepared(ds, out)
    return read_prepared(out, name)


# --------------------------------------------------------------------------- synthetic data

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "qu", "fa", "de", "gi", "ho", "ju"]


def make_synthetic(cfg: DataConfig) -> Dataset:
    """A small data set with two planted, independent structures.

    * semantic: each item has a ``topic``; its title uses that topic's words, so a text encoder
      can group items by topic.
    * collaborative: each item has a ``cluster`` (independent of topic) and three favourite
      successors in the next cluster; a user's next item is a favourite successor of the
      current one with probability 0.6, another item of the next cluster with 0.3, and a
      random item with 0.1. Only interaction data reveals this.
    """
    rng = np.random.default_rng(cfg.seed)
    n, g = cfg.n_items, cfg.n_topics
    if n < 4 * g:
        raise DataError(f"synthetic data needs n_items >= 4 * n_topics, got {n} and {g}")
    topic = rng.permutation(np.arange(n) % g)
    cluster = rng.permutation(np.arange(n) % g)
    members = [np.flatnonzero(cluster == c) for c in range(g)]
    succ = np.stack([rng.choice(members[(cluster[i] + 1) % g], 3, replace=False) for i in range(n)])
    words = [[_SYLLABLES[(3 * t + j) % 16] + _SYLLABLES[(5 * t + 7 * j + 1) % 16] + _SYLLABLES[(t + j) % 16]
              for j in range(6)] for t in range(g)]
    items = []
    for i in range(n):
        w = rng.choice(words[topic[i]], 3, replace=False)
        items.append({"asin": f"SYN{i:05d}", "title": f"{w[0]} {w[1]} {w[2]} model {i}", "brand": None,
                      "categories": [["Synthetic", f"Topic {topic[i]}"]], "description": None,
                      "topic": int(topic[i]), "cluster": int(cluster[i])})
    lo, hi = cfg.seq_len
    sequences = []
    for _ in range(cfg.n_users):
        length = int(rng.integers(lo, hi + 1))
        seq = [int(rng.integers(n))]
        while len(seq) < length:
            r, cur = rng.random(), seq[-1]
            if r < 0.6:
                nxt = int(rng.choice(succ[cur]))
            elif r < 0.9:
                nxt = int(rng.choice(members[(cluster[cur] + 1) % g]))
            else:
                nxt = int(rng.integers(n))
            if nxt not in seq:
                seq.append(nxt)
            elif rng.random() < 0.2:  # avoid stalling on a saturated neighbourhood
                seq.append(int(rng.choice([j for j in range(n) if j not in seq])))
        sequences.append(np.array(seq, dtype=np.int64))
    key = f"n_users={cfg.n_users},n_items={n},n_topics={g},seq_len={cfg.seq_len},seed={cfg.seed}"
    return Dataset("synthetic", sequences, items, key)


# Which item text each benchmark has (Sports has no titles in any public copy; see its SOURCE.md).
TEXT_FIELDS = {"Beauty": "title + categories", "Toys": "title + categories",
               "Sports": "brand + categories + keywords (NO titles)", "synthetic": "title + categories"}


def table2(names: list[str], root: str | None = None) -> pd.DataFrame:
    """Table 2 for the named data sets: users, items, interactions, density, item text."""
    import pandas as pd

    rows = {n: {**load_dataset(DataConfig(dataset=n, root=root)).stats(), "item text": TEXT_FIELDS.get(n, "?")}
            for n in names}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "dataset"
    return df
