"""Merges: how two encodings `u` (left) and `v` (right) become one.

Feature merges (`concat`, `concat_absdiff_product`, `absdiff`, `product`,
`match`) feed the `Dense(1, sigmoid)` head. Score merges (`cosine`,
`manhattan`, `euclidean`, `dot`) already give a similarity in [0, 1] and
feed the loss directly. The distance merges among them (`cosine`,
`manhattan`, `euclidean`) also know their distance: from the encodings
(`distances`, what the triplet and mnrl losses train on) and from their own
similarity (`distance`, what the contrastive loss uses).

Why `concat` is not the default: with a linear head its logit is
w1.u + w2.v + b = f(left) + g(right), which cannot represent "alike". For
classes a != b it forces s(a,a) + s(b,b) = s(a,b) + s(b,a), so raising the
score of both matching pairs raises a mismatched one as much.
"""

from __future__ import annotations

import math
from typing import Dict

import keras
from keras import ops

from siamese_research.errors import ConfigError

PACKAGE = "siamese_research"
_MERGES: Dict[str, type] = {}
EPSILON = 1e-7


def register_merge(name: str):
    def wrap(cls):
        cls.merge_name = name
        _MERGES[name] = keras.saving.register_keras_serializable(package=PACKAGE)(cls)
        return cls

    return wrap


def available() -> list:
    return sorted(_MERGES)


def get_merge_class(name: str) -> type:
    if name not in _MERGES:
        raise ConfigError("merge", name, f"unknown merge; available: "
                                         f"{', '.join(available())}")
    return _MERGES[name]


def build_merge(name: str) -> keras.layers.Layer:
    return get_merge_class(name)(name="merge")


class Merge(keras.layers.Layer):
    """Base: `call([u, v])`. `symmetric`: f(u, v) == f(v, u). `score`: the
    output is already a similarity in [0, 1] (no head)."""

    symmetric = True
    score = False
    has_distance = False  # derived per class: it defines `distance` (contrastive needs it)
    merge_name = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.has_distance = cls.distance is not Merge.distance

    def call(self, inputs):
        u, v = inputs
        return self.merge(u, v)

    def merge(self, u, v):
        raise NotImplementedError

    def distance(self, similarity):
        """The distance this score merge's similarity encodes."""
        raise NotImplementedError(f"{self.merge_name} is not a distance merge")

    def distances(self, u, v):
        """The distance of encodings u and v (broadcast), keeping the last
        axis as 1: what a distance merge's similarity is a function of."""
        raise NotImplementedError(f"{self.merge_name} is not a distance merge")

    def pairwise_distances(self, u, v):
        """(n, k) distances of every row of u (n, dim) to every row of v
        (k, dim): in-batch negatives' matrix. By broadcasting (an (n, k,
        dim) temporary); a merge with a cheaper form overrides it."""
        return self.distances(u[:, None, :], v[None, :, :])[..., 0]

    def similarity(self, distance):
        """The similarity in [0, 1] a distance merge gives `distance`."""
        raise NotImplementedError(f"{self.merge_name} is not a distance merge")


@register_merge("concat")
class Concat(Merge):
    """[u, v]: the notebook's merge. Order-dependent."""

    symmetric = False

    def merge(self, u, v):
        return ops.concatenate([u, v], axis=-1)


@register_merge("concat_absdiff_product")
class ConcatAbsDiffProduct(Merge):
    """[u, v, |u - v|, u * v] (InferSent, Conneau et al. 2017). The head sees
    the two interaction terms, so it can score "alike"."""

    symmetric = False  # the [u, v] part is ordered; |u - v| and u * v are not

    def merge(self, u, v):
        return ops.concatenate([u, v, ops.abs(u - v), u * v], axis=-1)


@register_merge("absdiff")
class AbsDiff(Merge):
    def merge(self, u, v):
        return ops.abs(u - v)


@register_merge("product")
class Product(Merge):
    def merge(self, u, v):
        return u * v


@register_merge("cosine")
class Cosine(Merge):
    """(1 + cos(u, v)) / 2 in [0, 1]; distance = 1 - cos = 2 (1 - s)."""

    score = True

    def merge(self, u, v):
        return self.similarity(self.distances(u, v))

    def distances(self, u, v):
        un = u / ops.maximum(ops.norm(u, axis=-1, keepdims=True), EPSILON)
        vn = v / ops.maximum(ops.norm(v, axis=-1, keepdims=True), EPSILON)
        return 1.0 - ops.sum(un * vn, axis=-1, keepdims=True)

    def pairwise_distances(self, u, v):
        # One matrix product: the broadcast form's (n, k, dim) temporary and
        # its gradient were 67 MB each at batch 256 x 256 dimensions, the
        # larger part of a cached (--mini_batch_size) step's memory.
        un = u / ops.maximum(ops.norm(u, axis=-1, keepdims=True), EPSILON)
        vn = v / ops.maximum(ops.norm(v, axis=-1, keepdims=True), EPSILON)
        return 1.0 - ops.matmul(un, ops.transpose(vn))

    def similarity(self, distance):
        return 1.0 - distance / 2.0

    def distance(self, similarity):
        return 2.0 * (1.0 - similarity)


@register_merge("manhattan")
class Manhattan(Merge):
    """MaLSTM (Mueller & Thyagarajan 2016): exp(-||u - v||_1) in (0, 1]."""

    score = True

    def merge(self, u, v):
        return self.similarity(self.distances(u, v))

    def distances(self, u, v):
        return ops.sum(ops.abs(u - v), axis=-1, keepdims=True)

    def similarity(self, distance):
        return ops.exp(-distance)

    def distance(self, similarity):
        return -ops.log(ops.maximum(similarity, EPSILON))


@register_merge("euclidean")
class Euclidean(Manhattan):
    """exp(-||u - v||_2) in (0, 1]: FaceNet's distance (unsquared) for the
    triplet loss, as a similarity for the pair metrics."""

    def distances(self, u, v):
        # The floor keeps the gradient of the root finite at u == v.
        squared = ops.sum(ops.square(u - v), axis=-1, keepdims=True)
        return ops.sqrt(ops.maximum(squared, EPSILON * EPSILON))


@register_merge("dot")
class Dot(Merge):
    """sigmoid(s * u.v + b), with s > 0 and b learned; s starts at
    1 / sqrt(dim).

    An unnormalised similarity. Cosine divides by both lengths, so a long
    answer that contains all the question's rare words scores lower than a
    short one that contains fewer of them; u.v does not. With a bag-of-words
    encoder (`bag`) it is a sum over word pairs of embedding dot products:
    with near-orthogonal embeddings, a weighted count of shared words
    (docs/results.md).
    """

    score = True

    def build(self, input_shape):
        dim = int(input_shape[0][-1])
        self.log_scale = self.add_weight(
            shape=(), name="log_scale",
            initializer=keras.initializers.Constant(-0.5 * math.log(max(dim, 1))))
        self.bias = self.add_weight(shape=(), name="bias", initializer="zeros")

    def merge(self, u, v):
        dot = ops.sum(u * v, axis=-1, keepdims=True)
        return ops.sigmoid(ops.exp(self.log_scale) * dot + self.bias)


@register_merge("match")
class Match(Merge):
    """Six overlap statistics of two encodings, for the head to weigh:
    [cos, u.v / |u|^2, u.v / |v|^2, min and max of those two, log |u|^2 -
    log |v|^2].

    Made for a bag of words (`--encoder=bag`) over near-orthogonal word
    vectors (random, wide, idf-scaled with `--embedding_init=idf`): then
    u.v is about the idf^2 mass of the words the two texts share, |u|^2 each
    text's own mass, so u.v / |u|^2 is the share of the left text found in
    the right one (the overlap baseline's own score, with idf squared) and
    u.v / |v|^2 the other way round. The head learns how to combine them
    (paraphrase wants both high, answer selection the question's share),
    and trained embeddings can move related words together, so more than
    exact matches count. Order-dependent: left and right each have their
    share.
    """

    symmetric = False
    features = 6

    def merge(self, u, v):
        dot = ops.sum(u * v, axis=-1, keepdims=True)
        nu = ops.sum(u * u, axis=-1, keepdims=True)
        nv = ops.sum(v * v, axis=-1, keepdims=True)
        cos = dot / ops.maximum(ops.sqrt(nu * nv), EPSILON)
        left = dot / ops.maximum(nu, EPSILON)
        right = dot / ops.maximum(nv, EPSILON)
        ratio = ops.log(ops.maximum(nu, EPSILON)) - ops.log(ops.maximum(nv, EPSILON))
        return ops.concatenate([cos, left, right, ops.minimum(left, right),
                                ops.maximum(left, right), ratio], axis=-1)


@register_merge("match_absdiff_product")
class MatchAbsDiffProduct(Match):
    """`match`'s six overlap statistics, then |u - v| and u * v: the head
    weighs the overlap and, dimension by dimension, what the trained
    embeddings learned beyond it."""

    def merge(self, u, v):
        return ops.concatenate([super().merge(u, v), ops.abs(u - v), u * v], axis=-1)


@register_merge("dot_match")
class DotMatch(Dot):
    """`dot`'s score plus a learned weighing of `match`'s statistics:
    sigmoid(s * u.v + w . match(u, v) + b), with w starting at zero.

    So it starts as `dot` exactly (with `--embedding_init=idf` and a bag of
    words, an idf^2-weighted count of shared words: the overlap baseline's
    idea) and training can only add to it: w learns how much each side's
    share, the cosine and the length ratio should move the score, while the
    trained embeddings move related words together. A score merge (no head),
    order-dependent like `match`.
    """

    symmetric = False

    def build(self, input_shape):
        super().build(input_shape)
        self.match_weights = self.add_weight(shape=(Match.features,), name="match_weights",
                                             initializer="zeros")

    def merge(self, u, v):
        dot = ops.sum(u * v, axis=-1, keepdims=True)
        stats = Match.merge(self, u, v)
        logit = (ops.exp(self.log_scale) * dot + self.bias +
                 ops.sum(stats * self.match_weights, axis=-1, keepdims=True))
        return ops.sigmoid(logit)
