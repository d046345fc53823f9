"""The views' arithmetic in TensorFlow (core/gradient_stats): sparse
gradients are viewed by their rows, and every view equals the dense one."""

import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import gradient_stats as S
from siamese_research.core import gradients as G
import _reference as R

SHAPE = (40, 6)


def _slices(indices, seed):
    """An embedding-like gradient: rows at `indices` (repeats included),
    values multiples of 1/8 so that every sum of them is exact."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-16, 17, (len(indices), SHAPE[1])) / 8.0
    return tf.IndexedSlices(tf.constant(values, tf.float32),
                            tf.constant(indices, tf.int64), tf.constant(SHAPE, tf.int64))


def _dense(g):
    return tf.convert_to_tensor(g)


@pytest.fixture
def branches():
    left = _slices([3, 7, 3, 12, 3], 0)  # row 3 three times
    right = _slices([7, 30, 1], 1)
    return left, right, G.add(left, right)  # total: the rows of both


def test_sparse_norms_cosines_and_check_equal_the_dense_ones(branches):
    left, right, total = branches
    sparse = S.norms_and_cosines(S.gram([[left], [right]]))
    dense = S.norms_and_cosines(S.gram([[_dense(left)], [_dense(right)]]))
    reference = R.branch_norms_and_cosines({"left": [_dense(left).numpy()],
                                            "right": [_dense(right).numpy()]})
    for i, name in enumerate(("left", "right")):
        assert float(sparse[0][i]) == float(dense[0][i])
        assert float(sparse[0][i]) == pytest.approx(reference[0][name], rel=1e-12)
    cosine = float(sparse[1][0, 1])
    assert cosine == float(dense[1][0, 1])
    assert cosine == pytest.approx(reference[1][("left", "right")], rel=1e-12)
    assert cosine != 0  # the branches share row 7
    # left + right = total holds on the rows; a branch left out breaks it.
    assert float(S.sum_error([total], [[left], [right]])) <= 1e-6
    wrong = float(S.sum_error([total], [[left], [None]]))
    assert wrong == pytest.approx(R.sum_error([_dense(total).numpy()],
                                              [[_dense(left).numpy()],
                                               [np.zeros(SHAPE)]]), rel=1e-12)
    assert wrong > 0.1


def test_a_sparse_histogram_is_the_dense_ones_untouched_rows_counted_as_zeros(branches):
    left, _, total = branches
    for g in (left, total):
        sparse = S.histogram(*S.histogram_item(g, tf.zeros(SHAPE))).numpy()
        dense = S.histogram(_dense(g)).numpy()
        np.testing.assert_array_equal(sparse, dense)
        assert sparse[2:].sum() == np.prod(SHAPE)  # every entry, zeros included
        assert sparse[0] == min(0.0, _dense(g).numpy().min())


def test_the_histogram_bins_as_the_numpy_one_and_leaves_out_non_finite_values():
    rng = np.random.default_rng(3)
    for x in (rng.standard_normal(500).astype("float32"),
              np.array([1.5, np.nan, -np.inf, 2.25, 3.0, 1.5], "float32"),
              np.full(4, 3.0, "float32"), np.zeros(0, "float32"),
              np.array([-3e38, 0.0, 3e38], "float32")):  # a range over float32's
        ours, reference = S.histogram(x).numpy(), R.histogram_tensor(x)
        assert ours[0] == reference[0, 0] and ours[1] == reference[-1, 1]
        assert ours[2:].sum() == reference[:, 2].sum() == np.isfinite(x).sum()
        # (A value exactly on an inner edge may land one bin lower in
        # tf.histogram_fixed_width than in numpy: compare away from edges.)
        assert np.abs(ours[2:] - reference[:, 2]).sum() <= 2 * np.isfinite(x).sum() // 100 + 2


def test_a_bag_encoders_embedding_views_come_from_its_rows(tmp_path):
    """A train step over an embedding: its branch gradients are
    IndexedSlices, and the views the step keeps equal the dense ones."""
    import keras

    from siamese_research.core import model as M
    from siamese_research.train.step import TrainStep

    keras.utils.set_random_seed(0)
    model = M.build_model(encoder="bag", vocab_size=50, features=8, units=4,
                          merge="concat")
    loss_fn = keras.losses.BinaryCrossentropy()
    step = TrainStep(model, loss_fn=loss_fn, optimizer=keras.optimizers.SGD(0.0),
                     strategy=tf.distribute.get_strategy())
    rng = np.random.default_rng(0)
    left = tf.constant(rng.integers(1, 50, (4, 5)), tf.int32)
    right = tf.constant(rng.integers(1, 50, (4, 5)), tf.int32)
    label = tf.constant([1.0, 0.0, 1.0, 0.0])
    bg = G.branch_gradients(model, loss_fn, (left, right), label, tf.ones(4))
    assert any(isinstance(g, tf.IndexedSlices) for g in bg.left)
    step.math(((left, right), label, tf.ones(4)), view=True, check=True)
    shown = step.layout.scalars(step.view_rows.numpy()[0], (True, True, False))
    norms, cosines = R.branch_norms_and_cosines(bg.by_name(), bg.encoder_vars)
    assert shown["branch_gradients/left_norm"] == pytest.approx(norms["left"], rel=1e-6)
    assert shown["branch_gradients/cosine"] == pytest.approx(cosines[("left", "right")],
                                                             rel=1e-5, abs=1e-7)
    assert shown["branch_gradients/sum_error"] <= 1e-6
