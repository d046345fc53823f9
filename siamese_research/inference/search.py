"""Ranks a corpus for a query with a loaded run's own scorer, its corpus
encodings cached beside the run (`siamese-search`)."""

from __future__ import annotations

import hashlib
import os
from typing import List, Tuple

import numpy as np

from siamese_research import atomic
from siamese_research.data import images, vocab
from siamese_research.errors import DataError
from siamese_research.inference.encode import read_column

CACHE_FOLDER = "search_cache"


def cache_path(run, corpus: str, column: str) -> str:
    """`DIR/search_cache/<key>.npz`: the key is a SHA-256 over the corpus
    file's bytes (a folder of images: every image's relative path, size and
    mtime), the column, and the identity (path, size, mtime) of the model
    and vectoriser files, so any change to them is a new key."""
    h = hashlib.sha256()
    if os.path.isdir(corpus):
        for path in images.folder_images(corpus, "corpus"):
            st = os.stat(path)
            h.update(f"{os.path.relpath(path, corpus)}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\0".encode("utf-8"))
    else:
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
    """The corpus's encodings (right tower) and texts (an image run's: the
    files' paths relative to the corpus folder), from the cache when it has
    them, else encoded and cached.

    Returns:
      (encodings (n, dim) float32, texts, whether the cache had them).

    Raises:
      DataError: a bad corpus file, folder or column.
    """
    if not run.is_text and not run.is_image:
        raise DataError(f"--run_dir={run.run_dir}: search needs a text or image run "
                        f"(this one takes float sequences)")
    if run.is_image and not os.path.isdir(corpus):
        raise DataError(f"--corpus={corpus}: an image run searches a folder of images")
    items, _ = read_column(run, corpus, None if run.is_image else column)
    path = cache_path(run, corpus, column or "")
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as npz:
                return npz["encodings"], npz["texts"].tolist(), True
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    if run.is_image:
        texts = [os.path.relpath(p, corpus) for p in items]
        encodings = run.encode(items, batch_size, side="right")
        _write_cache(path, encodings, texts)
        return encodings, texts, False
    ids = run.token_ids(items)
    kept = np.flatnonzero(ids.any(axis=1))
    texts = [items[i] for i in kept]
    encodings = run.encode(texts, batch_size, side="right")
    _write_cache(path, encodings, texts)
    return encodings, texts, False


def _write_cache(path: str, encodings, texts) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic.replacing(path) as tmp:  # a reader never sees half a file
        np.savez(tmp, encodings=encodings, texts=np.asarray(texts, dtype=str))


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
    """The top k (corpus index, score) of each query, best first. An image
    run's queries are image files.

    Raises:
      DataError: a query with no words, an unreadable query image.
    """
    if run.is_image:
        return _ranked(run, run.encode(list(queries)), encodings, k, batch_size)
    ids = run.token_ids(queries)
    for q, row in zip(queries, ids):
        if not row.any():
            raise DataError(f"query {q!r} has no words (after lowercasing and "
                            f"stripping punctuation)")
    return _ranked(run, run.encode(queries), encodings, k, batch_size)


def _ranked(run, h_queries, encodings, k: int, batch_size: int):
    out = []
    for h in h_queries:
        scores = run.score_query(h, encodings, batch_size)
        out.append([(int(i), float(scores[i])) for i in top_k(scores, k)])
    return out


def read_queries(path: str) -> List[str]:
    """One query (a text, or an image file for an image run) per non-blank
    line of a UTF-8 text file."""
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
