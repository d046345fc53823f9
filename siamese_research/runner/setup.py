"""The run's first phases: the process and the checks (`set_up`), then the
data (`load_data`). Nothing is written: a refusal here leaves no trace."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import keras
import tensorflow as tf

from siamese_research import data as data_lib
from siamese_research.config import Config
from siamese_research.core import gpu, losses
from siamese_research.errors import ConfigError
from siamese_research.runner import devices
from siamese_research.train import checkpoints


@dataclasses.dataclass
class Setup:
    """Where and how the run trains."""

    strategy: tf.distribute.Strategy
    chief: bool  # writes the run folder (the only process that does)
    on_gpu: bool
    policy: Optional[str]  # the mixed precision policy set, or None
    resuming: bool  # a checkpoint in the run folder will be restored


@dataclasses.dataclass
class Data:
    """The run's pairs and their datasets."""

    pairs: data_lib.PairData
    train: data_lib.PairDataset
    validation: Optional[data_lib.PairDataset]


def set_up(config: Config) -> Setup:
    """Threads, strategy, seeds, precision, and every check that needs no
    data.

    Raises:
      UserError: a run folder that cannot be one, an incompatible
        checkpoint, a precision or loss the run cannot have.
    """
    # First: the thread setting and MultiWorkerMirroredStrategy's collectives
    # must be configured before anything initialises TensorFlow's context.
    devices.configure_threads(config.intra_op_threads)
    strategy = devices.make_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    prepare_run_dir(config.run_dir)
    resuming = not config.restart and checkpoints.has_checkpoint(config.run_dir)
    if resuming:
        checkpoints.check_compatible(config.run_dir, config)
    on_gpu = gpu.gpu_visible()
    # The dtype policy must be set before the model is built.
    policy = gpu.mixed_precision_setup(config.mixed_precision, on_gpu)
    # A loss the merge cannot serve is refused before any data is read.
    losses.check_loss(config.loss, config.merge)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError("batch_size", config.batch_size,
                          f"must be divisible by the {replicas} replicas")
    if config.per_group:
        # Each replica mines in its own slice of the batch: whole blocks, and
        # at least two groups, or its anchors have no negative.
        share = config.batch_size // replicas
        if share % config.per_group or share < 2 * config.per_group:
            raise ConfigError("per_group", config.per_group,
                              f"each of the {replicas} replicas gets {share} rows of "
                              f"--batch_size={config.batch_size}: they must hold at "
                              f"least two whole blocks of {config.per_group}")
    return Setup(strategy=strategy, chief=devices.is_chief(strategy), on_gpu=on_gpu,
                 policy=policy, resuming=resuming)


def prepare_run_dir(run_dir: str) -> None:
    """Checks that `run_dir` can be a run folder before anything is written."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError("run_dir", run_dir, "exists and is not a folder")
    parent = run_dir
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    parent = parent or "."
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("run_dir", run_dir, f"cannot write in {parent}")


def load_data(config: Config) -> Data:
    """The pairs `config.data` names, split, and their datasets."""
    pairs = data_lib.load(config)
    validation = None
    if pairs.validation is not None and len(pairs.validation):
        validation = data_lib.PairDataset(pairs.validation, config.batch_size,
                                          shuffle=False)
    return Data(pairs=pairs, train=data_lib.train_dataset(pairs.train, config),
                validation=validation)
