"""The train step: math and update only (Orbit's `train_step`).

`TrainStep.math(batch)` is one step on one replica: every branch (left and
right; or anchor, positive and negative) through identity copies of the
shared weights (`gradients.branch_gradients`, ONE backward pass), the
metrics, the non-finite bookkeeping and the update with the branches' sum.
It writes no summary. `loop.StepLoop` runs `n` of them in one compiled call;
`readout` packs what the call returns.

The views (what `diagnostics` writes) are computed in the same step, before
its update, when the step is a view step: its log part (loss, accuracy,
branch norms and cosines), on check steps an independent total gradient of
its batch (a plain forward and backward pass) and the sum check, on
histogram steps the gradients' and the weights' histograms (the weights
the step's gradients were taken at; `views.ViewLayout`). They are kept in this replica's slot of
`view_rows` (and `histogram_rows`): a few numbers, never a gradient's copy.
Each part sits under a `tf.cond` that a plain step does not take, so one
trace serves plain and view steps alike.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from siamese_research import data as data_lib
from siamese_research.core import gpu
from siamese_research.core import gradients as G
from siamese_research.metrics import streaming as metrics_lib
from siamese_research.train import views as views_lib


class NonFiniteError(RuntimeError):
    """Raised by `Trainer.fit` when a step produced a non-finite loss or
    gradient under `on_nonfinite="stop"`."""

    def __init__(self, step: int, what: str):
        self.step, self.what = step, what
        super().__init__(f"non-finite {what} at step {step}")


class TrainStep:
    """One step's math per replica, and its state (bookkeeping, views).

    Args:
      model: a built `SiameseModel`, created in `strategy.scope()`.
      loss_fn: a Keras loss, `loss_fn(y, p, sample_weight)`.
      optimizer: a Keras optimizer (built here, eagerly, in the scope).
      strategy: a `tf.distribute.Strategy`.
      on_nonfinite: "stop" (nothing of the bad step, nor of any later step
        of its call, is applied) or "skip" (drop that step's update, count it).
      jit_compile: XLA-compile the per-batch math (one device, no cuDNN
        RNN: `gpu.check_jit` refuses the rest).
      scale_loss: mixed precision: `optimizer.scale_loss`.
      views: whether a step can keep its views: True (the default
        `views.ViewLayout` of the model), a `ViewLayout`, or False; check:
        whether it can take the independent total gradient. Decided here,
        once: without them the compiled call holds no code for them.
      view_slots, histogram_slots: how many view steps (histogram steps)
        one compiled call can hold.
      mini_batch_size: > 0: the branch pass and the check's total are the
        cached (GradCache) pass in chunks of this many rows
        (`gradients.cached_pass`).
    """

    def __init__(self, model, *, loss_fn, optimizer, strategy,
                 on_nonfinite: str = "stop", jit_compile: bool = False,
                 scale_loss: Optional[Callable] = None, views=True,
                 check: bool = True, view_slots: int = 1, histogram_slots: int = 1,
                 mini_batch_size: int = 0):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.mini_batch_size = mini_batch_size
        self.strategy = strategy
        self.on_nonfinite, self.scale_loss = on_nonfinite, scale_loss
        # Bookkeeping variables are SyncOnRead: each replica updates its own
        # copy inside the step (no cross-replica sync, so they may be updated
        # under tf.cond); a read outside takes the first replica's, which
        # every replica agrees on.
        with strategy.scope():
            self.global_step = local_variable(0, tf.int64, "global_step")
            # Non-finite bookkeeping: how many, the first offending step and
            # which gradient (index into model.trainable_variables; -1 = loss).
            self.nonfinite_count = local_variable(0, tf.int64)
            self.nonfinite_step = local_variable(-1, tf.int64)
            self.nonfinite_index = local_variable(-2, tf.int64)
            self.metrics = metrics_lib.pair_metrics("")
            if views is True:
                views = views_lib.ViewLayout(model)
            self.layout = views or None
            if self.layout is not None:
                self.layout.bind(self.metrics)  # the row holds their state
            self.branches = tuple(model.branches)
            if self.layout is not None:
                # This replica's slots: a row per view step, a histogram row
                # per histogram step of a call (`views.ViewLayout`).
                self.view_rows = local_variable(
                    tf.zeros([view_slots, self.layout.row_size], tf.float64), tf.float64)
                self.histogram_rows = local_variable(
                    tf.zeros([histogram_slots, self.layout.histograms,
                              self.layout.buckets + 2], tf.float64), tf.float64)
            # keras #23085 (Keras 3.15): under a tf.distribute strategy the
            # first traced apply_gradients fails unless the optimizer's slots
            # exist already, so build it eagerly, here, in the scope.
            optimizer.build(model.trainable_variables)
        self.variables = list(model.trainable_variables)
        self._var_index = {id(v): i for i, v in enumerate(self.variables)}
        # Under a Mirrored strategy apply_gradients makes a merge_call, which
        # cannot sit in a replica's tf.cond, even with one replica.
        self._replicated = (strategy.num_replicas_in_sync > 1 or isinstance(
            strategy, (tf.distribute.MirroredStrategy,
                       tf.distribute.MultiWorkerMirroredStrategy)))
        self._math, self._jit = self._step_math, jit_compile
        self.with_views = self.layout is not None
        self.with_check = self.with_views and self.layout.branch_views and check
        gpu.check_jit(jit_compile, gpu.gpu_visible(), model, strategy)
        if jit_compile:
            # XLA compiles the per-batch math; it recompiles for every new
            # (batch, time) shape, so it pays off for fixed-length data.
            self._math = tf.function(self._step_math, jit_compile=True, autograph=False)
        # The branch pass is a function of its own inside the step (as
        # Keras's trainer nests its step function), so the step's trace
        # leaves one step's forward and branch-split backward as a graph of
        # its own: the run graph TensorBoard shows (`branch_graph`), with no
        # trace of its own.
        self.branch_pass = tf.function(self._branch_tensors, autograph=False)
        self._branch_graph = None

    def replica_step(self, item, source=None, code=0, slot=0, histogram_slot=0):
        """One step of the compiled call: `item` a batch (or row indices
        gathered from `source`); `code` what is due (`views.code`), kept in
        row `slot` (and histogram row `histogram_slot`)."""
        if source is not None:
            with tf.device("/cpu:0"):  # where the arrays are: no copy of them
                item = data_lib.gather_batch(source[0], item, source[1])
        bits = [tf.not_equal(tf.bitwise.bitwise_and(code, b), 0)
                for b in (views_lib.LOG, views_lib.CHECK, views_lib.HISTOGRAMS)]
        self.math(item, view=bits[0], check=bits[1], histograms=bits[2], slot=slot,
                  histogram_slot=histogram_slot)

    # -- one step's math --------------------------------------------------------
    def math(self, batch, *, view=False, check=False, histograms=False, slot=0,
             histogram_slot=0):
        """Forward, branch gradients, metrics, non-finite bookkeeping, views,
        update: with `view` the step keeps its log views in row `slot`, with
        `check` its total gradient's and with `histograms` its histograms
        (in `histogram_slot`) too (bools, or bool tensors in the loop)."""
        label = batch[1]
        step = self.global_step + 1
        if self.with_check:
            # The total is a plain forward and backward through the real
            # variables, before the update, from the same non-trainable state
            # (dropout seeds) the branch pass starts from: the same function.
            state = [tf.identity(v.value) for v in self.model.non_trainable_variables]
        out = self._math(batch)
        self._record_nonfinite(step, out["finite"], out["loss"], out["flags"])
        self.global_step.assign_add(1)
        # Keras 3 losses divide by num_replicas_in_sync (so the all-reduced sum
        # of gradients is the global mean); metrics and logs want the replica's
        # own mean loss back.
        loss = out["loss"] * self.strategy.num_replicas_in_sync
        label, scores = metrics_lib.pairs_of(self.model, label, out["predictions"])
        metrics_lib.update(self.metrics, loss, label, scores, valid=out["ok"])
        if self.with_views:
            total = (lambda: self._total(batch, state)) if self.with_check else None
            predictions = out["predictions"]
            miner = ((lambda: self.loss_fn.miner_stats(batch[1], predictions))
                     if self.layout.miner_tags else None)
            branches = out["branches"]
            if self.scale_loss is not None:
                # The views are of the unscaled loss (the update takes the
                # scaled gradients: the optimizer unscales them, and may
                # change the scale). Unscaled in the view's function only.
                scale = tf.convert_to_tensor(self.optimizer.dynamic_scale)
                unscaled = lambda: G.unscaled_branches(branches, scale)  # noqa: E731
            else:
                unscaled = lambda: branches  # noqa: E731
            cond(_any(view, check, histograms),
                 lambda: self._keep_views(loss, unscaled(), total, view, check,
                                          histograms, slot, histogram_slot, miner),
                 _nothing,
                 inline=False)
        self._apply_when(out["apply"], list(zip(out["grads"], self._flag_vars)))

    def _keep_views(self, loss, branches, total, view, check, histograms, slot,
                    histogram_slot, miner=None):
        """Computes what is due of a view step's views and keeps them."""
        layout = self.layout
        f64 = tf.float64

        def log():
            return layout.log_values(
                loss=loss, learning_rate=self.optimizer.learning_rate,
                nonfinite=self.nonfinite_count, metrics=self.metrics, branches=branches,
                miner=miner() if miner is not None else None)

        row = [cond(view, log, lambda: tf.zeros([layout.log_size], f64))]
        if total is not None:
            n = len(layout.gradient_histograms)

            def checked():
                grads = total()
                by_name = dict(zip(layout.branches, branches), total=grads)
                return (layout.check_values(grads, branches),
                        cond(histograms, lambda: layout.gradient_histogram_values(by_name),
                             lambda: tf.zeros([n, layout.buckets + 2], f64)))

            part, hist = cond(check, checked, lambda: (
                tf.zeros([len(layout.check_tags)], f64),
                tf.zeros([n, layout.buckets + 2], f64)))
            row.append(part)
            if n:
                cond(histograms, lambda: self._keep_histograms(histogram_slot, 0, hist),
                     _nothing)
        else:  # (no check: its part stays zero, and is never written)
            row.append(tf.zeros([len(layout.check_tags)], f64))
        if layout.weight_tags:
            # The weights this step's gradients were taken at (before its
            # update): in this one cond, so that a plain step runs no other.
            cond(histograms, lambda: self._keep_histograms(
                histogram_slot, len(layout.gradient_histograms),
                layout.weight_histogram_values()), _nothing)
        row = tf.concat(row, 0)
        self.view_rows.assign(tf.tensor_scatter_nd_update(
            self.view_rows, tf.reshape(tf.cast(slot, tf.int32), [1, 1]), row[None]))
        return tf.constant(True)

    def _keep_histograms(self, histogram_slot, start, values):
        """Puts `values` ([m, buckets + 2]) at rows start.. of histogram row
        `histogram_slot`."""
        m = values.shape[0]
        index = tf.stack([tf.fill([m], tf.cast(histogram_slot, tf.int32)),
                          tf.range(start, start + m)], axis=1)
        self.histogram_rows.assign(tf.tensor_scatter_nd_update(
            self.histogram_rows, index, values))
        return tf.constant(True)

    def _step_math(self, batch):
        """The part of a step XLA may compile: the gradients and the
        finiteness flags; no update, no summaries, no bookkeeping."""
        inputs, label, weight = batch
        # (Eagerly there is no graph to keep: the pass runs as it is.)
        branch_pass = (self._branch_tensors if tf.executing_eagerly()
                       else self.branch_pass)
        loss, predictions, branches, head = branch_pass(inputs, label, weight)
        bg = G.BranchGradients(
            loss=loss, predictions=predictions, names=self.branches,
            encoder_vars=G.encoder_variables(self.model),
            head_vars=G.head_variables(self.model),
            branches=[list(b) for b in branches], head=list(head))
        pairs = bg.grads_and_vars()
        # Which variable each flag (and gradient) is about (the same at
        # every trace).
        self._flag_vars = [v for _, v in pairs]
        grads = [g for g, _ in pairs]
        flags = [tf.reduce_all(tf.math.is_finite(_values(g))) for g in grads]
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
        alive = self.alive()
        ok = tf.logical_and(finite, alive)
        branches = bg.branches
        if self._jit:  # XLA returns dense tensors only
            branches = [[G.dense(g, v) for g, v in zip(grads_, bg.encoder_vars)]
                        for grads_ in branches]
            grads = [G.dense(g, v) for g, v in zip(grads, self._flag_vars)]
        return {"loss": bg.loss, "predictions": bg.predictions, "finite": finite,
                "ok": ok, "flags": flags, "branches": branches, "grads": grads,
                "apply": alive if self.scale_loss is not None else ok}

    def _branch_tensors(self, inputs, label, weight):
        """`gradients.branch_gradients` as a function's outputs: the loss,
        the predictions, each branch's encoder gradients and the head's."""
        if not tf.executing_eagerly():
            self._branch_graph = tf.compat.v1.get_default_graph()  # (at trace time)
        bg = G.branch_gradients(self.model, self.loss_fn, inputs, label, weight,
                                training=True, scale_loss=self.scale_loss,
                                mini_batch_size=self.mini_batch_size)
        return bg.loss, bg.predictions, bg.branches, bg.head

    def branch_graph(self, element_spec):
        """One step's forward and branch-split backward pass as a graph: as
        the train step traced it, or (no step traced in this process) the
        same function traced now, for batches of `element_spec`."""
        if self._branch_graph is None:
            self.branch_pass.get_concrete_function(*element_spec)
        return self._branch_graph

    def _total(self, batch, state):
        """The check's total gradient of the encoder (sparse stays sparse)."""
        inputs, label, weight = batch
        return G.total_gradient(self.model, self.loss_fn, inputs, label, weight,
                                training=True, state=state,
                                mini_batch_size=self.mini_batch_size)

    def alive(self):
        """False once a step was non-finite under "stop": the rest of the
        call applies nothing and writes nothing (those steps will run again)."""
        if self.on_nonfinite == "stop":
            return self.nonfinite_step < 0
        return tf.constant(True)

    def _apply_when(self, ok, pairs):
        """Applies `pairs` where `ok` holds, else nothing at all (no zero
        update: Adam or momentum would still move the weights on one)."""
        if not pairs:
            return
        if not self._replicated:
            tf.cond(ok, lambda: _apply(self.optimizer, pairs), lambda: tf.constant(False))
            return

        # A mirrored update's merge_call cannot sit in a replica's tf.cond:
        # decide in cross-replica context, as Keras's LossScaleOptimizer does.
        # `ok` was all-reduced, so every replica (and worker) agrees.
        def decide(strategy, ok, pairs):
            def apply():
                strategy.extended.call_for_each_replica(_apply,
                                                        args=(self.optimizer, pairs))
                return tf.constant(True)

            first = strategy.experimental_local_results(ok)[0]
            tf.cond(first, apply, lambda: tf.constant(False))

        tf.distribute.get_replica_context().merge_call(decide, args=(ok, pairs))

    def _record_nonfinite(self, step, finite, loss, flags):
        def record():
            which = tf.constant(-1, tf.int64)  # the loss (a model with no weights)
            if flags:
                bad = tf.logical_not(tf.stack(flags))
                first_grad = tf.cast(tf.argmax(tf.cast(bad, tf.int32)), tf.int64)
                index_of = tf.constant([self._var_index.get(id(v), -1)
                                        for v in self._flag_vars], tf.int64)
                which = tf.where(tf.math.is_finite(loss), tf.gather(index_of, first_grad),
                                 which)
            self.nonfinite_count.assign_add(1)
            first = self.nonfinite_step < 0
            self.nonfinite_step.assign(tf.where(first, step, self.nonfinite_step))
            self.nonfinite_index.assign(tf.where(first, which, self.nonfinite_index))
            return tf.constant(True)

        tf.cond(finite, lambda: tf.constant(False), record)

    def nonfinite_what(self) -> str:
        index = int(self.nonfinite_index.numpy())
        return "loss" if index < 0 else f"gradient of {self.variables[index].path}"


def cond(pred, true_fn, false_fn, *, inline: bool = True):
    """`true_fn()` or `false_fn()`: a Python `if` for a Python bool (eager
    diagnostics), a `tf.cond` for a tensor (compiled ones).

    `inline=False` puts `true_fn` in a function of its own, called from
    the `tf.cond` and never inlined (`_noinline`). TensorFlow lowers a
    `tf.cond` to Switch and Merge ops, and visits every op of the branch not
    taken, as a dead op, at every step: the views' ops (hundreds) under
    every plain step cost C (no views) a third of its speed; an un-lowered
    `If` still cost 9%, its call of the empty branch; a lowered cond around
    one call op, 5% (`benchmarks/bench.py --breakdown`, "B, no view step",
    2026-12-03).
    """
    if isinstance(pred, bool):
        return true_fn() if pred else false_fn()
    if inline:
        return tf.cond(pred, true_fn, false_fn)
    call = tf.function(true_fn, autograph=False,
                       experimental_attributes={"_noinline": True})
    return tf.cond(pred, call, false_fn)


def _nothing():
    return tf.constant(False)


def _any(*flags):
    """Whether any flag is set: a Python bool for Python bools."""
    if all(isinstance(f, bool) for f in flags):
        return any(flags)
    return tf.reduce_any(tf.stack([tf.convert_to_tensor(f) for f in flags]))


def local_variable(value, dtype, name=None):
    """A per-replica bookkeeping variable (see `TrainStep.__init__`)."""
    return tf.Variable(value, dtype=dtype, name=name, trainable=False,
                       synchronization=tf.VariableSynchronization.ON_READ,
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def _apply(optimizer, pairs):
    optimizer.apply_gradients(pairs)
    return tf.constant(True)


def _values(g):
    return g.values if isinstance(g, tf.IndexedSlices) else g


__all__ = ["TrainStep", "NonFiniteError", "cond", "local_variable"]
