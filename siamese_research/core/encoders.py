"""Encoders: one registered builder per name, plus user encoders by import path.

An encoder maps one example per row to `(batch, dim)`: sequences `(batch,
time, features)` with an optional boolean `mask` `(batch, time)`, or images
`(batch, height, width, channels)` without one (`conv2d`). The
`SiameseTower` wraps it with the input side (Masking for float sequences,
`Embedding(mask_zero=True)` for token ids, nothing for images), and is the
ONE object a tied Siamese model calls on both inputs.

To add an encoder, register a builder::

    @register_encoder("my_rnn")
    def my_rnn(units, **kwargs):
        return MyRNN(units, **kwargs)   # a keras.layers.Layer

or pass `--encoder=package.module:Name` where `Name` is a Layer subclass or a
function returning one; it is called as `Name(units=units, **encoder_args)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import math
from typing import Callable, Dict

import keras
import numpy as np
from keras import ops

from siamese_research.core import fused, gpu
from siamese_research.errors import UserError

PACKAGE = "siamese_research"
_ENCODERS: Dict[str, Callable[..., keras.layers.Layer]] = {}

# Gate order of the fused kernels' last axis, as Keras lays them out.
GATES = {
    "lstm": ("input", "forget", "cell", "output"),
    "gru": ("update", "reset", "candidate"),
}


class EncoderError(UserError, ValueError):
    """An unknown encoder name or an import path that does not give a Layer."""


def register_encoder(name: str):
    """Registers `builder(units, **kwargs) -> keras.layers.Layer` as `name`."""

    def wrap(builder):
        _ENCODERS[name] = builder
        return builder

    return wrap


def available() -> list:
    return sorted(_ENCODERS)


def build_encoder(name: str, units: int, **kwargs) -> keras.layers.Layer:
    """Builds the core encoder `name` (registered, or `module:Name`)."""
    if name in _ENCODERS:
        builder = _ENCODERS[name]
    elif ":" in name:
        builder = _import_builder(name)
    else:
        raise EncoderError(f"--encoder={name}: unknown encoder; available: "
                           f"{', '.join(available())}, or package.module:Name")
    try:
        layer = builder(units=units, **kwargs)
    except (TypeError, ValueError) as e:  # Keras raises either for bad kwargs
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EncoderError(f"--encoder={name}: bad --encoder_args ({message})") from None
    if not isinstance(layer, keras.layers.Layer):
        raise EncoderError(f"--encoder={name}: built a {type(layer).__name__}, "
                           "not a keras.layers.Layer")
    return layer


def _import_builder(path: str):
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EncoderError(f"--encoder={path}: cannot import module "
                           f"'{module_name}' ({e})") from None
    if not hasattr(module, attr):
        raise EncoderError(f"--encoder={path}: module '{module_name}' has no "
                           f"attribute '{attr}'")
    obj = getattr(module, attr)
    if inspect.isclass(obj):
        if not issubclass(obj, keras.layers.Layer):
            raise EncoderError(f"--encoder={path}: {attr} is a class but not a "
                               "keras.layers.Layer subclass")
        return obj
    if callable(obj):
        return obj
    raise EncoderError(f"--encoder={path}: {attr} is neither a Layer subclass "
                       "nor a function returning one")


def rnn_kind(layer) -> str:
    """'lstm', 'gru' or '' for a core encoder (Bidirectional counts as its RNN)."""
    if isinstance(layer, keras.layers.Bidirectional):
        layer = layer.forward_layer
    if isinstance(layer, keras.layers.LSTM):
        return "lstm"
    if isinstance(layer, keras.layers.GRU):
        return "gru"
    return getattr(layer, "gate_kind", "")


# -- the built-in encoders ----------------------------------------------------
@register_encoder("lstm")
def lstm(units: int, **kwargs):
    """The notebook's encoder. Defaults keep it cuDNN-eligible on GPU."""
    return keras.layers.LSTM(units, name="lstm", **kwargs)


@register_encoder("gru")
def gru(units: int, **kwargs):
    return keras.layers.GRU(units, name="gru", **kwargs)


@register_encoder("bilstm")
def bilstm(units: int, merge_mode: str = "concat", **kwargs):
    return keras.layers.Bidirectional(keras.layers.LSTM(units, **kwargs),
                                      merge_mode=merge_mode, name="bilstm")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv1DEncoder(keras.layers.Layer):
    """A stack of same-padded Conv1D layers + masked global max pooling."""

    def __init__(self, units: int = 32, layers: int = 2, kernel_size: int = 3,
                 activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.units, self.num_layers = units, layers
        self.kernel_size, self.activation = kernel_size, activation
        self.convs = [keras.layers.Conv1D(units, kernel_size, padding="same",
                                          activation=activation, name=f"conv{i}")
                      for i in range(layers)]
        self.supports_masking = True

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:-1] + (self.units,)

    def call(self, inputs, mask=None, training=None):
        x = inputs
        for conv in self.convs:
            x = conv(x)
            if mask is not None:  # padding must not leak into real steps
                x = x * ops.cast(mask[..., None], x.dtype)
        return masked_max(x, mask)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units, "layers": self.num_layers,
                "kernel_size": self.kernel_size, "activation": self.activation}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerEncoder(keras.layers.Layer):
    """Dense projection + sinusoidal positions, one pre-norm self-attention
    block with a feed-forward layer, then masked mean pooling."""

    def __init__(self, units: int = 32, heads: int = 4, ff_multiplier: int = 2,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if units % heads:
            raise TypeError(f"units={units} must be divisible by heads={heads}")
        self.units, self.heads = units, heads
        self.ff_multiplier, self.dropout = ff_multiplier, dropout
        self.project = keras.layers.Dense(units, name="project")
        self.norm1 = keras.layers.LayerNormalization(name="norm1")
        self.attention = keras.layers.MultiHeadAttention(
            heads, units // heads, dropout=dropout, name="attention")
        self.norm2 = keras.layers.LayerNormalization(name="norm2")
        self.ff1 = keras.layers.Dense(units * ff_multiplier, activation="gelu",
                                      name="ff1")
        self.ff2 = keras.layers.Dense(units, name="ff2")
        self.supports_masking = True

    def build(self, input_shape):
        self.project.build(tuple(input_shape))
        inner = tuple(input_shape)[:-1] + (self.units,)
        self.norm1.build(inner)
        self.attention.build(inner, inner)
        self.norm2.build(inner)
        self.ff1.build(inner)
        self.ff2.build(inner[:-1] + (self.units * self.ff_multiplier,))

    def call(self, inputs, mask=None, training=None):
        x = self.project(inputs)
        x = x + positional_encoding(ops.shape(x)[1], self.units, x.dtype)
        attn_mask = None
        if mask is not None:
            attn_mask = ops.logical_and(mask[:, :, None], mask[:, None, :])
        h = self.norm1(x)
        x = x + self.attention(h, h, attention_mask=attn_mask, training=training)
        x = x + self.ff2(self.ff1(self.norm2(x)))
        return masked_mean(x, mask)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units, "heads": self.heads,
                "ff_multiplier": self.ff_multiplier, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BagEncoder(keras.layers.Layer):
    """The masked sum of the steps: a bag of (embedded) words. No weights of
    its own: with text, what it learns is the shared Embedding's. Its output
    has the input's feature size (`units` does not apply).

    Regularisation for corpora of a few thousand pairs, in training only:
    `word_dropout` drops whole steps (a dropped word is absent from the bag,
    so its embedding gets no gradient from that text); `dropout` drops
    elements of the sum (scaled by 1 / (1 - rate), as Keras's Dropout).
    `pooling="mean"` divides by the number of (kept) words.
    """

    def __init__(self, word_dropout: float = 0.0, dropout: float = 0.0,
                 seed=None, pooling: str = "sum", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("sum", "mean"):
            raise ValueError(f"pooling={pooling}: expected sum or mean")
        self.pooling = pooling
        for name, rate in (("word_dropout", word_dropout), ("dropout", dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name}={rate} must be in [0, 1)")
        self.word_dropout, self.dropout, self.seed = word_dropout, dropout, seed
        self.seed_generator = (keras.random.SeedGenerator(seed)
                               if word_dropout or dropout else None)
        self.supports_masking = True

    def call(self, inputs, mask=None, training=None):
        if training and self.word_dropout:
            keep = keras.random.uniform(ops.shape(inputs)[:2],
                                        seed=self.seed_generator) >= self.word_dropout
            mask = keep if mask is None else ops.logical_and(mask, keep)
        out = (masked_sum if self.pooling == "sum" else masked_mean)(inputs, mask)
        if training and self.dropout:
            out = keras.random.dropout(out, self.dropout, seed=self.seed_generator)
        return out

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "word_dropout": self.word_dropout,
                "dropout": self.dropout, "seed": self.seed, "pooling": self.pooling}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2DEncoder(keras.layers.Layer):
    """Images (batch, height, width, channels) -> (batch, units): for each of
    `filters`, a same-padded 3x3 Conv2D (ReLU) and 2x2 max pooling; then
    Flatten and a linear Dense(units). The classic Siamese image tower (Koch
    et al. 2015, scaled down).

    Args:
      units: the encoding size.
      filters: the conv layers' widths, in order.
      kernel_size: the conv kernels' size.
      normalize: L2-normalise the encoding (for a distance merge whose
        margin assumes unit vectors; `cosine` normalises anyway).
      augment: training only: shift each image by up to this fraction of
        its height and width (`keras.layers.RandomTranslation`, zeros
        filled), drawn per call, so the two branches see their own shifts.
      seed: the shifts' seed.
    """

    def __init__(self, units: int = 64, filters=(32, 64), kernel_size: int = 3,
                 normalize: bool = False, augment: float = 0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        filters = [int(f) for f in filters]
        if not filters or min(filters) <= 0:
            raise ValueError(f"filters={filters}: expected positive widths")
        if not 0.0 <= augment < 0.5:
            raise ValueError(f"augment={augment} must be in [0, 0.5)")
        self.units, self.filters, self.kernel_size = units, filters, kernel_size
        self.normalize, self.augment, self.seed = normalize, augment, seed
        self.shift = (keras.layers.RandomTranslation(augment, augment, fill_mode="constant",
                                                     seed=seed, name="shift")
                      if augment else None)
        self.convs = [keras.layers.Conv2D(f, kernel_size, padding="same", activation="relu",
                                          name=f"conv{i}") for i, f in enumerate(filters)]
        self.pools = [keras.layers.MaxPooling2D(2, padding="same", name=f"pool{i}")
                      for i in range(len(filters))]
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense = keras.layers.Dense(units, name="dense")

    def build(self, input_shape):
        shape = (None,) + tuple(input_shape)[1:]
        if len(shape) != 4:
            raise ValueError(f"conv2d takes images (batch, height, width, channels), "
                             f"got shape {tuple(input_shape)}")
        for conv, pool in zip(self.convs, self.pools):
            conv.build(shape)
            shape = pool.compute_output_shape(conv.compute_output_shape(shape))
        self.dense.build((None, int(np.prod(shape[1:]))))

    def call(self, inputs, mask=None, training=None):
        x = inputs
        if self.shift is not None and training:
            x = self.shift(x, training=True)
        for conv, pool in zip(self.convs, self.pools):
            x = pool(conv(x))
        x = self.dense(self.flatten(x))
        if self.normalize:
            x = x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True),
                                         1e-12))
        return x

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units, "filters": self.filters,
                "kernel_size": self.kernel_size, "normalize": self.normalize,
                "augment": self.augment, "seed": self.seed}


@register_encoder("conv2d")
def conv2d(units: int, **kwargs):
    return Conv2DEncoder(units, name="conv2d", **kwargs)


@register_encoder("bag")
def bag(units: int, **kwargs):
    return BagEncoder(name="bag", **kwargs)


@register_encoder("conv1d")
def conv1d(units: int, **kwargs):
    return Conv1DEncoder(units, name="conv1d", **kwargs)


@register_encoder("transformer")
def transformer(units: int, **kwargs):
    return TransformerEncoder(units, name="transformer", **kwargs)


def positional_encoding(length, dim: int, dtype="float32"):
    """Sinusoidal positions (Vaswani et al. 2017), shape (length, dim)."""
    pos = ops.cast(ops.arange(length), "float32")[:, None]
    i = ops.arange(dim)
    rate = ops.exp(-math.log(10000.0) * ops.cast(2 * (i // 2), "float32") / dim)
    angle = pos * rate[None, :]
    enc = ops.where(i[None, :] % 2 == 0, ops.sin(angle), ops.cos(angle))
    return ops.cast(enc, dtype)


def masked_sum(x, mask):
    if mask is None:
        return ops.sum(x, axis=1)
    return ops.sum(x * ops.cast(mask, x.dtype)[..., None], axis=1)


def masked_mean(x, mask):
    if mask is None:
        return ops.mean(x, axis=1)
    count = ops.sum(ops.cast(mask, x.dtype), axis=1)[..., None]
    return masked_sum(x, mask) / ops.maximum(count, 1.0)


def masked_max(x, mask):
    if mask is None:
        return ops.max(x, axis=1)
    m = mask[..., None]
    very_low = ops.cast(-1e9, x.dtype)
    pooled = ops.max(ops.where(m, x, very_low), axis=1)
    any_step = ops.any(mask, axis=1, keepdims=True)
    return ops.where(any_step, pooled, ops.zeros_like(pooled))


# -- the tower: input side + core encoder, the object both branches call ------
# keras.layers.LSTM / GRU on a CPU run their cell in a tf.while_loop. With a
# static, short time axis (fixed-length data), Keras's own `unroll=True` lays
# the steps out in the graph instead, which drops the loop's per-step overhead:
# on the notebook's shape (10 steps) the step ran about 1.3x faster here
# (docs/performance.md and its history). But the graph holds one copy of the cell per step, so
# its trace and first run cost more: on the notebook's step 5.2 s against
# 3.4 s, for 4.9 against 6.2 ms a step after (2-core CPU, 2026-12-02), which
# pays off after about 1,400 steps. So only the train step unrolls, and only
# in a run of at least `UNROLL_MIN_RUN_STEPS` steps (`Trainer(unroll=...)`
# decides, inside `unrolling`); validation, the projector, the graph and
# exports keep the loop. On a GPU the cuDNN kernel is faster still and needs
# unroll=False, so there nothing changes.
UNROLL_MAX_STEPS = 32
UNROLL_MIN_RUN_STEPS = 1500
_UNROLL = contextvars.ContextVar("siamese_research_unroll", default=False)


@contextlib.contextmanager
def unrolling(enabled: bool):
    """Within: RNN cores may unroll (`should_unroll`), read at trace time."""
    token = _UNROLL.set(bool(enabled))
    try:
        yield
    finally:
        _UNROLL.reset(token)


def should_unroll(timesteps, gpu_visible: bool, max_steps: int = UNROLL_MAX_STEPS) -> bool:
    """Whether a Keras RNN core is unrolled for a call with this static time
    size (None when the time axis is dynamic), traced inside
    `unrolling(True)`."""
    return (_UNROLL.get() and timesteps is not None and 0 < timesteps <= max_steps
            and not gpu_visible)


def unroll_pays(run_steps: int) -> bool:
    """Whether a run of `run_steps` train steps is long enough to unroll."""
    return run_steps >= UNROLL_MIN_RUN_STEPS


def _loop_rnns(core) -> list:
    """The Keras RNN layers of `core` (itself, or a Bidirectional's halves)
    that run a loop (unroll=False)."""
    return [layer for layer in gpu.unwrap_bidirectional(core)
            if isinstance(layer, keras.layers.RNN) and not layer.unroll]


@keras.saving.register_keras_serializable(package=PACKAGE)
class SiameseTower(keras.layers.Layer):
    """Input side (Masking or Embedding; nothing for images) + a core encoder.

    Args:
      core: the encoder layer (see `build_encoder`).
      vocab_size: for token-id inputs, the vocabulary size of the Embedding
        (`mask_zero=True`, id 0 = padding); 0 for float sequences, which are
        masked where a step is all zeros (right padding).
      features: the Embedding's output size (the core's input features).
      masked: float sequences only: mask all-zero steps. False when the data
        has no padding (every sequence full length, as in the notebook): the
        Keras LSTM's masked loop costs about a third more on a CPU.
      image_shape: (height, width, channels) for image inputs, else None.
    """

    def __init__(self, core, vocab_size: int = 0, features: int = 128,
                 masked: bool = True, image_shape=None, **kwargs):
        kwargs.setdefault("name", "encoder")
        super().__init__(**kwargs)
        if isinstance(core, dict):
            # A user encoder given by import path: import its module so its
            # register_keras_serializable decorator runs before lookup.
            module = core.get("module") or ""
            if module and not module.startswith(("keras", PACKAGE)):
                try:
                    importlib.import_module(module)
                except ImportError:
                    pass  # Keras then names the class it cannot find
            core = keras.saving.deserialize_keras_object(core)
        self.core = core
        self.vocab_size, self.features, self.masked = vocab_size, features, masked
        # Images: (height, width, channels), no mask; `features` is the channels.
        self.image_shape = tuple(int(d) for d in image_shape) if image_shape else None
        if self.image_shape is not None:
            if vocab_size or len(self.image_shape) != 3:
                raise ValueError(f"image_shape={image_shape}: expected (height, width, "
                                 f"channels) and no vocabulary")
            self.features, self.masked = self.image_shape[-1], False
        if vocab_size:
            self.embedding = keras.layers.Embedding(vocab_size, features,
                                                    mask_zero=True, name="embedding")
            self.masking = None
        else:
            self.embedding = None
            self.masking = keras.layers.Masking(0.0, name="masking") if masked else None

    def build(self, input_shape):
        # One eager forward pass creates every variable of any core encoder,
        # including user encoders without a build(); saved models reload
        # through this too.
        if self.embedding is not None:
            self.call(ops.ones((1, 2), "int32"))
        elif self.image_shape is not None:
            self.call(ops.ones((1,) + self.image_shape))
        else:
            self.call(ops.ones((1, 2, input_shape[-1])))

    def call(self, inputs, training=None):
        if self.embedding is not None:
            x = self.embedding(inputs)
            mask = self.embedding.compute_mask(inputs)
        else:
            x = inputs
            mask = self.masking.compute_mask(inputs) if self.masking is not None else None
        rnns = _loop_rnns(self.core)
        if not rnns or not should_unroll(x.shape[1], gpu.gpu_visible()):
            return self.core(x, mask=mask, training=training)
        # Unrolled for this call (read at trace time) and set back, so the
        # layer's config, and so a saved model, keep the user's setting.
        for layer in rnns:
            layer.unroll = True
        try:
            return self.core(x, mask=mask, training=training)
        finally:
            for layer in rnns:
                layer.unroll = False

    def get_config(self):
        return {**super().get_config(),
                "core": keras.saving.serialize_keras_object(self.core),
                "vocab_size": self.vocab_size, "features": self.features,
                "masked": self.masked,
                "image_shape": list(self.image_shape) if self.image_shape else None}


register_encoder("lstm_fused")(fused.fused_lstm)
