"""Pair data: sources -> `Pairs` (numpy) -> `tf.data.Dataset`.

Every source produces `Pairs`: right-padded arrays plus per-row lengths. The
dataset yields `((left, right), label, weight)` batches, each side trimmed to
its own longest sequence in the batch, so a batch of short pairs costs short
recurrences. The shuffle order of epoch `e` depends only on `(seed, e)`, which
lets a resumed run skip to the exact batch it stopped at.

Four losses train on more than pairs (`config.BRANCH_LOSSES`):

- `--loss=triplet` on `((anchor, positive, negative), label, weight)`
  batches. Its index batches are int64 (batch, 2) rows `[positive_row,
  negative_row]` into the pair pool: anchor = left[positive_row], positive =
  right[positive_row], negative = right[negative_row]. The triplets are a
  triplet file's (`Pairs.triplets`) or, with `--triplets=from_pairs`, each
  positive pair with a negative of its own group drawn anew every epoch;
  `--triplets=from_corpus`, one of all the right texts not labelled
  positive for its left; `--negatives=hard`, one of its mined window
  (`mining`, `train.mining`).
- `--loss=mnrl` on the positive pairs only, `((anchor, positive), label,
  weight)`, a batch's other positives being each anchor's negatives; a batch
  holds at most one row of a group (an anchor) where the data allow it. With
  `--triplets` or `--negatives=hard`, on triplets as above.
- `--loss=batch_hard_triplet` and `batch_semi_hard_triplet` on the positive
  pairs in blocks of `--per_group` rows of one group (`per_group_order`),
  each row's label its group's number.
"""

from __future__ import annotations

from siamese_research.config import Config, image_data
from siamese_research.data import builtin, files, images
from siamese_research.data.batching import (TripletPlan, epoch_order, gather_batch,  # noqa: F401
                                            group_batches, group_index, per_group_order,
                                            spread_order, steps_per_epoch)
from siamese_research.data.mining import MinedPlan, MiningPool  # noqa: F401
from siamese_research.data.datasets import (TRIPLET_MODES, BatchDataset,  # noqa: F401
                                            PairDataset, as_pair_dataset, train_dataset,
                                            train_description)
from siamese_research.data.pairs import (PairData, Pairs, apply_class_weight,  # noqa: F401
                                         remap_triplets, split_last)
from siamese_research.errors import DataError

def load(config: Config) -> PairData:
    """Builds the run's train/validation `Pairs` from `config.data`."""
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
    elif image_data(config.data):
        return _describe(load_images(config), config)
    else:
        return _describe(files.load(config), config)
    train, validation = split_last(pairs, config.validation_split)
    apply_class_weight(train, config.class_weight)
    return _describe(PairData(train, validation, None, desc), config)


def load_images(config: Config) -> PairData:
    """--data=digits or a folder: the images split (--split), then
    --num_samples balanced pairs, the validation's share
    (--validation_split) drawn from the held-out images."""
    every = images.load_images(config.data, config.image_shape, config.channels)
    train, validation = images.split(every, config.validation_split, config.split,
                                     config.seed)
    n_val = int(round(config.num_samples * config.validation_split)) if validation else 0
    if config.num_samples - n_val < 2:
        raise DataError(f"--num_samples={config.num_samples} leaves no training pairs")
    train_pairs, _ = images.draw_pairs(train, config.num_samples - n_val, config.seed)
    val_pairs = None
    if validation is not None and n_val:
        val_pairs, _ = images.draw_pairs(validation, n_val, config.seed,
                                         images.VALIDATION_SALT, "validation")
    apply_class_weight(train_pairs, config.class_weight)
    source = "digits (MNIST, 5,000 of them)" if config.data == "digits" else config.data
    desc = images.describe(every, train, validation, config.split, source)
    return PairData(train_pairs, val_pairs, None, desc, images=(train, validation))


def _describe(data: PairData, config: Config) -> PairData:
    """Adds what a triplet or mnrl run trains on to the description."""
    extra = train_description(data.train, config)
    if extra:
        data.description = f"{data.description}; {extra}" if data.description else extra
    return data
