"""The SavedModel export: loaded by TensorFlow alone, it scores as load_run does."""

import json
import os
import subprocess
import sys

import numpy as np

from conftest import run_tool
from siamese_research.inference import export
from siamese_research import artifacts as runs

LEFT = ["what is thing1?", "What, is THING2!", "zebra crossing", "thing5 (unseen)",
        "a-b c.d e,f", "Ünïcode  tabs\tand   spaces"]
RIGHT = ["thing1 is a thing", "nothing to see", "zebra", "is thing5", "ab cd ef",
         "ünïcode"]

LOAD = """
import json, sys
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
left, right = json.loads(sys.argv[2]), json.loads(sys.argv[3])
score = m.signatures["score"](left=tf.constant(left), right=tf.constant(right))
enc = m.signatures["encode"](text=tf.constant(left))["encoding"]
assert "siamese_research" not in sys.modules
print(json.dumps({"score": score["score"].numpy().tolist(),
                  "encoding": enc.numpy().tolist()}))
"""


def test_saved_model_scores_as_load_run_without_the_package(text_run, tmp_path):
    out = tmp_path / "exported"
    proc = run_tool("export", f"--run_dir={text_run}", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    # A folder away from the repository: nothing of the package is importable.
    got = subprocess.run([sys.executable, "-c", LOAD, str(out), json.dumps(LEFT),
                          json.dumps(RIGHT)], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=120, env=env)
    assert got.returncode == 0, got.stderr[-2000:]
    served = json.loads(got.stdout.strip().splitlines()[-1])
    run = runs.load_run(str(text_run))
    diff = np.max(np.abs(np.array(served["score"]) - run.score(LEFT, RIGHT)))
    print(f"max |SavedModel - load_run| score difference: {diff:.2e}")
    assert diff <= 1e-5
    np.testing.assert_allclose(served["encoding"], run.encode(LEFT), atol=1e-5)


def test_graph_tokenises_like_the_training_vectorizer(text_run):
    run = runs.load_run(str(text_run))  # oov_buckets=4: hashed unseen words
    module = export.build_module(run)
    texts = LEFT + RIGHT + ["", "!!!", " ".join(["thing1"] * 20)]
    ids = np.asarray(module.inputs(np.array(texts, dtype=object)))
    want = run.token_ids(texts)
    np.testing.assert_array_equal(ids, want[:, :ids.shape[1]])
    assert not want[:, ids.shape[1]:].any()  # only padding was trimmed


def test_float_run_exports_float_signatures(tmp_path):
    import tensorflow as tf

    from siamese_research.core.model import build_model

    run = runs.Run(build_model(units=3, features=5, merge="concat_absdiff_product"))
    export.export_run(run, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    x = np.random.default_rng(1).standard_normal((4, 6, 5)).astype("float32")
    x[0, 4:] = 0  # right padding
    score = loaded.signatures["score"](left=tf.constant(x), right=tf.constant(x[::-1]))
    np.testing.assert_allclose(score["score"].numpy(), run.score(x, x[::-1]), atol=1e-5)
