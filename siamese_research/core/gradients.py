"""Per-branch gradients of the shared encoder, in one backward pass.

A tied Siamese model calls one encoder on each of its k inputs (two for a
pair, three for a triplet), so the gradient on its weights W is a sum over
the k calls. To see the terms, each call reads W through its own copy:
`W_b = identity(W)` for branch b, via Keras 3's `stateless_call`. Then
`tape.gradient(loss, [W_1, ..., W_k])` returns exactly each call's
contribution, and dL/dW = g_1 + ... + g_k, from ONE backward pass (the same
cost as a plain `tape.gradient`).

`total_gradient` is the independent check: a plain forward pass through the
real variables and `tape.gradient(loss, W)`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from siamese_research.core.model import (SiameseModel, encoder_variables,  # noqa: F401
                                    head_variables)


@dataclasses.dataclass
class BranchGradients:
    """The result of one forward/backward pass, split by branch.

    `branches[b][i]` is the gradient on `encoder_vars[i]` through the call
    named `names[b]` (None where that call does not use the variable:
    untied towers); `left` and `right` are the first two. `head[i]` is the
    gradient on `head_vars[i]`.
    """

    loss: tf.Tensor
    predictions: tf.Tensor
    encoder_vars: list
    head_vars: list
    names: tuple
    branches: List[List[Optional[tf.Tensor]]]
    head: List[Optional[tf.Tensor]]

    @property
    def left(self) -> list:
        return self.branches[0]

    @property
    def right(self) -> list:
        return self.branches[1]

    def by_name(self) -> Dict[str, list]:
        return dict(zip(self.names, self.branches))

    def combined(self) -> list:
        """The branches' sum per encoder variable (sparse stays sparse)."""
        return [functools.reduce(add, grads) for grads in zip(*self.branches)]

    def grads_and_vars(self) -> list:
        pairs = list(zip(self.combined(), self.encoder_vars))
        pairs += list(zip(self.head, self.head_vars))
        return [(g, v) for g, v in pairs if g is not None]


def add(a, b):
    """a + b for gradients that may be None or `tf.IndexedSlices`."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, tf.IndexedSlices) or isinstance(b, tf.IndexedSlices):
        if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
            # Concatenating keeps the sum sparse; duplicate indices add up
            # when the optimizer scatters the slices.
            return tf.IndexedSlices(tf.concat([a.values, b.values], 0),
                                    tf.concat([a.indices, b.indices], 0),
                                    a.dense_shape)
        return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)
    return a + b


def dense(g, like):
    """A dense tensor for gradient `g` of variable `like` (zeros for None)."""
    if g is None:
        return tf.zeros(like.shape, like.dtype)
    return tf.convert_to_tensor(g)


def branch_gradients(model: SiameseModel, loss_fn, inputs: Sequence, label,
                     sample_weight=None, *, training: bool = True,
                     scale_loss=None, mini_batch_size: int = 0) -> BranchGradients:
    """Forward every branch through identity copies of the tower weights and
    return the loss, predictions and per-branch gradients.

    Args:
      model: a built `SiameseModel` (tied or untied).
      loss_fn: `loss_fn(y_true, y_pred, sample_weight)`, a Keras loss.
      inputs: one input batch per branch (`model.branches`): (left, right),
        or (anchor, positive[, negative]); lengths may differ.
      label: (batch,) labels in [0, 1].
      sample_weight: optional (batch,) weights.
      training: passed to the layers.
      scale_loss: optional `f(loss) -> scaled loss` (mixed-precision loss
        scaling); the gradients are then of the scaled loss.
      mini_batch_size: > 0: the cached (GradCache) pass, `cached_pass`, in
        chunks of at most this many rows.
    """
    enc_vars = encoder_variables(model)
    head_vars = head_variables(model)
    towers = model.towers
    _check_inputs(model, inputs)
    if mini_batch_size:
        return cached_pass(model, loss_fn, inputs, label, sample_weight,
                           training=training, scale_loss=scale_loss,
                           mini_batch_size=mini_batch_size)
    with tf.GradientTape() as tape:
        copies, encodings = [], []
        tower_nt = {}
        for tower, x in zip(towers, inputs):
            w = [tf.identity(v) for v in tower.trainable_variables]
            tape.watch(w)
            nt = tower_nt.get(id(tower),
                              [v.value for v in tower.non_trainable_variables])
            h, nt = tower.stateless_call(w, nt, x, training=training)
            tower_nt[id(tower)] = nt
            copies.append(w)
            encodings.append(h)
        predictions = model.objective_output(encodings, training=training)
        loss = loss_fn(label, predictions, sample_weight=sample_weight)
        target = scale_loss(loss) if scale_loss is not None else loss
    *g_branches, g_head = tape.gradient(target, [*copies, head_vars])
    # State a call updates (e.g. a dropout seed) is written back once per step.
    for tower in dict.fromkeys(towers):
        for var, value in zip(tower.non_trainable_variables, tower_nt[id(tower)]):
            var.assign(value)
    branches = []
    for tower, grads in zip(towers, g_branches):
        mine = _by_var(tower.trainable_variables, grads)
        branches.append([mine.get(id(v)) for v in enc_vars])
    return BranchGradients(
        loss=loss, predictions=predictions, encoder_vars=enc_vars,
        head_vars=head_vars, names=model.branches, branches=branches,
        head=list(g_head))


def _check_inputs(model, inputs) -> None:
    if len(inputs) != len(model.branches):
        raise ValueError(f"{len(inputs)} inputs for a model of {len(model.branches)} "
                         f"branches ({', '.join(model.branches)})")


def _by_var(variables, grads) -> dict:
    return {id(v): g for v, g in zip(variables, grads)}


def total_gradient(model: SiameseModel, loss_fn, inputs: Sequence, label,
                   sample_weight=None, *, training: bool = True, state=None,
                   mini_batch_size: int = 0) -> list:
    """dL/dW on the encoder variables by a plain forward pass (the check).

    With `state` (values of `model.non_trainable_variables`, e.g. dropout
    seeds, as they were before the branch pass), the pass runs from that
    state and leaves the model's own untouched: the check then
    differentiates the very function the branch pass did, and costs the
    step's randomness nothing.

    With `mini_batch_size` it is the cached pass's total (`cached_pass`,
    `split=False`): each chunk's backward through the real variables, for
    all the calls at once, at the memory of a chunk.
    """
    enc_vars = encoder_variables(model)
    _check_inputs(model, inputs)
    if mini_batch_size:
        return cached_pass(model, loss_fn, inputs, label, sample_weight,
                           training=training, state=state, split=False,
                           mini_batch_size=mini_batch_size)
    if state is None:
        state = [v.value for v in model.non_trainable_variables]
    state = dict(zip([id(v) for v in model.non_trainable_variables], state))
    with tf.GradientTape() as tape:
        # Each tower runs on the real variables' values (reads the tape
        # watches) from the given state; what it updates is dropped.
        # A tied tower's second call starts from the state its first left,
        # as in the branch pass (a dropout seed drawn anew per call).
        encodings, tower_nt = [], {}
        for tower, x in zip(model.towers, inputs):
            nt = tower_nt.get(id(tower),
                              [state[id(v)] for v in tower.non_trainable_variables])
            h, tower_nt[id(tower)] = tower.stateless_call(
                [v.value for v in tower.trainable_variables], nt, x, training=training)
            encodings.append(h)
        predictions = model.objective_output(encodings, training=training)
        loss = loss_fn(label, predictions, sample_weight=sample_weight)
    return tape.gradient(loss, enc_vars)


def cached_pass(model: SiameseModel, loss_fn, inputs: Sequence, label,
                sample_weight=None, *, training: bool = True, scale_loss=None,
                state=None, split: bool = True, mini_batch_size: int):
    """The GradCache pass (Gao et al. 2021; sentence-transformers'
    CachedMultipleNegativesRankingLoss) of a loss over the whole batch's
    encodings, at the memory of `mini_batch_size` rows:

    1. every call's encodings, chunk by chunk, with no tape (no activations
       kept), each chunk from the layer state (a dropout seed) the previous
       one left;
    2. the loss and its gradient with respect to the encodings (and the
       head), over the whole batch: the in-batch negatives see all B rows;
    3. each chunk again, from the state it started from in 1 (the same
       function), under a tape, and ONE backward pass per chunk for all the
       calls, with the encodings' gradients of 2 as output gradients.

    The chunks after the first run in a `tf.while_loop` of one iteration at
    a time, so a step holds one chunk's activations, and its trace holds
    the chunk's graph twice (the first chunk, then the loop's body) whatever
    the batch. The first chunk, outside the loop, fixes what the loop
    carries: the encodings' shape, which gradients are sparse.

    With `split` (the train step), each call reads the weights through its
    own copies and the result is a `BranchGradients`: the calls' gradients
    summed over the chunks, the same as `branch_gradients`' at the same
    batch up to float32 rounding (and the same random draws only without
    dropout or augmentation: each chunk draws its own). Without `split`
    (the check), the encoder's total gradient through the real variables,
    from `state` (see `total_gradient`).
    """
    enc_vars, head_vars = encoder_variables(model), head_variables(model)
    towers = model.towers
    if state is None:
        state = [v.value for v in model.non_trainable_variables]
    state = dict(zip([id(v) for v in model.non_trainable_variables], state))
    m = int(mini_batch_size)
    count = (tf.shape(inputs[0])[0] + m - 1) // m

    def rows(x, c):
        return x[c * m:(c + 1) * m]

    # 1. The encodings, chunk by chunk; starts[b][k] holds, at row c, the
    # k-th state value chunk c of call b starts from.
    encodings, starts, tower_nt = [], [], {}
    for tower, x in zip(towers, inputs):
        nt = tower_nt.get(id(tower),
                          [state[id(v)] for v in tower.non_trainable_variables])
        values = [v.value for v in tower.trainable_variables]
        kept = [tf.TensorArray(s.dtype, size=count, element_shape=s.shape).write(0, s)
                for s in nt]
        h, nt = tower.stateless_call(values, nt, rows(x, 0), training=training)
        out = tf.TensorArray(h.dtype, size=count, infer_shape=False,
                             element_shape=tf.TensorShape([None]).concatenate(h.shape[1:]))

        def encode(c, nt, out, kept, tower=tower, x=x, values=values):
            kept = [k.write(c, s) for k, s in zip(kept, nt)]
            h, nt = tower.stateless_call(values, list(nt), rows(x, c), training=training)
            return c + 1, list(nt), out.write(c, tf.stop_gradient(h)), kept

        _, nt, out, kept = tf.while_loop(
            lambda c, *_: c < count, encode,
            (tf.constant(1), list(nt), out.write(0, tf.stop_gradient(h)), kept),
            parallel_iterations=1)
        tower_nt[id(tower)] = nt
        encodings.append(out.concat())
        starts.append(kept)
    # 2. The loss, and its gradient with respect to each call's encodings.
    with tf.GradientTape() as tape:
        tape.watch(encodings)
        predictions = model.objective_output(encodings, training=training)
        loss = loss_fn(label, predictions, sample_weight=sample_weight)
        target = scale_loss(loss) if scale_loss is not None else loss
    *g_encodings, g_head = tape.gradient(target, [*encodings, head_vars])

    # 3. Each chunk again under a tape: one backward pass for all the calls.
    def chunk_gradients(c):
        """[call][encoder variable] gradients of chunk c (one list, the
        total, without `split`)."""
        with tf.GradientTape() as tape:
            if split:
                weights = [[tf.identity(v) for v in t.trainable_variables] for t in towers]
                tape.watch(weights)
            else:  # the real variables' reads, which the tape watches
                weights = [[v.value for v in t.trainable_variables] for t in towers]
            hs = [t.stateless_call(w, [k.read(c) for k in kept], rows(x, c),
                                   training=training)[0]
                  for t, w, kept, x in zip(towers, weights, starts, inputs)]
        out = [tf.cast(rows(g, c), h.dtype) for g, h in zip(g_encodings, hs)]
        if not split:
            return [tape.gradient(hs, enc_vars, output_gradients=out)]
        grads = tape.gradient(hs, weights, output_gradients=out)
        return [[_by_var(t.trainable_variables, g).get(id(v)) for v in enc_vars]
                for t, g in zip(towers, grads)]

    first = chunk_gradients(0)
    carried = [[_carried(g) for g in grads] for grads in first]

    def accumulate(c, carried):
        now = chunk_gradients(c)
        return c + 1, [[_carried(add(_uncarried(a, f), g)) for a, f, g in zip(*acc)]
                       for acc in zip(carried, first, now)]

    invariants = [[_invariant(g) for g in grads] for grads in first]
    _, carried = tf.while_loop(lambda c, _: c < count, accumulate,
                               (tf.constant(1), carried),
                               shape_invariants=(tf.TensorShape([]), invariants),
                               parallel_iterations=1)
    sums = [[_uncarried(a, g) for a, g in zip(acc, grads)]
            for acc, grads in zip(carried, first)]
    if not split:
        return sums[0]
    # The state the calls left is written back once per step, as in
    # `branch_gradients`.
    for tower in dict.fromkeys(towers):
        for var, value in zip(tower.non_trainable_variables, tower_nt[id(tower)]):
            var.assign(value)
    return BranchGradients(loss=loss, predictions=predictions, encoder_vars=enc_vars,
                           head_vars=head_vars, names=model.branches, branches=sums,
                           head=list(g_head))


# What the cached pass's loop carries per gradient: () for None, a dense
# sum, or a sparse one's (values, indices), which `add` concatenates chunk
# after chunk.
def _carried(g):
    if g is None:
        return ()
    if isinstance(g, tf.IndexedSlices):
        return (g.values, g.indices)
    return g


def _invariant(g):
    if g is None:
        return ()
    if isinstance(g, tf.IndexedSlices):
        return (tf.TensorShape([None]).concatenate(g.values.shape[1:]),
                tf.TensorShape([None]))
    return g.shape


def _uncarried(acc, first):
    if first is None:
        return None
    if isinstance(first, tf.IndexedSlices):
        return tf.IndexedSlices(acc[0], acc[1], first.dense_shape)
    return acc


def unscaled(bg: BranchGradients, scale) -> BranchGradients:
    """`bg` with its branch gradients divided by a loss scale (mixed
    precision: what the branches contribute to the unscaled loss)."""
    return dataclasses.replace(bg, branches=unscaled_branches(bg.branches, scale))


def unscaled_branches(branches, scale) -> list:
    """Each branch's gradients (`branches[b][i]`) divided by a loss scale."""
    inverse = 1.0 / tf.cast(scale, tf.float32)
    return [[None if g is None else _scale(g, inverse) for g in grads]
            for grads in branches]


def _scale(g, factor):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * factor, g.indices, g.dense_shape)
    return g * factor


# Below this a gradient is zero for `sum_error`: a batch the loss ignores
# (e.g. every pair beyond the margin) has a gradient of float32 rounding
# noise (1e-14 was seen), where two equal computations differ by 100%.
# (numpy's allclose uses the same absolute tolerance.)
ZERO_GRADIENT = 1e-8


# -- The sum check and branch statistics in numpy, on gradients a caller holds
# (the README's example, the notebook) ---------------------------------------------
def arrays(grads, variables=None) -> list:
    """Gradients as dense float64 numpy arrays: `tf.IndexedSlices` made
    dense and None (a branch that does not reach a variable) as zeros, given
    `variables`; arrays pass through."""
    if variables is None:
        return [np.asarray(g, np.float64) for g in grads]
    return [np.asarray(dense(g, v), np.float64) for g, v in zip(grads, variables)]


def sum_error(total, branches: Sequence[list], variables=None) -> float:
    """max |g_total - (g_1 + ... + g_k)| / max |g_total| over all variables,
    for the k branches' gradients (`[left, right]`, or one list per call);
    the denominator is at least `ZERO_GRADIENT`."""
    total = arrays(total, variables)
    parts = [arrays(g, variables) for g in branches]
    num = max((np.max(np.abs(t - sum(g))) for t, *g in zip(total, *parts) if t.size),
              default=0.0)
    den = max((np.max(np.abs(t)) for t in total if t.size), default=0.0)
    return float(num / max(den, ZERO_GRADIENT))


def global_norm(grads, variables=None) -> float:
    return float(np.sqrt(sum(_dot(g, g) for g in arrays(grads, variables))))


def _dot(a, b) -> float:
    """sum(a * b) by numpy's own loops, not BLAS: np.vdot on these arrays
    (> 10,000 elements) wakes OpenBLAS's threads, which then spin for
    ~0.1 s on the cores the next compiled train call needs."""
    return float(np.sum(np.multiply(a, b)))


def cosine(a, b) -> float:
    """The cosine of two branches' gradients (lists of arrays) as if each
    were one flattened vector; 0 when one is zero."""
    na, nb = global_norm(a), global_norm(b)
    dot = float(sum(_dot(x, y) for x, y in zip(a, b)))
    return dot / (na * nb) if na * nb > 0 else 0.0


def branch_stats(left, right, variables=None):
    """(|g_left|, |g_right|, cosine(g_left, g_right)) over all variables, as
    if each branch's gradients were one flattened vector."""
    left, right = arrays(left, variables), arrays(right, variables)
    return global_norm(left), global_norm(right), cosine(left, right)
