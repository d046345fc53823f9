"""Verification measures (same person? same class?): the equal error rate,
the false-accept rate at fixed false-reject rates, ROC AUC, and N-way
one-shot accuracy (Koch et al. 2015: one support image per class, is the
query's best-scoring support its own class's?).

A score is higher for "similar". A false accept is a dissimilar pair scored
above the threshold; a false reject a similar pair at or below it.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FRR_POINTS = (0.01, 0.05)
ONE_SHOT_DRAWS = 2000


def _rates(labels, scores) -> Tuple[np.ndarray, np.ndarray]:
    """(false-accept rates, false-reject rates) over every threshold,
    accepting more as the threshold falls (sklearn's ROC)."""
    labels = np.asarray(labels) >= 0.5
    far, tpr, _ = roc_curve(labels, np.asarray(scores, np.float64),
                            drop_intermediate=False)
    return far, 1.0 - tpr


def equal_error_rate(labels, scores) -> float:
    """The rate where false accepts equal false rejects, linearly
    interpolated between the two ROC points that bracket it; nan without
    both kinds of pair."""
    labels = np.asarray(labels) >= 0.5
    if labels.all() or not labels.any():
        return float("nan")
    far, frr = _rates(labels, scores)
    gap = far - frr  # rises from -1 (accept none) to +1 (accept all)
    i = int(np.argmax(gap >= 0))
    if i == 0 or gap[i] == 0:
        return float((far[i] + frr[i]) / 2)
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def far_at_frr(labels, scores, frr: float) -> float:
    """The lowest false-accept rate of a threshold that rejects at most
    `frr` of the similar pairs; nan without both kinds of pair."""
    labels = np.asarray(labels) >= 0.5
    if labels.all() or not labels.any():
        return float("nan")
    far, rejected = _rates(labels, scores)
    return float(far[rejected <= frr + 1e-12].min())


def verification_metrics(labels, scores) -> Dict[str, float]:
    """{"eer", "far_at_frr_1", "far_at_frr_5", "roc_auc"} of scored pairs."""
    labels = np.asarray(labels) >= 0.5
    out = {"eer": equal_error_rate(labels, scores)}
    for point in FRR_POINTS:
        out[f"far_at_frr_{round(point * 100)}"] = far_at_frr(labels, scores, point)
    both = labels.any() and not labels.all()
    out["roc_auc"] = float(roc_auc_score(labels, scores)) if both else float("nan")
    return out


def one_shot_draws(labels, ways: int, draws: int = ONE_SHOT_DRAWS,
                   seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Koch's N-way one-shot tasks over labelled items, seeded.

    Each draw picks `ways` classes among those with at least two items, one
    support item of each, and a query of one of them other than its support.

    Returns:
      (query (draws,), supports (draws, ways), answer (draws,)): item rows,
      and the column of `supports` that is the query's class.

    Raises:
      ValueError: fewer than 2 classes with two items, or ways < 2.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= 2]
    if ways < 2 or len(eligible) < 2:
        raise ValueError(f"{ways}-way one-shot needs at least 2 classes of two "
                         f"items; there are {len(eligible)}")
    ways = min(ways, len(eligible))
    members = {c: np.flatnonzero(labels == c) for c in eligible}
    rng = np.random.default_rng([seed, ways])
    query = np.empty(draws, np.int64)
    supports = np.empty((draws, ways), np.int64)
    answer = rng.integers(0, ways, draws)
    for d in range(draws):
        chosen = rng.choice(eligible, ways, replace=False)
        for w, c in enumerate(chosen):
            if w == answer[d]:
                query[d], supports[d, w] = rng.choice(members[c], 2, replace=False)
            else:
                supports[d, w] = rng.choice(members[c])
    return query, supports, answer


def one_shot_accuracy(score_pairs: Callable, labels, ways: int,
                      draws: int = ONE_SHOT_DRAWS, seed: int = 0) -> Tuple[float, int]:
    """(accuracy, ways) of `one_shot_draws`, scored by `score_pairs(left
    rows, right rows) -> scores` (higher = more similar; ties count as
    misses). `ways` is capped at the classes there are."""
    query, supports, answer = one_shot_draws(labels, ways, draws, seed)
    ways = supports.shape[1]
    scores = np.asarray(score_pairs(np.repeat(query, ways), supports.reshape(-1)),
                        np.float64).reshape(-1, ways)
    best = scores.max(axis=1, keepdims=True)
    right = scores[np.arange(len(answer)), answer] >= best[:, 0]
    unique = (scores == best).sum(axis=1) == 1
    return float(np.mean(right & unique)), ways


def cosine_scores(x, left, right, batch_size: int = 4096) -> np.ndarray:
    """Cosine similarity of rows `left[i]` and `right[i]` of `x` (n, ...)
    flattened: the raw-pixel baseline's score."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    left, right = np.asarray(left), np.asarray(right)
    return np.concatenate([np.sum(unit[left[i:i + batch_size]] * unit[right[i:i + batch_size]],
                                  axis=1) for i in range(0, len(left), batch_size)]
                          or [np.zeros(0, np.float32)])
