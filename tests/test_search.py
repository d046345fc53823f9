"""The search tool: its ranking is the model's own score, its cache is reused
and renewed."""

import csv
import os
import time

import numpy as np
import pytest

from conftest import run_tool
from siamese_research import artifacts as runs
from siamese_research.inference import search
from siamese_research.config import DataError


def _corpus(path, texts):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "a"])
        w.writerows([i, t] for i, t in enumerate(texts))
    return str(path)


def test_top_k_orders_by_score_then_index():
    assert search.top_k([0.1, 0.9, 0.5, 0.9], 3).tolist() == [1, 3, 2]
    assert search.top_k([0.5, 0.5, 0.5], 2).tolist() == [0, 1]
    assert search.top_k([0.2, 0.3], 5).tolist() == [1, 0]


def test_cli_ranks_with_the_models_score_and_caches(text_run, tmp_path):
    import shutil

    # A copy: this test writes a cache into the run and touches its model.
    text_run = shutil.copytree(text_run, tmp_path / "run")
    texts = [f"thing{i} is a thing" for i in range(6)] + ["nothing to see", "other1"]
    corpus = _corpus(tmp_path / "corpus.csv", texts)
    query = "what is thing1?"
    proc = run_tool("search", f"--run_dir={text_run}", f"--corpus={corpus}",
                    "--column=a", f"--query={query}", "--k=3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert "encoded, cached" in lines[0] and lines[1] == f"query: {query}"
    hits = [line.split("\t") for line in lines[2:]]
    # The model's score of every (query, item) pair, ranked: the same top 3.
    run = runs.load_run(str(text_run))
    scores = run.score([query] * len(texts), texts)
    want = search.top_k(scores, 3)
    assert [h[0] for h in hits] == ["1", "2", "3"]
    assert [h[2] for h in hits] == [texts[i] for i in want]
    np.testing.assert_allclose([float(h[1]) for h in hits], scores[want], atol=1e-5)

    # In-process: the cache is found; a changed corpus is a new cache entry.
    enc, cached_texts, cached = search.corpus_encodings(run, corpus, "a")
    assert cached and cached_texts == texts
    np.testing.assert_allclose(enc, run.encode(texts, side="right"), atol=1e-6)
    _corpus(tmp_path / "corpus.csv", texts[:-1])
    enc, cached_texts, cached = search.corpus_encodings(run, corpus, "a")
    assert not cached and len(enc) == len(texts) - 1
    assert len(os.listdir(text_run / search.CACHE_FOLDER)) == 2
    # A newer model file (same bytes) invalidates it too.
    future = time.time() + 10
    os.utime(run.model_path, (future, future))
    assert not search.corpus_encodings(run, corpus, "a")[2]
    with pytest.raises(DataError, match="has no words"):
        search.search(run, ["?!"], enc)
