"""The real run, shrunk: run(config) into a temp folder, then read it back."""

import json
import os

import numpy as np
import pytest

from siamese_research import data as data_lib
from siamese_research import runner as training
from conftest import read_tags, tiny

SCALARS = ["loss", "accuracy", "learning_rate", "samples_per_second",
           "branch_gradients/left_norm", "branch_gradients/right_norm",
           "branch_gradients/total_norm", "branch_gradients/cosine",
           "branch_gradients/sum_error"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("run"))
    # 36 train pairs / batch 8 = 5 steps per epoch, 2 epochs = 10 steps.
    config = tiny(run_dir=run_dir)
    return config, training.run(config, argv=["train.py", "--tiny"])


def test_run_writes_the_run_folder(tiny_run):
    config, result = tiny_run
    assert result["exit_code"] == 0
    assert result["step"] == 10
    for name in ("train", "validation", "checkpoints", "config.json", "command.txt",
                 "model.keras", "encoder.keras"):
        assert os.path.exists(os.path.join(config.run_dir, name)), name
    saved = json.load(open(os.path.join(config.run_dir, "config.json")))
    assert saved == json.loads(config.to_json())


def test_every_contract_tag_at_the_expected_steps(tiny_run):
    config, result = tiny_run
    tags, _ = read_tags(os.path.join(config.run_dir, "train"))
    log_steps = [1, 2, 4, 6, 8, 10]  # log_every=2, and the first and last step
    hist_steps = [1, 4, 8, 10]  # histogram_every=4
    for tag in SCALARS:
        assert tag in tags, tag
    for tag in SCALARS:
        assert tags[tag] == log_steps, (tag, tags[tag])
    from siamese_research.core import model as M
    model = training.build(config, data_lib.load(config))[0]
    for v in model.trainable_variables:
        assert tags[f"weights/{v.path}"] == hist_steps, v.path
    for v in M.encoder_variables(model):
        for branch in ("left", "right", "total"):
            assert tags[f"gradients/{branch}/{v.path}"] == hist_steps
    assert "config" in tags and "model_summary" in tags
    vtags, _ = read_tags(os.path.join(config.run_dir, "validation"))
    for tag in ("loss", "accuracy", "auc"):
        assert vtags[tag] == [5, 10], tag


def test_sum_error_in_tensorboard_is_tiny(tiny_run):
    config, _ = tiny_run
    _, acc = read_tags(os.path.join(config.run_dir, "train"))
    import tensorflow as tf
    values = [float(tf.make_ndarray(e.tensor_proto))
              for e in acc.Tensors("branch_gradients/sum_error")]
    assert values and max(values) <= 1e-6


def test_final_words(tiny_run, capsys):
    config, result = tiny_run
    assert result["total_parameters"] == result["encoder_parameters"] + 4 * 4 + 1
    assert result["max_sum_error"] <= 1e-6
    assert np.isfinite(result["final"]["val_loss"])


def test_notebook_replay_shapes_and_shows_gradient_histograms(tmp_path):
    """--data=random --merge=concat is the notebook: 20,673 parameters, the
    last 20% held out, 10-step sequences of 128 features, 3 epochs of 13
    steps. Its 39 steps are fewer than --histogram_every (100), yet
    TensorBoard shows its gradient histograms at its first and last step."""
    from siamese_research.config import Config

    config = Config(data="random", merge="concat", num_samples=1000, timesteps=10,
                    epochs=3, batch_size=64, validation_split=0.2, verbose=0,
                    projector_points=0, run_dir=str(tmp_path / "nb"))
    data = data_lib.load(config)
    assert data.train.left.shape == (800, 10, 128)
    assert data.validation.left.shape == (200, 10, 128)
    result = training.run(config)
    assert result["total_parameters"] == 20_673
    assert result["encoder_parameters"] == 20_608
    assert result["step"] == 39  # 3 x ceil(800 / 64)
    tags, _ = read_tags(os.path.join(config.run_dir, "train"))
    kernel = "siamese/encoder/lstm/lstm_cell/kernel"
    for branch in ("left", "right", "total"):
        assert tags[f"gradients/{branch}/{kernel}"] == [1, 39]
    assert tags[f"weights/{kernel}"] == [1, 39]
    assert tags["loss"] == [1, 10, 20, 30, 39]


def test_a_run_shorter_than_every_cadence_shows_its_first_and_last_step(tmp_path):
    """7 steps (--data=random --num_samples=512 --epochs=1), fewer than
    --log_every: loss, accuracy, branch norms and sum_error at 1 and 7."""
    import tensorflow as tf
    from siamese_research.config import Config

    config = Config(data="random", num_samples=512, epochs=1, verbose=0,
                    projector_points=0, run_dir=str(tmp_path / "short"))
    result = training.run(config)
    assert result["step"] == 7  # ceil(410 / 64)
    tags, acc = read_tags(os.path.join(config.run_dir, "train"))
    for tag in ("loss", "accuracy", "learning_rate", "samples_per_second",
                "branch_gradients/left_norm", "branch_gradients/right_norm",
                "branch_gradients/cosine", "branch_gradients/total_norm",
                "branch_gradients/sum_error"):
        assert tags[tag] == [1, 7], tag
    errors = [float(tf.make_ndarray(e.tensor_proto))
              for e in acc.Tensors("branch_gradients/sum_error")]
    assert max(errors) <= 1e-6
