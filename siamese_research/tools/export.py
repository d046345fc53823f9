"""Exports a trained run as a TensorFlow SavedModel: `python -m siamese_research.tools.export`.

    python -m siamese_research.tools.export --run_dir=runs/qa --output=exported/qa

The SavedModel needs TensorFlow only (not this package, not Keras code):

    m = tf.saved_model.load("exported/qa")
    m.score(tf.constant(["what is x?"]), tf.constant(["x is a thing"]))
    m.signatures["score"](left=..., right=...)["score"]       # (n,) float32
    m.signatures["encode"](text=...)["encoding"]                # (n, dim) float32

Text runs take `tf.string` vectors (n,): the vectorisation is in the graph,
rebuilt from the run's `vectorizer.json` to tokenise exactly as training
did (lowercase ASCII, strip the same punctuation, split on whitespace, the
vocabulary's ids, unseen words hashed into the OOV ids, at most `max_length`
tokens). Float runs take float32 (n, time, features), right-padded with
zeros. `score` puts `left` through the left tower and `right` through the
right one (the same when tied), as the model does.

Image runs take float32 images (n, height, width, channels) in [0, 1]
(`score(left, right)`, `encode(images)`), or the files' encoded bytes
(PNG/JPEG/BMP/GIF, `tf.string` (n,)): `score_files(left, right)`,
`encode_files(images)` decode, resize (bilinear) and scale them in the
graph, as training read its folder:

    m.signatures["encode_files"](images=tf.constant([open("a.png", "rb").read()]))

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from siamese_research import artifacts, quiet
from siamese_research.errors import UserError, WriteError
from siamese_research.inference.export import export_run
from siamese_research.tools import cli


def define_flags():
    fv = flags.FlagValues()
    cli.define_run_flags(fv)
    flags.DEFINE_string("output", None, "the SavedModel folder to write",
                        flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    cli.require(fv, "run_dir", "output")
    if os.path.exists(fv.output) and (not os.path.isdir(fv.output)
                                      or os.listdir(fv.output)):
        cli.fail(f"--output={fv.output}: exists and is not an empty folder")
    quiet.quiet_python_logging()
    try:
        run = artifacts.load_run(fv.run_dir, fv.which)
        export_run(run, fv.output)
    except UserError as e:
        cli.fail(str(e))
    except WriteError as e:  # the folder the user named: a bad --output
        cli.fail(f"--output={fv.output}: cannot write ({e.reason})")
    if run.is_image:
        shape = ", ".join(str(d) for d in run.image_shape)
        print(f"{fv.output}: SavedModel of {run.model_path}; signatures score(left, "
              f"right) -> score, encode(images) -> encoding on float32 (n, {shape}), "
              f"and score_files, encode_files on encoded images, tf.string (n,)")
        return 0
    kind = "tf.string (n,)" if run.is_text else \
        f"float32 (n, time, {run.model.encoder.features})"
    print(f"{fv.output}: SavedModel of {run.model_path}; signatures score(left, "
          f"right) -> score, encode(text) -> encoding, inputs {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
