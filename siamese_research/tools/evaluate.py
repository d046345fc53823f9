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

import json
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from siamese_research.tools import cli
from siamese_research.config import Config, ConfigError, DataError, UserError

BASELINES = ("none", "overlap")
# The same characters TextVectorization's lower_and_strip_punctuation removes.
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~\']')
METRIC_ORDER = ("pairs", "positives", "accuracy", "threshold", "accuracy_best_threshold",
                "f1", "roc_auc", "average_precision", "map", "mrr", "groups_scored",
                "pearson", "spearman", "triplets", "triplet_accuracy")


# -- metrics: plain numpy, each checkable by hand --------------------------------
def accuracy(labels, scores, threshold: float = 0.5) -> float:
    """Fraction of pairs where `score >= threshold` agrees with `label >= 0.5`."""
    y = np.asarray(labels) >= 0.5
    p = np.asarray(scores) >= threshold
    return float(np.mean(y == p)) if len(y) else math.nan


def best_threshold(labels, scores) -> float:
    """The score threshold with the highest accuracy on (labels, scores).

    Candidates are the midpoints between consecutive distinct scores, plus one
    below all and one above all scores. Ties go to the threshold closest to
    0.5, so a perfectly separable set keeps a central cut.

    Returns:
      The threshold (predict positive when `score >= threshold`).
    """
    y = np.asarray(labels) >= 0.5
    s = np.asarray(scores, np.float64)
    if not len(s):
        return 0.5
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = len(s)
    # Cut k: rows [:k] predicted negative, [k:] positive.
    neg_below = np.concatenate([[0], np.cumsum(~y)])
    pos_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    correct = neg_below + pos_above
    cuts = [0] + [k for k in range(1, n) if s[k - 1] < s[k]] + [n]

    def value(k):
        if k == 0:
            return float(s[0]) - 1e-6
        if k == n:
            return float(s[-1]) + 1e-6
        return float((s[k - 1] + s[k]) / 2.0)

    best = max(correct[k] for k in cuts)
    candidates = [value(k) for k in cuts if correct[k] == best]
    return min(candidates, key=lambda t: (abs(t - 0.5), t))


def f1_score(labels, scores, threshold: float = 0.5) -> float:
    """F1 of the positive class at `threshold` (0 when nothing is right)."""
    y = np.asarray(labels) >= 0.5
    p = np.asarray(scores) >= threshold
    tp = int(np.sum(y & p))
    denom = 2 * tp + int(np.sum(~y & p)) + int(np.sum(y & ~p))
    return 2.0 * tp / denom if denom else math.nan


def rankdata(x) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as scipy's default)."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: P(score of a positive > a negative's), ties
    counting one half (Mann-Whitney U). NaN with a single class."""
    y = np.asarray(labels) >= 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels, scores) -> float:
    """Sum over distinct thresholds of (recall step) x precision, as
    scikit-learn's `average_precision_score`; tied scores form one step."""
    y = np.asarray(labels) >= 0.5
    s = np.asarray(scores, np.float64)
    n_pos = int(y.sum())
    if not n_pos:
        return math.nan
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie block
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1.0)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ranking_metrics(groups: Sequence, labels, scores) -> Dict[str, float]:
    """MAP and MRR over groups (e.g. one question's candidate answers).

    Only groups with at least one positive and one negative count. Within a
    group, candidates are ranked by score, ties negatives first.

    Returns:
      {"map", "mrr", "groups_scored"} (map/mrr NaN when no group counts).
    """
    y = np.asarray(labels) >= 0.5
    s = np.asarray(scores, np.float64)
    members: Dict[object, List[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    aps, rrs = [], []
    for idx in members.values():
        gy, gs = y[idx], s[idx]
        if gy.all() or not gy.any():
            continue
        # lexsort: last key first; by -score, then positives (True) last.
        order = np.lexsort((gy, -gs))
        hits = gy[order]
        ranks = np.flatnonzero(hits) + 1.0
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
        rrs.append(1.0 / ranks[0])
    if not aps:
        return {"map": math.nan, "mrr": math.nan, "groups_scored": 0}
    return {"map": float(np.mean(aps)), "mrr": float(np.mean(rrs)),
            "groups_scored": len(aps)}


def pearson(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.mean((x - x.mean()) * (y - y.mean())) / (x.std() * y.std()))


def spearman(x, y) -> float:
    """Pearson correlation of the average ranks."""
    return pearson(rankdata(x), rankdata(y))


def compute_metrics(labels, scores, *, groups: Optional[Sequence] = None,
                    threshold: Optional[float] = None,
                    graded: bool = False, triplets=None) -> Dict[str, float]:
    """All the metrics that apply, as a flat dict.

    Args:
      labels: targets in [0, 1] (1 = similar).
      scores: model scores in [0, 1].
      groups: a group key per pair (the left text) for MAP/MRR; None skips them.
      threshold: the threshold chosen on validation data, or None.
      graded: labels are graded scores: Pearson/Spearman instead of the
        classification metrics.
      triplets: (n, 2) rows [positive pair, negative pair] of a triplet file
        (`Pairs.triplets`): adds `triplet_accuracy`, the fraction with
        d(a, p) < d(a, n), i.e. the positive scored above the negative.
    """
    labels = np.asarray(labels, np.float64)
    scores = np.asarray(scores, np.float64)
    out: Dict[str, float] = {"pairs": int(len(labels))}
    if graded:
        out.update(pearson=pearson(labels, scores), spearman=spearman(labels, scores))
        return out
    out["positives"] = int(np.sum(labels >= 0.5))
    out["accuracy"] = accuracy(labels, scores, 0.5)
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["accuracy_best_threshold"] = accuracy(labels, scores, threshold)
    # At 0.5, the model's own decision rule: the accuracy-best threshold on
    # imbalanced validation data is often "nothing is positive", where F1 is 0.
    out["f1"] = f1_score(labels, scores, 0.5)
    out["roc_auc"] = roc_auc(labels, scores)
    out["average_precision"] = average_precision(labels, scores)
    if groups is not None:
        out.update(ranking_metrics(groups, labels, scores))
    if triplets is not None and len(triplets):
        out.update(triplet_metrics(scores, triplets))
    return out


def triplet_metrics(scores, triplets) -> Dict[str, float]:
    """`triplets`: the fraction of (anchor, positive, negative) whose positive
    pair scores above its negative pair (for a distance merge's similarity:
    d(a, p) < d(a, n); a tie counts half)."""
    t = np.asarray(triplets, np.int64)
    pos, neg = np.asarray(scores)[t[:, 0]], np.asarray(scores)[t[:, 1]]
    return {"triplets": int(len(t)),
            "triplet_accuracy": float(np.mean((pos > neg) + 0.5 * (pos == neg)))}


# -- the overlap baseline ----------------------------------------------------------
def words(text: str) -> List[str]:
    """Lowercased words without punctuation (the vectoriser's standardisation)."""
    return _PUNCTUATION.sub("", text.lower()).split()


def idf_table(texts: Sequence[str]) -> Dict[str, float]:
    """idf(w) = log(N / df(w)) over the DISTINCT texts (a question repeated for
    each of its candidates counts once)."""
    from siamese_research.data import files

    return files.idf_weights(words(t) for t in dict.fromkeys(texts))


def overlap_scores(left: Sequence[str], right: Sequence[str],
                   idf: Optional[Dict[str, float]] = None) -> np.ndarray:
    """idf-weighted word overlap: the idf mass of the left text's words that
    also occur in the right text, over the left text's idf mass (in [0, 1]).

    Args:
      left, right: the pair texts.
      idf: word -> idf; default: from these texts (both sides).
    """
    if idf is None:
        idf = idf_table(list(left) + list(right))
    out = np.zeros(len(left), np.float64)
    for i, (a, b) in enumerate(zip(left, right)):
        qa, qb = set(words(a)), set(words(b))
        total = sum(idf.get(w, 0.0) for w in qa)
        if total > 0:
            out[i] = sum(idf.get(w, 0.0) for w in qa & qb) / total
    return out


# -- running a saved model ------------------------------------------------------
def read_run_config(run_dir: str, **overrides) -> Config:
    """The run's `config.json` as a `Config` (its `run_dir` = `run_dir`, where
    the folder is now), with `overrides` applied.

    Settings this version does not know are dropped; files that moved are
    the caller's problem (Config checks `data`).

    Raises:
      DataError: no or unreadable config.json.
      ConfigError: an override is invalid.
    """
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise DataError(f"--run_dir={run_dir}: no config.json (not a finished run?)")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    known = set(Config.field_names())
    values = {k: v for k, v in saved.items() if k in known}
    # The trained table is in model.keras: a moved vector file must not stop
    # an evaluation (config.json keeps the size the file gave as `features`).
    values.pop("embeddings", None)
    values.update({k: v for k, v in overrides.items() if k in known})
    values["run_dir"] = run_dir
    return Config(**values)


def load_run_model(run_dir: str, which: str = "best"):
    """The run's model (`runs.model_path`: `best.keras` when the run kept a
    best epoch, else `model.keras`; `which="last"`: `model.keras`), with
    this package's layers registered.

    Raises:
      DataError: missing or unloadable.
    """
    import keras

    from siamese_research.core import encoders, losses, merges, model  # noqa: F401
    from siamese_research import artifacts as runs

    path = runs.model_path(run_dir, which)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises many types for a bad archive
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot load the model ({first})") from None


def predict(model, pairs, batch_size: int = 256) -> np.ndarray:
    """Scores in [0, 1], one per pair, in order."""
    from siamese_research.data import PairDataset

    if not len(pairs):
        return np.zeros(0, np.float64)
    out = []
    for (left, right), _, _ in PairDataset(pairs, batch_size, shuffle=False).epoch(0):
        out.append(np.asarray(model((left, right), training=False)).reshape(-1))
    return np.concatenate(out).astype(np.float64)


def _evaluate_builtin(run_dir: str, data: str, batch_size: int, which: str) -> dict:
    """`--data=synthetic|random`: the run's own built-in validation pairs,
    re-created from its config.json (the same seed, the same split)."""
    from siamese_research import data as data_lib

    run_config = read_run_config(run_dir)
    if run_config.data != data:
        raise DataError(f"--data={data}: this run was trained on --data="
                        f"{run_config.data}; its built-in validation split is "
                        f"--data={run_config.data}")
    pairs = data_lib.load(run_config).validation
    if pairs is None or not len(pairs):
        raise DataError(f"--data={data}: the run held out no validation pairs "
                        f"(--validation_split=0)")
    scores = predict(load_run_model(run_dir, which), pairs, batch_size)
    return {"model": compute_metrics(pairs.label, scores),
            "info": {"skipped": 0, "scores": scores, "labels": pairs.label}}


def _validation_pairs(run_config: Config, vectorizer):
    """The run's validation pairs, re-created as training made them, or None."""
    from siamese_research import data as data_lib
    from siamese_research.data import files

    try:
        if run_config.data in ("synthetic", "random"):
            return data_lib.load(run_config).validation
        return files.load(run_config, vectorizer=vectorizer).validation
    except UserError:
        return None


def evaluate_run(run_dir: str, data_path: str, *, baseline: str = "none",
                 batch_size: int = 256, which: str = "best",
                 **data_flags) -> Dict[str, dict]:
    """Scores `data_path` with the run's model (and the baseline).

    Args:
      run_dir: a finished run folder (model.keras, config.json).
      data_path: a pair file of the run's kind (text or .npz).
      baseline: "none" or "overlap".
      batch_size: pairs per forward pass.
      which: "best" (best.keras, or model.keras without one) or "last".
      **data_flags: left_column, right_column, label_column, label_range
        (None keeps the run's).

    Returns:
      {"model": metrics, "overlap": metrics (with --baseline=overlap),
       "info": {...}}.

    Raises:
      UserError: a bad run folder, file or flag.
    """
    from siamese_research.data import files

    if baseline not in BASELINES:
        raise DataError(f"--baseline={baseline}: expected one of {', '.join(BASELINES)}")
    if not os.path.isdir(run_dir):
        raise DataError(f"--run_dir={run_dir}: no such folder")
    if data_path in ("synthetic", "random"):
        return _evaluate_builtin(run_dir, data_path, batch_size, which)
    if not os.path.isfile(data_path):
        raise DataError(f"--data={data_path}: no such file")
    try:
        run_config = read_run_config(run_dir)
        have_validation = True
    except ConfigError:
        # The training file moved: its validation split cannot be re-made,
        # so there is no validated threshold, but the file can be scored.
        run_config = read_run_config(run_dir, data=data_path,
                                     validation_data=None)
        have_validation = False
    overrides = {k: v for k, v in data_flags.items() if v is not None}
    config = run_config.replace(data=data_path, validation_data=None, **overrides)
    vectorizer = files.load_vectorizer(run_dir)
    kind = files.file_kind(data_path)
    if vectorizer is None and kind == "text":
        raise DataError(f"--data={data_path}: this run was trained on float pairs, "
                        f"not text; evaluate it on an .npz file")
    if vectorizer is not None and kind != "text":
        raise DataError(f"--data={data_path}: this run was trained on text pairs; "
                        f"evaluate it on a .csv, .tsv or .jsonl file")
    pairs, skipped = files.load_file(data_path, config, vectorizer)
    if not len(pairs):
        raise DataError(f"{data_path}: no pairs left after skipping {skipped} with "
                        f"an empty text")
    if baseline == "overlap" and not pairs.is_text:
        raise DataError("--baseline=overlap needs text pairs, not an .npz file")
    model = load_run_model(run_dir, which)
    graded = config.label_bounds is not None
    groups = [t.strip() for t in pairs.left_text] if pairs.is_text else None
    triplets = pairs.triplets

    validation = None
    if have_validation and not graded:
        validation = _validation_pairs(run_config, vectorizer)
    threshold = None
    if validation is not None and len(validation):
        threshold = best_threshold(validation.label, predict(model, validation,
                                                             batch_size))
    scores = predict(model, pairs, batch_size)
    results = {"model": compute_metrics(pairs.label, scores, groups=groups,
                                        threshold=threshold, graded=graded,
                                        triplets=triplets),
               "info": {"skipped": skipped, "scores": scores,
                        "labels": pairs.label}}
    if baseline == "overlap":
        base_threshold = None
        if validation is not None and validation.left_text:
            base_threshold = best_threshold(
                validation.label, overlap_scores(validation.left_text,
                                                 validation.right_text))
        base = overlap_scores(pairs.left_text, pairs.right_text)
        results["overlap"] = compute_metrics(pairs.label, base, groups=groups,
                                             threshold=base_threshold, graded=graded,
                                             triplets=triplets)
        results["info"]["overlap_scores"] = base
    return results


def format_table(results: Dict[str, dict]) -> str:
    """A fixed-width table: one row per metric, one column per scorer."""
    names = [k for k in ("model", "overlap") if k in results]
    keys = [k for k in METRIC_ORDER if any(k in results[n] for n in names)]
    lines = [f"{'metric':<24}" + "".join(f"{n:>12}" for n in names)]
    for k in keys:
        cells = []
        for n in names:
            v = results[n].get(k)
            if v is None:
                cells.append(f"{'-':>12}")
            elif isinstance(v, int):
                cells.append(f"{v:>12d}")
            else:
                cells.append(f"{v:>12.4f}")
        lines.append(f"{k:<24}" + "".join(cells))
    return "\n".join(lines)


def _json_ready(metrics: dict) -> dict:
    # NaN is not JSON: a metric that does not apply is left out instead.
    return {k: v for k, v in metrics.items()
            if not (isinstance(v, float) and not math.isfinite(v))}


def write_outputs(run_dir: str, stem: str, name: str, metrics: dict, labels,
                  scores) -> str:
    """`DIR/eval_<stem>[_name].json` and TensorBoard `DIR/eval_<stem>[_name]/`
    (scalars `eval/<metric>` and the PR curve `eval/pr_curve`, at step 0).

    Returns:
      The JSON path.
    """
    import tensorflow as tf

    from siamese_research.summaries import views as summaries
    from siamese_research.summaries import extras as tensorboard_extras

    base = f"eval_{stem}" + ("" if name == "model" else f"_{name}")
    path = os.path.join(run_dir, base + ".json")
    with open(path, "w") as f:
        json.dump(_json_ready(metrics), f, indent=2, sort_keys=True)
        f.write("\n")
    writer = tf.summary.create_file_writer(os.path.join(run_dir, base))
    with writer.as_default():
        summaries.epoch_scalars(0, {f"eval/{k}": float(v)
                                    for k, v in _json_ready(metrics).items()})
    if not any(k in metrics for k in ("pearson", "spearman")):
        tensorboard_extras.pr_curve(writer, labels, scores, 0, name="eval/pr_curve")
    writer.close()
    return path


# -- command line -------------------------------------------------------------
def define_flags():
    from absl import flags

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
    from siamese_research import runner as training

    training.quiet_tensorflow()
    try:
        results = evaluate_run(
            fv.run_dir, fv.data, baseline=fv.baseline, batch_size=fv.batch_size,
            left_column=fv.left_column, right_column=fv.right_column,
            label_column=fv.label_column, label_range=fv.label_range, which=fv.which)
    except UserError as e:
        cli.fail(str(e))
    stem = os.path.splitext(os.path.basename(fv.data))[0]
    info = results["info"]
    paths = [write_outputs(fv.run_dir, stem, "model", results["model"], info["labels"],
                           info["scores"])]
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
