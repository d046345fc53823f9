"""A triplet run as a user makes one: train.py on a triplet file, then
evaluate on triplets (d(a, p) < d(a, n)) and on pairs (the usual metrics)."""

import csv
import json
import os

import numpy as np
import pytest

from conftest import Probe, read_tags, run_main


def write_triplets(path, n=24, seed=0):
    """anchor, positive (the anchor's rare word again), negative (another)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["anchor", "positive", "negative"])
        for i in range(n):
            j = int(rng.integers(n))
            w.writerow([f"what is thing{i} here", f"thing{i} is it", f"thing{j}x or not"])
    return str(path)


@pytest.fixture(scope="module")
def triplet_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("triplet_run")
    data = write_triplets(base / "triplets.csv")
    run_dir = str(base / "run")
    proc = run_main(f"--data={data}", "--loss=triplet", "--merge=cosine",
                    "--margin=0.3", "--encoder=bag", "--features=8", "--units=4",
                    "--batch_size=8", "--epochs=1", "--validation_split=0.25",
                    "--log_every=1", "--grad_check_every=1", "--histogram_every=2",
                    "--projector_points=4",
                    "--verbose=0", f"--run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, run_dir


def test_the_run_trains_three_calls_of_one_encoder(triplet_run):
    _, run_dir = triplet_run
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    assert config["loss"] == "triplet" and config["monitor"] == "val_auc"
    tags, acc = read_tags(os.path.join(run_dir, "train"))
    # 18 training triplets in batches of 8: steps 1 to 3, each logged.
    for b in ("anchor", "positive", "negative"):
        assert tags[f"branch_gradients/{b}_norm"] == [1, 2, 3]
    assert tags["branch_gradients/cosine/anchor_negative"] == [1, 2, 3]
    import tensorflow as tf
    errors = [float(tf.make_ndarray(e.tensor_proto))
              for e in acc.Tensors("branch_gradients/sum_error")]
    assert len(errors) == 3 and max(errors) <= 1e-6
    val, _ = read_tags(os.path.join(run_dir, "validation"))
    assert "auc" in val and "loss" not in val  # pairs have no triplet loss


def test_evaluate_on_triplets_is_the_fraction_with_d_ap_below_d_an(triplet_run):
    from siamese_research import artifacts
    from siamese_research.inference import evaluate as ev
    from siamese_research import artifacts as runs
    from siamese_research.data import files
    from siamese_research.data import vocab

    data, run_dir = triplet_run
    got = ev.evaluate_run(run_dir, data)["model"]
    assert got["triplets"] == 24 and got["pairs"] == 48
    # Independently: the model's own distances on the three sides.
    run = runs.load_run(run_dir)
    config = artifacts.read_run_config(run_dir)
    pool, _ = files.load_file(data, config, vocab.load_vectorizer(run_dir))
    t = pool.triplets
    d = np.asarray(run.model((pool.left[t[:, 0]], pool.right[t[:, 0]],
                              pool.right[t[:, 1]]), training=False))
    assert got["triplet_accuracy"] == pytest.approx(np.mean(d[:, 0] < d[:, 1]))
    assert "map" in got  # each anchor's two candidates, ranked


def test_evaluate_on_pairs_gives_the_pair_metrics(triplet_run, tmp_path):
    """A pair file scored by a triplet run: each pair's score is the merge's
    similarity of the run's own distance (cosine: 1 - d / 2), and the usual
    metrics are those scores'."""
    from siamese_research import artifacts
    from siamese_research.inference import evaluate as ev
    from siamese_research.metrics import pairs as metrics
    from siamese_research import artifacts as runs
    from siamese_research.data import files
    from siamese_research.data import vocab

    data, run_dir = triplet_run
    pairs = tmp_path / "pairs.csv"
    with open(data) as f, open(pairs, "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["q", "a", "label"])
        for row in list(csv.DictReader(f))[:6]:
            w.writerow([row["anchor"], row["positive"], 1])
            w.writerow([row["anchor"], row["negative"], 0])
    result = ev.evaluate_run(run_dir, str(pairs))
    got = result["model"]
    assert got["pairs"] == 12 and "triplet_accuracy" not in got
    assert got["groups_scored"] == 6
    # Independently: the distances of the same six triplets, by the model.
    config = artifacts.read_run_config(run_dir)
    pool, _ = files.load_file(data, config, vocab.load_vectorizer(run_dir))
    t = pool.triplets[:6]
    d = np.asarray(runs.load_run(run_dir).model(
        (pool.left[t[:, 0]], pool.right[t[:, 0]], pool.right[t[:, 1]]), training=False))
    want = np.stack([1.0 - d[:, 0] / 2.0, 1.0 - d[:, 1] / 2.0], axis=1).reshape(-1)
    np.testing.assert_allclose(result["info"]["scores"], want, rtol=1e-5, atol=1e-6)
    labels = np.tile([1.0, 0.0], 6)
    assert got["roc_auc"] == pytest.approx(metrics.roc_auc(labels, want))
    # Each anchor's positive ranked first (d(a, p) < d(a, n)) or second.
    assert got["mrr"] == pytest.approx(np.mean(np.where(d[:, 0] < d[:, 1], 1.0, 0.5)))


def test_triplets_from_pairs_resume_at_the_same_batches():
    """An interrupted triplet run, resumed mid-epoch, ends on the weights of
    the uninterrupted one: the negatives are drawn from (seed, epoch), and
    the resumed epoch skips to the same batch (trained through the compiled
    step's own gather of (batch, 2) triplet indices)."""
    import keras

    from siamese_research import data as D
    from siamese_research.core import losses as L
    from siamese_research.core import model as M
    from siamese_research.config import Config
    from siamese_research.train.trainer import Trainer

    config = Config(loss="triplet", triplets="from_pairs", merge="euclidean",
                    num_samples=96, timesteps=5, features=8, prototypes=4,
                    batch_size=8, run_dir="unused")
    data = D.train_dataset(D.load(config).train, config)
    assert data.sides == 3 and data.steps_per_epoch >= 3

    def trainer():
        keras.utils.set_random_seed(0)
        model = M.build_model(encoder="conv1d", features=8, units=4, merge="euclidean",
                              objective="triplet")
        return Trainer(model, loss_fn=L.TripletLoss(0.5), optimizer=keras.optimizers.SGD(0.1),
                       steps_per_execution=2, writers=None, verbose=0)

    straight = trainer()
    straight.fit(data, epochs=2)
    resumed = trainer()
    calls = iter(range(100))
    history = resumed.fit(data, epochs=2, callbacks=[Probe(stop=lambda: next(calls) == 0)])
    assert history["interrupted"] and int(resumed.global_step.numpy()) == 2
    resumed.fit(data, epochs=2)
    assert int(resumed.global_step.numpy()) == 2 * data.steps_per_epoch
    for a, b in zip(straight.model.trainable_variables, resumed.model.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
