"""Metrics of scored pairs, in numpy, from the libraries that own them.

ROC AUC, average precision and F1 are scikit-learn's, Pearson and Spearman
SciPy's; MAP and MRR per group are this project's (`ranking`). A metric that
does not apply to the data (one class only, a constant score) is NaN.

The threshold rule, everywhere (training and validation accuracy, the fitted
and the validated threshold, `predict`'s `label_pred`, a run's
`predict_labels`): a pair is predicted similar when its score is ABOVE the
threshold, `score > threshold` (`predicted`), as Keras's `BinaryAccuracy`
and `AUC` count it inside the compiled step; a label is similar when it is
at least 0.5.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import stats
from sklearn import metrics as sk

from siamese_research.metrics.ranking import ranking_metrics


def similar(labels) -> np.ndarray:
    """Labels as booleans: similar when at least 0.5 (graded labels too)."""
    return np.asarray(labels) >= 0.5


def predicted(scores, threshold: float = 0.5) -> np.ndarray:
    """THE threshold rule: similar when `score > threshold`."""
    return np.asarray(scores) > threshold


def accuracy(labels, scores, threshold: float = 0.5) -> float:
    """Fraction of pairs where `predicted(score)` agrees with `similar(label)`."""
    y = similar(labels)
    return float(np.mean(y == predicted(scores, threshold))) if len(y) else math.nan


def best_threshold(labels, scores) -> float:
    """The score threshold with the highest accuracy on (labels, scores).

    Candidates are the midpoints between consecutive distinct scores, plus one
    below all and one above all scores, so no score sits on a candidate and
    the rule's tie convention cannot matter. Ties in accuracy go to the
    threshold closest to 0.5, so a perfectly separable set keeps a central
    cut.
    """
    y = similar(labels)
    s = np.asarray(scores, np.float64)
    if not len(s):
        return 0.5
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = len(s)
    # Cut k: rows [:k] predicted dissimilar, [k:] similar.
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    pos_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    correct = neg_below + pos_above
    cuts = [0] + [k for k in range(1, n) if s[k - 1] < s[k]] + [n]

    def value(k):
        if k == 0:
            return float(s[0]) - 1e-6
        if k == n:
            return float(s[-1]) + 1e-6
        return float((s[k - 1] + s[k]) / 2.0)

    best = max(correct[k] for k in cuts)
    candidates = [value(k) for k in cuts if correct[k] == best]
    return min(candidates, key=lambda t: (abs(t - 0.5), t))


def f1_score(labels, scores, threshold: float = 0.5) -> float:
    """F1 of the similar class at `threshold` (NaN with no similar pair
    either labelled or predicted)."""
    y, p = similar(labels), predicted(scores, threshold)
    if not (y.any() or p.any()):
        return math.nan
    return float(sk.f1_score(y, p, zero_division=0.0))


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (ties count one half); NaN with one class."""
    y = similar(labels)
    if y.all() or not y.any():
        return math.nan
    return float(sk.roc_auc_score(y, np.asarray(scores, np.float64)))


def average_precision(labels, scores) -> float:
    """scikit-learn's average precision (tied scores form one step); NaN
    without a similar pair."""
    y = similar(labels)
    if not y.any():
        return math.nan
    return float(sk.average_precision_score(y, np.asarray(scores, np.float64)))


def pearson(x, y) -> float:
    """Pearson's r; NaN for fewer than two points or a constant side."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(stats.pearsonr(x, y).statistic)


def spearman(x, y) -> float:
    """Spearman's rho (Pearson's r of the average ranks); NaN as `pearson`."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


def triplet_metrics(scores, triplets) -> Dict[str, float]:
    """`triplets`: (n, 2) rows [positive pair, negative pair] into `scores`:
    the fraction whose positive pair scores above its negative pair (for a
    distance merge's similarity: d(a, p) < d(a, n); a tie counts half)."""
    t = np.asarray(triplets, np.int64)
    pos, neg = np.asarray(scores)[t[:, 0]], np.asarray(scores)[t[:, 1]]
    return {"triplets": int(len(t)),
            "triplet_accuracy": float(np.mean((pos > neg) + 0.5 * (pos == neg)))}


def compute_metrics(labels, scores, *, groups: Optional[Sequence] = None,
                    threshold: Optional[float] = None,
                    graded: bool = False, triplets=None) -> Dict[str, float]:
    """All the metrics that apply, as a flat dict.

    Args:
      labels: targets in [0, 1] (1 = similar).
      scores: model scores in [0, 1].
      groups: a group key per pair (the left text) for MAP/MRR; None skips them.
      threshold: the threshold chosen on validation data, or None.
      graded: labels are graded scores: Pearson/Spearman instead of the
        classification metrics.
      triplets: (n, 2) rows [positive pair, negative pair] of a triplet file
        (`Pairs.triplets`): adds `triplet_accuracy`.
    """
    labels = np.asarray(labels, np.float64)
    scores = np.asarray(scores, np.float64)
    out: Dict[str, float] = {"pairs": int(len(labels))}
    if graded:
        out.update(pearson=pearson(labels, scores), spearman=spearman(labels, scores))
        return out
    out["positives"] = int(np.sum(similar(labels)))
    out["accuracy"] = accuracy(labels, scores, 0.5)
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["accuracy_best_threshold"] = accuracy(labels, scores, threshold)
    # At 0.5, the model's own decision rule: the accuracy-best threshold on
    # imbalanced validation data is often "nothing is positive", where F1 is 0.
    out["f1"] = f1_score(labels, scores, 0.5)
    out["roc_auc"] = roc_auc(labels, scores)
    out["average_precision"] = average_precision(labels, scores)
    if groups is not None:
        out.update(ranking_metrics(groups, labels, scores))
    if triplets is not None and len(triplets):
        out.update(triplet_metrics(scores, triplets))
    return out
