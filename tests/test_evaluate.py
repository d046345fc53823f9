"""Evaluation: metric functions against hand-computed values, and the CLI."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, SHARED_DATA, read_tags, run_main, tiny
from siamese_research import artifacts
from siamese_research.errors import DataError
from siamese_research.inference import evaluate as ev
from siamese_research.metrics import pairs as metrics
from siamese_research.metrics.overlap import overlap_scores
from siamese_research.metrics.ranking import ranking_metrics
from siamese_research.text.tokens import idf_table
from siamese_research.tools import evaluate as evaluate_tool


# -- metrics, by hand ---------------------------------------------------------------
def test_accuracy_and_f1():
    labels, scores = [1, 0, 1, 0], [0.9, 0.4, 0.3, 0.6]
    assert metrics.accuracy(labels, scores) == 0.5  # right on rows 0 and 1
    assert metrics.accuracy(labels, scores, threshold=0.25) == 0.5
    assert metrics.accuracy(labels, scores, threshold=0.65) == 0.75
    # t=0.5: tp=1 (0.9), fp=1 (0.6), fn=1 (0.3): 2 / (2 + 1 + 1).
    assert metrics.f1_score(labels, scores) == 0.5


def test_best_threshold():
    # Separable: the cut is the midpoint between 0.2 and 0.6.
    assert metrics.best_threshold([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.7]) == pytest.approx(0.4)
    # Accuracy 3/4 at 0.15 and at 0.35: the one nearer 0.5 wins.
    assert metrics.best_threshold([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.35)
    # All negative: the best cut is above every score.
    assert metrics.best_threshold([0, 0], [0.6, 0.8]) > 0.8


def test_rankdata_roc_auc_and_average_precision():
    # Spearman ranks ties by their average: x ranks (2.5, 1, 2.5) against
    # (2, 1, 3) give sqrt(3) / 2 (ranked in order, 1.0).
    assert metrics.spearman([3, 1, 3], [1, 0, 2]) == pytest.approx(math.sqrt(3) / 2)
    # Positive-negative pairs: 0.9>0.6, 0.9>0.1, 0.3<0.6, 0.3>0.1 -> 3/4.
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.3, 0.6, 0.1]) == 0.75
    assert metrics.roc_auc([1, 0], [0.5, 0.5]) == 0.5  # a tie is half right
    assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))
    # Ranked pos, neg, pos: recall 1/2 at precision 1, then 1/2 at 2/3.
    assert metrics.average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(5 / 6)
    # A tie block is one step: pos and neg tied at the top -> 1/2 x 1/2 ...
    assert metrics.average_precision([1, 0, 1], [0.9, 0.9, 0.1]) == pytest.approx(
        0.5 * 0.5 + 0.5 * 2 / 3)


def test_ranking_metrics_per_group():
    groups = ["a", "a", "a", "b", "b", "b", "c", "c"]
    labels = [0, 1, 0, 1, 1, 0, 1, 1]
    scores = [.9, .8, .1, .2, .9, .5, .3, .4]
    got = ranking_metrics(groups, labels, scores)
    # a: positive at rank 2 -> AP 1/2, RR 1/2. b: ranks 1 and 3 -> AP
    # (1 + 2/3) / 2, RR 1. c: all positive, not scored.
    assert got["groups_scored"] == 2
    assert got["map"] == pytest.approx((0.5 + 5 / 6) / 2)
    assert got["mrr"] == pytest.approx(0.75)
    # Ties rank the negative first: a constant score earns no credit.
    tie = ranking_metrics(["q", "q"], [1, 0], [0.5, 0.5])
    assert tie["map"] == 0.5 and tie["mrr"] == 0.5
    assert ranking_metrics(["q"], [1], [0.5])["groups_scored"] == 0


def test_correlations():
    x = [1, 2, 3, 4]
    # Deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): 4 / 5.
    assert metrics.pearson(x, [1, 3, 2, 4]) == pytest.approx(0.8)
    assert metrics.spearman(x, [1, 9, 4, 16]) == pytest.approx(0.8)  # same ranks
    assert metrics.pearson(x, [1, 9, 4, 16]) != pytest.approx(0.8)
    assert math.isnan(metrics.pearson(x, [2, 2, 2, 2]))


def test_overlap_baseline():
    idf = {"cat": 2.0, "sat": 1.0, "the": 0.1}
    # Left words {cat, sat} (case and punctuation dropped); 'cat' matches.
    np.testing.assert_allclose(overlap_scores(["Cat, sat!"], ["the cat"], idf),
                               [2 / 3])
    table = idf_table(["a b", "a", "a b"])  # distinct texts: "a b", "a"
    assert table == {"a": 0.0, "b": pytest.approx(math.log(2))}


def test_compute_metrics_keys():
    binary = metrics.compute_metrics([1, 0, 1, 0], [.9, .2, .6, .7], groups=list("aabb"),
                                threshold=0.65)
    assert binary["accuracy"] == 0.75 and binary["accuracy_best_threshold"] == 0.5
    assert binary["map"] == 0.75 and binary["groups_scored"] == 2
    assert binary["f1"] == pytest.approx(0.8)  # at 0.5: tp 2, fp 1, fn 0
    graded = metrics.compute_metrics([0, .5, 1], [.1, .4, .8], graded=True)
    assert set(graded) == {"pairs", "pearson", "spearman"}
    assert graded["spearman"] == pytest.approx(1.0)


# -- the command line, on a tiny trained run -------------------------------------
def write_qa(path, questions=6):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["q", "label", "a"])
        for i in range(questions):
            w.writerow([f"what is thing{i}?", 1, f"thing{i} is a thing, surely"])
            w.writerow([f"what is thing{i}?", 0, "nothing to see"])
            w.writerow([f"what is thing{i}?", 0, f"other{i} words"])
    return str(path)


def evaluate_cli(*args):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "siamese_research.tools.evaluate", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from siamese_research import runner as training

    tmp = tmp_path_factory.mktemp("eval")
    data = write_qa(tmp / "train.csv")
    run_dir = tmp / "run"
    config = tiny(data=data, run_dir=str(run_dir), epochs=1, batch_size=4,
                  validation_split=0.34, max_tokens=50, max_length=8)
    assert training.run(config)["exit_code"] == 0
    return run_dir, write_qa(tmp / "dev.csv", questions=4)


def test_cli_writes_json_tensorboard_and_matches_the_library(trained_run):
    run_dir, dev = trained_run
    proc = evaluate_cli(f"--run_dir={run_dir}", f"--data={dev}", "--baseline=overlap")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no TensorFlow log lines
    assert "groups_scored" in proc.stdout and "overlap" in proc.stdout
    model = json.loads((run_dir / "eval_dev.json").read_text())
    base = json.loads((run_dir / "eval_dev_overlap.json").read_text())
    for key in ("accuracy", "accuracy_best_threshold", "threshold", "f1", "roc_auc",
                "average_precision", "map", "mrr", "groups_scored"):
        assert key in model, key
    assert model["groups_scored"] == 4 and model["pairs"] == 12
    assert "pearson" not in model
    # The answer repeats the question's rare word: overlap ranks it first.
    assert base["map"] == 1.0 and base["mrr"] == 1.0
    # The CLI's numbers are the library's.
    again = ev.evaluate_run(str(run_dir), dev)
    assert again["model"]["map"] == pytest.approx(model["map"])
    assert again["model"]["threshold"] == pytest.approx(model["threshold"])
    # TensorBoard: every metric as a scalar and the PR curve, for both scorers.
    for folder, scored in (("eval_dev", model), ("eval_dev_overlap", base)):
        steps, acc = read_tags(str(run_dir / folder))
        tags = set(steps)
        assert {f"eval/{k}" for k in scored} <= tags, sorted(tags)
        assert "eval/pr_curve" in tags
        logged = float(tf.make_ndarray(acc.Tensors("eval/map")[0].tensor_proto))
        assert logged == pytest.approx(scored["map"])


def test_oov_buckets_run_reloads_and_scores_unseen_words(tmp_path):
    """A run with --oov_buckets: the embedding has a row for every hashed id,
    and evaluate's reloaded vectoriser maps dev-only words as training did."""
    from siamese_research import runner as training
    from siamese_research.data import vocab

    config = tiny(data=write_qa(tmp_path / "train.csv", questions=3),
                  run_dir=str(tmp_path / "run"), epochs=1, batch_size=4,
                  validation_split=0.34, max_tokens=50, max_length=8, oov_buckets=16,
                  projector_points=0)
    assert training.run(config)["exit_code"] == 0
    vectorizer = vocab.load_vectorizer(config.run_dir)
    model = artifacts.load_model(config.run_dir)
    embedding = [w for w in model.weights if "embedding" in w.path]
    assert embedding and embedding[0].shape[0] == vectorizer.vocabulary_size()
    dev = write_qa(tmp_path / "dev.csv", questions=5)  # thing3, thing4: unseen
    ids = np.asarray(vectorizer(np.array(["thing4", "thing4 is"], dtype=object)))
    assert 1 <= ids[0, 0] <= 16 and ids[0, 0] == ids[1, 0]
    result = ev.evaluate_run(config.run_dir, dev)
    assert result["model"]["pairs"] == 15 and result["model"]["groups_scored"] == 5
    assert np.isfinite(result["info"]["scores"]).all()


def test_resuming_with_another_feature_size_is_refused(trained_run, tmp_path):
    run_dir, dev = trained_run
    before = sorted(os.listdir(run_dir / "checkpoints"))
    proc = run_main(f"--data={dev}", "--features=6", "--units=4", "--epochs=2",
                    "--max_tokens=50", "--max_length=8", f"--run_dir={run_dir}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "features=8 in the checkpoint, 6 now" in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(run_dir / "checkpoints")) == before


@pytest.mark.parametrize("case", ["no_run", "wrong_kind", "bad_column"])
def test_cli_bad_input_is_one_line_exit_2(trained_run, tmp_path, case):
    run_dir, dev = trained_run
    npz = tmp_path / "x.npz"
    np.savez(npz, left=np.ones((2, 3, 8)), right=np.ones((2, 3, 8)), label=[0, 1])
    args = {"no_run": ([f"--run_dir={tmp_path / 'nope'}", f"--data={dev}"], "nope"),
            "wrong_kind": ([f"--run_dir={run_dir}", f"--data={npz}"], "text pairs"),
            "bad_column": ([f"--run_dir={run_dir}", f"--data={dev}",
                            "--left_column=zzz"], "no column 'zzz'")}[case]
    # Through evaluate's main() in this process (the CLI's real process, its
    # stderr free of TensorFlow lines, is test_cli_writes_json_...).
    proc = run_main(*args[0], main=evaluate_tool.main)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and args[1] in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_overlap_baseline_on_trecqa_dev():
    path = os.path.join(SHARED_DATA, "trecqa", "dev.csv")
    if not os.path.exists(path):
        pytest.skip(f"TREC QA data not found at {path} (only in the shared workspace)")
    from siamese_research.data import tables

    rows = tables.read_text_rows(path, tiny(data=path))
    scores = overlap_scores(rows.left, rows.right)
    got = ranking_metrics([t.strip() for t in rows.left], rows.label, scores)
    # docs/results.md reports these (81 questions, 65 with both kinds).
    assert got["groups_scored"] == 65
    assert got["map"] == pytest.approx(0.7170, abs=5e-4)


def test_a_builtin_run_is_evaluated_on_its_own_validation_split(tmp_path, monkeypatch):
    from siamese_research import runner as training
    from conftest import tiny

    from siamese_research.train import validation

    run_dir = str(tmp_path / "run")
    passes = []
    evaluate = validation.Validator.evaluate
    monkeypatch.setattr(validation.Validator, "evaluate",
                        lambda self, *a, **k: passes.append(1) or evaluate(self, *a, **k))
    result = training.run(tiny(run_dir=run_dir, projector_points=0))
    # One validation pass per epoch: the run's predictions are the last one's.
    assert len(passes) == result["history"]["epochs"][-1]["epoch"] == 2
    out = ev.evaluate_run(run_dir, "synthetic", which="last")
    # The same 12 held-out pairs the run validated on, scored again.
    assert out["model"]["pairs"] == 12
    np.testing.assert_allclose(out["info"]["scores"], result["validation_predictions"],
                               atol=1e-6)
    with pytest.raises(DataError):
        ev.evaluate_run(run_dir, "random")
    # Run again, the finished run trains nothing and scores its split once.
    passes.clear()
    again = training.run(tiny(run_dir=run_dir, projector_points=0))
    assert not again["history"]["epochs"] and len(passes) == 1
    np.testing.assert_allclose(again["validation_predictions"],
                               result["validation_predictions"], atol=1e-6)
