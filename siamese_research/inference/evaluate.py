"""Scores a trained run on a pair file: every metric that applies, beside a
baseline, and the outputs `siamese-evaluate` writes (`tools/evaluate.py`
says what each metric means)."""

from __future__ import annotations

import math
import os
from typing import Dict

import numpy as np
import tensorflow as tf

from siamese_research import artifacts, atomic
from siamese_research import data as data_lib
from siamese_research.config import BUILTIN_DATA, Config, image_data
from siamese_research.data import files, images
from siamese_research.data import vocab
from siamese_research.errors import ConfigError, DataError, UserError
from siamese_research.metrics.overlap import overlap_scores
from siamese_research.metrics import verification
from siamese_research.metrics.pairs import best_threshold, compute_metrics
from siamese_research.summaries import extras
from siamese_research.summaries import views as summaries

BASELINES = ("none", "overlap", "pixels")
# The columns of `format_table`, each a scorer: the model and its baselines.
SCORERS = ("model", "overlap", "pixels")
METRIC_ORDER = ("pairs", "positives", "accuracy", "threshold", "accuracy_best_threshold",
                "f1", "roc_auc", "average_precision", "map", "mrr", "groups_scored",
                "pearson", "spearman", "triplets", "triplet_accuracy", "eer",
                "far_at_frr_1", "far_at_frr_5", "one_shot_accuracy", "one_shot_ways")


def predict(model, pairs, batch_size: int = 256) -> np.ndarray:
    """Scores in [0, 1], one per pair, in order."""
    if not len(pairs):
        return np.zeros(0, np.float64)
    out = []
    for (left, right), _, _ in data_lib.PairDataset(pairs, batch_size, shuffle=False).epoch(0):
        out.append(np.asarray(model((left, right), training=False)).reshape(-1))
    return np.concatenate(out).astype(np.float64)


def _evaluate_builtin(run_dir: str, data: str, batch_size: int, which: str) -> dict:
    """`--data=synthetic|random`: the run's own built-in validation pairs,
    re-created from its config.json (the same seed, the same split)."""
    run_config = artifacts.read_run_config(run_dir)
    if run_config.data != data:
        raise DataError(f"--data={data}: this run was trained on --data="
                        f"{run_config.data}; its built-in validation split is "
                        f"--data={run_config.data}")
    pairs = data_lib.load(run_config).validation
    if pairs is None or not len(pairs):
        raise DataError(f"--data={data}: the run held out no validation pairs "
                        f"(--validation_split=0)")
    scores = predict(artifacts.load_model(run_dir, which), pairs, batch_size)
    return {"model": compute_metrics(pairs.label, scores),
            "info": {"skipped": 0, "scores": scores, "labels": pairs.label}}


def _validation_pairs(run_config: Config, vectorizer):
    """The run's validation pairs, re-created as training made them, or None."""
    try:
        if run_config.data in BUILTIN_DATA:
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
    if baseline not in BASELINES:
        raise DataError(f"--baseline={baseline}: expected one of {', '.join(BASELINES)}")
    if not os.path.isdir(run_dir):
        raise DataError(f"--run_dir={run_dir}: no such folder")
    if image_data(data_path) or image_data(str(artifacts.read_config(run_dir).get("data"))):
        return evaluate_images(run_dir, data_path, baseline=baseline,
                               batch_size=batch_size, which=which,
                               **{k: v for k, v in data_flags.items()
                                  if k in ("num_pairs", "ways", "draws")})
    if baseline == "pixels":
        raise DataError("--baseline=pixels compares images: for an image run")
    data_flags = {k: v for k, v in data_flags.items()
                  if k not in ("num_pairs", "ways", "draws")}
    if data_path in BUILTIN_DATA:
        return _evaluate_builtin(run_dir, data_path, batch_size, which)
    if not os.path.isfile(data_path):
        raise DataError(f"--data={data_path}: no such file")
    run_config, have_validation = _run_config(run_dir, data_path)
    overrides = {k: v for k, v in data_flags.items() if v is not None}
    config = run_config.replace(data=data_path, validation_data=None, **overrides)
    vectorizer = vocab.load_vectorizer(run_dir)
    pairs, skipped = _read_pairs(data_path, config, vectorizer, baseline)
    model = artifacts.load_model(run_dir, which)
    graded = config.label_bounds is not None
    score = {"groups": [t.strip() for t in pairs.left_text] if pairs.is_text else None,
             "graded": graded, "triplets": pairs.triplets}
    validation = None
    if have_validation and not graded:
        validation = _validation_pairs(run_config, vectorizer)
    threshold = None
    if validation is not None and len(validation):
        threshold = best_threshold(validation.label, predict(model, validation,
                                                             batch_size))
    scores = predict(model, pairs, batch_size)
    results = {"model": compute_metrics(pairs.label, scores, threshold=threshold, **score),
               "info": {"skipped": skipped, "scores": scores, "labels": pairs.label}}
    if baseline == "overlap":
        base_threshold = None
        if validation is not None and validation.left_text:
            base_threshold = best_threshold(
                validation.label, overlap_scores(validation.left_text,
                                                 validation.right_text))
        base = overlap_scores(pairs.left_text, pairs.right_text)
        results["overlap"] = compute_metrics(pairs.label, base, threshold=base_threshold,
                                             **score)
        results["info"]["overlap_scores"] = base
    return results


def evaluate_images(run_dir: str, data_path: str, *, baseline: str = "none",
                    batch_size: int = 256, which: str = "best", num_pairs: int = 0,
                    ways: int = 10, draws: int = verification.ONE_SHOT_DRAWS
                    ) -> Dict[str, dict]:
    """An image run's verification measures.

    On the run's own `--data` (digits, or its folder) the images scored are
    the ones training held out (`--split`: held-out images of every class,
    or held-out classes), re-made from config.json; on another folder, all
    of its images (resized and converted to the run's shape). Pairs are
    drawn from them as validation's were (`images.draw_pairs`, the run's
    seed): `num_pairs` of them, 0 = as many as the run validated on.

    Besides the pair metrics: the equal error rate, the false-accept rate
    at 1% and 5% false rejects, and `ways`-way one-shot accuracy over
    `draws` seeded draws (capped at the classes there are). The model scores
    pairs by its merge and head on the encodings; `baseline="pixels"`
    scores them by the cosine of the raw pixels.

    Raises:
      UserError: not an image run, no held-out images, a bad folder.
    """
    run = artifacts.load_run(run_dir, which)
    if not run.is_image:
        raise DataError(f"--data={data_path}: this run was not trained on images")
    if baseline not in ("none", "pixels"):
        raise DataError(f"--baseline={baseline}: an image run compares with pixels "
                        f"(--baseline=pixels) or none")
    run_config, _ = _run_config(run_dir, data_path)
    height, width, channels = run.image_shape
    if _same_data(data_path, run_config.data):
        every = images.load_images(run_config.data, run_config.image_shape,
                                   run_config.channels)
        _, held = images.split(every, run_config.validation_split, run_config.split,
                               run_config.seed)
        if held is None:
            raise DataError(f"--data={data_path}: the run held out no images "
                            f"(--validation_split=0); evaluate it on another folder")
        what = (f"images of {len(held.classes)} held-out classes"
                if run_config.split == "classes" else
                f"held-out images of {len(held.classes)} classes")
    elif image_data(data_path):
        held = images.load_images(data_path, (height, width), channels)
        what = f"images of {len(held.classes)} classes"
    else:
        raise DataError(f"--data={data_path}: this run was trained on images; evaluate "
                        f"it on digits or a folder of class folders")
    if not num_pairs:
        num_pairs = max(2, int(round(run_config.num_samples *
                                     run_config.validation_split)))
    pairs, rows = images.draw_pairs(held, num_pairs, run_config.seed,
                                    images.VALIDATION_SALT, "evaluated")
    encodings = run.encode(held.images, batch_size=batch_size)

    def model_scores(left, right):
        return run.score_encodings(encodings[left], encodings[right])

    def pixel_scores(left, right):
        return verification.cosine_scores(held.images, left, right)

    scorers = {"model": model_scores}
    if baseline == "pixels":
        scorers["pixels"] = pixel_scores
    results = {"info": {"skipped": 0, "labels": pairs.label,
                        "what": f"{len(held):,} {what}"}}
    for name, score in scorers.items():
        scores = score(rows[:, 0], rows[:, 1])
        # The model's decision rule is the run's threshold (fitted on its
        # training pairs for a score that is not a probability), not one
        # chosen on the images scored here.
        metrics = compute_metrics(pairs.label, scores,
                                  threshold=run.threshold if name == "model" else None)
        metrics.update(verification.verification_metrics(pairs.label, scores))
        try:
            accuracy, n = verification.one_shot_accuracy(score, held.labels, ways,
                                                         draws, run_config.seed)
            metrics.update(one_shot_accuracy=accuracy, one_shot_ways=n)
        except ValueError:
            pass  # fewer than two classes of two images: no one-shot task
        results[name] = metrics
        results["info"]["scores" if name == "model" else f"{name}_scores"] = scores
    return results


def _same_data(data_path: str, run_data: str) -> bool:
    if data_path == run_data:
        return True
    return (os.path.isdir(data_path) and os.path.isdir(run_data)
            and os.path.realpath(data_path) == os.path.realpath(run_data))


def _run_config(run_dir: str, data_path: str):
    """(the run's Config, whether its validation split can be re-made)."""
    try:
        return artifacts.read_run_config(run_dir), True
    except ConfigError:
        # The training file moved: its validation split cannot be re-made,
        # so there is no validated threshold, but the file can be scored.
        return artifacts.read_run_config(run_dir, data=data_path,
                                         validation_data=None), False


def _read_pairs(data_path: str, config: Config, vectorizer, baseline: str):
    """(pairs, skipped) of `data_path`, of the run's kind."""
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
    return pairs, skipped


def format_table(results: Dict[str, dict]) -> str:
    """A fixed-width table: one row per metric, one column per scorer."""
    names = [k for k in SCORERS if k in results]
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
    base = f"eval_{stem}" + ("" if name == "model" else f"_{name}")
    path = os.path.join(run_dir, base + ".json")
    atomic.write_json(path, _json_ready(metrics), indent=2, sort_keys=True)
    writer = tf.summary.create_file_writer(os.path.join(run_dir, base))
    with writer.as_default():
        summaries.epoch_scalars(0, {f"eval/{k}": float(v)
                                    for k, v in _json_ready(metrics).items()})
    if not any(k in metrics for k in ("pearson", "spearman")):
        extras.pr_curve(writer, labels, scores, 0, name="eval/pr_curve")
    writer.close()
    return path
