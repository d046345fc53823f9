"""The compiled call: `n` train steps in one `tf.function`, traced once
(Keras's `multi_step_on_iterator`, Orbit's `train(num_steps)`)."""

from __future__ import annotations

import tensorflow as tf

from siamese_research.train import views as views_lib
from siamese_research.train.readout import readout


class StepLoop:
    """`run(iterator, n, codes, source)`: `n` steps of a `TrainStep`.

    Args:
      step: the run's `TrainStep`.
    """

    def __init__(self, step):
        self.step = step
        # No AutoGraph (as Keras's own trainer: `do_not_convert`): the
        # control flow is written as tf.while_loop and tf.cond, and
        # converting every Keras call under it tripled the trace.
        self.run = tf.function(self._run, reduce_retracing=True, autograph=False)

    def _run(self, iterator, n, codes, source=None):
        """`n` steps over `iterator` (of batches, or of row indices gathered
        from `source`, `PairDataset.source`); step i is a view step if
        `codes[i]` (`views.code`: int32, at least `n` long) is not 0, and
        keeps its views in the next free slot.

        Returns `readout.readout(step, views, histograms)`: the one tensor
        the loop reads after the call.
        """
        step = self.step

        def body(i, k, h):
            code = codes[i]
            step.strategy.run(step.replica_step, args=(next(iterator), source, code, k, h))
            k += tf.cast(tf.not_equal(code, 0), tf.int32)
            h += tf.cast(tf.not_equal(tf.bitwise.bitwise_and(code, views_lib.HISTOGRAMS), 0),
                         tf.int32)
            return i + 1, k, h

        zero = tf.constant(0, tf.int32)
        _, k, h = tf.while_loop(lambda i, k, h: i < n, body,
                                (tf.cast(zero, n.dtype), zero, zero))
        return readout(step, k, h)
