"""Helper processes for tests/test_distribute.py (not a test module).

    python tests/_distributed.py mirrored            # 2 logical CPUs vs 1
    python tests/_distributed.py worker RUN_DIR      # one multi-worker process

Each prints one JSON line on stdout.
"""

import json
import sys

import numpy as np

import siamese_research  # noqa: F401  (quiet TensorFlow import)
import tensorflow as tf


def digest(variables):
    return [float(np.sum(np.abs(v.numpy()))) for v in variables]


def logged(folder, tag):
    """{step: value} of scalar `tag` in `folder`'s event files."""
    import glob
    import os

    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def mirrored():
    """One step on one device vs MirroredStrategy over 2 logical CPUs, same
    global batch: loss, updated weights and the per-replica branch check."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from siamese_research import data as D
    from siamese_research.core import model as M
    from siamese_research.summaries import views as summaries
    from siamese_research.train.trainer import Trainer

    rng = np.random.default_rng(0)
    n = 8
    pairs = D.Pairs(rng.standard_normal((n, 5, 8)).astype("float32"),
                    rng.standard_normal((n, 6, 8)).astype("float32"),
                    np.full(n, 5), np.full(n, 6), rng.integers(0, 2, n).astype("float32"))
    out = {}
    for name, strategy in [("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0",
                                                                        "/cpu:1"]))]:
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = M.build_model(features=8, units=4)
            optimizer = keras.optimizers.RMSprop(0.01)
        writers = summaries.create_writers(sys.argv[2] + "/" + name)
        trainer = Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                          optimizer=optimizer, strategy=strategy, writers=writers,
                          verbose=0, log_every=1, grad_check_every=1)
        data = D.PairDataset(pairs, n, shuffle=False)
        trainer.fit(data, epochs=1)  # one step: rows gathered per replica
        trainer.flush()
        out[name] = {"loss": float(trainer.train_metrics["loss"].result()),
                     "accuracy": float(trainer.train_metrics["accuracy"].result()),
                     "logged_accuracy": logged(sys.argv[2] + "/" + name + "/train",
                                               "accuracy"),
                     "weights": [v.numpy().tolist() for v in model.trainable_variables],
                     "replicas": strategy.num_replicas_in_sync,
                     "sum_errors": trainer.diagnostics.replica_sum_errors}
    # Padded rows, 9 of them in batches of 8: the last batch has one row, so
    # one replica gets none (its trimmed length must not be zero).
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    lengths = np.array([5, 3, 2, 5, 4, 1, 5, 2, 3])
    left = rng.standard_normal((9, 5, 8)).astype("float32")
    left[np.arange(5)[None, :] >= lengths[:, None]] = 0.0
    padded = D.Pairs(left, rng.standard_normal((9, 6, 8)).astype("float32"), lengths,
                     np.full(9, 6), rng.integers(0, 2, 9).astype("float32"))
    with strategy.scope():
        model = M.build_model(features=8, units=4)
        optimizer = keras.optimizers.RMSprop(0.01)
    trainer = Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(), optimizer=optimizer,
                      strategy=strategy, writers=None, verbose=0, steps_per_execution=1)
    snapshots = []
    trainer.fit(D.PairDataset(padded, 8, shuffle=False), epochs=1,
                callbacks=[keras.callbacks.LambdaCallback(
                    on_train_batch_end=lambda batch, logs: snapshots.append(
                        [v.numpy().copy() for v in model.trainable_variables]))])
    out["remainder"] = {"step": int(trainer.global_step.numpy()),
                        "finite": bool(all(np.all(np.isfinite(v.numpy()))
                                           for v in model.trainable_variables)),
                        # the one-row step 2 trained (and was not skipped)
                        "step_2_moved": bool(any(not np.array_equal(a, b) for a, b in
                                                 zip(snapshots[0], snapshots[1])))}
    print(json.dumps(out))


def worker():
    from siamese_research import runner as training
    from siamese_research.config import Config

    config = Config(strategy="multi_worker", num_samples=64, timesteps=6, features=8,
                    units=4, batch_size=8, epochs=1,
                    # Calls hold the view steps (log every 2, the check every
                    # 2) and end at checkpoint steps (every 3); a worker
                    # without writers or saves must make the same calls.
                    steps_per_execution=4, log_every=2, grad_check_every=2,
                    checkpoint_every=3,
                    histogram_every=4, verbose=0, seed=3, run_dir=sys.argv[2])
    result = training.run(config)
    model = result["model"]
    print(json.dumps({"step": result["step"], "exit_code": result["exit_code"],
                      "weights": digest(model.trainable_variables),
                      "loss": result["final"]["loss"]}))


if __name__ == "__main__":
    {"mirrored": mirrored, "worker": worker}[sys.argv[1]]()
