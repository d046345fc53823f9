"""Every TensorBoard write lives here (see the tag contract in the README).

In-graph writers run inside the compiled step, gated by
`tf.summary.record_if` on the step tensor, and build their (cheap but not
free) norms and slices only inside a `tf.cond` on that same condition, so a
non-logging step pays nothing for them.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from siamese_research import encoders as encoders_lib
from siamese_research import gradients as G

TRAIN, VALIDATION = "train", "validation"


def create_writers(run_dir: str) -> Dict[str, tf.summary.SummaryWriter]:
    return {name: tf.summary.create_file_writer(os.path.join(run_dir, name))
            for name in (TRAIN, VALIDATION)}


def when(pred, fn) -> None:
    """Runs `fn` (which writes summaries) only where `pred` holds, recording
    under `tf.summary.record_if(pred)`."""

    def run():
        with tf.summary.record_if(pred):
            fn()
        return tf.constant(True)

    tf.cond(pred, run, lambda: tf.constant(False))


def scalar(name: str, data, step):
    """`tf.summary.scalar` without the enclosing name scopes in the tag (in a
    compiled step they would read `while/cond_4/loss`)."""
    metadata = scalar_metadata.create_summary_metadata(display_name=None,
                                                       description=None)
    return tf.summary.write(name, lambda: tf.cast(data, tf.float32), step=step,
                            metadata=metadata)


def histogram(name: str, data, step, buckets: int = 30):
    """A TensorBoard histogram with a small graph.

    `tf.summary.histogram` builds a large subgraph per call, which made
    tracing the step (about 60 histograms with gates) take seconds; this one
    writes the same plugin format from `tf.histogram_fixed_width`, lazily
    (only computed when recording).
    """

    def tensor():
        d = tf.reshape(tf.cast(data, tf.float64), [-1])
        lo, hi = tf.reduce_min(d), tf.reduce_max(d)
        hi = tf.where(hi > lo, hi, lo + 1.0)
        edges = tf.linspace(lo, hi, buckets + 1)
        counts = tf.histogram_fixed_width(d, tf.stack([lo, hi]), nbins=buckets)
        return tf.stack([edges[:-1], edges[1:], tf.cast(counts, tf.float64)], axis=1)

    metadata = histogram_metadata.create_summary_metadata(display_name=None,
                                                          description=None)
    return tf.summary.write(name, tensor, step=step, metadata=metadata)


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


def split_gates(grad, gates: Sequence[str]) -> Dict[str, tf.Tensor]:
    """Splits a gradient's last axis into its gates' equal slices."""
    return dict(zip(gates, tf.split(grad, len(gates), axis=-1)))


def train_scalars(step, *, loss, accuracy, learning_rate) -> None:
    scalar("loss", loss, step)
    scalar("accuracy", accuracy, step)
    scalar("learning_rate", learning_rate, step)


def samples_per_second(step, pairs, since, *, after) -> None:
    """samples_per_second at log step `step`: `pairs` (a variable: the pairs
    since the last log step or the epoch's start) over the wall time since
    `since` (a variable, seconds as `tf.timestamp()`), everything between
    included; then both start again. The clock is read once `after` (a
    tensor of the step's update) exists."""
    with tf.control_dependencies([after]):
        now = tf.timestamp()
    scalar("samples_per_second", pairs / tf.maximum(now - since, 1e-9), step)
    pairs.assign(0.0)
    since.assign(now)


def branch_scalars(step, bg: G.BranchGradients) -> None:
    """Left/right norms and their cosine (every logging step)."""
    left, right, cosine = G.branch_stats(bg.left, bg.right, bg.encoder_vars)
    scalar("branch_gradients/left_norm", left, step)
    scalar("branch_gradients/right_norm", right, step)
    scalar("branch_gradients/cosine", cosine, step)


def check_scalars(step, bg: G.BranchGradients, total, error) -> None:
    """The independent total gradient and the left + right = total check."""
    scalar("branch_gradients/total_norm", G.global_norm(total, bg.encoder_vars), step)
    scalar("branch_gradients/sum_error", error, step)


def gate_norms(grads, variables, gates_of) -> Dict[str, tf.Tensor]:
    """{gate: global norm of that gate's slices over every gated variable}.

    One reduction per variable (its last axis viewed as [gates, units]), so
    the logging step pays a few ops, not a split and a norm per gate.
    """
    squares, names = [], ()
    for g, v in zip(grads, variables):
        if g is None or id(v) not in gates_of:  # None: untied, contributes 0
            continue
        names = gates_of[id(v)][1]
        parts = tf.reshape(G.dense(g, v), [-1, len(names), v.shape[-1] // len(names)])
        squares.append(tf.reduce_sum(tf.square(parts), axis=[0, 2]))
    if not squares:
        return {}
    return dict(zip(names, tf.unstack(tf.sqrt(tf.add_n(squares)))))


def gate_scalars(step, bg: G.BranchGradients, total: Optional[list], gates_of) -> None:
    """branch_gradients/<gate>/<branch>_norm over every gated variable."""
    branches = {"left": bg.left, "right": bg.right}
    if total is not None:
        branches["total"] = total
    for branch, grads in branches.items():
        for gate, norm in gate_norms(grads, bg.encoder_vars, gates_of).items():
            scalar(f"branch_gradients/{gate}/{branch}_norm", norm, step)


def histograms(step, model, bg: G.BranchGradients, total: Optional[list],
               gates_of) -> None:
    """weights/<path> for every trainable variable; gradients/<branch>/<path>
    (and /<gate> for gated RNN weights) for every shared variable."""
    for v in model.trainable_variables:
        histogram(f"weights/{v.path}", v.value, step)
    branches = {"left": bg.left, "right": bg.right}
    if total is not None:
        branches["total"] = total
    for branch, grads in branches.items():
        for g, v in zip(grads, bg.encoder_vars):
            if g is None:  # untied: this branch never touches v
                continue
            g = G.dense(g, v)
            histogram(f"gradients/{branch}/{v.path}", g, step)
            if id(v) in gates_of:
                for gate, part in split_gates(g, gates_of[id(v)][1]).items():
                    histogram(f"gradients/{branch}/{v.path}/{gate}", part, step)


def epoch_scalars(step, values: Dict[str, float]) -> None:
    for name, value in values.items():
        scalar(name, value, step)


def text(name: str, markdown: str, step: int = 0) -> None:
    tf.summary.text(name, markdown, step=step)
