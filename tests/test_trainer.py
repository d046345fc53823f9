import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research import data as D
from siamese_research.core import gradients as G
from siamese_research.core import model as M
from siamese_research.summaries import views as summaries
from siamese_research.train import readout
from siamese_research.train import views as views_lib
from siamese_research.train.trainer import Trainer
from conftest import Probe, read_tags
import _reference as R


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
    cadences = dict(log_every=1, histogram_every=2, grad_check_every=1)
    return Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                   optimizer=keras.optimizers.RMSprop(1e-3), writers=writers,
                   verbose=0, **{**cadences, **kw})


def _steps(trainer, batches, code=0):
    """Runs `batches` (a list of ((left, right), label, weight)) as one
    compiled call of `StepLoop.run`, its last step a view step of `code`."""
    it = iter(tf.data.Dataset.from_generator(
        lambda: iter(batches), output_signature=tf.nest.map_structure(
            lambda t: tf.TensorSpec([None] * len(t.shape), t.dtype), batches[0])))
    codes = np.zeros(max(len(batches), 20), np.int32)
    codes[len(batches) - 1] = code
    return trainer.loop.run(it, tf.constant(len(batches)), tf.constant(codes))


def test_variable_lengths_never_retrace(tmp_path):
    """Padded data: every batch is trimmed to its own longest rows, and
    neither the train call nor the eval step is traced again."""
    trainer = _trainer(tmp_path)
    padded = _pairs(24, 17)
    padded.left_length[:] = np.repeat([5, 9, 17], 8)
    padded.right_length[:] = np.repeat([7, 11, 19], 8)
    data = D.PairDataset(padded, 8, shuffle=False)
    trainer.fit(data, data, epochs=2)
    counts = trainer.tracing_count
    assert counts["train_steps"] == 1
    assert counts["eval_step"] == 1
    assert int(trainer.global_step.numpy()) == 6


def test_multi_step_runs_exactly_n_steps_and_traces_once_per_time_shape():
    trainer = _trainer()
    data = D.PairDataset(_pairs(40, 6), 4)  # 10 batches per epoch
    run = trainer.loop.run
    it = iter(data.epoch(0))
    no = tf.zeros([20], tf.int32)  # no view step
    run(it, tf.constant(3), no)
    assert int(trainer.global_step.numpy()) == 3
    run(it, tf.constant(5), no)
    assert int(trainer.global_step.numpy()) == 8
    # A new epoch's iterator (another order, other rows) reuses the trace.
    it2 = iter(D.PairDataset(_pairs(40, 6, seed=1), 4).epoch(1))
    run(it2, tf.constant(2), no)
    assert int(trainer.global_step.numpy()) == 10
    assert trainer.tracing_count["train_steps"] == 1
    # Fixed-length data of another length has another static time dim: one
    # more trace (by design: it lets an RNN unroll; a run has one length).
    it3 = iter(D.PairDataset(_pairs(40, 11, seed=1), 4).epoch(0))
    run(it3, tf.constant(1), no)
    assert trainer.tracing_count["train_steps"] == 2
    # fit's path: row indices, gathered in the step from the data's arrays.
    data = D.PairDataset(_pairs(40, 6, seed=2), 4)
    run(iter(data.index_epoch(1)), tf.constant(2), no, data.source)
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
    history = trainer.fit(train, epochs=3, callbacks=[
        Probe(on_call=calls.append, stop=lambda: len(calls) >= 2)])
    assert history["interrupted"]
    assert int(trainer.global_step.numpy()) == 4


def test_samples_per_second_is_the_pairs_over_the_time_since_the_last_log_step(
        tmp_path, monkeypatch):
    """The clock is read at the epoch's start and at each call's start and
    end; a log step inside a call is timed by sharing the call's wall time
    evenly among its steps. A fake clock that advances 100 s a reading makes
    the rate exact."""
    from siamese_research.train import diagnostics

    readings = iter(range(0, 10**6, 100))
    monkeypatch.setattr(diagnostics.time, "perf_counter", lambda: next(readings))
    trainer = _trainer(tmp_path, log_every=3)
    trainer.fit(D.PairDataset(_pairs(12, 5), 4), epochs=1)  # steps 1, 2, 3
    trainer.flush()
    _, acc = read_tags(str(tmp_path / "train"))
    rates = {e.step: float(tf.make_ndarray(e.tensor_proto))
             for e in acc.Tensors("samples_per_second")}
    # One call holds log steps 1 (the first) and 3: the epoch starts at 0,
    # the call at 100 and ends at 200, so step 1 ends at 100 + 100 / 3.
    # Step 1 trained 4 pairs since the start, steps 2-3 eight more.
    assert rates == {1: pytest.approx(4 / (100 + 100 / 3)),
                     3: pytest.approx(8 / (200 - (100 + 100 / 3)))}


def test_calls_end_at_every_multiple_of_a_callbacks_step_interval():
    trainer = _trainer(steps_per_execution=20)
    seen = []
    trainer.fit(D.PairDataset(_pairs(40, 6), 4), epochs=1,
                callbacks=[Probe(on_call=seen.append, step_interval=3)])
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
        trainer.fit(data, epochs=1)
        results.append([v.numpy() for v in trainer.model.trainable_variables])
        # A check ran and held; with jit the math went through the XLA
        # function.
        assert trainer.last_sum_error is not None and trainer.last_sum_error <= 1e-6
        if jit:
            assert trainer.step._math.experimental_get_tracing_count() >= 1
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


def test_view_steps_are_the_first_the_last_and_every_cadence_multiple(tmp_path):
    diag = _trainer(tmp_path, log_every=10, histogram_every=100,
                    grad_check_every=10).schedule
    first, last = 1, 205
    views = [s for s in range(first, last + 1) if diag.due(s, first, last)]
    assert views == [1] + list(range(10, 201, 10)) + [205]
    assert diag.due(1, first, last) == (True, True, True)  # everything, first
    assert diag.due(205, first, last) == (True, True, True)  # ... and last
    assert diag.due(100, first, last) == (True, True, True)
    assert diag.due(30, first, last) == (True, True, False)
    # next_due walks the same schedule.
    walked, step = [], 0
    while (step := diag.next_due(step, first, last)) <= last:
        walked.append(step)
    assert walked == views
    # A resumed run starts a new schedule at its own first step.
    assert diag.due(57, 57, 205) == (True, True, True)
    assert diag.due(58, 57, 205) is None
    silent = _trainer(None).schedule  # no writers: nothing is due
    assert silent.due(10, 1, 20) is None and silent.next_due(0, 1, 20) == 21


def _events(folder) -> dict:
    """{(tag, step): values} of every tensor summary in `folder` (a
    histogram's values are its [left, right, count] rows)."""
    tags, acc = read_tags(folder)
    out = {}
    for tag in tags:
        for e in acc.Tensors(tag):
            assert (tag, e.step) not in out, f"{tag} written twice at step {e.step}"
            out[(tag, e.step)] = tf.make_ndarray(e.tensor_proto)
    return out


def test_a_call_holds_its_view_steps_and_writes_what_one_call_each_would(tmp_path):
    """Calls run steps_per_execution steps whatever view steps fall in them
    (only the epoch's end cuts one), and a call that holds several view
    steps writes the same tags, at the same steps, with the same values
    (every scalar and histogram), as calls that end at each view step."""
    data = D.PairDataset(_pairs(52, 5), 4)  # 13 steps an epoch
    cadences = dict(log_every=3, histogram_every=5, grad_check_every=4)
    written, ends = {}, {}
    for spe in (8, 1):
        trainer = _trainer(tmp_path / str(spe), steps_per_execution=spe, **cadences)
        seen = []
        trainer.fit(data, epochs=2, callbacks=[Probe(on_call=seen.append)])
        trainer.flush()
        written[spe], ends[spe] = _events(str(tmp_path / str(spe) / "train")), seen
    assert ends[8] == [8, 13, 21, 26]  # view steps do not end calls
    assert ends[1] == list(range(1, 27))
    assert written[8].keys() == written[1].keys()
    assert {step for tag, step in written[8] if tag == "loss"} == \
        {1, 3, 6, 9, 12, 15, 18, 21, 24, 26}
    assert {step for tag, step in written[8] if tag.startswith("gradients/")} == \
        {1, 5, 10, 15, 20, 25, 26}
    for key, value in written[1].items():
        if key[0] != "samples_per_second":  # (wall time)
            np.testing.assert_allclose(written[8][key], value, rtol=1e-6, atol=1e-9,
                                       err_msg=str(key))
    silent = _trainer(None, steps_per_execution=20)
    seen = []
    silent.fit(D.PairDataset(_pairs(120, 5), 4), epochs=1,
               callbacks=[Probe(on_call=seen.append)])
    assert seen == [20, 30]


def test_summaries_land_on_every_due_step_and_the_first_and_last(tmp_path):
    trainer = _trainer(tmp_path, steps_per_execution=50, log_every=3,
                       histogram_every=6, grad_check_every=3)
    data = D.PairDataset(_pairs(40, 5), 4)  # 10 steps per epoch
    trainer.fit(data, epochs=2)
    trainer.flush()
    tags, acc = read_tags(str(tmp_path / "train"))
    logged = [1, 3, 6, 9, 12, 15, 18, 20]
    assert tags["loss"] == logged
    assert tags["samples_per_second"] == logged
    assert tags["branch_gradients/left_norm"] == logged
    assert tags["branch_gradients/sum_error"] == logged
    assert tags["gradients/total/siamese/encoder/lstm/lstm_cell/kernel"] == [1, 6, 12, 18,
                                                                             20]
    assert tags["weights/siamese/encoder/lstm/lstm_cell/kernel"] == [1, 6, 12, 18, 20]
    errors = [float(tf.make_ndarray(e.tensor_proto))
              for e in acc.Tensors("branch_gradients/sum_error")]
    assert max(errors) <= 1e-6
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
        if use_indices:
            trainer.fit(data, epochs=1)
        else:
            # The reference, built with numpy: the epoch's order, each batch
            # cut to its own longest rows by hand, one step at a time.
            order = D.epoch_order(12, 3, 0)
            batches = []
            for rows in np.split(order, 3):
                lx = padded.left[rows][:, :padded.left_length[rows].max()]
                rx = padded.right[rows][:, :padded.right_length[rows].max()]
                batches.append(((tf.constant(lx), tf.constant(rx)),
                                tf.constant(padded.label[rows]), tf.ones(4)))
            _steps(trainer, batches)
        assert int(trainer.global_step.numpy()) == 3
        finals.append([v.numpy() for v in trainer.model.trainable_variables])
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_views_written_at_step_s_are_step_s_s(tmp_path):
    """The loss and branch norms filed under step 3 are those of step 3's
    batch at the weights after step 2, recomputed here eagerly."""
    pairs = _pairs(24, 5)
    data = D.PairDataset(pairs, 4, shuffle=False)
    trainer = _trainer(tmp_path, log_every=3, grad_check_every=3)
    trainer.fit(data, epochs=1)
    trainer.flush()
    _, acc = read_tags(str(tmp_path / "train"))

    def logged(tag):
        return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}

    reference = _trainer()  # the same seed and model, no writers
    batches = list(data.epoch(0))
    for batch in batches[:2]:
        reference.step.math(batch)
    (left, right), label, weight = batches[2]
    bg = G.branch_gradients(reference.model, reference.step.loss_fn, (left, right), label,
                            weight)
    left_norm, right_norm, _ = R.branch_stats(bg.left, bg.right, bg.encoder_vars)
    assert logged("loss")[3] == pytest.approx(float(bg.loss), rel=1e-4)
    assert logged("branch_gradients/left_norm")[3] == pytest.approx(left_norm, rel=1e-3)
    assert logged("branch_gradients/right_norm")[3] == pytest.approx(right_norm, rel=1e-3)


def test_a_calls_readout_is_the_rows_and_histograms_its_view_steps_kept(tmp_path):
    """The loop reads a call's views from the one vector the call returns:
    it unpacks to exactly the slots the step filled, and they hold that
    step's values (each histogram counts every entry of its variable)."""
    trainer = _trainer(tmp_path)
    data = D.PairDataset(_pairs(8, 5), 4, shuffle=False)
    values = _steps(trainer, list(data.epoch(0)), code=views_lib.code((True, True, True)))
    out = readout.unpack(trainer.step, values.numpy(), views=1, histograms=1)
    step, layout = trainer.step, trainer.step.layout
    assert (out.global_step, out.nonfinite_step, out.nonfinite_count) == (2, -1, 0)
    np.testing.assert_array_equal(out.rows[0][0], step.view_rows.numpy()[0])
    np.testing.assert_array_equal(out.histograms[0], step.histogram_rows.numpy()[0])
    scalars = layout.scalars(out.rows[0][0], (True, True, True))
    assert scalars["accuracy"] == pytest.approx(float(step.metrics["accuracy"].result()))
    assert scalars["learning_rate"] == pytest.approx(1e-3)
    assert scalars["branch_gradients/total_norm"] > 0  # the check ran: a real gradient
    assert scalars["branch_gradients/sum_error"] <= 1e-6
    sizes = {f"weights/{v.path}": int(np.prod(v.shape)) for v in step.model.trainable_variables}
    histograms = layout.histogram_arrays(out.histograms[0])
    for tag, size in sizes.items():
        assert histograms[tag][:, 2].sum() == size
    assert histograms["gradients/total/" + step.model.trainable_variables[0].path][:, 2].sum() \
        == sizes["weights/" + step.model.trainable_variables[0].path]


def test_the_run_graph_is_the_branch_pass_the_step_traced(tmp_path):
    """The graph TensorBoard shows is the train step's own branch pass, as
    the step traced it: writing it traces nothing more. It holds the two
    calls of the one encoder and the backward pass. A step that never ran
    traces that same function for it."""
    from siamese_research.summaries import extras as tensorboard_extras

    trainer = _trainer(tmp_path)
    data = D.PairDataset(_pairs(16, 5), 8)
    trainer.fit(data, epochs=1)
    assert trainer.tracing_count["branch_pass"] == 1
    graph = trainer.step.branch_graph(data.element_spec)
    tensorboard_extras.write_branch_graph(trainer.writers[summaries.TRAIN], graph)
    assert trainer.tracing_count["branch_pass"] == 1
    written = [tf.compat.v1.GraphDef.FromString(e.graph_def)
               for path in tf.io.gfile.glob(str(tmp_path / "train" / "events.*"))
               for e in tf.compat.v1.train.summary_iterator(path) if e.graph_def]
    assert len(written) == 1
    names = {n.name for n in written[0].node}
    assert names == {op.name for op in graph.get_operations()}

    def shows_both_calls_and_the_backward(graph, core):
        scopes = {op.name.split("/")[0] for op in graph.get_operations()}
        return (len([s for s in scopes if s.startswith(core)]) == 2  # left, right
                and "gradient_tape" in scopes)

    assert shows_both_calls_and_the_backward(graph, trainer.model.encoder.core.name)
    fresh = _trainer()  # trained nothing: the same function, traced now
    assert fresh.tracing_count["branch_pass"] == 0
    again = fresh.step.branch_graph(data.element_spec)
    assert fresh.tracing_count["branch_pass"] == 1
    assert shows_both_calls_and_the_backward(again, fresh.model.encoder.core.name)
