"""Built-in pair sources: a learnable synthetic task and the notebook's noise."""

from __future__ import annotations

import numpy as np

from siamese_research.data.pairs import Pairs

MIN_SYNTHETIC_LENGTH = 5


def synthetic(*, num_samples: int, timesteps: int, features: int,
              prototypes: int = 16, noise: float = 0.5, seed: int = 42) -> Pairs:
    """Same-prototype pairs: label 1 when both sides come from one prototype.

    Each of `prototypes` hidden prototypes is a (timesteps, features) sequence
    drawn from N(0, 1). An item is a prefix of its prototype, 5 to `timesteps`
    steps long, plus N(0, noise^2) noise; the two sides of a pair have their own
    lengths. Half the pairs share a prototype. Padding is zeros, which the
    encoder's Masking layer skips (a real step is never exactly all-zero).

    `groups` is the left item's prototype: a label-0 row of a group has a
    right side of another prototype, a negative for any anchor of the group.
    """
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((prototypes, timesteps, features)).astype(np.float32)
    label = (rng.random(num_samples) < 0.5).astype(np.float32)
    a = rng.integers(0, prototypes, num_samples)
    shift = rng.integers(1, max(prototypes, 2), num_samples)
    b = np.where(label == 1, a, (a + shift) % prototypes)
    lo = min(MIN_SYNTHETIC_LENGTH, timesteps)
    lengths = rng.integers(lo, timesteps + 1, (2, num_samples))
    sides = []
    for cls, length in ((a, lengths[0]), (b, lengths[1])):
        # Drawn as float32 and shifted in place (float64 draws cast, and new
        # 80 MB arrays to fault in, took 1.6 s for the defaults; now 0.9 s).
        x = rng.standard_normal((num_samples, timesteps, features), dtype=np.float32)
        x *= np.float32(noise)
        x += protos[cls]
        x[np.arange(timesteps)[None, :] >= length[:, None]] = 0.0
        sides.append(x)
    return Pairs(sides[0], sides[1], lengths[0], lengths[1], label,
                 groups=a.astype(np.int64))


def random_pairs(*, num_samples: int, timesteps: int, features: int,
                 seed: int = 42) -> Pairs:
    """The notebook's data: uniform [0, 1) features and random 0/1 labels
    (no groups: no row is related to another)."""
    rng = np.random.default_rng(seed)
    left = rng.random((num_samples, timesteps, features), dtype=np.float32)
    right = rng.random((num_samples, timesteps, features), dtype=np.float32)
    label = rng.integers(0, 2, num_samples).astype(np.float32)
    full = np.full(num_samples, timesteps)
    return Pairs(left, right, full, full.copy(), label)
