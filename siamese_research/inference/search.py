"""Ranks a corpus for a query with a loaded run's own scorer, its corpus
encodings cached beside the run (`siamese-search`)."""

from __future__ import annotations

import hashlib
import os
from typing import List, Tuple

import numpy as np

from siamese_research import atomic
from siamese_research.data import vocab
from siamese_research.errors import DataError
from siamese_research.inference.encode import read_column

CACHE_FOLDER = "search_cache"


def cache_path(run, corpus: str, column: str) -> str:
    """`DIR/search_cache/<key>.npz`: the key is a SHA-256 over the corpus
    file's bytes, the column, and the identity (path, size, mtime) of the
    model and vectoriser files, so any change to them is a new key."""
    h = hashlib.sha256()
    with open(corpus, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    h.update(b"\0" + column.encode("utf-8"))
    for path in (run.model_path, os.path.join(run.run_dir, vocab.VECTORIZER_FILE)):
        if os.path.exists(path):
            st = os.stat(path)
            h.update(f"\0{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"
                     .encode("utf-8"))
    return os.path.join(run.run_dir, CACHE_FOLDER, h.hexdigest()[:32] + ".npz")


def corpus_encodings(run, corpus: str, column: str,
                     batch_size: int = 256) -> Tuple[np.ndarray, List[str], bool]:
    """The corpus's encodings (right tower) and texts, from the cache when it
    has them, else encoded and cached.

    Returns:
      (encodings (n, dim) float32, texts, whether the cache had them).

    Raises:
      DataError: a bad corpus file or column.
    """
    if not run.is_text:
        raise DataError(f"--run_dir={run.run_dir}: search needs a text run (this "
                        f"one takes float sequences)")
    items, _ = read_column(run, corpus, column)
    path = cache_path(run, corpus, column)
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as npz:
                return npz["encodings"], npz["texts"].tolist(), True
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    ids = run.token_ids(items)
    kept = np.flatnonzero(ids.any(axis=1))
    texts = [items[i] for i in kept]
    encodings = run.encode(texts, batch_size, side="right")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic.replacing(path) as tmp:  # a reader never sees half a file
        np.savez(tmp, encodings=encodings, texts=np.asarray(texts, dtype=str))
    return encodings, texts, False


def top_k(scores, k: int) -> np.ndarray:
    """Indices of the k highest scores, highest first, ties in index order."""
    scores = np.asarray(scores)
    k = min(k, len(scores))
    if k < len(scores):
        # argpartition on the negated scores; ties at the cut go to the
        # lower indices through the stable sort of the candidates below.
        cut = np.partition(-scores, k - 1)[k - 1]
        candidates = np.flatnonzero(-scores <= cut)
    else:
        candidates = np.arange(len(scores))
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order][:k]


def search(run, queries: List[str], encodings, k: int = 10,
           batch_size: int = 8192) -> List[List[Tuple[int, float]]]:
    """The top k (corpus index, score) of each query, best first.

    Raises:
      DataError: a query with no words.
    """
    ids = run.token_ids(queries)
    for q, row in zip(queries, ids):
        if not row.any():
            raise DataError(f"query {q!r} has no words (after lowercasing and "
                            f"stripping punctuation)")
    h_queries = run.encode(queries)
    out = []
    for h in h_queries:
        scores = run.score_query(h, encodings, batch_size)
        out.append([(int(i), float(scores[i])) for i in top_k(scores, k)])
    return out


def read_queries(path: str) -> List[str]:
    """One query per non-blank line of a UTF-8 text file."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            queries = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise DataError(f"--queries={path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"--queries={path}: not UTF-8 text ({e.reason})") from None
    if not queries:
        raise DataError(f"--queries={path}: no queries (one per line)")
    return queries
