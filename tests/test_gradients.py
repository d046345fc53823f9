"""The heart of the mission: g_left + g_right is the shared weights' gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import gradients as G
from siamese_research.core import model as M
import _reference as R


def _batch(seed=0, n=6, tl=5, tr=7, f=8):
    rng = np.random.default_rng(seed)
    left = tf.constant(rng.standard_normal((n, tl, f)), tf.float32)
    right = tf.constant(rng.standard_normal((n, tr, f)), tf.float32)
    label = tf.constant(rng.integers(0, 2, n), tf.float32)
    return left, right, label


@pytest.mark.parametrize("merge", ["concat", "concat_absdiff_product"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_left_plus_right_equals_total(merge, seed):
    keras.utils.set_random_seed(seed)
    model = M.build_model(features=8, units=4, merge=merge)
    loss_fn = keras.losses.BinaryCrossentropy()
    left, right, label = _batch(seed)
    bg = G.branch_gradients(model, loss_fn, (left, right), label)
    total = G.total_gradient(model, loss_fn, (left, right), label)
    err = float(R.sum_error(total, bg.branches, bg.encoder_vars))
    assert err <= 1e-6
    # Both branches contribute: neither is zero, and they differ.
    for a, b in zip(bg.left, bg.right):
        assert float(tf.reduce_max(tf.abs(a))) > 0
        assert float(tf.reduce_max(tf.abs(b))) > 0
        assert not np.allclose(a.numpy(), b.numpy())


def test_sum_error_of_a_zero_gradient_is_not_its_rounding_noise():
    """A batch the loss ignores has a gradient of rounding noise: two equal
    computations then differ by 100% of it, which is no split error; a real
    gradient's error is still relative to it."""
    noise = [np.full((2, 2), 1e-14)]
    assert R.sum_error(noise, [[np.zeros((2, 2))], [np.zeros((2, 2))]]) <= 1e-5
    total = [np.full((2, 2), 1e-3)]
    assert R.sum_error(total, [[np.full((2, 2), 5e-4)], [np.zeros((2, 2))]]) == \
        pytest.approx(0.5)


def test_sum_error_detects_a_wrong_split():
    """The check can fail: dropping the right branch is caught."""
    model = M.build_model(features=8, units=4)
    loss_fn = keras.losses.BinaryCrossentropy()
    left, right, label = _batch(3)
    bg = G.branch_gradients(model, loss_fn, (left, right), label)
    total = G.total_gradient(model, loss_fn, (left, right), label)
    zeros = [tf.zeros_like(g) for g in bg.right]
    assert float(R.sum_error(total, [bg.left, zeros], bg.encoder_vars)) > 1e-2


def test_left_gradient_equals_stop_gradient_derivation():
    """g_left = d loss / d W with the right encoding held constant (and vice
    versa): an independent derivation through the real variables."""
    keras.utils.set_random_seed(4)
    model = M.build_model(features=8, units=4)
    loss_fn = keras.losses.BinaryCrossentropy()
    left, right, label = _batch(4)
    bg = G.branch_gradients(model, loss_fn, (left, right), label)
    enc = M.encoder_variables(model)

    def grad_with(stop_left: bool):
        with tf.GradientTape() as tape:
            h_l = model.encoder(left, training=True)
            h_r = model.encoder(right, training=True)
            if stop_left:
                h_l = tf.stop_gradient(h_l)
            else:
                h_r = tf.stop_gradient(h_r)
            loss = loss_fn(label, model.score(h_l, h_r, training=True))
        return tape.gradient(loss, enc)

    for mine, ref in zip(bg.left, grad_with(stop_left=False)):
        np.testing.assert_allclose(mine.numpy(), ref.numpy(), rtol=1e-5, atol=1e-7)
    for mine, ref in zip(bg.right, grad_with(stop_left=True)):
        np.testing.assert_allclose(mine.numpy(), ref.numpy(), rtol=1e-5, atol=1e-7)


def test_sgd_step_moves_weights_by_minus_lr_times_sum():
    from siamese_research.train.trainer import Trainer

    keras.utils.set_random_seed(5)
    lr = 0.1
    model = M.build_model(features=8, units=4)
    loss_fn = keras.losses.BinaryCrossentropy()
    trainer = Trainer(model, loss_fn=loss_fn, optimizer=keras.optimizers.SGD(lr),
                      writers=None, verbose=0)
    left, right, label = _batch(5, tl=5, tr=5)
    bg = G.branch_gradients(model, loss_fn, (left, right), label,
                            tf.ones_like(label))
    before = [v.numpy().copy() for v in bg.encoder_vars]
    trainer.step.math(((left, right), label, tf.ones_like(label)))  # eager
    for v, w0, gl, gr in zip(bg.encoder_vars, before, bg.left, bg.right):
        expected = w0 - lr * (gl.numpy() + gr.numpy())
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert int(trainer.global_step.numpy()) == 1


def test_indexed_slices_sum_stays_sparse():
    a = tf.IndexedSlices(tf.ones([2, 3]), tf.constant([0, 2]), tf.constant([4, 3]))
    b = tf.IndexedSlices(2 * tf.ones([1, 3]), tf.constant([2]), tf.constant([4, 3]))
    s = G.add(a, b)
    assert isinstance(s, tf.IndexedSlices)
    dense = tf.convert_to_tensor(s).numpy()
    np.testing.assert_array_equal(dense[:, 0], [1, 0, 3, 0])


def test_branch_stats_are_the_norms_and_cosine_of_the_flattened_gradients():
    rng = np.random.default_rng(3)
    variables = [tf.Variable(tf.zeros([3, 2])), tf.Variable(tf.zeros([4])),
                 tf.Variable(tf.zeros([5, 2]))]
    left = [tf.constant(rng.standard_normal((3, 2)), tf.float32),
            tf.constant(rng.standard_normal(4), tf.float32),
            tf.IndexedSlices(tf.constant(rng.standard_normal((2, 2)), tf.float32),
                             tf.constant([1, 3]), tf.constant([5, 2]))]
    right = [tf.constant(rng.standard_normal((3, 2)), tf.float32), None,  # untied
             tf.constant(rng.standard_normal((5, 2)), tf.float32)]
    flat = [np.concatenate([G.dense(g, v).numpy().ravel() for g, v in zip(gs, variables)])
            for gs in (left, right)]
    ln, rn, cos = (float(x) for x in R.branch_stats(left, right, variables))
    np.testing.assert_allclose([ln, rn], [np.linalg.norm(flat[0]), np.linalg.norm(flat[1])],
                               rtol=1e-6)
    np.testing.assert_allclose(cos, flat[0] @ flat[1] / (ln * rn), rtol=1e-5)
    assert float(R.branch_stats([], [], [])[2]) == 0.0  # a weightless encoder


def test_the_views_arithmetic_stays_out_of_blas(monkeypatch):
    """np.vdot on a 16,384-float gradient woke OpenBLAS's threads, which
    spun for ~0.1 s on the core the next compiled train call needed (B
    trained at 0.7x its rate; docs/performance.md). The norms and cosines a
    view step writes must not call BLAS (and must still be right)."""
    def no_blas(*args, **kwargs):
        raise AssertionError("a BLAS call in the views' arithmetic")

    rng = np.random.default_rng(0)
    a, b = [rng.standard_normal((128, 128))], [rng.standard_normal((128, 128))]
    want_norm = float(np.linalg.norm(a[0]))
    want_cos = float(np.sum(a[0] * b[0]) / (np.linalg.norm(a[0]) * np.linalg.norm(b[0])))
    for name in ("vdot", "dot", "inner", "matmul", "tensordot", "einsum"):
        monkeypatch.setattr(np, name, no_blas)
    norms, cosines = R.branch_norms_and_cosines({"left": a, "right": b})
    assert norms["left"] == pytest.approx(want_norm, rel=1e-12)
    assert cosines[("left", "right")] == pytest.approx(want_cos, rel=1e-9)
    assert R.sum_error(a, [a, [np.zeros_like(a[0])]]) == 0.0


@pytest.mark.parametrize("encoder, args, shape", [
    ("bag", {"dropout": 0.5, "word_dropout": 0.3, "seed": 1}, (6, 5, 8)),
    ("conv2d", {"filters": [3], "augment": 0.2, "seed": 1}, (6, 8, 8, 1)),
])
def test_a_random_tied_encoder_checks_against_the_same_draws(encoder, args, shape):
    """A tied tower called twice draws its dropout or shifts anew at each
    call; the check, run from the state the branch pass started from, must
    draw the same as each call did (the second call's from the state the
    first left), or it differentiates another function."""
    keras.utils.set_random_seed(5)
    image = len(shape) == 4
    model = M.build_model(encoder=encoder, units=4, features=shape[-1],
                          encoder_args=args, image_shape=shape[1:] if image else None)
    loss_fn = keras.losses.BinaryCrossentropy()
    rng = np.random.default_rng(5)
    left, right = (tf.constant(rng.random(shape), tf.float32) for _ in range(2))
    label = tf.constant([1, 0, 1, 0, 1, 0], tf.float32)
    state = [tf.identity(v.value) for v in model.non_trainable_variables]
    assert state  # the seeds
    bg = G.branch_gradients(model, loss_fn, (left, right), label)
    total = G.total_gradient(model, loss_fn, (left, right), label, state=state)
    assert float(R.sum_error(total, bg.branches, bg.encoder_vars)) <= 1e-6
