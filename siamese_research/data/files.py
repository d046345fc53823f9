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

import csv
import json
import math
import os
import zipfile
import zlib
from typing import List, Sequence, Tuple

import keras
import numpy as np

from siamese_research.config import QUOTINGS, Config
from siamese_research.errors import DataError
from siamese_research.data.pairs import (PairData, Pairs, apply_class_weight,
                                         remap_triplets, split_last)
from siamese_research.text.tokens import idf_weights, words

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl")
FLOAT_SUFFIXES = (".npz",)
VECTORIZER_FILE = "vectorizer.json"
DEFAULT_LABEL_COLUMN = "label"
# The losses whose labels must be 0 or 1 (unless --label_range maps them).
BINARY_LOSSES = ("bce", "contrastive", "pairwise")


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


def _text_vectorization(num_oov_indices: int = 1, vocabulary=None, **kwargs):
    """A `keras.layers.TextVectorization` with `num_oov_indices` hashed OOV ids.

    Keras 3's TextVectorization always builds its `StringLookup` with one OOV
    id and takes no `num_oov_indices`; for more than one, the lookup is
    rebuilt with them (same max_tokens, mask "" = 0, output mode). An unseen
    word then maps to 1 + fingerprint(word) mod num_oov_indices (FarmHash, by
    `tf.strings.to_hash_bucket_fast`): the same id for the same word
    everywhere, no salt, nothing stored but the count.
    """
    if num_oov_indices == 1:
        return keras.layers.TextVectorization(vocabulary=vocabulary, **kwargs)
    layer = keras.layers.TextVectorization(**kwargs)
    old = layer._lookup_layer
    layer._lookup_layer = keras.layers.StringLookup(
        max_tokens=old.max_tokens, num_oov_indices=num_oov_indices,
        vocabulary=vocabulary, mask_token="", output_mode=old.output_mode,
        pad_to_max_tokens=old.pad_to_max_tokens, sparse=old.sparse,
        encoding=old.encoding)
    layer._has_input_vocabulary = vocabulary is not None
    return layer


def make_vectorizer(config: Config, texts: Sequence[str]):
    """A `TextVectorization` adapted on `texts` (lowercase, strip punctuation,
    split on whitespace; 0 = padding, 1..oov_buckets = out of vocabulary,
    hashed per word; the vocabulary's words follow).

    `max_tokens` counts padding, ONE out-of-vocabulary id and the words, as
    with a single OOV id; the extra `oov_buckets - 1` ids come on top, so the
    words kept do not depend on `oov_buckets` and `vocabulary_size()` grows
    by `oov_buckets - 1`.

    Args:
      config: supplies `max_tokens`, `max_length` and `oov_buckets`.
      texts: the training texts (both sides) to build the vocabulary from.
    """
    layer = _text_vectorization(
        max_tokens=config.max_tokens + config.oov_buckets - 1,
        num_oov_indices=config.oov_buckets,
        output_sequence_length=config.max_length)
    layer.adapt(np.asarray(list(texts), dtype=object))
    return layer


def save_vectorizer(vectorizer, run_dir: str) -> str:
    """Writes the vocabulary and settings to `run_dir/vectorizer.json`.

    Args:
      vectorizer: an adapted `keras.layers.TextVectorization`.
      run_dir: the run folder (exists).

    Returns:
      The path written.
    """
    cfg = vectorizer.get_config()
    state = {"vocabulary": [str(t) for t in vectorizer.get_vocabulary()],
             "max_tokens": cfg.get("max_tokens"),
             "num_oov_indices": int(vectorizer._lookup_layer.num_oov_indices),
             "output_sequence_length": cfg.get("output_sequence_length"),
             "standardize": cfg.get("standardize"), "split": cfg.get("split")}
    path = os.path.join(run_dir, VECTORIZER_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, ensure_ascii=False)
    os.replace(tmp, path)  # never a half-written vocabulary
    return path


def load_vectorizer(run_dir: str):
    """Rebuilds the run's `TextVectorization` from `run_dir/vectorizer.json`.

    Returns:
      The layer, or None when the run has no vectorizer (float pairs).

    Raises:
      DataError: the file exists but cannot be read.
    """
    path = os.path.join(run_dir, VECTORIZER_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        vocab = list(state["vocabulary"])
        # Files written before --oov_buckets have one OOV id.
        num_oov = int(state.get("num_oov_indices", 1))
        if num_oov < 1:
            raise ValueError(f"num_oov_indices {num_oov}: must be >= 1")
        # get_vocabulary() starts with the reserved padding "" and the
        # num_oov_indices OOV "[UNK]"s; given back, Keras would add them again
        # and shift every id.
        while vocab and vocab[0] in ("", "[UNK]"):
            vocab.pop(0)
        return _text_vectorization(
            max_tokens=state.get("max_tokens"), num_oov_indices=num_oov,
            output_sequence_length=state.get("output_sequence_length"),
            standardize=state.get("standardize") or "lower_and_strip_punctuation",
            split=state.get("split") or "whitespace", vocabulary=vocab)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: unreadable vectorizer ({e})") from None


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


def text_ids(vectorizer, texts: Sequence[str], config) -> np.ndarray:
    """int32 (n, width) ids of `texts` as the run's model reads them: the
    vectoriser's word ids, then, with `--char_ngrams`, each kept word's
    hashed character n-gram ids (`char_ngram_ids`), right-padded with 0.

    Args:
      config: a `Config` or a run's config.json dict (`char_ngrams`,
        `ngram_buckets`, `max_length`).
    """
    ids = _ids(vectorizer, texts)
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    span = parse_ngram_range(get("char_ngrams", "") or "")
    if span is None or not len(texts):
        return ids
    offset = vectorizer.vocabulary_size()
    rows = []
    for text, row in zip(texts, ids):
        kept = words("" if text is None else str(text))[:int(get("max_length", 64))]
        grams = char_ngram_ids(kept, span, int(get("ngram_buckets")), offset)
        # A word the vectoriser dropped (a text of punctuation only) leaves no
        # id: keep the row empty, so the pair is skipped as before.
        rows.append(list(row[row > 0]) + (grams if np.any(row > 0) else []))
    out = np.zeros((len(rows), max(1, max(len(r) for r in rows))), np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def parse_ngram_range(value: str):
    """"lo,hi" -> (lo, hi); "" -> None. ValueError for anything else."""
    if not value:
        return None
    lo, hi = (int(p) for p in value.split(","))
    if not 1 <= lo <= hi:
        raise ValueError(f"need 1 <= lo <= hi, got {value}")
    return lo, hi


def char_ngram_ids(words_: Sequence[str], span: Tuple[int, int], buckets: int,
                   offset: int) -> List[int]:
    """fastText's subwords (Bojanowski et al. 2017): the character n-grams,
    lo <= n <= hi, of each word wrapped in "<" and ">", each hashed (CRC-32
    of its UTF-8 bytes: the same id in every process) to one of `buckets`
    ids after the word ids: offset + crc32(gram) mod buckets. An unseen word
    shares the n-grams of the seen words it resembles, and the same unseen
    word gets the same ids on both sides of a pair.
    """
    lo, hi = span
    out = []
    for w in words_:
        marked = f"<{w}>"
        for n in range(lo, hi + 1):
            for i in range(len(marked) - n + 1):
                out.append(offset + zlib.crc32(marked[i:i + n].encode("utf-8")) % buckets)
    return out


def id_count(vectorizer, config: Config) -> int:
    """The embedding table's rows: the vectoriser's ids, plus the n-gram
    buckets with `--char_ngrams`."""
    extra = config.ngram_buckets if config.char_ngrams else 0
    return vectorizer.vocabulary_size() + extra


def _ids(vectorizer, texts: Sequence[str]) -> np.ndarray:
    if not len(texts):
        return np.zeros((0, 1), np.int32)
    out = vectorizer(np.asarray(list(texts), dtype=object))
    return np.asarray(out).astype(np.int32)


def token_idf(pairs: Pairs, vocab_size: int) -> np.ndarray:
    """`idf_weights` per token id over the distinct texts of `pairs` (both
    sides; a question repeated for each candidate counts once). Ids no text
    holds (e.g. the hashed ids of unseen words) get log(N), a word seen once;
    id 0 (padding) gets 0.

    Returns:
      float32 (vocab_size,).
    """
    texts = {tuple(row) for side in (pairs.left, pairs.right) for row in side}
    weights = idf_weights((i for i in row if i > 0) for row in texts)
    idf = np.full(vocab_size, math.log(max(len(texts), 1)), np.float32)
    for i, w in weights.items():
        if i < vocab_size:
            idf[i] = w
    idf[0] = 0.0
    return idf


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


__all__ = ["load", "load_file", "save_vectorizer", "load_vectorizer", "read_table",
           "resolve_quoting",
           "read_text_rows", "resolve_columns", "parse_labels", "split_by_group",
           "is_triplet_table", "resolve_triplet_columns",
           "make_vectorizer", "file_kind", "text_ids", "char_ngram_ids", "id_count"]
