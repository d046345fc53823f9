"""Mines hard negatives for a pair file with a trained run (`siamese-mine`):
a triplet file (anchor, positive, negative) out of a pair file, ranked by
the run's own search (its left tower on the anchors, its right tower on the
candidates, its merge), with the rule training uses (`data.mining`)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from siamese_research import artifacts
from siamese_research.data import tables
from siamese_research.data.mining import MiningPool
from siamese_research.errors import DataError
from siamese_research.train import mining as mining_lib

COLUMNS = ("anchor", "positive", "negative", "negative_rank", "negative_score",
           "positive_score")


def read_labelled_pairs(run, path: str, left_column: Optional[str] = None,
                        right_column: Optional[str] = None,
                        label_column: Optional[str] = None):
    """(left texts, right texts, labels in [0, 1]) of a labelled text pair
    file, read as training reads one (`tables.read_text_rows`): its columns
    named as the run was trained (or by the arguments), graded labels mapped
    by the run's --label_range, its quoting.

    Raises:
      DataError, ConfigError: a bad file, column or label.
    """
    if not run.is_text:
        raise DataError(f"--run_dir={run.run_dir}: mining ranks texts; this run was "
                        f"trained on {'images' if run.is_image else 'float sequences'}")
    named = {k: v for k, v in (("left_column", left_column),
                               ("right_column", right_column),
                               ("label_column", label_column)) if v}
    config = artifacts.read_run_config(run.run_dir, data=path, validation_data=None,
                                       **named)
    rows = tables.read_text_rows(path, config)
    return rows.left, rows.right, rows.label


def mine(run, left, right, label, *, lo: int, hi: int, margin: Optional[float] = None,
         num_negatives: int = 1, seed: int = 0, batch_size: int = 256):
    """Triplet rows (dicts of `COLUMNS`) and a summary: for each positive
    pair, up to `num_negatives` distinct negatives drawn (seeded) from its
    window (`MiningPool.window`), ranked as the run's search ranks: by the
    merge's distance for a distance merge (as training mines), else by the
    run's score; the score columns are the search's scores.

    Raises:
      DataError: a margin for a run whose merge has no distance.
    """
    pool = MiningPool(left, right, label)
    merge = run.model.merge
    if margin is not None and not merge.has_distance:
        raise DataError(f"--mine_margin is on the merge's distance; this run's merge "
                        f"({merge.merge_name}) has none")
    anchors = run.encode(pool.anchors, batch_size, side="left")
    candidates = run.encode(pool.candidates, batch_size, side="right")
    scores = np.stack([run.score_query(h, candidates) for h in anchors]) if len(
        anchors) else np.zeros((0, len(pool.candidates)), np.float32)
    rank = mining_lib.closeness(merge, anchors, candidates) if merge.has_distance \
        else scores
    window = pool.window(rank, lo, hi, margin)
    rng = np.random.default_rng(seed)
    out, empty = [], 0
    for t, (row, choices) in enumerate(zip(pool.rows, window)):
        choices = choices[choices >= 0]
        if not len(choices):
            empty += 1
            continue
        a = pool.anchor_of[t]
        # A negative's rank among its anchor's non-positive candidates.
        order = {int(c): lo + k for k, c in enumerate(choices)} if margin is None else \
            _ranks(rank[a], pool.positives[a], choices)
        for c in rng.choice(choices, size=min(num_negatives, len(choices)), replace=False):
            out.append({"anchor": left[row], "positive": right[row],
                        "negative": pool.candidates[c], "negative_rank": order[int(c)],
                        "negative_score": float(scores[a, c]),
                        "positive_score": float(scores[a, pool.positive_of[t]])})
    summary = {"pairs": len(left), "positives": len(pool), "anchors": len(pool.anchors),
               "candidates": len(pool.candidates), "triplets": len(out),
               "without_negative": empty}
    return out, summary


def _ranks(row: np.ndarray, positives: np.ndarray, choices: np.ndarray) -> dict:
    keep = np.ones(len(row), bool)
    keep[positives] = False
    order = np.flatnonzero(keep)
    order = order[np.argsort(-row[order], kind="stable")]
    rank = {int(c): r for r, c in enumerate(order)}
    return {int(c): rank[int(c)] for c in choices}
