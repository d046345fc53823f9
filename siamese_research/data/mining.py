"""Mined hard negatives: for each anchor, negatives from a rank window of
its nearest candidates that are not among its labelled positives.

The miner itself is numpy on scores (higher = closer): minus the merge's
distance, from the train run's current encoder (`train.mining`) or a
trained run's towers (`inference.mining`); both rank the same way here.

    pool = MiningPool.of(pairs)        # anchors, candidates, positives
    scores = ...                       # (anchors, candidates), e.g. cosine
    window = pool.window(scores, lo=1, hi=10, margin=None)
    plan = MinedPlan(pool, window)      # triplets, a negative drawn per epoch

As sentence-transformers' `mine_hard_negatives`: the candidates are the
training pairs' right texts (each distinct text once); an anchor's own
labelled positives are never its negatives; the `lo` nearest others are
skipped (the likeliest to be unlabelled positives); with a margin, a
negative must score at most the positive's score minus the margin (its
distance at least the positive's plus the margin).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from siamese_research.data.pairs import Pairs
from siamese_research.errors import DataError

SALT = 4  # an epoch's draw from the windows: np.random.default_rng([seed, epoch, 4])


class MiningPool:
    """What mining ranks, from text pairs.

    Attributes:
      rows: int64 (t,) the positive rows (label >= 0.5): one triplet each,
        [row, negative row], in this order.
      anchor_of: int64 (t,) each triplet's anchor (index into `anchors`).
      anchors: the distinct left texts of the positive rows (stripped).
      anchor_rows: int64 (a,) a pair row holding each anchor on its left.
      candidates: the distinct right texts of all the rows (stripped).
      candidate_rows: int64 (c,) a pair row holding each candidate on its
        right (the first): a mined negative is `right[candidate_rows[k]]`.
      positive_of: int64 (t,) each triplet's positive, as a candidate.
      positives: per anchor, the sorted candidates labelled positive with it.
    """

    def __init__(self, left_text, right_text, label):
        left = [t.strip() for t in left_text]
        right = [t.strip() for t in right_text]
        positive = np.asarray(label) >= 0.5
        self.rows = np.flatnonzero(positive).astype(np.int64)
        if not len(self.rows):
            raise DataError(f"no positive pairs (label >= 0.5) among {len(left)} "
                            f"to mine negatives for")
        cand_index = {}
        for i, t in enumerate(right):
            cand_index.setdefault(t, i)
        self.candidates = list(cand_index)
        self.candidate_rows = np.array(list(cand_index.values()), np.int64)
        number = {t: k for k, t in enumerate(self.candidates)}
        anchor_index = {}
        for r in self.rows:
            anchor_index.setdefault(left[r], int(r))
        self.anchors = list(anchor_index)
        self.anchor_rows = np.array(list(anchor_index.values()), np.int64)
        anchor_number = {t: a for a, t in enumerate(self.anchors)}
        self.anchor_of = np.array([anchor_number[left[r]] for r in self.rows], np.int64)
        self.positive_of = np.array([number[right[r]] for r in self.rows], np.int64)
        positives = [set() for _ in self.anchors]
        for a, c in zip(self.anchor_of, self.positive_of):
            positives[a].add(int(c))
        self.positives = [np.array(sorted(p), np.int64) for p in positives]

    @classmethod
    def of(cls, pairs: Pairs) -> "MiningPool":
        """The pool of a text `Pairs`."""
        if pairs.left_text is None:
            raise DataError("hard negatives are mined among a text pair file's "
                            "candidates: these pairs have no texts")
        return cls(pairs.left_text, pairs.right_text, pairs.label)

    def __len__(self) -> int:
        return len(self.rows)

    def window(self, scores: np.ndarray, lo: int, hi: int,
               margin: Optional[float] = None) -> np.ndarray:
        """int64 (t, hi - lo) each triplet's negatives: the candidates of
        ranks lo..hi-1 among its anchor's non-positive candidates, highest
        score first (ties in candidate order), without those scoring above
        the triplet's positive's score minus `margin`; -1 pads. Candidate
        numbers, not rows (see `rows_of`).

        Args:
          scores: (anchors, candidates) float scores, higher = closer.
        """
        scores = np.asarray(scores, np.float64)
        if scores.shape != (len(self.anchors), len(self.candidates)):
            raise ValueError(f"scores of shape {scores.shape}; expected "
                             f"{(len(self.anchors), len(self.candidates))}")
        width = hi - lo
        ranked = np.full((len(self.anchors), width), -1, np.int64)
        for a, row in enumerate(scores):
            keep = np.ones(len(row), bool)
            keep[self.positives[a]] = False
            order = np.flatnonzero(keep)
            order = order[np.argsort(-row[order], kind="stable")][lo:hi]
            ranked[a, :len(order)] = order
        out = ranked[self.anchor_of]
        if margin is not None:
            positive = scores[self.anchor_of, self.positive_of]
            safe = np.where(out >= 0, out, 0)
            negative = scores[self.anchor_of[:, None], safe]
            out = np.where((out >= 0) & (negative <= positive[:, None] - margin), out, -1)
            # The kept ones first, in rank order.
            out = np.take_along_axis(out, np.argsort(out < 0, axis=1, kind="stable"),
                                     axis=1)
        return out

    def rows_of(self, window: np.ndarray) -> np.ndarray:
        """A window of candidate numbers as pair rows (-1 stays -1)."""
        return np.where(window >= 0, self.candidate_rows[np.maximum(window, 0)], -1)


class MinedPlan:
    """Triplets `[positive_row, negative_row]` from mined windows: every
    epoch, each positive row's negative is drawn uniformly among its
    window's (by `np.random.default_rng([seed, epoch, SALT])`); a row whose
    window is empty (the margin left nothing; every row, for the random
    control `--triplets=from_corpus`) takes a uniform non-positive candidate
    instead.

    Args:
      pool: the `MiningPool`.
      window: int64 (t, w) negative ROWS per triplet (`MiningPool.rows_of`), -1 pads.
    """

    def __init__(self, pool: MiningPool, window: np.ndarray):
        window = np.asarray(window, np.int64)
        if window.ndim != 2 or len(window) != len(pool):
            raise ValueError(f"a window of shape {window.shape} for {len(pool)} triplets")
        self.pool, self.window = pool, window
        self.sizes = (window >= 0).sum(axis=1)
        self.empty = int((self.sizes == 0).sum())
        c = len(pool.candidates)  # (anchor, positive) as one number
        self._positive_keys = np.concatenate(
            [a * c + p for a, p in enumerate(pool.positives)]) if self.empty else None

    def draw(self, seed: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch, SALT])
        pick = np.floor(rng.random(len(self.window)) * np.maximum(self.sizes, 1))
        negative = np.take_along_axis(self.window, pick.astype(np.int64)[:, None],
                                      axis=1)[:, 0]
        if self.empty:
            negative[self.sizes == 0] = self._uniform(rng, np.flatnonzero(self.sizes == 0))
        return np.stack([self.pool.rows, negative], axis=1).astype(np.int64)

    def _uniform(self, rng, triplets: np.ndarray) -> np.ndarray:
        """Negative rows for `triplets`, each uniform among the candidates
        not labelled positive for its anchor (by redrawing those that are)."""
        pool, c = self.pool, len(self.pool.candidates)
        keys = self._positive_keys
        anchor = pool.anchor_of[triplets]
        out = rng.integers(0, c, size=len(triplets))
        for _ in range(1000):
            bad = np.flatnonzero(np.isin(anchor * c + out, keys))
            if not len(bad):
                break
            out[bad] = rng.integers(0, c, size=len(bad))
        else:  # (an anchor whose every candidate is a positive: keep its positive)
            out[bad] = pool.positive_of[triplets[bad]]
        return pool.candidate_rows[out]

    def summary(self) -> dict:
        """What a mining gave: triplets, mean window size, empty windows."""
        return {"triplets": int(len(self.window)),
                "mean_window": float(self.sizes.mean()) if len(self.sizes) else 0.0,
                "empty_windows": self.empty}
