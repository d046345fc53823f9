"""The Projector: encodings and their metadata, the one writer of them
(`write_projector`), for a run's validation pairs (`export_validation_projector`,
in `validation/`, a folder the plugin reads because it holds event files)
and for any encoded column (`write_encodings`, the encode tool's).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.plugins import projector

from siamese_research import atomic
from siamese_research.errors import WriteError

PROJECTOR_FOLDER = "validation"
PROJECTOR_TENSOR = "encoder_outputs"
PROJECTOR_METADATA = "projector_metadata.tsv"
PROJECTOR_CONFIG = "projector_config.pbtxt"  # the name the plugin reads
PROJECTOR_SPRITE = "projector_sprite.png"
SPRITE_MAX_SIDE = 8192  # the plugin's limit on a sprite sheet's side, in pixels


def encode_pairs(model, dataset, max_pairs: Optional[int] = None):
    """The towers' outputs for a dataset's pairs, in the dataset's order.

    Args:
      model: a `SiameseModel` (its left tower encodes the left side, its
        right tower, the same object when tied, the right side).
      dataset: a `PairDataset` built with `shuffle=False`.
      max_pairs: stop after this many pairs (None: all).

    Returns:
      (encodings_left (n, d), encodings_right (n, d), labels (n,)), numpy.
    """
    left_tower, right_tower = model.towers[:2]
    # Compiled (an RNN called eagerly runs its time loop op by op: ~2 s
    # for the default run's 500 pairs on a 2-core CPU, against ~0.5 s
    # with the trace).
    encode = tf.function(lambda left, right: (left_tower(left, training=False),
                                              right_tower(right, training=False)),
                         autograph=False, reduce_retracing=True)
    out_l, out_r, out_y, n = [], [], [], 0
    for (left, right), label, _ in dataset.epoch(0):
        h_l, h_r = encode(left, right)
        out_l.append(h_l.numpy())
        out_r.append(h_r.numpy())
        out_y.append(label.numpy())
        n += len(out_y[-1])
        if max_pairs is not None and n >= max_pairs:
            break
    if not out_y:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0)
    stop = n if max_pairs is None else min(n, max_pairs)
    return (np.concatenate(out_l)[:stop], np.concatenate(out_r)[:stop],
            np.concatenate(out_y)[:stop])


def export_projector(run_dir: str, encodings_left, encodings_right, labels,
                     texts_left: Optional[Sequence[str]] = None,
                     texts_right: Optional[Sequence[str]] = None,
                     max_points: int = 1000) -> Optional[str]:
    """Writes the encoder's outputs for the Projector plugin.

    Points are the first `max_points // 2` pairs' left encodings followed by
    the same pairs' right encodings, so pair i is points i and n + i. Files,
    in `<run_dir>/validation/` (a folder the plugin reads because it holds
    the validation events): a checkpoint of one variable `encoder_outputs`
    (n_points, dim), `projector_metadata.tsv` (columns side, label, pair,
    text) and `projector_config.pbtxt`.

    Args:
      run_dir: the run folder.
      encodings_left, encodings_right: (n, dim) encodings of the same pairs.
      labels: (n,) pair labels.
      texts_left, texts_right: the raw texts for text data, else None.
      max_points: cap on points (left + right); 0 writes nothing.

    Returns:
      The checkpoint path, or None when nothing was written.

    Raises:
      ValueError: the inputs disagree in length or dimension.
    """
    left = np.asarray(encodings_left, np.float32)
    right = np.asarray(encodings_right, np.float32)
    labels = np.asarray(labels).reshape(-1)
    if left.shape != right.shape or left.ndim != 2 or len(labels) != len(left):
        raise ValueError(f"encodings {left.shape} and {right.shape} and "
                         f"{len(labels)} labels do not describe the same pairs")
    n = min(len(left), max_points // 2)
    if n == 0:
        return None
    points = np.concatenate([left[:n], right[:n]])
    rows = [(side, _label_cell(labels[i]), str(i),
             _tsv_cell(texts[i]) if texts is not None else "")
            for side, texts in (("left", texts_left), ("right", texts_right))
            for i in range(n)]
    return write_projector(os.path.join(run_dir, PROJECTOR_FOLDER), points,
                           ("side", "label", "pair", "text"), rows)


def write_projector(folder: str, points, header: Sequence[str],
                    rows: Sequence[Sequence[str]], sprite=None) -> str:
    """Writes points for the Projector plugin into `folder`: a checkpoint of
    one variable `encoder_outputs` (n, dim), `projector_metadata.tsv` (the
    header, then one row of cells per point) and `projector_config.pbtxt`.

    Args:
      folder: created if missing; TensorBoard finds it when it is (inside)
        a --logdir and holds event files or is a run's validation folder.
      points: (n, dim) floats.
      header, rows: the metadata columns, and n rows of cells (tabs and
        newlines inside a cell become spaces).
      sprite: images (n, height, width, channels) in [0, 1], one per point:
        `projector_sprite.png`, which the plugin shows at each point.

    Returns:
      The checkpoint path.
    """
    os.makedirs(folder, exist_ok=True)
    points = np.asarray(points, np.float32)
    with tf.device("/cpu:0"):
        embedding = tf.Variable(points, trainable=False, name=PROJECTOR_TENSOR)
    # The checkpoint holds only this variable: the plugin offers every 2-D
    # tensor of the checkpoint it reads as an embedding.
    ckpt = tf.train.Checkpoint(**{PROJECTOR_TENSOR: embedding})
    try:
        path = ckpt.save(os.path.join(folder, "projector"))
    except (OSError, tf.errors.OpError) as e:
        raise WriteError(os.path.join(folder, "projector"),
                         (str(getattr(e, "strerror", None) or e).splitlines()
                          or [type(e).__name__])[0]) from None
    atomic.write_text(os.path.join(folder, PROJECTOR_METADATA), "".join(
        "\t".join(_tsv_cell(c) for c in row) + "\n" for row in [header, *rows]))
    config = projector.ProjectorConfig()
    # No model_checkpoint_path: the plugin then takes the latest checkpoint
    # of this folder (relative paths here would be read against TensorBoard's
    # working directory), so the run folder can move.
    emb = config.embeddings.add()
    emb.tensor_name = f"{PROJECTOR_TENSOR}/.ATTRIBUTES/VARIABLE_VALUE"
    emb.metadata_path = PROJECTOR_METADATA
    if sprite is not None:
        sheet, (height, width) = sprite_sheet(sprite)
        with atomic.replacing(os.path.join(folder, PROJECTOR_SPRITE)) as tmp:
            tf.io.write_file(tmp, tf.io.encode_png(sheet))
        emb.sprite.image_path = PROJECTOR_SPRITE
        emb.sprite.single_image_dim.extend([width, height])
    atomic.write_text(os.path.join(folder, PROJECTOR_CONFIG),
                      text_format.MessageToString(config))
    return path


def export_validation_projector(run_dir: str, model, dataset,
                                max_points: int = 1000) -> Optional[str]:
    """`export_projector` for a run's validation `PairDataset` (one call).

    Args:
      run_dir: the run folder.
      model: the trained `SiameseModel`.
      dataset: the validation `PairDataset` (`shuffle=False`); its `pairs`
        carry `left_text` / `right_text` for text data.
      max_points: cap on points (left + right).

    Returns:
      The checkpoint path, or None when nothing was written.
    """
    if dataset is None or max_points < 2:
        return None
    left, right, labels = encode_pairs(model, dataset, max_points // 2)
    pairs = dataset.pairs
    return export_projector(run_dir, left, right, labels, pairs.left_text,
                            pairs.right_text, max_points=max_points)


def sprite_sheet(images):
    """(uint8 (side, side, channels) sheet, (tile height, tile width)): the
    images in rows of ceil(sqrt(n)), in order, shrunk so that the sheet's
    side stays within `SPRITE_MAX_SIDE`."""
    x = np.asarray(images, np.float32)
    n, height, width, channels = x.shape
    cols = int(np.ceil(np.sqrt(n)))
    scale = min(1.0, SPRITE_MAX_SIDE / (cols * max(height, width)))
    if scale < 1.0:
        height, width = max(1, int(height * scale)), max(1, int(width * scale))
        x = tf.image.resize(x, (height, width)).numpy()
    tiles = np.zeros((cols * cols, height, width, channels), np.float32)
    tiles[:n] = x
    sheet = tiles.reshape(cols, cols, height, width, channels).transpose(0, 2, 1, 3, 4)
    sheet = sheet.reshape(cols * height, cols * width, channels)
    return np.round(np.clip(sheet, 0, 1) * 255).astype(np.uint8), (height, width)


def export_image_projector(run_dir: str, model, images, max_points: int = 1000,
                           seed: int = 0) -> Optional[str]:
    """The Projector for an image run's held-out images: each image's
    encoding (the left tower), its class in the metadata and its picture in
    the sprite. Up to `max_points` images, a seeded sample kept in order.

    Args:
      images: a `data.images.ImageSet`.

    Returns:
      The checkpoint path, or None when nothing was written.
    """
    if images is None or not len(images) or max_points < 1:
        return None
    rows = np.arange(len(images))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points,
                                                          replace=False))
    tower = model.towers[0]
    encode = tf.function(lambda x: tower(x, training=False), autograph=False)
    x = images.images[rows]
    points = np.concatenate([encode(x[i:i + 256]).numpy()
                             for i in range(0, len(x), 256)])
    names = [images.class_names[c] for c in images.labels[rows]]
    files = images.paths
    cells = [(names[i], str(r), os.path.basename(files[r]) if files else "")
             for i, r in enumerate(rows)]
    return write_projector(os.path.join(run_dir, PROJECTOR_FOLDER), points,
                           ("class", "image", "file"), cells, sprite=x)


def _tsv_cell(text) -> str:
    # A tab or newline inside a cell would shift every later column.
    return " ".join(str(text).split())


def _label_cell(label) -> str:
    value = float(label)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def write_encodings(folder: str, encodings, rows, texts=None, sprite=None) -> str:
    """`write_projector` for encoded items (metadata: their row and text:
    an image's file), plus an empty event file, so that TensorBoard lists
    `folder` as a run; `sprite`: the images, for image runs."""
    cells = [(str(r), texts[i] if texts is not None else "")
             for i, r in enumerate(rows)]
    path = write_projector(folder, encodings, ("row", "text"), cells, sprite=sprite)
    tf.summary.create_file_writer(folder).close()
    return path
