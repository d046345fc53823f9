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
arithmetic on the dense gradient (`gradients.sum_error`, and the numpy
reference in tests/_reference.py; tests/test_gradient_stats.py).
Sums of squares and dot products are summed per row in the gradients'
dtype and over rows in float64 (no float64 copy of an embedding's rows).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from siamese_research.core.gradients import ZERO_GRADIENT

F64 = tf.float64


def aligned(grads: Sequence[Optional[tf.Tensor]]) -> List[Optional[tf.Tensor]]:
    """Gradients of ONE variable on common ground, in their own dtype.

    Dense (or None) gradients come back dense. If any is a
    `tf.IndexedSlices`, every one comes back as the rows of the union of
    their indices, repeated indices summed as making it dense sums them
    (`unsorted_segment_sum`, the same values); a dense one among them is
    made dense first (they are then all dense). Outside those rows every
    gradient is zero, so any elementwise reduction over the parts equals
    the one over the dense gradients, with the zeros it leaves out. None (a
    branch that does not reach the variable) stays None.
    """
    present = [g for g in grads if g is not None]
    sparse = [isinstance(g, tf.IndexedSlices) for g in present]
    if not any(sparse) or not all(sparse):
        return [None if g is None else tf.convert_to_tensor(g) for g in grads]
    indices = [tf.cast(g.indices, tf.int64) for g in present]
    union, position = tf.unique(tf.concat(indices, 0))
    positions = tf.split(position, [tf.shape(i)[0] for i in indices])
    rows = iter(tf.math.unsorted_segment_sum(g.values, p, tf.size(union))
                for g, p in zip(present, positions))
    return [None if g is None else next(rows) for g in grads]


def dot(a, b) -> tf.Tensor:
    """sum(a * b) of two `aligned` parts (None counts zero), float64: each
    row's (last axis's) sum in the parts' dtype, their sum in float64 (no
    float64 copy of an embedding's rows)."""
    if a is None or b is None:
        return tf.constant(0.0, F64)
    product = a * b
    if product.shape.rank:
        product = tf.reduce_sum(product, axis=-1)
    return tf.reduce_sum(tf.cast(product, F64))


# Gradients of up to this many entries are viewed together: one vector per
# branch (one matmul gives every norm and dot product) and one binning for
# every histogram, so that a view step runs a few dozen ops, not a chain per
# variable (TensorFlow's per-op cost, not the arithmetic, is what a view
# step of small tensors pays). Larger ones, and sparse ones, are viewed one
# by one, without a copy.
BATCHED = 1 << 22


def _batched(grads) -> bool:
    present = [g for g in grads if g is not None]
    return (bool(present) and not any(isinstance(g, tf.IndexedSlices) for g in present)
            and present[0].shape.is_fully_defined()
            and present[0].shape.num_elements() <= BATCHED)


def _flat(grads) -> list:
    """One variable's dense gradients, flat float32 (None as zeros)."""
    like = next(g for g in grads if g is not None)
    flat = [None if g is None else tf.reshape(tf.cast(g, tf.float32), [-1]) for g in grads]
    zeros = tf.zeros([like.shape.num_elements()], tf.float32)
    return [zeros if f is None else f for f in flat]


def gram(branches: Sequence[Sequence]) -> tf.Tensor:
    """[k, k] float64: every two branches' dot product over every variable
    (`branches[b][i]`: branch b's gradient of variable i; None counts zero)."""
    k = len(branches)
    out = tf.zeros([k, k], F64)
    columns = [[] for _ in range(k)]
    for grads in zip(*branches):
        if all(g is None for g in grads):
            continue
        if _batched(grads):
            for column, f in zip(columns, _flat(grads)):
                column.append(f)
            continue
        parts = aligned(grads)
        out += tf.stack([tf.stack([dot(a, b) for b in parts]) for a in parts])
    if columns[0]:
        v = tf.stack([tf.concat(c, 0) for c in columns])
        out += tf.cast(tf.matmul(v, v, transpose_b=True), F64)
    return out


def norms_and_cosines(gram_matrix) -> tuple:
    """([k] norms, [k, k] cosines) of the branches of a `gram` matrix; a
    cosine is 0 where a norm is zero."""
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram_matrix), 0.0))
    den = norms[:, None] * norms[None, :]
    return norms, tf.where(den > 0, gram_matrix / tf.where(den > 0, den, 1.0), 0.0)


def sum_error(total: Sequence, branches: Sequence[Sequence]) -> tf.Tensor:
    """max |g_total - (g_1 + ... + g_k)| / max |g_total| over every variable
    (the denominator at least `ZERO_GRADIENT`), float64: the sum check of
    `gradients.sum_error`, from the rows where the gradients are sparse."""
    num = den = tf.constant(0.0, F64)
    totals, sums = [], []
    for t, *parts in zip(total, *branches):
        grads = [t, *parts]
        if all(g is None for g in grads):
            continue
        if _batched(grads):
            t, *parts = _flat(grads)
            totals.append(t)
            sums.append(tf.add_n(parts))
            continue
        t, *parts = aligned(grads)
        t = tf.zeros([], tf.float32) if t is None else t
        summed = sum((p for p in parts if p is not None), tf.zeros([], t.dtype))
        num = tf.maximum(num, tf.cast(_max_abs(t - summed), F64))
        den = tf.maximum(den, tf.cast(_max_abs(t), F64))
    if totals:
        t, summed = tf.concat(totals, 0), tf.concat(sums, 0)
        num = tf.maximum(num, tf.cast(_max_abs(t - summed), F64))
        den = tf.maximum(den, tf.cast(_max_abs(t), F64))
    return num / tf.maximum(den, ZERO_GRADIENT)


def _max_abs(x) -> tf.Tensor:
    return tf.reduce_max(tf.abs(x)) if x.shape.rank else tf.abs(x)


def branch_gate_norms(branches: Sequence[Sequence], variables: Sequence, gates_of: dict,
                      gates: int) -> tf.Tensor:
    """[k, gates] float64: each branch's norm of each gate's slices over
    every gated variable with `gates` gates (None counts zero)."""
    squares = tf.zeros([len(branches), gates], F64)
    for i, v in enumerate(variables):
        grads = [b[i] for b in branches]
        if id(v) not in gates_of or len(gates_of[id(v)][1]) != gates or \
                all(g is None for g in grads):
            continue
        like = tf.convert_to_tensor(next(g for g in grads if g is not None))
        stacked = tf.stack([tf.zeros_like(like) if g is None else tf.convert_to_tensor(g)
                            for g in grads])
        part = tf.reshape(stacked, [len(grads), -1, gates, v.shape[-1] // gates])
        squares += tf.cast(tf.reduce_sum(tf.square(part), axis=[1, 3]), F64)
    return tf.sqrt(squares)


def histogram(values, zeros=0, buckets: int = 30) -> tf.Tensor:
    """[lo, hi, count_1, ..., count_buckets] (float64) of `values` and
    `zeros` more zeros (the entries of a sparse gradient no row holds):
    `buckets` equal bins from the finite minimum to the maximum, a constant
    array in one bin of width max(1, |x| 1e-6), non-finite values left out
    (the numpy reference's rule, tests/_reference.py; a value exactly on an inner
    edge may fall one bin lower than numpy puts it)."""
    return histograms([(values, zeros)], buckets)[0]


def histograms(items: Sequence[tuple], buckets: int = 30) -> tf.Tensor:
    """[len(items), buckets + 2] float64: the `histogram` of each
    (values, zeros) item. The small ones (a static size up to `BATCHED`)
    are binned together, in one pass over one vector; each other one alone,
    with no copy of it unless a value is not finite."""
    items = [(tf.convert_to_tensor(v), z) for v, z in items]
    small = [j for j, (v, _) in enumerate(items)
             if v.shape.is_fully_defined() and v.shape.num_elements() <= BATCHED]
    large = [j for j in range(len(items)) if j not in small]
    rows = []
    if small:
        rows.append(_binned([items[j] for j in small], buckets))
    for j in large:
        rows.append(_binned([items[j]], buckets))
    if not rows:
        return tf.zeros([0, buckets + 2], F64)
    out = tf.concat(rows, 0)
    order = small + large
    if order != sorted(order):
        out = tf.gather(out, np.argsort(order))
    return out


def _binned(items: Sequence[tuple], buckets: int) -> tf.Tensor:
    """`histograms` of items binned in one pass (one item: no segment ids)."""
    m = len(items)
    flat = [tf.reshape(v if v.dtype == tf.float32 else tf.cast(v, tf.float32), [-1])
            for v, _ in items]
    zeros = tf.cast(tf.stack([tf.cast(z, tf.int64) for _, z in items]), F64)
    values = flat[0] if m == 1 else tf.concat(flat, 0)
    segments = None
    if m > 1:
        sizes = [f.shape.num_elements() for f in flat]
        segments = tf.repeat(tf.range(m, dtype=tf.int32), sizes)  # (at run time)
    ok = tf.math.is_finite(values)
    inf = tf.constant(np.inf, tf.float32)

    def reduce(fn_one, fn_seg, x):
        return tf.reshape(fn_one(x), [1]) if segments is None else fn_seg(x, segments, m)

    if segments is None:
        count = tf.reshape(tf.cast(tf.math.count_nonzero(ok), F64), [1])
        size = tf.cast(tf.reshape(tf.size(values), [1]), F64)
    else:
        count = tf.cast(tf.math.unsorted_segment_sum(tf.cast(ok, tf.int32), segments, m), F64)
        size = tf.constant(sizes, F64)
    bad = tf.reduce_any(count < size)
    # (A whole embedding's weights are large: no masked copy of them unless
    # a value is not finite.)
    lo, hi = tf.cond(
        bad,
        lambda: (reduce(tf.reduce_min, tf.math.unsorted_segment_min,
                        tf.where(ok, values, inf)),
                 reduce(tf.reduce_max, tf.math.unsorted_segment_max,
                        tf.where(ok, values, -inf))),
        lambda: (reduce(tf.reduce_min, tf.math.unsorted_segment_min, values),
                 reduce(tf.reduce_max, tf.math.unsorted_segment_max, values)))
    has = count > 0
    lo = tf.where(has, tf.where(zeros > 0, tf.minimum(lo, 0.0), lo), 0.0)
    hi = tf.where(has, tf.where(zeros > 0, tf.maximum(hi, 0.0), hi), 0.0)
    scale = tf.maximum(tf.maximum(tf.abs(lo), tf.abs(hi)), 1.0)
    flat_range = tf.logical_not(hi - lo > 1e-12 * scale)
    hi = tf.where(flat_range, lo + tf.maximum(1.0, tf.abs(lo) * 1e-6), hi)

    def bin_of(x, lo, hi):
        # (In halves: the same quotient, exactly, and no overflow when the
        # range is wider than float32's largest number.)
        index = tf.floor((x * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5) * buckets)
        index = tf.where(tf.math.is_nan(index), 0.0, index)
        return tf.cast(tf.clip_by_value(index, 0.0, buckets - 1.0), tf.int32)

    if segments is None and values.shape.is_fully_defined() and \
            values.shape.num_elements() > BATCHED:
        # (A large array, binned by one kernel with no index array of it.)
        counts = tf.cast(tf.histogram_fixed_width(
            tf.cond(bad, lambda: tf.where(ok, values, lo[0]), lambda: values),
            tf.stack([lo[0], hi[0]]), nbins=buckets), F64)[None]
        counts -= tf.reshape((size - count) * tf.one_hot(0, buckets, dtype=F64), [1, -1])
    else:
        if segments is None:
            index = bin_of(values, lo[0], hi[0])
        else:
            index = bin_of(values, tf.gather(lo, segments), tf.gather(hi, segments)) + \
                segments * buckets
        index = tf.cond(bad, lambda: tf.where(ok, index, m * buckets), lambda: index)
        # (A segment sum of ones, not tf.math.bincount: bincount has no
        # deterministic GPU kernel, and --deterministic would refuse it.)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(index), index, m * buckets + 1)
        counts = tf.cast(tf.reshape(counts[:-1], [m, buckets]), F64)
    at_zero = tf.one_hot(bin_of(tf.zeros([m]), lo, hi), buckets, dtype=F64)
    counts += zeros[:, None] * at_zero
    return tf.concat([tf.cast(tf.stack([lo, hi], 1), F64), counts], 1)


def histogram_item(g, like) -> tuple:
    """(values, zeros) of variable `like`'s gradient `g` for `histograms`:
    a `tf.IndexedSlices` by its rows (repeated rows summed), the entries no
    row holds counted as zeros."""
    if isinstance(g, tf.IndexedSlices):
        rows = aligned([g])[0]
        return rows, int(np.prod(like.shape)) - tf.size(rows, out_type=tf.int64)
    return g, 0


def gate_parts(g, gates: Sequence[str]) -> list:
    """A gated RNN weight's gradient split along its last axis, by gate."""
    return tf.split(tf.convert_to_tensor(g), len(gates), axis=-1)


__all__ = ["aligned", "dot", "gram", "norms_and_cosines", "sum_error",
           "branch_gate_norms", "histogram", "histograms", "histogram_item", "gate_parts",
           "BATCHED"]
