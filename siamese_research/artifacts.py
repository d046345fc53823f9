"""The run folder: its files, written and read in one place, and
`load_run(run_dir)` -> `Run`, the one loader of a trained run.

    runs/<name>/
      config.json command.txt     the resolved Config; the command line
      model.keras encoder.keras   the last epoch's SiameseModel; its tower
      best.keras best_encoder.keras best.json   the best epoch (--monitor)
      threshold.json vectorizer.json embeddings.json
      checkpoints/ train/ validation/   tf.train checkpoints; event files
      mined/epoch-0003.npz        --negatives=hard: the windows mined at epoch 3

    run = load_run("runs/qa")                      # best.keras, else model.keras
    run.score(["what is x?"], ["x is a thing"])    # (n,) float32
    run.encode(["what is x?"])                     # (n, dim) float32

A text run takes raw strings and turns them into token ids with its own
vectoriser (`vectorizer.json`, as training did); a float run takes arrays
(n, time, features), right-padded with zeros. Work goes in batches of
`batch_size` through compiled functions (one trace each: the batch and time
dimensions are None), on whatever device TensorFlow places them (a GPU when
it sees one).
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import shutil
from typing import Optional, Sequence


import keras
import numpy as np
import tensorflow as tf

from siamese_research import atomic
from siamese_research.config import Config
from siamese_research.core import model as model_lib
from siamese_research.data import images as images_lib
from siamese_research.data import vocab
from siamese_research.errors import DataError
from siamese_research.metrics.pairs import predicted

MODEL_FILES = {"best": "best.keras", "last": "model.keras"}
ENCODER_FILES = {"best": "best_encoder.keras", "last": "encoder.keras"}
CONFIG_FILE = "config.json"
COMMAND_FILE = "command.txt"
BEST_FILE = "best.json"
THRESHOLD_FILE = "threshold.json"
CHECKPOINTS = "checkpoints"
MINED = "mined"
TRAIN_EVENTS, VALIDATION_EVENTS = "train", "validation"
# Merges whose output is a sigmoid (as the Dense head's is): 0.5 is their
# decision point. cosine and manhattan are similarities with no such point.
SIGMOID_MERGES = ("dot",)


def model_path(run_dir: str, which: str = "best") -> str:
    """The model file `which` names: "best" is `best.keras` (written when
    validation improves), falling back to `model.keras` when the run has
    none; "last" is `model.keras`.

    Raises:
      DataError: an unknown `which`, or no such model file.
    """
    if which not in MODEL_FILES:
        raise DataError(f"--which={which}: expected one of {', '.join(MODEL_FILES)}")
    if not os.path.isdir(run_dir):
        raise DataError(f"--run_dir={run_dir}: no such folder")
    path = os.path.join(run_dir, MODEL_FILES[which])
    if which == "best" and not os.path.isfile(path):
        path = os.path.join(run_dir, MODEL_FILES["last"])
    if not os.path.isfile(path):
        raise DataError(f"--run_dir={run_dir}: no {os.path.basename(path)} (the run "
                        f"did not finish, or this is not a run folder)")
    return path


def read_threshold(run_dir: str) -> Optional[float]:
    """The validation threshold recorded in `run_dir/threshold.json` (a
    number, or an object with a "threshold" number), or None without one.

    Raises:
      DataError: the file exists but holds no finite number.
    """
    path = os.path.join(run_dir, THRESHOLD_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f)
        if isinstance(value, dict):
            value = value["threshold"]
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value} is not finite")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: unreadable threshold ({e})") from None
    return value


def default_threshold(model) -> Optional[float]:
    """0.5 when the model's score is a sigmoid (a head, or a sigmoid merge),
    else None: a cosine or manhattan similarity has no natural cut."""
    if model.head is not None or getattr(model.merge, "merge_name", "") in SIGMOID_MERGES:
        return 0.5
    return None


class Run:
    """A trained model with its vectoriser and threshold.

    Attributes:
      run_dir, model_path: where it was loaded from.
      model: the `SiameseModel`.
      config: the run's `config.json` as a dict ({} without one).
      vectorizer: the run's `TextVectorization`, None for float runs.
      threshold: the score above which a pair is predicted similar
        (`threshold.json`, else 0.5 for sigmoid scores), or None.
    """

    def __init__(self, model, *, vectorizer=None, config: Optional[dict] = None,
                 threshold: Optional[float] = None, run_dir: str = "",
                 model_path: str = ""):
        self.model, self.vectorizer = model, vectorizer
        self.config = dict(config or {})
        self.threshold = threshold
        self.run_dir, self.model_path = run_dir, model_path
        left, right = model.towers[:2]
        tower = model.encoder
        if tower.vocab_size:
            side = tf.TensorSpec([None, None], tf.int32)
        elif tower.image_shape:
            side = tf.TensorSpec([None, *tower.image_shape], tf.float32)
        else:
            side = tf.TensorSpec([None, None, tower.features], tf.float32)
        encoding = tf.TensorSpec([None, None], tf.float32)
        # Compiled once each; the time axis is None, so lengths do not retrace.
        # (No AutoGraph, as in the train step: the Keras calls need none.)
        compiled = functools.partial(tf.function, autograph=False)
        self._encode_left = compiled(lambda x: left(x, training=False),
                                     input_signature=[side])
        self._encode_right = compiled(lambda x: right(x, training=False),
                                      input_signature=[side])
        self._score = compiled(
            lambda u, v: tf.reshape(model.score(u, v, training=False), [-1]),
            input_signature=[encoding, encoding])
        self._score_one = compiled(self._score_query, input_signature=[encoding, encoding])

    @property
    def is_text(self) -> bool:
        return self.vectorizer is not None

    @property
    def image_shape(self) -> Optional[tuple]:
        """(height, width, channels) of an image run's inputs, else None."""
        return self.model.encoder.image_shape

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    @property
    def dim(self) -> int:
        """The encoding size."""
        return int(self._encode_left(self._dummy()).shape[-1])

    def _dummy(self):
        if self.is_text:
            return np.ones((1, 1), np.int32)
        if self.is_image:
            return np.zeros((1, *self.image_shape), np.float32)
        return np.zeros((1, 1, self.model.encoder.features), np.float32)

    def _score_query(self, query, corpus):
        # The query (1, dim) stands on the left of every corpus row.
        left = tf.broadcast_to(query, tf.shape(corpus))
        return tf.reshape(self.model.score(left, corpus, training=False), [-1])

    # -- inputs -----------------------------------------------------------------
    def token_ids(self, texts: Sequence[str]) -> np.ndarray:
        """int32 (n, max_length) token ids, right-padded with 0, as in training."""
        if not self.is_text:
            raise DataError("this run was trained on float sequences, not text")
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, 1), np.int32)
        return vocab.text_ids(self.vectorizer, texts, self.config)

    def _inputs(self, items) -> np.ndarray:
        if self.is_text:
            if isinstance(items, str):
                raise DataError("expected a list of texts, got one string")
            return self.token_ids(list(items))
        if self.is_image:
            return self.images(items)
        x = np.asarray(items, np.float32)
        features = self.model.encoder.features
        if x.ndim != 3 or x.shape[2] != features:
            raise DataError(f"expected float sequences (n, time, {features}), got "
                            f"shape {x.shape}")
        return x

    def images(self, items) -> np.ndarray:
        """An image run's inputs: float32 (n, height, width, channels) in [0,
        1], from image files (paths: resized and converted as the run's
        images were) or an array of that shape (uint8 is scaled by 1/255;
        (n, height, width) is one channel)."""
        h, w, c = self.image_shape
        if isinstance(items, str):
            raise DataError("expected a list of image files or an array, got one string")
        if isinstance(items, (list, tuple)) and items and isinstance(items[0], str):
            return images_lib.read_images(items, (h, w), c)
        x = np.asarray(items)
        scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
        x = x.astype(np.float32) * np.float32(scale)
        if x.ndim == 3 and c == 1:
            x = x[..., None]
        if x.ndim != 4 or x.shape[1:] != (h, w, c):
            raise DataError(f"expected images (n, {h}, {w}, {c}), got shape {x.shape}")
        return x

    # -- the API ------------------------------------------------------------------
    def encode(self, items, batch_size: int = 256, side: str = "left") -> np.ndarray:
        """Encodings (n, dim) float32 of texts (text runs), float sequences
        (n, time, features) (float runs) or images (image runs: see
        `images`), through the left tower (the right
        one with `side="right"`; the same object when tied)."""
        fn = self._encode_left if side == "left" else self._encode_right
        return self._encode_with(fn, self._inputs(items), batch_size)

    def _encode_with(self, fn, x: np.ndarray, batch_size: int) -> np.ndarray:
        return encode_batches(fn, x, batch_size, self.dim)

    def score(self, left, right, batch_size: int = 256) -> np.ndarray:
        """The model's score (n,) float32 of each pair (left[i], right[i])."""
        xl, xr = self._inputs(left), self._inputs(right)
        if len(xl) != len(xr):
            raise DataError(f"{len(xl)} left items and {len(xr)} right items")
        return self.score_encodings(self._encode_with(self._encode_left, xl, batch_size),
                                    self._encode_with(self._encode_right, xr, batch_size),
                                    batch_size)

    def score_encodings(self, h_left, h_right, batch_size: int = 4096) -> np.ndarray:
        """merge + head on encodings (n, dim) each: scores (n,) float32."""
        h_left = np.asarray(h_left, np.float32)
        h_right = np.asarray(h_right, np.float32)
        out = [np.asarray(self._score(h_left[i:i + batch_size],
                                      h_right[i:i + batch_size]))
               for i in range(0, len(h_left), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def score_query(self, h_query, corpus, batch_size: int = 8192) -> np.ndarray:
        """Scores (n,) float32 of one encoded query (dim,) on the left against
        every encoded corpus item (n, dim) on the right: exactly what `score`
        gives for those pairs, without encoding the corpus again."""
        h_query = np.asarray(h_query, np.float32).reshape(1, -1)
        corpus = np.asarray(corpus, np.float32)
        out = [np.asarray(self._score_one(h_query, corpus[i:i + batch_size]))
               for i in range(0, len(corpus), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def predict_labels(self, scores) -> Optional[np.ndarray]:
        """int (n,) 1 where score > threshold (`metrics.pairs.predicted`), or
        None without a threshold."""
        if self.threshold is None:
            return None
        return predicted(scores, self.threshold).astype(np.int64)


def load_model(run_dir: str, which: str = "best"):
    """The run's model (`model_path`), with this package's layers registered
    (importing the package registers them).

    Raises:
      DataError: missing or unloadable.
    """
    path = model_path(run_dir, which)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises many types for a bad archive
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot load the model ({first})") from None


def read_config(run_dir: str) -> dict:
    """The run's `config.json` as a dict ({} without one).

    Raises:
      DataError: the file exists but is unreadable.
    """
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None


def read_run_config(run_dir: str, **overrides) -> Config:
    """The run's `config.json` as a `Config` (its `run_dir` = `run_dir`, where
    the folder is now), with `overrides` applied.

    Settings this version does not know are dropped; files that moved are
    the caller's problem (Config checks `data`).

    Raises:
      DataError: no or unreadable config.json.
      ConfigError: an override is invalid.
    """
    if not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
        raise DataError(f"--run_dir={run_dir}: no config.json (not a finished run?)")
    saved = read_config(run_dir)
    known = set(Config.field_names())
    values = {k: v for k, v in saved.items() if k in known}
    # The trained table is in model.keras: a moved vector file must not stop
    # an evaluation (config.json keeps the size the file gave as `features`).
    values.pop("embeddings", None)
    values.update({k: v for k, v in overrides.items() if k in known})
    values["run_dir"] = run_dir
    return Config(**values)


def load_run(run_dir: str, which: str = "best") -> Run:
    """Loads a run folder: the model `which` names (see `model_path`), the
    vectoriser (text runs), `config.json` and the threshold.

    Args:
      run_dir: a finished run folder.
      which: "best" (best.keras, else model.keras) or "last" (model.keras).

    Raises:
      DataError: not a run folder, or an unreadable file in it.
    """
    model = load_model(run_dir, which)
    config = read_config(run_dir)
    vectorizer = vocab.load_vectorizer(run_dir)
    if vectorizer is not None and not model.encoder.vocab_size:
        raise DataError(f"{run_dir}: has a vectorizer but its model takes float "
                        f"sequences")
    if vectorizer is None and model.encoder.vocab_size:
        raise DataError(f"{run_dir}: a text model without {vocab.VECTORIZER_FILE}")
    threshold = read_threshold(run_dir)
    if threshold is None:
        threshold = default_threshold(model)
    return Run(model, vectorizer=vectorizer, config=config, threshold=threshold,
               run_dir=run_dir, model_path=model_path(run_dir, which))


def encode_batches(fn, x: np.ndarray, batch_size: int, dim: int) -> np.ndarray:
    """`fn` (a tower's compiled call) on `x` in batches: encodings (n, dim)
    float32. Token ids are trimmed to each batch's longest text (at least
    one step); the cut steps are padding, which the mask skips."""
    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        if batch.ndim == 2:
            steps = int(np.max(np.count_nonzero(batch, axis=1), initial=0))
            batch = batch[:, :max(steps, 1)]
        out.append(np.asarray(fn(batch), np.float32))
    if not out:
        return np.zeros((0, dim), np.float32)
    return np.concatenate(out)


# -- writing --------------------------------------------------------------------
# Every file here is written whole or not at all (`atomic.replacing`): a
# reader (evaluate, predict, load_run, TensorBoard) sees the old file or the
# new one, and a failed write raises `WriteError` naming it.
def write_text(run_dir: str, name: str, text: str) -> str:
    """`run_dir/name` holding `text` (a line end added); returns the path."""
    return atomic.write_text(os.path.join(run_dir, name), text.rstrip("\n") + "\n")


def write_json(run_dir: str, name: str, value) -> str:
    return atomic.write_json(os.path.join(run_dir, name), value)


def save_models(model, run_dir: str, which: str = "last") -> dict:
    """The whole SiameseModel and its tower alone: model.keras and
    encoder.keras ("last"), or best.keras and best_encoder.keras ("best")."""
    model_file = os.path.join(run_dir, MODEL_FILES[which])
    encoder_file = os.path.join(run_dir, ENCODER_FILES[which])
    with atomic.replacing(model_file) as tmp:
        model.save(tmp)
    with atomic.replacing(encoder_file) as tmp:
        model_lib.encoder_model(model).save(tmp)
    return {"model_path": model_file, "encoder_path": encoder_file}


def save_threshold(run_dir: str, threshold: float, fitted: bool) -> str:
    """threshold.json: the score above which a pair is called similar (0.5
    for a probability, else the one fitted on the training data), for
    predict and evaluate."""
    return write_json(run_dir, THRESHOLD_FILE, {"threshold": threshold, "fitted": fitted})


def mined_path(run_dir: str, epoch: int) -> str:
    return os.path.join(run_dir, MINED, f"epoch-{epoch:04d}.npz")


def save_mined(run_dir: str, epoch: int, window: np.ndarray, info: dict) -> str:
    """mined/epoch-NNNN.npz: the negative rows mined at the start of `epoch`
    (`data.mining`: int64 (triplets, w), -1 pads) and what they were mined
    with (`info`, as JSON): a resumed run draws from these, not from a new
    mining."""
    path = mined_path(run_dir, epoch)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic.replacing(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, window=np.asarray(window, np.int64),
                     info=np.array(json.dumps(info, sort_keys=True)))
    return path


def read_mined(run_dir: str, epoch: int) -> Optional[tuple]:
    """(window, info) saved by `save_mined` for `epoch`, or None."""
    path = mined_path(run_dir, epoch)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz["window"], json.loads(str(npz["info"]))
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not a readable mined-negatives file ({e}); "
                        f"remove it to mine again") from None


def clear_run(run_dir: str) -> None:
    """--restart: drop the old checkpoints, event files, mined negatives and
    best epoch, keep the folder."""
    for name in (CHECKPOINTS, TRAIN_EVENTS, VALIDATION_EVENTS, MINED):
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
    for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        os.remove(path)  # the HParams session events
    for name in (MODEL_FILES["best"], ENCODER_FILES["best"], BEST_FILE):
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))  # an earlier run's best


__all__ = ["Run", "load_run", "load_model", "model_path", "read_threshold",
           "default_threshold", "read_config", "read_run_config", "save_models",
           "save_threshold", "clear_run"]
