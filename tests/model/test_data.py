import gzip
import json

import numpy as np
import pytest

from ungerlib.infra import config
from ungerlib.model import data
from ungerlib.model.data import PAD, DataError


def test_bundled_datasets_match_paper_users_and_items():
    t = data.table2(["Beauty", "Sports", "Toys"])
    assert t.loc["Beauty", ["users", "items"]].tolist() == [22363, 12101]
    assert t.loc["Sports", ["users", "items"]].tolist() == [35598, 18357]
    assert t.loc["Toys", ["users", "items"]].tolist() == [19412, 11924]
    assert t.loc["Beauty", "interactions"] == 198502


def test_bundled_copy_hash_is_checked(tmp_path, monkeypatch):
    ds = data.load_dataset(config.DataConfig(dataset="Toys"))
    assert ds.sha256 == data.KNOWN_SHA256["Toys"]
    monkeypatch.setitem(data.KNOWN_SHA256, "Toys", {"sequences.tsv.gz": "0" * 64, "items.jsonl.gz": "0" * 64})
    with pytest.raises(DataError, match="do not match the sha256"):
        data.load_dataset(config.DataConfig(dataset="Toys"))


def test_leave_one_out_exactly_as_paper():
    ds = data.Dataset("t", [np.arange(30), np.array([5, 6, 7, 8, 9])], [{}] * 30)
    s = data.leave_one_out(ds, max_len=20)
    # user 0: 30 items -> 27 training examples (targets 1..27), valid target 28, test target 29
    u0 = s.train.user == 0
    assert u0.sum() == 27 and s.train.target[u0].tolist() == list(range(1, 28))
    last = s.train.history[u0][-1]
    assert last.tolist() == list(range(7, 27))  # capped at the last 20, most recent last
    assert s.valid.target.tolist() == [28, 8] and s.test.target.tolist() == [29, 9]
    assert s.test.history[0].tolist() == list(range(9, 29))
    assert s.valid.history[1].tolist() == [PAD] * 17 + [5, 6, 7]
    assert s.train.history[s.train.user == 1].tolist() == [[PAD] * 19 + [5], [PAD] * 18 + [5, 6]]
    # no target ever appears in its own history; the test target is never seen in training
    assert not (s.train.history == s.train.target[:, None]).any()
    assert not np.isin(29, s.train.target[u0]) and not np.isin(29, s.train.history[u0])


def test_synthetic_is_deterministic_and_structured():
    a = data.make_synthetic(config.DataConfig(seed=3))
    b = data.make_synthetic(config.DataConfig(seed=3))
    assert all((x == y).all() for x, y in zip(a.sequences, b.sequences))
    cluster = np.array([it["cluster"] for it in a.items])
    topic = np.array([it["topic"] for it in a.items])
    # planted collaborative structure: most transitions go to the next cluster
    nxt = np.concatenate([(cluster[s[1:]] - cluster[s[:-1]]) % 8 for s in a.sequences])
    assert (nxt == 1).mean() > 0.7
    # the two structures are independent: the topic does not predict the cluster
    assert np.mean(topic == cluster) < 0.3
    # text reflects topics: items of one topic share words
    assert a.items[0]["title"].split()[0] in " ".join(it["title"] for it in a.items if it["topic"] == topic[0] and it is not a.items[0])
    assert all(len(set(s)) == len(s) for s in a.sequences)


def _write_raw(tmp_path, reviews, meta):
    with gzip.open(tmp_path / "reviews_X.json.gz", "wt") as f:
        for r in reviews:
            f.write(json.dumps(r) + "\n")
    with gzip.open(tmp_path / "meta_X.json.gz", "wt") as f:
        for m in meta:
            f.write(repr(m) + "\n")  # Python literals, as the official meta files are


def test_prepare_from_raw_5core_chronological(tmp_path):
    reviews, t = [], 1000
    # 6 users x 6 items all interacting (survives 5-core), plus a user and an item that do not
    for u in range(6):
        for i in range(6):
            reviews.append({"reviewerID": f"U{u}", "asin": f"A{(i + u) % 6}", "unixReviewTime": t - 10 * i - u})
    reviews += [{"reviewerID": "LONER", "asin": "A0", "unixReviewTime": 1},
                {"reviewerID": "U0", "asin": "RARE", "unixReviewTime": 5}]
    meta = [{"asin": f"A{i}", "title": f"item {i}", "categories": [["X", f"c{i % 2}"]], "price": 1.0} for i in range(6)]
    _write_raw(tmp_path, reviews, meta)
    ds = data.prepare_from_raw(tmp_path / "reviews_X.json.gz", tmp_path / "meta_X.json.gz", tmp_path / "out", "X")
    assert ds.n_users == 6 and ds.n_items == 6 and ds.n_interactions == 36
    # user 0's items sorted by time ascending: A5 (t=950) ... A0 (t=1000)
    first = [ds.items[i]["asin"] for i in ds.sequences[0]]
    assert first == ["A5", "A4", "A3", "A2", "A1", "A0"]
    assert ds.sequences[0].tolist() == [0, 1, 2, 3, 4, 5]  # ids by first appearance
    assert ds.items[0]["title"] == "item 5" and ds.items[0]["categories"] == [["X", "c1"]]
    again = data.read_prepared(tmp_path / "out")
    assert again.sha256 == ds.sha256
    # rebuilding gives byte-identical files
    data.prepare_from_raw(tmp_path / "reviews_X.json.gz", tmp_path / "meta_X.json.gz", tmp_path / "out2", "X")
    assert data.read_prepared(tmp_path / "out2").sha256 == ds.sha256


def test_bundled_files_roundtrip_through_writer(tmp_path):
    ds = data.load_dataset(config.DataConfig(dataset="Beauty"))
    data.write_prepared(ds, tmp_path)
    back = data.read_prepared(tmp_path)
    assert back.n_interactions == ds.n_interactions and back.items[5] == ds.items[5]
    assert all((a == b).all() for a, b in zip(back.sequences[:100], ds.sequences[:100]))


def test_ratings_csv_reader(tmp_path):
    p = tmp_path / "ratings_X.csv"
    p.write_text("U1,A1,5.0,1000\nU1,A2,4.0,999\n")
    assert list(data.read_raw_interactions(p)) == [("U1", "A1", 1000), ("U1", "A2", 999)]
    p.write_text("U1,A1,5.0\n")
    with pytest.raises(DataError, match="expected user,item,rating,timestamp"):
        list(data.read_raw_interactions(p))


@pytest.mark.parametrize("seq_lines, msg", [
    (["user_id\titem_ids", "0\t1 2 x"], "malformed line"),
    (["user_id\titem_ids", "0\t1 2 99"], r"sequences.tsv.gz:2: item id 99 is outside \[0, 3\)"),
    (["user_id\titem_ids", "0\t1 -4 2"], r"item id -4 is outside \[0, 3\)"),
    (["user_id\titem_ids"], r"no users \(only the header\)"),
    (["user_id\titem_ids", "0\t"], r"sequences.tsv.gz:2: user 0 has no items"),
    (["uid\titems", "0\t1 2"], "header"),
    (["user_id\titem_ids", "1\t1 2"], "malformed line"),
])
def test_malformed_prepared_files_get_clear_errors(tmp_path, seq_lines, msg):
    with gzip.open(tmp_path / "sequences.tsv.gz", "wt") as f:
        f.write("\n".join(seq_lines) + "\n")
    with gzip.open(tmp_path / "items.jsonl.gz", "wt") as f:
        for i in range(3):
            f.write(json.dumps({"item_id": i, "title": "t"}) + "\n")
    with pytest.raises(DataError, match=msg):
        data.read_prepared(tmp_path)


def test_missing_files_and_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="missing data file"):
        data.read_prepared(tmp_path)
    with pytest.raises(DataError, match="no data set 'Movies'"):
        data.load_dataset(config.DataConfig(dataset="Movies"))
    with gzip.open(tmp_path / "meta.json.gz", "wt") as f:
        f.write("{'asin': 'A1', 'title': 'ok'}\nthis is not a record\n")
    with pytest.raises(DataError, match=r"meta.json.gz:2: neither JSON nor a Python dict"):
        data.read_raw_meta(tmp_path / "meta.json.gz")


def test_content_hash_follows_file_content(tmp_path):
    ds = data.make_synthetic(config.DataConfig(n_users=50, n_items=40, n_topics=4))
    data.write_prepared(ds, tmp_path / "S")
    cfg = config.DataConfig(dataset="S", root=str(tmp_path))
    h1 = data.content_hash(cfg)
    ds.sequences[0] = ds.sequences[0][::-1].copy()
    data.write_prepared(ds, tmp_path / "S")
    assert data.content_hash(cfg) != h1


@pytest.mark.parametrize("name", ["sequences.tsv.gz", "items.jsonl.gz"])
def test_truncated_gzip_is_a_data_error_naming_the_file(tmp_path, name):
    ds = data.make_synthetic(config.DataConfig(n_users=50, n_items=40, n_topics=4))
    data.write_prepared(ds, tmp_path / "S")
    path = tmp_path / "S" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{path}: cannot read the file .* truncated or corrupt"):
        data.read_prepared(tmp_path / "S")


def test_leave_one_out_needs_three_interactions_per_user():
    ds = data.make_synthetic(config.DataConfig(n_users=50, n_items=40, n_topics=4))
    ds.sequences[7] = ds.sequences[7][:2]
    with pytest.raises(DataError, match="user 7 has 2 interactions; leave-one-out needs at least 3"):
        data.leave_one_out(ds)
