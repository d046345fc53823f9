import time

import keras
import numpy as np
import tensorflow as tf

from siamese_research import data as D
from siamese_research import model as M
from siamese_research import summaries
from siamese_research.trainer import Trainer
from conftest import read_tags


def _pairs(n, length, f=8, seed=0):
    rng = np.random.default_rng(seed)
    return D.Pairs(rng.standard_normal((n, length, f)).astype("float32"),
                   rng.standard_normal((n, length + 2, f)).astype("float32"),
                   np.full(n, length), np.full(n, length + 2),
                   rng.integers(0, 2, n).astype("float32"))


def _trainer(tmp_path=None, **kw):
    keras.utils.set_random_seed(0)
    model = M.build_model(features=8, units=4)
    writers = summaries.create_writers(str(tmp_path)) if tmp_path else None
    return Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                   optimizer=keras.optimizers.RMSprop(1e-3), writers=writers,
                   verbose=0, log_every=1, histogram_every=2, grad_check_every=1, **kw)


def test_variable_lengths_never_retrace(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.set_input_spec(D.PairDataset(_pairs(4, 5), 4))
    with trainer.writers["train"].as_default():
        for length in (5, 9, 17):
            batch = next(iter(D.PairDataset(_pairs(4, length), 4).epoch(0)))
            trainer.train_step(batch)
            trainer.eval_step(batch)
    counts = trainer.tracing_count
    assert counts["train_step"] == 1
    assert counts["eval_step"] == 1
    assert int(trainer.global_step.numpy()) == 3


def test_multi_step_runs_exactly_n_steps_and_traces_once_per_time_shape():
    trainer = _trainer()
    data = D.PairDataset(_pairs(40, 6), 4)  # 10 batches per epoch
    trainer.set_input_spec(data)
    it = iter(data.epoch(0))
    trainer.train_steps(it, trainer.plan(0, 3))
    assert int(trainer.global_step.numpy()) == 3
    trainer.train_steps(it, trainer.plan(3, 5))
    assert int(trainer.global_step.numpy()) == 8
    # A new epoch's iterator (another order, other rows) reuses the trace.
    it2 = iter(D.PairDataset(_pairs(40, 6, seed=1), 4).epoch(1))
    trainer.train_steps(it2, trainer.plan(8, 2))
    assert int(trainer.global_step.numpy()) == 10
    assert trainer.tracing_count["train_steps"] == 1
    # Fixed-length data of another length has another static time dim: one
    # more trace (by design: it lets an RNN unroll; a run has one length).
    it3 = iter(D.PairDataset(_pairs(40, 11, seed=1), 4).epoch(0))
    trainer.train_steps(it3, trainer.plan(10, 1))
    assert trainer.tracing_count["train_steps"] == 2
    # fit's path: row indices, gathered in the step from the data's arrays.
    data = D.PairDataset(_pairs(40, 6, seed=2), 4)
    trainer.train_steps(iter(data.index_epoch(1)), trainer.plan(11, 2), data.source)
    assert int(trainer.global_step.numpy()) == 13
    assert trainer.tracing_count["train_steps"] == 3


def test_fit_runs_epochs_times_steps_and_reports_validation():
    trainer = _trainer()
    train, val = D.PairDataset(_pairs(20, 6), 8), D.PairDataset(_pairs(8, 6, seed=3), 8)
    history = trainer.fit(train, val, epochs=2)
    assert int(trainer.global_step.numpy()) == 2 * 3  # ceil(20 / 8) = 3
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    for logs in history["epochs"]:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_auc"} <= set(logs)
        assert np.isfinite(logs["val_loss"])


def test_fit_stops_on_request_mid_epoch():
    trainer = _trainer(steps_per_execution=2)
    train = D.PairDataset(_pairs(40, 6), 4)
    calls = []
    history = trainer.fit(train, epochs=3, on_progress=calls.append,
                          should_stop=lambda: len(calls) >= 2)
    assert history["interrupted"]
    assert int(trainer.global_step.numpy()) == 4


def test_samples_per_second_is_the_pairs_over_the_time_since_the_clock_started(
        tmp_path):
    trainer = _trainer(tmp_path)
    trainer.log_every = 3  # segments end at every step (check every 1)
    data = D.PairDataset(_pairs(12, 5), 4)
    trainer.set_input_spec(data)
    trainer._speed_pairs.assign(0.0)
    trainer._speed_since.assign(time.time() - 1000.0)  # as if 1000 s ago
    with trainer.writers["train"].as_default():
        trainer.train_steps(iter(data.index_epoch(0)),
                            trainer.plan(0, 3, data.pairs_in_batches), data.source)
    trainer.flush()
    _, acc = read_tags(str(tmp_path / "train"))
    rates = {e.step: float(tf.make_ndarray(e.tensor_proto))
             for e in acc.Tensors("samples_per_second")}
    assert list(rates) == [3]
    # 12 pairs over 1000 s plus this call's tracing (seconds, not minutes).
    assert 12 / 1100 < rates[3] <= 12 / 1000
    assert float(trainer._speed_pairs.numpy()) == 0.0  # the count starts again
    assert abs(float(trainer._speed_since.numpy()) - time.time()) < 100


def test_calls_end_at_every_multiple_of_progress_every():
    trainer = _trainer(steps_per_execution=20)
    seen = []
    trainer.fit(D.PairDataset(_pairs(40, 6), 4), epochs=1, on_progress=seen.append,
                progress_every=3)
    assert seen == [3, 6, 9, 10]  # 10 steps; the epoch's end as well


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = D.epoch_order(50, seed=3, epoch=1)
    b = D.epoch_order(50, seed=3, epoch=1)
    c = D.epoch_order(50, seed=3, epoch=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a) == list(range(50))


def test_batches_are_trimmed_to_their_longest_sequence():
    pairs = D.Pairs(np.ones((4, 10, 2), "float32"), np.ones((4, 10, 2), "float32"),
                    np.array([3, 5, 2, 4]), np.array([7, 1, 1, 1]),
                    np.zeros(4, "float32"))
    (left, right), _, _ = next(iter(D.PairDataset(pairs, 4, shuffle=False).epoch(0)))
    assert left.shape == (4, 5, 2) and right.shape == (4, 7, 2)


def test_jit_compiled_math_matches_the_plain_step(tmp_path):
    """--jit_compile XLA-compiles the per-batch math; same updates, and the
    summaries around it still land."""
    results = []
    for jit in (False, True):
        trainer = _trainer(tmp_path / str(jit), jit_compile=jit)
        data = D.PairDataset(_pairs(16, 6), 4, shuffle=False)
        trainer.set_input_spec(data)
        trainer.fit(data, epochs=1)
        results.append([v.numpy() for v in trainer.model.trainable_variables])
        # A check ran (last_sum_error starts at -1) and held; with jit the
        # math went through the XLA function.
        assert 0.0 <= float(trainer.last_sum_error.numpy()) <= 1e-6
        if jit:
            assert trainer._jit_math.experimental_get_tracing_count() >= 1
        tags, _ = read_tags(str(tmp_path / str(jit) / "train"))
        assert tags["loss"] == [1, 2, 3, 4]
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fixed_length_batches_have_a_static_time_dim_padded_ones_do_not():
    fixed = D.PairDataset(_pairs(8, 5), 4)
    assert fixed.fixed_length
    (left, right), _, _ = fixed.epoch(0).element_spec
    assert left.shape[1] == 5 and right.shape[1] == 7
    padded = _pairs(8, 5)
    padded.left_length[0] = 3
    data = D.PairDataset(padded, 4)
    assert not data.fixed_length
    (left, right), _, _ = data.epoch(0).element_spec
    assert left.shape[1] is None and right.shape[1] is None
    # The single-step signature stays None in time either way.
    assert fixed.element_spec[0][0].shape[1] is None


def test_segments_end_where_a_summary_is_due(tmp_path):
    trainer = _trainer(tmp_path, steps_per_execution=20)
    trainer.log_every, trainer.histogram_every, trainer.grad_check_every = 10, 100, 10
    assert trainer.call_length(0, 20) == 10
    assert trainer.call_length(7, 20) == 3
    assert trainer.call_length(10, 5) == 5  # the epoch ends first
    trainer.grad_check_every = 4
    assert trainer.call_length(0, 20) == 4
    silent = _trainer(None, steps_per_execution=20)  # no writers: nothing is due
    assert silent.call_length(7, 20) == 20


def test_a_call_is_planned_as_segments_that_end_where_a_summary_is_due(tmp_path):
    trainer = _trainer(tmp_path, steps_per_execution=20)
    trainer.log_every, trainer.histogram_every, trainer.grad_check_every = 10, 100, 10
    plan = trainer.plan(7, 20, lambda a, b: 4 * (b - a)).numpy()
    assert plan.shape == (2, 20)  # fixed: one trace for every plan
    assert list(plan[0, :4]) == [3, 10, 7, 0] and not plan[0, 3:].any()
    assert list(plan[1, :3]) == [12, 40, 28]
    trainer.grad_check_every = 4  # due at 4, 8, 10, 12, 16, 20
    assert list(trainer.plan(0, 20).numpy()[0, :7]) == [4, 4, 2, 2, 4, 4, 0]
    silent = _trainer(None, steps_per_execution=20)  # one segment: nothing is due
    assert list(silent.plan(7, 20).numpy()[0, :2]) == [20, 0]


def test_summaries_land_on_every_due_step_with_long_calls(tmp_path):
    trainer = _trainer(tmp_path, steps_per_execution=50)
    trainer.log_every, trainer.histogram_every, trainer.grad_check_every = 3, 6, 3
    data = D.PairDataset(_pairs(40, 5), 4)  # 10 steps per epoch
    trainer.fit(data, epochs=2)
    trainer.flush()
    tags, acc = read_tags(str(tmp_path / "train"))
    assert tags["loss"] == [3, 6, 9, 12, 15, 18]
    # The in-graph rate counts the pairs of the steps since the last log
    # step (4 per step here): positive, finite and below any real machine's.
    rates = [float(tf.make_ndarray(e.tensor_proto))
             for e in acc.Tensors("samples_per_second")]
    assert all(0 < r < 1e7 for r in rates), rates
    assert tags["samples_per_second"] == [3, 6, 9, 12, 15, 18]
    assert tags["branch_gradients/sum_error"] == [3, 6, 9, 12, 15, 18]
    assert tags["gradients/total/siamese/encoder/lstm/lstm_cell/kernel"] == [6, 12, 18]
    assert trainer.tracing_count["train_steps"] == 1


def test_gathering_rows_in_the_step_trains_exactly_as_gathered_batches():
    """fit feeds row indices and gathers inside the compiled step; feeding
    the epoch's gathered batches instead must give the same weights."""
    padded = _pairs(12, 6)
    padded.left_length[:] = 6
    padded.left_length[::3] = 2  # rows 0, 3, 6, 9: 2 real steps
    padded.left[::3, 2:] = 0.0
    finals = []
    for use_indices in (True, False):
        trainer = _trainer()
        data = D.PairDataset(padded, 4, seed=3)
        trainer.set_input_spec(data)
        if use_indices:
            trainer.fit(data, epochs=1)
        else:
            # The reference, built with numpy: the epoch's order, each batch
            # cut to its own longest rows by hand, one step at a time.
            order = D.epoch_order(12, 3, 0)
            for rows in np.split(order, 3):
                lx = padded.left[rows][:, :padded.left_length[rows].max()]
                rx = padded.right[rows][:, :padded.right_length[rows].max()]
                trainer.train_step(((tf.constant(lx), tf.constant(rx)),
                                    tf.constant(padded.label[rows]),
                                    tf.ones(4)))
        assert int(trainer.global_step.numpy()) == 3
        finals.append([v.numpy() for v in trainer.model.trainable_variables])
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, atol=1e-6)
