"""The loop: epochs, calls, validation, progress, callbacks.

Three layers, as in Orbit and Keras's own trainer:

* `step.TrainStep`: one step's math and update per replica, with no
  summary code; `loop.StepLoop.run(iterator, n, codes)` is `n` of them in
  one compiled call, traced once; a view step among them computes its views
  and keeps them in the call's next slot (`views`); `readout` packs and
  unpacks what the call returns.
* `schedule.Schedule` says which steps are view steps (the run's first and
  last, the cadences' multiples); `diagnostics.Diagnostics` writes what
  TensorBoard shows of them, each at its own step, from the readout.
* `Trainer.fit` (here): the Python loop. A call runs `steps_per_execution`
  steps, or ends at an epoch's end or at a callback's `step_interval`
  multiple (or, with slots too few for its view steps, at the last one they
  hold). The schedule is a function of the step, the cadences, the
  callbacks' intervals and the run's first and last step only, so every
  worker of a multi-worker run (given the same callbacks' intervals) makes
  the same calls, and their collectives pair.

Every hook of the loop is a Keras callback (`callbacks`): checkpoints,
signals, the best epoch, patience and a user's own.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from siamese_research import data as data_lib
from siamese_research.core import encoders, losses
from siamese_research.metrics import streaming as metrics_lib
from siamese_research.summaries import views as summaries
from siamese_research.errors import WriteError
from siamese_research.train.callbacks import CallbackDriver
from siamese_research.train.diagnostics import Diagnostics
from siamese_research.train.loop import StepLoop
from siamese_research.train.schedule import Schedule
from siamese_research.train.step import NonFiniteError, TrainStep
from siamese_research.train.views import ViewLayout, code
from siamese_research.train.readout import unpack
from siamese_research.train.validation import Validator

SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclasses.dataclass(frozen=True)
class Span:
    """What every call of one `fit` shares: its first and last global step,
    its epochs, whether the step unrolls, the callbacks' step interval."""

    first: int
    last: int
    epochs: int
    unroll: bool
    interval: int


class Bar:
    """The epoch's `keras.utils.Progbar`, updated at most every 0.1 s (a
    metric read per update costs a little)."""

    def __init__(self, progbar):
        self.progbar, self.shown = progbar, 0.0

    def due(self) -> bool:
        return time.perf_counter() - self.shown > 0.1

    def update(self, done: int, values: dict) -> None:
        self.shown = time.perf_counter()
        self.progbar.update(done, values=list(values.items()))

    def finish(self, values: dict) -> None:
        self.progbar.update(self.progbar.target, values=list(values.items()),
                            finalize=True)


class Trainer:
    """Trains a `SiameseModel` and logs its branch gradients.

    Args:
      model: a built `SiameseModel`, created in `strategy.scope()`.
      loss_fn: a Keras loss, `loss_fn(y, p, sample_weight)`.
      optimizer: a Keras optimizer (built here, eagerly, in the scope).
      strategy: a `tf.distribute.Strategy` (default: the current one).
      writers: {"train": writer, "validation": writer}, or None (no logging).
        With writers (or on every worker of a multi-worker run, whose chief
        writes) the step is compiled with its views and check; without, it
        holds no code for them. Decided here, once.
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
      mini_batch_size: the cached in-batch pass (`TrainStep`).
    """

    def __init__(self, model, *, loss_fn, optimizer, strategy=None, writers=None,
                 steps_per_execution: int = 20, log_every: int = 10,
                 histogram_every: int = 100, grad_check_every: int = 100,
                 gate_gradients: bool = True, diagnostics: bool = True,
                 on_nonfinite: str = "stop", jit_compile: bool = False,
                 scale_loss: Optional[Callable] = None,
                 fixed_threshold: Optional[bool] = None, loss_name: str = "bce",
                 verbose: int = 1, unroll: Optional[bool] = None,
                 mini_batch_size: int = 0):
        strategy = strategy or tf.distribute.get_strategy()
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        scheduled = writers is not None or self.multi_worker
        self.schedule = Schedule(log_every=log_every, grad_check_every=grad_check_every,
                                 histogram_every=histogram_every, branch_views=diagnostics,
                                 scheduled=scheduled)
        if fixed_threshold is None:
            fixed_threshold = metrics_lib.fixed_threshold(model, loss_name)
        self.fixed_threshold = fixed_threshold
        miner_tags = losses.MINER_TAGS if hasattr(loss_fn, "miner_stats") else ()
        layout = ViewLayout(model, gate_gradients=gate_gradients, branch_views=diagnostics,
                            fixed_threshold=fixed_threshold,
                            miner_tags=miner_tags) if scheduled else None
        self.step = TrainStep(model, loss_fn=loss_fn, optimizer=optimizer,
                              strategy=strategy, on_nonfinite=on_nonfinite,
                              jit_compile=jit_compile, scale_loss=scale_loss,
                              views=layout, check=diagnostics,
                              view_slots=steps_per_execution,
                              histogram_slots=min(steps_per_execution,
                                                  steps_per_execution // histogram_every + 3),
                              mini_batch_size=mini_batch_size)
        self.loop = StepLoop(self.step)
        self.diagnostics = Diagnostics(self.step)
        self._writers = writers
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
    writers = property(lambda self: self._writers)

    @property
    def tracing_count(self) -> Dict[str, int]:
        """How many times each compiled function was traced."""
        fns = {"train_steps": self.loop.run, "eval_step": self.validator.eval_step,
               "branch_pass": self.step.branch_pass}
        return {name: fn.experimental_get_tracing_count() if fn is not None else 0
                for name, fn in fns.items()}

    # -- the loop -------------------------------------------------------------------
    def fit(self, train, validation=None, *, epochs: int = 1,
            callbacks: Sequence = ()) -> dict:
        """Trains to `epochs` epochs, resuming from `global_step`.

        An epoch is `train.steps_per_epoch` steps; the data position of step
        s is (s // steps_per_epoch, s % steps_per_epoch), so a restored
        `global_step` resumes at the exact batch.

        Args:
          train, validation: `PairDataset`s, or `tf.data.Dataset`s of
            `((left, right), label[, weight])` batches (of a known number).
          callbacks: `keras.callbacks.Callback`s, driven as `model.fit`
            drives them (a batch end after each compiled call), and the
            run's actions (`callbacks.Checkpointing`, `Interrupt`, ...). One
            that sets `self.model.stop_training` ends the run after that
            epoch; `self.model.interrupted`, after that call.

        Returns:
          {"epochs": [logs per epoch], "interrupted": bool,
           "stopped_early": bool}.

        Raises:
          NonFiniteError: a step had a non-finite loss or gradient and
            `on_nonfinite == "stop"`; nothing of that step was applied.
        """
        train = data_lib.as_pair_dataset(train)
        if validation is not None:
            validation = data_lib.as_pair_dataset(validation)
        spe = train.steps_per_epoch
        start = int(self.global_step.numpy())
        history = {"epochs": [], "interrupted": False, "stopped_early": False}
        self.step.nonfinite_step.assign(-1)  # an earlier fit's stop is over
        self.validation_scores = (-1, None)
        cbs = CallbackDriver(callbacks, self.model, self.optimizer, epochs=epochs,
                             steps=spe, nonfinite=int(self.nonfinite_count.numpy()),
                             global_step=start)
        # (From the run's length, not what is left of it: a resumed run
        # traces the step its first part did.)
        span = Span(first=start + 1, last=epochs * spe, epochs=epochs,
                    unroll=encoders.unroll_pays(epochs * spe) if self.unroll is None
                    else self.unroll, interval=cbs.step_interval())
        cbs.on_train_begin()
        try:
            for epoch in range(start // spe, epochs):
                logs = self._epoch(train, validation, epoch, span, cbs)
                if logs is None:  # interrupted mid-epoch
                    history["interrupted"] = True
                    break
                history["epochs"].append(logs)
                if cbs.model.stop_training:
                    break
                if cbs.model.interrupted and epoch + 1 < epochs:
                    history["interrupted"] = True
                    break
        finally:
            history["stopped_early"] = cbs.model.stop_training
            cbs.on_train_end(history["epochs"][-1] if history["epochs"] else None)
        return history

    def _epoch(self, train, validation, epoch: int, span: "Span", cbs) -> Optional[dict]:
        """One epoch from where the global step stands: its logs, or None
        when a callback interrupted it before its end (nothing validated)."""
        spe = train.steps_per_epoch
        step = int(self.global_step.numpy())
        skip = step - epoch * spe
        for m in self.train_metrics.values():
            m.reset_state()
        bar = Bar(keras.utils.Progbar(spe, verbose=self.verbose, stateful_metrics=SHOWN))
        if self.verbose:
            print(f"Epoch {epoch + 1}/{span.epochs}" +
                  (f" (resuming at batch {skip})" if skip else ""))
        cbs.on_epoch_begin(epoch)
        iterator = iter(self.strategy.experimental_distribute_dataset(
            train.index_epoch(epoch, skip)))
        self.diagnostics.start_clock(step)  # samples_per_second since
        end_of_epoch = (epoch + 1) * spe
        # The writer is the default for the whole epoch: leaving
        # `as_default()` flushes it.
        with self._writer(summaries.TRAIN):
            while step < end_of_epoch:
                step = self._call(iterator, train, step, epoch, span, cbs, bar)
                if cbs.model.stop_training:
                    break
                if cbs.model.interrupted and step < end_of_epoch:
                    self.flush()
                    return None
        return self._end_epoch(validation, epoch, step, cbs, bar)

    def _call(self, iterator, train, step: int, epoch: int, span: "Span", cbs,
              bar: "Bar") -> int:
        """One compiled call after global step `step`, holding the view steps
        that fall in it; returns the step it ended at (written, shown and
        passed to the callbacks)."""
        spe = train.steps_per_epoch
        end = min(step + self.steps_per_execution, (epoch + 1) * spe)
        if span.interval > 0:
            end = min(end, step + span.interval - step % span.interval)
        views, end = self._within_slots(
            self.schedule.views(step, end, span.first, span.last), end)
        codes = np.zeros(self.steps_per_execution, np.int32)
        for s, due in views:
            codes[s - step - 1] = code(due)
        if cbs.callbacks:
            cbs.on_train_batch_begin(step - epoch * spe)
        started = time.perf_counter()
        with encoders.unrolling(span.unroll):
            values = self.loop.run(iterator, tf.constant(end - step, tf.int32),
                                   tf.constant(codes), train.source)
        # One read per call (a .numpy() costs ~0.1-0.3 ms): the state and
        # every view step's views.
        out = unpack(self.step, values.numpy(), len(views),
                     sum(bool(due[2]) for _, due in views))
        if out.nonfinite_step >= 0 and self.step.on_nonfinite == "stop":
            views = [(s, due) for s, due in views if s < out.nonfinite_step]
        if views:  # (a worker without writers writes nothing)
            self.diagnostics.write(views, out, (step, end, started, time.perf_counter()),
                                   lambda a, b: train.pairs_in_batches(a - epoch * spe,
                                                                       b - epoch * spe))
        self._check_nonfinite(out.nonfinite_step)
        step, nonfinite = out.global_step, out.nonfinite_count
        done = step - epoch * spe
        if self.verbose and (done >= spe or not self.multi_worker and bar.due()):
            bar.update(done, self._values(True))  # reading metrics costs a little
        cbs.batch_end(done - 1, step, self._values, nonfinite)
        return step

    def _within_slots(self, views, end: int):
        """(views, end) of a call that its slots can hold: it ends early at
        a view step only when they are full (never at the defaults: a call
        has a slot for each of its steps, and its histogram steps' bound)."""
        if not views:
            return views, end
        rows, hists = self.step.view_rows.shape[0], self.step.histogram_rows.shape[0]
        seen = 0
        for j, (s, due) in enumerate(views):
            seen += bool(due[2])
            if j + 1 == rows or seen == hists:
                if j + 1 < len(views):
                    return views[:j + 1], s
        return views, end

    def _end_epoch(self, validation, epoch: int, step: int, cbs, bar: "Bar") -> dict:
        """Validates, shows and hands the epoch's logs to the callbacks."""
        logs = self._epoch_logs()
        if validation is not None:
            val_logs, scores = self.evaluate(validation, step=step)
            logs.update(val_logs)
            self.validation_scores = (step, scores)
        self.flush()  # the epoch's summaries are on disk before any checkpoint
        if self.verbose:
            bar.finish({k: v for k, v in logs.items() if k in SHOWN})
        cbs.on_epoch_end(epoch, logs)
        logs["epoch"] = epoch + 1
        self.flush()
        return logs

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
        """Flushes the writers; a fault (no space) is a `WriteError`."""
        if self.writers is not None:
            for name, w in self.writers.items():
                try:
                    w.flush()
                except tf.errors.OpError as e:
                    raise WriteError(f"the {name} event files", e.message or
                                     type(e).__name__) from None

    def _values(self, shown_only: bool = False) -> dict:
        logs = metrics_lib.results(self.train_metrics, self.fixed_threshold)
        return {k: v for k, v in logs.items() if not shown_only or k in SHOWN}


__all__ = ["Trainer", "NonFiniteError"]
