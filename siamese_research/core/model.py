"""`SiameseModel`: ONE encoder object, called on each input: left and right
for a pair, anchor, positive and negative for a triplet."""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from siamese_research.core import encoders as encoders_lib
from siamese_research.core import merges as merges_lib

PACKAGE = "siamese_research"
# What a model trains on, and its branches (the encoder calls), by name.
BRANCHES = {"pair": ("left", "right"),
            "triplet": ("anchor", "positive", "negative"),
            "in_batch": ("anchor", "positive"),
            "in_batch_negatives": ("anchor", "positive", "negative"),
            "in_batch_groups": ("anchor", "positive")}
# In-batch objectives: the output is anchor i against every candidate j of
# the batch, (batch, candidates) distances: the positives (and, with
# negatives, then each row's negative); for "in_batch_groups" the label is
# each row's group, and a row's positives are its group's.
IN_BATCH = ("in_batch", "in_batch_negatives", "in_batch_groups")


@keras.saving.register_keras_serializable(package=PACKAGE)
class SiameseModel(keras.Model):
    """score = head(merge(encoder(left), encoder(right))), in [0, 1].

    Weight sharing is structural: `self.encoder` is one layer object, so it
    holds one set of variables however many times it is called. With
    `right_encoder` (untied towers) the second input gets its own copy, and
    with `other_encoders` the third and later ones theirs.

    Call as `model((left, right))` for pair scores (the inputs may differ in
    length), or, with a distance merge, `model((anchor, positive,
    negative))` for the distances [d(a, p), d(a, n)], (batch, 2).

    `objective` is what training optimises over the encodings
    (`objective_output`): "pair" scores, "triplet" distances, or an
    in-batch objective (`IN_BATCH`): anchors against every positive of the
    batch, the (batch, batch) distances ("in_batch", "in_batch_groups"),
    or against every positive and every negative, (batch, 2 * batch)
    ("in_batch_negatives"). `branches` names the encoder calls it makes.
    """

    def __init__(self, encoder, merge, head=None, right_encoder=None,
                 other_encoders=None, objective: str = "pair",
                 name: str = "siamese", **kwargs):
        super().__init__(name=name, **kwargs)
        des = keras.saving.deserialize_keras_object
        self.encoder = des(encoder) if isinstance(encoder, dict) else encoder
        self.merge = des(merge) if isinstance(merge, dict) else merge
        if isinstance(right_encoder, dict):
            right_encoder = des(right_encoder)
        self.right_encoder = right_encoder
        if objective not in BRANCHES:
            raise ValueError(f"objective {objective!r}: expected one of "
                             f"{', '.join(BRANCHES)}")
        if objective != "pair" and not self.merge.has_distance:
            raise ValueError(f"objective {objective!r} needs a distance merge, "
                             f"not {self.merge.merge_name}")
        self.objective = objective
        self.other_encoders = [des(e) if isinstance(e, dict) else e
                               for e in (other_encoders or [])]
        if right_encoder is not None and len(self.other_encoders) != len(self.branches) - 2:
            raise ValueError(f"untied towers: {len(self.branches)} for {objective!r}, "
                             f"got {2 + len(self.other_encoders)}")
        if isinstance(head, dict):
            head = des(head)
        if head is None and not self.merge.score:
            head = keras.layers.Dense(1, activation="sigmoid", dtype="float32",
                                      name="head")
        self.head = head

    @property
    def branches(self) -> tuple:
        """The encoder calls' names: left, right; or anchor, positive[, negative]."""
        return BRANCHES[self.objective]

    @property
    def towers(self) -> tuple:
        """One tower per branch: the same object k times when tied."""
        if self.tied:
            return (self.encoder,) * len(self.branches)
        return (self.encoder, self.right_encoder, *self.other_encoders)

    @property
    def tied(self) -> bool:
        return self.right_encoder is None

    def build(self, input_shape):
        # Nothing to create here: the towers, the merge and the head build
        # themselves on their first call (a SiameseTower with one eager pass
        # of two steps). Without this method Keras builds a model by first
        # running `call` on symbolic inputs: a graph trace of every tower,
        # 1.2 of build_model's 1.5 s for the LSTM (2-core VM, 2026-12-02).
        del input_shape

    def call(self, inputs, training=None):
        inputs = tuple(inputs)
        if len(inputs) not in (2, 3):
            raise ValueError(f"a SiameseModel takes (left, right) or (anchor, positive, "
                             f"negative); got {len(inputs)} inputs")
        towers = self.towers
        if len(inputs) != len(towers):  # candidates go through the second tower
            towers = (towers[0], towers[1], towers[1])[:len(inputs)]
        if len(inputs) == 3 and not self.merge.has_distance:
            raise ValueError(f"(anchor, positive, negative) distances need a distance "
                             f"merge, not {self.merge.merge_name}")
        encodings = [tower(x, training=training) for tower, x in zip(towers, inputs)]
        if len(inputs) == 3:
            return triplet_distances(self.merge, encodings)
        return self.score(*encodings, training=training)

    def objective_output(self, encodings, training=None):
        """What the loss sees, from one encoding per branch (`branches`)."""
        if self.objective == "triplet":
            return triplet_distances(self.merge, encodings)
        if self.objective in IN_BATCH:
            anchor, *candidates = (keras.ops.cast(h, "float32") for h in encodings)
            candidates = keras.ops.concatenate(candidates, axis=0)
            return self.merge.pairwise_distances(anchor, candidates)
        return self.score(*encodings, training=training)

    def score(self, h_left, h_right, training=None):
        """Merge + head on two encodings: the part after the towers."""
        merged = self.merge([h_left, h_right])
        if self.head is None:
            return keras.ops.cast(merged, "float32")
        return self.head(merged, training=training)

    def get_build_config(self):
        shape = self.encoder.image_shape
        return {"features": self.encoder.features, "vocab_size": self.encoder.vocab_size,
                "image_shape": list(shape) if shape else None}

    def build_from_config(self, config):
        build_variables(self, features=config["features"],
                        vocab_size=config.get("vocab_size", 0),
                        image_shape=config.get("image_shape"))

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {"name": self.name, "encoder": ser(self.encoder), "merge": ser(self.merge),
                "head": ser(self.head) if self.head is not None else None,
                "right_encoder": ser(self.right_encoder) if self.right_encoder else None,
                "other_encoders": [ser(e) for e in self.other_encoders],
                "objective": self.objective}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def triplet_distances(merge, encodings):
    """[d(a, p), d(a, n)] of three encodings under a distance merge, (batch, 2)."""
    anchor, positive, negative = (keras.ops.cast(h, "float32") for h in encodings)
    return keras.ops.concatenate([merge.distances(anchor, positive),
                                  merge.distances(anchor, negative)], axis=-1)


def build_tower(*, encoder: str = "lstm", units: int = 32, features: int = 128,
                vocab_size: int = 0, encoder_args: Optional[dict] = None,
                masked: bool = True, image_shape=None, name: str = "encoder"):
    core = encoders_lib.build_encoder(encoder, units, **(encoder_args or {}))
    return encoders_lib.SiameseTower(core, vocab_size=vocab_size, features=features,
                                     masked=masked, image_shape=image_shape, name=name)


def build_model(*, encoder: str = "lstm", units: int = 32, features: int = 128,
                merge: str = "concat_absdiff_product", share: str = "tied",
                vocab_size: int = 0, encoder_args: Optional[dict] = None,
                masked: bool = True, build: bool = True,
                objective: str = "pair", image_shape=None) -> SiameseModel:
    """Builds a `SiameseModel` and (by default) its variables.

    Args:
      encoder: a registered encoder name or `package.module:Name`.
      units: encoder output size.
      features: float inputs' feature size, or the embedding size for tokens.
      merge: a registered merge name.
      share: "tied" (one encoder) or "untied" (one of the same architecture
        per branch: 2, or 3 for triplets).
      vocab_size: > 0 for token-id inputs (adds a shared Embedding).
      encoder_args: extra keyword arguments for the encoder.
      masked: mask all-zero steps of float inputs (padding); False for data
        whose sequences are all full length.
      build: run one dummy batch so every variable exists.
      objective: "pair", "triplet" or an in-batch one (`SiameseModel`).
      image_shape: (height, width, channels) for image inputs (no mask;
        `features` is then the channels).
    """
    kwargs = dict(encoder=encoder, units=units, features=features,
                  vocab_size=vocab_size, encoder_args=encoder_args, masked=masked,
                  image_shape=image_shape)
    left = build_tower(**kwargs)
    right, others = None, []
    if share == "untied":
        names = BRANCHES[objective]
        right = build_tower(**kwargs, name="right_encoder" if objective == "pair"
                            else f"{names[1]}_encoder")
        others = [build_tower(**kwargs, name=f"{b}_encoder") for b in names[2:]]
    model = SiameseModel(left, merges_lib.build_merge(merge), right_encoder=right,
                         other_encoders=others, objective=objective)
    if build:
        build_variables(model, features=features, vocab_size=vocab_size,
                        image_shape=image_shape)
    return model


def build_variables(model: SiameseModel, *, features: int, vocab_size: int = 0,
                    image_shape=None):
    """Creates every variable with one tiny eager forward pass."""
    if vocab_size:
        x = np.ones((2, 3), np.int32)
    elif image_shape:
        x = np.ones((2,) + tuple(image_shape), np.float32)
    else:
        x = np.ones((2, 3, features), np.float32)
    for tower in model.towers[2:]:  # untied towers past the pair's two
        tower(x, training=False)
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
    k = len(model.branches)
    rows.append(f"| encoder ({f'tied: one tower, {k} calls' if model.tied else f'untied: {k} towers'}) "
                f"| | {enc:,} |")
    return "\n".join(rows)


def encoder_model(model: SiameseModel) -> keras.Model:
    """The shared tower alone as a functional model (what encoder.keras holds):
    sequences (batch, time, features), token ids (batch, time) or images
    (batch, height, width, channels) -> (batch, dim)."""
    tower = model.encoder
    if tower.vocab_size:
        inputs = keras.Input(shape=(None,), dtype="int32", name="tokens")
    elif tower.image_shape:
        inputs = keras.Input(shape=tower.image_shape, name="image")
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
