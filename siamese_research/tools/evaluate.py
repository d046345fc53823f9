"""Scores a trained run on a pair file: `python -m siamese_research.tools.evaluate`.

    python -m siamese_research.tools.evaluate --run_dir=runs/qa --data=dev.csv
    python -m siamese_research.tools.evaluate --run_dir=runs/qa --data=dev.csv \
        --baseline=overlap

Loads `DIR/model.keras`, the run's vectoriser and `config.json` (whose data
settings are the defaults of `--left_column`, `--right_column`,
`--label_column`, `--label_range`), scores every pair of the file and prints a
table. The same numbers go to `DIR/eval_<file stem>.json` (flat keys) and to
TensorBoard under `DIR/eval_<file stem>/` (scalars and a PR curve); with
`--baseline=overlap` the baseline's go to `..._overlap.json` and
`eval_<file stem>_overlap/`, so TensorBoard overlays the two PR curves.

The metrics:

- `accuracy`: at the score threshold 0.5.
- `threshold`, `accuracy_best_threshold`: the threshold with the best accuracy
  on the run's OWN validation data (re-created exactly as training made it:
  `--validation_data`, or the seeded split of `--data`, re-scored here), and
  the accuracy on this file at it. Choosing it on the evaluated file would
  flatter the model. Absent when the run had no validation data.
- `f1`: F1 of the positive class at 0.5.
- `roc_auc`, `average_precision`: threshold-free, over all pairs.
- `map`, `mrr`, `groups_scored`: each left text's candidates ranked by score;
  mean average precision and mean reciprocal rank over the groups with at
  least one positive and one negative. Tied scores are ranked negatives
  first (the pessimistic order), so a constant score earns no credit.
- `pearson`, `spearman`: for graded labels (`--label_range`), in [0, 1] units.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from siamese_research import quiet
from siamese_research.inference.evaluate import evaluate_run, format_table, write_outputs
from siamese_research.tools import cli


def define_flags():
    fv = flags.FlagValues()
    cli.define_run_flags(fv, batch_size=256, batch_help="pairs per forward pass")
    flags.DEFINE_string("data", None, "the pair file to score (.csv/.tsv/.jsonl/.npz), "
                        "or synthetic / random: a built-in run's own validation split",
                        flag_values=fv)
    for name in ("left_column", "right_column", "label_column"):
        flags.DEFINE_string(name, None, f"default: the run's --{name}", flag_values=fv)
    flags.DEFINE_string("label_range", None, "graded labels 'lo,hi'; default: the "
                        "run's", flag_values=fv)
    flags.DEFINE_string("baseline", "none", "none, or overlap: idf-weighted word "
                        "overlap on the same file", flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    cli.require(fv, "run_dir", "data")
    cli.require_positive(fv, "batch_size")
    quiet.quiet_python_logging()
    with cli.one_line_errors():
        results = evaluate_run(
            fv.run_dir, fv.data, baseline=fv.baseline, batch_size=fv.batch_size,
            left_column=fv.left_column, right_column=fv.right_column,
            label_column=fv.label_column, label_range=fv.label_range, which=fv.which)
        stem = os.path.splitext(os.path.basename(fv.data))[0]
        info = results["info"]
        paths = [write_outputs(fv.run_dir, stem, "model", results["model"],
                               info["labels"], info["scores"])]
        if "overlap" in results:
            paths.append(write_outputs(fv.run_dir, stem, "overlap", results["overlap"],
                                       info["labels"], info["overlap_scores"]))
    print(f"{fv.data}: {results['model']['pairs']} pairs"
          + (f" ({info['skipped']} skipped: empty text)" if info["skipped"] else ""))
    print(format_table(results))
    print("Written: " + ", ".join(paths) + f"; TensorBoard: "
          f"tensorboard --logdir {fv.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
