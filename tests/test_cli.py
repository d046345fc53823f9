"""train.py as a user runs it: bad input gives one line and exit status 2."""

import os

import pytest

from conftest import run_train

BAD = [
    (["--data=nope"], "--data=nope"),
    (["--data=/no/such/pairs.csv"], "no such file"),
    (["--epochs=0"], "--epochs=0"),
    (["--batch_size=-4"], "--batch_size=-4"),
    (["--units=0"], "--units=0"),
    (["--timesteps=0"], "--timesteps=0"),
    (["--features=-1"], "--features=-1"),
    (["--validation_split=1.0"], "--validation_split=1.0"),
    (["--validation_split=-0.1"], "--validation_split=-0.1"),
    (["--epochs=abc"], "epochs"),
    (["--merge=nope"], "--merge=nope"),
    (["--no_such_flag=1"], "no_such_flag"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[a[0] for a, _ in BAD])
def test_bad_flag_is_one_line_exit_2(tmp_path, args, needle):
    run_dir = tmp_path / "run"
    proc = run_train(*args, f"--run_dir={run_dir}", "--num_samples=16", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists()  # nothing half-written


def test_run_dir_that_is_a_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    proc = run_train(f"--run_dir={target}", "--num_samples=16", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --run_dir={target}: exists and is not a folder"]
    assert target.read_text() == "x"


def test_tiny_run_prints_last_words_and_no_log_spam(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_train("--num_samples=40", "--timesteps=6", "--features=8", "--units=4",
                     "--epochs=1", "--batch_size=8", f"--run_dir={run_dir}",
                     "--log_every=2", "--histogram_every=4")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Training on CPU:0" in out
    assert "encoder 208, counted once, called by 2 branches" in out
    assert "Branch check: left + right = total, max relative error" in out
    assert f"tensorboard --logdir {run_dir}" in out
    # No TensorFlow C++ or Python log lines on the console.
    for noise in ("I0000", "W0000", "E0000", "absl::InitializeLog", "oneDNN"):
        assert noise not in proc.stderr + out, noise
    assert (run_dir / "command.txt").read_text().split()[1:3] == [
        "--num_samples=40", "--timesteps=6"]


def test_help_lists_flags():
    proc = run_train("--helpfull", timeout=120)
    assert proc.returncode == 0
    for flag in ("--data", "--merge", "--steps_per_execution", "--grad_check_every"):
        assert flag in proc.stdout
