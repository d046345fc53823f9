"""The views' arithmetic in TensorFlow, where the gradients are.

A view step shows each branch's gradient of the shared weights by a few
numbers: norms, cosines, the sum check's error, per-gate norms and
histograms. These functions compute them inside the compiled call (on the
device the step runs on), so that a view step keeps a few dozen numbers
instead of a copy of every gradient (`train/views.py` lays them out).

A gradient may be a `tf.IndexedSlices`: an embedding's is the rows a batch
looked up, a row repeated as often as its word. Its views are computed from
those rows, never densified: repeated rows are summed first (`aligned`),
the rows no branch touched count as zeros, and every result equals the same
arithmetic on the dense gradient (`gradients.sum_error`, `global_norm`,
`summaries.views.histogram_tensor` in numpy; tests/test_gradient_stats.py).
Sums of squares and dot products are taken in float64.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

# Below this a gradient is zero for `sum_error` (`gradients.ZERO_GRADIENT`,
# the numpy reference, holds the reason).
ZERO_GRADIENT = 1e-8
F64 = tf.float64


def _size(like) -> int:
    return int(np.prod(like.shape))


def aligned(grads: Sequence[Optional[tf.Tensor]]) -> List[Optional[tf.Tensor]]:
    """Gradients of ONE variable on common ground, as float64 tensors.

    Dense (or None) gradients come back dense. If any is a
    `tf.IndexedSlices`, every one comes back as the rows of the union of
    their indices, repeated indices summed (a dense one among them is made
    dense first: they are then all dense). Outside those rows every
    gradient is zero, so any elementwise reduction over the parts equals
    the one over the dense gradients, with the zeros it leaves out.
    None (a branch that does not reach the variable) stays None.
    """
    present = [g for g in grads if g is not None]
    sparse = [isinstance(g, tf.IndexedSlices) for g in present]
    if not any(sparse) or not all(sparse):
        return [None if g is None else tf.cast(tf.convert_to_tensor(g), F64)
                for g in grads]
    indices = [tf.cast(g.indices, tf.int64) for g in present]
    union, position = tf.unique(tf.concat(indices, 0))
    positions = tf.split(position, [tf.shape(i)[0] for i in indices])
    rows = iter(tf.math.unsorted_segment_sum(tf.cast(g.values, F64), p, tf.size(union))
                for g, p in zip(present, positions))
    return [None if g is None else next(rows) for g in grads]


def dot(a, b) -> tf.Tensor:
    """sum(a * b) of two `aligned` parts (None counts zero), float64."""
    if a is None or b is None:
        return tf.constant(0.0, F64)
    return tf.reduce_sum(a * b)


def norms_and_dots(branches: Sequence[Sequence], names: Sequence[str]):
    """({name: global norm}, {(a, b): dot}) over every variable, for each
    branch's gradient list (`branches[k][i]`: branch k, variable i) and
    every two branches in order."""
    squares = {n: tf.constant(0.0, F64) for n in names}
    dots = {(a, b): tf.constant(0.0, F64)
            for i, a in enumerate(names) for b in names[i + 1:]}
    for grads in zip(*branches):
        parts = dict(zip(names, aligned(grads)))
        for n in names:
            squares[n] += dot(parts[n], parts[n])
        for a, b in dots:
            dots[(a, b)] += dot(parts[a], parts[b])
    return {n: tf.sqrt(s) for n, s in squares.items()}, dots


def cosines(norms: dict, dots: dict) -> dict:
    """{(a, b): cosine} from `norms_and_dots`; 0 when a norm is zero."""
    out = {}
    for (a, b), d in dots.items():
        den = norms[a] * norms[b]
        out[(a, b)] = tf.where(den > 0, d / tf.where(den > 0, den, 1.0), 0.0)
    return out


def sum_error(total: Sequence, branches: Sequence[Sequence]) -> tf.Tensor:
    """max |g_total - (g_1 + ... + g_k)| / max |g_total| over every variable
    (the denominator at least `ZERO_GRADIENT`), float64: the sum check of
    `gradients.sum_error`, from the rows where the gradients are sparse."""
    num = den = tf.constant(0.0, F64)
    for t, *parts in zip(total, *branches):
        t, *parts = aligned([t, *parts])
        t = tf.zeros([], F64) if t is None else t
        summed = sum((p for p in parts if p is not None), tf.zeros([], F64))
        num = tf.maximum(num, _max_abs(t - summed))
        den = tf.maximum(den, _max_abs(t))
    return num / tf.maximum(den, ZERO_GRADIENT)


def _max_abs(x) -> tf.Tensor:
    return tf.reduce_max(tf.abs(x)) if x.shape.rank else tf.abs(x)


def gate_norms(grads: Sequence, variables: Sequence, gates_of: dict) -> dict:
    """{gate: norm of that gate's slices over every gated variable} (the
    variables' last axis stacks the gates; `summaries.views.gate_slices`)."""
    squares, names = None, ()
    for g, v in zip(grads, variables):
        if g is None or id(v) not in gates_of:
            continue
        names = gates_of[id(v)][1]
        part = tf.reshape(tf.cast(tf.convert_to_tensor(g), F64),
                          [-1, len(names), v.shape[-1] // len(names)])
        s = tf.reduce_sum(tf.square(part), axis=[0, 2])
        squares = s if squares is None else squares + s
    if squares is None:
        return {}
    return dict(zip(names, tf.unstack(tf.sqrt(squares))))


def histogram(values, zeros=0, buckets: int = 30) -> tf.Tensor:
    """[lo, hi, count_1, ..., count_buckets] (float64) of `values` and
    `zeros` more zeros (the entries of a sparse gradient no row holds),
    binned as `summaries.views.histogram_tensor` bins the dense array:
    `buckets` equal bins from its finite minimum to its maximum, a constant
    array in one bin of width max(1, |x| 1e-6), non-finite values left out.
    """
    v = tf.reshape(values, [-1])
    if v.dtype != tf.float64:
        v = tf.cast(v, tf.float32)
    zeros = tf.cast(zeros, tf.int64)
    ok = tf.math.is_finite(v)
    finite = tf.math.count_nonzero(ok)
    bad = tf.cast(tf.size(v, out_type=tf.int64) - finite, F64)
    inf = tf.constant(np.inf, v.dtype)

    # (A histogram of a whole embedding's weights is large: no masked copy
    # of it unless a value is not finite.)
    lo, hi = tf.cond(bad > 0,
                     lambda: (tf.reduce_min(tf.where(ok, v, inf)),
                              tf.reduce_max(tf.where(ok, v, -inf))),
                     lambda: (tf.reduce_min(v), tf.reduce_max(v)))
    zero = tf.zeros([], v.dtype)
    lo = tf.where(finite > 0, tf.where(zeros > 0, tf.minimum(lo, zero), lo), zero)
    hi = tf.where(finite > 0, tf.where(zeros > 0, tf.maximum(hi, zero), hi), zero)
    scale = tf.maximum(tf.maximum(tf.abs(lo), tf.abs(hi)), 1.0)
    flat = tf.logical_not(hi - lo > 1e-12 * scale)
    hi = tf.where(flat, lo + tf.maximum(tf.ones([], v.dtype), tf.abs(lo) * 1e-6), hi)
    span = tf.stack([lo, hi])
    binned = tf.cond(bad > 0, lambda: tf.where(ok, v, lo), lambda: v)
    counts = tf.cast(tf.histogram_fixed_width(binned, span, nbins=buckets), F64)
    # The non-finite values went to the first bin (as `lo`); the zeros to
    # the bin 0.0 falls in.
    first = tf.one_hot(0, buckets, dtype=F64)
    at_zero = tf.cast(tf.histogram_fixed_width(tf.zeros([1], v.dtype), span,
                                               nbins=buckets), F64)
    counts = counts - bad * first + tf.cast(zeros, F64) * at_zero
    return tf.concat([tf.cast(span, F64), counts], 0)


def gradient_histogram(g, like, buckets: int = 30) -> tf.Tensor:
    """`histogram` of variable `like`'s gradient `g`: from its rows if it is
    a `tf.IndexedSlices` (repeated rows summed, untouched rows as zeros)."""
    if isinstance(g, tf.IndexedSlices):
        # Repeated rows summed in the gradient's own dtype, as making it
        # dense sums them (unsorted_segment_sum): the same values, binned.
        unique, position = tf.unique(tf.cast(g.indices, tf.int64))
        rows = tf.math.unsorted_segment_sum(g.values, position, tf.size(unique))
        return histogram(rows, _size(like) - tf.size(rows, out_type=tf.int64), buckets)
    return histogram(g, 0, buckets)


def gate_parts(g, gates: Sequence[str]) -> list:
    """A gated RNN weight's gradient split along its last axis, by gate."""
    return tf.split(tf.convert_to_tensor(g), len(gates), axis=-1)


__all__ = ["aligned", "dot", "norms_and_dots", "cosines", "sum_error", "gate_norms",
           "histogram", "gradient_histogram", "gate_parts", "ZERO_GRADIENT"]
