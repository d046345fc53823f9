"""The loop: epochs, calls, validation, progress, callbacks.

Three layers, as in Orbit and Keras's own trainer:

* `step.TrainStep`: one step's math and update; `run(iterator, n, view,
  check)` is `n` steps in one compiled call, traced once, with no summary
  code; its last step can store its views.
* `diagnostics.Diagnostics`: which steps are view steps (the run's first
  and last, the cadences' multiples) and what TensorBoard shows of them,
  written from the stored views.
* `Trainer.fit` (here): the Python loop. A call ends at the next view step
  (or after `steps_per_execution` steps, or at an epoch's end). The
  schedule is a function of the step, the cadences and the run's first and
  last step only, so every worker of a multi-worker run makes the same
  calls, and their collectives pair.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence

import keras
import tensorflow as tf

from siamese_research import data as data_lib
from siamese_research.core import encoders
from siamese_research.metrics import streaming as metrics_lib
from siamese_research.summaries import views as summaries
from siamese_research.train.callbacks import CallbackDriver
from siamese_research.train.diagnostics import Diagnostics
from siamese_research.train.step import NonFiniteError, TrainStep
from siamese_research.train.validation import Validator

SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy")


class Trainer:
    """Trains a `SiameseModel` and logs its branch gradients.

    Args:
      model: a built `SiameseModel`, created in `strategy.scope()`.
      loss_fn: a Keras loss, `loss_fn(y, p, sample_weight)`.
      optimizer: a Keras optimizer (built here, eagerly, in the scope).
      strategy: a `tf.distribute.Strategy` (default: the current one).
      writers: {"train": writer, "validation": writer}, or None (no logging).
      steps_per_execution: most train steps per compiled call.
      log_every, histogram_every, grad_check_every: cadences (steps); every
        run also logs all of it at its first and its last step.
      gate_gradients: per-gate gradient scalars and histograms for RNNs.
      diagnostics: False writes the train scalars only (no branch views, no
        check, no histograms; used by the benchmark).
      on_nonfinite: "stop" (raise `NonFiniteError`, nothing applied) or
        "skip" (drop that step's update, count it).
      jit_compile: XLA-compile the per-batch math (one device only).
      scale_loss: mixed precision: `optimizer.scale_loss`.
      fixed_threshold: accuracy at 0.5; None decides from the model and
        `loss_name` (`metrics.fixed_threshold`), False fits it on the
        training data.
      loss_name: the loss's registered name, for `fixed_threshold`.
      verbose: 1 shows a `keras.utils.Progbar`, 0 is silent.
      unroll: unroll the encoder's RNN over a static time axis in the
        train step (`encoders.should_unroll`): faster steps, a slower
        trace; None unrolls in runs of `encoders.UNROLL_MIN_RUN_STEPS`
        steps or more. Read when the step is traced (the first call).
    """

    def __init__(self, model, *, loss_fn, optimizer, strategy=None, writers=None,
                 steps_per_execution: int = 20, log_every: int = 10,
                 histogram_every: int = 100, grad_check_every: int = 10,
                 gate_gradients: bool = True, diagnostics: bool = True,
                 on_nonfinite: str = "stop", jit_compile: bool = False,
                 scale_loss: Optional[Callable] = None,
                 fixed_threshold: Optional[bool] = None, loss_name: str = "bce",
                 verbose: int = 1, unroll: Optional[bool] = None):
        strategy = strategy or tf.distribute.get_strategy()
        self.step = TrainStep(model, loss_fn=loss_fn, optimizer=optimizer,
                              strategy=strategy, on_nonfinite=on_nonfinite,
                              jit_compile=jit_compile, scale_loss=scale_loss)
        if fixed_threshold is None:
            fixed_threshold = metrics_lib.fixed_threshold(model, loss_name)
        self.fixed_threshold = fixed_threshold
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.diagnostics = Diagnostics(
            self.step, log_every=log_every, grad_check_every=grad_check_every,
            histogram_every=histogram_every, gate_gradients=gate_gradients,
            branches=diagnostics, fixed_threshold=fixed_threshold)
        self.writers = writers
        self.steps_per_execution = steps_per_execution
        self.verbose = verbose
        self.unroll = unroll
        self.validator = Validator(self.step)
        self.threshold = 0.5  # the validation threshold (fitted: from training)
        # (global step, scores) of the last validation `fit` made: the run's
        # final scores when no step came after it, and no callback changed
        # the weights after it (as EarlyStopping(restore_best_weights) would).
        self.validation_scores = (-1, None)

    # Shortcuts to the step's state, which checkpoints and callers read.
    model = property(lambda self: self.step.model)
    optimizer = property(lambda self: self.step.optimizer)
    strategy = property(lambda self: self.step.strategy)
    global_step = property(lambda self: self.step.global_step)
    nonfinite_count = property(lambda self: self.step.nonfinite_count)
    nonfinite_step = property(lambda self: self.step.nonfinite_step)
    train_metrics = property(lambda self: self.step.metrics)
    val_metrics = property(lambda self: self.validator.metrics)
    max_sum_error = property(lambda self: self.diagnostics.max_sum_error)
    last_sum_error = property(lambda self: self.diagnostics.last_sum_error)

    @property
    def writers(self):
        return self._writers

    @writers.setter
    def writers(self, writers):
        # Set before the first step (train.py creates them after the model):
        # whether any view step can come decides what the step compiles.
        self._writers = writers
        # Workers without writers still run the chief's view steps.
        self.diagnostics.scheduled = writers is not None or self.multi_worker
        self.step.with_views = self.diagnostics.scheduled
        self.step.with_check = self.diagnostics.scheduled and self.diagnostics.branches

    @property
    def tracing_count(self) -> Dict[str, int]:
        """How many times each compiled function was traced."""
        fns = {"train_steps": self.step.run, "eval_step": self.validator.eval_step,
               "branch_pass": self.step.branch_pass}
        return {name: fn.experimental_get_tracing_count() if fn is not None else 0
                for name, fn in fns.items()}

    # -- the loop -------------------------------------------------------------------
    def fit(self, train, validation=None, *,
            epochs: int = 1, on_progress: Optional[Callable[[int], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None,
            on_epoch_end: Optional[Callable[[int, dict], None]] = None,
            progress_every: int = 0, callbacks: Sequence = ()) -> dict:
        """Trains to `epochs` epochs, resuming from `global_step`.

        An epoch is `train.steps_per_epoch` steps; the data position of step
        s is (s // steps_per_epoch, s % steps_per_epoch), so a restored
        `global_step` resumes at the exact batch.

        Args:
          train, validation: `PairDataset`s, or `tf.data.Dataset`s of
            `((left, right), label[, weight])` batches (of a known number).
          on_progress: called with the global step after each compiled call
            (checkpoints every N steps hook in here).
          progress_every: if > 0, calls also end at every multiple of it, so
            `on_progress` sees those steps (train.py: --checkpoint_every).
          should_stop: polled after each call (signals); when True, `fit`
            returns early with `history["interrupted"] = True`.
          on_epoch_end: called with (epoch, logs) after validation.
          callbacks: `keras.callbacks.Callback`s, driven as `model.fit`
            drives them (a batch end after each compiled call); one that sets
            `self.model.stop_training` ends the run after that call.

        Returns:
          {"epochs": [logs per epoch], "interrupted": bool}.

        Raises:
          NonFiniteError: a step had a non-finite loss or gradient and
            `on_nonfinite == "stop"`; nothing of that step was applied.
        """
        train = data_lib.as_pair_dataset(train)
        if validation is not None:
            validation = data_lib.as_pair_dataset(validation)
        spe = train.steps_per_epoch
        history = {"epochs": [], "interrupted": False, "stopped_early": False}
        self.step.nonfinite_step.assign(-1)  # an earlier fit's stop is over
        self.validation_scores = (-1, None)
        cbs = CallbackDriver(callbacks, self.model, self.optimizer, epochs=epochs,
                             steps=spe, nonfinite=int(self.nonfinite_count.numpy()))
        cbs.on_train_begin()
        try:
            self._fit(train, validation, epochs, on_progress, should_stop, on_epoch_end,
                      progress_every, cbs, history)
        finally:
            history["stopped_early"] = cbs.model.stop_training
            cbs.on_train_end(history["epochs"][-1] if history["epochs"] else None)
        return history

    def _fit(self, train, validation, epochs, on_progress, should_stop, on_epoch_end,
             progress_every, cbs, history) -> None:
        spe = train.steps_per_epoch
        start = int(self.global_step.numpy())
        first, last = start + 1, epochs * spe
        multi_worker = self.multi_worker
        # (From the run's length, not what is left of it: a resumed run
        # traces the step its first part did.)
        unroll = encoders.unroll_pays(last) if self.unroll is None else self.unroll
        for epoch in range(start // spe, epochs):
            step = int(self.global_step.numpy())
            skip = step - epoch * spe
            for m in self.train_metrics.values():
                m.reset_state()
            bar = keras.utils.Progbar(spe, verbose=self.verbose, stateful_metrics=SHOWN)
            if self.verbose:
                print(f"Epoch {epoch + 1}/{epochs}" +
                      (f" (resuming at batch {skip})" if skip else ""))
            cbs.on_epoch_begin(epoch)
            iterator = iter(self.strategy.experimental_distribute_dataset(
                train.index_epoch(epoch, skip)))
            self.diagnostics.start_clock(step)  # samples_per_second since
            shown = 0.0
            end_of_epoch = (epoch + 1) * spe
            # The writer is the default for the whole epoch: leaving
            # `as_default()` flushes it.
            with self._writer(summaries.TRAIN):
                while step < end_of_epoch:
                    end = min(step + self.steps_per_execution, end_of_epoch)
                    if progress_every > 0:
                        end = min(end, step + progress_every - step % progress_every)
                    end, due = self.diagnostics.call(step, end, first, last)
                    if cbs.callbacks:
                        cbs.on_train_batch_begin(step - epoch * spe)
                    check = due is not None and (due[1] or due[2])  # histograms: total
                    with encoders.unrolling(unroll):
                        state, values = self.step.run(
                            iterator, tf.constant(end - step, tf.int32),
                            tf.constant(due is not None), tf.constant(check), train.source)
                    # Two reads per call (a .numpy() costs ~0.1-0.3 ms): the
                    # state, and on view steps the views' vector.
                    step, bad, nonfinite = (int(x) for x in state.numpy())
                    self._check_nonfinite(bad)
                    # (With several workers every one makes the writes' metric
                    # reads, which are collectives; the chief alone has writers.)
                    if due is not None:
                        self.diagnostics.write(step, due, (nonfinite, values),
                                               pairs=train.pairs_in_batches(
                                                   self.diagnostics.clock[1] - epoch * spe,
                                                   step - epoch * spe))
                    done = step - epoch * spe
                    if self.verbose and (done >= spe or not multi_worker and
                                         time.perf_counter() - shown > 0.1):
                        shown = time.perf_counter()  # reading metrics costs a little
                        bar.update(done, values=list(self._values(True).items()))
                    if on_progress is not None:
                        on_progress(step)
                    if cbs.batch_end(done - 1, self._values, self.nonfinite_count):
                        break
                    if step < end_of_epoch and should_stop is not None and should_stop():
                        # Mid-epoch: return now. At an epoch's end, validate and
                        # finish the epoch first so no epoch-level summary is lost.
                        history["interrupted"] = True
                        self.flush()
                        return
            logs = self._epoch_logs()
            if validation is not None:
                val_logs, scores = self.evaluate(validation, step=step)
                logs.update(val_logs)
                self.validation_scores = (step, scores)
            if self.verbose:
                bar.update(spe, values=[(k, v) for k, v in logs.items() if k in SHOWN],
                           finalize=True)
            cbs.on_epoch_end(epoch, logs)
            logs["epoch"] = epoch + 1
            history["epochs"].append(logs)
            self.flush()
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)
            if cbs.model.stop_training:
                return
            if should_stop is not None and should_stop() and epoch + 1 < epochs:
                history["interrupted"] = True
                return

    def _epoch_logs(self) -> dict:
        """The epoch's train metrics; a fitted threshold (the one validation
        then uses) is fitted on this epoch's training scores."""
        logs = metrics_lib.results(self.train_metrics, self.fixed_threshold)
        self.threshold = logs.get("threshold", 0.5)
        return logs

    def evaluate(self, data, step: Optional[int] = None):
        """Validates on `data` (`validation.Validator.evaluate`) at the
        trainer's threshold; with `step` and writers, writes the scalars."""
        writer = self.writers[summaries.VALIDATION] if self.writers is not None else None
        return self.validator.evaluate(
            data, threshold=None if self.fixed_threshold else self.threshold,
            writer=writer, step=step)

    # -- helpers ----------------------------------------------------------------------
    def _writer(self, name):
        if self.writers is None:
            return tf.summary.record_if(False)
        return self.writers[name].as_default()

    def _check_nonfinite(self, bad: int):
        """Raises `NonFiniteError` if `bad` (`nonfinite_step`) is a step and
        the policy is "stop"."""
        if bad < 0 or self.step.on_nonfinite != "stop":
            return
        # Neither `bad` nor the rest of its call was applied: the state is that
        # of step bad - 1, and so is the count (a resume runs `bad` again).
        self.global_step.assign(bad - 1)
        self.flush()
        raise NonFiniteError(bad, self.step.nonfinite_what())

    def flush(self):
        if self.writers is not None:
            for w in self.writers.values():
                w.flush()

    def _values(self, shown_only: bool = False) -> dict:
        logs = metrics_lib.results(self.train_metrics, self.fixed_threshold)
        return {k: v for k, v in logs.items() if not shown_only or k in SHOWN}


__all__ = ["Trainer", "NonFiniteError"]
