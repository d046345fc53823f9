"""Scores a trained run on a pair file: `python -m siamese_research.tools.evaluate`.

    python -m siamese_research.tools.evaluate --run_dir=runs/qa --data=dev.csv
    python -m siamese_research.tools.evaluate --run_dir=runs/qa --data=dev.csv \
        --baseline=overlap
    python -m siamese_research.tools.evaluate --run_dir=runs/digits --data=digits \
        --baseline=pixels

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
  flatter the model. Absent when the run had no validation data. Image
  runs: the run's own threshold (`threshold.json`: 0.5 for a probability,
  else fitted on its training pairs), whose data the evaluated images are
  not.
- `f1`: F1 of the positive class at 0.5.
- `roc_auc`, `average_precision`: threshold-free, over all pairs.
- `map`, `mrr`, `groups_scored`: each left text's candidates ranked by score;
  mean average precision and mean reciprocal rank over the groups with at
  least one positive and one negative. Tied scores are ranked negatives
  first (the pessimistic order), so a constant score earns no credit.
- `pearson`, `spearman`: for graded labels (`--label_range`), in [0, 1] units.
- Image runs (verification): `eer`, the equal error rate (false accepts =
  false rejects); `far_at_frr_1`, `far_at_frr_5`, the false-accept rate at
  1% and 5% false rejects; `one_shot_accuracy` over `one_shot_ways`
  classes (Koch et al. 2015: one support image per class, seeded draws).
  `--baseline=pixels` scores the same pairs by the raw pixels' cosine.

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
                        "or synthetic / random: a built-in run's own validation split; "
                        "for an image run, its own --data (digits or its folder: the "
                        "images it held out) or another folder of class folders",
                        flag_values=fv)
    for name in ("left_column", "right_column", "label_column"):
        flags.DEFINE_string(name, None, f"default: the run's --{name}", flag_values=fv)
    flags.DEFINE_string("label_range", None, "graded labels 'lo,hi'; default: the "
                        "run's", flag_values=fv)
    flags.DEFINE_string("baseline", "none", "none, overlap: idf-weighted word "
                        "overlap on the same file, or pixels (image runs): the cosine "
                        "of the raw pixels", flag_values=fv)
    flags.DEFINE_integer("num_pairs", 0, "image runs: pairs drawn from the images "
                         "(half similar, the run's seed); 0 = as many as the run "
                         "validated on", flag_values=fv)
    flags.DEFINE_integer("ways", 10, "image runs: N of N-way one-shot accuracy (capped "
                         "at the classes there are)", flag_values=fv)
    flags.DEFINE_integer("draws", 2000, "image runs: one-shot tasks drawn (seeded)",
                         flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    cli.require(fv, "run_dir", "data")
    cli.require_positive(fv, "batch_size", "ways", "draws")
    if fv.num_pairs < 0:
        cli.fail(f"--num_pairs={fv.num_pairs}: must be >= 0 (0 = the run's validation "
                 f"pairs' number)")
    quiet.quiet_python_logging()
    with cli.one_line_errors():
        results = evaluate_run(
            fv.run_dir, fv.data, baseline=fv.baseline, batch_size=fv.batch_size,
            left_column=fv.left_column, right_column=fv.right_column,
            label_column=fv.label_column, label_range=fv.label_range, which=fv.which,
            num_pairs=fv.num_pairs, ways=fv.ways, draws=fv.draws)
        stem = os.path.splitext(os.path.basename(os.path.normpath(fv.data)))[0]
        info = results["info"]
        paths = [write_outputs(fv.run_dir, stem, "model", results["model"],
                               info["labels"], info["scores"])]
        for name in ("overlap", "pixels"):
            if name in results:
                paths.append(write_outputs(fv.run_dir, stem, name, results[name],
                                           info["labels"], info[f"{name}_scores"]))
    what = f" from {info['what']}" if "what" in info else ""
    print(f"{fv.data}: {results['model']['pairs']} pairs{what}"
          + (f" ({info['skipped']} skipped: empty text)" if info["skipped"] else ""))
    print(format_table(results))
    print("Written: " + ", ".join(paths) + f"; TensorBoard: "
          f"tensorboard --logdir {fv.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
