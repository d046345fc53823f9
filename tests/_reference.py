"""The views' arithmetic in numpy, dense and in float64: the independent
reference that what `core/gradient_stats.py` computes in the step (sparse,
batched, in float32 where it can) is tested against, and the op-per-tag
summary write `summaries.views.write_view`'s one proto is tested against."""

import itertools
from typing import Dict

import numpy as np
import tensorflow as tf

from siamese_research.core.gradients import (  # noqa: F401 (the API's own)
    arrays, branch_stats, cosine, global_norm, sum_error)
from siamese_research.summaries.views import HISTOGRAM_BUCKETS, HISTOGRAM_METADATA


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
