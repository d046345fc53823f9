"""Checkpoints, exact resume after a real signal, determinism."""

import collections
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research import runner as training
from conftest import ROOT, run_main, run_train, tiny

# 240 train pairs / batch 8 = 30 steps per epoch, 2 epochs = 60 steps.
LONG = ["--num_samples=300", "--timesteps=6", "--features=8", "--units=4",
        "--batch_size=8", "--epochs=2", "--steps_per_execution=1", "--log_every=3",
        "--histogram_every=12", "--checkpoint_every=3", "--seed=11"]
TOTAL_STEPS = 60


def _weights(run_dir):
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    return [v.numpy() for v in model.trainable_variables]


def _tag_steps(folder):
    """Counter of (tag, step) over every event file in `folder`."""
    seen = collections.Counter()
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                seen[(value.tag, event.step)] += 1
    return seen


@pytest.fixture(scope="module")
def interrupted_and_resumed(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    run_dir = str(base / "run")
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *LONG,
                             f"--run_dir={run_dir}"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = os.path.join(run_dir, "checkpoints", "checkpoint")
    deadline = time.monotonic() + 240
    try:
        # Bounded poll for the first checkpoint: training is under way.
        while not os.path.exists(marker):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    first = (proc.returncode, out, err, latest)
    resumed = run_train(*LONG, f"--run_dir={run_dir}")
    straight = run_train(*LONG, f"--run_dir={base / 'straight'}")
    return run_dir, str(base / "straight"), first, resumed, straight


def test_sigint_saves_and_says_how_to_resume(interrupted_and_resumed):
    run_dir, _, (code, out, err, latest), _, _ = interrupted_and_resumed
    assert code == 130, err
    assert "Interrupted by SIGINT at step" in err
    assert f"--run_dir={run_dir}" in err and "Traceback" not in err
    step = int(err.split("at step ")[1].split(";")[0])
    assert 3 <= step < TOTAL_STEPS and step % 30  # mid-epoch
    assert latest.endswith(f"ckpt-{step}")


def test_resume_reaches_the_planned_total(interrupted_and_resumed):
    run_dir, _, _, resumed, straight = interrupted_and_resumed
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout
    assert f"Finished {TOTAL_STEPS} steps" in resumed.stdout
    assert straight.returncode == 0, straight.stderr


def test_resumed_weights_equal_uninterrupted(interrupted_and_resumed):
    """Same seed, same data order (a function of seed and epoch), optimizer
    slots restored: the resumed run ends on the uninterrupted run's weights."""
    run_dir, straight_dir, _, _, _ = interrupted_and_resumed
    for a, b in zip(_weights(run_dir), _weights(straight_dir)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_every_tag_step_once_across_event_files(interrupted_and_resumed):
    run_dir, straight_dir, (_, _, err, _), _, _ = interrupted_and_resumed
    resumed_at = int(err.split("at step ")[1].split(";")[0]) + 1
    for sub in ("train", "validation"):
        resumed = _tag_steps(os.path.join(run_dir, sub))
        straight = _tag_steps(os.path.join(straight_dir, sub))
        assert len(glob.glob(os.path.join(run_dir, sub, "events.*"))) >= 2 or sub == \
            "validation"
        dupes = {k: n for k, n in resumed.items() if n > 1}
        assert not dupes, sorted(dupes)[:5]
        # Every step the straight run wrote, the interrupted and resumed pair
        # wrote too; besides, the resumed process shows its own first step.
        assert set(straight) <= set(resumed), sorted(set(straight) - set(resumed))[:5]
        extra = set(resumed) - set(straight)
        assert {step for _, step in extra} <= {resumed_at}, sorted(extra)[:5]
        if sub == "train" and resumed_at % 3:  # not a log step of its own
            assert ("branch_gradients/sum_error", resumed_at) in extra


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run (checkpoints every 2 steps); a test that
    changes it works on a copy (`_copy`)."""
    run_dir = str(tmp_path_factory.mktemp("finished") / "run")
    training.run(tiny(run_dir=run_dir, checkpoint_every=2))
    return run_dir


def _copy(run_dir, tmp_path) -> str:
    copy = str(tmp_path / "run")
    shutil.copytree(run_dir, copy)
    return copy


def test_incompatible_checkpoint_and_restart(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    base = ["--num_samples=48", "--timesteps=6", "--features=8", "--batch_size=8",
            "--epochs=2", "--prototypes=4", "--seed=7", f"--run_dir={run_dir}"]
    bad = run_main(*base, "--units=8")
    assert bad.returncode == 2
    line = bad.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "checkpoints is incompatible" in line and "units=4 in the checkpoint, 8 now" in line
    assert "--restart" in line
    again = run_main(*base, "--units=8", "--restart", "--verbose=0")
    assert again.returncode == 0, again.stderr
    assert "Resuming" not in again.stdout
    # --restart dropped the old run's best: best.keras is the new model's.
    best = keras.saving.load_model(os.path.join(run_dir, "best.keras"))
    assert best.encoder.core.units == 8


def _corrupt(checkpoint):
    for path in glob.glob(checkpoint + ".data-*"):
        with open(path, "wb") as f:
            f.write(b"not a checkpoint")


CORRUPT_ARGS = ["--num_samples=48", "--timesteps=6", "--features=8", "--units=4",
                "--batch_size=8", "--epochs=3", "--prototypes=4", "--seed=7"]


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(finished_run,
                                                                   tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    state = tf.train.get_checkpoint_state(os.path.join(run_dir, "checkpoints"))
    latest, before = state.all_model_checkpoint_paths[-1:-3:-1]
    _corrupt(latest)
    proc = run_main(*CORRUPT_ARGS, f"--run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "Traceback" not in proc.stderr
    assert f"checkpoint {latest} cannot be restored" in warning[0]
    assert f"resuming from {before}" in warning[0]
    assert f"Resuming from {before}" in proc.stdout


def test_a_newest_checkpoint_without_its_index_falls_back_too(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    state = tf.train.get_checkpoint_state(os.path.join(run_dir, "checkpoints"))
    latest, before = state.all_model_checkpoint_paths[-1:-3:-1]
    os.remove(latest + ".index")
    proc = run_main(*CORRUPT_ARGS, f"--run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert f"checkpoint {latest} cannot be restored" in proc.stderr
    assert f"Resuming from {before}" in proc.stdout


def test_corrupt_checkpoints_name_the_newest(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    state = tf.train.get_checkpoint_state(os.path.join(run_dir, "checkpoints"))
    for checkpoint in state.all_model_checkpoint_paths:
        _corrupt(checkpoint)
    latest = state.model_checkpoint_path
    before = sorted(glob.glob(os.path.join(run_dir, "*", "events.*")))
    proc = run_main(*CORRUPT_ARGS, f"--run_dir={run_dir}")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert latest in proc.stderr and "--restart" in proc.stderr
    # The refused run left no event file of its own.
    assert sorted(glob.glob(os.path.join(run_dir, "*", "events.*"))) == before


def test_deterministic_runs_are_identical(tmp_path):
    """Bit-identical weights over runs that cross log, check and histogram
    steps (a log step is where the in-graph clock once broke determinism)."""
    from conftest import read_tags

    args = ["--num_samples=48", "--timesteps=6", "--features=8", "--units=4",
            "--batch_size=8", "--epochs=2", "--deterministic", "--seed=5",
            "--log_every=2", "--grad_check_every=3", "--histogram_every=4"]
    # Both runs in one process (one TensorFlow start-up), each from scratch.
    code = ("import sys; from siamese_research.tools.train import main; "
            "base, flags = sys.argv[1], sys.argv[2:]; "
            "sys.exit(main(['train.py', *flags, f'--run_dir={base}/a']) "
            "or main(['train.py', *flags, f'--run_dir={base}/b']))")
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    finals = [line for line in proc.stdout.splitlines() if line.startswith("Final:")]
    assert len(finals) == 2 and finals[0] == finals[1]
    tags, _ = read_tags(str(tmp_path / "a" / "train"))
    assert tags["samples_per_second"] == [1, 2, 4, 6, 8, 10]  # 10 steps
    assert tags["branch_gradients/sum_error"] == [1, 3, 6, 9, 10]
    assert tags["weights/siamese/encoder/lstm/lstm_cell/kernel"] == [1, 4, 8, 10]
    for x, y in zip(_weights(tmp_path / "a"), _weights(tmp_path / "b")):
        np.testing.assert_array_equal(x, y)
