"""Checkpoints: `tf.train.Checkpoint` + `CheckpointManager`, and resume.

A checkpoint is complete once the manager's state file names it (TensorFlow
writes the state file whole); a save killed before that leaves files the
next save overwrites and a `<name>_temp` folder `remove_partials` clears. A
newest checkpoint that cannot be restored (damaged, truncated) is named on
stderr and the one before it is restored instead.

A checkpoint holds the model, the optimizer (slots and iterations), the global
step, the epoch, and the model's state a step changes (`model_state`: seed
states of random layers). The data position needs nothing more: the batch order of
epoch e is a function of (seed, e), so step s resumes at batch
s % steps_per_epoch of epoch s // steps_per_epoch.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from typing import Optional

import tensorflow as tf

from siamese_research import artifacts
from siamese_research.config import Config
from siamese_research.core import model as model_lib
from siamese_research.errors import CheckpointError, WriteError

# Settings that change the variables' shapes or meaning: a checkpoint made
# with other values cannot be resumed.
# freeze_embeddings: a frozen table has no optimizer slots, so the saved
# optimizer state would not fit the other setting.
MODEL_FIELDS = ("encoder", "units", "features", "merge", "share", "encoder_args",
                "max_tokens", "oov_buckets", "optimizer", "freeze_embeddings")


def model_state(model) -> list:
    """The model's non-trainable variables a step changes, which a
    checkpoint must hold for an exact resume: random layers' seed states
    (dropout, conv2d's augment shifts), normalisation statistics. Keras
    models reach a `tf.train.Checkpoint` through their attributes, not the
    layers kept in lists (the trainable ones are saved through the
    optimizer, which holds them all), so these are named here. A frozen
    embedding table is left out: the build makes it again."""
    tables = {id(layer.embeddings) for layer in model_lib.embedding_layers(model)}
    return [v for v in model.non_trainable_variables if id(v) not in tables]


class Checkpointer:
    """Saves every `every` steps (0: epoch ends only) and restores the latest."""

    def __init__(self, directory: str, *, model, optimizer, global_step,
                 max_to_keep: int = 3, every: int = 0):
        self.directory, self.every = directory, every
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        parts = dict(model=model, optimizer=optimizer, global_step=global_step,
                     epoch=self.epoch)
        state = model_state(model)
        if state:
            parts["model_state"] = state
        self.checkpoint = tf.train.Checkpoint(**parts)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                                  max_to_keep=max_to_keep)
        self._last_saved = 0  # step 0 is the initialisation: nothing to save
        self.global_step = global_step

    @property
    def latest(self) -> Optional[str]:
        return self.manager.latest_checkpoint

    def restore_latest(self) -> Optional[str]:
        """Restores the newest checkpoint that can be restored, newest first;
        returns its path (None: there is none). A damaged one is named on
        stderr and skipped.

        Raises:
          CheckpointError: none of them can be restored (naming the newest).
        """
        failures = []
        for path in reversed(self.manager.checkpoints):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except Exception as e:  # noqa: BLE001 (a bad file raises many kinds)
                failures.append((path, _first_line(e)))
                continue
            if failures:
                print(f"warning: checkpoint {failures[0][0]} cannot be restored "
                      f"({failures[0][1]}); resuming from {path}, the newest that can",
                      file=sys.stderr, flush=True)
            self._last_saved = int(self.global_step.numpy())
            return path
        if failures:
            path, why = failures[0]
            raise CheckpointError(f"checkpoint {path}: cannot be restored into this "
                                  f"model ({why}); use --restart to start over")
        return None

    def maybe_save(self, step: int) -> None:
        if self.every and step // self.every > self._last_saved // self.every:
            self.save(step)

    def save(self, step: int, epoch: Optional[int] = None) -> str:
        if epoch is not None:
            self.epoch.assign(epoch)
        if step == self._last_saved and self.latest is not None:
            return self.latest
        try:
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            why = getattr(e, "strerror", None) or getattr(e, "message", None)
            raise WriteError(os.path.join(self.directory, f"ckpt-{step}"),
                             _first_line(why or e)) from None
        self._last_saved = step
        return path

    def remove_partials(self) -> list:
        """Removes what a save killed mid-way left (TensorFlow's
        `<name>_temp` folders); returns their paths."""
        found = glob.glob(os.path.join(glob.escape(self.directory), "*_temp*"))
        for path in found:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        return found


def check_compatible(run_dir: str, config: Config) -> None:
    """Refuses to resume a run whose saved config.json differs in a setting
    that shapes the variables; names the file and the mismatch."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e}); use --restart to start over"
                              ) from None
    diffs = [f"{k}={saved.get(k)!r} in the checkpoint, {getattr(config, k)!r} now"
             for k in MODEL_FIELDS if k in saved and saved[k] != getattr(config, k)]
    if diffs:
        raise CheckpointError(f"{run_dir}/checkpoints is incompatible with these flags "
                              f"({'; '.join(diffs)}); use --restart to start over or "
                              f"another --run_dir")


def latest(run_dir: str) -> Optional[str]:
    """The newest checkpoint the run folder's state file names, or None.
    (Not `tf.train.latest_checkpoint`, which says None when that one's files
    are missing: the run would start over instead of falling back.)"""
    state = tf.train.get_checkpoint_state(os.path.join(run_dir, artifacts.CHECKPOINTS))
    return state.model_checkpoint_path if state and state.model_checkpoint_path else None


def has_checkpoint(run_dir: str) -> bool:
    return latest(run_dir) is not None


def _first_line(error) -> str:
    """An error's (or a message's) first line, at most 200 characters."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
