"""The compiled train/eval steps and the Python epoch loop.

Layers, as in Orbit and Keras's own trainer:

* `_train_step(batch, final)`: math and metric updates for one batch, per
  replica. Branch gradients come from ONE backward pass
  (`gradients.branch_gradients`); the optimizer applies g_left + g_right (+
  the head's) to the one variable set. Only a segment's `final` step
  carries summary code: on check steps an independent plain gradient
  checks the sum.
* `train_steps(iterator, plan, source)`: up to `steps_per_execution` steps
  per compiled call over a prefetched iterator of row indices, compiled
  once; each step gathers its rows from `source`, the data's arrays. The
  call runs in segments (`Trainer.plan`), each ending at a step where a
  summary is due: plain steps, then the segment's final step, so plain
  steps carry no summary code and no `tf.cond` for it, and the cadences do
  not shorten the calls. It returns [global_step, nonfinite_step], the
  loop's one read per call.
* `fit(...)`: the Python loop. It owns progress, validation, checkpoints
  and flushing, and starts the samples_per_second clock at each epoch (the
  log steps read it with `tf.timestamp`); it never touches per-step math.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from siamese_research import gradients as G
from siamese_research import summaries, tensorboard_extras
from siamese_research import data as data_lib


class NonFiniteError(RuntimeError):
    """Raised by `fit` when a step produced a non-finite loss or gradient."""

    def __init__(self, step: int, what: str):
        self.step, self.what = step, what
        super().__init__(f"non-finite {what} at step {step}")


class Trainer:
    """Trains a `SiameseModel` and logs its branch gradients.

    Args:
      model: a built `SiameseModel`, created in `strategy.scope()`.
      loss_fn: a Keras loss, `loss_fn(y, p, sample_weight)`.
      optimizer: a Keras optimizer (built here, eagerly, in the scope).
      strategy: a `tf.distribute.Strategy` (default: the current one).
      writers: {"train": writer, "validation": writer}, or None (no logging).
      steps_per_execution: train steps per compiled call (fewer at an
        epoch's end and at `fit`'s `progress_every` multiples); summaries
        due inside a call are written at their own steps (see `plan`).
      log_every: scalar summaries every N steps.
      histogram_every: histograms every N steps.
      grad_check_every: the independent left + right = total check every N.
      gate_gradients: per-gate gradient scalars and histograms for RNNs.
      diagnostics: False turns off branch summaries and the check (the step
        still trains on g_left + g_right); used by the benchmark.
      on_nonfinite: "stop" (raise `NonFiniteError`, nothing applied) or
        "skip" (drop that step's update, count it).
      jit_compile: XLA-compile the per-batch math (one device only; the
        iterator loop and the summary writes stay outside XLA).
      scale_loss: mixed precision: `optimizer.scale_loss`.
      verbose: 1 shows a `keras.utils.Progbar`, 0 is silent.
    """

    def __init__(self, model, *, loss_fn, optimizer, strategy=None, writers=None,
                 steps_per_execution: int = 20, log_every: int = 10,
                 histogram_every: int = 100, grad_check_every: int = 10,
                 gate_gradients: bool = True, diagnostics: bool = True,
                 on_nonfinite: str = "stop", jit_compile: bool = False,
                 scale_loss: Optional[Callable] = None, verbose: int = 1):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.strategy = strategy or tf.distribute.get_strategy()
        self.writers = writers
        self.steps_per_execution = steps_per_execution
        self.log_every, self.histogram_every = log_every, histogram_every
        self.grad_check_every = grad_check_every
        self._diagnostics = diagnostics
        self.on_nonfinite = on_nonfinite
        self.scale_loss = scale_loss
        self.verbose = verbose
        self._gates = summaries.gate_slices(model) if gate_gradients else {}
        # Bookkeeping variables are SyncOnRead: each replica updates its own
        # copy inside the step (no cross-replica sync, so they may be updated
        # under tf.cond), and a read outside the step takes the first
        # replica's value, which every replica agrees on.
        local = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        with self.strategy.scope():
            self.global_step = tf.Variable(0, dtype=tf.int64, name="global_step", **local)
            # Non-finite bookkeeping: how many, the first offending step and
            # which gradient (index into model.trainable_variables; -1 = loss).
            self.nonfinite_count = tf.Variable(0, dtype=tf.int64, **local)
            self.nonfinite_step = tf.Variable(-1, dtype=tf.int64, **local)
            self.nonfinite_index = tf.Variable(-2, dtype=tf.int64, **local)
            self.last_sum_error = tf.Variable(-1.0, **local)
            self.max_sum_error = tf.Variable(0.0, **local)
            # samples_per_second: pairs since the last log step, and when
            # that was (seconds since the Unix epoch, as tf.timestamp()).
            self._speed_pairs = tf.Variable(0.0, dtype=tf.float64, **local)
            self._speed_since = tf.Variable(0.0, dtype=tf.float64, **local)
            self.train_metrics = _metrics("")
            self.val_metrics = _metrics("val_")
            # keras #23085 (Keras 3.15): under a tf.distribute strategy the
            # first traced apply_gradients fails unless the optimizer's slots
            # exist already, so build it eagerly, here, in the scope.
            self.optimizer.build(model.trainable_variables)
        self._variables = list(model.trainable_variables)
        self._var_index = {id(v): i for i, v in enumerate(self._variables)}
        # train_step / eval_step get their signature from the data.
        self.train_step = self.eval_step = None
        self._graph_traced = False
        # XLA compiles the per-batch math only: the iterator and the summary
        # writes around it cannot be compiled. It recompiles for every new
        # (batch, time) shape, so it pays off for fixed-length data.
        self._jit_math = None
        if jit_compile:
            if self.strategy.num_replicas_in_sync > 1:
                # (train.py refuses the flag earlier, naming it.)
                raise ValueError("jit_compile works with one device only: the update's "
                                 "cross-replica sum cannot sit in XLA")
            self._jit_math = tf.function(self._step_math, jit_compile=True)
        self._multi_worker = isinstance(self.strategy,
                                        tf.distribute.MultiWorkerMirroredStrategy)
        self.train_steps = tf.function(self._train_steps, reduce_retracing=True)

    @property
    def diagnostics(self) -> bool:
        """Branch summaries and checks are on (read when the step is traced)."""
        return self._diagnostics and self.writers is not None

    # -- compiled pieces -----------------------------------------------------
    def set_input_spec(self, data: data_lib.PairDataset) -> None:
        """Fixes the single-step functions' signature: None batch and time
        dims. (`train_steps` takes its spec from the iterator: a static time
        dim for fixed-length data.)"""
        self._spec = data.element_spec
        self.train_step = tf.function(self._distributed_train_step,
                                      input_signature=[self._spec])
        self.eval_step = tf.function(self._distributed_eval_step,
                                     input_signature=[self._spec])

    @property
    def tracing_count(self) -> Dict[str, int]:
        """How many times each compiled function was traced (1 each, ideally)."""
        return {name: getattr(self, name).experimental_get_tracing_count()
                if getattr(self, name) is not None else 0
                for name in ("train_step", "eval_step", "train_steps")}

    def _distributed_train_step(self, batch):
        self.strategy.run(self._train_step, args=(batch,))

    def _train_steps(self, iterator, plan, source=None):
        """One call's steps over `iterator` (of batches, or with `source`,
        `PairDataset.source`, of row indices gathered here per replica), in
        the segments of `plan` (see `Trainer.plan`): each segment is plain
        steps, then one final step that carries the summary code."""
        # After a non-finite step under on_nonfinite="stop" the remaining
        # steps of the call apply nothing and write no summary (see
        # _step_math, _train_step), so the loop needs no break and the final
        # step no condition. (With several replicas "apply nothing" means a
        # zero update: momentum optimizers still move; train.py then ends
        # the run from the last checkpoint, which is not affected.)
        def step(item, final, pairs=None):
            if source is not None:
                with tf.device("/cpu:0"):  # where the arrays are: no copy of them
                    item = data_lib.gather_batch(source[0], item, source[1])
            self._train_step(item, final, pairs)

        for i in tf.range(tf.math.count_nonzero(plan[0], dtype=tf.int32)):
            for _ in tf.range(plan[0, i] - 1):
                self.strategy.run(step, args=(next(iterator), False))
            self.strategy.run(step, args=(next(iterator), True, plan[1, i]))
        # What the Python loop needs after the call, in one read.
        return tf.stack([tf.convert_to_tensor(self.global_step),
                         tf.convert_to_tensor(self.nonfinite_step)])

    def _train_step(self, batch, final: bool = True, pairs=None):
        """One step, per replica: the math (optionally XLA-compiled), then,
        on a segment's final step only, the summaries due at it (XLA cannot
        compile them). `pairs`: the segment's pairs, for samples_per_second."""
        step = self.global_step + 1
        math = self._jit_math if self._jit_math is not None else self._step_math
        loss, predictions, left, right, total = math(batch, final)
        self.global_step.assign_add(1)
        if self.writers is None or not final:
            return
        log = self._due(step, self.log_every)
        if pairs is not None:
            self._speed_pairs.assign_add(tf.cast(pairs, tf.float64))
            # Read after the update (the same resource orders it), so the
            # clock below cannot run before this step's work is done.
            updated = tf.convert_to_tensor(self.optimizer.iterations)
            summaries.when(log, lambda: summaries.samples_per_second(
                step, self._speed_pairs, self._speed_since, after=updated))
        summaries.when(log, lambda: summaries.train_scalars(
            step, loss=loss, accuracy=self.train_metrics["accuracy"].result(),
            learning_rate=self.optimizer.learning_rate))
        summaries.when(tf.logical_and(log, self.nonfinite_count > 0),
                       lambda: summaries.scalar("nonfinite_steps", self.nonfinite_count,
                                                step))
        if not self.diagnostics:
            return
        variables = G.encoder_variables(self.model)
        bg = G.BranchGradients(loss, predictions, variables, [], left, right, [])
        if self.scale_loss is not None:
            bg = self._unscaled(bg)
        check = self._due(step, self.grad_check_every)
        hist = self._due(step, self.histogram_every)
        summaries.when(log, lambda: summaries.branch_scalars(step, bg))

        def record_check():
            error = G.sum_error(total, bg.left, bg.right, bg.encoder_vars)
            self.last_sum_error.assign(error)
            self.max_sum_error.assign(tf.maximum(self.max_sum_error, error))
            summaries.check_scalars(step, bg, total, error)

        summaries.when(check, record_check)
        summaries.when(hist, lambda: summaries.histograms(step, self.model, bg, total,
                                                          self._gates))
        if self._gates:
            summaries.when(log, lambda: summaries.gate_scalars(
                step, bg, total if self.grad_check_every == self.log_every else None,
                self._gates))

    def _step_math(self, batch, final: bool = True):
        """Forward, branch gradients, the check's total gradient, the update,
        metrics and non-finite bookkeeping: no summary writes.

        Args:
          batch: ((left, right), label, weight).
          final: a segment's last step, the only one where a check or
            histogram can be due (a Python bool: plain steps carry no code
            for it).

        Returns:
          (loss, predictions, g_left, g_right, g_total): g_total is
          zeros except on check and histogram steps (None without
          diagnostics or on plain steps).
        """
        (left, right), label, weight = batch
        step = self.global_step + 1
        bg = G.branch_gradients(self.model, self.loss_fn, left, right, label, weight,
                                training=True, scale_loss=self.scale_loss)
        total = None
        if self.diagnostics and final:
            check = self._due(step, self.grad_check_every)
            hist = self._due(step, self.histogram_every)
            # The independent total gradient, through the real variables, on
            # check and histogram steps only; before the update, of course.
            total = tf.cond(tf.logical_or(check, hist), lambda: self._total(batch),
                            lambda: [tf.zeros(v.shape, v.dtype) for v in bg.encoder_vars])
        pairs = bg.grads_and_vars()
        flags = [tf.reduce_all(tf.math.is_finite(_values(g))) for g, _ in pairs]
        finite = tf.math.is_finite(bg.loss)
        if flags and self.scale_loss is None:
            # (A LossScaleOptimizer skips overflowed gradients itself and
            # lowers its scale; that is not a divergence.)
            finite = tf.logical_and(finite, tf.reduce_all(tf.stack(flags)))
        if self.strategy.num_replicas_in_sync > 1:
            # Every replica must agree before the update's all-reduce.
            ctx = tf.distribute.get_replica_context()
            bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                 1.0 - tf.cast(finite, tf.float32))
            finite = tf.equal(bad, 0.0)
        alive = self._alive()
        ok = tf.logical_and(finite, alive)
        self._apply_when(alive if self.scale_loss is not None else ok, pairs)
        self._record_nonfinite(step, finite, bg.loss, flags, pairs)
        # Keras 3 losses divide by num_replicas_in_sync (so the all-reduced sum
        # of gradients is the global mean); metrics and logs want the replica's
        # own mean loss back.
        loss = bg.loss * self.strategy.num_replicas_in_sync
        self._update_metrics(self.train_metrics, loss, label, bg.predictions, weight,
                             valid=ok)
        left, right = bg.left, bg.right
        if self._jit_math is not None:  # XLA returns dense tensors only
            left = [None if g is None else G.dense(g, v) for g, v in zip(left, bg.encoder_vars)]
            right = [None if g is None else G.dense(g, v)
                     for g, v in zip(right, bg.encoder_vars)]
        return loss, bg.predictions, left, right, total

    def _alive(self):
        """False once a step was non-finite under "stop": the rest of the
        call applies nothing and writes nothing (those steps will run again)."""
        if self.on_nonfinite == "stop":
            return self.nonfinite_step < 0
        return tf.constant(True)

    def _due(self, step, every):
        """Whether a summary of cadence `every` is due at `step`."""
        return tf.logical_and(tf.equal(step % every, 0), self._alive())

    def _apply_when(self, ok, pairs):
        """Applies `pairs` where `ok` holds: skipped under tf.cond on one
        device; on several, zeros are applied (see _step_math)."""
        if not pairs:
            return
        if self.strategy.num_replicas_in_sync > 1:
            self.optimizer.apply_gradients([(_zero_unless(ok, g), v) for g, v in pairs])
        else:
            tf.cond(ok, lambda: _apply(self.optimizer, pairs), lambda: tf.constant(False))

    def _total(self, batch):
        (left, right), label, weight = batch
        total = G.total_gradient(self.model, self.loss_fn, left, right, label, weight,
                                 training=True)
        return [G.dense(g, v) for g, v in zip(total, G.encoder_variables(self.model))]

    def _unscaled(self, bg):
        inverse = 1.0 / tf.cast(self.optimizer.dynamic_scale, tf.float32)

        def unscale(grads):
            return [None if g is None else _scale(g, inverse) for g in grads]

        return dataclasses.replace(bg, left=unscale(bg.left), right=unscale(bg.right))

    def _record_nonfinite(self, step, finite, loss, flags, pairs):
        def record():
            which = tf.constant(-1, tf.int64)  # the loss (a model with no weights)
            if flags:
                bad = tf.logical_not(tf.stack(flags))
                first_grad = tf.cast(tf.argmax(tf.cast(bad, tf.int32)), tf.int64)
                index_of = tf.constant([self._var_index.get(id(v), -1) for _, v in pairs],
                                       tf.int64)
                which = tf.where(tf.math.is_finite(loss), tf.gather(index_of, first_grad),
                                 which)
            self.nonfinite_count.assign_add(1)
            first = self.nonfinite_step < 0
            self.nonfinite_step.assign(tf.where(first, step, self.nonfinite_step))
            self.nonfinite_index.assign(tf.where(first, which, self.nonfinite_index))
            return tf.constant(True)

        tf.cond(finite, lambda: tf.constant(False), record)

    def _distributed_eval_step(self, batch):
        preds = self.strategy.run(self._eval_step, args=(batch,))
        return self.strategy.gather(preds, axis=0)

    def _eval_step(self, batch):
        (left, right), label, weight = batch
        pred = self.model((left, right), training=False)
        loss = self.loss_fn(label, pred, sample_weight=weight)
        loss = loss * self.strategy.num_replicas_in_sync  # see _train_step
        self._update_metrics(self.val_metrics, loss, label, pred, weight)
        return tf.reshape(pred, [-1])

    def _update_metrics(self, metrics, loss, label, pred, weight, valid=None):
        # Metric updates sync across replicas, so they cannot sit under
        # tf.cond: a non-finite step is masked by a zero weight instead.
        pred = tf.reshape(pred, [-1])
        if valid is None:
            metrics["loss"].update_state(loss)
            ones = None
        else:
            w = tf.cast(valid, tf.float32)
            loss = tf.where(valid, loss, tf.zeros_like(loss))
            pred = tf.where(valid, pred, tf.zeros_like(pred))
            metrics["loss"].update_state(loss, sample_weight=w)
            ones = tf.fill(tf.shape(pred), w)
        hard = tf.cast(label >= 0.5, tf.float32)
        metrics["accuracy"].update_state(hard, pred, sample_weight=ones)
        metrics["auc"].update_state(hard, pred, sample_weight=ones)

    # -- the Python loop -------------------------------------------------------
    def fit(self, train: data_lib.PairDataset,
            validation: Optional[data_lib.PairDataset] = None, *,
            epochs: int = 1, on_progress: Optional[Callable[[int], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None,
            on_epoch_end: Optional[Callable[[int, dict], None]] = None,
            progress_every: int = 0) -> dict:
        """Trains to `epochs` epochs, resuming from `global_step`.

        An epoch is `train.steps_per_epoch` steps; the data position of step
        s is (s // steps_per_epoch, s % steps_per_epoch), so a restored
        `global_step` resumes at the exact batch.

        Args:
          on_progress: called with the global step after each compiled call
            (checkpoints every N steps hook in here).
          progress_every: if > 0, calls also end at every multiple of it, so
            `on_progress` sees those steps (train.py: --checkpoint_every).
          should_stop: polled after each compiled call (signals); when True,
            `fit` returns early with `history["interrupted"] = True`.
          on_epoch_end: called with (epoch, logs) after validation.

        Returns:
          {"epochs": [logs per epoch], "interrupted": bool}.

        Raises:
          NonFiniteError: a step had a non-finite loss or gradient and
            `on_nonfinite == "stop"`; nothing of that step was applied.
        """
        if not hasattr(self, "_spec"):
            self.set_input_spec(train)
        spe = train.steps_per_epoch
        history = {"epochs": [], "interrupted": False}
        start = int(self.global_step.numpy())
        for epoch in range(start // spe, epochs):
            skip = int(self.global_step.numpy()) - epoch * spe
            for m in self.train_metrics.values():
                m.reset_state()
            bar = keras.utils.Progbar(spe, verbose=self.verbose,
                                      stateful_metrics=["loss", "accuracy", "val_loss",
                                                        "val_accuracy"])
            if self.verbose:
                print(f"Epoch {epoch + 1}/{epochs}" + (f" (resuming at batch {skip})"
                                                       if skip else ""))
            iterator = iter(self.strategy.experimental_distribute_dataset(
                train.index_epoch(epoch, skip)))
            done = skip
            shown = 0.0
            if self.writers is not None:  # the clock of samples_per_second
                self._speed_pairs.assign(0.0)
                self._speed_since.assign(time.time())
            step = int(self.global_step.numpy())
            # The writer is the default for the whole epoch: leaving
            # `as_default()` flushes it, which was done after every call.
            with self._writer(summaries.TRAIN):
                while done < spe:
                    before = step
                    limit = min(self.steps_per_execution, spe - done)
                    if progress_every > 0:
                        limit = min(limit, progress_every - before % progress_every)
                    plan = self.plan(before, limit,
                                     lambda a, b, done=done: train.pairs_in_batches(
                                         done + a, done + b))
                    if self.writers is not None and not self._graph_traced:
                        self._graph_traced = True  # the first compiled call only
                        state = tensorboard_extras.trace_graph(
                            self.writers[summaries.TRAIN], self.train_steps, iterator,
                            plan, train.source, step=before)
                    else:
                        state = self.train_steps(iterator, plan, train.source)
                    # One read per call (a variable's .numpy() costs ~0.1 ms).
                    step, bad = (int(x) for x in state.numpy())
                    self._check_nonfinite(bad)
                    done += step - before
                    if self.verbose and (time.perf_counter() - shown > 0.1 or done >= spe):
                        # Reading the metrics costs a little: a few times a second.
                        shown = time.perf_counter()
                        bar.update(done, values=self._values(self.train_metrics, ""))
                    if on_progress is not None:
                        on_progress(step)
                    if done < spe and should_stop is not None and should_stop():
                        # Mid-epoch: return now. At an epoch's end, validate and
                        # finish the epoch first so no epoch-level summary is lost.
                        history["interrupted"] = True
                        self.flush()
                        return history
            logs = self._values_dict(self.train_metrics, "")
            if validation is not None:
                logs.update(self.evaluate(validation, step=int(self.global_step.numpy()))[0])
            if self.verbose:
                bar.update(done, values=[(k, v) for k, v in logs.items()
                                         if k in ("loss", "accuracy", "val_loss",
                                                  "val_accuracy")], finalize=True)
            logs["epoch"] = epoch + 1
            history["epochs"].append(logs)
            self.flush()
            if on_epoch_end is not None:
                on_epoch_end(epoch, logs)
            if should_stop is not None and should_stop() and epoch + 1 < epochs:
                history["interrupted"] = True
                return history
        return history

    def evaluate(self, data: data_lib.PairDataset, step: Optional[int] = None):
        """Runs the validation metrics over `data` (one pass, in order).

        Returns:
          (logs {"val_loss", "val_accuracy", "val_auc"}, predictions (n,)).
          With `step` and writers, the scalars go to validation/ at `step`.
        """
        if not hasattr(self, "_spec"):
            self.set_input_spec(data)
        for m in self.val_metrics.values():
            m.reset_state()
        preds, labels = [], []
        for batch in data.epoch(0):
            pred = self.eval_step(batch).numpy()
            preds.append(pred)
            # Several replicas each score the whole (undistributed) batch and
            # the gather stacks the copies: repeat the labels to match.
            labels.append(np.resize(batch[1].numpy(), pred.shape))
        logs = self._values_dict(self.val_metrics, "val_")
        preds = np.concatenate(preds) if preds else np.zeros(0, np.float32)
        if step is not None and self.writers is not None:
            with self.writers[summaries.VALIDATION].as_default():
                summaries.epoch_scalars(step, {k[4:]: v for k, v in logs.items()})
            if len(preds):
                tensorboard_extras.pr_curve(self.writers[summaries.VALIDATION],
                                            np.concatenate(labels), preds, step)
        return logs, preds

    def plan(self, step: int, limit: int,
             pairs: Optional[Callable[[int, int], int]] = None) -> tf.Tensor:
        """The next compiled call's segments after global step `step`.

        The call runs `limit` steps (at most `steps_per_execution`) as
        segments that each end at the first step where a summary is due (or
        at the call's end): only a segment's final step carries summary
        code, and the call's length does not depend on the cadences.

        Args:
          step: the global step before the call.
          limit: the call's steps.
          pairs: `pairs(a, b)`, the pairs in the call's steps a..b-1 (for
            samples_per_second); None counts 0.

        Returns:
          int32 (2, steps_per_execution), a fixed shape (no retracing):
          row 0 each segment's steps, then zeros; row 1 each segment's
          pairs.
        """
        if limit > self.steps_per_execution:  # (a wider plan would retrace)
            raise ValueError(f"limit {limit} > steps_per_execution "
                             f"{self.steps_per_execution}")
        plan = np.zeros((2, self.steps_per_execution), np.int32)
        done = 0
        for i in range(plan.shape[1]):
            if done == limit:
                break
            n = self.call_length(step + done, limit - done)
            plan[:, i] = n, pairs(done, done + n) if pairs is not None else 0
            done += n
        return tf.constant(plan)

    def call_length(self, step: int, limit: int) -> int:
        """Steps in the next segment after global step `step`: at most
        `limit`, and ending at the first step where a summary is due, so
        that summaries happen on a segment's final step only."""
        if self.writers is None and not self._multi_worker:
            return limit
        # Every worker of a multi-worker run must run the same segments (the
        # plain and the final step are different collective ops), so a
        # worker without writers follows the chief's cadences.
        cadences = (self.log_every,)
        if self._diagnostics:
            cadences += (self.histogram_every, self.grad_check_every)
        # The next multiple of each cadence is `every - step % every` away.
        return min(limit, *(every - step % every for every in cadences))

    # -- helpers -----------------------------------------------------------------
    def _writer(self, name):
        if self.writers is None:
            return tf.summary.record_if(False)
        return self.writers[name].as_default()

    def _check_nonfinite(self, bad: int):
        """Raises `NonFiniteError` if `bad` (`nonfinite_step`) is a step and
        the policy is "stop"."""
        if bad < 0 or self.on_nonfinite != "stop":
            return
        index = int(self.nonfinite_index.numpy())
        what = "loss" if index < 0 else f"gradient of {self._variables[index].path}"
        # The call ran its remaining steps without applying them: the state is
        # that of the step before `bad`, and the count stops at `bad`.
        self.global_step.assign(bad)
        self.flush()
        raise NonFiniteError(bad, what)

    def flush(self):
        if self.writers is not None:
            for w in self.writers.values():
                w.flush()

    @staticmethod
    def _values(metrics, prefix):
        return [(prefix + k, float(m.result())) for k, m in metrics.items() if k != "auc"]

    @staticmethod
    def _values_dict(metrics, prefix):
        return {prefix + k: float(m.result()) for k, m in metrics.items()}


def _metrics(prefix):
    return {"loss": keras.metrics.Mean(name=prefix + "loss"),
            "accuracy": keras.metrics.BinaryAccuracy(name=prefix + "accuracy"),
            "auc": keras.metrics.AUC(name=prefix + "auc")}


def _apply(optimizer, pairs):
    optimizer.apply_gradients(pairs)
    return tf.constant(True)


def _zero_unless(ok, g):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(tf.where(ok, g.values, tf.zeros_like(g.values)),
                                g.indices, g.dense_shape)
    return tf.where(ok, g, tf.zeros_like(g))


def _values(g):
    return g.values if isinstance(g, tf.IndexedSlices) else g


def _scale(g, factor):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * factor, g.indices, g.dense_shape)
    return g * factor
