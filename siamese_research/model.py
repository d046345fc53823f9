"""`SiameseModel`: ONE encoder object, called on the left and on the right."""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from siamese_research import encoders as encoders_lib
from siamese_research import merges as merges_lib

PACKAGE = "siamese_research"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SiameseModel(keras.Model):
    """score = head(merge(encoder(left), encoder(right))), in [0, 1].

    Weight sharing is structural: `self.encoder` is one layer object, so it
    holds one set of variables however many times it is called. With
    `right_encoder` (untied towers) the right input gets its own copy.

    Call as `model((left, right))`; left and right may differ in length.
    """

    def __init__(self, encoder, merge, head=None, right_encoder=None,
                 name: str = "siamese", **kwargs):
        super().__init__(name=name, **kwargs)
        des = keras.saving.deserialize_keras_object
        self.encoder = des(encoder) if isinstance(encoder, dict) else encoder
        self.merge = des(merge) if isinstance(merge, dict) else merge
        if isinstance(right_encoder, dict):
            right_encoder = des(right_encoder)
        self.right_encoder = right_encoder
        if isinstance(head, dict):
            head = des(head)
        if head is None and not self.merge.score:
            head = keras.layers.Dense(1, activation="sigmoid", dtype="float32",
                                      name="head")
        self.head = head

    @property
    def towers(self):
        """(left tower, right tower): the same object when tied."""
        return self.encoder, self.right_encoder or self.encoder

    @property
    def tied(self) -> bool:
        return self.right_encoder is None

    def call(self, inputs, training=None):
        left, right = inputs
        h_left = self.encoder(left, training=training)
        h_right = self.towers[1](right, training=training)
        return self.score(h_left, h_right, training=training)

    def score(self, h_left, h_right, training=None):
        """Merge + head on two encodings: the part after the towers."""
        merged = self.merge([h_left, h_right])
        if self.head is None:
            return keras.ops.cast(merged, "float32")
        return self.head(merged, training=training)

    def get_build_config(self):
        return {"features": self.encoder.features, "vocab_size": self.encoder.vocab_size}

    def build_from_config(self, config):
        build_variables(self, features=config["features"],
                        vocab_size=config.get("vocab_size", 0))

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {"name": self.name, "encoder": ser(self.encoder), "merge": ser(self.merge),
                "head": ser(self.head) if self.head is not None else None,
                "right_encoder": ser(self.right_encoder) if self.right_encoder else None}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_tower(*, encoder: str = "lstm", units: int = 32, features: int = 128,
                vocab_size: int = 0, encoder_args: Optional[dict] = None,
                masked: bool = True, name: str = "encoder"):
    core = encoders_lib.build_encoder(encoder, units, **(encoder_args or {}))
    return encoders_lib.SiameseTower(core, vocab_size=vocab_size, features=features,
                                     masked=masked, name=name)


def build_model(*, encoder: str = "lstm", units: int = 32, features: int = 128,
                merge: str = "concat_absdiff_product", share: str = "tied",
                vocab_size: int = 0, encoder_args: Optional[dict] = None,
                masked: bool = True, build: bool = True) -> SiameseModel:
    """Builds a `SiameseModel` and (by default) its variables.

    Args:
      encoder: a registered encoder name or `package.module:Name`.
      units: encoder output size.
      features: float inputs' feature size, or the embedding size for tokens.
      merge: a registered merge name.
      share: "tied" (one encoder) or "untied" (two of the same architecture).
      vocab_size: > 0 for token-id inputs (adds a shared Embedding).
      encoder_args: extra keyword arguments for the encoder.
      masked: mask all-zero steps of float inputs (padding); False for data
        whose sequences are all full length.
      build: run one dummy batch so every variable exists.
    """
    kwargs = dict(encoder=encoder, units=units, features=features,
                  vocab_size=vocab_size, encoder_args=encoder_args, masked=masked)
    left = build_tower(**kwargs)
    right = build_tower(**kwargs, name="right_encoder") if share == "untied" else None
    model = SiameseModel(left, merges_lib.build_merge(merge), right_encoder=right)
    if build:
        build_variables(model, features=features, vocab_size=vocab_size)
    return model


def build_variables(model: SiameseModel, *, features: int, vocab_size: int = 0):
    """Creates every variable with one tiny eager forward pass."""
    if vocab_size:
        x = np.ones((2, 3), np.int32)
    else:
        x = np.ones((2, 3, features), np.float32)
    model((x, x), training=False)


def encoder_variables(model: SiameseModel) -> list:
    """Trainable variables of the tower(s), each once."""
    seen, out = set(), []
    for tower in model.towers:
        for v in tower.trainable_variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def head_variables(model: SiameseModel) -> list:
    enc = {id(v) for v in encoder_variables(model)}
    return [v for v in model.trainable_variables if id(v) not in enc]


def count_params(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def parameter_table(model: SiameseModel) -> str:
    """A Markdown table of variables (path, shape, count) and totals."""
    rows = ["| variable | shape | parameters |", "| --- | --- | ---: |"]
    for v in model.trainable_variables:
        rows.append(f"| `{v.path}` | {tuple(v.shape)} | {count_params([v]):,} |")
    enc = count_params(encoder_variables(model))
    rows.append(f"| **total** | | **{count_params(model.trainable_variables):,}** |")
    rows.append(f"| encoder ({'tied: one tower, 2 calls' if model.tied else 'untied: 2 towers'}) "
                f"| | {enc:,} |")
    return "\n".join(rows)


def encoder_model(model: SiameseModel) -> keras.Model:
    """The shared tower alone as a functional model (what encoder.keras holds):
    sequences (batch, time, features) or token ids (batch, time) -> (batch, dim)."""
    tower = model.encoder
    if tower.vocab_size:
        inputs = keras.Input(shape=(None,), dtype="int32", name="tokens")
    else:
        inputs = keras.Input(shape=(None, tower.features), name="sequence")
    return keras.Model(inputs, tower(inputs), name="encoder_model")


def scale_embeddings(model: SiameseModel, lengths) -> None:
    """Rescales every token's embedding row (its random direction kept) to
    the given length, in each tower: `--embedding_init=idf` passes the
    training split's idf, so rare words start long and frequent ones short.

    Args:
      model: a built SiameseModel with token inputs (an Embedding).
      lengths: (vocab_size,) target row norms.
    """
    lengths = np.asarray(lengths, np.float32)[:, None]
    for tower in dict.fromkeys(model.towers):
        table = tower.embedding.embeddings
        rows = np.asarray(table.numpy(), np.float32)
        norms = np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        table.assign(rows / norms * lengths)


def embedding_layers(model: SiameseModel) -> list:
    """The towers' `Embedding` layers, each once (one when tied; none for
    float sequences)."""
    return [tower.embedding for tower in dict.fromkeys(model.towers)
            if tower.embedding is not None]


def set_embedding_rows(model: SiameseModel, ids, vectors) -> None:
    """Overwrites rows `ids` of every tower's embedding table with `vectors`
    (`--embeddings`); the other rows keep their initialisation.

    Args:
      model: a built SiameseModel with token inputs.
      ids: token ids, (k,).
      vectors: their rows, (k, embedding size).

    Raises:
      ValueError: the vectors' size is not the table's.
    """
    ids = np.asarray(ids, np.int64)
    vectors = np.asarray(vectors, np.float32)
    for layer in embedding_layers(model):
        table = layer.embeddings
        rows = np.array(table.numpy(), np.float32)
        if vectors.shape[1:] != rows.shape[1:]:
            raise ValueError(f"vectors of size {vectors.shape[1:]} for an embedding "
                             f"table of rows {rows.shape[1:]}")
        rows[ids] = vectors
        table.assign(rows)


def freeze_embeddings(model: SiameseModel) -> None:
    """Makes the embedding table(s) non-trainable (`--freeze_embeddings`): out
    of `model.trainable_variables`, so the optimizer never updates them and
    the branch-gradient logs (over `encoder_variables`) leave them out."""
    for layer in embedding_layers(model):
        layer.trainable = False
