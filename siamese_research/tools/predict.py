"""Scores every pair of a file with a trained run: `python -m siamese_research.tools.predict`.

    python -m siamese_research.tools.predict --run_dir=runs/qa --data=pairs.csv
    python -m siamese_research.tools.predict --run_dir=runs/qa --data=pairs.jsonl \
        --output=scored.jsonl --which=last

No label column is needed. Text runs read `.csv`, `.tsv` or `.jsonl` files
(the pair columns: `--left_column`, `--right_column`, default the run's, else
the first two text columns); float runs read `.npz` files with arrays `left`
and `right` (n, time, features), optional `left_length`/`right_length`.

The output is the input rows plus `score` and, when the run has a threshold,
`label_pred` (1 when score > threshold: `DIR/threshold.json`, else 0.5 for a
sigmoid score; a cosine or manhattan run without threshold.json gets no
`label_pred`). Its format follows `--output`'s suffix (.csv, .tsv, .jsonl);
without `--output`, CSV on stdout. A row whose left or right text has no
words (after lowercasing and stripping punctuation) gets an empty score.
For `.npz` files a row is `row` (its index), `label` when the file has one,
and the scores.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from siamese_research import artifacts, quiet
from siamese_research.errors import UserError
from siamese_research.inference.predict import OUTPUT_SUFFIXES, predict_file, write_rows
from siamese_research.tools import cli


def define_flags():
    fv = flags.FlagValues()
    cli.define_run_flags(fv, batch_size=256, batch_help="pairs per forward pass")
    flags.DEFINE_string("data", None, "the pair file to score (.csv/.tsv/.jsonl, or "
                        ".npz for float runs); no label needed", flag_values=fv)
    flags.DEFINE_string("output", None, "where to write (.csv, .tsv or .jsonl); "
                        "default CSV on stdout", flag_values=fv)
    for name in ("left_column", "right_column"):
        flags.DEFINE_string(name, None, f"default: the run's --{name}", flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    cli.require(fv, "run_dir", "data")
    cli.require_positive(fv, "batch_size")
    if fv.output and os.path.splitext(fv.output)[1].lower() not in OUTPUT_SUFFIXES:
        cli.fail(f"--output={fv.output}: expected a {', '.join(OUTPUT_SUFFIXES)} file")
    quiet.quiet_python_logging()
    try:
        run = artifacts.load_run(fv.run_dir, fv.which)
        columns, rows = predict_file(run, fv.data, left_column=fv.left_column,
                                     right_column=fv.right_column,
                                     batch_size=fv.batch_size)
    except UserError as e:
        cli.fail(str(e))
    try:
        write_rows(columns, rows, fv.output)
    except OSError as e:
        cli.fail(f"--output={fv.output}: cannot write ({e.strerror})")
    if fv.output:
        unscored = sum(r["score"] is None for r in rows)
        print(f"{fv.output}: {len(rows)} rows scored with {run.model_path}"
              + (f" ({unscored} with a text of no words: empty score)" if unscored
                 else "")
              + ("" if run.threshold is not None else
                 "; no label_pred: the run has no threshold"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
