"""The text vocabulary: a `keras.layers.TextVectorization` adapted on the
training split only (0 = padding, at most `max_length` tokens), saved with
the run (`vectorizer.json`); unseen words hashed (unsalted FarmHash) into
`oov_buckets` ids, so the same unseen word gets the same id on both sides
and in every run that loads it; optional character n-gram ids after the
words; and the idf of each id."""

from __future__ import annotations

import json
import math
import os
import zlib
from typing import List, Sequence, Tuple

import keras
import numpy as np

from siamese_research import atomic
from siamese_research.config import Config
from siamese_research.data.pairs import Pairs
from siamese_research.errors import DataError
from siamese_research.text.tokens import idf_weights, words


VECTORIZER_FILE = "vectorizer.json"


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
    return atomic.write_text(os.path.join(run_dir, VECTORIZER_FILE),
                             json.dumps(state, ensure_ascii=False))


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
