"""Losses, by name. Label convention everywhere: 1 = similar, 0 = dissimilar.

On pairs the model outputs a similarity score in [0, 1]. `bce` and `mse`
score it directly; `contrastive` converts it back to the merge's distance;
`pairwise` ranks a batch's positives above its negatives (the training
batches then hold one left text's candidates each, see `GROUPED`).

`triplet`, `mnrl` and the online miners `batch_hard_triplet` and
`batch_semi_hard_triplet` train on more than one pair of encoder calls
(`SiameseModel.objective`, `objective`): the model's training output is
then distances straight from the encodings, (batch, 2) [d(a, p), d(a, n)]
for a triplet and the (batch, batch) matrix d(anchor_i, positive_j) for
in-batch negatives ((batch, 2 * batch) with a mined negative per row). Their
label is unused (every row is a positive), except the miners': each row's
group, whose rows are one another's positives.
"""

from __future__ import annotations

import keras
from keras import ops

from siamese_research.core import merges as merges_lib
from siamese_research.errors import ConfigError

PACKAGE = "siamese_research"
LOSSES = ("bce", "contrastive", "mse", "pairwise", "triplet", "mnrl",
          "batch_hard_triplet", "batch_semi_hard_triplet")
# What each k-branch loss trains on: the model's `objective` and branch names
# (mnrl with a negative per row: see `objective`).
OBJECTIVES = {"triplet": "triplet", "mnrl": "in_batch",
              "batch_hard_triplet": "in_batch_groups",
              "batch_semi_hard_triplet": "in_batch_groups"}
DISTANCE_LOSSES = ("contrastive", *OBJECTIVES)
# The scalars a miner's step shows (`BatchHardTripletLoss.miner_stats`).
MINER_TAGS = ("miner/active_fraction", "miner/positive_distance",
              "miner/negative_distance")
# Losses that compare the pairs of a batch with each other: their training
# batches hold the candidates of one left text (data.train_dataset).
GROUPED = ("pairwise",)
LOGIT_CLIP = 1e-6


@keras.saving.register_keras_serializable(package=PACKAGE)
class ContrastiveLoss(keras.losses.Loss):
    """Hadsell, Chopra & LeCun (2006), on the merge's distance d:

        L = y * d^2 / 2 + (1 - y) * max(0, margin - d)^2 / 2

    y = 1 (similar) pulls d to 0; y = 0 pushes d beyond `margin`.
    """

    def __init__(self, margin: float = 1.0, merge: str = "manhattan",
                 name: str = "contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin, self.merge = float(margin), merge
        self._merge = merges_lib.build_merge(merge)

    def call(self, y_true, y_pred):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), y_pred.dtype)
        d = ops.reshape(self._merge.distance(y_pred), (-1,))
        pos = 0.5 * ops.square(d)
        neg = 0.5 * ops.square(ops.maximum(self.margin - d, 0.0))
        return y_true * pos + (1.0 - y_true) * neg

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "merge": self.merge}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PairwiseRankingLoss(keras.losses.Loss):
    """RankNet (Burges et al. 2005) within a batch: every positive against
    every negative of the batch, softplus(z_neg - z_pos) on the scores'
    logits z = log(s / (1 - s)). Each positive's term is its mean over the
    negatives; the batch's loss is the mean over its positives (a batch
    without a positive or without a negative gives 0).

    Training batches hold one left text's candidates (one question's
    answers), so this is "each question's positives above its negatives":
    what MAP rewards, and it ignores how many negatives there are (no class
    weighting needed). Scores keep their order, not a calibrated
    probability; validation batches mix questions, so `val_loss` is only a
    loose guide.
    """

    def __init__(self, name: str = "pairwise", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y = ops.cast(ops.reshape(y_true, (-1,)) >= 0.5, y_pred.dtype)
        s = ops.clip(ops.reshape(y_pred, (-1,)), LOGIT_CLIP, 1.0 - LOGIT_CLIP)
        z = ops.log(s) - ops.log(1.0 - s)
        # pair[i, j] = softplus(z_j - z_i) for positive i, negative j.
        pair = ops.softplus(z[None, :] - z[:, None])
        neg = 1.0 - y
        n_pos, n_neg = ops.sum(y), ops.sum(neg)
        per_pos = ops.sum(pair * neg[None, :], axis=1) / ops.maximum(n_neg, 1.0)
        # Keras divides the per-pair sum by the batch size: scale so the batch
        # loss is the mean over positives.
        n = ops.cast(ops.shape(y)[0], y.dtype)
        scale = ops.where(n_neg > 0, n / ops.maximum(n_pos, 1.0), 0.0)
        return y * per_pos * scale

    def get_config(self):
        return super().get_config()


@keras.saving.register_keras_serializable(package=PACKAGE)
class TripletLoss(keras.losses.Loss):
    """FaceNet's (Schroff et al. 2015) triplet loss on the merge's distance:

        L = max(0, d(a, p) - d(a, n) + margin)

    `y_pred` is (batch, 2): [d(anchor, positive), d(anchor, negative)].
    """

    def __init__(self, margin: float = 1.0, name: str = "triplet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return ops.relu(y_pred[:, 0] - y_pred[:, 1] + self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultipleNegativesRankingLoss(keras.losses.Loss):
    """In-batch negatives (InfoNCE; sentence-transformers'
    MultipleNegativesRankingLoss): anchor i's positive is row i's, and the
    batch's other positives are its negatives. With logits -d / T,

        L_i = -log softmax_j(-d(a_i, p_j) / T)[i]

    `y_pred` is the (batch, batch) distance matrix d(a_i, p_j), or with a
    negative per row (batch, 2 * batch): every positive, then every row's
    negative, as candidates (sentence-transformers' (anchor, positive,
    negative) input). With the cosine merge (d = 1 - cos) this is
    sentence-transformers' loss at scale 1 / T (the constant shift does not
    change a softmax).
    """

    def __init__(self, temperature: float = 0.05, name: str = "mnrl", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        logits = -ops.cast(y_pred, "float32") / self.temperature
        target = ops.arange(ops.shape(logits)[0])
        return keras.losses.sparse_categorical_crossentropy(target, logits,
                                                            from_logits=True)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchHardTripletLoss(keras.losses.Loss):
    """Online triplet mining inside a batch drawn M rows per group
    (`--per_group`), on the (batch, batch) distances d(anchor_i,
    positive_j); `y_true` is each row's group, and j is one of anchor i's
    positives when its group is i's (j = i among them):

    - batch-hard (Hermans, Beyer & Leibe 2017): each anchor's farthest
      positive and nearest negative, L_i = max(0, d+ - d- + margin);
    - semi-hard (FaceNet, Schroff et al. 2015; the choice of TensorFlow
      Addons' `triplet_semihard_loss`): for every positive pair (i, j), the
      nearest negative farther than the positive, or the farthest negative
      when none is; L_i is the mean over anchor i's positive pairs (j = i
      among them: the anchor's own positive), and the batch's loss the mean
      over anchors (Addons averages over all pairs of one set of embeddings,
      without j = i).

    An anchor with no negative in the batch (every row of its group) adds 0.
    """

    def __init__(self, margin: float = 1.0, semi_hard: bool = False,
                 name: str = "batch_hard_triplet", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin, self.semi_hard = float(margin), bool(semi_hard)

    def mine(self, y_true, y_pred):
        """(loss (batch,), active (pairs,), positive distances (pairs,),
        negative distances (pairs,), valid (pairs,): 1 for a mined triplet,
        0 for a pair without one): a pair is an anchor (batch-hard) or an
        (anchor, positive) of the (batch, batch) grid (semi-hard)."""
        d = ops.cast(y_pred, "float32")
        group = ops.reshape(y_true, (-1,))
        same = ops.equal(group[:, None], group[None, :])
        has_negative = ops.any(ops.logical_not(same), axis=1)
        big = ops.max(d) + 1.0
        if not self.semi_hard:
            d_pos = ops.max(ops.where(same, d, -big), axis=1)
            d_neg = ops.min(ops.where(same, big, d), axis=1)
            loss = ops.where(has_negative, ops.relu(d_pos - d_neg + self.margin), 0.0)
            valid = ops.cast(has_negative, "float32")
            return loss, valid * ops.cast(loss > 0, "float32"), d_pos, d_neg, valid
        # [i, j, k]: anchor i, positive j, negative k.
        neg = ops.logical_not(same)[:, None, :]
        d_ap = d[:, :, None]
        d_an = d[:, None, :]
        outside = ops.logical_and(neg, d_an > d_ap)
        nearest_outside = ops.min(ops.where(outside, d_an, big), axis=2)
        farthest = ops.max(ops.where(neg, d_an, -big), axis=2)
        d_neg = ops.where(ops.any(outside, axis=2), nearest_outside, farthest)
        pair = ops.logical_and(same, has_negative[:, None])
        weight = ops.cast(pair, "float32")
        terms = ops.relu(d - d_neg + self.margin) * weight
        loss = ops.sum(terms, axis=1) / ops.maximum(ops.sum(weight, axis=1), 1.0)
        return (loss, ops.reshape(weight * ops.cast(terms > 0, "float32"), (-1,)),
                ops.reshape(d, (-1,)), ops.reshape(d_neg, (-1,)),
                ops.reshape(weight, (-1,)))

    def call(self, y_true, y_pred):
        return self.mine(y_true, y_pred)[0]

    def miner_stats(self, y_true, y_pred):
        """[the fraction of active triplets (a positive loss), their mean
        positive distance, mean negative distance] over the batch's mined
        triplets (`MINER_TAGS`)."""
        _, active, d_pos, d_neg, valid = self.mine(y_true, y_pred)
        n = ops.maximum(ops.sum(valid), 1.0)
        return ops.stack([ops.sum(active) / n, ops.sum(d_pos * valid) / n,
                          ops.sum(d_neg * valid) / n])

    def get_config(self):
        return {**super().get_config(), "margin": self.margin,
                "semi_hard": self.semi_hard}


def objective(loss: str, negatives: bool = False) -> str:
    """The model's objective (`SiameseModel`) for `loss`: "pair" for the
    pair losses; mnrl with a negative per row (`negatives`: mined, or drawn
    from the anchor's group) is "in_batch_negatives"."""
    if loss == "mnrl" and negatives:
        return "in_batch_negatives"
    return OBJECTIVES.get(loss, "pair")


def check_loss(name: str, merge: str) -> None:
    """Refuses (`ConfigError`) an unknown loss, or one that `merge` cannot
    serve (a distance loss without a distance merge)."""
    if name not in LOSSES:
        raise ConfigError("loss", name, f"unknown loss; available: {', '.join(LOSSES)}")
    if name in DISTANCE_LOSSES:
        if not merges_lib.get_merge_class(merge).has_distance:
            distance = [m for m in merges_lib.available()
                        if merges_lib.get_merge_class(m).has_distance]
            raise ConfigError("loss", name, f"needs a distance merge "
                              f"({', '.join(distance)}), not --merge={merge}")


def build_loss(name: str, *, merge: str, margin: float = 1.0,
               temperature: float = 0.05) -> keras.losses.Loss:
    """Builds the loss `name` for a model whose merge is `merge`."""
    check_loss(name, merge)
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "mse":
        return keras.losses.MeanSquaredError(name="mse")
    if name == "contrastive":
        return ContrastiveLoss(margin, merge)
    if name == "triplet":
        return TripletLoss(margin)
    if name == "mnrl":
        return MultipleNegativesRankingLoss(temperature)
    if name in ("batch_hard_triplet", "batch_semi_hard_triplet"):
        return BatchHardTripletLoss(margin, semi_hard=name.startswith("batch_semi"),
                                    name=name)
    return PairwiseRankingLoss()  # (check_loss refused any other name)
