"""The loop's one hook system: Keras callbacks in `Trainer.fit`, and the
run's own actions written as callbacks.

`Trainer.fit(callbacks=[...])` drives standard `keras.callbacks.Callback`
objects with the hooks and logs `model.fit` gives them (train and epoch
begin and end, a batch begin and end around each compiled call, as `fit`
does with `steps_per_execution`; `model.stop_training`),
so `EarlyStopping`, `ReduceLROnPlateau`, `CSVLogger` and `TerminateOnNaN`
work unchanged. A callback's `self.model` is a `CallbackModel`: the
`SiameseModel`, seen with the trainer's optimizer (which an uncompiled model
does not hold), a `stop_training` flag, an `interrupted` flag and the
trainer's `global_step`.

The run's actions go through the same list (Orbit's actions, as callbacks):
`Checkpointing` saves every N steps, at epoch ends and on an interruption;
`Interrupt` turns SIGINT/SIGTERM into a stop at the next call's end;
`BestModel` keeps the best epoch by a monitored validation value
(`best.keras`, `best_encoder.keras`); `Patience` is a resumable
EarlyStopping. A callback with a `step_interval` makes the loop end its
compiled calls at that interval's multiples.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from typing import Optional

import keras

from siamese_research import artifacts
from siamese_research.config import MONITORS  # noqa: F401 (the public list)
from siamese_research.errors import DataError


def mode(monitor: str) -> str:
    """"min" for a loss or an error rate, "max" for the rest."""
    return "min" if monitor.endswith(("loss", "eer")) else "max"


class CallbackModel:
    """What a callback sees as `self.model` (see the module docstring).

    Attribute reads fall through to the `SiameseModel` (weights, `save`,
    `get_weights`/`set_weights` for `EarlyStopping(restore_best_weights)`);
    these live here, so nothing is added to the model that its saved file
    would carry:

    * `optimizer`: the trainer's.
    * `stop_training`: set it to end the run after the epoch (validated).
    * `interrupted`: set it to end the run at the end of this compiled call,
      unvalidated (a mid-epoch stop a resume continues from; at an epoch's
      end, after that epoch).
    * `global_step`: the trainer's step after the last call, an int.
    """

    OWN = ("optimizer", "stop_training", "interrupted", "global_step")

    def __init__(self, model, optimizer, global_step: int = 0):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "stop_training", False)
        object.__setattr__(self, "interrupted", False)
        object.__setattr__(self, "global_step", global_step)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        if name in self.OWN:
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
      global_step: the trainer's step as the fit starts.
    """

    def __init__(self, callbacks, model, optimizer, *, epochs: int, steps: int,
                 nonfinite: int = 0, global_step: int = 0):
        super().__init__(list(callbacks), add_history=False, add_progbar=False,
                         model=CallbackModel(model, optimizer, global_step),
                         verbose=0, epochs=epochs, steps=steps)
        self.nonfinite = nonfinite
        # Reading the metrics costs a few tensor reads a call: only for a
        # callback that may read them (the run's own actions do not).
        self._logs_read = any(getattr(cb, "reads_batch_logs", True)
                              for cb in self.callbacks)

    def step_interval(self) -> int:
        """The callbacks' step intervals (`step_interval`) a compiled call
        must end at: their greatest common divisor, 0 for none."""
        return math.gcd(*(getattr(cb, "step_interval", 0) or 0 for cb in self.callbacks))

    def batch_end(self, batch: int, step: int, values, nonfinite: int) -> None:
        """After a compiled call that ended at global step `step`, batch
        `batch` of its epoch: `on_train_batch_end` with `values()` (the
        train metrics), `nonfinite` the trainer's count of non-finite steps."""
        self.model.global_step = step
        if not self.callbacks:
            return
        logs = values() if self._logs_read else {}
        if nonfinite > self.nonfinite:
            # A step of this call was not finite (under "skip", left out of
            # the metrics): its loss, as fit would show it, is not finite.
            self.nonfinite = nonfinite
            if self._logs_read:
                logs["loss"] = float("nan")
        self.on_train_batch_end(batch, logs)


class AtEpochEnd(keras.callbacks.Callback):
    """Calls `fn(epoch, logs)` at every epoch's end (reads no batch logs)."""

    reads_batch_logs = False

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def on_epoch_end(self, epoch, logs=None):
        self.fn(epoch, logs)


class Checkpointing(keras.callbacks.Callback):
    """Saves the run's checkpoint every `checkpointer.every` steps (the
    loop's calls end there), at every epoch's end, and when the run is
    interrupted (`interrupted`), so a resume continues at that step.

    Args:
      checkpointer: the run's `checkpoints.Checkpointer`.
      steps_per_epoch: the train data's, for the epoch an interruption is in.
      save: False on the workers of a multi-worker run: their calls end at
        the same steps as the chief's, and only the chief saves.
    """

    reads_batch_logs = False

    def __init__(self, checkpointer, steps_per_epoch: int, save: bool = True):
        super().__init__()
        self.checkpointer, self.steps_per_epoch = checkpointer, steps_per_epoch
        self.step_interval, self.save = checkpointer.every, save

    def on_train_batch_end(self, batch, logs=None):
        if self.save:
            self.checkpointer.maybe_save(self.model.global_step)

    def on_epoch_end(self, epoch, logs=None):
        if self.save:
            self.checkpointer.save(self.model.global_step, epoch + 1)

    def on_train_end(self, logs=None):
        if self.save and self.model.interrupted:
            step = self.model.global_step
            self.checkpointer.save(step, step // self.steps_per_epoch)


class Interrupt(keras.callbacks.Callback):
    """SIGINT and SIGTERM (Ctrl-C, a scheduler's stop) end the run at the
    end of the compiled call they arrive in (`interrupted`), where
    `Checkpointing` saves it. Handlers are installed from the main thread
    only, for the fit's length; `signal` is the one received, or None."""

    reads_batch_logs = False
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        super().__init__()
        self.signal = None
        self._previous = {}

    def on_train_begin(self, logs=None):
        self.signal = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._received)
                              for sig in self.SIGNALS}

    def _received(self, signum, frame):
        self.signal = signum

    def on_train_batch_end(self, batch, logs=None):
        if self.signal is not None:
            self.model.interrupted = True

    on_epoch_end = on_train_batch_end

    def on_train_end(self, logs=None):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


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

    reads_batch_logs = False

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

    reads_batch_logs = False

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
        if not os.path.exists(path):
            return
        try:
            with open(path) as f:
                record = json.load(f)
            best, epoch = float(record["value"]), int(record["epoch"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: unreadable ({e}); use --restart to start "
                            f"over") from None
        if record.get("monitor") == self.monitor:
            self.best, self.best_epoch = best, epoch

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
