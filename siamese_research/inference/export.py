"""A loaded run as a TensorFlow SavedModel that needs TensorFlow only
(`siamese-export`)."""

from __future__ import annotations

import tensorflow as tf

from siamese_research import atomic
from siamese_research.data import images
from siamese_research.errors import DataError
from siamese_research.text.tokens import STRIP_PUNCTUATION

RESERVED = ("", "[UNK]")


def _text_settings(vectorizer) -> dict:
    """What the graph needs of a TextVectorization: vocabulary (words only),
    OOV count and length; DataError for settings it does not reproduce."""
    config = vectorizer.get_config()
    if config.get("standardize") != "lower_and_strip_punctuation" or \
            config.get("split") != "whitespace" or config.get("ngrams") or \
            config.get("output_mode") != "int":
        raise DataError("the run's vectorizer is not the default lowercase / strip "
                        "punctuation / whitespace / int one, which export rebuilds")
    vocabulary = [str(t) for t in vectorizer.get_vocabulary()]
    num_oov = int(vectorizer._lookup_layer.num_oov_indices)
    first_word = 1 + num_oov  # 0 is padding, then the OOV ids
    if vocabulary[:first_word] != ["", *["[UNK]"] * num_oov]:
        raise DataError(f"unexpected vocabulary start {vocabulary[:first_word]}")
    return {"words": vocabulary[first_word:], "first_id": first_word,
            "num_oov": num_oov, "max_length": int(config["output_sequence_length"])}


def build_module(run):
    """A `tf.Module` with `score` and `encode` `tf.function`s for `run` (a
    `artifacts.Run`), ready for `tf.saved_model.save`."""
    model = run.model
    left_tower, right_tower = model.towers[:2]

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="siamese_serving")
            self.model = model  # tracks its variables

        def _score(self, left, right):
            h_l = left_tower(self.inputs(left), training=False)
            h_r = right_tower(self.inputs(right), training=False)
            return {"score": tf.reshape(model.score(h_l, h_r, training=False), [-1])}

        def _encode(self, text):
            return {"encoding": left_tower(self.inputs(text), training=False)}

    module = Serving()
    if run.is_text and run.config.get("char_ngrams"):
        raise DataError("this run adds character n-grams (--char_ngrams), which the "
                        "exported graph's tokeniser does not compute; score it with "
                        "predict or load_run instead")
    if run.is_text:
        settings = _text_settings(run.vectorizer)
        words = settings["words"]
        ids = tf.range(settings["first_id"], settings["first_id"] + len(words),
                       dtype=tf.int64)
        module.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(words, tf.string), ids),
            default_value=-1)
        num_oov, max_length = settings["num_oov"], settings["max_length"]

        def inputs(texts):
            x = tf.strings.lower(texts)
            x = tf.strings.regex_replace(x, STRIP_PUNCTUATION, "")
            tokens = tf.strings.split(x)  # ragged (n, words)

            def lookup(flat):
                found = module.table.lookup(flat)
                if num_oov > 1:
                    oov = tf.strings.to_hash_bucket_fast(flat, num_oov) + 1
                else:
                    oov = tf.ones_like(found)
                return tf.where(found < 0, oov, found)

            ids = tf.ragged.map_flat_values(lookup, tokens)
            dense = tf.cast(ids.to_tensor(default_value=0, shape=[None, max_length]),
                            tf.int32)
            # Trimmed to the longest text, as Run does (the rest is padding).
            steps = tf.reduce_max(tf.math.count_nonzero(dense, axis=1, dtype=tf.int32))
            return dense[:, :tf.maximum(steps, 1)]

        spec = tf.TensorSpec([None], tf.string)
    elif run.is_image:
        return _image_module(module, run)
    else:
        def inputs(x):
            return x

        spec = tf.TensorSpec([None, None, model.encoder.features], tf.float32)
    module.inputs = inputs
    module.score = tf.function(module._score, input_signature=[spec, spec],
                               autograph=False)
    module.encode = tf.function(module._encode, input_signature=[spec], autograph=False)
    return module


def _image_module(module, run):
    """An image run's serving functions: `score(left, right)` and
    `encode(images)` on float32 (n, height, width, channels) in [0, 1], and
    `score_files` / `encode_files` on encoded PNG/JPEG/BMP/GIF strings (n,),
    decoded, resized and scaled in the graph by `images.decode`, as
    `load_run` reads files."""
    height, width, channels = run.image_shape
    model = run.model
    left_tower, right_tower = model.towers[:2]

    def decode(raw):
        image = images.decode(raw, (height, width), channels)
        return tf.ensure_shape(image, (height, width, channels))

    def decoded(files):
        return tf.map_fn(decode, files, fn_output_signature=tf.TensorSpec(
            (height, width, channels), tf.float32))

    def score(left, right):
        h_l = left_tower(left, training=False)
        h_r = right_tower(right, training=False)
        return {"score": tf.reshape(model.score(h_l, h_r, training=False), [-1])}

    def encode(images):
        return {"encoding": left_tower(images, training=False)}

    def score_files(left, right):
        return score(decoded(left), decoded(right))

    def encode_files(images):
        return encode(decoded(images))

    pixels = tf.TensorSpec([None, height, width, channels], tf.float32)
    files = tf.TensorSpec([None], tf.string)
    compiled = {"score": (score, [pixels, pixels]), "encode": (encode, [pixels]),
                "score_files": (score_files, [files, files]),
                "encode_files": (encode_files, [files])}
    for name, (fn, signature) in compiled.items():
        setattr(module, name, tf.function(fn, input_signature=signature, autograph=False))
    return module


def export_run(run, output: str) -> str:
    """Saves `run` as a SavedModel in `output` with signatures `score(left,
    right)` and `encode(text)` (image runs: `encode(images)`, and
    `score_files` / `encode_files` on encoded image strings); returns
    `output`."""
    module = build_module(run)
    names = ("score", "encode") + (("score_files", "encode_files") if run.is_image else ())
    signatures = {name: getattr(module, name).get_concrete_function() for name in names}
    with atomic.replacing(output) as tmp:  # a whole SavedModel or none
        tf.saved_model.save(module, tmp, signatures=signatures)
    return output
