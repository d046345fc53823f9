"""Keras callbacks in Trainer.fit, tf.data input, and the best epoch."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research import data as D
from siamese_research.core import model as M
from siamese_research import runner as training
from siamese_research.errors import DataError
from siamese_research.train.trainer import Trainer
from conftest import tiny


def _pairs(n=24, t=4, f=8, seed=0):
    rng = np.random.default_rng(seed)
    return D.Pairs(rng.standard_normal((n, t, f)).astype("float32"),
                   rng.standard_normal((n, t, f)).astype("float32"),
                   np.full(n, t), np.full(n, t), rng.integers(0, 2, n).astype("float32"))


def _trainer(lr=1e-3):
    keras.utils.set_random_seed(0)
    model = M.build_model(features=8, units=4, masked=False)
    return Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                   optimizer=keras.optimizers.SGD(lr), writers=None, verbose=0,
                   steps_per_execution=2)


class Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_callbacks_see_fit_s_hooks_and_logs(tmp_path):
    trainer = _trainer()
    rec = Recorder()
    log = tmp_path / "log.csv"
    data = D.PairDataset(_pairs(), 8)  # 3 steps an epoch: calls of 2 and 1
    trainer.fit(data, D.PairDataset(_pairs(8, seed=1), 8), epochs=2,
                callbacks=[rec, keras.callbacks.CSVLogger(str(log))])
    kinds = [c[0] for c in rec.calls]
    assert kinds == (["train_begin"] + (["epoch_begin", "batch_end", "batch_end",
                                         "epoch_end"] * 2) + ["train_end"])
    assert [c[1] for c in rec.calls if c[0] == "batch_end"] == [1, 2, 1, 2]  # last batch
    epoch_end = [c for c in rec.calls if c[0] == "epoch_end"][0]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_auc"} <= set(epoch_end[2])
    rows = list(csv.DictReader(open(log)))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_loss" in rows[0]


def test_early_stopping_ends_the_run_and_restores_best_weights():
    # min_delta=1: no epoch after the first counts as better, so patience 1
    # stops after epoch 2 and restores epoch 1's weights.
    trainer = _trainer(lr=0.5)
    data = D.PairDataset(_pairs(), 8)
    snapshots = []
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=1.0,
                                         restore_best_weights=True)
    history = trainer.fit(data, data, epochs=5, callbacks=[
        stop, keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, l: snapshots.append(trainer.model.get_weights()))])
    assert history["stopped_early"] and len(history["epochs"]) == 2
    assert int(trainer.global_step.numpy()) == 6
    assert any(not np.array_equal(a, b) for a, b in zip(*snapshots))  # epoch 2 moved
    for a, b in zip(trainer.model.get_weights(), snapshots[0]):
        np.testing.assert_array_equal(a, b)


def test_reduce_lr_on_plateau_changes_the_trainer_s_optimizer():
    trainer = _trainer(lr=0.0)
    trainer.optimizer.learning_rate.assign(0.5)
    data = D.PairDataset(_pairs(), 8)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=0,
                                                factor=0.1, min_delta=10.0)
    trainer.fit(data, data, epochs=2, callbacks=[plateau])
    # Epoch 1 sets the best; epoch 2 misses it by min_delta: one cut.
    assert float(trainer.optimizer.learning_rate.numpy()) == pytest.approx(0.05)


def test_terminate_on_nan_stops_after_the_call_that_saw_it():
    trainer = _trainer()
    trainer.step.on_nonfinite = "skip"  # the step counts it; the callback stops
    pairs = _pairs()
    pairs.left[3, 1, 2] = np.nan  # batch 1 of the unshuffled first epoch
    data = D.PairDataset(pairs, 8, shuffle=False)
    history = trainer.fit(data, epochs=3, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert history["stopped_early"]
    assert int(trainer.global_step.numpy()) == 2  # the first call: steps 1 and 2


def test_fit_takes_a_tf_data_dataset_with_or_without_weights():
    pairs = _pairs()
    for weighted in (False, True):
        trainer = _trainer(lr=0.1)
        x = (pairs.left, pairs.right)
        items = (x, pairs.label) + ((np.ones(24, "float32"),) if weighted else ())
        ds = tf.data.Dataset.from_tensor_slices(items).batch(8)
        before = [v.numpy().copy() for v in trainer.model.trainable_variables]
        history = trainer.fit(ds, ds, epochs=2)
        assert int(trainer.global_step.numpy()) == 6
        assert np.isfinite(history["epochs"][-1]["val_loss"])
        assert any(not np.array_equal(b, v.numpy())
                   for b, v in zip(before, trainer.model.trainable_variables))
    with pytest.raises(DataError):
        trainer.fit(tf.data.Dataset.from_tensor_slices(items).repeat().batch(8))


def test_the_best_epoch_is_kept_beside_the_last(tmp_path):
    run_dir = str(tmp_path / "run")
    result = training.run(tiny(run_dir=run_dir, epochs=3, monitor="val_accuracy",
                               projector_points=0))
    with open(os.path.join(run_dir, "best.json")) as f:
        best = json.load(f)
    accs = [e["val_accuracy"] for e in result["history"]["epochs"]]
    assert best["epoch"] == 1 + int(np.argmax(accs))  # the first of the best
    assert best["value"] == pytest.approx(max(accs))
    assert result["best_epoch"] == best["epoch"]
    for name in ("best.keras", "best_encoder.keras", "model.keras"):
        assert os.path.exists(os.path.join(run_dir, name))
    model = keras.saving.load_model(os.path.join(run_dir, "best.keras"))
    assert model.count_params() == result["total_parameters"]


def test_patience_stops_a_run_whose_monitor_does_not_improve_and_resumes_its_wait(
        tmp_path):
    config = tiny(run_dir=str(tmp_path / "run"), epochs=8, patience=2,
                  learning_rate=1e-9, monitor="val_auc", projector_points=0)
    result = training.run(config)
    assert result["stopped_early"]
    done = len(result["history"]["epochs"])
    best = json.loads((tmp_path / "run" / "best.json").read_text())["epoch"]
    assert done == best + 2 < 8  # two epochs without a better val_auc
    # Resumed, the run has waited two epochs already: the next one without
    # a better val_auc stops it (a fresh EarlyStopping would wait two more).
    resumed = training.run(config)
    assert resumed["stopped_early"]
    assert [e["epoch"] for e in resumed["history"]["epochs"]] == [done + 1]


def test_patience_counts_from_the_best_epoch_of_the_record(tmp_path):
    from siamese_research.train import callbacks as C

    (tmp_path / "best.json").write_text(json.dumps(
        {"epoch": 2, "monitor": "val_loss", "value": 0.5}))
    record = C.BestModel(str(tmp_path), "val_loss", save=False, resume=True)
    stopper = C.Patience("val_loss", 3, record, completed=4)
    stopper.set_model(keras.Sequential())
    stopper.model.stop_training = False
    stopper.on_train_begin()
    assert (stopper.best, stopper.wait) == (0.5, 2)
    stopper.on_epoch_end(4, {"val_loss": 0.6})  # the third epoch since the best
    assert stopper.model.stop_training
    fresh = C.Patience("val_loss", 3, C.BestModel(str(tmp_path), "val_loss", save=False),
                       completed=4)
    fresh.set_model(keras.Sequential())
    fresh.model.stop_training = False
    fresh.on_train_begin()
    fresh.on_epoch_end(4, {"val_loss": 0.6})
    assert fresh.wait == 0 and not fresh.model.stop_training  # no record: a first best
