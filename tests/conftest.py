"""Shared fixtures: tiny deterministic configs and a train.py runner."""

import os
import subprocess
import sys

import pytest

# Two test workers (and the processes some tests start) share the two cores:
# one thread per op and one op at a time in each worker, and OpenBLAS on one
# thread (its idle workers spin; docs/performance.md), instead of every
# process's thread pools spinning against each other. Not a behaviour any
# test reads: the thread defaults a user gets are tested in fresh processes.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_cli():
    """The package's `quiet` module, read from its file without the package's
    `__init__` (which imports TensorFlow)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_siamese_research_quiet", os.path.join(ROOT, "siamese_research", "quiet.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# This test process's own TensorFlow logs stay off the console, as a tool's
# do (TF_CPP_MIN_LOG_LEVEL=3 unless set, and the import's absl lines that
# ignore it); subprocess tests run as a user would (run_train drops it).
_load_cli().import_tensorflow_quietly()
import keras  # noqa: E402
import siamese_research  # noqa: E402,F401
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def tiny(**overrides):
    """The real Config, shrunk: 48 pairs of 4-6 steps x 8 features."""
    from siamese_research.config import Config

    base = dict(num_samples=48, timesteps=6, features=8, units=4, batch_size=8,
                epochs=2, validation_split=0.25, log_every=2, grad_check_every=2,
                histogram_every=4, steps_per_execution=3, prototypes=4, verbose=0, seed=7)
    base.update(overrides)
    return Config(**base)


def run_train(*args, cwd=None, timeout=300, env=None):
    """Runs `python train.py ARGS` like a user; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                          cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def run_main(*args, main=None):
    """train.py's main() (or another tool's `main`) in this process: the
    same code path as the command line, without a process start (and
    TensorFlow's import) per case. Returns a CompletedProcess-like object
    (returncode, stdout, stderr)."""
    import contextlib
    import io
    import types

    if main is None:
        from siamese_research.tools.train import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(["tool", *args])
        except SystemExit as e:
            code = e.code
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(),
                                 stderr=err.getvalue())


class Probe(keras.callbacks.Callback):
    """A test's hook into `Trainer.fit`, through the loop's one hook system:
    `on_call(global step)` after each compiled call; `stop()`, polled after
    each call and epoch, interrupts the run as a signal would; with
    `step_interval`, calls end at its multiples."""

    reads_batch_logs = False

    def __init__(self, on_call=None, stop=None, step_interval=0):
        super().__init__()
        self.on_call, self.stop, self.step_interval = on_call, stop, step_interval

    def on_train_batch_end(self, batch, logs=None):
        if self.on_call is not None:
            self.on_call(self.model.global_step)
        self.on_epoch_end(None)

    def on_epoch_end(self, epoch, logs=None):
        if self.stop is not None and self.stop():
            self.model.interrupted = True


@pytest.fixture
def tiny_config():
    return tiny


def read_tags(folder):
    """{tag: [steps]} of every tensor summary (scalars, histograms, text) in
    `folder`'s event files, and the EventAccumulator for their values."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(folder, size_guidance={ea.TENSORS: 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}, acc


def write_image_folder(path, classes=3, per_class=6, size=(8, 8), channels=1, seed=0):
    """A tiny folder of class folders of PNGs: class c is a bright square
    at its own place (a step along the diagonal) on faint noise, so a conv
    encoder can tell the classes apart. Returns the folder's path."""
    import numpy as np

    rng = np.random.default_rng(seed)
    height, width = size
    for c in range(classes):
        folder = os.path.join(str(path), f"class_{c}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 40, (height, width, channels))
            top, left = (c * 2) % (height - 2), (c * 3) % (width - 2)
            image[top:top + 3, left:left + 3] = 200 + rng.integers(0, 55)
            png = tf.io.encode_png(image.astype(np.uint8))
            tf.io.write_file(os.path.join(folder, f"{i}.png"), png)
    return str(path)


def write_pairs(path, questions=6):
    """A tiny question/answer pair file: per question one answer that repeats
    its rare word (label 1) and two that do not (label 0)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["q", "label", "a"])
        for i in range(questions):
            w.writerow([f"what is thing{i}?", 1, f"thing{i} is a thing, surely"])
            w.writerow([f"what is thing{i}?", 0, "nothing to see"])
            w.writerow([f"what is thing{i}?", 0, f"other{i} words"])
    return str(path)


@pytest.fixture(scope="session")
def text_run(tmp_path_factory):
    """ONE tiny trained text run (a folder), shared by the tests of the tools
    that use a run (runs, predict, encode, search, export)."""
    from siamese_research import runner as training

    tmp = tmp_path_factory.mktemp("text_run")
    config = tiny(data=write_pairs(tmp / "train.csv"), run_dir=str(tmp / "run"),
                  epochs=1, batch_size=8, validation_split=0.34, max_tokens=50,
                  max_length=8, oov_buckets=4, projector_points=0)
    assert training.run(config)["exit_code"] == 0
    return tmp / "run"


def run_tool(tool, *args, timeout=120, console_script=None):
    """Runs `python -m siamese_research.tools.<tool> ARGS` like a user (TensorFlow's
    log level unset); with `console_script` (a folder), through a wrapper
    named `siamese-<tool>` there, written as pip writes console scripts."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    if console_script is None:
        cmd = [sys.executable, "-m", f"siamese_research.tools.{tool}", *args]
    else:
        script = os.path.join(str(console_script), f"siamese-{tool}")
        with open(script, "w") as f:
            f.write("import re\nimport sys\n"
                    f"from siamese_research.tools.{tool} import main\n"
                    "if __name__ == '__main__':\n"
                    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', "
                    "sys.argv[0])\n"
                    "    sys.exit(main())\n")
        cmd = [sys.executable, script, *args]
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)

