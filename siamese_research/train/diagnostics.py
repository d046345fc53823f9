"""Diagnostics: what TensorBoard shows of a view step.

Orbit's hook between step and loop. A *view step* is a train step like any
other (the same compiled call, the same update) whose loss and per-branch
gradients (left and right; anchor, positive and negative) the step stores
(`TrainStep.views`), with, on check steps, the independent total gradient
of its batch. Here they are read once and written to TensorBoard from
numpy: the train scalars, each branch's norm and every two branches'
cosine, the total norm and the branches' sum = total check, per-gate norms,
and histograms of weights and of each branch's gradients.
Nothing of it is traced: a run pays no compile for its diagnostics. Which
steps are view steps is `schedule.Schedule`'s.
"""

from __future__ import annotations

import time
from typing import Dict, Optional

from siamese_research.core import gradients as G
from siamese_research.metrics import streaming as metrics_lib
from siamese_research.summaries import views as summaries
from siamese_research.train.readout import unpack
from siamese_research.train.schedule import Due
from siamese_research.train.step import TrainStep


class Diagnostics:
    """Writes view steps' views.

    Args:
      step: the run's `TrainStep`.
      gate_gradients: per-gate norms and histograms for gated RNNs.
      branch_views: False writes the train scalars only (no branch views,
        no check, no histograms).
      fixed_threshold: accuracy at 0.5 (a probability); False fits it
        (`metrics.fitted_threshold`) and writes `threshold` beside it.
    """

    def __init__(self, step: TrainStep, *, gate_gradients: bool = True,
                 branch_views: bool = True, fixed_threshold: bool = True):
        self.step = step
        self.branch_views, self.fixed_threshold = branch_views, fixed_threshold
        self._gates = summaries.gate_slices(step.model) if gate_gradients else {}
        self.variables = G.encoder_variables(step.model)
        self._absent = _absent(step.model, self.variables)
        self.last_sum_error: Optional[float] = None
        self.max_sum_error = 0.0
        self.replica_sum_errors: list = []
        self.clock = (time.perf_counter(), 0)

    def start_clock(self, step: int) -> None:
        """samples_per_second counts from here (the loop: each epoch's start)."""
        self.clock = (time.perf_counter(), step)

    def write(self, step: int, due: Due, readout, pairs: int = 0) -> None:
        """Writes view step `step`'s views (the train writer is the default);
        `pairs`: those trained since the clock's last reading, for
        samples_per_second, measured here in Python (no clock op sits in the
        compiled step, which --deterministic would refuse); `readout`:
        (nonfinite_count, the values vector of `readout.readout`) as the
        call returned them."""
        log, check, hist = due
        nonfinite, values = readout
        views = unpack(self.step, values.numpy())  # one read
        metrics = self.step.metrics
        scalars, histograms = {}, {}
        if log:
            now = time.perf_counter()
            scalars.update(summaries.samples_per_second(pairs, now - self.clock[0]))
            self.clock = (now, step)
            threshold = None
            if self.fixed_threshold:
                accuracy = views["accuracy"]
            else:
                threshold, accuracy = metrics_lib.fitted_threshold(metrics["auc"])
            scalars.update(summaries.train_scalars(
                loss=views["loss"], accuracy=accuracy, threshold=threshold,
                learning_rate=views["learning_rate"], nonfinite=nonfinite))
        if self.branch_views:
            names = self.step.branches
            grads = {b: views[b] for b in names}
            if check or hist:
                grads["total"] = views["total"]
            if log:
                scalars.update(summaries.branch_scalars(_pick(grads, names)))
                scalars.update(summaries.gate_scalars(_pick(grads, names),
                                                      self.variables, self._gates))
            if check:
                scalars.update(self._check(grads))
            if hist:
                histograms = summaries.histograms(self.step.model, grads, self.variables,
                                                  self._gates, self._absent)
        summaries.write_view(step, scalars, histograms)

    def _check(self, grads) -> dict:
        """The sum check's scalars; every local replica checks its own
        split (the views shown are the first replica's)."""
        names = self.step.branches
        views = self.step.views
        self.replica_sum_errors = [G.sum_error(grads["total"], [grads[b] for b in names])]
        for r in range(1, self._replicas()):
            self.replica_sum_errors.append(G.sum_error(
                self._numpy(views["total"], r), [self._numpy(views[b], r) for b in names]))
        error = max(self.replica_sum_errors)
        self.last_sum_error = error
        self.max_sum_error = max(self.max_sum_error, error)
        return {**summaries.check_scalars(grads["total"], error),
                **summaries.gate_scalars(_pick(grads, ("total",)), self.variables,
                                         self._gates)}

    def _numpy(self, variables, replica: int = 0) -> list:
        local = self.step.strategy.experimental_local_results
        return [local(v)[replica].numpy() for v in variables]

    def _replicas(self) -> int:
        return len(self.step.strategy.experimental_local_results(self.step.views["loss"]))


def _pick(d: Dict[str, list], keys) -> Dict[str, list]:
    return {k: d[k] for k in keys}


def _absent(model, variables) -> set:
    """(branch, id(variable)) pairs a branch never reaches (untied towers)."""
    out = set()
    for branch, tower in zip(model.branches, model.towers):
        mine = {id(v) for v in tower.trainable_variables}
        out |= {(branch, id(v)) for v in variables if id(v) not in mine}
    return out


__all__ = ["Diagnostics"]
