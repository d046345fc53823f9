import numpy as np
import pytest

from siamese_research.core import losses as L
from siamese_research.core import merges as Mg
from siamese_research.config import ConfigError

U = np.random.default_rng(0).standard_normal((5, 6)).astype("float32")
V = np.random.default_rng(1).standard_normal((5, 6)).astype("float32")


@pytest.mark.parametrize("name", [n for n in Mg.available()
                                  if Mg.get_merge_class(n).symmetric])
def test_symmetric_merges_ignore_order(name):
    merge = Mg.build_merge(name)
    np.testing.assert_allclose(np.asarray(merge([U, V])), np.asarray(merge([V, U])),
                               rtol=1e-6)


def test_symmetric_set_is_what_we_claim():
    sym = {n for n in Mg.available() if Mg.get_merge_class(n).symmetric}
    assert sym == {"absdiff", "product", "cosine", "manhattan", "euclidean", "dot"}


@pytest.mark.parametrize("name", ["concat", "concat_absdiff_product"])
def test_concat_merges_are_order_dependent(name):
    """Documented: [u, v] != [v, u]; the head sees which side is which."""
    merge = Mg.build_merge(name)
    assert not np.allclose(np.asarray(merge([U, V])), np.asarray(merge([V, U])))


def test_merge_values():
    u, v = np.array([[1.0, -2.0]], "float32"), np.array([[3.0, 1.0]], "float32")
    np.testing.assert_allclose(Mg.build_merge("absdiff")([u, v]), [[2.0, 3.0]])
    np.testing.assert_allclose(Mg.build_merge("product")([u, v]), [[3.0, -2.0]])
    np.testing.assert_allclose(Mg.build_merge("manhattan")([u, v]), [[np.exp(-5.0)]],
                               rtol=1e-6)
    cos = (3.0 - 2.0) / (np.sqrt(5.0) * np.sqrt(10.0))
    np.testing.assert_allclose(Mg.build_merge("cosine")([u, v]), [[(1 + cos) / 2]],
                               rtol=1e-6)
    np.testing.assert_allclose(Mg.build_merge("concat_absdiff_product")([u, v]),
                               [[1, -2, 3, 1, 2, 3, 3, -2]])


def test_contrastive_hand_computed_both_labels():
    """Manhattan distance d = -log(s); margin 2:
    y=1, d=0.5: 0.5 * 0.25 = 0.125;  y=0, d=0.5: 0.5 * 1.5^2 = 1.125;
    y=0, d=3 (beyond the margin): 0."""
    loss = L.build_loss("contrastive", merge="manhattan", margin=2.0)
    s = np.exp(-np.array([[0.5], [0.5], [3.0]], "float32"))
    y = np.array([1.0, 0.0, 0.0], "float32")
    per = [float(loss(y[i:i + 1], s[i:i + 1])) for i in range(3)]
    np.testing.assert_allclose(per, [0.125, 1.125, 0.0], atol=1e-6)
    np.testing.assert_allclose(float(loss(y, s)), (0.125 + 1.125) / 3, atol=1e-6)


def test_contrastive_needs_a_distance_merge():
    with pytest.raises(ConfigError, match="needs a distance merge"):
        L.build_loss("contrastive", merge="concat")


def test_unknown_names():
    with pytest.raises(ConfigError, match="available: absdiff"):
        Mg.build_merge("nope")
    with pytest.raises(ConfigError, match="available: bce, contrastive, mse"):
        L.build_loss("nope", merge="concat")


def test_dot_merge_is_a_scaled_unnormalised_dot_product():
    merge = Mg.build_merge("dot")
    u, v = np.array([[1.0, -2.0, 0.5, 2.0]], "float32"), np.array([[3.0, 1.0, 2.0, 0.0]],
                                                                  "float32")
    got = np.asarray(merge([u, v]))
    want = 1.0 / (1.0 + np.exp(-0.5 * 2.0))  # u.v = 2, scale 1/sqrt(4), bias 0
    np.testing.assert_allclose(got, [[want]], rtol=1e-6)
    # Unlike cosine, scaling one side changes the score.
    assert not np.allclose(np.asarray(merge([u, 3 * v])), got)
    assert {w.name for w in merge.trainable_weights} == {"log_scale", "bias"}


def _separable(n=16, t=3, f=8, seed=0, repeat=1):
    """Positives: right == left; negatives: an unrelated right. Every merge
    but `concat` (whose f(left) + g(right) cannot say "alike") can separate
    them perfectly. `repeat` copies of the n pairs make one long epoch (an
    epoch's set-up costs more than its two steps here)."""
    from siamese_research import data as D

    rng = np.random.default_rng(seed)
    left = rng.standard_normal((n, t, f)).astype("float32")
    label = np.arange(n) % 2 == 0
    right = np.where(label[:, None, None], left,
                     3 * rng.standard_normal((n, t, f)).astype("float32"))
    left, right, label = (np.concatenate([a] * repeat) for a in (left, right, label))
    n *= repeat
    return D.PairDataset(D.Pairs(left, right, np.full(n, t), np.full(n, t),
                                 label.astype("float32")), 8, seed=seed)


ACCURACY_CASES = [(m, loss) for m in Mg.available() if m != "concat"
                  for loss in L.LOSSES if loss not in L.OBJECTIVES  # pair losses
                  if loss != "contrastive" or Mg.get_merge_class(m).has_distance]


@pytest.mark.parametrize("merge,loss", ACCURACY_CASES,
                         ids=["-".join(c) for c in ACCURACY_CASES])
def test_accuracy_is_one_on_a_perfectly_separable_set(merge, loss):
    """Accuracy thresholds each score where it separates the classes: 0.5
    for the sigmoid head's probability, else a threshold fitted on the
    training scores (a cosine or manhattan similarity of 0.9 can be a
    negative). Trained briefly, then validated on the training pairs."""
    import keras
    from siamese_research.core import model as M
    from siamese_research.train.trainer import Trainer

    keras.utils.set_random_seed(0)
    model = M.build_model(features=8, units=16, merge=merge, masked=False)
    head = model.head is not None  # a learned score: it must train first
    trainer = Trainer(model, loss_fn=L.build_loss(loss, merge=merge),
                      optimizer=keras.optimizers.Adam(0.02 if head else 1e-4),
                      loss_name=loss, writers=None, verbose=0)
    assert trainer.fixed_threshold == (head and loss == "bce")
    data = _separable()
    trainer.fit(_separable(repeat=40 if head else 1))  # 80 or 2 steps
    logs, _ = trainer.evaluate(data)
    assert logs["val_accuracy"] == 1.0, logs
    if not trainer.fixed_threshold:
        assert 0.0 <= logs["val_threshold"] <= 1.0
