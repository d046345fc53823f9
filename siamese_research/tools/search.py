"""Ranks a corpus for a query with a trained run's own scorer:
`python -m siamese_research.tools.search`.

    python -m siamese_research.tools.search --run_dir=runs/qa --corpus=answers.csv \
        --column=a --query="what is a siamese network?" --k=10
    python -m siamese_research.tools.search --run_dir=runs/qa --corpus=answers.csv \
        --column=a --queries=questions.txt          # one query per line
    python -m siamese_research.tools.search --run_dir=runs/digits \
        --corpus=my_digits/ --query=my_digits/7/a.png   # the nearest images

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

An image run searches a folder of images (every image in it and its
subfolders, resized and converted to the run's shape; no `--column`) for a
query image file (`--query`, or `--queries`: one path per line), and names
each hit by its path relative to the folder.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from siamese_research import artifacts, quiet
from siamese_research.inference.search import (CACHE_FOLDER, corpus_encodings,
                                               read_queries, search)
from siamese_research.tools import cli


def define_flags():
    fv = flags.FlagValues()
    cli.define_run_flags(fv, run_help="a finished text or image run folder",
                         batch_size=8192, batch_help="corpus items scored per call")
    flags.DEFINE_string("corpus", None, "the texts to search (.csv/.tsv/.jsonl), or a "
                        "folder of images (image runs)", flag_values=fv)
    flags.DEFINE_string("column", None, "the corpus column holding the texts (text "
                        "runs)", flag_values=fv)
    flags.DEFINE_string("query", None, "one query: a text, or an image file",
                        flag_values=fv)
    flags.DEFINE_string("queries", None, "a text file, one query per line",
                        flag_values=fv)
    flags.DEFINE_integer("k", 10, "results per query", flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    cli.require(fv, "run_dir", "corpus")
    if bool(fv.query) == bool(fv.queries):
        cli.fail("give one of --query=TEXT or --queries=FILE")
    cli.require_positive(fv, "k", "batch_size")
    quiet.quiet_python_logging()
    with cli.one_line_errors():
        queries = read_queries(fv.queries) if fv.queries else [fv.query]
        run = artifacts.load_run(fv.run_dir, fv.which)
        if not run.is_image and not fv.column:
            cli.fail("--column is required: the corpus column holding the texts")
        if run.is_image and fv.column:
            cli.fail(f"--column={fv.column}: an image run searches every image of "
                     f"--corpus; leave --column out")
        encodings, texts, cached = corpus_encodings(run, fv.corpus, fv.column)
        results = search(run, queries, encodings, fv.k, fv.batch_size)
    print(f"corpus: {len(texts)} {'images' if run.is_image else 'texts'} ({'cached' if cached else 'encoded, cached'} "
          f"in {os.path.join(fv.run_dir, CACHE_FOLDER)})")
    for query, hits in zip(queries, results):
        print(f"query: {query}")
        for rank, (i, score) in enumerate(hits, start=1):
            print(f"{rank}\t{score:.6f}\t{' '.join(texts[i].split())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
