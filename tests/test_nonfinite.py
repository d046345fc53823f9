"""The non-finite guard: stop (naming step and variable) or skip and count."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research import data as D
from siamese_research.core import model as M
from siamese_research.train.trainer import NonFiniteError, Trainer
from conftest import run_main


def _planted(n=16, bad_row=9, f=8):
    """Pairs whose row `bad_row` carries an inf: with batch 4 and no
    shuffling, it is in the 3rd batch (step 3)."""
    rng = np.random.default_rng(0)
    left = rng.standard_normal((n, 5, f)).astype("float32")
    left[bad_row, 2, 3] = np.inf
    return D.Pairs(left, rng.standard_normal((n, 5, f)).astype("float32"),
                   np.full(n, 5), np.full(n, 5), rng.integers(0, 2, n).astype("float32"))


def _trainer(mode):
    keras.utils.set_random_seed(0)
    model = M.build_model(features=8, units=4)
    return model, Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                          optimizer=keras.optimizers.RMSprop(1e-3), writers=None,
                          verbose=0, on_nonfinite=mode, steps_per_execution=2)


def test_planted_inf_stops_at_its_step_without_applying_it():
    model, trainer = _trainer("stop")
    data = D.PairDataset(_planted(), 4, shuffle=False)
    snapshots = []
    with pytest.raises(NonFiniteError) as e:
        trainer.fit(data, epochs=1, callbacks=[keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: snapshots.append(
                [v.numpy().copy() for v in model.trainable_variables]))])
    assert e.value.step == 3
    # inf saturates the LSTM: the loss stays finite, its kernel gradient does not.
    assert e.value.what == "gradient of siamese/encoder/lstm/lstm_cell/kernel"
    # Neither the bad step nor step 4, the rest of its compiled call, changed
    # a weight: they are finite and moved only by steps 1 and 2.
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)
    assert int(trainer.global_step.numpy()) == 2  # the state is step 2's
    for a, b in zip(snapshots[-1], model.trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


def test_skip_drops_the_update_and_counts_it():
    model, trainer = _trainer("skip")
    data = D.PairDataset(_planted(), 4, shuffle=False)
    trainer.fit(data, epochs=1)
    assert int(trainer.global_step.numpy()) == 4
    assert int(trainer.nonfinite_count.numpy()) == 1
    assert int(trainer.nonfinite_step.numpy()) == 3
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)


def test_nonfinite_gradient_names_the_variable():
    """A finite loss with an infinite gradient names the variable."""
    keras.utils.set_random_seed(0)
    model = M.build_model(features=8, units=4)

    def loss_fn(y, p, sample_weight=None):
        # sqrt'(0) = inf: finite loss, infinite gradient into the head.
        return tf.reduce_mean(tf.sqrt(tf.abs(p - p)))

    trainer = Trainer(model, loss_fn=loss_fn, optimizer=keras.optimizers.SGD(0.1),
                      writers=None, verbose=0)
    data = D.PairDataset(_planted(bad_row=0, n=4), 4, shuffle=False)
    data.pairs.left[0, 2, 3] = 0.0
    data = D.PairDataset(data.pairs, 4, shuffle=False)
    with pytest.raises(NonFiniteError) as e:
        trainer.fit(data, epochs=1)
    assert e.value.step == 1
    assert e.value.what.startswith("gradient of siamese/")


def test_huge_learning_rate_exits_3_and_keeps_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # train.py's main in this process: its return value is the exit status.
    proc = run_main("--num_samples=200", "--timesteps=6", "--features=8", "--units=4",
                    "--batch_size=8", "--epochs=1", "--optimizer=sgd",
                    "--learning_rate=1e38", f"--run_dir={run_dir}", "--verbose=0")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    assert "non-finite" in lines[0] and f"ckpt-{step - 1}" in lines[0]
    # The kept checkpoint holds finite weights.
    ckpt = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    reader = tf.train.load_checkpoint(ckpt)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name


def test_stop_writes_no_summary_for_steps_after_the_bad_one(tmp_path):
    from siamese_research.summaries import views as summaries
    from conftest import read_tags

    keras.utils.set_random_seed(0)
    model = M.build_model(features=8, units=4)
    trainer = Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                      optimizer=keras.optimizers.RMSprop(1e-3),
                      writers=summaries.create_writers(str(tmp_path)), verbose=0,
                      on_nonfinite="stop", steps_per_execution=4, log_every=2,
                      histogram_every=4, grad_check_every=2)
    with pytest.raises(NonFiniteError):
        trainer.fit(D.PairDataset(_planted(), 4, shuffle=False), epochs=1)
    trainer.flush()
    tags, _ = read_tags(str(tmp_path / "train"))
    # Step 3 is bad; step 4 (a log, check and histogram step) ran in the same
    # call but applied nothing, so nothing may be filed under it.
    assert tags["loss"] == [1, 2]
    assert all(max(steps) < 3 for tag, steps in tags.items() if steps), tags


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_nonfinite_step_moves_nothing_under_a_mirrored_strategy(mode):
    """MirroredStrategy, even over one device, applies under a merge_call;
    a bad step must apply nothing there either, not a zero update (with
    Adam a zero gradient still moves the weights)."""
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = M.build_model(features=8, units=4)
        optimizer = keras.optimizers.Adam(0.1)
    trainer = Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                      optimizer=optimizer, strategy=strategy, writers=None, verbose=0,
                      on_nonfinite=mode, steps_per_execution=1)
    snapshots = []
    data = D.PairDataset(_planted(), 4, shuffle=False)  # step 3 is bad
    run = lambda: trainer.fit(data, epochs=1, callbacks=[keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: snapshots.append(
            [v.numpy().copy() for v in model.trainable_variables]))])
    if mode == "stop":
        with pytest.raises(NonFiniteError):
            run()
    else:
        run()
    # Step 3's call changed nothing (snapshots after steps 2 and 3, or the
    # state the stop left).
    after_2 = snapshots[1]
    after_3 = snapshots[2] if mode == "skip" else [v.numpy() for v in
                                                   model.trainable_variables]
    for a, b in zip(after_2, after_3):
        np.testing.assert_array_equal(a, b)
    assert int(optimizer.iterations.numpy()) == (2 if mode == "stop" else 3)
