"""Ranks a corpus for a query with a trained run's own scorer:
`python -m siamese_research.tools.search`.

    python -m siamese_research.tools.search --run_dir=runs/qa --corpus=answers.csv \
        --column=a --query="what is a siamese network?" --k=10
    python -m siamese_research.tools.search --run_dir=runs/qa --corpus=answers.csv \
        --column=a --queries=questions.txt          # one query per line

The corpus is encoded once (the right tower) and cached beside the run,
`DIR/search_cache/<key>.npz`, where the key hashes the corpus file's
content, the column and the model and vectoriser files (path, size,
modification time): a changed corpus or a retrained model is encoded again.
Each query is encoded (the left tower) and scored against EVERY corpus item
with the model's merge + head, exactly what `predict` gives for the pair
(query, item), in batches. No approximate index: the cost is linear in the
corpus (see the README for items per second).

Output per query: a line `query: TEXT`, then the top k as
`rank<TAB>score<TAB>text` (ties in corpus order). Corpus texts with no words
(after lowercasing and stripping punctuation) are left out.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import List, Tuple

import numpy as np

from siamese_research.tools import cli
from siamese_research.config import DataError, UserError

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
    from siamese_research.data import files

    for path in (run.model_path, os.path.join(run.run_dir, files.VECTORIZER_FILE)):
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
    from siamese_research.tools import encode

    if not run.is_text:
        raise DataError(f"--run_dir={run.run_dir}: search needs a text run (this "
                        f"one takes float sequences)")
    items, _ = encode.read_column(run, corpus, column)
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
    tmp = path + ".tmp.npz"
    np.savez(tmp, encodings=encodings, texts=np.asarray(texts, dtype=str))
    os.replace(tmp, path)  # a reader never sees half a file
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


# -- command line ---------------------------------------------------------------
def define_flags():
    from absl import flags

    fv = flags.FlagValues()
    cli.define_run_flags(fv, run_help="a finished text run folder", batch_size=8192,
                         batch_help="corpus items scored per call")
    flags.DEFINE_string("corpus", None, "the texts to search (.csv/.tsv/.jsonl)",
                        flag_values=fv)
    flags.DEFINE_string("column", None, "the corpus column holding the texts",
                        flag_values=fv)
    flags.DEFINE_string("query", None, "one query", flag_values=fv)
    flags.DEFINE_string("queries", None, "a text file, one query per line",
                        flag_values=fv)
    flags.DEFINE_integer("k", 10, "results per query", flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    cli.require(fv, "run_dir", "corpus", "column")
    if bool(fv.query) == bool(fv.queries):
        cli.fail("give one of --query=TEXT or --queries=FILE")
    cli.require_positive(fv, "k", "batch_size")
    cli.quiet_python_logging()
    from siamese_research import artifacts as runs

    try:
        queries = read_queries(fv.queries) if fv.queries else [fv.query]
        run = runs.load_run(fv.run_dir, fv.which)
        encodings, texts, cached = corpus_encodings(run, fv.corpus, fv.column)
        results = search(run, queries, encodings, fv.k, fv.batch_size)
    except UserError as e:
        cli.fail(str(e))
    print(f"corpus: {len(texts)} texts ({'cached' if cached else 'encoded, cached'} "
          f"in {os.path.join(fv.run_dir, CACHE_FOLDER)})")
    for query, hits in zip(queries, results):
        print(f"query: {query}")
        for rank, (i, score) in enumerate(hits, start=1):
            print(f"{rank}\t{score:.6f}\t{' '.join(texts[i].split())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
