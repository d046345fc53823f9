"""Pair data: sources -> `Pairs` (numpy) -> `tf.data.Dataset`.

Every source produces `Pairs`: right-padded arrays plus per-row lengths. The
dataset yields `((left, right), label, weight)` batches, each side trimmed to
its own longest sequence in the batch, so a batch of short pairs costs short
recurrences. The shuffle order of epoch `e` depends only on `(seed, e)`, which
lets a resumed run skip to the exact batch it stopped at.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from siamese_research.config import Config, DataError


@dataclasses.dataclass
class Pairs:
    """Right-padded pair arrays. `left`/`right` are float (n, time, features)
    or int token ids (n, time); `*_length` count the real steps per row."""

    left: np.ndarray
    right: np.ndarray
    left_length: np.ndarray
    right_length: np.ndarray
    label: np.ndarray  # float32 (n,), in [0, 1]
    left_text: Optional[list] = None  # the raw texts, for text data
    right_text: Optional[list] = None
    weight: Optional[np.ndarray] = None  # per-pair loss weight

    def __post_init__(self):
        n = len(self.label)
        if self.weight is None:
            self.weight = np.ones(n, np.float32)
        for name in ("left", "right", "left_length", "right_length", "weight"):
            if len(getattr(self, name)) != n:
                raise DataError(f"{name} has {len(getattr(self, name))} rows, "
                                f"label has {n}")

    def __len__(self) -> int:
        return len(self.label)

    @property
    def is_text(self) -> bool:
        return self.left.ndim == 2

    @property
    def padded(self) -> bool:
        """Whether some sequence is shorter than the arrays' time axis."""
        return bool(np.any(self.left_length < self.left.shape[1]) or
                    np.any(self.right_length < self.right.shape[1]))

    def take(self, index: np.ndarray) -> "Pairs":
        def pick(x):
            return None if x is None else [x[i] for i in index]

        return Pairs(self.left[index], self.right[index], self.left_length[index],
                     self.right_length[index], self.label[index],
                     pick(self.left_text), pick(self.right_text), self.weight[index])


@dataclasses.dataclass
class PairData:
    """What a run trains and validates on."""

    train: Pairs
    validation: Optional[Pairs]
    vectorizer: object = None  # keras.layers.TextVectorization for text data
    description: str = ""
    # --embeddings: a data.vectors.Coverage, set by training.build, which
    # reads the vector file for this vocabulary.
    embedding_coverage: object = None

    @property
    def is_text(self) -> bool:
        return self.train.is_text

    @property
    def padded(self) -> bool:
        """Whether any split has padding (then the encoder needs a mask)."""
        return any(p is not None and p.padded for p in (self.train, self.validation))


def load(config: Config) -> PairData:
    """Builds the run's train/validation `Pairs` from `config.data`."""
    from siamese_research.data import builtin

    if config.data == "synthetic":
        pairs = builtin.synthetic(num_samples=config.num_samples,
                                  timesteps=config.timesteps,
                                  features=config.features,
                                  prototypes=config.prototypes,
                                  noise=config.noise, seed=config.seed)
        desc = (f"synthetic: {config.num_samples} pairs of 5-{config.timesteps} "
                f"steps x {config.features} features, {config.prototypes} prototypes")
    elif config.data == "random":
        pairs = builtin.random_pairs(num_samples=config.num_samples,
                                     timesteps=config.timesteps,
                                     features=config.features, seed=config.seed)
        desc = (f"random: {config.num_samples} pairs of {config.timesteps} steps x "
                f"{config.features} features, random labels")
    else:
        from siamese_research.data import files

        return files.load(config)
    train, validation = split_last(pairs, config.validation_split)
    _apply_class_weight(train, config.class_weight)
    return PairData(train, validation, None, desc)


def split_last(pairs: Pairs, fraction: float):
    """Holds out the last `fraction` of rows, as `keras.Model.fit` does."""
    n_val = int(round(len(pairs) * fraction))
    if n_val == 0:
        return pairs, None
    if n_val >= len(pairs):
        raise DataError(f"validation_split={fraction} leaves no training pairs "
                        f"out of {len(pairs)}")
    idx = np.arange(len(pairs))
    return pairs.take(idx[:-n_val]), pairs.take(idx[-n_val:])


def _apply_class_weight(pairs: Pairs, mode: str) -> None:
    if mode != "balanced":
        return
    positive = pairs.label >= 0.5
    n, n_pos = len(pairs), int(positive.sum())
    if n_pos in (0, n):
        return
    pairs.weight = np.where(positive, n / (2.0 * n_pos),
                            n / (2.0 * (n - n_pos))).astype(np.float32)


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


class PairDataset:
    """Turns `Pairs` into per-epoch `tf.data` pipelines.

    The arrays are held once as tensors; an epoch is a dataset of index
    batches that gathers and trims its rows, so reshuffling costs nothing and
    resuming at batch k is `skip(k)` on integers.
    """

    def __init__(self, pairs: Pairs, batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, bucket_by_length: bool = False,
                 groups: Optional[np.ndarray] = None):
        self.pairs = pairs
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.bucket_by_length = bucket_by_length
        # Group batches (a ranking loss): every batch holds rows of one group
        # only (one question's candidates), a group longer than batch_size
        # split into several; `group_batches` gives each epoch's.
        self.groups = None if groups is None else np.asarray(groups)
        self._group_steps = (len(group_batches(self.groups, batch_size, seed, 0))
                             if self.groups is not None else 0)
        self._fixed_length = not pairs.is_text and not pairs.padded
        with tf.device("/cpu:0"):
            self._arrays = tuple(tf.constant(a) for a in (
                pairs.left, pairs.right, pairs.left_length.astype(np.int32),
                pairs.right_length.astype(np.int32), pairs.label.astype(np.float32),
                pairs.weight.astype(np.float32)))

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def steps_per_epoch(self) -> int:
        if self.groups is not None:
            return self._group_steps
        return steps_per_epoch(len(self.pairs), self.batch_size)

    @property
    def ranking_groups(self) -> Optional[list]:
        """Each pair's group for ranking metrics (its left text), or None."""
        return self.pairs.left_text

    def pairs_in_batches(self, start: int, end: int) -> int:
        """Rows in batches [start, end) of an epoch (the last may be short;
        with groups, an estimate: the epoch's mean batch size)."""
        if self.groups is not None:
            return int(round(max(0, end - start) * len(self) / max(self._group_steps, 1)))
        return max(0, min(end * self.batch_size, len(self)) - start * self.batch_size)

    @property
    def fixed_length(self) -> bool:
        """Every float sequence has its arrays' full length (no padding), as
        in the notebook's data: the time dimension is then static."""
        return self._fixed_length

    @property
    def element_spec(self):
        """((left, right), label, weight) with None batch and time dims: the
        compiled steps' signature, which any length fits. (An epoch's dataset
        of `fixed_length` data has a static time dim, see `epoch`.)"""
        side = tf.TensorSpec([None, None] + list(self.pairs.left.shape[2:]),
                             tf.as_dtype(self.pairs.left.dtype))
        vec = tf.TensorSpec([None], tf.float32)
        return ((side, side), vec, vec)

    @property
    def source(self) -> Tuple[tuple, bool]:
        """(the arrays as tensors, trim): what `gather_batch` reads, for a
        compiled step that gathers its own rows from `index_epoch`."""
        return self._arrays, not self.fixed_length

    def epoch(self, epoch: int = 0, skip_batches: int = 0) -> tf.data.Dataset:
        """Epoch `epoch`'s batches, from batch `skip_batches` on. Batches of
        padded data are trimmed to their longest sequence; those of
        `fixed_length` data keep a static time dim (an RNN may unroll)."""
        arrays, trim = self.source
        return self._pipeline(epoch, skip_batches,
                              lambda idx: gather_batch(arrays, idx, trim))

    def index_epoch(self, epoch: int = 0, skip_batches: int = 0) -> tf.data.Dataset:
        """The same batches as `epoch`, as row indices (int64, (batch,)): the
        trainer gathers the rows inside its compiled step (`source`), which
        on a CPU was faster than a tf.data map handing over whole batches."""
        return self._pipeline(epoch, skip_batches, None)

    def _pipeline(self, epoch, skip_batches, gather) -> tf.data.Dataset:
        if self.groups is not None:
            batches = group_batches(self.groups, self.batch_size, self.seed, epoch,
                                    self.shuffle)
            ragged = tf.RaggedTensor.from_row_lengths(
                np.concatenate(batches).astype(np.int64), [len(b) for b in batches])
            ds = tf.data.Dataset.from_tensor_slices(ragged).skip(skip_batches)
            ds = ds.map(lambda idx: idx)  # ragged rows -> dense (batch,) index vectors
            return self._finish(ds, gather)
        lengths = None
        if self.bucket_by_length:
            lengths = np.maximum(self.pairs.left_length, self.pairs.right_length)
        order = epoch_order(len(self.pairs), self.seed, epoch, self.shuffle,
                            lengths, self.batch_size)
        ds = tf.data.Dataset.from_tensor_slices(order.astype(np.int64))
        ds = ds.batch(self.batch_size).skip(skip_batches)
        return self._finish(ds, gather)

    def _finish(self, ds, gather) -> tf.data.Dataset:
        if gather is not None:
            # A sequential map (run by the prefetch thread): on 2 cores a
            # parallel one only competed with the training step for them.
            ds = ds.map(gather)
        options = tf.data.Options()
        # With the autotuner on, tearing down the previous epoch's iterator
        # blocked for 0.1-0.4 s in about half the epochs (docs/benchmarks.md).
        options.autotune.enabled = False
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        return ds.with_options(options).prefetch(2)


class BatchDataset:
    """A `tf.data.Dataset` of `((left, right), label[, weight])` batches in
    `PairDataset`'s place (`Trainer.fit` takes either): every epoch is the
    dataset's own pass, in its own order, and a resumed run skips the
    epoch's first batches.

    Args:
      dataset: batches; their number must be known (`cardinality`).
    """

    ranking_groups = None
    source = None  # whole batches: nothing to gather

    def __init__(self, dataset: tf.data.Dataset):
        if len(dataset.element_spec) == 2:  # no weights: ones
            dataset = dataset.map(lambda x, y: (x, y, tf.ones_like(y, tf.float32)))
        self.dataset = dataset.map(lambda x, y, w: (x, tf.cast(y, tf.float32),
                                                    tf.cast(w, tf.float32)))
        steps = int(dataset.cardinality())
        if steps < 0:
            raise DataError("a tf.data.Dataset given to fit must have a known number of "
                            "batches (dataset.cardinality()); use .take(n) or "
                            "assert_cardinality(n)")
        self.steps_per_epoch = steps
        first = next(iter(self.dataset.take(1)), None)
        self.batch_size = int(first[1].shape[0]) if first is not None else 0

    def pairs_in_batches(self, start: int, end: int) -> int:
        return (end - start) * self.batch_size  # (the last batch may be short)

    @property
    def element_spec(self):
        return tf.nest.map_structure(
            lambda t: tf.TensorSpec([None] * len(t.shape[:2]) + list(t.shape[2:]),
                                    t.dtype), self.dataset.element_spec)

    def index_epoch(self, epoch: int = 0, skip_batches: int = 0) -> tf.data.Dataset:
        return self.dataset.skip(skip_batches)

    def epoch(self, epoch: int = 0, skip_batches: int = 0) -> tf.data.Dataset:
        return self.dataset.skip(skip_batches)


def as_pair_dataset(data):
    """`data` as `Trainer.fit` reads it: a `PairDataset` as it is, a
    `tf.data.Dataset` wrapped in a `BatchDataset`."""
    if isinstance(data, tf.data.Dataset):
        return BatchDataset(data)
    return data


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


def train_dataset(pairs: Pairs, config: Config) -> "PairDataset":
    """The training split's `PairDataset` for a run: batches of one left text
    each (its candidates) for a ranking loss (`losses.GROUPED`), else the
    usual shuffled batches."""
    from siamese_research import losses

    groups = None
    if config.loss in losses.GROUPED:
        if pairs.left_text is None:
            from siamese_research.config import ConfigError
            raise ConfigError("loss", config.loss, "ranks the candidates of each left "
                              "text: needs a text pair file")
        groups = np.array([t.strip() for t in pairs.left_text], dtype=object)
    return PairDataset(pairs, config.batch_size, seed=config.seed,
                       bucket_by_length=config.bucket_by_length, groups=groups)


def gather_batch(arrays: tuple, idx, trim: bool):
    """((left, right), label, weight) of rows `idx` of `PairDataset` arrays;
    with `trim`, each side cut to the batch's longest sequence."""
    left, right, llen, rlen, label, weight = arrays
    lx, rx = tf.gather(left, idx), tf.gather(right, idx)
    if trim:
        # At least 1: with several replicas a short last batch can leave one
        # replica no rows, and the max over none is INT_MIN (a zero-length
        # time axis, which the RNN loop cannot take).
        lx = lx[:, :tf.maximum(tf.reduce_max(tf.gather(llen, idx)), 1)]
        rx = rx[:, :tf.maximum(tf.reduce_max(tf.gather(rlen, idx)), 1)]
    return (lx, rx), tf.gather(label, idx), tf.gather(weight, idx)
