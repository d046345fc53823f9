"""What a view step keeps: its layout, computed in the step, read in Python.

A view step's views are computed inside the compiled call, where the
gradients are (`core/gradient_stats`), and kept in slots the loop reads once
at the end of the call (`readout`): a *row* of scalars per view step and,
on histogram steps, a *histogram row* of binned gradients and weights. Not
a copy of any gradient: a row is a few dozen float64 numbers, a histogram
row `buckets + 2` per histogram.

`ViewLayout` fixes the order once, from the model: which tags a row holds
(the TensorBoard tag contract, docs/tensorboard.md), in three parts written
on what is due at that step:

* log: loss, learning rate, the non-finite count, an online miner's
  scalars (the loss's `miner_stats`: miner/active_fraction, ...), each branch's norm,
  every two branches' cosine, per-gate norms of each branch; and the
  accuracy metric's state (with a fitted threshold, the AUC metric's
  confusion counts), which Python sums over the local replicas before it
  shows the accuracy (and the threshold), as a read of the metric would;
* check: the independent total gradient's norm, the sum check's error and
  the total's per-gate norms;
* histograms: gradients/<branch>/<path> (and /<gate>) for each branch and
  the total, then weights/<path> for every trainable variable.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from siamese_research.core import gradient_stats as S
from siamese_research.core import gradients as G
from siamese_research.metrics import streaming as metrics_lib
from siamese_research.summaries import views as summaries

LOG, CHECK, HISTOGRAMS = 1, 2, 4  # a view step's code: what is due, as bits


def code(due) -> int:
    """A `schedule.Due` (log, check, histograms) as the step's bits."""
    log, check, hist = due
    return LOG * bool(log) | CHECK * bool(check or hist) | HISTOGRAMS * bool(hist)


class ViewLayout:
    """The order of a view step's values, fixed from the model.

    Args:
      model: the built `SiameseModel`.
      gate_gradients: per-gate norms and histograms of gated RNN weights.
      branch_views: False keeps the train scalars only.
      fixed_threshold: False adds the threshold fitted on the training
        scores so far (`metrics.streaming.fitted_threshold`) and shows the
        accuracy at it.
      buckets: bins per histogram.
      miner_tags: the loss's miner scalars (`losses.MINER_TAGS`), or none.
    """

    def __init__(self, model, *, gate_gradients: bool = True, branch_views: bool = True,
                 fixed_threshold: bool = True,
                 buckets: int = summaries.HISTOGRAM_BUCKETS, miner_tags: Sequence[str] = ()):
        self.branches = tuple(model.branches)
        self.variables = G.encoder_variables(model)
        self.weights = list(model.trainable_variables)
        self.branch_views, self.fixed_threshold = branch_views, fixed_threshold
        self.buckets = buckets
        self.gates = summaries.gate_slices(model) if gate_gradients else {}
        self.absent = _absent(model, self.variables)
        self.gate_names = gate_names = sorted(
            {g for _, names in self.gates.values() for g in names},
            key=lambda g: _gate_order(self.gates, g))
        self.log_tags = ["loss", "learning_rate", "nonfinite_steps", *miner_tags]
        self.miner_tags = tuple(miner_tags)
        self.check_tags: List[str] = []
        self.gradient_histograms: List[tuple] = []  # (tag, branch, index, gate)
        if branch_views:
            names = self.branches
            self.log_tags += [f"branch_gradients/{b}_norm" for b in names]
            self.log_tags += [f"branch_gradients/{_cosine_tag(a, b)}"
                              for i, a in enumerate(names) for b in names[i + 1:]]
            self.log_tags += [f"branch_gradients/{g}/{b}_norm"
                              for b in names for g in gate_names]
            self.check_tags = ["branch_gradients/total_norm", "branch_gradients/sum_error"]
            self.check_tags += [f"branch_gradients/{g}/total_norm" for g in gate_names]
            for b in names + ("total",):
                for i, v in enumerate(self.variables):
                    if (b, id(v)) in self.absent:
                        continue
                    self.gradient_histograms.append((f"gradients/{b}/{v.path}", b, i, None))
                    for gate in self.gates.get(id(v), (None, ()))[1]:
                        self.gradient_histograms.append(
                            (f"gradients/{b}/{v.path}/{gate}", b, i, gate))
        self.weight_tags = [f"weights/{v.path}" for v in self.weights] if branch_views else []
        # The metrics' state (`bind`): accuracy's total and count, and with a
        # fitted threshold the AUC's four confusion counts per threshold.
        self.thresholds = np.zeros(0)
        self.metric_size = 2
        self.histograms = len(self.gradient_histograms) + len(self.weight_tags)

    def bind(self, metrics) -> None:
        """Takes the step's train metrics' shape: the row holds their state."""
        if not self.fixed_threshold:
            self.thresholds = np.clip(np.asarray(metrics["auc"].thresholds, np.float64),
                                      0.0, 1.0)
        self.metric_size = 2 + 4 * len(self.thresholds)

    @property
    def log_size(self) -> int:
        """The row's log part: the log tags' values, then the metrics' state."""
        return len(self.log_tags) + self.metric_size

    @property
    def row_size(self) -> int:
        return self.log_size + len(self.check_tags)

    @property
    def sum_error_column(self) -> int:
        return self.log_size + 1  # (after the check part's total_norm)

    # -- in the step (graph) ------------------------------------------------------
    def log_values(self, *, loss, learning_rate, nonfinite, metrics,
                   branches: Sequence[list], miner=None) -> tf.Tensor:
        """The row's log part (float64), from the step's values, its train
        metrics (this replica's state), each branch's gradients
        (`branches[k]`: branch k's, per encoder variable) and the miner's
        scalars (a vector, with `miner_tags`)."""
        values = [tf.stack([tf.cast(tf.convert_to_tensor(x), tf.float64)
                            for x in (loss, learning_rate, nonfinite)])]
        if self.miner_tags:
            values.append(tf.reshape(tf.cast(miner, tf.float64), [len(self.miner_tags)]))
        state = list(metrics["accuracy"].variables)  # total, count
        if not self.fixed_threshold:
            auc = metrics["auc"]
            state += [auc.true_positives, auc.true_negatives, auc.false_positives,
                      auc.false_negatives]
        state = [tf.reshape(tf.cast(tf.convert_to_tensor(v), tf.float64), [-1])
                 for v in state]
        if self.branch_views:
            # Every norm and cosine from one Gram matrix of the branches.
            norms, cosines = S.norms_and_cosines(S.gram(branches))
            pairs = [(i, j) for i in range(len(self.branches))
                     for j in range(i + 1, len(self.branches))]
            values += [norms, tf.gather_nd(cosines, pairs) if pairs
                       else tf.zeros([0], tf.float64)]
            values += self._gate_norms(branches)
        return tf.concat(values + state, 0)  # (the log tags', then the metrics')

    def _gate_norms(self, branches) -> list:
        """Each branch's per-gate norms, branch by branch, gate by gate."""
        if not self.gate_names:
            return []
        norms = S.branch_gate_norms(branches, self.variables, self.gates,
                                    len(self.gate_names))
        return [tf.reshape(norms, [-1])]

    def check_values(self, total: list, branches: Sequence[list]) -> tf.Tensor:
        """The row's check part: |total|, the sum check's error, the total's
        per-gate norms."""
        norm, _ = S.norms_and_cosines(S.gram([total]))
        error = tf.reshape(S.sum_error(total, branches), [1])
        return tf.concat([norm, error] + self._gate_norms([total]), 0)

    def gradient_histogram_values(self, grads: Dict[str, list]) -> tf.Tensor:
        """[gradient histograms, buckets + 2]: each branch's and the total's,
        binned together (`gradient_stats.histograms`); a sparse gradient by
        its rows, the rest of its entries counted as zeros."""
        items, parts = [], {}
        for _, branch, i, gate in self.gradient_histograms:
            g, v = grads[branch][i], self.variables[i]
            if g is None:  # (a tower that does not reach v shows zeros)
                g = tf.zeros(v.shape, tf.float32)
            if gate is not None:
                names = self.gates[id(v)][1]
                if (branch, i) not in parts:
                    parts[(branch, i)] = S.gate_parts(g, names)
                items.append((parts[(branch, i)][names.index(gate)], 0))
            else:
                items.append(S.histogram_item(g, v))
        return S.histograms(items, self.buckets)

    def weight_histogram_values(self) -> tf.Tensor:
        """[weight histograms, buckets + 2]: every trainable variable's."""
        return S.histograms([(v.value, 0) for v in self.weights], self.buckets)

    # -- in Python, from a read row ---------------------------------------------------
    def scalars(self, rows: np.ndarray, due) -> Dict[str, float]:
        """{tag: value} of a view step's rows ([replicas, row_size], or one
        replica's row), for what `due` (log, check, histograms) wrote: the
        first replica's views; the accuracy (and fitted threshold) of every
        replica's metric state summed; the largest sum check."""
        rows = np.atleast_2d(rows)
        log, check, _ = due
        out = {}
        n = len(self.log_tags)
        if log:
            out.update(zip(self.log_tags, map(float, rows[0, :n])))
            if not out["nonfinite_steps"]:  # shown once there is one
                del out["nonfinite_steps"]
            out.update(self._accuracy(rows[:, n:n + self.metric_size].sum(axis=0)))
        if check and self.check_tags:
            at = n + self.metric_size
            out.update(zip(self.check_tags, map(float, rows[0, at:])))
            out[self.check_tags[1]] = float(rows[:, self.sum_error_column].max())
        return out

    def _accuracy(self, state: np.ndarray) -> Dict[str, float]:
        """accuracy (= total / count), or at the fitted threshold the best
        accuracy of `score > threshold` over the AUC's thresholds and that
        threshold (`metrics.streaming.fitted_threshold`'s rule)."""
        total, count = state[:2]
        if self.fixed_threshold:
            return {"accuracy": float(total / count) if count else 0.0}
        threshold, accuracy = metrics_lib.best_threshold(*np.split(state[2:], 4),
                                                         self.thresholds)
        return {"accuracy": float(accuracy), "threshold": float(threshold)}

    def histogram_arrays(self, rows: np.ndarray) -> Dict[str, np.ndarray]:
        """{tag: (buckets, 3) [left edge, right edge, count]} of a histogram
        row, TensorBoard's histogram plugin's format."""
        tags = [t for t, *_ in self.gradient_histograms] + self.weight_tags
        out = {}
        for tag, (lo, hi, *counts) in zip(tags, rows):
            edges = np.linspace(lo, hi, self.buckets + 1)
            out[tag] = np.stack([edges[:-1], edges[1:], np.asarray(counts)], axis=1)
        return out


def _cosine_tag(a: str, b: str) -> str:
    return "cosine" if (a, b) == ("left", "right") else f"cosine/{a}_{b}"


def _gate_order(gates: dict, gate: str) -> int:
    for _, names in gates.values():
        if gate in names:
            return list(names).index(gate)
    return 0


def _absent(model, variables) -> set:
    """(branch, id(variable)) pairs a branch never reaches (untied towers)."""
    out = set()
    for branch, tower in zip(model.branches, model.towers):
        mine = {id(v) for v in tower.trainable_variables}
        out |= {(branch, id(v)) for v in variables if id(v) not in mine}
    return out


__all__ = ["ViewLayout", "code", "LOG", "CHECK", "HISTOGRAMS"]
