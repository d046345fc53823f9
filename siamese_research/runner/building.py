"""The run's model, loss and optimizer (`build`), and the checks that need
the model (`assemble`). Nothing is written yet."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import keras
import tensorflow as tf

from siamese_research import data as data_lib
from siamese_research.config import Config
from siamese_research.core import gpu, losses
from siamese_research.core import model as model_lib
from siamese_research.data import vocab
from siamese_research.errors import ConfigError
from siamese_research.runner.setup import Setup
from siamese_research.text import vectors

OPTIMIZERS = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
              "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
              "adagrad": keras.optimizers.Adagrad, "nadam": keras.optimizers.Nadam}


@dataclasses.dataclass
class Built:
    """What trains: the model, its loss and the optimizer (wrapped for
    mixed precision, with its loss scaling)."""

    model: model_lib.SiameseModel
    loss_fn: keras.losses.Loss
    optimizer: keras.optimizers.Optimizer
    scale_loss: Optional[Callable] = None


def build_optimizer(name: str, learning_rate: float):
    if name not in OPTIMIZERS:
        raise ConfigError("optimizer", name, f"expected one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate=learning_rate)


def build(config: Config, data: data_lib.PairData, strategy=None):
    """Builds (model, loss_fn, optimizer) in the strategy's scope.

    With `--embeddings`, the vector file is read here (before the run folder
    exists) and its coverage left in `data.embedding_coverage` for the run to
    print and record.
    """
    strategy = strategy or tf.distribute.get_strategy()
    vocab_size = (vocab.id_count(data.vectorizer, config)
                  if data.vectorizer is not None else 0)
    for flag in ("embeddings", "freeze_embeddings", "embedding_init"):
        on = getattr(config, flag) not in (None, False, "uniform")
        if on and not vocab_size:
            raise ConfigError(flag, getattr(config, flag), "needs a text pair file "
                              "(.csv/.tsv/.jsonl): these sequences have no embedding")
    found = None
    if config.embeddings:
        found = vectors.for_vocabulary(config.embeddings, data.vectorizer,
                                       frozen=config.freeze_embeddings)
    with strategy.scope():
        # (First: it refuses a loss the merge cannot serve, in one line.)
        loss_fn = losses.build_loss(config.loss, merge=config.merge, margin=config.margin,
                                    temperature=config.temperature)
        model = model_lib.build_model(
            encoder=config.encoder, units=config.units, features=config.features,
            merge=config.merge, share=config.share, vocab_size=vocab_size,
            encoder_args=config.encoder_kwargs, masked=data.padded or vocab_size > 0,
            objective=losses.objective(config.loss, config.row_negatives),
            image_shape=data.train.left.shape[1:] if data.is_image else None)
        if config.embedding_init == "idf":
            model_lib.scale_embeddings(model, vocab.token_idf(data.train, vocab_size))
        if found is not None:
            ids, rows, data.embedding_coverage = found
            model_lib.set_embedding_rows(model, ids, rows)
        if config.freeze_embeddings:
            model_lib.freeze_embeddings(model)
        optimizer = build_optimizer(config.optimizer, config.learning_rate)
    return model, loss_fn, optimizer


def assemble(config: Config, data: data_lib.PairData, setup: Setup) -> Built:
    """`build`, then what the model decides: XLA (`gpu.check_jit`), cuDNN
    (a warning) and the mixed precision wrapper."""
    model, loss_fn, optimizer = build(config, data, setup.strategy)
    gpu.check_jit(config.jit_compile, setup.on_gpu, model, setup.strategy)
    gpu.warn_cudnn(model, setup.on_gpu)
    with setup.strategy.scope():
        optimizer = gpu.wrap_optimizer(optimizer, setup.policy)
    scale_loss = (optimizer.scale_loss
                  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None)
    return Built(model, loss_fn, optimizer, scale_loss)
