"""The loop's TensorBoard writes (see the tag contract in the README); what
a run writes once (HParams, graph, projector, PR curves, the custom scalars
layout) is in `extras`, the projector in `projector`.

Everything is written eagerly, from numpy: the views the compiled call
computed and kept (`train/views`, read by `train/diagnostics`), the loop's
per-epoch values, the run's texts. No summary op sits in a compiled step,
so no step pays a trace for one.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorboard.compat.proto import summary_pb2, types_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from siamese_research import artifacts
from siamese_research.core import encoders as encoders_lib

# The run folder's event folders (artifacts names the run folder's parts).
TRAIN, VALIDATION = artifacts.TRAIN_EVENTS, artifacts.VALIDATION_EVENTS


def create_writers(run_dir: str) -> Dict[str, tf.summary.SummaryWriter]:
    return {name: tf.summary.create_file_writer(os.path.join(run_dir, name))
            for name in (TRAIN, VALIDATION)}


# The plugins' metadata a scalar and a histogram are written with.
SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None,
                                                          description=None)
HISTOGRAM_METADATA = histogram_metadata.create_summary_metadata(display_name=None,
                                                                description=None)


def scalar(name: str, data, step):
    """A scalar summary whose tag is `name` exactly."""
    return tf.summary.write(name, tf.cast(data, tf.float32), step=step,
                            metadata=SCALAR_METADATA)


HISTOGRAM_BUCKETS = 30


def gate_slices(model) -> Dict[int, Tuple[str, Sequence[str]]]:
    """{id(variable): (rnn kind, gate names)} for gated RNN weights whose last
    axis stacks the gates (Keras: LSTM i, f, c, o; GRU z, r, h)."""
    out = {}
    for tower in model.towers:
        kind = encoders_lib.rnn_kind(tower.core)
        if not kind:
            continue
        gates = encoders_lib.GATES[kind]
        for v in tower.core.trainable_variables:
            if v.shape[-1] % len(gates) == 0 and v.shape[-1] // len(gates) > 0:
                out[id(v)] = (kind, gates)
    return out


def samples_per_second(pairs: int, seconds: float) -> Dict[str, float]:
    """The pairs trained since the last log step over the wall time they
    took, measured by the loop."""
    return {"samples_per_second": pairs / max(seconds, 1e-9)}


def write_view(step: int, scalars: Dict[str, float],
               histograms: Dict[str, np.ndarray] = None, flush: bool = True) -> None:
    """Writes a view step's scalars and histograms (a few dozen of each) as
    ONE `Summary` proto, built in Python and written by one op
    (`tf.summary.experimental.write_raw_pb`): the same values, tags and
    plugin metadata as `scalar` and a `tf.summary.write` per histogram, without an op
    per tag or a trace. 0.16-0.22 ms a view step against 0.3 ms a scalar
    and 1.2 ms a histogram eagerly, or 0.56-0.68 ms from a compiled writer
    after its 15-25 ms trace (2-core CPU, 2026-12-02). Eager only (the
    values are read as Python floats).

    With `flush` (the loop: a call's last view step) the writer is flushed
    (0.01-0.02 ms): one event does not fill the writer's queue of 10, and a
    live TensorBoard (or a killed run) should not wait for ten view steps or
    two minutes.
    """
    if not tf.summary.should_record_summaries():  # no writer (a worker)
        return
    out = summary_pb2.Summary()
    for tag, x in scalars.items():
        value = out.value.add(tag=tag)
        value.metadata.CopyFrom(SCALAR_METADATA)
        value.tensor.dtype = types_pb2.DT_FLOAT
        value.tensor.float_val.append(float(x))
    for tag, hist in (histograms or {}).items():
        value = out.value.add(tag=tag)
        value.metadata.CopyFrom(HISTOGRAM_METADATA)
        tensor = value.tensor
        tensor.dtype = types_pb2.DT_DOUBLE
        for size in hist.shape:
            tensor.tensor_shape.dim.add(size=size)
        tensor.tensor_content = np.ascontiguousarray(hist, "<f8").tobytes()
    tf.summary.experimental.write_raw_pb(out.SerializeToString(), step=step)
    if flush:
        tf.summary.flush()


def epoch_scalars(step, values: Dict[str, float]) -> None:
    for name, value in values.items():
        scalar(name, value, step)


def text(name: str, markdown: str, step: int = 0) -> None:
    tf.summary.text(name, markdown, step=step)
