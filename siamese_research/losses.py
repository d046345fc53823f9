"""Losses, by name. Label convention everywhere: 1 = similar, 0 = dissimilar.

The model always outputs a similarity score in [0, 1]. `bce` and `mse` score
it directly; `contrastive` converts it back to the merge's distance.
"""

from __future__ import annotations

import keras
from keras import ops

from siamese_research import merges as merges_lib
from siamese_research.config import ConfigError

PACKAGE = "siamese_research"
LOSSES = ("bce", "contrastive", "mse")


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


def build_loss(name: str, *, merge: str, margin: float = 1.0) -> keras.losses.Loss:
    """Builds the loss `name` for a model whose merge is `merge`."""
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "mse":
        return keras.losses.MeanSquaredError(name="mse")
    if name == "contrastive":
        if not merges_lib.get_merge_class(merge).has_distance:
            distance = [m for m in merges_lib.available()
                        if merges_lib.get_merge_class(m).has_distance]
            raise ConfigError("loss", name, f"needs a distance merge "
                              f"({', '.join(distance)}), not --merge={merge}")
        return ContrastiveLoss(margin, merge)
    raise ConfigError("loss", name, f"unknown loss; available: {', '.join(LOSSES)}")
