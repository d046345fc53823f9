"""The views' arithmetic in numpy, dense and in float64: the independent
reference that what `core/gradient_stats.py` computes in the step (sparse,
batched, in float32 where it can) is tested against, and the op-per-tag
summary write `summaries.views.write_view`'s one proto is tested against."""

import itertools
from typing import Dict

import numpy as np
import tensorflow as tf

from siamese_research.core.gradients import arrays, sum_error  # noqa: F401 (the API's own)
from siamese_research.summaries.views import HISTOGRAM_BUCKETS, HISTOGRAM_METADATA


def global_norm(grads, variables=None) -> float:
    return float(np.sqrt(sum(_dot(g, g) for g in arrays(grads, variables))))


def _dot(a, b) -> float:
    """sum(a * b) by numpy's own loops, not BLAS: np.vdot on these arrays
    (> 10,000 elements) wakes OpenBLAS's threads, which then spin for
    ~0.1 s on the cores the next compiled train call needs."""
    return float(np.sum(np.multiply(a, b)))


def cosine(a, b) -> float:
    """The cosine of two branches' gradients (lists of arrays) as if each
    were one flattened vector; 0 when one is zero."""
    na, nb = global_norm(a), global_norm(b)
    dot = float(sum(_dot(x, y) for x, y in zip(a, b)))
    return dot / (na * nb) if na * nb > 0 else 0.0


def branch_stats(left, right, variables=None):
    """(|g_left|, |g_right|, cosine(g_left, g_right)) over all variables, as
    if each branch's gradients were one flattened vector."""
    left, right = arrays(left, variables), arrays(right, variables)
    return global_norm(left), global_norm(right), cosine(left, right)


def branch_norms_and_cosines(branches: Dict[str, list], variables=None):
    """({branch: norm}, {(a, b): cosine} for every pair of branches in order)."""
    dense = {name: arrays(g, variables) for name, g in branches.items()}
    norms = {name: global_norm(g) for name, g in dense.items()}
    cosines = {(a, b): cosine(dense[a], dense[b])
               for a, b in itertools.combinations(dense, 2)}
    return norms, cosines


def histogram_tensor(data, buckets: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    """A TensorBoard histogram of a numpy array, binned by numpy: the
    plugin's format, (buckets, 3) rows of [left edge, right edge, count]."""
    d = np.asarray(data, np.float64).reshape(-1)
    d = d[np.isfinite(d)]  # a diverging step's inf and NaN are not binned
    lo, hi = (float(d.min()), float(d.max())) if d.size else (0.0, 0.0)
    if not hi - lo > 1e-12 * max(abs(lo), abs(hi), 1.0):  # (near) constant
        hi = lo + max(1.0, abs(lo) * 1e-6)
    counts, edges = np.histogram(d, bins=buckets, range=(lo, hi))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


def write_histogram(name: str, tensor, step):
    """Writes a `histogram_tensor` under the tag `name` exactly."""
    return tf.summary.write(name, tensor, step=step, metadata=HISTOGRAM_METADATA)
