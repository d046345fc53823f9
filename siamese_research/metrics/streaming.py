"""Train and validation metrics, and an accuracy that means what it says.

A model's score is a similarity in [0, 1], but not every score is a
probability: a sigmoid head trained with binary cross-entropy is one, and
0.5 is its decision threshold; `cosine` and `manhattan` (and any score
trained with the contrastive loss or mse) are similarities on their own
scale, where 0.5 can sit anywhere (a `manhattan` model with AUC 0.86 read
0.49 accuracy at 0.5; a `cosine` one trained with the contrastive loss, AUC
1.00 and accuracy 0.78). For those the threshold is *fitted*: the one that
maximises the training accuracy (read off the AUC metric's confusion counts
at its 201 thresholds, so it costs nothing extra), and validation is scored
at the training threshold, never at its own.
"""

from __future__ import annotations

from typing import Dict, Tuple

import keras
import numpy as np
import tensorflow as tf

from siamese_research.metrics.pairs import pearson
from siamese_research.metrics.ranking import ranking_metrics

NUM_THRESHOLDS = 201  # thresholds 0, 0.005, ..., 1 (Keras adds +-epsilon at the ends)


def pair_metrics(prefix: str) -> Dict[str, keras.metrics.Metric]:
    return {"loss": keras.metrics.Mean(name=prefix + "loss"),
            "accuracy": keras.metrics.BinaryAccuracy(name=prefix + "accuracy"),
            "auc": keras.metrics.AUC(num_thresholds=NUM_THRESHOLDS, name=prefix + "auc")}


def fixed_threshold(model, loss: str) -> bool:
    """Whether 0.5 is the model's principled threshold: a probability, i.e.
    the Dense sigmoid head trained with bce. Score merges (`cosine`,
    `manhattan`, `dot`) are similarities on their own scale: fitted."""
    return loss == "bce" and model.head is not None


def pairs_of(model, label, output):
    """(labels, scores) of the pairs a training output holds, for the pair
    metrics: the output itself for pair scores; for a triplet's [d(a, p),
    d(a, n)], the pair (a, p) labelled 1 and (a, n) labelled 0; for
    in-batch negatives' (batch, batch) distances, the diagonal's pairs
    labelled 1 and the rest 0 (with mined negatives, (batch, 2 * batch):
    every negative column 0; for group batches, the pairs of a group 1).
    Distances become the merge's similarity, so AUC and the fitted
    threshold read as on pairs."""
    objective = getattr(model, "objective", "pair")
    if objective == "pair":
        return label, output
    scores = model.merge.similarity(tf.cast(output, tf.float32))
    if objective == "triplet":
        n = tf.shape(scores)[0]
        return tf.concat([tf.ones([n]), tf.zeros([n])], 0), tf.concat(
            [scores[:, 0], scores[:, 1]], 0)
    n = tf.shape(scores)[0]
    if objective == "in_batch_groups":
        group = tf.reshape(label, [-1])
        same = tf.cast(tf.equal(group[:, None], group[None, :]), tf.float32)
        return tf.reshape(same, [-1]), tf.reshape(scores, [-1])
    positive = tf.eye(n, num_columns=tf.shape(scores)[1])
    return tf.reshape(positive, [-1]), tf.reshape(scores, [-1])


def update(metrics, loss, label, pred, valid=None) -> None:
    """Updates `metrics` with one batch; a step that was not applied
    (`valid` False) counts with a zero weight (no tf.cond: one code path for
    every step, and every replica updates the same way)."""
    pred = tf.reshape(pred, [-1])
    if valid is None:
        metrics["loss"].update_state(loss)
        ones = None
    else:
        w = tf.cast(valid, tf.float32)
        loss = tf.where(valid, loss, tf.zeros_like(loss))
        pred = tf.where(valid, pred, tf.zeros_like(pred))
        metrics["loss"].update_state(loss, sample_weight=w)
        ones = tf.fill(tf.shape(pred), w)
    hard = tf.cast(label >= 0.5, tf.float32)
    metrics["accuracy"].update_state(hard, pred, sample_weight=ones)
    metrics["auc"].update_state(hard, pred, sample_weight=ones)


def fitted_threshold(auc: keras.metrics.AUC) -> Tuple[tf.Tensor, tf.Tensor]:
    """(threshold, accuracy): the AUC metric's threshold where the accuracy
    of `score > threshold` is highest over what it has seen, and that
    accuracy. Works in a compiled step and eagerly."""
    return best_threshold(auc.true_positives, auc.true_negatives, auc.false_positives,
                          auc.false_negatives, np.clip(auc.thresholds, 0.0, 1.0))


def best_threshold(tp, tn, fp, fn, thresholds) -> Tuple[tf.Tensor, tf.Tensor]:
    """(threshold, accuracy) where (tp + tn) / all is highest, from confusion
    counts per threshold (variables, tensors or numpy arrays)."""
    tp, tn, fp, fn = (tf.cast(tf.convert_to_tensor(x), tf.float32) for x in (tp, tn, fp, fn))
    correct = tp + tn
    accuracy = correct / tf.maximum(correct + fp + fn, 1e-12)
    best = tf.argmax(accuracy)
    return tf.gather(tf.constant(thresholds, tf.float32), best), tf.gather(accuracy, best)


def results(metrics, fixed: bool) -> Dict[str, float]:
    """The metrics' values; without a `fixed` threshold, `accuracy` at the
    threshold fitted on what the metrics have seen, and that `threshold`."""
    logs = {k: float(m.result()) for k, m in metrics.items()}
    if not fixed:
        threshold, accuracy = fitted_threshold(metrics["auc"])
        logs.update(accuracy=float(accuracy), threshold=float(threshold))
    return logs


def ranked_and_graded(labels: np.ndarray, scores: np.ndarray,
                      groups=None) -> Dict[str, float]:
    """Validation metrics beyond accuracy that the data supports:
    `val_map`, `val_mrr` when pairs have groups (each left text's candidates
    ranked by score), `val_pearson` when labels are graded (not all 0 or 1).
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    n = len(scores)
    out = {}
    if groups is not None and len(groups) == n:
        ranked = ranking_metrics(groups, labels, scores)
        out.update(val_map=ranked["map"], val_mrr=ranked["mrr"])
    if n and np.any((labels > 0) & (labels < 1)):
        out["val_pearson"] = pearson(labels, scores)
    return out
