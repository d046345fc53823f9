"""TensorBoard beyond scalars and histograms: HParams, graph, PR curves and
a custom scalars layout (the projector: `projector`).

`summaries/views.py` writes what the loop logs at view steps and epochs; this
module writes what a run logs once or once per epoch, from the Python loop.
Where each piece lands in a run folder `runs/<name>/`:

* HParams session and experiment config: the run folder itself;
* final metrics for the HParams table: the run folder, `final/<metric>` scalars
  (e.g. `final/val_accuracy`);
* graph of one step's branch-split forward/backward: `train/`, the run graph;
* custom scalars layout: `train/`, tag `custom_scalars__config__`;
* PR curve of the validation predictions: `validation/`, tag `pr_curve`, every
  epoch;
* image runs: the validation's most confident mistakes, side by side:
  `validation/`, image tag `hardest_pairs`, every epoch;
* projector (encoder outputs, left and right): `validation/` (see
  `projector`).

The HParams session lives in the run folder itself, so `train/` and
`validation/` are its sub-runs, and `tensorboard --logdir runs/sweep` shows a
sweep as one table (one row per run folder). The projector files live in
`validation/` because the Projector plugin only reads folders that are runs
(hold event files), and they are the validation items' encodings.

Everything here runs eagerly, outside the compiled step.
"""

from __future__ import annotations

import math
import os
from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalar_metadata
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.pr_curve import metadata as pr_curve_metadata

# The settings a run reports to the HParams dashboard, in this column order.
HPARAMS = ("encoder", "merge", "loss", "share", "units", "optimizer",
           "learning_rate", "batch_size", "data", "negatives")
# The HParams dashboard shows 5 hparam columns at first: those marked as
# differing, then the rest by name. These are the model's own settings, the
# usual axes of a sweep (tied vs untied, lstm vs gru); the others are one
# click away.
SHOWN_FIRST = ("encoder", "merge", "loss", "share", "units")
# Final metrics are written at the run folder under this prefix; the HParams
# experiment config declares exactly these tags as its metrics.
FINAL_PREFIX = "final/"
# Metrics shown first in the HParams table, when a run reports them.
FINAL_METRICS = ("val_accuracy", "val_auc", "val_loss", "accuracy", "loss",
                 "max_sum_error")
PR_CURVE_TAG = "pr_curve"
HARDEST_PAIRS_TAG = "hardest_pairs"
HARDEST_PAIRS = 8
PR_THRESHOLDS = 201
# The custom scalars layout: (category, [(chart title, tag regex), ...]).
LAYOUT = (
    ("branch gradients", (
        # Every branch on one chart: left, right for pairs; anchor,
        # positive, negative for triplets and in-batch negatives.
        ("each branch's norm and the total",
         r"^branch_gradients/(left|right|anchor|positive|negative|total)_norm$"),
        ("cosines between branches and sum_error",
         r"^branch_gradients/(cosine(/[a-z]+_[a-z]+)?|sum_error)$"),
    )),
    ("train vs validation", (
        ("loss", r"^loss$"),
        ("accuracy", r"^accuracy$"),
    )),
    # The online miners (--loss=batch_hard_triplet, batch_semi_hard_triplet).
    ("miner", (
        ("the fraction of active triplets", r"^miner/active_fraction$"),
        ("mean positive and negative distances",
         r"^miner/(positive|negative)_distance$"),
    )),
)


# -- HParams -----------------------------------------------------------------
def run_writer(run_dir: str) -> tf.summary.SummaryWriter:
    """A writer at the run folder itself (not `train/` or `validation/`).

    Args:
      run_dir: the run folder.

    Returns:
      A `tf.summary.SummaryWriter` whose events make `run_dir` an HParams
      session with `train/` and `validation/` as its sub-runs.
    """
    return tf.summary.create_file_writer(run_dir)


def hparam_values(config) -> Dict[str, object]:
    """The run's settings for the HParams dashboard.

    Args:
      config: a `Config`.

    Returns:
      {name: value} for every name in `HPARAMS` (str, int or float).
    """
    return {name: getattr(config, name) for name in HPARAMS}


def final_metric_tags(metrics: Mapping[str, object]) -> list:
    """The `final/<name>` tags `write_hparams` writes for `metrics`.

    Args:
      metrics: {name: value}; non-numeric and non-finite values, and
        `epoch`, are left out.

    Returns:
      The tags, `FINAL_METRICS` first (in that order), then the rest sorted.
    """
    names = [k for k, v in metrics.items() if k != "epoch" and _is_number(v)]
    ordered = [k for k in FINAL_METRICS if k in names]
    ordered += sorted(k for k in names if k not in FINAL_METRICS)
    return [FINAL_PREFIX + k for k in ordered]


def write_hparams(writer: Optional[tf.summary.SummaryWriter], config,
                  metrics: Mapping[str, object], step: int = 0) -> list:
    """Logs the run's settings and final metrics to the HParams plugin.

    Writes, into the run folder itself: the experiment config (`HPARAMS` and
    the `final/<metric>` tags as its metrics), the session (its trial id is
    the run folder's name, so the table reads `lstm-tied`, not a hash), and
    every numeric metric as the scalar `final/<metric>` at `step`. Every run
    of a sweep writes the same experiment config, so whichever one the
    plugin reads first describes them all.

    Args:
      writer: a writer open at `config.run_dir` (see `run_writer`), or None
        to open (and close) one there. Not the `train/` or `validation/`
        writer: the session must be their parent.
      config: the run's `Config`.
      metrics: final metrics, e.g. the last epoch's logs (`loss`, `accuracy`,
        `auc`, `val_loss`, `val_accuracy`, `val_auc`) plus `max_sum_error`.
      step: the step the metrics belong to (the run's last global step).

    Returns:
      The metric tags written (e.g. `["final/val_accuracy", ...]`).
    """
    own = writer is None
    if own:
        writer = run_writer(config.run_dir)
    tags = final_metric_tags(metrics)
    try:
        with writer.as_default():
            hp.hparams_config(
                hparams=[hp.HParam(name, _Typed(type(value), name in SHOWN_FIRST))
                         for name, value in hparam_values(config).items()],
                metrics=[hp.Metric(tag, display_name=tag[len(FINAL_PREFIX):])
                         for tag in tags])
            trial = os.path.basename(os.path.normpath(config.run_dir))
            hp.hparams(hparam_values(config), trial_id=trial)
            for tag in tags:
                tf.summary.scalar(tag, float(metrics[tag[len(FINAL_PREFIX):]]),
                                  step=step)
        writer.flush()
    finally:
        if own:
            writer.close()
    return tags


class _Typed(hp.Domain):
    """A domain that only states the type (string or number), no values.

    A sweep's runs each write the experiment config and the plugin keeps one
    of them, so listing values (`hp.Discrete`) would hide the other runs'
    values from the dashboard's filters; with only the type the dashboard
    offers a regex filter for strings and a range filter for numbers.
    `shown_first` marks the hparam as one of the dashboard's first columns.
    """

    def __init__(self, dtype, shown_first: bool = False):
        self._dtype = str if dtype is str else float
        self._shown_first = shown_first

    @property
    def dtype(self):
        return self._dtype

    def sample_uniform(self, rng=None):  # pragma: no cover (not sampled here)
        raise NotImplementedError("a type-only domain has no values")

    def update_hparam_info(self, hparam_info):
        hparam_info.type = (api_pb2.DATA_TYPE_STRING if self._dtype is str
                            else api_pb2.DATA_TYPE_FLOAT64)
        # `differs` is how the dashboard picks its first columns (a sweep's
        # runs cannot know what their siblings vary, so mark the usual axes).
        hparam_info.differs = self._shown_first


def _is_number(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# -- Graph ---------------------------------------------------------------------
def write_branch_graph(writer: tf.summary.SummaryWriter, graph) -> None:
    """Writes `graph`, one forward and branch-split backward pass
    (`TrainStep.branch_graph`), as the run's graph (the Graphs dashboard's
    default view of `train/`).

    The compiled train call runs many steps in a `while` loop; this graph is
    one step's math alone, `gradients.branch_gradients`: each shared weight
    is one resource input read twice, once into the left call's copy and
    once into the right call's (`Identity`, `Identity_3`, ...), feeding two
    calls of the one encoder (`lstm_1`, `lstm_3`).
    """
    with writer.as_default():
        tf.summary.graph(graph)
    writer.flush()


# -- PR curve --------------------------------------------------------------------
def pr_curve(writer: tf.summary.SummaryWriter, labels, predictions, step: int,
             name: str = PR_CURVE_TAG, num_thresholds: int = PR_THRESHOLDS) -> None:
    """Writes the precision-recall curve of the validation predictions.

    Same data as `tensorboard.plugins.pr_curve.summary.pb`, written under the
    plain tag `name` (pb's would be `name/pr_curves`).

    Args:
      writer: the `validation/` writer.
      labels: (n,) labels in [0, 1]; >= 0.5 counts as "similar".
      predictions: (n,) scores; clipped to [0, 1] (score merges may return
        slightly outside it).
      step: the global step (one curve per epoch).
      name: the tag.
      num_thresholds: thresholds evenly spaced in [0, 1].
    """
    labels = np.asarray(labels, np.float64).reshape(-1) >= 0.5
    scores = np.clip(np.asarray(predictions, np.float64).reshape(-1), 0.0, 1.0)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.shape[0]} labels but {scores.shape[0]} predictions")
    bucket = np.floor(scores * (num_thresholds - 1)).astype(np.int64)
    tp_bins = np.bincount(bucket[labels], minlength=num_thresholds)
    fp_bins = np.bincount(bucket[~labels], minlength=num_thresholds)
    # Counts at threshold t: predictions >= t, i.e. a reverse cumulative sum.
    tp = np.cumsum(tp_bins[::-1])[::-1].astype(np.float64)
    fp = np.cumsum(fp_bins[::-1])[::-1].astype(np.float64)
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    data = np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float32)
    meta = pr_curve_metadata.create_summary_metadata(
        display_name=name, description="validation pairs, label >= 0.5 = similar",
        num_thresholds=num_thresholds)
    with writer.as_default():
        tf.summary.write(name, tf.constant(data), step=step,
                         metadata=meta.SerializeToString())
    writer.flush()


# -- Image pairs ------------------------------------------------------------------
def hardest_pairs(writer: tf.summary.SummaryWriter, pairs, scores, threshold: float,
                  step: int, k: int = HARDEST_PAIRS, name: str = HARDEST_PAIRS_TAG) -> int:
    """The `k` most confident mistakes among scored image pairs, each pair's
    two images side by side (a grey bar between), as one image summary: the
    dissimilar pairs scored furthest above `threshold` and the similar ones
    furthest at or below it, most confident first.

    Args:
      pairs: a `Pairs` of images, in the order of `scores`.
      scores: (n,) the model's scores; `threshold`: its decision rule's.

    Returns:
      The number of pairs shown (0: no mistake, nothing written).
    """
    labels = np.asarray(pairs.label) >= 0.5
    scores = np.asarray(scores, np.float64).reshape(-1)
    wrong = np.flatnonzero(labels != (scores > threshold))
    if not len(wrong):
        return 0
    margin = np.abs(scores[wrong] - threshold)
    worst = wrong[np.argsort(-margin, kind="stable")[:k]]
    left, right = pairs.left[worst], pairs.right[worst]
    bar = np.full(left.shape[:2] + (max(1, left.shape[2] // 8), left.shape[3]), 0.5,
                  np.float32)
    side_by_side = np.concatenate([left, bar, right], axis=2)
    what = ", ".join(f"{'similar' if labels[i] else 'different'} scored {scores[i]:.3f}"
                     for i in worst)
    with writer.as_default():
        tf.summary.image(name, side_by_side, step=step, max_outputs=k,
                         description=f"most confident mistakes at threshold "
                                     f"{threshold:.3f}: {what}")
    return len(worst)


# -- Custom scalars ----------------------------------------------------------------
def scalars_layout() -> layout_pb2.Layout:
    """The custom scalars layout (`LAYOUT`): branch norms on one chart, cosine
    and sum_error on another, loss and accuracy of train vs validation."""
    categories = []
    for title, charts in LAYOUT:
        categories.append(layout_pb2.Category(title=title, chart=[
            layout_pb2.Chart(title=chart, multiline=layout_pb2.MultilineChartContent(
                tag=[regex])) for chart, regex in charts]))
    return layout_pb2.Layout(category=categories)


def write_custom_scalars_layout(writer: tf.summary.SummaryWriter) -> None:
    """Writes `scalars_layout()` once (the Custom Scalars dashboard).

    Args:
      writer: any writer of the run (the `train/` one by convention).
    """
    meta = custom_scalar_metadata.create_summary_metadata()
    with writer.as_default():
        tf.summary.write(custom_scalar_metadata.CONFIG_SUMMARY_TAG,
                         tf.constant(scalars_layout().SerializeToString()),
                         step=0, metadata=meta.SerializeToString())
    writer.flush()
