"""Encodes one column of a file with a trained run's encoder:
`python -m siamese_research.tools.encode`.

    python -m siamese_research.tools.encode --run_dir=runs/qa --data=answers.csv \
        --column=a --output=answers.npz --projector_dir=runs/qa/answers
    tensorboard --logdir runs/qa/answers           # the Projector tab

Text runs read a column of a `.csv`, `.tsv` or `.jsonl` file and encode its
texts with the run's own vectoriser and left tower; float runs read an array
(n, time, features) of an `.npz` file (`--column`, default `left`); image
runs read every image of a folder and its subfolders (resized and converted
to the run's shape). The output `.npz` holds `encodings` (n, dim) float32
and, for text, `texts` (n,) (unicode, loadable with `allow_pickle=False`;
for images, each file's path relative to the folder) and `rows` (each
item's 0-based row). Texts with no words (after lowercasing and stripping
punctuation) are left out; the count is printed.

`--projector_dir` also writes the encodings for TensorBoard's Projector
(metadata: row and text or file; for images, a sprite of the pictures), with
an empty event file so that TensorBoard lists the folder as a run.

    python -m siamese_research.tools.encode --run_dir=runs/digits \
        --data=my_digits/ --output=digits.npz --projector_dir=runs/digits/mine

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags

from siamese_research import artifacts, quiet
from siamese_research.errors import UserError
from siamese_research.inference.encode import encode_items, read_column
from siamese_research.summaries.projector import write_encodings
from siamese_research.tools import cli


def define_flags():
    fv = flags.FlagValues()
    cli.define_run_flags(fv, batch_size=256, batch_help="items per forward pass")
    flags.DEFINE_string("data", None, "the file to encode (.csv/.tsv/.jsonl, or .npz "
                        "for float runs), or a folder of images (image runs)",
                        flag_values=fv)
    flags.DEFINE_string("column", None, "the column (text) or array (.npz, default "
                        "left) to encode", flag_values=fv)
    flags.DEFINE_string("output", None, "the .npz file to write", flag_values=fv)
    flags.DEFINE_string("projector_dir", None, "also write a TensorBoard Projector "
                        "folder here", flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    cli.require(fv, "run_dir", "data", "output")
    if not fv.output.lower().endswith(".npz"):
        cli.fail(f"--output={fv.output}: expected an .npz file")
    cli.require_positive(fv, "batch_size")
    quiet.quiet_python_logging()
    try:
        run = artifacts.load_run(fv.run_dir, fv.which)
        items, rows = read_column(run, fv.data, fv.column)
        sprite = run.images(items) if run.is_image else None
        encodings, kept = encode_items(run, items if sprite is None else sprite,
                                       fv.batch_size)
    except UserError as e:
        cli.fail(str(e))
    out = {"encodings": encodings, "rows": rows[kept]}
    texts = None
    if run.is_text:
        texts = [items[i] for i in kept]
        out["texts"] = np.asarray(texts, dtype=str)
    elif run.is_image:
        texts = [os.path.relpath(p, fv.data) for p in items]
        out["texts"] = np.asarray(texts, dtype=str)
    try:
        with cli.one_line_errors():
            np.savez(fv.output, **out)
            if fv.projector_dir:
                write_encodings(fv.projector_dir, encodings, rows[kept], texts, sprite)
    except OSError as e:
        cli.fail(f"cannot write ({e.strerror}: {e.filename})")
    skipped = len(items) - len(kept)
    print(f"{fv.output}: {len(kept)} encodings of size {encodings.shape[1]}"
          + (f" ({skipped} texts with no words left out)" if skipped else "")
          + (f"; Projector: tensorboard --logdir {fv.projector_dir}"
             if fv.projector_dir else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
