"""metrics/: MAP and MRR (the project's own) against independent
computations, and the library-backed metrics on the edge cases they own."""

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from siamese_research.metrics import pairs as metrics
from siamese_research.metrics.ranking import ranking_metrics


def _groups(seed, ties):
    rng = np.random.default_rng(seed)
    groups, labels, scores = [], [], []
    for g in range(12):
        n = int(rng.integers(2, 7))
        y = rng.integers(0, 2, n)
        s = rng.integers(0, 3, n) / 2 if ties else rng.random(n)
        groups += [g] * n
        labels += y.tolist()
        scores += s.tolist()
    return groups, np.array(labels), np.array(scores, np.float64)


def _by_group(groups, labels, scores):
    for g in dict.fromkeys(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        y, s = labels[idx], scores[idx]
        if y.any() and not y.all():
            yield y, s


def test_map_and_mrr_without_ties_are_scikit_learns_per_group_average():
    groups, labels, scores = _groups(0, ties=False)
    got = ranking_metrics(groups, labels, scores)
    aps, rrs = [], []
    for y, s in _by_group(groups, labels, scores):
        aps.append(average_precision_score(y, s))
        rrs.append(1.0 / (1 + np.sum(s > s[y == 1].max())))
    assert got["groups_scored"] == len(aps) > 5
    assert got["map"] == pytest.approx(np.mean(aps))
    assert got["mrr"] == pytest.approx(np.mean(rrs))


def _ap_and_rr(order_labels):
    hits = np.flatnonzero(order_labels) + 1.0
    return np.mean(np.arange(1, len(hits) + 1) / hits), 1.0 / hits[0]


def test_ties_are_ranked_pessimistically_the_worst_order_the_scores_allow():
    """With tied scores, each group's AP and RR are the lowest over every
    order of its candidates that sorts the scores (brute force)."""
    groups, labels, scores = _groups(1, ties=True)
    got = ranking_metrics(groups, labels, scores)
    aps, rrs = [], []
    for y, s in _by_group(groups, labels, scores):
        worst = (math.inf, math.inf)
        for perm in itertools.permutations(range(len(y))):
            if all(s[a] >= s[b] for a, b in zip(perm, perm[1:])):
                ap, rr = _ap_and_rr(y[list(perm)])
                worst = (min(worst[0], ap), min(worst[1], rr))
        aps.append(worst[0])
        rrs.append(worst[1])
    assert got["map"] == pytest.approx(np.mean(aps))
    assert got["mrr"] == pytest.approx(np.mean(rrs))
    # scikit-learn counts a tie block as one step, which never reads lower.
    assert got["map"] < np.mean([average_precision_score(y, s)
                                 for y, s in _by_group(groups, labels, scores)]) + 1e-12


def test_one_threshold_rule_a_tie_is_not_similar():
    assert metrics.predicted([0.5, 0.50001, 0.4], 0.5).tolist() == [False, True, False]
    assert metrics.accuracy([1, 1], [0.5, 0.5], 0.5) == 0.0
    assert math.isnan(metrics.f1_score([0, 0], [0.1, 0.2]))
    assert math.isnan(metrics.average_precision([0, 0], [0.1, 0.2]))
    assert math.isnan(metrics.spearman([1, 2, 3], [4, 4, 4]))
