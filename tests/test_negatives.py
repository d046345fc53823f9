"""Negatives: the miner (rank window, labelled positives, margin), its
draws, the online batch-hard and semi-hard miners, the M-per-group sampler,
the cached (GradCache) in-batch loss against the plain one, exact resume
after a mining epoch, and the mining tool on a trained run."""

import csv
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import gradients as G
from siamese_research.core import losses
from siamese_research.core import model as model_lib
from siamese_research.data import batching
from siamese_research.data.mining import MinedPlan, MiningPool
from conftest import run_main, tiny, write_pairs

# Two anchors; candidates are the distinct right texts c0..c5 (in file order).
LEFT = ["q0", "q0", "q0", "q1", "q1", "q1"]
RIGHT = ["c0", "c1", "c2", "c3", "c4", "c5"]
LABEL = [1, 1, 0, 1, 0, 0]


def test_miner_skips_labelled_positives_and_respects_its_window():
    pool = MiningPool(LEFT, RIGHT, LABEL)
    assert pool.anchors == ["q0", "q1"] and pool.candidates == RIGHT
    assert pool.rows.tolist() == [0, 1, 3]  # one triplet per positive pair
    # q0's nearest are its own positives c1 and c0, then c5 > c3 > c2 > c4.
    scores = np.array([[0.9, 0.95, 0.2, 0.5, 0.1, 0.6],
                       [0.8, 0.7, 0.6, 0.99, 0.5, 0.4]])
    window = pool.window(scores, lo=1, hi=3)
    # q0 (two triplets): non-positives ranked c5, c3, c2, c4 -> ranks 1..2.
    np.testing.assert_array_equal(window[0], [3, 2])
    np.testing.assert_array_equal(window[1], [3, 2])
    # q1: non-positives c0, c1, c2, c4, c5 (its positive c3 left out).
    np.testing.assert_array_equal(window[2], [1, 2])
    assert pool.window(scores, lo=0, hi=1)[:, 0].tolist() == [5, 5, 0]
    # A window past the candidates pads with -1.
    assert pool.window(scores, lo=3, hi=6)[2].tolist() == [4, 5, -1]
    # Rows: a candidate's first row holding it.
    assert pool.rows_of(np.array([[5, -1]])).tolist() == [[5, -1]]


def test_a_candidate_is_a_text_once_and_never_a_positive_of_its_anchor():
    # "x" is the right text of rows 0 and 2; "b"'s labelled positive is "x".
    pool = MiningPool(["a", "a", "b", "b"], ["x", "y", "x ", "z"], [1, 0, 1, 0])
    assert pool.candidates == ["x", "y", "z"] and pool.candidate_rows.tolist() == [0, 1, 3]
    assert [p.tolist() for p in pool.positives] == [[0], [0]]
    scores = np.array([[0.9, 0.8, 0.1], [0.9, 0.1, 0.8]])
    window = pool.window(scores, lo=0, hi=2)
    assert window.tolist() == [[1, 2], [2, 1]]  # "x" left out of both
    assert pool.rows_of(window).tolist() == [[1, 3], [3, 1]]


def test_miner_margin_keeps_negatives_below_the_positive_minus_margin():
    pool = MiningPool(LEFT, RIGHT, LABEL)
    scores = np.array([[0.9, 0.6, 0.2, 0.5, 0.1, 0.65],
                       [0.8, 0.7, 0.6, 0.99, 0.5, 0.4]])
    window = pool.window(scores, lo=0, hi=3, margin=0.1)
    # Triplet of (q0, c0), positive 0.9: c5 0.65, c3 0.5, c2 0.2 all <= 0.8.
    assert window[0].tolist() == [5, 3, 2]
    # Triplet of (q0, c1), positive 0.6: only c2 (0.2) and c3 (0.5) <= 0.5.
    assert window[1].tolist() == [3, 2, -1]
    # (q1, c3) at 0.99: c0 0.8, c1 0.7, c2 0.6 all kept.
    assert window[2].tolist() == [0, 1, 2]


def test_mined_draws_stay_in_the_window_and_are_seeded():
    pool = MiningPool(LEFT, RIGHT, LABEL)
    window = pool.rows_of(np.array([[3, 2], [5, -1], [-1, -1]]))
    plan = MinedPlan(pool, window)
    assert plan.summary() == {"triplets": 3, "mean_window": 1.0, "empty_windows": 1}
    draws = np.stack([plan.draw(seed=0, epoch=e) for e in range(40)])
    assert draws[:, :, 0].tolist() == [[0, 1, 3]] * 40  # the positive rows
    assert set(draws[:, 0, 1]) == {2, 3} and set(draws[:, 1, 1]) == {5}
    # The empty window: uniform over q1's non-positives, never c3.
    assert set(draws[:, 2, 1]) <= {0, 1, 2, 4, 5} and len(set(draws[:, 2, 1])) > 2
    np.testing.assert_array_equal(plan.draw(0, 7), plan.draw(0, 7))
    assert any((plan.draw(0, e) != plan.draw(1, e)).any() for e in range(5))


# A hand-made batch: rows 0, 1 of group 0, rows 2, 3 of group 1;
# BATCH_D[i, j] = d(anchor_i, positive_j).
BATCH_D = np.array([[0.1, 0.5, 0.3, 0.9],
                    [0.4, 0.2, 0.8, 0.7],
                    [0.6, 0.35, 0.2, 0.3],
                    [0.5, 0.9, 0.1, 0.4]], np.float32)
BATCH_GROUP = np.array([0, 0, 1, 1], np.float32)


def test_batch_hard_picks_each_anchors_hardest_positive_and_negative():
    d, group = BATCH_D, BATCH_GROUP
    hard = losses.build_loss("batch_hard_triplet", merge="cosine", margin=0.25)
    loss, active, d_pos, d_neg, valid = (np.asarray(x) for x in hard.mine(group, d))
    np.testing.assert_allclose(d_pos, [0.5, 0.4, 0.3, 0.4])  # farthest positive
    np.testing.assert_allclose(d_neg, [0.3, 0.7, 0.35, 0.5])  # nearest negative
    np.testing.assert_allclose(loss, np.maximum(d_pos - d_neg + 0.25, 0), atol=1e-6)
    assert active.tolist() == [1, 0, 1, 1] and valid.tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(np.asarray(hard.miner_stats(group, d)),
                               [0.75, 0.4, 0.4625], atol=1e-6)
    # Keras's mean over anchors.
    assert float(hard(group, d)) == pytest.approx(float(np.mean(loss)), abs=1e-6)


def test_semi_hard_picks_the_nearest_negative_beyond_the_positive():
    d, group = BATCH_D, BATCH_GROUP
    semi = losses.build_loss("batch_semi_hard_triplet", merge="cosine", margin=0.25)
    _, active, d_pos, d_neg, _ = (np.asarray(x).reshape(4, 4) if np.size(x) == 16
                                  else np.asarray(x) for x in semi.mine(group, d))
    # Anchor 0, positive 0 (0.1): negatives 0.3, 0.9 -> nearest beyond is 0.3;
    # positive 1 (0.5): 0.9 is the only one beyond it.
    assert d_neg[0, 0] == pytest.approx(0.3) and d_neg[0, 1] == pytest.approx(0.9)
    # Anchor 3, positive 3 (0.4): negatives 0.5, 0.9 -> 0.5; positive 2 (0.1): 0.5.
    assert d_neg[3, 3] == pytest.approx(0.5) and d_neg[3, 2] == pytest.approx(0.5)
    # Anchor 1, positive 0 (0.4): negatives 0.8, 0.7 both beyond -> 0.7.
    assert d_neg[1, 0] == pytest.approx(0.7)
    # None beyond: anchor 2, positive... (0.35 and 0.6 are its negatives;
    # with positive 2 at 0.2 the nearest beyond is 0.35).
    assert d_neg[2, 2] == pytest.approx(0.35)
    # Fallback: the farthest negative when none is beyond the positive.
    d2 = d.copy()
    d2[2, 3] = 0.7  # anchor 2's positive 3 beyond both its negatives
    _, _, _, d_neg2, _ = semi.mine(group, d2)
    assert float(np.asarray(d_neg2).reshape(4, 4)[2, 3]) == pytest.approx(0.6)
    # Only pairs of one group count; anchor 0's positive 1 is inactive
    # (0.5 - 0.9 + 0.25 < 0), positive 0 active (0.1 - 0.3 + 0.25 > 0).
    assert active[0].tolist() == [1, 0, 0, 0]


def test_per_group_blocks():
    groups = np.array(["a"] * 5 + ["b"] * 2 + ["c"])
    order = batching.per_group_order(groups, 2, seed=3, epoch=0)
    assert len(order) == 6 + 2 + 2  # ceil(n_g / 2) * 2 per group
    blocks = order.reshape(-1, 2)
    assert all(len(set(groups[b])) == 1 for b in blocks)
    assert set(order) == set(range(8))  # every row, short blocks refilled
    assert len(batching.per_group_order(groups, 2, seed=3, epoch=1)) == len(order)
    np.testing.assert_array_equal(order, batching.per_group_order(groups, 2, 3, 0))
    # With a batch of 3 blocks, 5 blocks are filled to 6 drawn again: no
    # batch is a lone block (whose anchors would have no negative).
    for epoch in range(5):
        batched = batching.per_group_order(groups, 2, 3, epoch, batch_size=6)
        assert len(batched) == 12
        assert all(len(set(groups[b])) > 1 for b in batched.reshape(-1, 6))


def _in_batch(encoder, objective, n=10, **kwargs):
    keras.utils.set_random_seed(0)
    model = model_lib.build_model(encoder=encoder, units=8, features=16, merge="cosine",
                                  objective=objective, **kwargs)
    model_lib.build_variables(model, features=16, vocab_size=kwargs.get("vocab_size", 0))
    rng = np.random.default_rng(0)
    if encoder == "bag":
        make = lambda: rng.integers(1, 50, size=(n, 6)).astype("int32")  # noqa: E731
    else:
        make = lambda: rng.normal(size=(n, 5, 16)).astype("float32")  # noqa: E731
    inputs = tuple(make() for _ in model.branches)
    return model, inputs, losses.build_loss("mnrl", merge="cosine")


def _dense(grads, variables):
    return [np.asarray(G.dense(g, v)) for g, v in zip(grads, variables)]


def _assert_close(branches, other, variables):
    """Each branch's gradients equal to float32 rounding: relative to the
    largest entry of each variable's gradient."""
    assert len(branches) == len(other)
    for p, c in zip(branches, other):
        for x, y in zip(_dense(p, variables), _dense(c, variables)):
            assert np.abs(x - y).max() / max(float(np.abs(x).max()), 1e-8) < 1e-5


@pytest.mark.parametrize("encoder,objective,kwargs", [
    ("lstm", "in_batch", {}),
    ("bag", "in_batch_negatives", {"vocab_size": 50}),
])
def test_cached_mnrl_equals_plain_in_loss_and_branch_gradients(encoder, objective,
                                                              kwargs, monkeypatch):
    model, inputs, loss_fn = _in_batch(encoder, objective, **kwargs)
    label = tf.ones(10)
    plain = G.branch_gradients(model, loss_fn, inputs, label)
    calls = []
    gradient = tf.GradientTape.gradient
    monkeypatch.setattr(tf.GradientTape, "gradient",
                        lambda self, *a, **k: calls.append(1) or gradient(self, *a, **k))
    cached = G.branch_gradients(model, loss_fn, inputs, label, mini_batch_size=4)
    # One backward pass of the loss to the encodings, then one per chunk
    # (10 rows in chunks of 4: 3) for all the calls at once.
    assert len(calls) == 1 + 3
    monkeypatch.undo()
    assert float(cached.loss) == pytest.approx(float(plain.loss), rel=1e-6)
    np.testing.assert_allclose(np.asarray(cached.predictions),
                               np.asarray(plain.predictions), atol=1e-6)
    assert len(cached.branches) == len(model.branches)
    _assert_close(plain.branches, cached.branches, plain.encoder_vars)
    # The chunked check through the real variables: the calls' sum.
    total = G.total_gradient(model, loss_fn, inputs, label, mini_batch_size=4)
    assert G.sum_error(total, cached.branches, cached.encoder_vars) <= 1e-6
    assert G.sum_error(total, plain.branches, plain.encoder_vars) <= 1e-5


def test_cached_pass_replays_each_chunks_random_state():
    """With dropout, one chunk (m = B) must draw in its second pass the masks
    of its first: then the cached gradients are the plain pass's, which
    draws each call's masks once from the same state."""
    keras.utils.set_random_seed(0)
    model = model_lib.build_model(encoder="lstm", units=8, features=16, merge="cosine",
                                  objective="in_batch", encoder_args={"dropout": 0.5})
    model_lib.build_variables(model, features=16)
    rng = np.random.default_rng(0)
    inputs = tuple(rng.normal(size=(6, 5, 16)).astype("float32") for _ in range(2))
    loss_fn = losses.build_loss("mnrl", merge="cosine")
    state = [v.numpy() for v in model.non_trainable_variables]
    plain = G.branch_gradients(model, loss_fn, inputs, tf.ones(6))
    after = [v.numpy() for v in model.non_trainable_variables]
    assert any((a != b).any() for a, b in zip(state, after))  # dropout drew
    for v, value in zip(model.non_trainable_variables, state):
        v.assign(value)
    cached = G.branch_gradients(model, loss_fn, inputs, tf.ones(6), mini_batch_size=6)
    assert float(cached.loss) == pytest.approx(float(plain.loss), rel=1e-6)
    _assert_close(plain.branches, cached.branches, plain.encoder_vars)
    for v, value in zip(model.non_trainable_variables, after):  # the same state left
        np.testing.assert_array_equal(v.numpy(), value)


def test_mnrl_triplets_keep_an_anchor_once_in_a_batch(tmp_path):
    """mnrl with a negative per row: an anchor's other positive in its batch
    would be a false negative, so its rows are spread over the batches."""
    from siamese_research import data as data_lib

    path = tmp_path / "pairs.csv"
    with open(path, "w") as f:
        f.write("q,label,a\n")
        for i in range(8):
            for j in range(3):
                f.write(f"question{i} words,1,answer{i} {j} words\n")
            f.write(f"question{i} words,0,other{i} words\n")
    config = tiny(data=str(path), loss="mnrl", merge="cosine", triplets="from_corpus",
                  batch_size=8, validation_split=0.0, run_dir=str(tmp_path / "run"))
    data = data_lib.load(config)
    dataset = data_lib.train_dataset(data.train, config)
    for epoch in range(3):
        items = dataset.epoch_items(epoch)
        assert len(items) == 24
        for batch in items.reshape(3, 8, 2):
            anchors = data.train.groups[batch[:, 0]]
            assert len(set(anchors)) == 8  # 8 questions, each once


def test_cached_pass_traced_on_a_short_batch():
    """A traced step takes any batch size: its chunks are a loop over
    ceil(n / m) chunks, the last one short (5 rows in chunks of 4: 4 and 1)."""
    model, inputs, loss_fn = _in_batch("bag", "in_batch", vocab_size=50)
    spec = tf.TensorSpec([None, 6], tf.int32)
    step = tf.function(lambda a, p: G.branch_gradients(
        model, loss_fn, (a, p), tf.ones(tf.shape(a)[:1]), mini_batch_size=4).branches,
        input_signature=[spec, spec])
    for n in (5, 10, 3):
        batch = tuple(x[:n] for x in inputs)
        plain = G.branch_gradients(model, loss_fn, batch, tf.ones(n))
        _assert_close(plain.branches, step(*batch), plain.encoder_vars)
    assert len(step._list_all_concrete_functions()) == 1  # one trace for all


def _hard_config(data, run_dir, **overrides):
    base = dict(data=data, run_dir=str(run_dir), loss="triplet", negatives="hard",
                mine_range="0,3", merge="cosine", encoder="bag", features=8, units=4,
                max_tokens=60, max_length=8, oov_buckets=4, batch_size=4, epochs=2,
                validation_split=0.0, steps_per_execution=1, log_every=2,
                grad_check_every=2, histogram_every=100, projector_points=0,
                seed=5, margin=0.5, learning_rate=0.05)
    base.update(overrides)
    return tiny(**base)


def test_resume_after_a_mining_epoch_is_bit_identical(tmp_path, monkeypatch):
    """A run interrupted in epoch 2 (after its mining at that epoch's start)
    and resumed ends on the uninterrupted run's weights: the resumed
    process reads the mining back rather than mining with mid-epoch weights."""
    from siamese_research import runner as training
    from siamese_research.runner import fit
    from siamese_research.train import mining as mining_lib

    data = write_pairs(tmp_path / "pairs.csv", questions=10)  # 10 positives: 3 steps
    straight = training.run(_hard_config(data, tmp_path / "straight"))
    assert straight["exit_code"] == 0

    class SigintAt(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if self.model.global_step == 4:  # epoch 2's second step is next
                signal.raise_signal(signal.SIGINT)

    hooks = []
    actions = fit.actions

    def with_sigint(*args):
        out = actions(*args)
        hooks.append(out)
        return out + [SigintAt()]

    monkeypatch.setattr(fit, "actions", with_sigint)
    first = training.run(_hard_config(data, tmp_path / "run"))
    assert first["exit_code"] == 130 and first["step"] == 5
    monkeypatch.setattr(fit, "actions", lambda *a: hooks.append(actions(*a)) or hooks[-1])
    resumed = training.run(_hard_config(data, tmp_path / "run"))
    assert resumed["exit_code"] == 0 and resumed["step"] == 6
    miner = next(h for h in hooks[-1] if isinstance(h, mining_lib.Mining))
    assert miner.minings == 0 and miner.mined_at == 1  # read back, not mined
    assert sorted(os.listdir(tmp_path / "run" / "mined")) == ["epoch-0000.npz",
                                                             "epoch-0001.npz"]
    for a, b in zip(straight["model"].trainable_variables,
                    resumed["model"].trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_mine_tool_writes_triplets_a_run_can_train_on(text_run, tmp_path):
    """siamese-mine's main (in this process: the command line's code path)."""
    from siamese_research import runner as training
    from siamese_research.tools import mine

    data = str(text_run.parent / "train.csv")
    out = tmp_path / "triplets.tsv"
    proc = run_main(f"--run_dir={text_run}", f"--data={data}", f"--out={out}",
                    "--mine_range=0,2", "--num_negatives=2", "--seed=1", main=mine.main)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "12 triplets from 6 positive pairs of 6 anchors" in proc.stdout
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    with open(data, newline="") as f:
        positives = {(r["q"], r["a"]) for r in csv.DictReader(f) if r["label"] == "1"}
    assert len(rows) == 12
    for row in rows:
        assert (row["anchor"], row["positive"]) in positives
        assert (row["anchor"], row["negative"]) not in positives  # never a positive
        assert int(row["negative_rank"]) in (0, 1)
    # ... and a triplet run trains on the file as it is.
    result = training.run(tiny(data=str(out), loss="triplet", merge="cosine",
                               encoder="bag", epochs=1, batch_size=4,
                               validation_split=0.0, max_tokens=50, max_length=8,
                               projector_points=0, run_dir=str(tmp_path / "trained")))
    assert result["exit_code"] == 0 and result["step"] == 3  # 12 triplets, batch 4

    for flag, words in (("--mine_range=3,1", "--mine_range=3,1: needs 0 <= lo < hi"),
                        ("--mine_margin=0.1", "--mine_margin is on the merge's distance")):
        bad = run_main(f"--run_dir={text_run}", f"--data={data}",
                       f"--out={tmp_path / 'x.csv'}", flag, main=mine.main)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and words in lines[0], bad.stderr
        assert not os.path.exists(tmp_path / "x.csv")
