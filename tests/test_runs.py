"""The package as a library: what `import siamese_research` does (and does
not do), and `load_run` on a trained run."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from siamese_research import quiet as cli
from siamese_research import artifacts as runs
from siamese_research.config import DataError

ENV_DIFF = """
import atexit, gc, json, os, sys
sys.argv[0] = {program!r}
# Registered first, so it runs last at exit: what the package's exit handler left.
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
before = dict(os.environ)
import {module}
after = dict(os.environ)
print(json.dumps(sorted(k for k in set(before) | set(after)
                        if before.get(k) != after.get(k))))
"""


def _env_diff(module, program="-c"):
    """(variables the import changed, its stderr, objects frozen at exit) in a
    fresh process whose program (sys.argv[0]) is `program`."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    code = ENV_DIFF.format(module=module, program=program)
    proc = subprocess.run([sys.executable, "-c", code],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *_, diff, frozen = proc.stdout.strip().splitlines()
    return json.loads(diff), proc.stderr, int(frozen.split(":")[1])


def test_import_changes_no_process_setting_beyond_tensorflows_own():
    """TensorFlow's import sets a few variables of its own (TF2_BEHAVIOR, ...);
    importing the package adds none, and hides none of TF's start-up lines."""
    tf_only, tf_stderr, _ = _env_diff("tensorflow, keras")
    ours, stderr, frozen = _env_diff("siamese_research")
    assert ours == tf_only and "TF_CPP_MIN_LOG_LEVEL" not in ours
    assert frozen == 0  # a program's own exit keeps Python's last collection
    # stderr was left open during the import: the lines TensorFlow prints
    # there on this machine (which depend on its CPU: oneDNN, CUDA, ...)
    # come from the same sources with the package's import.
    sources = set(re.findall(r"(\w+\.cc):\d+\]", tf_stderr))
    assert sources and sources <= set(re.findall(r"(\w+\.cc):\d+\]", stderr))


def test_a_tool_skips_the_shutdown_collection():
    """Started as train.py, the package freezes what is left at exit, so
    the interpreter's last collection does not walk TensorFlow's objects."""
    _, _, frozen = _env_diff("siamese_research", program=os.path.join(ROOT, "train.py"))
    assert frozen > 10000


def test_started_as_tool_reads_the_command_line():
    py = "/usr/bin/python3"
    assert cli.started_as_tool(["-m"], [py, "-m", "siamese_research.tools.predict", "--x"])
    assert cli.started_as_tool(["-m"], [py, "-msiamese_research.search"])
    assert not cli.started_as_tool(["-m"], [py, "-m", "pytest", "tests"])
    assert not cli.started_as_tool(["-m"], [py, "-m", "siamese_researcher.x"])
    assert cli.started_as_tool(["/venv/bin/siamese-export"], [py, "/venv/bin/x"])
    assert cli.started_as_tool([os.path.join(ROOT, "train.py")], [py, "train.py"])
    assert not cli.started_as_tool(["/elsewhere/train.py"], [py, "train.py"])
    assert not cli.started_as_tool(["-c"], [py, "-c", "import siamese_research"])


def test_registration_and_the_public_api(text_run):
    import keras

    import siamese_research as sr

    model = keras.saving.load_model(str(text_run / "model.keras"), compile=False)
    assert isinstance(model, sr.SiameseModel)
    for name in ("Config", "Trainer", "load_run", "Run", "build_model", "run"):
        assert name in sr.__all__ and getattr(sr, name) is not None, name


def test_load_run_scores_and_encodes_raw_text_as_the_model_does(text_run):
    run = runs.load_run(str(text_run))
    assert run.model_path.endswith("best.keras")  # the run validated: its best epoch
    assert runs.load_run(str(text_run), which="last").model_path.endswith("model.keras")
    assert run.threshold == 0.5  # a sigmoid head, no threshold.json
    left = ["what is thing1?", "What is THING2!", "zebra crossing", "what"]
    right = ["thing1 is a thing", "nothing to see", "zebra", "is"]
    scores = run.score(left, right, batch_size=3)
    assert scores.shape == (4,) and scores.dtype == np.float32
    # The same pairs through the whole model, padded to max_length, unbatched.
    ids_l, ids_r = run.token_ids(left), run.token_ids(right)
    assert ids_l.shape == (4, 8)
    whole = np.asarray(run.model((ids_l, ids_r), training=False)).reshape(-1)
    np.testing.assert_allclose(scores, whole, atol=1e-6)
    enc = run.encode(left, batch_size=2)
    assert enc.shape == (4, run.dim) and enc.dtype == np.float32
    np.testing.assert_allclose(run.score_query(enc[0], run.encode(right, side="right")),
                               run.score([left[0]] * 4, right), atol=1e-6)
    # The one threshold rule (metrics.pairs.predicted): similar when score >
    # threshold, as Keras's BinaryAccuracy counts; a tie is dissimilar.
    np.testing.assert_array_equal(run.predict_labels([0.2, 0.5, 0.9]), [0, 0, 1])


def test_which_best_threshold_file_and_bad_folders(text_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(text_run, copy)
    # best.keras, when the run has one, is what "best" loads.
    shutil.copy(copy / "model.keras", copy / "best.keras")
    (copy / "threshold.json").write_text(json.dumps({"threshold": 0.25}))
    best = runs.load_run(str(copy))
    assert best.model_path.endswith("best.keras") and best.threshold == 0.25
    assert runs.load_run(str(copy), which="last").model_path.endswith("model.keras")
    (copy / "threshold.json").write_text("0.75\n")
    assert runs.read_threshold(str(copy)) == 0.75
    with pytest.raises(DataError, match="--which=first"):
        runs.load_run(str(copy), which="first")
    with pytest.raises(DataError, match="no model.keras"):
        runs.load_run(str(tmp_path))
    (copy / "threshold.json").write_text('{"t": 1}')
    with pytest.raises(DataError, match="unreadable threshold"):
        runs.read_threshold(str(copy))


def test_distance_merges_have_no_default_threshold():
    from siamese_research.core.model import build_model

    cosine = build_model(units=2, features=3, merge="cosine")
    assert runs.default_threshold(cosine) is None
    assert runs.default_threshold(build_model(units=2, features=3, merge="dot")) == 0.5
    run = runs.Run(cosine)
    assert run.predict_labels([0.7]) is None
    x = np.random.default_rng(0).standard_normal((3, 4, 3)).astype("float32")
    whole = np.asarray(cosine((x, x[::-1]), training=False)).reshape(-1)
    np.testing.assert_allclose(run.score(x, x[::-1], batch_size=2), whole, atol=1e-6)


def test_a_run_saved_before_the_layers_move_loads_and_scores_as_then():
    """tests/data/run_9bc1254: a tiny text run written by the code of
    9bc1254, before the package moved into layers, with the scores and
    encodings that code gave (expected.json). Today's code loads it (its
    classes' registered names did not move) and gives the same numbers."""
    import json

    folder = os.path.join(ROOT, "tests", "data", "run_9bc1254")
    with open(os.path.join(folder, "expected.json")) as f:
        expected = json.load(f)
    run = runs.load_run(folder, which="last")
    np.testing.assert_allclose(run.score(expected["left"], expected["right"]),
                               expected["scores"], atol=1e-6)
    np.testing.assert_allclose(run.encode(expected["left"]), expected["encodings"],
                               atol=1e-6)
