"""The mixed-precision training path, exercised on the CPU.

train.py refuses --mixed_precision without a GPU (slower there); the code
path it enables on a GPU (mixed_float16 policy, float32 head output,
LossScaleOptimizer.scale_loss, unscaled branch gradients in the logs) is
the same on any device, so it is checked here with the policy set directly.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import gradients as G
from siamese_research.core import model as M
from siamese_research.train.step import TrainStep
import _reference as R


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _scaled_step(seed, optimizer):
    """A float16 model, its TrainStep with `optimizer` (a LossScaleOptimizer)
    scaling the loss, and one batch."""
    keras.utils.set_random_seed(0)
    model = M.build_model(features=8, units=4)
    loss_fn = keras.losses.BinaryCrossentropy()
    step = TrainStep(model, loss_fn=loss_fn, optimizer=optimizer,
                     strategy=tf.distribute.get_strategy(), scale_loss=optimizer.scale_loss)
    rng = np.random.default_rng(seed)
    left = tf.constant(rng.standard_normal((4, 5, 8)), tf.float32)
    right = tf.constant(rng.standard_normal((4, 6, 8)), tf.float32)
    y, w = tf.constant([1.0, 0.0, 1.0, 0.0]), tf.ones(4)
    return model, loss_fn, step, (left, right, y, w)


def test_mixed_float16_step_trains_with_loss_scaling(mixed_float16):
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))
    model, loss_fn, step, (left, right, y, w) = _scaled_step(0, optimizer)
    assert model.encoder.core.compute_dtype == "float16"
    assert model.encoder.core.variable_dtype == "float32"
    pred = model((left, right))
    assert pred.dtype == tf.float32  # the head's output stays float32
    scale = float(optimizer.dynamic_scale.numpy())
    bg = G.branch_gradients(model, loss_fn, (left, right), y, w,
                            scale_loss=optimizer.scale_loss)
    plain = G.branch_gradients(model, loss_fn, (left, right), y, w)
    # Scaled gradients, divided by the scale, are the plain ones (fp16 noise);
    # the trainer's own unscaling (what the branch logs show) does exactly that.
    unscaled = G.unscaled(bg, optimizer.dynamic_scale)
    for a, u, b in zip(bg.left, unscaled.left, plain.left):
        np.testing.assert_allclose(a.numpy() / scale, b.numpy(), rtol=2e-2, atol=1e-4)
        np.testing.assert_allclose(u.numpy(), b.numpy(), rtol=2e-2, atol=1e-4)
    for u, b in zip(unscaled.right, plain.right):
        np.testing.assert_allclose(u.numpy(), b.numpy(), rtol=2e-2, atol=1e-4)
    before = [v.numpy().copy() for v in model.trainable_variables]
    step.math(((left, right), y, w))
    after = [v.numpy() for v in model.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert int(step.global_step.numpy()) == 1


def test_the_views_are_unscaled_at_the_scale_the_step_used(mixed_float16):
    """A loss-scale growth step doubles the scale in its update: the stored
    views must be divided by the scale before it (else they read half)."""
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.0),
                                                    dynamic_growth_steps=1)
    model, loss_fn, step, (left, right, y, w) = _scaled_step(1, optimizer)
    plain = G.branch_gradients(model, loss_fn, (left, right), y, w)
    scale = float(optimizer.dynamic_scale.numpy())
    step.math(((left, right), y, w), view=True, check=True)
    assert float(optimizer.dynamic_scale.numpy()) == 2 * scale  # it grew
    shown = step.layout.scalars(step.view_rows.numpy()[0], (True, True, False))
    for name, grads in (("left", plain.left), ("right", plain.right)):
        assert shown[f"branch_gradients/{name}_norm"] == pytest.approx(
            R.global_norm(grads, plain.encoder_vars), rel=2e-2)
    # fp16 noise, not the 0.5 of a wrong scale
    assert shown["branch_gradients/sum_error"] < 1e-2
