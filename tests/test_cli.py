"""train.py as a user runs it (bad input: tests/test_bad_input.py)."""

from conftest import run_main, run_train

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
    proc = run_main("--helpfull")
    assert proc.returncode == 0
    for flag in ("--data", "--merge", "--steps_per_execution", "--grad_check_every"):
        assert flag in proc.stdout


def test_the_run_tools_share_their_run_flags():
    """--run_dir, --which (best or last, nothing else) and --batch_size come
    from one definition (cli.define_run_flags) in every tool."""
    import pytest
    from absl import flags

    from siamese_research.tools import cli
    from siamese_research.tools import encode
    from siamese_research.tools import evaluate
    from siamese_research.tools import export
    from siamese_research.tools import predict
    from siamese_research.tools import search

    for module in (encode, evaluate, export, predict, search):
        fv = module.define_flags()
        assert fv["which"].default == "best", module.__name__
        with pytest.raises(flags.IllegalFlagValueError):
            fv["which"].parse("first")
        assert fv["run_dir"].default is None
    fv = predict.define_flags()
    fv(["predict", "--batch_size=0"])
    with pytest.raises(SystemExit) as e:
        cli.require_positive(fv, "batch_size")
    assert e.value.code == 2
