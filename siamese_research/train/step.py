"""The train step: math and update only (Orbit's `train_step`).

`TrainStep.math(batch)` is one step on one replica: every branch (left and
right; or anchor, positive and negative) through identity copies of the
shared weights (`gradients.branch_gradients`, ONE backward pass), the update
with the branches' sum, the metrics and the non-finite bookkeeping. It
writes no summary. `loop.StepLoop` runs `n` of them in one compiled call;
`readout` packs what the call returns.

The views (what `diagnostics` shows) come out of the same call: when `view`
is set, its last step also stores the loss and each branch's gradients in
`views` variables, and when `check` is set, an independent total
gradient of that step's batch (a plain forward and backward pass, before
the update). Both sit under a `tf.cond` that a plain step does not take, so
the one trace serves plain and view steps alike, and a view step costs a
copy of its gradients (and, checked, one more pass).
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from siamese_research import data as data_lib
from siamese_research.core import gpu
from siamese_research.core import gradients as G
from siamese_research.metrics import streaming as metrics_lib


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
      views: whether a step can store its views (loss, branch gradients);
        check: whether it can take the independent total gradient. Decided
        here, once: without them the compiled call holds no code for them.
    """

    def __init__(self, model, *, loss_fn, optimizer, strategy,
                 on_nonfinite: str = "stop", jit_compile: bool = False,
                 scale_loss: Optional[Callable] = None, views: bool = True,
                 check: bool = True):
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
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
            encoder = G.encoder_variables(model)
            self.views = {"loss": local_variable(0.0, tf.float32)}
            self.branches = tuple(model.branches)
            for branch in self.branches + ("total",):
                self.views[branch] = [local_variable(tf.zeros(v.shape, tf.float32),
                                                     tf.float32) for v in encoder]
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
        self.with_views, self.with_check = views, views and check
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

    def replica_step(self, item, source=None, view=False, check=False):
        if source is not None:
            with tf.device("/cpu:0"):  # where the arrays are: no copy of them
                item = data_lib.gather_batch(source[0], item, source[1])
        self.math(item, view=view, check=check)

    # -- one step's math --------------------------------------------------------
    def math(self, batch, *, view=False, check=False):
        """Forward, branch gradients, update, metrics, non-finite bookkeeping;
        with `view` the step's views stored, with `check` its total gradient
        (bools or bool tensors)."""
        label = batch[1]
        step = self.global_step + 1
        if self.with_check:
            # The total is a plain forward and backward through the real
            # variables, before the update, from the same non-trainable state
            # (dropout seeds) the branch pass starts from: the same function.
            state = [tf.identity(v.value) for v in self.model.non_trainable_variables]
            cond(check, lambda: self._store("total", self._total(batch, state)), _nothing)
        out = self._math(batch)
        self._record_nonfinite(step, out["finite"], out["loss"], out["flags"])
        self.global_step.assign_add(1)
        # Keras 3 losses divide by num_replicas_in_sync (so the all-reduced sum
        # of gradients is the global mean); metrics and logs want the replica's
        # own mean loss back.
        loss = out["loss"] * self.strategy.num_replicas_in_sync
        label, scores = metrics_lib.pairs_of(self.model, label, out["predictions"])
        metrics_lib.update(self.metrics, loss, label, scores, valid=out["ok"])

        def store_views():
            self.views["loss"].assign(tf.cast(loss, tf.float32))
            for name, grads in zip(self.branches, out["branches"]):
                self._store(name, grads)
            return tf.constant(True)

        if self.with_views:
            cond(view, store_views, _nothing)

    def _store(self, branch, grads):
        for var, g, v in zip(self.views[branch], grads, G.encoder_variables(self.model)):
            var.assign(tf.cast(G.dense(g, v), tf.float32))
        return tf.constant(True)

    def _step_math(self, batch):
        """The part of a step XLA may compile: no summaries, no bookkeeping."""
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
        # Which variable each flag is about (the same at every trace).
        self._flag_vars = [v for _, v in pairs]
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
        alive = self.alive()
        ok = tf.logical_and(finite, alive)
        if self.scale_loss is not None:
            # The scale these gradients were taken at: the update may change it.
            scale = tf.identity(tf.convert_to_tensor(self.optimizer.dynamic_scale))
        self._apply_when(alive if self.scale_loss is not None else ok, pairs)
        if self.scale_loss is not None:
            bg = G.unscaled(bg, scale)
        branches = bg.branches
        if self._jit:  # XLA returns dense tensors only
            branches = [[G.dense(g, v) for g, v in zip(grads, bg.encoder_vars)]
                        for grads in branches]
        return {"loss": bg.loss, "predictions": bg.predictions, "finite": finite,
                "ok": ok, "flags": flags, "branches": branches}

    def _branch_tensors(self, inputs, label, weight):
        """`gradients.branch_gradients` as a function's outputs: the loss,
        the predictions, each branch's encoder gradients and the head's."""
        if not tf.executing_eagerly():
            self._branch_graph = tf.compat.v1.get_default_graph()  # (at trace time)
        bg = G.branch_gradients(self.model, self.loss_fn, inputs, label, weight,
                                training=True, scale_loss=self.scale_loss)
        return bg.loss, bg.predictions, bg.branches, bg.head

    def branch_graph(self, element_spec):
        """One step's forward and branch-split backward pass as a graph: as
        the train step traced it, or (no step traced in this process) the
        same function traced now, for batches of `element_spec`."""
        if self._branch_graph is None:
            self.branch_pass.get_concrete_function(*element_spec)
        return self._branch_graph

    def _total(self, batch, state):
        inputs, label, weight = batch
        total = G.total_gradient(self.model, self.loss_fn, inputs, label, weight,
                                 training=True, state=state)
        return [G.dense(g, v) for g, v in zip(total, G.encoder_variables(self.model))]

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


def cond(pred, true_fn, false_fn):
    """`true_fn()` or `false_fn()`: a Python `if` for a Python bool (eager
    diagnostics), a `tf.cond` for a tensor (compiled ones)."""
    if isinstance(pred, bool):
        return true_fn() if pred else false_fn()
    return tf.cond(pred, true_fn, false_fn)


def _nothing():
    return tf.constant(False)


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
