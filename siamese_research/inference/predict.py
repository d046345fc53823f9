"""Scores every pair of a file with a loaded run (`siamese-predict`)."""

from __future__ import annotations

import csv
import json
import os
import sys
import types
import zipfile
from typing import List, Optional, Tuple

import numpy as np

from siamese_research.data import files
from siamese_research.data import tables
from siamese_research.errors import DataError

OUTPUT_SUFFIXES = (".csv", ".tsv", ".jsonl")
ADDED = ("score", "label_pred")


def read_text_pairs(path: str, run, left_column: Optional[str] = None,
                    right_column: Optional[str] = None):
    """The rows of a text pair file, whole, and its left and right texts.

    Returns:
      (columns, rows, left texts, right texts).

    Raises:
      DataError: a bad file or column.
    """
    columns, rows, lines = tables.read_table(path)
    saved = run.config
    names = types.SimpleNamespace(
        left_column=left_column or saved.get("left_column"),
        right_column=right_column or saved.get("right_column"),
        label_column=saved.get("label_column"))
    left, right, _ = tables.resolve_columns(path, columns, rows, names,
                                           require_label=False)
    for row, line in zip(rows, lines):
        for col in (left, right):
            if col not in row:  # only .jsonl rows can lack a key
                raise DataError(f"{path} line {line}: no key '{col}'")

    def text(v):
        return "" if v is None else v if isinstance(v, str) else str(v)

    return (columns, rows, [text(r[left]) for r in rows],
            [text(r[right]) for r in rows])


def read_npz_pairs(path: str, features: int) -> Tuple[dict, np.ndarray, np.ndarray]:
    """`left`, `right` (n, time, features) of an .npz pair file, zeroed past
    the optional `left_length`/`right_length`; `label` is optional.

    Returns:
      (arrays as read, left, right).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    sides = []
    for name in ("left", "right"):
        if name not in arrays:
            raise DataError(f"{path}: no array '{name}'; it has "
                            f"{', '.join(sorted(arrays)) or 'none'}")
        a = arrays[name]
        if a.ndim != 3 or not np.issubdtype(a.dtype, np.number) or a.shape[2] != features:
            raise DataError(f"{path}: '{name}' must be numbers shaped (pairs, time, "
                            f"{features}), got {a.dtype} {a.shape}")
        if f"{name}_length" in arrays:
            length = np.asarray(arrays[f"{name}_length"]).reshape(-1, 1, 1)
            if len(length) != len(a):
                raise DataError(f"{path}: '{name}_length' has {len(length)} rows, "
                                f"'{name}' {len(a)}")
            a = np.where(np.arange(a.shape[1])[None, :, None] < length, a, 0)
        sides.append(a.astype(np.float32))
    if len(sides[0]) != len(sides[1]):
        raise DataError(f"{path}: left has {len(sides[0])} rows, right {len(sides[1])}")
    return arrays, sides[0], sides[1]


def predict_file(run, data_path: str, *, left_column: Optional[str] = None,
                 right_column: Optional[str] = None,
                 batch_size: int = 256) -> Tuple[List[str], List[dict]]:
    """Scores every pair of `data_path` with `run` (a `runs.Run`).

    Returns:
      (columns, rows): the input's columns plus `score` (and `label_pred`
      with a threshold), and one dict per input row. A text pair with a side
      that has no words gets `score` None.

    Raises:
      UserError: a bad file, or one of the wrong kind for the run.
    """
    if not os.path.isfile(data_path):
        raise DataError(f"--data={data_path}: no such file")
    kind = files.file_kind(data_path)
    if run.is_text and kind != "text":
        raise DataError(f"--data={data_path}: this run was trained on text pairs; "
                        f"give it a .csv, .tsv or .jsonl file")
    if not run.is_text and kind == "text":
        raise DataError(f"--data={data_path}: this run was trained on float pairs, "
                        f"not text; give it an .npz file")
    if run.is_text:
        columns, rows, left, right = read_text_pairs(data_path, run, left_column,
                                                     right_column)
        taken = [c for c in ADDED if c in columns]
        if taken:
            raise DataError(f"{data_path}: already has a column '{taken[0]}', which "
                            f"the output adds")
        ids_l, ids_r = run.token_ids(left), run.token_ids(right)
        scored = np.flatnonzero(ids_l.any(axis=1) & ids_r.any(axis=1))
        values = run.score([left[i] for i in scored], [right[i] for i in scored],
                           batch_size)
        out = [dict(r) for r in rows]
    else:
        arrays, xl, xr = read_npz_pairs(data_path, run.model.encoder.features)
        scored = np.arange(len(xl))
        values = run.score(xl, xr, batch_size)
        columns = ["row"]
        out = [{"row": i} for i in range(len(xl))]
        label = arrays.get("label")
        if label is not None and np.shape(label) == (len(xl),):
            columns.append("label")
            for i, y in enumerate(np.asarray(label).tolist()):
                out[i]["label"] = y
    columns = list(columns) + ["score"]
    if run.threshold is not None:
        columns.append("label_pred")
    for row in out:
        row["score"] = None
        if run.threshold is not None:
            row["label_pred"] = None
    predicted = run.predict_labels(values)
    for j, i in enumerate(scored):
        out[i]["score"] = float(values[j])
        if predicted is not None:
            out[i]["label_pred"] = int(predicted[j])
    return columns, out


def write_rows(columns: List[str], rows: List[dict], path: Optional[str]) -> None:
    """CSV/TSV/JSONL by `path`'s suffix; CSV on stdout when `path` is None."""
    suffix = os.path.splitext(path)[1].lower() if path else ".csv"
    if suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({c: row.get(c) for c in columns},
                                   ensure_ascii=False) + "\n")
        return

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, (dict, list)):  # .jsonl input values
            return json.dumps(v, ensure_ascii=False)
        return v

    f = open(path, "w", newline="", encoding="utf-8") if path else sys.stdout
    try:
        w = csv.writer(f, delimiter="\t" if suffix == ".tsv" else ",",
                       lineterminator="\n")
        w.writerow(columns)
        for row in rows:
            w.writerow([cell(row.get(c)) for c in columns])
    finally:
        if path:
            f.close()
