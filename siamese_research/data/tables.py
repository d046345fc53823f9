"""Text tables: `.csv`, `.tsv` and `.jsonl` rows read as shipped (a UTF-8
byte-order mark and CRLF line ends accepted; `--quoting=auto`: standard CSV
quoting for `.csv`, none for `.tsv`), their columns resolved (the first two
text columns and `label` by default; a triplet file's anchor, positive and
negative), and their labels parsed. Every problem is a `DataError` naming
the file and the line, row or column."""

from __future__ import annotations

import csv
import json
import math
from typing import List, Sequence, Tuple

import numpy as np

from siamese_research.config import QUOTINGS, Config
from siamese_research.errors import DataError
from siamese_research.data.pairs import (remap_triplets)


DEFAULT_LABEL_COLUMN = "label"


# The losses whose labels must be 0 or 1 (unless --label_range maps them).
BINARY_LOSSES = ("bce", "contrastive", "pairwise")


# -- text files ---------------------------------------------------------------
class TextRows:
    """The left/right texts, labels and file line numbers of one text file.

    `columns` is (left, right, label) for a pair file and (anchor, positive,
    negative) for a triplet file, whose rows are the pair pool (see the
    module's doc) and whose `triplets` are int64 (t, 2) [positive_row,
    negative_row] of it (None for a pair file).
    """

    def __init__(self, path, left, right, label, lines, columns, triplets=None):
        self.path, self.left, self.right = path, left, right
        self.label, self.lines, self.columns = label, lines, columns
        self.triplets = None if triplets is None else np.asarray(triplets, np.int64)

    def __len__(self):
        return len(self.label)

    @property
    def is_triplet_file(self) -> bool:
        return self.triplets is not None

    def right_column(self, i: int) -> str:
        """The column row `i`'s right text came from."""
        if self.triplets is not None and self.label[i] < 0.5:
            return self.columns[2]
        return self.columns[1]

    def take(self, index) -> "TextRows":
        index = np.asarray(index, dtype=np.int64)
        triplets = (None if self.triplets is None else
                    remap_triplets(self.triplets, index, len(self)))
        return TextRows(self.path, [self.left[i] for i in index],
                        [self.right[i] for i in index], self.label[index],
                        self.lines[index], self.columns, triplets)


def read_table(path: str, quoting: str = "auto"
               ) -> Tuple[List[str], List[dict], List[int]]:
    """Parses a `.csv`/`.tsv` (header + rows) or `.jsonl` (an object a line).

    A UTF-8 byte-order mark and CRLF line ends are accepted in all three.

    Args:
      path: the file.
      quoting: for `.csv`/`.tsv`: "csv" (standard quoting: `"a, b"` is one
        field, `""` a quote), "none" (a quote is text; fields end at the
        delimiter and rows at the line end), or "auto": csv for `.csv`, none
        for `.tsv`.

    Returns:
      (columns, rows, line numbers): rows are dicts column -> value (strings
      for csv/tsv, JSON values for jsonl); line numbers are 1-based file lines.

    Raises:
      DataError: not UTF-8, an empty file, a header only, a malformed row.
    """
    try:
        # utf-8-sig drops a byte-order mark; newline="" hands "\r\n" to the
        # csv module (which ends rows there) and to json (whitespace to it).
        with open(path, encoding="utf-8-sig", newline="") as f:
            if path.lower().endswith(".jsonl"):
                return _read_jsonl(path, f)
            return _read_delimited(path, f, quoting)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def resolve_quoting(path: str, quoting: str = "auto") -> str:
    """"csv" or "none" for a delimited file: `quoting`, or by suffix for auto
    (a `.tsv` is tab-split as shipped, a `.csv` needs its quotes)."""
    if quoting not in QUOTINGS:
        raise DataError(f"{path}: unknown quoting '{quoting}'; expected "
                        f"{', '.join(QUOTINGS)}")
    if quoting != "auto":
        return quoting
    return "none" if path.lower().endswith(".tsv") else "csv"


def _read_delimited(path, f, quoting="auto"):
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    quoting = resolve_quoting(path, quoting)
    if quoting == "none":
        reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(f, delimiter=delimiter)
    last = 0  # the file line the previous row ended on
    try:
        header = None
        for header in reader:
            if any(cell.strip() for cell in header):
                break
        else:
            header = None
        if header is None:
            raise DataError(f"{path}: empty file (expected a header row naming the "
                            f"columns, then one pair per row)")
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise DataError(f"{path}: header repeats column(s) {', '.join(dup)}")
        rows, lines = [], []
        last = reader.line_num
        for record in reader:
            start, last = last + 1, reader.line_num
            if not record or not any(cell.strip() for cell in record):
                continue  # blank line
            if len(record) > len(header) and not any(
                    c.strip() for c in record[len(header):]):
                # Trailing delimiters (spreadsheet exports): nothing is lost.
                record = record[:len(header)]
            if len(record) != len(header):
                raise DataError(f"{path} line {start}: {len(record)} fields, the "
                                f"header has {len(header)} ({', '.join(header)})"
                                f"{_quote_hint(quoting, start, last, record, delimiter)}")
            rows.append(dict(zip(header, record)))
            lines.append(start)
    except csv.Error as e:
        # Reported at the row's first line: an unclosed quote's error comes
        # where the file ends, far from the quote.
        raise DataError(f"{path} line {last + 1}: {e}"
                        f"{_quote_hint(quoting, last + 1, reader.line_num)}") from None
    if not rows:
        raise DataError(f"{path}: header only ({', '.join(header)}), no pairs")
    return header, rows, lines


def _quote_hint(quoting: str, start: int, end: int, record=(), delimiter="") -> str:
    """What to try when a quoted row went wrong. With csv quoting, a row read
    as several file lines, or a field holding the delimiter, comes from a
    quoted field; a stray `"` opens one (MSRP's texts hold such quotes). A
    short row without either is just short: no hint."""
    if quoting != "csv":
        return ""
    if end > start:
        where = f" (read as lines {start}-{end}: an unclosed '\"'?)"
    elif delimiter and any(delimiter in cell for cell in record):
        where = f" (a quoted field holds a {delimiter!r})"
    else:
        return ""
    return f"{where}; if quotes are text in this file, pass --quoting=none"


def _read_jsonl(path, f):
    columns, rows, lines = [], [], []
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {number}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path} line {number}: expected a JSON object "
                            f"{{\"column\": value, ...}}, got {type(obj).__name__}")
        for key in obj:
            if key not in columns:
                columns.append(key)
        rows.append(obj)
        lines.append(number)
    if not rows:
        raise DataError(f"{path}: empty file (expected one JSON object per line)")
    return columns, rows, lines


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
            return True
        except ValueError:
            return False
    return False


def resolve_columns(path: str, columns: Sequence[str], rows: Sequence[dict],
                    config: Config, require_label: bool = True) -> Tuple[str, str, str]:
    """The (left, right, label) columns: the flags, else the defaults.

    Defaults: a column named `label`, and the first two text columns (a
    column is text when some value in it is not a number).

    Args:
      require_label: False for unlabelled pairs (prediction): the label is
        None when the file has no such column; one it has is still not a
        text column.

    Raises:
      DataError: a named column is missing (the message lists the columns
        that exist), or fewer than two text columns to default to.
    """
    listing = ", ".join(columns)

    def need(name, flag):
        if name not in columns:
            raise DataError(f"{path}: no column '{name}' (--{flag}); the columns are "
                            f"{listing}")
        return name

    label = config.label_column or DEFAULT_LABEL_COLUMN
    if require_label or label in columns:
        label = need(label, "label_column")
    else:
        label = None
    left = need(config.left_column, "left_column") if config.left_column else None
    right = need(config.right_column, "right_column") if config.right_column else None
    if left is None or right is None:
        taken = {label, left, right}
        text = [c for c in columns if c not in taken and any(
            not _is_number(r.get(c)) for r in rows if r.get(c) not in (None, ""))]
        if left is None:
            if not text:
                raise DataError(f"{path}: no text column for the left side; pass "
                                f"--left_column (the columns are {listing})")
            left = text.pop(0)
        if right is None:
            if not text:
                raise DataError(f"{path}: no second text column for the right side; "
                                f"pass --right_column (the columns are {listing})")
            right = text.pop(0)
    if len({left, right, label}) < 3:
        raise DataError(f"{path}: left, right and label columns must differ "
                        f"(got {left}, {right}, {label})")
    return left, right, label


def parse_labels(path: str, values: Sequence, where: Sequence[str],
                 config: Config) -> np.ndarray:
    """Turns raw label values into float32 targets in [0, 1].

    Args:
      path: the file (for messages).
      values: one raw value per row.
      where: per row, how to name it in a message ("line 7", "row 3").
      config: `loss` and `label_range` decide what is allowed.

    Raises:
      DataError: the first value that is not a number, not 0/1 for a binary
        loss, or outside `--label_range` / [0, 1].
    """
    bounds = config.label_bounds
    out = np.empty(len(values), np.float32)
    for i, value in enumerate(values):
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x):
            raise DataError(f"{path} {where[i]}: label {value!r} is not a number")
        if bounds is not None:
            lo, hi = bounds
            if not lo <= x <= hi:
                raise DataError(f"{path} {where[i]}: label {value!r} is outside "
                                f"--label_range={config.label_range}")
            x = (x - lo) / (hi - lo)
        elif config.loss in BINARY_LOSSES:
            if x not in (0.0, 1.0):
                raise DataError(f"{path} {where[i]}: label {value!r} is not 0 or 1, as "
                                f"--loss={config.loss} needs (graded labels: "
                                f"--label_range=lo,hi --loss=mse)")
        elif not 0.0 <= x <= 1.0:
            raise DataError(f"{path} {where[i]}: label {value!r} is outside [0, 1]; "
                            f"map graded labels with --label_range=lo,hi")
        out[i] = x
    return out


def read_text_rows(path: str, config: Config) -> TextRows:
    """Reads a text pair file into texts, labels and line numbers.

    Raises:
      DataError: see `read_table`, `resolve_columns`, `parse_labels`.
    """
    columns, rows, lines = read_table(path, config.quoting)
    if is_triplet_table(columns, config):
        return _triplet_rows(path, columns, rows, lines, config)
    left_col, right_col, label_col = resolve_columns(path, columns, rows, config)
    left, right, raw_labels = _columns(path, rows, lines, (left_col, right_col, label_col))
    left, right = [_text(v) for v in left], [_text(v) for v in right]
    label = parse_labels(path, raw_labels, [f"line {n}" for n in lines], config)
    return TextRows(path, left, right, label, np.asarray(lines, np.int64),
                    (left_col, right_col, label_col))


TRIPLET_COLUMNS = (("anchor", "anchor_column"), ("positive", "positive_column"),
                   ("negative", "negative_column"))


def is_triplet_table(columns: Sequence[str], config: Config) -> bool:
    """Whether a table is a triplet file: a triplet column flag is given, or
    it has the negative column (`--negative_column`, default `negative`)."""
    flags = [getattr(config, flag, None) for _, flag in TRIPLET_COLUMNS]
    return any(flags) or (flags[2] or "negative") in columns


def resolve_triplet_columns(path: str, columns: Sequence[str],
                            config: Config) -> Tuple[str, str, str]:
    """The (anchor, positive, negative) columns: the flags, else by name.

    Raises:
      DataError: a column is missing, or a pair column flag is given.
    """
    for flag in ("left_column", "right_column", "label_column"):
        if getattr(config, flag, None):
            raise DataError(f"{path}: a triplet file (anchor, positive, negative "
                            f"columns; no labels) takes no --{flag}; use "
                            f"--anchor_column/--positive_column/--negative_column")
    out = []
    for default, flag in TRIPLET_COLUMNS:
        name = getattr(config, flag, None) or default
        if name not in columns:
            raise DataError(f"{path}: no column '{name}' (--{flag}) for a triplet file "
                            f"(anchor, positive, negative); the columns are "
                            f"{', '.join(columns)}")
        out.append(name)
    if len(set(out)) < 3:
        raise DataError(f"{path}: anchor, positive and negative columns must differ "
                        f"(got {', '.join(out)})")
    return tuple(out)


def _triplet_rows(path, columns, rows, lines, config) -> TextRows:
    """A triplet file's n rows as a pool of 2n pairs: (anchor, positive, 1)
    rows 0..n-1, (anchor, negative, 0) rows n..2n-1, triplets [[i, n + i]]."""
    cols = resolve_triplet_columns(path, columns, config)
    anchor, positive, negative = (
        [_text(v) for v in values] for values in _columns(path, rows, lines, cols))
    n = len(rows)
    label = np.concatenate([np.ones(n, np.float32), np.zeros(n, np.float32)])
    line_numbers = np.asarray(list(lines) * 2, np.int64)
    triplets = np.stack([np.arange(n), n + np.arange(n)], axis=1)
    return TextRows(path, anchor + anchor, positive + negative, label, line_numbers,
                    cols, triplets)


def _columns(path, rows, lines, cols) -> list:
    """Each of `cols` as a list over `rows` (raw values); DataError naming
    the line of a row without one (only .jsonl rows can lack a key)."""
    for row, line in zip(rows, lines):
        for col in cols:
            if col not in row:
                raise DataError(f"{path} line {line}: no key '{col}'")
    return [[r[col] for r in rows] for col in cols]


def _text(v) -> str:
    return "" if v is None else v if isinstance(v, str) else str(v)
