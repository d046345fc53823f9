"""Keras callbacks in `Trainer.fit`, and the run's best epoch.

`Trainer.fit(callbacks=[...])` drives standard `keras.callbacks.Callback`
objects with the hooks and logs `model.fit` gives them (train and epoch
begin and end, a batch begin and end around each compiled call, as `fit`
does with `steps_per_execution`; `model.stop_training`),
so `EarlyStopping`, `ReduceLROnPlateau`, `CSVLogger` and `TerminateOnNaN`
work unchanged. A callback's `self.model` is a `CallbackModel`: the
`SiameseModel`, seen with the trainer's optimizer (which an uncompiled model
does not hold) and a `stop_training` flag.

`BestModel` keeps the run's best epoch by a monitored validation value:
`best.keras` and `best_encoder.keras` beside the last epoch's `model.keras`.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import keras

from siamese_research import artifacts
from siamese_research.config import MONITORS  # noqa: F401 (the public list)


def mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


class CallbackModel:
    """What a callback sees as `self.model` (see the module docstring).

    Attribute reads fall through to the `SiameseModel` (weights, `save`,
    `get_weights`/`set_weights` for `EarlyStopping(restore_best_weights)`);
    `optimizer` and `stop_training` live here, so nothing is added to the
    model that its saved file would carry.
    """

    def __init__(self, model, optimizer):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "stop_training", False)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        if name in ("optimizer", "stop_training"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._model, name, value)


class CallbackDriver(keras.callbacks.CallbackList):
    """The callbacks of one `Trainer.fit`, with their `CallbackModel`.

    Args:
      callbacks: `keras.callbacks.Callback`s.
      model, optimizer: what `self.model` shows them.
      epochs, steps: `params` as `fit` sets them (steps: per epoch).
      nonfinite: the trainer's non-finite step count so far.
    """

    def __init__(self, callbacks, model, optimizer, *, epochs: int, steps: int,
                 nonfinite: int = 0):
        super().__init__(list(callbacks), add_history=False, add_progbar=False,
                         model=CallbackModel(model, optimizer), verbose=0,
                         epochs=epochs, steps=steps)
        self.nonfinite = nonfinite

    def batch_end(self, batch: int, values, nonfinite_count) -> bool:
        """After a compiled call whose last batch of the epoch is `batch`:
        `on_train_batch_end` with `values()` (the train metrics); returns
        whether a callback asked to stop."""
        if not self.callbacks:
            return False
        logs = values()
        count = int(nonfinite_count.numpy())
        if count > self.nonfinite:
            # A step of this call was not finite (under "skip", left out of
            # the metrics): its loss, as fit would show it, is not finite.
            logs["loss"], self.nonfinite = float("nan"), count
        self.on_train_batch_end(batch, logs)
        return self.model.stop_training


class Patience(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` (`--patience`) that resumes where
    the run left it: with `best`'s record (`BestModel`, the run's
    best.json) and `completed` epochs done, the epochs waited so far are
    those since the best epoch, not 0 (every worker reads the same record).

    Args:
      monitor, patience: as EarlyStopping's (its mode from `monitor`).
      best: the run's `BestModel`.
      completed: epochs the run completed before this process.
    """

    def __init__(self, monitor: str, patience: int, best: "BestModel",
                 completed: int = 0):
        super().__init__(monitor=monitor, patience=patience, mode=mode(monitor))
        self._record, self._completed = best, completed

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._record.best_epoch is not None and self._completed:
            self.best = self._record.best
            self.wait = max(self._completed - self._record.best_epoch, 0)


class BestModel(keras.callbacks.Callback):
    """Saves the model and its encoder when `monitor` improves.

    Args:
      run_dir: where `best.keras`, `best_encoder.keras` and `best.json`
        (epoch, step, monitor, value) go.
      monitor: a key of the epoch logs (`MONITORS`).
      save: False only records the best (workers of a multi-worker run).
      resume: the run resumes from a checkpoint: it keeps its earlier best.
    """

    def __init__(self, run_dir: str, monitor: str = "val_loss", save: bool = True,
                 resume: bool = False):
        super().__init__()
        self.run_dir, self.monitor, self.save = run_dir, monitor, save
        self.sign = -1.0 if mode(monitor) == "min" else 1.0
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        if resume:
            self._load()

    def _load(self):
        """A resumed run keeps its earlier best."""
        path = os.path.join(self.run_dir, artifacts.BEST_FILE)
        if os.path.exists(path):
            with open(path) as f:
                record = json.load(f)
            if record.get("monitor") == self.monitor:
                self.best, self.best_epoch = record["value"], record["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if self.best is not None and self.sign * value <= self.sign * self.best:
            return
        self.best, self.best_epoch = float(value), epoch + 1
        if not self.save:
            return
        artifacts.save_models(getattr(self.model, "_model", self.model), self.run_dir, "best")
        artifacts.write_json(self.run_dir, artifacts.BEST_FILE, {
            "epoch": self.best_epoch, "monitor": self.monitor, "value": self.best})
