"""Mines hard negatives for a pair file with a trained run:
`python -m siamese_research.tools.mine` (`siamese-mine`).

    python -m siamese_research.tools.mine --run_dir=runs/qa \
        --data=../shared/data/trecqa/train.csv --out=triplets.csv \
        --mine_range=1,10 --num_negatives=2

For each positive pair (label >= 0.5) of --data, the run's own search ranks
every distinct right text of the file against the pair's left text (left
tower, right tower, the run's scorer, as `siamese-search` does); the left
text's labelled positives are left out, the nearest --mine_range ranks of
the rest kept (lo > 0 skips the nearest, the likeliest unlabelled
positives), and with --mine_margin only those whose distance (the merge's)
is at least the positive's plus the margin. Up to --num_negatives of them
are drawn (seeded by --seed) and written as triplet rows (the scores are
the search's):

    anchor, positive, negative, negative_rank, negative_score, positive_score

a triplet file `train.py --loss=triplet --data=<out>` reads as it is
(`--anchor_column` etc. default to these names). The rule is the one a
`--negatives=hard` run applies at its epoch begins (`data.mining`).

Exit status: 0 done, 2 bad input, 4 the file could not be written (one
line on stderr); nothing is written unless the whole file is.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from siamese_research import artifacts, atomic, config, quiet
from siamese_research.inference import mining
from siamese_research.inference.predict import write_rows
from siamese_research.tools import cli


def define_flags():
    fv = flags.FlagValues()
    cli.define_run_flags(fv, run_help="a finished text run folder", batch_size=256,
                         batch_help="texts encoded per call")
    flags.DEFINE_string("data", None, "the labelled pair file (.csv/.tsv/.jsonl)",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "the triplet file to write (.csv/.tsv/.jsonl)",
                        flag_values=fv)
    for side in ("left", "right", "label"):
        flags.DEFINE_string(f"{side}_column", None, f"the {side} column (default: the "
                            f"run's)", flag_values=fv)
    flags.DEFINE_string("mine_range", "1,10", "'lo,hi': the ranks, nearest first, of an "
                        "anchor's non-positive candidates negatives are drawn from",
                        flag_values=fv)
    flags.DEFINE_string("mine_margin", "", "keep a negative only if its distance (the "
                        "merge's) is at least the positive's plus this; empty = no "
                        "margin", flag_values=fv)
    flags.DEFINE_integer("num_negatives", 1, "negatives per positive pair (distinct)",
                         flag_values=fv)
    flags.DEFINE_integer("seed", 0, "seeds the draws from the windows", flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    cli.require(fv, "run_dir", "data", "out")
    cli.require_positive(fv, "num_negatives", "batch_size")
    if os.path.splitext(fv.out)[1].lower() not in (".csv", ".tsv", ".jsonl"):
        cli.fail(f"--out={fv.out}: expected a .csv, .tsv or .jsonl file")
    quiet.quiet_python_logging()
    with cli.one_line_errors():
        lo, hi = config.mine_window(fv.mine_range)
        margin = config.mine_margin(fv.mine_margin)
        run = artifacts.load_run(fv.run_dir, fv.which)
        left, right, label = mining.read_labelled_pairs(
            run, fv.data, fv.left_column, fv.right_column, fv.label_column)
        rows, summary = mining.mine(run, left, right, label, lo=lo, hi=hi, margin=margin,
                                    num_negatives=fv.num_negatives, seed=fv.seed,
                                    batch_size=fv.batch_size)
        with atomic.replacing(fv.out) as tmp:  # (the temporary keeps the suffix)
            write_rows(list(mining.COLUMNS), rows, tmp)
    print(f"{summary['triplets']:,} triplets from {summary['positives']:,} positive pairs "
          f"of {summary['anchors']:,} anchors, among {summary['candidates']:,} candidates "
          f"(ranks {lo}-{hi - 1}"
          + (f", margin {margin}" if margin is not None else "") + ")"
          + (f"; {summary['without_negative']:,} positives with no candidate in the "
             f"window" if summary["without_negative"] else "") + f": {fv.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
