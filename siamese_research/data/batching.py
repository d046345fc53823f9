"""Batch order: which rows make which batch of which epoch, a function of
(seed, epoch) only, so a resumed run continues at the exact batch; the
triplets and in-batch groups a loss's batches are drawn from; and one
batch gathered from the arrays (`gather_batch`, inside the step)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from siamese_research.data.pairs import Pairs
from siamese_research.errors import DataError

def steps_per_epoch(num_pairs: int, batch_size: int) -> int:
    return -(-num_pairs // batch_size)


def epoch_order(num_pairs: int, seed: int, epoch: int, shuffle: bool = True,
                lengths: Optional[np.ndarray] = None,
                batch_size: int = 0) -> np.ndarray:
    """The row order of one epoch: a function of (seed, epoch) only.

    With `lengths` (bucketing), rows are shuffled, then sorted by length within
    windows of 32 batches, and the resulting batches shuffled again, so batches
    hold similar lengths while the epoch stays random.
    """
    if not shuffle:
        return np.arange(num_pairs)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_pairs)
    if lengths is None or batch_size <= 0:
        return order
    window = batch_size * 32
    chunks = []
    for start in range(0, num_pairs, window):
        part = order[start:start + window]
        chunks.append(part[np.argsort(lengths[part], kind="stable")])
    order = np.concatenate(chunks)
    batches = [order[i:i + batch_size] for i in range(0, num_pairs, batch_size)]
    # Keep the (possibly short) last batch last so every other batch is full.
    head = rng.permutation(len(batches) - 1) if len(batches) > 1 else []
    return np.concatenate([batches[i] for i in head] + [batches[-1]])


def group_index(groups: np.ndarray) -> np.ndarray:
    """int64 (n,) group numbers 0..g-1 of `groups` keys (sorted keys' order,
    or first appearance when the keys do not sort)."""
    try:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        return inverse.reshape(-1).astype(np.int64)
    except TypeError:
        seen = {}
        return np.array([seen.setdefault(k, len(seen)) for k in groups], np.int64)


class TripletPlan:
    """What `--triplets=from_pairs` draws from: every positive row (label >=
    0.5) of a group with at least one negative (label < 0.5), and each one's
    group negatives.

    Attributes:
      positives: int64 (t,) the positive rows kept, ascending.
      dropped: positives of groups without a negative (the same every epoch).
      num_groups: groups that give triplets.
    """

    def __init__(self, pairs: Pairs):
        if pairs.groups is None:
            raise DataError("triplets from pairs need grouped pairs (Pairs.groups)")
        group = group_index(pairs.groups)
        positive = pairs.label >= 0.5
        negatives = np.flatnonzero(~positive)
        self._negatives = negatives[np.argsort(group[negatives], kind="stable")]
        counts = np.bincount(group[negatives], minlength=int(group.max()) + 1 if len(group) else 0)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        rows = np.flatnonzero(positive)
        has = counts[group[rows]] > 0
        self.positives = rows[has].astype(np.int64)
        self.dropped = int((~has).sum())
        self.num_groups = len(np.unique(group[self.positives]))
        self._start = starts[group[self.positives]]
        self._count = counts[group[self.positives]]

    def draw(self, seed: int, epoch: int) -> np.ndarray:
        """int64 (t, 2) `[positive_row, negative_row]`, the negative uniform
        among the positive's group's, by `np.random.default_rng([seed,
        epoch, 2])`: in `positives` order."""
        rng = np.random.default_rng([seed, epoch, 2])
        pick = rng.integers(0, self._count) if len(self.positives) else \
            np.zeros(0, np.int64)
        return np.stack([self.positives, self._negatives[self._start + pick]],
                        axis=1).astype(np.int64)


def spread_order(groups: np.ndarray, batch_size: int, seed: int, epoch: int,
                 shuffle: bool = True) -> np.ndarray:
    """An order of rows 0..n-1 whose consecutive `batch_size` cuts hold at
    most one row of a group wherever the group sizes allow it (as
    sentence-transformers' NoDuplicatesDataLoader: a second row of the same
    anchor in a batch would be a false in-batch negative).

    The groups are laid out in a (seed, epoch) random order, each group's
    rows shuffled, and dealt column-wise into the epoch's batches (all full
    but the last): the first slot of every batch, then the second, ... so a
    group's rows land in different batches unless it has more rows than
    there are batches (B - 1 when the last batch is short). The batches then
    come in a random order, the short last one last. A function of (seed,
    epoch) only.
    """
    n = len(groups)
    if n == 0:
        return np.zeros(0, np.int64)
    group = group_index(groups)
    rng = np.random.default_rng([seed, epoch, 3])
    rows = rng.permutation(n) if shuffle else np.arange(n)
    layout = rng.permutation(int(group.max()) + 1) if shuffle else \
        np.arange(int(group.max()) + 1)
    rank = np.empty_like(layout)
    rank[layout] = np.arange(len(layout))
    seq = rows[np.argsort(rank[group[rows]], kind="stable")]
    num_batches = steps_per_epoch(n, batch_size)
    last = n - (num_batches - 1) * batch_size  # rows of the last batch
    slot = np.repeat(np.arange(batch_size), num_batches)  # column-wise slots
    batch = np.tile(np.arange(num_batches), batch_size)
    valid = (batch < num_batches - 1) | (slot < last)
    out = np.empty(n, np.int64)
    out[batch[valid] * batch_size + slot[valid]] = seq
    if shuffle and num_batches > 2:
        head = rng.permutation(num_batches - 1)
        out = np.concatenate([out[b * batch_size:(b + 1) * batch_size] for b in head] +
                             [out[(num_batches - 1) * batch_size:]])
    return out


def per_group_order(groups: np.ndarray, per_group: int, seed: int, epoch: int,
                    shuffle: bool = True, batch_size: int = 0) -> np.ndarray:
    """Rows in blocks of `per_group` rows of ONE group (pytorch-metric-
    learning's MPerClassSampler), blocks in a random order: cut every
    `batch_size` (a multiple of `per_group`), a batch holds batch_size /
    per_group blocks, so every row has positives in its batch.

    Each group's rows are shuffled and cut into blocks; a group's last
    block, when short, is filled with rows of the group drawn again (with
    replacement, so a group of one row gives a block of that row). With
    `batch_size`, blocks drawn again (uniformly, with the epoch's rng) fill
    the last batch, so no batch is a lone block with no negatives. The
    length (sum over groups of ceil(n_g / M) * M, then whole batches) is the
    same every epoch. A function of (seed, epoch) only.
    """
    m = int(per_group)
    rng = np.random.default_rng([seed, epoch, 5])
    group = group_index(groups)
    by_group = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[by_group])) + 1
    blocks = []
    for rows in np.split(by_group, bounds) if len(group) else []:
        if shuffle:
            rows = rng.permutation(rows)
        short = -len(rows) % m
        if short:
            rows = np.concatenate([rows, rng.choice(rows, short, replace=True)])
        blocks.extend(rows.reshape(-1, m))
    if not blocks:
        return np.zeros(0, np.int64)
    order = rng.permutation(len(blocks)) if shuffle else np.arange(len(blocks))
    per_batch = max(batch_size // m, 1)
    short = -len(order) % per_batch
    if short:
        order = np.concatenate([order, rng.choice(len(blocks), short,
                                                  replace=short > len(blocks))])
    return np.concatenate([blocks[i] for i in order]).astype(np.int64)


def group_batches(groups: np.ndarray, batch_size: int, seed: int, epoch: int,
                  shuffle: bool = True) -> list:
    """One epoch's batches of row indices, each from ONE group: the groups
    in a (seed, epoch) order, each group's rows shuffled and cut into
    batches of at most `batch_size`. A function of (seed, epoch) only, so
    a resumed run skips to the same batch."""
    rng = np.random.default_rng([seed, epoch, 1])
    keys, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(keys))]
    order = rng.permutation(len(members)) if shuffle else np.arange(len(members))
    out = []
    for g in order:
        rows = rng.permutation(members[g]) if shuffle else members[g]
        out.extend(rows[i:i + batch_size] for i in range(0, len(rows), batch_size))
    return out


def gather_batch(arrays: tuple, idx, trim: bool):
    """The batch of index batch `idx` from `PairDataset` arrays, by the
    STATIC rank of `idx`:

    - (batch,) rows: ((left, right), label, weight);
    - (batch, 2) `[positive_row, negative_row]` triplets: ((anchor,
      positive, negative), label, weight) with anchor = left[positive_row],
      positive = right[positive_row], negative = right[negative_row], label
      and weight of positive_row.

    With `trim`, each side is cut to the batch's longest sequence on it.
    """
    left, right, llen, rlen, label, weight = arrays
    idx = tf.convert_to_tensor(idx)
    if idx.shape.rank == 2:
        rows = idx[:, 0]
        sides = ((left, llen, rows), (right, rlen, rows), (right, rlen, idx[:, 1]))
    else:
        rows = idx
        sides = ((left, llen, idx), (right, rlen, idx))
    out = []
    for x, length, which in sides:
        x = tf.gather(x, which)
        if trim:
            # At least 1: with several replicas a short last batch can leave one
            # replica no rows, and the max over none is INT_MIN (a zero-length
            # time axis, which the RNN loop cannot take).
            x = x[:, :tf.maximum(tf.reduce_max(tf.gather(length, which)), 1)]
        out.append(x)
    return tuple(out), tf.gather(label, rows), tf.gather(weight, rows)
