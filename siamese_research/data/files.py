"""Pair files: `.csv`, `.tsv`, `.jsonl` (text pairs) and `.npz` (float pairs).

Text files need a header (or, for `.jsonl`, one JSON object per line). The
left, right and label columns default to the first two text columns and a
column named `label`; other columns (ids, extra labels) are ignored. Files are
read as shipped: a UTF-8 byte-order mark and CRLF line ends are accepted in
every text format. `--quoting=auto` reads a `.csv` with standard CSV quoting
and a `.tsv` with none (a `"` is text, as GLUE's MRPC loader and pandas'
`quoting=3` read MSRP, whose sentences hold stray quotes); `csv` or `none`
forces one for both. Texts become token ids through a
`keras.layers.TextVectorization` adapted on the training split only (0 =
padding, right-padded, at most `max_length` tokens), which is saved with the
run (`vectorizer.json`) so evaluation sees the same vocabulary. Words outside
the vocabulary hash (an unsalted FarmHash fingerprint of the word) into
`oov_buckets` ids 1..N, so the same unseen word gets the same id on both sides
of a pair and in every run that loads the vectoriser; with N = 1 they all
share id 1.

A text file whose columns include a negative (by default named `negative`,
or any of `--anchor_column/--positive_column/--negative_column` given) is a
triplet file: columns `anchor`, `positive`, `negative` by default. Its n rows
become a pool of 2n pairs: rows 0..n-1 (anchor, positive, label 1), rows
n..2n-1 (anchor, negative, label 0), each anchor a group, and `Pairs.triplets`
[[i, n + i]]. `--loss=triplet` trains on those triplets, any other loss on
the pairs; a validation split holds out whole anchors (so whole triplets).

`.npz` files hold float arrays `left`, `right` (n, time, features) and `label`
(n,), with optional `left_length` / `right_length`; steps past a row's length
are zeroed, which is what the tower's Masking treats as padding.

Every problem is a `DataError` naming the file and the line, row or column,
raised before anything is returned (so before the run folder is created).
"""

from __future__ import annotations

import os
import zipfile
from typing import Sequence, Tuple

import numpy as np

from siamese_research.config import Config
from siamese_research.errors import DataError
from siamese_research.data.pairs import (PairData, Pairs, apply_class_weight,
                                         remap_triplets, split_last)
from siamese_research.data.tables import TextRows, parse_labels, read_text_rows
from siamese_research.data.vocab import VECTORIZER_FILE, make_vectorizer, text_ids  # noqa: F401


TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl")


FLOAT_SUFFIXES = (".npz",)


# -- public API ---------------------------------------------------------------
def load(config: Config, vectorizer=None) -> PairData:
    """Reads `config.data` (and `config.validation_data`) into a `PairData`.

    Args:
      config: the run's settings (data paths, columns, label range, split,
        max_tokens, max_length, seed, strict, class_weight, features).
      vectorizer: an already adapted `TextVectorization` to reuse (evaluation
        re-creating a run's validation split); None adapts a new one on the
        training split.

    Returns:
      A `PairData` whose `vectorizer` is the TextVectorization for text files
      and None for `.npz` files.

    Raises:
      DataError: any problem with the files, one line naming file and row or
        column.
    """
    kind = file_kind(config.data)
    if config.validation_data is not None and \
            file_kind(config.validation_data) != kind:
        raise DataError(f"{config.validation_data}: a {kind} pair file is needed to "
                        f"validate a run on {config.data}")
    if kind == "npz":
        return _load_npz_data(config)
    return _load_text_data(config, vectorizer)


def load_file(path: str, config: Config, vectorizer=None) -> Tuple[Pairs, int]:
    """Reads one pair file, whole (no split), for evaluation.

    Args:
      path: a `.csv`, `.tsv`, `.jsonl` or `.npz` pair file, or a text
        triplet file (read as its pool of pairs, `Pairs.triplets` set).
      config: supplies columns, label range, loss, max_length, features, strict.
      vectorizer: the run's TextVectorization (required for text files).

    Returns:
      (pairs, skipped): the pairs and how many rows were skipped for an empty
      text on one side.

    Raises:
      DataError: a bad file, or a text file without a vectorizer.
    """
    if file_kind(path) == "npz":
        return _read_npz(path, config)
    if vectorizer is None:
        raise DataError(f"{path}: text pairs need the run's vectorizer "
                        f"({VECTORIZER_FILE}), which this run does not have")
    rows = read_text_rows(path, config)
    return _vectorize(rows, vectorizer, config)


def file_kind(path: str) -> str:
    """'text' or 'npz' by suffix; DataError for anything else."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in FLOAT_SUFFIXES:
        return "npz"
    raise DataError(f"{path}: unknown pair file type '{suffix}'; expected "
                    f"{', '.join(TEXT_SUFFIXES + FLOAT_SUFFIXES)}")


def _vectorize(rows: TextRows, vectorizer, config: Config) -> Tuple[Pairs, int]:
    """Token ids for both sides; drops (or, strict, refuses) empty texts."""
    left = text_ids(vectorizer, rows.left, config)
    right = text_ids(vectorizer, rows.right, config)
    left_len = np.count_nonzero(left, axis=1).astype(np.int32)
    right_len = np.count_nonzero(right, axis=1).astype(np.int32)
    # A text with no words after lowercasing and stripping punctuation gives
    # zero tokens: its encoding would be all padding, so it is not a pair.
    empty = (left_len == 0) | (right_len == 0)
    if empty.any():
        i = int(np.argmax(empty))
        if config.strict:
            col = rows.columns[0] if left_len[i] == 0 else rows.right_column(i)
            raise DataError(f"{rows.path} line {rows.lines[i]}: empty text in column "
                            f"'{col}' (--strict; without it such pairs are skipped)")
    keep = np.flatnonzero(~empty)
    triplets = None
    if rows.triplets is not None:  # an empty text drops its triplet
        triplets = remap_triplets(rows.triplets, keep, len(rows))
    # Each left text's candidates are one group (the rows sharing an anchor).
    groups = np.empty(len(keep), dtype=object)
    groups[:] = [rows.left[i].strip() for i in keep]
    pairs = Pairs(left[keep], right[keep], left_len[keep], right_len[keep],
                  rows.label[keep], [rows.left[i] for i in keep],
                  [rows.right[i] for i in keep], groups=groups, triplets=triplets)
    return pairs, int(empty.sum())


def split_by_group(keys: Sequence[str], fraction: float, seed: int):
    """Holds out whole groups (rows sharing a key) for validation.

    Groups are taken in a seeded random order until at least
    `round(fraction * n)` rows are held out, so no key is on both sides.

    Returns:
      (train index, validation index), each in file order.
    """
    n = len(keys)
    target = int(round(n * fraction))
    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    names = list(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    held = []
    for g in order:
        if len(held) >= target:
            break
        held.extend(groups[names[g]])
    held_set = set(held)
    train = np.array([i for i in range(n) if i not in held_set], np.int64)
    return train, np.array(sorted(held), np.int64)


def _load_text_data(config: Config, vectorizer=None) -> PairData:
    rows = read_text_rows(config.data, config)
    split_note = ""
    if config.validation_data is not None:
        train_rows = rows
        val_rows = read_text_rows(config.validation_data, config)
        split_note = f"validation: {config.validation_data}"
    elif config.validation_split > 0:
        keys = [t.strip() for t in rows.left]
        if rows.is_triplet_file:
            # By anchor: a triplet's two rows share it, so triplets stay whole.
            train_idx, val_idx = split_by_group(keys, config.validation_split,
                                                config.seed)
            n_groups = len({keys[i] for i in val_idx})
            held = len(remap_triplets(rows.triplets, val_idx, len(rows)))
            split_note = (f"{held} triplets of {n_groups} anchors held out "
                          f"(split by anchor, seed {config.seed})")
        elif len(set(keys)) < len(keys):
            train_idx, val_idx = split_by_group(keys, config.validation_split,
                                                config.seed)
            n_groups = len({keys[i] for i in val_idx})
            split_note = (f"{len(val_idx)} pairs of {n_groups} left texts held out "
                          f"(split by left text, seed {config.seed})")
        else:
            n_val = int(round(len(rows) * config.validation_split))
            train_idx = np.arange(len(rows) - n_val)
            val_idx = np.arange(len(rows) - n_val, len(rows))
            split_note = f"the last {n_val} pairs held out"
        if len(train_idx) == 0:
            raise DataError(f"{config.data}: --validation_split="
                            f"{config.validation_split} leaves no training pairs out "
                            f"of {len(rows)}")
        train_rows = rows.take(train_idx)
        val_rows = rows.take(val_idx) if len(val_idx) else None
    else:
        train_rows, val_rows = rows, None
    if vectorizer is None:
        vectorizer = make_vectorizer(config, train_rows.left + train_rows.right)
    train, skipped = _vectorize(train_rows, vectorizer, config)
    validation = None
    if val_rows is not None:
        validation, val_skipped = _vectorize(val_rows, vectorizer, config)
        skipped += val_skipped
        if not len(validation):
            validation = None
    if not len(train):
        raise DataError(f"{config.data}: no training pairs left after skipping "
                        f"{skipped} with an empty text")
    apply_class_weight(train, config.class_weight)
    if rows.is_triplet_file:
        anchor_col, pos_col, neg_col = rows.columns
        what = (f"text triplets {anchor_col!r} / {pos_col!r} / {neg_col!r}, "
                f"{len(rows.triplets):,} triplets as {len(rows):,} pairs (positive 1, "
                f"negative 0)")
    else:
        left_col, right_col, label_col = rows.columns
        what = f"text pairs {left_col!r} / {right_col!r}, label {label_col!r}"
    desc = (f"{config.data}: {what}; vocabulary {vectorizer.vocabulary_size():,} from "
            f"the training split; {split_note or 'no validation'}")
    if skipped:
        desc += f"; skipped {skipped} pairs with an empty text"
    positives = float(np.mean(train.label >= 0.5))
    desc += f"; {positives:.1%} positive"
    return PairData(train, validation, vectorizer, desc)


# -- .npz float pairs -----------------------------------------------------------
def _read_npz(path: str, config: Config) -> Tuple[Pairs, int]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # ValueError: pickled object arrays, which are refused (no code runs).
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    names = ", ".join(sorted(arrays)) or "none"
    for key in ("left", "right", "label"):
        if key not in arrays:
            raise DataError(f"{path}: no array '{key}'; it has {names} (needs left, "
                            f"right, label; optional left_length, right_length)")
    left, right, label = arrays["left"], arrays["right"], arrays["label"]
    for name, a in (("left", left), ("right", right)):
        if a.ndim != 3 or not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{path}: '{name}' must be numbers shaped (pairs, time, "
                            f"features), got {a.dtype} {a.shape}")
    if label.ndim != 1 or len(label) == 0:
        raise DataError(f"{path}: 'label' must be a non-empty vector (pairs,), "
                        f"got shape {label.shape}")
    n = len(label)
    if len(left) != n or len(right) != n:
        raise DataError(f"{path}: left has {len(left)} rows, right {len(right)}, "
                        f"label {n}; they must match")
    if left.shape[2] != right.shape[2]:
        raise DataError(f"{path}: left has {left.shape[2]} features per step, right "
                        f"{right.shape[2]}; both sides must have the same size")
    if left.shape[2] != config.features:
        raise DataError(f"{path}: pairs have {left.shape[2]} features per step, the "
                        f"model expects --features={config.features}; pass "
                        f"--features={left.shape[2]}")
    for name, a in (("left", left), ("right", right)):
        bad = ~np.isfinite(a).all(axis=(1, 2))
        if bad.any():
            raise DataError(f"{path}: '{name}' row {int(np.argmax(bad))} holds a "
                            f"non-finite number (NaN or inf)")
    if not np.issubdtype(label.dtype, np.number):
        raise DataError(f"{path}: 'label' must be numbers, got {label.dtype}")
    label = parse_labels(path, label.tolist(), [f"row {i}" for i in range(n)], config)
    lengths = []
    for name, a in (("left", left), ("right", right)):
        key = f"{name}_length"
        if key in arrays:
            length = arrays[key]
            if length.shape != (n,) or not np.issubdtype(length.dtype, np.integer):
                raise DataError(f"{path}: '{key}' must be integers shaped ({n},), got "
                                f"{length.dtype} {length.shape}")
            bad = (length < 0) | (length > a.shape[1])
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"{path}: '{key}' row {i} is {int(length[i])}, outside "
                                f"0..{a.shape[1]} steps")
        else:
            # Right padding: the length is up to the last step with any non-zero.
            nonzero = np.any(a != 0, axis=2)
            last = a.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
            length = np.where(nonzero.any(axis=1), last, 0)
        lengths.append(length.astype(np.int32))
    left_len, right_len = lengths
    steps = np.arange(left.shape[1])
    left = np.where(steps[None, :, None] < left_len[:, None, None], left, 0)
    steps = np.arange(right.shape[1])
    right = np.where(steps[None, :, None] < right_len[:, None, None], right, 0)
    empty = (left_len == 0) | (right_len == 0)
    if empty.any() and config.strict:
        i = int(np.argmax(empty))
        side = "left" if left_len[i] == 0 else "right"
        raise DataError(f"{path}: row {i} has an empty {side} sequence (--strict; "
                        f"without it such pairs are skipped)")
    keep = np.flatnonzero(~empty)
    pairs = Pairs(left[keep].astype(np.float32), right[keep].astype(np.float32),
                  left_len[keep], right_len[keep], label[keep])
    return pairs, int(empty.sum())


def _load_npz_data(config: Config) -> PairData:
    pairs, skipped = _read_npz(config.data, config)
    if config.validation_data is not None:
        train = pairs
        validation, val_skipped = _read_npz(config.validation_data, config)
        skipped += val_skipped
        note = f"validation: {config.validation_data}"
    else:
        if not len(pairs):
            train, validation = pairs, None
        else:
            train, validation = split_last(pairs, config.validation_split)
        note = (f"the last {len(validation)} pairs held out" if validation is not None
                else "no validation")
    if validation is not None and not len(validation):
        validation = None
    if not len(train):
        raise DataError(f"{config.data}: no training pairs left after skipping "
                        f"{skipped} with an empty sequence")
    apply_class_weight(train, config.class_weight)
    desc = (f"{config.data}: float pairs, {train.left.shape[2]} features per step; "
            f"{note}")
    if skipped:
        desc += f"; skipped {skipped} pairs with an empty sequence"
    return PairData(train, validation, None, desc)
