"""What the loop reads after a compiled call: ONE float64 tensor, packed in
the call and unpacked in Python.

A read costs ~0.1-0.3 ms whatever its size (and on a GPU it is the call's
one device-to-host transfer), so a call returns its state (three integers,
exact in float64) and the slots its view steps filled: the rows of every
local replica (the sum check is each replica's own) and the first
replica's histogram rows, as a read of them outside the call would give.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

STATE = ("global_step", "nonfinite_step", "nonfinite_count")


def state(step):
    """[global_step, nonfinite_step, nonfinite_count] of a `TrainStep`."""
    return tf.stack([tf.convert_to_tensor(step.global_step),
                     tf.convert_to_tensor(step.nonfinite_step),
                     tf.convert_to_tensor(step.nonfinite_count)])


def readout(step, views=0, histograms=0):
    """The call's one tensor: its state, then `views` rows of every local
    replica, then `histograms` histogram rows of the first; built inside the
    compiled call."""
    out = [tf.cast(state(step), tf.float64)]
    if step.layout is not None:
        local = step.strategy.experimental_local_results
        out += [tf.reshape(rows[:views], [-1]) for rows in local(step.view_rows)]
        out.append(tf.reshape(local(step.histogram_rows)[0][:histograms], [-1]))
    return tf.concat(out, 0)


@dataclasses.dataclass
class Readout:
    """A call's readout, unpacked: the state, `rows[r][j]` (replica r's row
    of the call's view step j) and `histograms[j]` (its histogram step j's)."""

    global_step: int
    nonfinite_step: int
    nonfinite_count: int
    rows: np.ndarray
    histograms: np.ndarray


def unpack(step, values: np.ndarray, views: int = 0, histograms: int = 0) -> Readout:
    """`readout`'s vector (numpy) of a call that held `views` view steps
    and `histograms` histogram steps."""
    head = [int(x) for x in values[:len(STATE)]]
    at = len(STATE)
    layout = step.layout
    if layout is None:
        return Readout(*head, rows=np.zeros((1, 0, 0)), histograms=np.zeros((0, 0, 0)))
    replicas = len(step.strategy.experimental_local_results(step.view_rows))
    size = views * layout.row_size
    rows = values[at:at + replicas * size].reshape(replicas, views, layout.row_size)
    at += replicas * size
    hist = values[at:].reshape(histograms, layout.histograms, layout.buckets + 2)
    return Readout(*head, rows=rows, histograms=hist)
