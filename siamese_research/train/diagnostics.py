"""Diagnostics: what TensorBoard shows of a call's view steps.

Orbit's hook between step and loop. A *view step* is a train step like any
other (the same compiled call, the same update) that computes its views in
the step and keeps them in a slot (`views.ViewLayout`, `TrainStep`): the
train scalars, each branch's norm and every two branches' cosine, per-gate
norms, on check steps the total's norm and the branches' sum = total
check, on histogram steps the binned gradients of each branch and the
weights. A compiled call holds every view step that falls in it; here its
readout is written, each view step at its own step, as one `Summary`
proto. Which steps are view steps is `schedule.Schedule`'s.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Tuple

from siamese_research.summaries import views as summaries
from siamese_research.train.readout import Readout
from siamese_research.train.schedule import Due
from siamese_research.train.step import TrainStep

SUM_ERROR = "branch_gradients/sum_error"


class Diagnostics:
    """Writes the view steps a call held.

    Args:
      step: the run's `TrainStep` (its `layout` fixes what a row holds).
    """

    def __init__(self, step: TrainStep):
        self.step = step
        self.layout = step.layout
        self.last_sum_error: Optional[float] = None
        self.max_sum_error = 0.0
        self.replica_sum_errors: list = []
        self.clock = (time.perf_counter(), 0)

    def start_clock(self, step: int) -> None:
        """samples_per_second counts from here (the loop: each epoch's start)."""
        self.clock = (time.perf_counter(), step)

    def write(self, views: List[Tuple[int, Due]], readout: Readout,
              call: Tuple[int, int, float, float], pairs: Callable[[int, int], int]) -> None:
        """Writes the call's view steps (the train writer is the default).

        Args:
          views: [(global step, due)] of the view steps the call held, in
            order (its slots' order).
          readout: the call's unpacked `readout.Readout`.
          call: (the step before the call, its last step, its start and end
            `time.perf_counter()`): samples_per_second at a log step inside
            the call is measured here, in Python (no clock op sits in the
            compiled step, which --deterministic would refuse), with the
            call's wall time shared evenly among its steps.
          pairs: pairs(a, b), the pairs trained in global steps a + 1 .. b.
        """
        before, end, started, ended = call
        layout = self.layout
        histogram = 0
        for j, (step, due) in enumerate(views):
            log, check, hist = due
            scalars = {}
            if log:
                at = started + (ended - started) * (step - before) / max(end - before, 1)
                scalars.update(summaries.samples_per_second(
                    pairs(self.clock[1], step), at - self.clock[0]))
                self.clock = (at, step)
            scalars.update(layout.scalars(readout.rows[:, j], due))
            if SUM_ERROR in scalars:
                self._keep_sum_errors(readout.rows[:, j], scalars[SUM_ERROR])
            histograms = {}
            if hist:
                histograms = layout.histogram_arrays(readout.histograms[histogram])
                histogram += 1
            summaries.write_view(step, scalars, histograms, flush=j + 1 == len(views))

    def _keep_sum_errors(self, rows, error: float) -> None:
        """Keeps every local replica's sum check (each checks its own split;
        `error`, the largest, is the one written) and the run's largest."""
        self.replica_sum_errors = [float(row[self.layout.sum_error_column]) for row in rows]
        self.last_sum_error = error
        self.max_sum_error = max(self.max_sum_error, error)


__all__ = ["Diagnostics"]
