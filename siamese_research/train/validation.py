"""Validation: one in-order pass over the data, its metrics and their writes.

The loss, accuracy and AUC are Keras metrics updated in one compiled eval
step; the threshold accuracy (for scores that are not a probability), MAP
and MRR (text pairs: each left text's candidates ranked), Pearson (graded
labels) and the equal error rate (images) are computed from the pass's
scores, and an image run's most confident mistakes shown. `Trainer` calls it at
each epoch's end.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from siamese_research import data as data_lib
from siamese_research.metrics import streaming as metrics_lib
from siamese_research.metrics import verification
from siamese_research.metrics.pairs import accuracy
from siamese_research.summaries import views as summaries
from siamese_research.summaries import extras


class Validator:
    """Scores validation data with a `TrainStep`'s model and loss.

    Args:
      step: the run's `step.TrainStep` (model, loss, strategy).
    """

    def __init__(self, step):
        self.step = step
        with step.strategy.scope():
            self.metrics = metrics_lib.pair_metrics("val_")
        self.eval_step = None  # compiled at the first pass, from its data

    def evaluate(self, data, *, threshold: Optional[float] = None, writer=None,
                 step: Optional[int] = None):
        """One pass over `data` (a `PairDataset` or a `tf.data.Dataset`).

        Args:
          threshold: the accuracy's threshold when it is fitted (None: the
            probability's 0.5, Keras's `BinaryAccuracy`).
          writer: the validation writer; with `step`, the scalars and the PR
            curve go there at `step`.

        Returns:
          (logs {"val_loss" (not for a triplet or in-batch objective),
          "val_accuracy", "val_auc"[, "val_threshold"]
          [, "val_map", "val_mrr"][, "val_pearson"][, "val_eer" (images)]},
          scores (n,)).
        """
        data = data_lib.as_pair_dataset(data)
        if self.eval_step is None:
            self.eval_step = tf.function(self._distributed_step, autograph=False,
                                         input_signature=[data.element_spec])
        for m in self.metrics.values():
            m.reset_state()
        scores, labels = [], []
        for batch in data.epoch(0):
            label = batch[1].numpy()
            # Several replicas each score the whole (undistributed) batch and
            # the gather stacks the copies: the first is the batch's.
            scores.append(self.eval_step(batch).numpy()[:len(label)])
            labels.append(label)
        logs = {"val_" + k: float(m.result()) for k, m in self.metrics.items()}
        if not self._pair_loss:
            # Triplet and in-batch losses are over more than a pair: on pairs
            # there is no such loss to report (only what the scores give).
            del logs["val_loss"]
        scores = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        labels = np.concatenate(labels) if labels else np.zeros(0, np.float32)
        if threshold is not None:
            logs["val_accuracy"] = accuracy(labels, scores, threshold)
            logs["val_threshold"] = threshold
        logs.update(metrics_lib.ranked_and_graded(labels, scores, data.ranking_groups))
        pairs = getattr(data, "pairs", None)
        images = pairs is not None and pairs.is_image and len(scores)
        if images:
            logs["val_eer"] = verification.equal_error_rate(labels, scores)
        if step is not None and writer is not None:
            with writer.as_default():
                summaries.epoch_scalars(step, {k[4:]: v for k, v in logs.items()})
            if len(scores):
                extras.pr_curve(writer, labels, scores, step)
            if images:
                extras.hardest_pairs(writer, pairs, scores,
                                     0.5 if threshold is None else threshold, step)
        return logs, scores

    def _distributed_step(self, batch):
        scores = self.step.strategy.run(self._replica_step, args=(batch,))
        return self.step.strategy.gather(scores, axis=0)

    @property
    def _pair_loss(self) -> bool:
        """Whether the run's loss is over pairs (what validation scores)."""
        return getattr(self.step.model, "objective", "pair") == "pair"

    def _replica_step(self, batch):
        (left, right), label, weight = batch
        pred = self.step.model((left, right), training=False)
        if not self._pair_loss:
            loss = tf.zeros([])
        else:
            loss = self.step.loss_fn(label, pred, sample_weight=weight)
        # Keras 3 losses divide by num_replicas_in_sync: the replica's own mean.
        loss = loss * self.step.strategy.num_replicas_in_sync
        metrics_lib.update(self.metrics, loss, label, pred)
        return tf.reshape(pred, [-1])
