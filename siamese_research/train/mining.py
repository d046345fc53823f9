"""`--negatives=hard` in a run: at the start of every `--mine_every`-th
epoch, the run's own encoder (as it then is) encodes the anchors and the
candidates, `data.mining` ranks them, and the epochs until the next mining
draw their negatives from those windows.

Each mining is saved in the run folder (`artifacts.save_mined`) before the
epoch trains on it; a resumed run reads it back instead of mining again,
so a run resumed in a mining epoch is the run that was not interrupted
(unless it was mined with another --mine_range or --mine_margin, or for
other data: then it is mined again, as the flags now say).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from siamese_research import artifacts

ENCODE_BATCH = 256


class Mining(keras.callbacks.Callback):
    """Mines hard negatives for a "mined" `PairDataset` at epoch begins.

    Args:
      dataset: the training `PairDataset` (triplets="mined").
      every: mine at epochs 0, every, 2 * every, ...
      lo, hi: the rank window (`MiningPool.window`).
      margin: a negative's distance must be at least the positive's plus
        this, or None.
      run_dir: where the minings are kept (None: nowhere).
      save: write them (the chief); every worker mines for itself, and
        reads a mining back only when it resumes.
      verbose: a line per mining on stdout.
    """

    def __init__(self, dataset, *, every: int, lo: int, hi: int,
                 margin: Optional[float] = None, run_dir: Optional[str] = None,
                 save: bool = True, verbose: int = 1):
        super().__init__()
        self.dataset, self.every = dataset, int(every)
        self.lo, self.hi, self.margin = int(lo), int(hi), margin
        self.run_dir, self.save, self.verbose = run_dir, save, verbose
        self.mined_at: Optional[int] = None  # the epoch of the windows in use
        self.minings = 0  # minings this process ran (not read back)
        self._fns = {}  # a compiled call per tower

    def on_epoch_begin(self, epoch, logs=None):
        due = epoch - epoch % self.every
        if self.mined_at == due:
            return
        # Only a resumed process reads a mining back (its first epoch begin):
        # every later one is mined here, by every worker alike, never read
        # while another process may be writing it.
        saved = None
        if self.run_dir and self.mined_at is None:
            saved = artifacts.read_mined(self.run_dir, due)
        key = pool_key(self.dataset.pool)
        if saved is not None and (saved[1].get("lo"), saved[1].get("hi"),
                                  saved[1].get("margin"), saved[1].get("pool")) != (
                                      self.lo, self.hi, self.margin, key):
            saved = None  # mined with other flags or data: mine again, as they say
        if saved is not None:
            window, info = saved
            source = "read back from " + os.path.relpath(
                artifacts.mined_path(self.run_dir, due), self.run_dir)
        else:
            t0 = time.perf_counter()
            window = self.mine(self.model)
            self.minings += 1
            info = {"epoch": due, "lo": self.lo, "hi": self.hi, "margin": self.margin,
                    "pool": key, "seconds": round(time.perf_counter() - t0, 3)}
            if self.run_dir and self.save:
                artifacts.save_mined(self.run_dir, due, window, info)
            source = f"mined in {info['seconds']:.1f} s"
        plan = self.dataset.set_mined(window)
        self.mined_at = due
        if self.verbose:
            summary = plan.summary()
            print(f"Hard negatives for epoch {epoch + 1} ({source}): "
                  f"{summary['triplets']:,} triplets, ranks {self.lo}-{self.hi - 1}, "
                  f"{summary['mean_window']:.1f} candidates each on average"
                  + (f", {summary['empty_windows']} with none (random)"
                     if summary["empty_windows"] else ""), file=sys.stdout, flush=True)

    def mine(self, model) -> np.ndarray:
        """The windows (negative rows) from `model`'s encoder as it is now."""
        pool, pairs = self.dataset.pool, self.dataset.pairs
        towers = model.towers
        # The anchors through the first tower, the candidates through the one
        # that encodes negatives (the third of untied triplets).
        fns = [self._fns.setdefault(id(t), encoder_fn(t)) for t in (towers[0], towers[-1])]
        # (A pool is never empty: the size of no encodings does not arise.)
        anchors = artifacts.encode_batches(fns[0], pairs.left[pool.anchor_rows],
                                           ENCODE_BATCH, 0)
        candidates = artifacts.encode_batches(fns[1], pairs.right[pool.candidate_rows],
                                              ENCODE_BATCH, 0)
        scores = closeness(model.merge, anchors, candidates)
        return pool.rows_of(pool.window(scores, self.lo, self.hi, self.margin))


def encoder_fn(tower):
    """`tower` as a compiled call on a batch, not training (float32 out)."""
    return tf.function(lambda x: tf.cast(tower(x, training=False), tf.float32),
                       reduce_retracing=True)


def closeness(merge, anchors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(anchors, candidates) float64 minus the merge's distance of every
    pair: what mining ranks by (higher = closer) and its margin is on. Not
    the similarity: manhattan's exp(-d) is 0 in float32 beyond d ~ 100, and
    every candidate would tie. In blocks of anchors of at most ~16M values
    (of a broadcast merge's temporary: `Merge.pairwise_distances`)."""
    rows = max(1, (1 << 24) // max(1, candidates.size))
    c = tf.constant(candidates)
    out = [-np.asarray(merge.pairwise_distances(tf.constant(anchors[i:i + rows]), c),
                       np.float64)
           for i in range(0, len(anchors), rows)]
    return (np.concatenate(out) if out else
            np.zeros((0, len(candidates)), np.float64))


def pool_key(pool) -> str:
    """A digest of what a mining's windows index: the triplets' rows, their
    anchors and the candidates' rows (a saved mining of other data is not
    read back)."""
    h = hashlib.sha256()
    for a in (pool.rows, pool.anchor_of, pool.candidate_rows):
        h.update(np.ascontiguousarray(a, np.int64).tobytes())
    return h.hexdigest()[:16]


__all__ = ["Mining", "encoder_fn", "closeness", "pool_key"]
