"""Encodes one column of a file with a loaded run (`siamese-encode`)."""

from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from siamese_research.data import files, images
from siamese_research.data import tables
from siamese_research.errors import DataError


def read_column(run, path: str, column: Optional[str]) -> Tuple[object, np.ndarray]:
    """The items to encode: (texts list, row indices) for a text run,
    (array (n, time, features), row indices) for a float run, or (image
    file paths, row indices) for an image run: every image of the folder
    `path` and its subfolders, by relative path (`column` does not apply).

    Raises:
      DataError: a bad file, folder or column, or data of the wrong kind.
    """
    if run.is_image:
        if column:
            raise DataError(f"--column={column}: an image run encodes every image of a "
                            f"folder; leave --column out")
        paths = images.folder_images(path)
        return paths, np.arange(len(paths))
    if os.path.isdir(path):
        raise DataError(f"--data={path}: a folder of images, but this run was trained "
                        f"on {'text' if run.is_text else 'float sequences'}")
    if not os.path.isfile(path):
        raise DataError(f"--data={path}: no such file")
    kind = files.file_kind(path)
    if run.is_text != (kind == "text"):
        raise DataError(f"--data={path}: this run was trained on "
                        + ("text; give it a .csv, .tsv or .jsonl file" if run.is_text
                           else "float sequences; give it an .npz file"))
    if run.is_text:
        if not column:
            raise DataError("--column is required for text files (the column to "
                            "encode)")
        columns, rows, lines = tables.read_table(path)
        if column not in columns:
            raise DataError(f"{path}: no column '{column}' (--column); the columns "
                            f"are {', '.join(columns)}")
        texts = []
        for row, line in zip(rows, lines):
            if column not in row:
                raise DataError(f"{path} line {line}: no key '{column}'")
            v = row[column]
            texts.append("" if v is None else v if isinstance(v, str) else str(v))
        return texts, np.arange(len(texts))
    column = column or "left"
    try:
        with np.load(path, allow_pickle=False) as npz:
            if column not in npz.files:
                raise DataError(f"{path}: no array '{column}' (--column); it has "
                                f"{', '.join(sorted(npz.files)) or 'none'}")
            x = npz[column]
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    features = run.model.encoder.features
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number) or x.shape[2] != features:
        raise DataError(f"{path}: '{column}' must be numbers shaped (n, time, "
                        f"{features}), got {x.dtype} {x.shape}")
    return x.astype(np.float32), np.arange(len(x))


def encode_items(run, items, batch_size: int = 256):
    """Encodes `items` (texts, an array or image files) with `run`, leaving
    out texts with no words.

    Returns:
      (encodings (m, dim) float32, kept: indices into items).
    """
    if run.is_text:
        ids = run.token_ids(items)
        kept = np.flatnonzero(ids.any(axis=1))
        return run.encode([items[i] for i in kept], batch_size), kept
    return run.encode(items, batch_size), np.arange(len(items))
