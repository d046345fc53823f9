"""Every encoder x merge x loss trains; untied towers; saved models reload."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import gradients as G
from siamese_research.core import losses as L
from siamese_research.core import merges as Mg
from siamese_research.core import model as M
from siamese_research import artifacts
from siamese_research.train.step import TrainStep
import _reference as R


ENCODERS = ["lstm", "gru", "bilstm", "conv1d", "transformer", "bag"]
COMBOS = [(e, m, loss) for e in ENCODERS for m in Mg.available()
          for loss in (["bce", "contrastive"] if Mg.get_merge_class(m).has_distance
                       else ["bce"])]


def _batch(seed, n=4, f=8):
    """((left, right), label, weight): 4 pairs, the right side padded."""
    rng = np.random.default_rng(seed)
    left = tf.constant(rng.standard_normal((n, 5, f)), tf.float32)
    right = tf.constant(rng.standard_normal((n, 3, f)), tf.float32)
    right = tf.concat([right, tf.zeros((n, 2, f))], axis=1)  # padded right side
    return (left, right), tf.constant([1.0, 0.0, 1.0, 0.0]), tf.ones(n)


@pytest.mark.parametrize("encoder,merge,loss", COMBOS,
                         ids=["-".join(c) for c in COMBOS])
def test_every_combination_trains_two_steps(encoder, merge, loss):
    keras.utils.set_random_seed(0)
    model = M.build_model(encoder=encoder, units=4, features=8, merge=merge)
    loss_fn = L.build_loss(loss, merge=merge)
    step = TrainStep(model, loss_fn=loss_fn, optimizer=keras.optimizers.Adam(1e-2),
                     strategy=tf.distribute.get_strategy())  # views and check on
    before = [v.numpy().copy() for v in model.trainable_variables]
    for seed in (1, 2):  # two eager steps: the same step code, no tracing cost
        step.math(_batch(seed), view=True, check=True)
        # The step's own views: each branch's gradient from the one
        # backward pass, and the independent total, both before the update.
        shown = step.layout.scalars(step.view_rows.numpy()[0], (True, True, False))
        assert np.isfinite(shown["loss"]) and shown["loss"] > 0
        assert shown["branch_gradients/sum_error"] <= 1e-5
        # The check ran: a real total gradient (none without encoder weights).
        assert (shown["branch_gradients/total_norm"] > 0) == bool(step.layout.variables)
    assert int(step.global_step.numpy()) == 2
    assert int(step.nonfinite_count.numpy()) == 0
    moved = [not np.array_equal(b, v.numpy())
             for b, v in zip(before, model.trainable_variables)]
    if encoder == "bag" and Mg.get_merge_class(merge).score and not model.merge.weights:
        # A sum of float inputs and a weightless score: nothing to train.
        assert not model.trainable_variables
    else:
        assert any(moved)


def test_untied_gradients_land_on_their_own_tower():
    keras.utils.set_random_seed(3)
    model = M.build_model(units=4, features=8, share="untied")
    (left, right), y, w = _batch(3)
    bg = G.branch_gradients(model, keras.losses.BinaryCrossentropy(), (left, right), y, w)
    left_ids = {id(v) for v in model.encoder.trainable_variables}
    right_ids = {id(v) for v in model.right_encoder.trainable_variables}
    assert left_ids.isdisjoint(right_ids)
    for v, gl, gr in zip(bg.encoder_vars, bg.left, bg.right):
        if id(v) in left_ids:
            assert gr is None and float(tf.reduce_max(tf.abs(gl))) > 0
        else:
            assert gl is None and float(tf.reduce_max(tf.abs(gr))) > 0
    total = G.total_gradient(model, keras.losses.BinaryCrossentropy(), (left, right), y, w)
    assert float(R.sum_error(total, bg.branches, bg.encoder_vars)) <= 1e-6


@pytest.mark.parametrize("encoder", ENCODERS)
def test_tied_vs_untied_parameter_counts(encoder):
    tied = M.build_model(encoder=encoder)
    untied = M.build_model(encoder=encoder, share="untied")
    n = M.count_params(M.encoder_variables(tied))
    assert M.count_params(M.encoder_variables(untied)) == 2 * n
    head = M.count_params(M.head_variables(tied))
    assert M.count_params(tied.trainable_variables) == n + head


@pytest.mark.parametrize("encoder,merge,share", [
    ("lstm", "concat_absdiff_product", "tied"), ("bilstm", "cosine", "untied"),
    ("transformer", "manhattan", "tied"), ("conv1d", "concat", "untied")])
def test_saved_model_and_encoder_reload_identically(tmp_path, encoder, merge, share):
    keras.utils.set_random_seed(4)
    model = M.build_model(encoder=encoder, units=4, features=8, merge=merge, share=share)
    paths = artifacts.save_models(model, str(tmp_path))
    (left, right), _, _ = _batch(5)
    again = keras.saving.load_model(paths["model_path"])
    encoder_again = keras.saving.load_model(paths["encoder_path"])
    np.testing.assert_array_equal(np.asarray(model((left, right))),
                                  np.asarray(again((left, right))))
    np.testing.assert_array_equal(np.asarray(model.encoder(left)),
                                  np.asarray(encoder_again(left)))
    assert again.tied == (share == "tied")
