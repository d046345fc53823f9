"""Datasets: `PairDataset` (an epoch of batches of `Pairs`, as tf.data),
`BatchDataset` (a user's own tf.data batches), and the training dataset a
run's loss needs (`train_dataset`)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from siamese_research.config import GROUP_LOSSES, Config
from siamese_research.core import losses
from siamese_research.data.batching import (TripletPlan, epoch_order, gather_batch,
                                            group_batches, group_index, per_group_order,
                                            spread_order, steps_per_epoch)
from siamese_research.data.mining import MinedPlan, MiningPool
from siamese_research.data.pairs import Pairs
from siamese_research.errors import ConfigError, DataError

TRIPLET_MODES = ("none", "fixed", "from_pairs", "from_corpus", "mined")


class PairDataset:
    """Turns `Pairs` into per-epoch `tf.data` pipelines.

    The arrays are held once as tensors; an epoch is a dataset of index
    batches that gathers and trims its rows, so reshuffling costs nothing and
    resuming at batch k is `skip(k)` on integers.

    Args:
      pairs: the pair pool.
      batch_size: rows (pairs or triplets) per batch; the last may be short.
      seed: with the epoch number, the only source of an epoch's order.
      shuffle: False keeps file order (validation).
      bucket_by_length: batches of similar lengths (`epoch_order`).
      groups: one key per row: every batch holds rows of ONE group (a
        ranking loss's batches: one question's candidates).
      triplets: "none" (pairs), "fixed" (`pairs.triplets`, a triplet file's)
        or "from_pairs" (each positive row of a group that has a negative,
        with one of its group's negatives drawn per (seed, epoch)). Index
        batches are then int64 (batch, 2) `[positive_row, negative_row]`.
        Or "mined": each positive row with a negative drawn per epoch from
        its mined window (`data.mining`; `set_mined` gives the windows);
        "from_corpus": from all the candidates not labelled positive for
        its anchor, uniformly (mining's pool, no window: the random control).
      positives_only: the rows with label >= 0.5 only (in-batch negatives);
        with `pairs.groups`, a batch holds at most one row of a group
        wherever the group sizes allow it (`spread_order`; `bucket_by_length`
        then does not apply).
      per_group: with positives_only, batches of blocks of this many rows
        of one group (`per_group_order`), and each row's label is its
        group's number (the online miners' positives).
      spread: triplets for in-batch negatives (mnrl with a negative per
        row): at most one row of an anchor (group) in a batch where the
        group sizes allow it (`spread_order`; `bucket_by_length` then does
        not apply).
    """

    def __init__(self, pairs: Pairs, batch_size: int, *, seed: int = 0,
                 shuffle: bool = True, bucket_by_length: bool = False,
                 groups: Optional[np.ndarray] = None, triplets: str = "none",
                 positives_only: bool = False, per_group: int = 0,
                 spread: bool = False):
        if triplets not in TRIPLET_MODES:
            raise ValueError(f"triplets={triplets!r}: expected one of "
                             f"{', '.join(TRIPLET_MODES)}")
        if groups is not None and (triplets != "none" or positives_only):
            raise ValueError("group batches are pair batches: no triplets or "
                             "positives_only with groups")
        if triplets != "none" and positives_only:
            raise ValueError("positives_only is for pair batches, not triplets")
        if per_group and (not positives_only or pairs.groups is None):
            raise ValueError("per_group batches are of grouped positives_only pairs")
        self.per_group, self.spread = per_group, spread
        self.pairs = pairs
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.bucket_by_length = bucket_by_length
        self.triplets = triplets
        self.positives_only = positives_only
        # Group batches (a ranking loss): every batch holds rows of one group
        # only (one question's candidates), a group longer than batch_size
        # split into several; `group_batches` gives each epoch's.
        self.groups = None if groups is None else np.asarray(groups)
        self._group_steps = (len(group_batches(self.groups, batch_size, seed, 0))
                             if self.groups is not None else 0)
        self._rows = None  # positives_only: the rows an epoch orders
        self._plan = None  # from_pairs: the rows triplets are drawn from
        if positives_only:
            self._rows = np.flatnonzero(pairs.label >= 0.5).astype(np.int64)
            if not len(self._rows):
                raise DataError(f"no positive pairs (label >= 0.5) among {len(pairs)} "
                                f"to train on")
        if triplets == "fixed":
            if pairs.triplets is None or not len(pairs.triplets):
                raise DataError("no triplets: the pairs come from no triplet file")
        elif triplets == "from_pairs":
            self._plan = TripletPlan(pairs)
            if not len(self._plan.positives):
                raise DataError("no triplets: no group has both a positive "
                                "(label >= 0.5) and a negative pair")
        self.pool = MiningPool.of(pairs) if triplets in ("mined", "from_corpus") else None
        self.mined: Optional[MinedPlan] = None  # (set_mined)
        if triplets == "from_corpus":  # every window empty: uniform draws
            self.mined = MinedPlan(self.pool, np.full((len(self.pool), 1), -1, np.int64))
        self._fixed_length = not pairs.is_text and not pairs.padded
        label = pairs.label.astype(np.float32)
        if per_group:
            label = group_index(pairs.groups).astype(np.float32)
        with tf.device("/cpu:0"):
            self._arrays = tuple(tf.constant(a) for a in (
                pairs.left, pairs.right, pairs.left_length.astype(np.int32),
                pairs.right_length.astype(np.int32), label,
                pairs.weight.astype(np.float32)))
        self._length = len(self.epoch_items(0)) if per_group else None

    def set_mined(self, window: np.ndarray) -> MinedPlan:
        """The windows ("mined" triplets) the next epochs draw from: int64
        (triplets, w) negative rows, -1 pads (`MiningPool.rows_of`)."""
        self.mined = MinedPlan(self.pool, window)
        return self.mined

    def __len__(self) -> int:
        """The rows an epoch trains on: pairs, or triplets."""
        if self.triplets == "fixed":
            return len(self.pairs.triplets)
        if self.triplets == "from_pairs":
            return len(self._plan.positives)
        if self.pool is not None:
            return len(self.pool)
        if self._length is not None:  # per_group: the blocks' rows
            return self._length
        if self._rows is not None:
            return len(self._rows)
        return len(self.pairs)

    @property
    def sides(self) -> int:
        """Encoder inputs per row: 3 for triplets, else 2."""
        return 3 if self.triplets != "none" else 2

    @property
    def steps_per_epoch(self) -> int:
        if self.groups is not None:
            return self._group_steps
        return steps_per_epoch(len(self), self.batch_size)

    @property
    def ranking_groups(self) -> Optional[list]:
        """Each pair's group for ranking metrics (its left text), or None."""
        return self.pairs.left_text

    def pairs_in_batches(self, start: int, end: int) -> int:
        """Rows (pairs or triplets) in batches [start, end) of an epoch (the
        last may be short; with groups, an estimate: the epoch's mean batch
        size)."""
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
        """((left, right), label, weight) -- ((anchor, positive, negative),
        label, weight) for triplets -- with None batch and time dims: the
        compiled steps' signature, which any length fits. (An epoch's dataset
        of `fixed_length` data has a static time dim, see `epoch`.)"""
        # Images keep their static (height, width, channels).
        static = 1 if self.pairs.is_image else 2
        side = tf.TensorSpec([None] * static + list(self.pairs.left.shape[static:]),
                             tf.as_dtype(self.pairs.left.dtype))
        vec = tf.TensorSpec([None], tf.float32)
        return ((side,) * self.sides, vec, vec)

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
        """The same batches as `epoch`, as row indices (int64, (batch,); for
        triplets (batch, 2) `[positive_row, negative_row]`): the trainer
        gathers the rows inside its compiled step (`source`), which on a CPU
        was faster than a tf.data map handing over whole batches."""
        return self._pipeline(epoch, skip_batches, None)

    def epoch_items(self, epoch: int = 0) -> np.ndarray:
        """Epoch `epoch`'s rows in batch order (cut every `batch_size`):
        int64 (n,) pair rows, or (t, 2) triplets. A function of (seed,
        epoch) only. (Not for group batches, see `group_batches`.)"""
        lengths = None
        if self.triplets != "none":
            if self.triplets == "mined" and self.mined is None:
                raise RuntimeError("mined triplets before any mining (set_mined)")
            items = (self.pairs.triplets if self.triplets == "fixed"
                     else self.mined.draw(self.seed, epoch) if self.pool is not None
                     else self._plan.draw(self.seed, epoch))
            if self.spread and self.pairs.groups is not None:
                # In-batch negatives: a second row of an anchor in its batch
                # would be a false negative (as positives_only below).
                order = spread_order(self.pairs.groups[items[:, 0]], self.batch_size,
                                     self.seed, epoch, self.shuffle)
                return np.asarray(items, np.int64)[order]
            if self.bucket_by_length:
                p = self.pairs
                lengths = np.maximum.reduce([p.left_length[items[:, 0]],
                                             p.right_length[items[:, 0]],
                                             p.right_length[items[:, 1]]])
        else:
            items = self._rows if self._rows is not None else np.arange(len(self.pairs))
            if self.per_group:
                # Blocks of a group, cut every batch_size: no further shuffle.
                return items[per_group_order(self.pairs.groups[items], self.per_group,
                                             self.seed, epoch, self.shuffle,
                                             batch_size=self.batch_size)]
            if self._rows is not None and self.pairs.groups is not None:
                order = spread_order(self.pairs.groups[items], self.batch_size,
                                     self.seed, epoch, self.shuffle)
                return items[order].astype(np.int64)
            if self.bucket_by_length:
                lengths = np.maximum(self.pairs.left_length, self.pairs.right_length)[items]
        order = epoch_order(len(items), self.seed, epoch, self.shuffle, lengths,
                            self.batch_size)
        return np.asarray(items, np.int64)[order]

    def _pipeline(self, epoch, skip_batches, gather) -> tf.data.Dataset:
        if self.groups is not None:
            batches = group_batches(self.groups, self.batch_size, self.seed, epoch,
                                    self.shuffle)
            ragged = tf.RaggedTensor.from_row_lengths(
                np.concatenate(batches).astype(np.int64), [len(b) for b in batches])
            ds = tf.data.Dataset.from_tensor_slices(ragged).skip(skip_batches)
            ds = ds.map(lambda idx: idx)  # ragged rows -> dense (batch,) index vectors
            return self._finish(ds, gather)
        ds = tf.data.Dataset.from_tensor_slices(self.epoch_items(epoch))
        ds = ds.batch(self.batch_size).skip(skip_batches)
        return self._finish(ds, gather)

    def _finish(self, ds, gather) -> tf.data.Dataset:
        if gather is not None:
            # A sequential map (run by the prefetch thread): on 2 cores a
            # parallel one only competed with the training step for them.
            ds = ds.map(gather)
        options = tf.data.Options()
        # With the autotuner on, tearing down the previous epoch's iterator
        # blocked for 0.1-0.4 s in about half the epochs (docs/performance.md and its history).
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


def train_dataset(pairs: Pairs, config: Config) -> "PairDataset":
    """The training split's `PairDataset` for a run:

    - `--loss=triplet`: triplets, a triplet file's (`Pairs.triplets`) or,
      with `--triplets=from_pairs`, drawn from each group's pairs;
    - `--loss=mnrl`: the positive pairs, at most one per group in a batch
      where possible;
    - a ranking loss (`losses.GROUPED`): batches of one left text each (its
      candidates);
    - else the usual shuffled pair batches.

    Raises:
      ConfigError: the data cannot give the loss its batches (naming the flag).
    """
    kwargs = dict(seed=config.seed, bucket_by_length=config.bucket_by_length)
    if config.row_negatives:
        mode = _triplet_mode(pairs, config)
        if mode == "from_pairs" and not len(TripletPlan(pairs).positives):
            raise ConfigError("triplets", "from_pairs", "no group has both a positive "
                              "(label >= 0.5) and a negative pair to form a triplet")
        if mode in ("mined", "from_corpus") and not np.any(pairs.label >= 0.5):
            flag, value = (("negatives", "hard") if mode == "mined"
                           else ("triplets", "from_corpus"))
            raise ConfigError(flag, value, f"draws a negative for each positive "
                              f"pair (label >= 0.5); the {len(pairs)} training pairs have "
                              f"none")
        return PairDataset(pairs, config.batch_size, triplets=mode,
                           spread=config.loss == "mnrl", **kwargs)
    if config.loss in ("mnrl", *GROUP_LOSSES):
        if not np.any(pairs.label >= 0.5):
            raise ConfigError("loss", config.loss, f"trains on positive pairs (label >= "
                              f"0.5); the {len(pairs)} training pairs have none")
        if config.loss in GROUP_LOSSES:
            if pairs.groups is None:
                raise ConfigError("loss", config.loss, "draws batches per group: needs "
                                  "grouped pairs (a text pair file: each left text's "
                                  "candidates; image classes; or --data=synthetic)")
            kwargs["per_group"] = config.per_group
        return PairDataset(pairs, config.batch_size, positives_only=True, **kwargs)
    groups = None
    if config.loss in losses.GROUPED:
        if pairs.left_text is None:
            raise ConfigError("loss", config.loss, "ranks the candidates of each left "
                              "text: needs a text pair file")
        groups = (pairs.groups if pairs.groups is not None else
                  np.array([t.strip() for t in pairs.left_text], dtype=object))
    return PairDataset(pairs, config.batch_size, groups=groups, **kwargs)


def _triplet_mode(pairs: Pairs, config: Config) -> str:
    """"mined", "from_pairs" or "fixed" for a run with a negative per row
    (`Config.row_negatives`) on `pairs`."""
    if config.negatives == "hard":
        if pairs.left_text is None:
            raise ConfigError("negatives", "hard", "mines among a text pair file's "
                              "candidates: these pairs have no texts")
        return "mined"
    if config.triplets == "from_corpus":
        if pairs.left_text is None:
            raise ConfigError("triplets", "from_corpus", "draws among a text pair file's "
                              "candidates: these pairs have no texts")
        return "from_corpus"
    if config.triplets == "from_pairs":
        if pairs.groups is None:
            raise ConfigError("triplets", "from_pairs", "needs grouped pairs: a text pair "
                              "file (each left text's candidates) or --data=synthetic")
        return "from_pairs"
    if pairs.triplets is not None:
        return "fixed"
    raise ConfigError("loss", "triplet", "trains on (anchor, positive, negative) "
                      "triplets: give a triplet file (.csv/.tsv/.jsonl with anchor, "
                      "positive and negative columns) or pass --triplets=from_pairs "
                      "to form them from grouped pairs")


def train_description(pairs: Pairs, config: Config) -> str:
    """What a triplet or mnrl run trains on, e.g. "1,229 triplets from 1,229
    positives of 94 groups; 12 positives without a negative dropped"; "" for
    other losses (or data that cannot give the loss its batches)."""
    if config.row_negatives:
        try:
            mode = _triplet_mode(pairs, config)
        except ConfigError:
            return ""
        n_pos = int((pairs.label >= 0.5).sum())
        if mode == "from_corpus":
            return (f"{n_pos:,} triplets, one per positive pair, each negative drawn "
                    f"every epoch from the training right texts not labelled positive "
                    f"for its anchor")
        if mode == "mined":
            lo, hi = config.mine_window
            return (f"{n_pos:,} triplets, one per positive pair, each negative drawn "
                    f"every epoch from ranks {lo}-{hi - 1} of its anchor's nearest "
                    f"non-positive candidates, mined every {config.mine_every} "
                    f"epoch(s) with the encoder as it then is")
        if mode == "fixed":
            text = f"{len(pairs.triplets):,} triplets from the file"
            if pairs.groups is not None and len(pairs.triplets):
                anchors = len(np.unique(group_index(pairs.groups)[pairs.triplets[:, 0]]))
                text += f" ({anchors:,} anchors)"
            return text
        plan = TripletPlan(pairs)
        text = (f"{len(plan.positives):,} triplets from {len(plan.positives):,} "
                f"positives of {plan.num_groups:,} groups, each negative drawn from "
                f"its group every epoch")
        if plan.dropped:
            text += f"; {plan.dropped:,} positives without a negative dropped"
        return text
    if config.loss == "mnrl":
        positive = pairs.label >= 0.5
        n_pos = int(positive.sum())
        text = f"{n_pos:,} positive pairs"
        if pairs.groups is not None and n_pos:
            groups = len(np.unique(group_index(pairs.groups)[positive]))
            text += (f" of {groups:,} groups (at most one per group in a batch "
                     f"where possible)")
        text += f", in-batch negatives; {len(pairs) - n_pos:,} other pairs unused"
        return text
    if config.loss in GROUP_LOSSES:
        positive = pairs.label >= 0.5
        groups = (len(np.unique(group_index(pairs.groups)[positive]))
                  if pairs.groups is not None else 0)
        return (f"{int(positive.sum()):,} positive pairs of {groups:,} groups, in batches "
                f"of {config.per_group} per group; each anchor's triplet mined in its "
                f"batch")
    return ""
