"""Per-branch gradients of the shared encoder, in one backward pass.

A tied Siamese model calls one encoder on both inputs, so the gradient on its
weights W is a sum over the two calls. To see the two terms, each call reads W
through its own copy: `W_l = identity(W)` for the left call, `W_r =
identity(W)` for the right, both via Keras 3's `stateless_call`. Then
`tape.gradient(loss, [W_l, W_r])` returns exactly the left and the right
contribution, and dL/dW = g_left + g_right, from ONE backward pass (the same
cost as a plain `tape.gradient`).

`total_gradient` is the independent check: a plain forward pass through the
real variables and `tape.gradient(loss, W)`.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import numpy as np
import tensorflow as tf

from siamese_research.model import (SiameseModel, encoder_variables,  # noqa: F401
                                    head_variables)


@dataclasses.dataclass
class BranchGradients:
    """The result of one forward/backward pass, split by branch.

    `left[i]`, `right[i]` are the gradients on `encoder_vars[i]` through the
    left and the right call (None where a branch does not use that variable:
    untied towers). `head[i]` is the gradient on `head_vars[i]`.
    """

    loss: tf.Tensor
    predictions: tf.Tensor
    encoder_vars: list
    head_vars: list
    left: List[Optional[tf.Tensor]]
    right: List[Optional[tf.Tensor]]
    head: List[Optional[tf.Tensor]]

    def combined(self) -> list:
        """g_left + g_right per encoder variable (sparse stays sparse)."""
        return [add(a, b) for a, b in zip(self.left, self.right)]

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


def branch_gradients(model: SiameseModel, loss_fn, left, right, label,
                     sample_weight=None, *, training: bool = True,
                     scale_loss=None) -> BranchGradients:
    """Forward both branches through identity copies of the tower weights and
    return the loss, predictions and per-branch gradients.

    Args:
      model: a built `SiameseModel` (tied or untied).
      loss_fn: `loss_fn(y_true, y_pred, sample_weight)`, a Keras loss.
      left, right: the two input batches (lengths may differ).
      label: (batch,) labels in [0, 1].
      sample_weight: optional (batch,) weights.
      training: passed to the layers.
      scale_loss: optional `f(loss) -> scaled loss` (mixed-precision loss
        scaling); the gradients are then of the scaled loss.
    """
    enc_vars = encoder_variables(model)
    head_vars = head_variables(model)
    towers = model.towers
    with tf.GradientTape() as tape:
        copies, encodings = [], []
        tower_nt = {}
        for tower, x in zip(towers, (left, right)):
            w = [tf.identity(v) for v in tower.trainable_variables]
            tape.watch(w)
            nt = tower_nt.get(id(tower),
                              [v.value for v in tower.non_trainable_variables])
            h, nt = tower.stateless_call(w, nt, x, training=training)
            tower_nt[id(tower)] = nt
            copies.append(w)
            encodings.append(h)
        predictions = model.score(encodings[0], encodings[1], training=training)
        loss = loss_fn(label, predictions, sample_weight=sample_weight)
        target = scale_loss(loss) if scale_loss is not None else loss
    g_left, g_right, g_head = tape.gradient(target, [copies[0], copies[1], head_vars])
    # State a call updates (e.g. a dropout seed) is written back once per step.
    for tower in dict.fromkeys(towers):
        for var, value in zip(tower.non_trainable_variables, tower_nt[id(tower)]):
            var.assign(value)
    left_map = _by_var(towers[0].trainable_variables, g_left)
    right_map = _by_var(towers[1].trainable_variables, g_right)
    return BranchGradients(
        loss=loss, predictions=predictions, encoder_vars=enc_vars,
        head_vars=head_vars,
        left=[left_map.get(id(v)) for v in enc_vars],
        right=[right_map.get(id(v)) for v in enc_vars],
        head=list(g_head))


def _by_var(variables, grads) -> dict:
    return {id(v): g for v, g in zip(variables, grads)}


def total_gradient(model: SiameseModel, loss_fn, left, right, label,
                   sample_weight=None, *, training: bool = True, state=None) -> list:
    """dL/dW on the encoder variables by a plain forward pass (the check).

    With `state` (values of `model.non_trainable_variables`, e.g. dropout
    seeds, as they were before the branch pass), the pass runs from that
    state and leaves the model's own untouched: the check then
    differentiates the very function the branch pass did, and costs the
    step's randomness nothing.
    """
    enc_vars = encoder_variables(model)
    with tf.GradientTape() as tape:
        if state is None:
            predictions = model((left, right), training=training)
        else:
            # The values are reads of the variables, which the tape watches.
            predictions, _ = model.stateless_call(
                [v.value for v in model.trainable_variables], state, (left, right),
                training=training)
        loss = loss_fn(label, predictions, sample_weight=sample_weight)
    return tape.gradient(loss, enc_vars)


def unscaled(bg: BranchGradients, scale) -> BranchGradients:
    """`bg` with its branch gradients divided by a loss scale (mixed
    precision: what the branches contribute to the unscaled loss)."""
    inverse = 1.0 / tf.cast(scale, tf.float32)

    def unscale(grads):
        return [None if g is None else _scale(g, inverse) for g in grads]

    return dataclasses.replace(bg, left=unscale(bg.left), right=unscale(bg.right))


def _scale(g, factor):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * factor, g.indices, g.dense_shape)
    return g * factor


# -- The views' arithmetic, in numpy (run on values a step stored) ----------------
def arrays(grads, variables=None) -> list:
    """Gradients as dense float64 numpy arrays: `tf.IndexedSlices` made
    dense and None (a branch that does not reach a variable) as zeros, given
    `variables`; arrays pass through."""
    if variables is None:
        return [np.asarray(g, np.float64) for g in grads]
    return [np.asarray(dense(g, v), np.float64) for g, v in zip(grads, variables)]


def sum_error(total, left, right, variables=None) -> float:
    """max |g_total - (g_left + g_right)| / max |g_total| over all variables."""
    total, left, right = (arrays(g, variables) for g in (total, left, right))
    num = max((np.max(np.abs(t - (a + b))) for t, a, b in zip(total, left, right)
               if t.size), default=0.0)
    den = max((np.max(np.abs(t)) for t in total if t.size), default=0.0)
    return float(num / max(den, 1e-30))


def global_norm(grads, variables=None) -> float:
    return float(np.sqrt(sum(np.vdot(g, g) for g in arrays(grads, variables))))


def branch_stats(left, right, variables=None):
    """(|g_left|, |g_right|, cosine(g_left, g_right)) over all variables, as
    if each branch's gradients were one flattened vector."""
    left, right = arrays(left, variables), arrays(right, variables)
    ln, rn = global_norm(left), global_norm(right)
    lr = float(sum(np.vdot(a, b) for a, b in zip(left, right)))
    return ln, rn, (lr / (ln * rn) if ln * rn > 0 else 0.0)
