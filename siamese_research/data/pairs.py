"""`Pairs` (numpy arrays of a split) and `PairData` (what a run trains and
validates on): what every data source produces."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from siamese_research.errors import DataError


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
    # One hashable key per row: the rows sharing an anchor (text files: the
    # stripped left text; synthetic data: the left item's prototype). None
    # when rows have no such relation (random data, .npz files).
    groups: Optional[np.ndarray] = None
    # A triplet file's fixed triplets: int64 (t, 2) rows [positive_row,
    # negative_row] of this pool (same anchor, labels 1 and 0), or None.
    triplets: Optional[np.ndarray] = None

    def __post_init__(self):
        n = len(self.label)
        if self.weight is None:
            self.weight = np.ones(n, np.float32)
        for name in ("left", "right", "left_length", "right_length", "weight"):
            if len(getattr(self, name)) != n:
                raise DataError(f"{name} has {len(getattr(self, name))} rows, "
                                f"label has {n}")
        if self.groups is not None:
            self.groups = np.asarray(self.groups)
            if len(self.groups) != n:
                raise DataError(f"groups has {len(self.groups)} rows, label has {n}")
        if self.triplets is not None:
            self.triplets = np.asarray(self.triplets, np.int64).reshape(-1, 2)
            if len(self.triplets) and (self.triplets.min() < 0 or
                                       self.triplets.max() >= n):
                raise DataError(f"triplets index rows outside 0..{n - 1}")

    def __len__(self) -> int:
        return len(self.label)

    @property
    def is_text(self) -> bool:
        return self.left.ndim == 2

    @property
    def is_image(self) -> bool:
        """float (n, height, width, channels) images on both sides."""
        return self.left.ndim == 4

    @property
    def padded(self) -> bool:
        """Whether some sequence is shorter than the arrays' time axis (never
        for images)."""
        if self.is_image:
            return False
        return bool(np.any(self.left_length < self.left.shape[1]) or
                    np.any(self.right_length < self.right.shape[1]))

    def take(self, index: np.ndarray) -> "Pairs":
        def pick(x):
            return None if x is None else [x[i] for i in index]

        index = np.asarray(index, np.int64)
        return Pairs(self.left[index], self.right[index], self.left_length[index],
                     self.right_length[index], self.label[index],
                     pick(self.left_text), pick(self.right_text), self.weight[index],
                     None if self.groups is None else self.groups[index],
                     None if self.triplets is None else
                     remap_triplets(self.triplets, index, len(self)))


def remap_triplets(triplets: np.ndarray, index: np.ndarray, num_rows: int) -> np.ndarray:
    """`triplets` (t, 2) rows of a pool of `num_rows`, as rows of the pool's
    `take(index)`: the triplets both of whose rows were taken, renumbered."""
    new = np.full(num_rows, -1, np.int64)
    new[np.asarray(index, np.int64)] = np.arange(len(index))
    out = new[np.asarray(triplets, np.int64).reshape(-1, 2)]
    return out[(out >= 0).all(axis=1)]


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
    # Image data: the (train, validation) `images.ImageSet`s the pairs were
    # drawn from (validation None without a split), for one-shot accuracy,
    # the projector's sprite and the pixel baseline.
    images: Optional[tuple] = None

    @property
    def is_text(self) -> bool:
        return self.train.is_text

    @property
    def is_image(self) -> bool:
        return self.train.is_image

    @property
    def padded(self) -> bool:
        """Whether any split has padding (then the encoder needs a mask)."""
        return any(p is not None and p.padded for p in (self.train, self.validation))


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


def apply_class_weight(pairs: Pairs, mode: str) -> None:
    if mode != "balanced":
        return
    positive = pairs.label >= 0.5
    n, n_pos = len(pairs), int(positive.sum())
    if n_pos in (0, n):
        return
    pairs.weight = np.where(positive, n / (2.0 * n_pos),
                            n / (2.0 * (n - n_pos))).astype(np.float32)
