"""Shared fixtures: tiny deterministic configs and a train.py runner."""

import os
import subprocess
import sys

import pytest

import siamese_research  # noqa: F401  (imports TensorFlow quietly)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def tiny(**overrides):
    """The real Config, shrunk: 48 pairs of 4-6 steps x 8 features."""
    from siamese_research.config import Config

    base = dict(num_samples=48, timesteps=6, features=8, units=4, batch_size=8,
                epochs=2, validation_split=0.25, log_every=2, histogram_every=4,
                steps_per_execution=3, prototypes=4, verbose=0, seed=7)
    base.update(overrides)
    return Config(**base)


def run_train(*args, cwd=None, timeout=300, env=None):
    """Runs `python train.py ARGS` like a user; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                          cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture
def tiny_config():
    return tiny


def read_tags(folder):
    """{tag: [steps]} of every tensor summary (scalars, histograms, text) in
    `folder`'s event files, and the EventAccumulator for their values."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(folder, size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}, acc
