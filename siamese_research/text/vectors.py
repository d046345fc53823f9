"""Pretrained word vectors for a text run's vocabulary (`--embeddings=PATH`).

Reads the common text formats, streaming, keeping only the vocabulary's words
(a GloVe file is gigabytes; a run's vocabulary is thousands of words):

- GloVe: `word v1 ... vd` per line (https://nlp.stanford.edu/projects/glove/).
- word2vec / fastText `.vec`: the same lines after a `count dim` first line.
- Either gzip-compressed (recognised by its magic bytes, whatever the name).

A UTF-8 byte-order mark and CRLF line ends are accepted. A vocabulary word
matches the file's word exactly, else (cased files such as fastText's) the
file's first word that lowercases to it: the vocabulary is lowercased by the
vectoriser, and these files list frequent spellings first. Lines whose word
is not wanted are not parsed, so a malformed line elsewhere goes unnoticed;
a wanted word's line with too few numbers, a non-number or a non-finite value
is a `DataError` naming file and line. Binary word2vec files (`.bin`) are
refused: convert them to text first.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from siamese_research import atomic
from siamese_research.errors import DataError

REPORT_FILE = "embeddings.json"
MISSING_LISTED = 20  # the most frequent vocabulary words not found, in the report


@dataclasses.dataclass(frozen=True)
class Coverage:
    """How much of a run's vocabulary a vector file covered.

    Attributes:
      path: the vector file.
      dimension: its vectors' size (= the embedding size).
      vocabulary: the vocabulary's words (no padding, no out-of-vocabulary ids).
      found: those given the file's vector.
      lowercased: of `found`, matched through the file's lowercased word.
      missing: the most frequent words not found (at most `MISSING_LISTED`).
      frozen: whether the table stays fixed in training (`--freeze_embeddings`).
    """

    path: str
    dimension: int
    vocabulary: int
    found: int
    lowercased: int = 0
    missing: Tuple[str, ...] = ()
    frozen: bool = False

    def line(self) -> str:
        """e.g. `Embeddings: 31,204 of 33,000 vocabulary words found in
        glove.6B.100d.txt (94.6%, 100 dimensions)`."""
        share = self.found / self.vocabulary if self.vocabulary else 0.0
        how = "; frozen" if self.frozen else ""
        return (f"Embeddings: {self.found:,} of {self.vocabulary:,} vocabulary words "
                f"found in {os.path.basename(self.path)} ({share:.1%}, "
                f"{self.dimension} dimensions{how})")

    def save(self, run_dir: str) -> str:
        """Writes the numbers to `run_dir/embeddings.json`; returns its path."""
        return atomic.write_json(
            os.path.join(run_dir, REPORT_FILE),
            dict(dataclasses.asdict(self), missing=list(self.missing)), indent=2,
            ensure_ascii=False)


def _open(path: str):
    """The file as binary lines, gunzipped when it starts with gzip's magic."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def _check_name(path: str) -> None:
    name = path.lower()
    if name.endswith(".bin") or name.endswith(".bin.gz"):
        raise DataError(f"{path}: binary word2vec files are not read; convert it to "
                        f"the text format (gensim: save_word2vec_format(binary=False))")


def _header(path: str, first: bytes) -> Tuple[int, bool]:
    """(dimension, whether `first` is a `count dim` header) from line 1."""
    parts = first.lstrip(b"\xef\xbb\xbf").split()
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
        dim = int(parts[1])
        if dim < 1:
            raise DataError(f"{path} line 1: header '{first.strip().decode()}' gives "
                            f"{dim} dimensions")
        return dim, True
    if len(parts) < 2:
        raise DataError(f"{path} line 1: expected 'word v1 ... vd' (GloVe) or "
                        f"'count dim' (word2vec/fastText .vec), got "
                        f"{first[:40].decode('utf-8', 'replace').strip()!r}")
    _numbers(path, 1, parts[1:])
    return len(parts) - 1, False


def _numbers(path: str, number: int, fields: Sequence[bytes]) -> np.ndarray:
    try:
        vec = np.array([float(x) for x in fields], np.float32)
    except ValueError:
        bad = next(x for x in fields if not _is_float(x))
        raise DataError(f"{path} line {number}: "
                        f"{bad[:20].decode('utf-8', 'replace')!r} is not a number "
                        f"(a binary or otherwise not 'word v1 ... vd' file?)") from None
    if not np.isfinite(vec).all():
        raise DataError(f"{path} line {number}: a non-finite number (NaN or inf)")
    return vec


def _is_float(x: bytes) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def dimension(path: str) -> int:
    """The vectors' size, from the first line alone (cheap on a large file).

    Raises:
      DataError: unreadable, binary, or a first line of neither format.
    """
    _check_name(path)
    with _open(path) as f:
        try:
            first = f.readline()
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz
            raise DataError(f"{path}: cannot read ({e})") from None
    if not first.strip():
        raise DataError(f"{path}: empty first line (expected word vectors)")
    return _header(path, first)[0]


def read_vectors(path: str, words: Sequence[str]
                 ) -> Tuple[Dict[int, np.ndarray], int, int]:
    """The file's vectors for `words`, reading it once, line by line.

    Args:
      path: a GloVe or `.vec` file, optionally gzipped.
      words: the words wanted (the vocabulary, most frequent first).

    Returns:
      (found, dimension, lowercased): `found` maps an index into `words` to
      its float32 vector; `lowercased` counts those matched through the
      file's lowercased word.

    Raises:
      DataError: see the module docstring.
    """
    _check_name(path)
    wanted = {}
    for i, w in enumerate(words):
        wanted.setdefault(w.encode("utf-8"), i)
    found: Dict[int, np.ndarray] = {}
    exact = set()
    with _open(path) as f:
        try:
            first = f.readline()
            if not first.strip():
                raise DataError(f"{path}: empty first line (expected word vectors)")
            dim, has_header = _header(path, first)
            lines = f if has_header else _chain(first, f)
            for number, line in enumerate(lines, start=2 if has_header else 1):
                if number == 1:
                    line = line.lstrip(b"\xef\xbb\xbf")
                end = line.find(b" ")
                if end <= 0:
                    continue  # blank (or not a vector line)
                key = line[:end]
                i = wanted.get(key)
                is_exact = i is not None
                if i is None:
                    low = (key.lower() if key.isascii() else
                           key.decode("utf-8", "replace").lower().encode("utf-8"))
                    i = wanted.get(low) if low != key else None
                    if i is None or i in found:
                        continue  # an earlier spelling already matched
                elif i in exact:
                    continue  # a repeated word: the first line wins
                parts = line.split()
                if len(parts) > dim + 1:
                    continue  # a word with spaces (glove.840B has some): not ours
                if len(parts) < dim + 1:
                    raise DataError(f"{path} line {number}: {len(parts) - 1} numbers "
                                    f"after the word, the file's vectors have {dim}")
                found[i] = _numbers(path, number, parts[1:])
                if is_exact:
                    exact.add(i)
                    if len(exact) == len(wanted):
                        break  # every word has its own spelling's vector
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz
            raise DataError(f"{path}: cannot read ({e})") from None
    return found, dim, len(found) - len(exact)


def _chain(first: bytes, rest):
    yield first
    yield from rest


def vocabulary_words(vectorizer) -> Tuple[List[str], int]:
    """(words, first id): a `TextVectorization`'s words, most frequent first,
    and the id of the first one (after padding 0 and the OOV ids)."""
    vocab = [str(w) for w in vectorizer.get_vocabulary()]
    first = 1 + int(vectorizer._lookup_layer.num_oov_indices)
    return vocab[first:], first


def for_vocabulary(path: str, vectorizer, frozen: bool = False
                   ) -> Tuple[np.ndarray, np.ndarray, Coverage]:
    """The rows an embedding table gets from the file, and the coverage.

    Args:
      path: the vector file.
      vectorizer: the run's adapted `TextVectorization`.
      frozen: recorded in the coverage (`--freeze_embeddings`).

    Returns:
      (ids, vectors, coverage): token ids (int64, (k,)) and their vectors
      (float32, (k, dimension)); ids not listed keep their initialisation.

    Raises:
      DataError: an unreadable file, or one holding none of the words (the
        wrong file, or a different language or tokenisation).
    """
    words, first = vocabulary_words(vectorizer)
    found, dim, lowercased = read_vectors(path, words)
    if words and not found:
        raise DataError(f"{path}: none of the {len(words):,} vocabulary words found "
                        f"(e.g. {', '.join(words[:5])}): the wrong file?")
    index = np.array(sorted(found), np.int64)
    vectors = (np.stack([found[i] for i in index]) if len(index)
               else np.zeros((0, dim), np.float32))
    missing = tuple(w for i, w in enumerate(words) if i not in found)[:MISSING_LISTED]
    coverage = Coverage(path=path, dimension=dim, vocabulary=len(words),
                        found=len(found), lowercased=lowercased, missing=missing,
                        frozen=frozen)
    return index + first, vectors, coverage


__all__ = ["Coverage", "dimension", "read_vectors", "for_vocabulary",
           "vocabulary_words", "REPORT_FILE"]
