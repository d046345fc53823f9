"""Encodes one column of a file with a trained run's encoder:
`python -m siamese_research.tools.encode`.

    python -m siamese_research.tools.encode --run_dir=runs/qa --data=answers.csv \
        --column=a --output=answers.npz --projector_dir=runs/qa/answers
    tensorboard --logdir runs/qa/answers           # the Projector tab

Text runs read a column of a `.csv`, `.tsv` or `.jsonl` file and encode its
texts with the run's own vectoriser and left tower; float runs read an array
(n, time, features) of an `.npz` file (`--column`, default `left`). The
output `.npz` holds `encodings` (n, dim) float32 and, for text, `texts` (n,)
(unicode, loadable with `allow_pickle=False`) and `rows` (each text's 0-based
row in the file). Texts with no words (after lowercasing and stripping
punctuation) are left out; the count is printed.

`--projector_dir` also writes the encodings for TensorBoard's Projector
(metadata: row and text), with an empty event file so that TensorBoard lists
the folder as a run.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Tuple

import numpy as np

from siamese_research.tools import cli
from siamese_research.config import DataError, UserError


def read_column(run, path: str, column: Optional[str]) -> Tuple[object, np.ndarray]:
    """The items to encode: (texts list, row indices) for a text run, or
    (array (n, time, features), row indices) for a float run.

    Raises:
      DataError: a bad file or column, or a file of the wrong kind.
    """
    from siamese_research.data import files

    if not os.path.isfile(path):
        raise DataError(f"--data={path}: no such file")
    kind = files.file_kind(path)
    if run.is_text != (kind == "text"):
        raise DataError(f"--data={path}: this run was trained on "
                        + ("text; give it a .csv, .tsv or .jsonl file" if run.is_text
                           else "float sequences; give it an .npz file"))
    if run.is_text:
        if not column:
            raise DataError("--column is required for text files (the column to "
                            "encode)")
        columns, rows, lines = files.read_table(path)
        if column not in columns:
            raise DataError(f"{path}: no column '{column}' (--column); the columns "
                            f"are {', '.join(columns)}")
        texts = []
        for row, line in zip(rows, lines):
            if column not in row:
                raise DataError(f"{path} line {line}: no key '{column}'")
            v = row[column]
            texts.append("" if v is None else v if isinstance(v, str) else str(v))
        return texts, np.arange(len(texts))
    column = column or "left"
    try:
        with np.load(path, allow_pickle=False) as npz:
            if column not in npz.files:
                raise DataError(f"{path}: no array '{column}' (--column); it has "
                                f"{', '.join(sorted(npz.files)) or 'none'}")
            x = npz[column]
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    features = run.model.encoder.features
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number) or x.shape[2] != features:
        raise DataError(f"{path}: '{column}' must be numbers shaped (n, time, "
                        f"{features}), got {x.dtype} {x.shape}")
    return x.astype(np.float32), np.arange(len(x))


def encode_items(run, items, batch_size: int = 256):
    """Encodes `items` (texts or an array) with `run`, leaving out texts with
    no words.

    Returns:
      (encodings (m, dim) float32, kept: indices into items).
    """
    if run.is_text:
        ids = run.token_ids(items)
        kept = np.flatnonzero(ids.any(axis=1))
        return run.encode([items[i] for i in kept], batch_size), kept
    return run.encode(items, batch_size), np.arange(len(items))


def write_projector(folder: str, encodings, rows, texts=None) -> str:
    """The Projector files for `encodings` in `folder` (see
    `tensorboard_extras.write_projector`), plus an empty event file."""
    import tensorflow as tf

    from siamese_research.summaries import extras as tensorboard_extras

    cells = [(str(r), texts[i] if texts is not None else "")
             for i, r in enumerate(rows)]
    path = tensorboard_extras.write_projector(folder, encodings, ("row", "text"), cells)
    tf.summary.create_file_writer(folder).close()  # makes the folder a run
    return path


# -- command line ---------------------------------------------------------------
def define_flags():
    from absl import flags

    fv = flags.FlagValues()
    cli.define_run_flags(fv, batch_size=256, batch_help="items per forward pass")
    flags.DEFINE_string("data", None, "the file to encode (.csv/.tsv/.jsonl, or .npz "
                        "for float runs)", flag_values=fv)
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
    cli.quiet_python_logging()
    from siamese_research import artifacts as runs

    try:
        run = runs.load_run(fv.run_dir, fv.which)
        items, rows = read_column(run, fv.data, fv.column)
        encodings, kept = encode_items(run, items, fv.batch_size)
    except UserError as e:
        cli.fail(str(e))
    out = {"encodings": encodings, "rows": rows[kept]}
    texts = None
    if run.is_text:
        texts = [items[i] for i in kept]
        out["texts"] = np.asarray(texts, dtype=str)
    try:
        np.savez(fv.output, **out)
        if fv.projector_dir:
            write_projector(fv.projector_dir, encodings, rows[kept], texts)
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
