"""What the loop reads after a compiled call: two tensors, packed in the
call and unpacked in Python.

A read costs ~0.1-0.3 ms whatever its size, so a call returns its state
(three integers) and one float32 vector of every view (the loss view, the
train accuracy, the learning rate and every stored gradient view,
flattened) instead of a read per variable. Views are the first replica's,
as a read of them outside the call would be.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# The scalars at the head of `readout`'s vector, in order.
READOUT_SCALARS = ("loss", "accuracy", "learning_rate")


def state(step):
    """[global_step, nonfinite_step, nonfinite_count] of a `TrainStep`."""
    return tf.stack([tf.convert_to_tensor(step.global_step),
                     tf.convert_to_tensor(step.nonfinite_step),
                     tf.convert_to_tensor(step.nonfinite_count)])


def readout(step):
    """(state, values) of a `TrainStep`, built inside the compiled call."""
    scalars = {"loss": step.views["loss"],
               "accuracy": step.metrics["accuracy"].result(),
               "learning_rate": step.optimizer.learning_rate}
    views = [tf.reshape(tf.cast(tf.convert_to_tensor(scalars[k]), tf.float32), [1])
             for k in READOUT_SCALARS]
    for branch in step.branches + ("total",):
        views += [tf.reshape(tf.convert_to_tensor(v), [-1]) for v in step.views[branch]]
    return state(step), tf.concat(views, 0)


def unpack(step, values) -> dict:
    """`readout`'s vector (numpy) as {"loss", "accuracy", "learning_rate":
    float, each branch and "total": [arrays shaped as the variables]}."""
    out = dict(zip(READOUT_SCALARS, (float(x) for x in values)))
    at = len(READOUT_SCALARS)
    for branch in step.branches + ("total",):
        out[branch] = []
        for v in step.views[branch]:
            size = int(np.prod(v.shape))
            out[branch].append(values[at:at + size].reshape(v.shape))
            at += size
    return out
