"""lstm_fused computes keras.layers.LSTM's function, with its weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import encoders
from siamese_research.core import fused
from siamese_research.core import model as M

B, T, F, U = 5, 7, 6, 4


def _pair_of_layers(seed=0):
    rng = np.random.default_rng(seed)
    ref = keras.layers.LSTM(U)
    ref.build((None, None, F))
    for w in ref.weights:  # not the initialisers' values: every gate matters
        w.assign(0.5 * rng.standard_normal(w.shape).astype("float32"))
    layer = fused.FusedLSTM(U)
    layer.build((None, None, F))
    for mine, theirs in zip(layer.weights, ref.weights):
        assert mine.shape == theirs.shape  # kernel, recurrent_kernel, bias
        mine.assign(theirs)
    x = rng.standard_normal((B, T, F)).astype("float32")
    return ref, layer, x


# Right-padded: full, partial, one step, and a row with no real step at all.
MASK = np.arange(T)[None, :] < np.array([7, 3, 1, 0, 5])[:, None]


@pytest.mark.parametrize("mask", [None, MASK], ids=["no_mask", "right_padded"])
def test_same_function_and_gradients_as_keras_lstm(mask):
    ref, layer, x = _pair_of_layers()
    x = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        expected, got = ref(x, mask=mask), layer(x, mask=mask)
        # A loss that weighs every output differently.
        loss_ref = tf.reduce_sum(tf.sin(3.0 * expected))
        loss_mine = tf.reduce_sum(tf.sin(3.0 * got))
    assert np.max(np.abs(np.asarray(expected) - np.asarray(got))) <= 1e-5
    for g_ref, g_mine in zip(tape.gradient(loss_ref, [x] + ref.trainable_variables),
                             tape.gradient(loss_mine, [x] + layer.trainable_variables)):
        assert np.max(np.abs(np.asarray(g_ref) - np.asarray(g_mine))) <= 1e-5


def test_padding_keeps_the_last_valid_state():
    _, layer, x = _pair_of_layers()
    full = np.asarray(layer(x[1:2, :3]))  # row 1 has 3 real steps
    padded = np.asarray(layer(x, mask=MASK))[1:2]
    np.testing.assert_allclose(padded, full, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer(x, mask=MASK))[3], np.zeros(U))


def test_compiled_with_unknown_time_and_batch():
    _, layer, x = _pair_of_layers()
    spec = tf.TensorSpec([None, None, F], tf.float32)
    step = tf.function(lambda v: layer(v), input_signature=[spec])
    np.testing.assert_allclose(step(x[:, :2]), layer(x[:, :2]), atol=1e-6)
    np.testing.assert_allclose(step(x[:2]), layer(x[:2]), atol=1e-6)


def test_registered_as_an_encoder_with_lstm_gates_and_saves(tmp_path):
    assert "lstm_fused" in encoders.available()
    model = M.build_model(encoder="lstm_fused", units=U, features=F, merge="concat")
    core = model.encoder.core
    assert isinstance(core, fused.FusedLSTM) and encoders.rnn_kind(core) == "lstm"
    assert M.count_params(M.encoder_variables(model)) == 4 * U * (F + U + 1)
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.models.load_model(path)
    x = np.ones((2, 3, F), np.float32)
    np.testing.assert_allclose(again((x, x)), model((x, x)), atol=1e-6)
