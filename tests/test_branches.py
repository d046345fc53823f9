"""k calls of one encoder: a triplet's three, in-batch negatives' two. The
gradient on the shared weights is the sum of every call's contribution."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import gradients as G
from siamese_research.core import losses as L
from siamese_research.core import merges
from siamese_research.metrics import streaming as metrics_lib
from siamese_research.core import model as M
import _reference as R

# (objective, loss, merge): the k-branch objectives on each distance merge.
CASES = [("triplet", lambda: L.TripletLoss(0.5), "euclidean"),
         ("triplet", lambda: L.TripletLoss(0.5), "cosine"),
         ("triplet", lambda: L.TripletLoss(1.0), "manhattan"),
         ("in_batch", lambda: L.MultipleNegativesRankingLoss(0.1), "cosine"),
         ("in_batch", lambda: L.MultipleNegativesRankingLoss(0.5), "euclidean")]


def _inputs(k, seed=0, n=6, f=8):
    rng = np.random.default_rng(seed)
    # Each input its own length: the calls see different sequences.
    return tuple(tf.constant(rng.standard_normal((n, 4 + i, f)), tf.float32)
                 for i in range(k))


def _model(objective, merge, seed, share="tied"):
    keras.utils.set_random_seed(seed)
    return M.build_model(features=8, units=4, merge=merge, share=share,
                         objective=objective)


@pytest.mark.parametrize("objective,make_loss,merge", CASES)
def test_branches_sum_to_the_total(objective, make_loss, merge):
    model = _model(objective, merge, 0)
    loss_fn = make_loss()
    k = len(model.branches)
    inputs = _inputs(k)
    label = tf.ones([6])
    bg = G.branch_gradients(model, loss_fn, inputs, label)
    total = G.total_gradient(model, loss_fn, inputs, label)
    assert bg.names == model.branches and len(bg.branches) == k
    assert R.sum_error(total, bg.branches, bg.encoder_vars) <= 1e-6
    # Every call contributes, and no two contribute the same.
    for grads in bg.branches:
        assert R.global_norm(grads, bg.encoder_vars) > 0
    for a, b in itertools.combinations(bg.branches, 2):
        assert not np.allclose(R.arrays(a, bg.encoder_vars)[0],
                               R.arrays(b, bg.encoder_vars)[0])
    # The check can fail: leaving one branch out is caught.
    assert R.sum_error(total, bg.branches[:-1], bg.encoder_vars) > 1e-3


@pytest.mark.parametrize("objective,make_loss,merge", CASES[::2])
def test_each_branch_is_the_gradient_with_the_others_stopped(objective, make_loss,
                                                             merge):
    """Branch b's gradient = dL/dW with stop_gradient on every other
    branch's encoding: an independent derivation through the real variables."""
    model = _model(objective, merge, 1)
    loss_fn = make_loss()
    inputs = _inputs(len(model.branches), seed=1)
    label = tf.ones([6])
    bg = G.branch_gradients(model, loss_fn, inputs, label)
    enc = M.encoder_variables(model)
    for b, mine in enumerate(bg.branches):
        with tf.GradientTape() as tape:
            h = [model.encoder(x, training=True) for x in inputs]
            h = [hi if i == b else tf.stop_gradient(hi) for i, hi in enumerate(h)]
            loss = loss_fn(label, model.objective_output(h, training=True))
        for g, ref in zip(mine, tape.gradient(loss, enc)):
            np.testing.assert_allclose(g.numpy(), ref.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("objective,make_loss,merge", [CASES[0], CASES[3]])
def test_sgd_step_moves_weights_by_minus_lr_times_the_sum(objective, make_loss, merge):
    from siamese_research.train.step import TrainStep

    lr = 0.1
    model = _model(objective, merge, 2)
    loss_fn = make_loss()
    step = TrainStep(model, loss_fn=loss_fn, optimizer=keras.optimizers.SGD(lr),
                     strategy=tf.distribute.get_strategy())
    inputs = _inputs(len(model.branches), seed=2)
    label, weight = tf.ones([6]), tf.ones([6])
    bg = G.branch_gradients(model, loss_fn, inputs, label, weight)
    before = [v.numpy().copy() for v in bg.encoder_vars]
    step.math((inputs, label, weight), view=True)  # eager: one step
    for i, (v, w0) in enumerate(zip(bg.encoder_vars, before)):
        expected = w0 - lr * sum(g[i].numpy() for g in bg.branches)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-5, atol=1e-6)
    # The step kept each branch's views by name: the norms and cosines of
    # the same gradients.
    shown = step.layout.scalars(step.view_rows.numpy()[0], (True, False, False))
    norms, cosines = R.branch_norms_and_cosines(bg.by_name(), bg.encoder_vars)
    for name, norm in norms.items():
        assert shown[f"branch_gradients/{name}_norm"] == pytest.approx(norm, rel=1e-5)
    for (a, b), cosine in cosines.items():
        tag = "cosine" if (a, b) == ("left", "right") else f"cosine/{a}_{b}"
        assert shown[f"branch_gradients/{tag}"] == pytest.approx(cosine, rel=1e-4, abs=1e-6)


def test_untied_gives_one_tower_per_branch():
    tied = _model("triplet", "euclidean", 3)
    untied = _model("triplet", "euclidean", 3, share="untied")
    one = M.count_params(M.encoder_variables(tied))
    assert M.count_params(M.encoder_variables(untied)) == 3 * one
    assert len({id(t) for t in untied.towers}) == 3 and len(set(map(id, tied.towers))) == 1
    assert "untied: 3 towers" in M.parameter_table(untied)
    assert "tied: one tower, 3 calls" in M.parameter_table(tied)
    # Untied, each branch reaches only its own tower's weights.
    inputs = _inputs(3, seed=3)
    bg = G.branch_gradients(untied, L.TripletLoss(0.5), inputs, tf.ones([6]))
    for tower, grads in zip(untied.towers, bg.branches):
        mine = {id(v) for v in tower.trainable_variables}
        for v, g in zip(bg.encoder_vars, grads):
            assert (g is not None) == (id(v) in mine)


def test_the_pair_model_keeps_its_parameters():
    """The notebook's model: 20,673 parameters, 20,608 in the shared LSTM."""
    model = M.build_model(units=32, features=128, merge="concat")
    assert model.branches == ("left", "right")
    assert M.count_params(model.trainable_variables) == 20673
    assert M.count_params(M.encoder_variables(model)) == 20608


def test_triplet_model_call_and_serialisation(tmp_path):
    model = _model("triplet", "cosine", 4)
    a, p, n = _inputs(3, seed=4)
    d = model((a, p, n)).numpy()
    assert d.shape == (6, 2)
    # The pair score is the merge's similarity of the same distance.
    s = model((a, p)).numpy()[:, 0]
    np.testing.assert_allclose(s, 1.0 - d[:, 0] / 2.0, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "m.keras")
    model.save(path)
    back = keras.saving.load_model(path)
    assert back.objective == "triplet" and back.branches == model.branches
    np.testing.assert_allclose(back((a, p, n)).numpy(), d, rtol=1e-6)


def test_a_triplet_needs_a_distance_merge():
    with pytest.raises(ValueError, match="distance merge"):
        M.build_model(features=8, units=4, merge="concat", objective="triplet")
    from siamese_research.config import ConfigError
    with pytest.raises(ConfigError, match="--loss=triplet: needs a distance merge"):
        L.build_loss("triplet", merge="concat_absdiff_product")


def test_triplet_loss_is_the_hinge_on_distances():
    d = tf.constant([[0.2, 1.0], [1.0, 0.5], [0.5, 0.9]])
    loss = L.TripletLoss(margin=0.5)
    per_row = np.maximum(0.0, d.numpy()[:, 0] - d.numpy()[:, 1] + 0.5)
    np.testing.assert_allclose(float(loss(tf.ones([3]), d)), per_row.mean(), rtol=1e-6)


def test_mnrl_is_softmax_cross_entropy_over_the_batch():
    rng = np.random.default_rng(0)
    d = rng.random((4, 4)).astype(np.float32)
    t = 0.2
    logits = -d / t
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -np.mean(np.diag(logp))
    got = float(L.MultipleNegativesRankingLoss(t)(tf.ones([4]), tf.constant(d)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_euclidean_distance_and_similarity():
    m = merges.build_merge("euclidean")
    u = tf.constant([[0.0, 0.0], [1.0, 1.0]])
    v = tf.constant([[3.0, 4.0], [1.0, 1.0]])
    np.testing.assert_allclose(m.distances(u, v).numpy()[:, 0], [5.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(m([u, v]).numpy()[:, 0], np.exp([-5.0, 0.0]), rtol=1e-6)
    with tf.GradientTape() as tape:  # finite at u == v
        tape.watch(u)
        d = m.distances(u, v)
    assert np.all(np.isfinite(tape.gradient(d, u).numpy()))


def test_metrics_read_a_triplet_as_two_pairs():
    model = _model("triplet", "cosine", 5)
    d = tf.constant([[0.2, 1.0], [1.0, 0.5]])
    labels, scores = metrics_lib.pairs_of(model, tf.ones([2]), d)
    np.testing.assert_array_equal(labels.numpy(), [1, 1, 0, 0])
    np.testing.assert_allclose(scores.numpy(), [0.9, 0.5, 0.5, 0.75], rtol=1e-6)
    batch = _model("in_batch", "cosine", 5)
    labels, scores = metrics_lib.pairs_of(batch, tf.ones([3]), tf.zeros([3, 3]))
    assert labels.numpy().tolist() == np.eye(3).reshape(-1).tolist()


def test_branch_scalars_name_every_branch_and_pair():
    """A triplet's row holds each call's norm and every two calls' cosine
    under their names; a pair's cosine keeps its short tag."""
    from siamese_research.train.views import ViewLayout

    model = _model("triplet", "cosine", 5)
    layout = ViewLayout(model)
    grads = {name: [tf.zeros(v.shape) for v in layout.variables] for name in model.branches}
    unit = np.zeros(layout.variables[0].shape, np.float32)
    unit.flat[0] = 1.0
    grads["anchor"][0] = tf.constant(unit)
    grads["positive"][0] = tf.constant(np.roll(unit, 1) * 2.0)
    grads["negative"][0] = tf.constant(-unit)
    metrics = metrics_lib.pair_metrics("")
    layout.bind(metrics)
    row = layout.log_values(loss=0.0, learning_rate=0.0, nonfinite=0, metrics=metrics,
                            branches=[grads[b] for b in model.branches])
    out = layout.scalars(row.numpy(), (True, False, False))
    assert out["branch_gradients/positive_norm"] == pytest.approx(2.0)
    assert out["branch_gradients/cosine/anchor_positive"] == pytest.approx(0.0)
    assert out["branch_gradients/cosine/anchor_negative"] == pytest.approx(-1.0)
    assert "branch_gradients/cosine/positive_negative" in out
    pair = ViewLayout(_model("pair", "cosine", 2))
    assert "branch_gradients/cosine" in pair.log_tags  # the pair's tag
