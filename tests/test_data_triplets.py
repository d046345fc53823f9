"""Triplet and mnrl training data: groups, triplet index batches, triplet
files, in-batch-negative batches and their errors (no model is trained)."""

import csv

import numpy as np
import pytest

from conftest import tiny, write_pairs
from siamese_research import data as D
from siamese_research.config import ConfigError, DataError
from siamese_research.data import builtin, files, tables


def _pairs(labels, groups, t=3, f=2):
    """Float pairs whose every value names its row: left = row, right =
    100 + row, so a gathered batch shows which rows it holds."""
    n = len(labels)
    rows = np.arange(n, dtype=np.float32)[:, None, None]
    left = np.broadcast_to(rows, (n, t, f)).copy()
    right = np.broadcast_to(100 + rows, (n, t, f)).copy()
    full = np.full(n, t)
    return D.Pairs(left, right, full, full.copy(), np.asarray(labels, np.float32),
                   weight=np.arange(n, dtype=np.float32) / 10,
                   groups=None if groups is None else np.asarray(groups))


# 3 groups: g0 has 2 positives, 2 negatives; g1 1 positive, 1 negative; g2 a
# positive without a negative (dropped by from_pairs).
LABELS = [1, 1, 0, 0, 1, 0, 1, 0, 1]
GROUPS = ["a", "a", "a", "a", "b", "b", "c", "a", "a"]


def test_gather_of_a_triplet_batch_takes_anchor_positive_negative_rows():
    pairs = _pairs(LABELS, GROUPS)
    ds = D.PairDataset(pairs, 4)
    arrays, trim = ds.source
    idx = np.array([[0, 2], [4, 5], [8, 7]], np.int64)
    (a, p, n), label, weight = D.gather_batch(arrays, idx, trim)
    np.testing.assert_array_equal(a.numpy()[:, 0, 0], [0, 4, 8])
    np.testing.assert_array_equal(p.numpy()[:, 0, 0], [100, 104, 108])
    np.testing.assert_array_equal(n.numpy()[:, 0, 0], [102, 105, 107])
    np.testing.assert_array_equal(label.numpy(), [1, 1, 1])
    np.testing.assert_allclose(weight.numpy(), [0.0, 0.4, 0.8])
    # Rank 1 stays a pair batch.
    (left, right), label, _ = D.gather_batch(arrays, np.array([2, 5]), trim)
    np.testing.assert_array_equal(right.numpy()[:, 0, 0], [102, 105])
    np.testing.assert_array_equal(label.numpy(), [0, 0])


def test_triplet_gather_trims_each_side_to_its_own_longest():
    pairs = _pairs([1, 0, 1, 0], ["x", "x", "y", "y"], t=6)
    pairs.left_length[:] = [2, 2, 3, 3]
    pairs.right_length[:] = [4, 5, 1, 1]
    ds = D.PairDataset(pairs, 4, triplets="from_pairs")
    (a, p, n), _, _ = D.gather_batch(ds.source[0], np.array([[0, 1]]), ds.source[1])
    assert (a.shape[1], p.shape[1], n.shape[1]) == (2, 4, 5)
    (a, p, n), _, _ = D.gather_batch(ds.source[0], np.array([[2, 3]]), ds.source[1])
    assert (a.shape[1], p.shape[1], n.shape[1]) == (3, 1, 1)


def test_from_pairs_triplets_share_a_group_and_redraw_negatives_by_epoch():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 6, 120)
    labels = (rng.random(120) < 0.4).astype(np.float32)
    labels[groups == 5] = 1  # a group without negatives: its positives dropped
    pairs = _pairs(labels, groups)
    ds = D.PairDataset(pairs, 8, seed=3, triplets="from_pairs")
    has_negative = np.array([np.any((groups == g) & (labels == 0)) for g in groups])
    expected = np.flatnonzero((labels == 1) & has_negative)
    assert len(ds) == len(expected) < int(labels.sum())
    assert ds.steps_per_epoch == -(-len(expected) // 8)
    assert len(ds.element_spec[0]) == 3

    def epoch(e):
        return np.concatenate([b.numpy() for b in ds.index_epoch(e)])

    e0, e1 = epoch(0), epoch(1)
    for t in (e0, e1):
        assert t.shape == (len(expected), 2) and t.dtype == np.int64
        np.testing.assert_array_equal(np.sort(t[:, 0]), expected)  # every positive once
        assert (groups[t[:, 0]] == groups[t[:, 1]]).all()
        assert (labels[t[:, 0]] == 1).all() and (labels[t[:, 1]] == 0).all()
    np.testing.assert_array_equal(epoch(0), e0)  # same (seed, epoch): same batches
    by_pos0 = dict(map(tuple, e0))
    assert any(by_pos0[p] != n for p, n in e1)  # negatives redrawn
    again = D.PairDataset(pairs, 8, seed=3, triplets="from_pairs")
    np.testing.assert_array_equal(np.concatenate(
        [b.numpy() for b in again.index_epoch(1)]), e1)
    other_seed = D.PairDataset(pairs, 8, seed=4, triplets="from_pairs")
    assert not np.array_equal(np.concatenate(
        [b.numpy() for b in other_seed.index_epoch(1)]), e1)


def test_from_pairs_resumes_at_the_same_batch():
    pairs = _pairs(LABELS * 4, [g + str(i // 9) for i, g in enumerate(GROUPS * 4)])
    ds = D.PairDataset(pairs, 3, seed=1, triplets="from_pairs")
    full = [b.numpy() for b in ds.index_epoch(2)]
    resumed = [b.numpy() for b in ds.index_epoch(2, skip_batches=2)]
    assert len(resumed) == len(full) - 2 == ds.steps_per_epoch - 2
    for x, y in zip(full[2:], resumed):
        np.testing.assert_array_equal(x, y)
    batches = list(ds.epoch(2, skip_batches=2))
    (a, p, n), label, _ = batches[0]
    np.testing.assert_array_equal(a.numpy()[:, 0, 0], full[2][:, 0])
    np.testing.assert_array_equal(n.numpy()[:, 0, 0], 100 + full[2][:, 1])
    assert ds.pairs_in_batches(0, ds.steps_per_epoch) == len(ds)


def test_synthetic_groups_are_the_left_prototype():
    kw = dict(num_samples=200, timesteps=6, features=3, prototypes=5, noise=0.0, seed=11)
    pairs = builtin.synthetic(**kw)
    # The generator's draws, repeated: the left item's prototype is `a`.
    rng = np.random.default_rng(11)
    protos = rng.standard_normal((5, 6, 3)).astype(np.float32)
    label = (rng.random(200) < 0.5).astype(np.float32)
    a = rng.integers(0, 5, 200)
    np.testing.assert_array_equal(pairs.groups, a)
    np.testing.assert_array_equal(pairs.label, label)

    def proto_of(x, length):  # noise 0: a prefix of its prototype
        return [int(np.argmin([np.abs(protos[k, :m] - xi[:m]).sum() for k in range(5)]))
                for xi, m in zip(x, length)]

    np.testing.assert_array_equal(proto_of(pairs.left, pairs.left_length), a)
    right = np.array(proto_of(pairs.right, pairs.right_length))
    ds = D.PairDataset(pairs, 16, seed=2, triplets="from_pairs")
    t = np.concatenate([b.numpy() for b in ds.index_epoch(0)])
    assert (right[t[:, 0]] == a[t[:, 0]]).all()  # positive: the anchor's prototype
    assert (right[t[:, 1]] != a[t[:, 0]]).all()  # negative: another prototype
    assert builtin.random_pairs(num_samples=4, timesteps=2, features=2).groups is None
    train, _ = D.split_last(pairs, 0.25)
    np.testing.assert_array_equal(train.groups, a[:150])


def _write_triplets(path, n=6, columns=("anchor", "positive", "negative")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for i in range(n):
            w.writerow([f"question number {i} about topic{i}", f"answer {i} for topic{i}",
                        f"unrelated reply {i}"])
    return str(path)


def test_triplet_file_loads_as_a_pool_of_2n_pairs(tmp_path):
    path = _write_triplets(tmp_path / "t.csv")
    config = tiny(data=path, validation_split=0.0, max_tokens=60, max_length=8)
    data = D.load(config)
    p = data.train
    assert len(p) == 12 and p.left_text[:6] == p.left_text[6:]
    np.testing.assert_array_equal(p.label, [1] * 6 + [0] * 6)
    np.testing.assert_array_equal(p.triplets, [[i, 6 + i] for i in range(6)])
    assert p.right_text[0] == "answer 0 for topic0" and p.right_text[6] == "unrelated reply 0"
    assert list(p.groups[:6]) == list(p.groups[6:]) and len(set(p.groups)) == 6
    assert "6 triplets as 12 pairs" in data.description
    # evaluation's reader gives the same pool
    pool, skipped = files.load_file(path, config, data.vectorizer)
    assert skipped == 0 and len(pool) == 12
    np.testing.assert_array_equal(pool.triplets, p.triplets)
    # --loss=triplet trains on the file's triplets, fixed
    trip = config.replace(loss="triplet", monitor="val_auc")
    ds = D.train_dataset(p, trip)
    assert ds.triplets == "fixed" and len(ds) == 6
    got = np.concatenate([b.numpy() for b in ds.index_epoch(0)])
    np.testing.assert_array_equal(got[np.argsort(got[:, 0])], p.triplets)
    assert "6 triplets from the file" in D.train_description(p, trip)
    # other losses: the pairs (mnrl: the positives)
    assert len(D.train_dataset(p, config)) == 12
    assert len(D.train_dataset(p, config.replace(loss="mnrl", monitor="val_auc"))) == 6


def test_triplet_file_split_keeps_triplets_whole(tmp_path):
    path = _write_triplets(tmp_path / "t.csv", n=10)
    data = D.load(tiny(data=path, validation_split=0.3, max_tokens=80, max_length=8))
    train, val = data.train, data.validation
    assert len(train) + len(val) == 20 and len(val) == 6
    for part in (train, val):
        assert len(part.triplets) * 2 == len(part)  # every row in one triplet
        a, n = part.triplets[:, 0], part.triplets[:, 1]
        assert [part.left_text[i] for i in a] == [part.left_text[i] for i in n]
        assert (part.label[a] == 1).all() and (part.label[n] == 0).all()
    assert not set(train.left_text) & set(val.left_text)
    assert "3 triplets of 3 anchors held out" in data.description


def test_pair_file_groups_and_a_triplet_file_as_validation_data(tmp_path):
    path = write_pairs(tmp_path / "pairs.csv", questions=4)
    val = _write_triplets(tmp_path / "val.csv", n=3)
    config = tiny(data=path, validation_data=val, max_tokens=60, max_length=8,
                  loss="triplet", triplets="from_pairs")
    data = D.load(config)
    assert list(data.train.groups) == [t.strip() for t in data.train.left_text]
    assert data.train.triplets is None
    assert len(data.validation) == 6
    np.testing.assert_array_equal(data.validation.triplets, [[0, 3], [1, 4], [2, 5]])
    assert "4 triplets from 4 positives of 4 groups" in data.description
    t = D.train_dataset(data.train, config).epoch_items(0)
    assert all(data.train.left_text[p] == data.train.left_text[n] for p, n in t)


def test_triplet_file_columns_by_flag_and_errors(tmp_path):
    path = _write_triplets(tmp_path / "t.csv", columns=("q", "pos", "neg"))
    rows = tables.read_text_rows(path, tiny(data=path, anchor_column="q",
                                           positive_column="pos", negative_column="neg"))
    assert rows.is_triplet_file and len(rows) == 12 and rows.columns == ("q", "pos", "neg")
    with pytest.raises(DataError) as e:
        tables.read_text_rows(path, tiny(data=path, negative_column="neg"))
    msg = str(e.value)
    assert "\n" not in msg and "t.csv" in msg and "--anchor_column" in msg
    plain = _write_triplets(tmp_path / "u.csv")
    with pytest.raises(DataError, match=r"u\.csv.*--label_column") as e:
        tables.read_text_rows(plain, tiny(data=plain, label_column="label"))
    assert "\n" not in str(e.value)


def test_triplet_loss_on_pair_data_needs_from_pairs_or_a_triplet_file():
    pairs = _pairs(LABELS, GROUPS)
    with pytest.raises(ConfigError) as e:
        D.train_dataset(pairs, tiny(loss="triplet"))
    assert str(e.value).startswith("--loss=triplet:") and "--triplets=from_pairs" in str(e.value)
    assert "\n" not in str(e.value)
    random = builtin.random_pairs(num_samples=8, timesteps=2, features=2)
    with pytest.raises(ConfigError) as e:
        D.train_dataset(random, tiny(loss="triplet", triplets="from_pairs"))
    assert str(e.value).startswith("--triplets=from_pairs:")
    assert "needs grouped pairs" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="^--loss=mnrl:"):
        D.train_dataset(_pairs([0, 0], ["a", "b"]), tiny(loss="mnrl"))
    with pytest.raises(ConfigError, match="^--triplets=from_pairs:"):
        D.train_dataset(_pairs([1, 0], ["a", "b"]),
                        tiny(loss="triplet", triplets="from_pairs"))


def test_from_pairs_description_counts_triplets_groups_and_dropped():
    text = D.train_description(_pairs(LABELS, GROUPS),
                               tiny(loss="triplet", triplets="from_pairs"))
    assert text.startswith("4 triplets from 4 positives of 2 groups")
    assert "1 positives without a negative dropped" in text
    assert D.train_description(_pairs(LABELS, GROUPS), tiny()) == ""


def test_mnrl_batches_hold_positives_one_per_group_when_possible():
    rng = np.random.default_rng(5)
    # 40 positives in 18 groups (at most 4 rows each: fewer than the 5 batches)
    groups = np.concatenate([np.repeat(np.arange(10), 4)[:30], np.arange(10, 20)])
    labels = np.ones(len(groups))
    negatives = rng.integers(0, 20, 25)
    pairs = _pairs(np.concatenate([labels, np.zeros(25)]),
                   np.concatenate([groups, negatives]))
    ds = D.train_dataset(pairs, tiny(loss="mnrl", batch_size=8))
    assert len(ds) == 40 and ds.steps_per_epoch == 5
    assert len(ds.element_spec[0]) == 2
    for e in (0, 1):
        batches = [b.numpy() for b in ds.index_epoch(e)]
        assert all(b.ndim == 1 for b in batches)
        rows = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(rows), np.arange(40))  # positives only
        for b in batches:
            assert len(set(pairs.groups[b])) == len(b)  # no group twice
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in ds.index_epoch(1)]),
                                  np.concatenate([b.numpy() for b in ds.index_epoch(1)]))
    assert not np.array_equal(ds.epoch_items(0), ds.epoch_items(1))
    (left, right), label, _ = next(iter(ds.epoch(0)))
    assert (label.numpy() == 1).all()
    np.testing.assert_array_equal(right.numpy()[:, 0, 0], 100 + left.numpy()[:, 0, 0])
    # without groups: plain shuffled batches of the positives
    plain = D.train_dataset(_pairs(pairs.label, None), tiny(loss="mnrl", batch_size=8))
    np.testing.assert_array_equal(np.sort(plain.epoch_items(0)), np.arange(40))


def test_spread_order_when_a_group_outnumbers_the_batches():
    groups = np.array([0] * 6 + [1, 2, 3, 4])  # 10 rows, 3 batches of 4: 6 > 3
    order = D.spread_order(groups, 4, seed=0, epoch=0)
    np.testing.assert_array_equal(np.sort(order), np.arange(10))
    batches = [groups[order[i:i + 4]] for i in range(0, 10, 4)]
    assert [len(b) for b in batches] == [4, 4, 2]
    # group 0's 6 rows reach all 3 batches: 3 repeats, the fewest possible
    assert all((b == 0).any() for b in batches)
    assert sum(len(b) - len(set(b)) for b in batches) == 3
