"""The compiled call: `n` train steps in one `tf.function`, traced once
(Keras's `multi_step_on_iterator`, Orbit's `train(num_steps)`)."""

from __future__ import annotations

import tensorflow as tf

from siamese_research.train.readout import readout


class StepLoop:
    """`run(iterator, n, view, check, source)`: `n` steps of a `TrainStep`.

    Args:
      step: the run's `TrainStep`.
    """

    def __init__(self, step):
        self.step = step
        # No AutoGraph (as Keras's own trainer: `do_not_convert`): the
        # control flow is written as tf.while_loop and tf.cond, and
        # converting every Keras call under it tripled the trace.
        self.run = tf.function(self._run, reduce_retracing=True, autograph=False)

    def _run(self, iterator, n, view=False, check=False, source=None):
        """`n` steps over `iterator` (of batches, or of row indices gathered
        from `source`, `PairDataset.source`); the last one stores the views
        if `view` and the total gradient if `check` (bool tensors).

        Returns `readout.readout(step)`: what the loop reads after the call.
        """
        step = self.step

        def body(i):
            last = tf.equal(i, n - 1)
            step.strategy.run(step.replica_step, args=(
                next(iterator), source, tf.logical_and(last, view),
                tf.logical_and(last, check)))
            return (i + 1,)

        tf.while_loop(lambda i: i < n, body, (tf.constant(0, n.dtype),))
        return readout(step)
