"""Every bad input the project can meet, as a user meets it through train.py:
exit status 2, one clear line on stderr, no traceback, nothing half-written.

Pair-file inputs (columns, labels, empty files, .npz contents) come from
tests/test_files.py's cases (which also run each as a real process);
checkpoint cases (incompatible, corrupt) are in tests/test_checkpoints.py;
non-finite training (exit 3) in tests/test_nonfinite.py.
"""

import pytest

import test_files
from conftest import run_main, run_train


def _cli(*args):
    """train.py's main() in this process (conftest.run_main): (status, stderr)."""
    proc = run_main(*args)
    return proc.returncode, proc.stderr


class _Proc:
    def __init__(self, code, stderr):
        self.returncode, self.stderr = code, stderr

TINY = ["--num_samples=16", "--timesteps=4", "--features=4", "--units=2", "--epochs=1"]

FLAG_CASES = [
    (["--data=nope"], "--data=nope: unknown data source"),
    (["--data=/no/such/pairs.csv"], "--data=/no/such/pairs.csv: no such file"),
    (["--validation_data=/no/such.csv"], "no such file"),
    (["--epochs=0"], "--epochs=0: must be a positive integer"),
    (["--batch_size=-4"], "--batch_size=-4: must be a positive integer"),
    (["--units=0"], "--units=0"),
    (["--timesteps=0"], "--timesteps=0"),
    (["--features=-1"], "--features=-1"),
    (["--num_samples=0"], "--num_samples=0"),
    (["--steps_per_execution=0"], "--steps_per_execution=0"),
    (["--log_every=0"], "--log_every=0"),
    (["--validation_split=1.0"], "--validation_split=1.0: must be in [0, 1)"),
    (["--validation_split=-0.1"], "--validation_split=-0.1"),
    (["--learning_rate=0"], "--learning_rate=0.0: must be > 0"),
    (["--epochs=abc"], "epochs"),
    (["--no_such_flag=1"], "no_such_flag"),
    (["stray_argument"], "unexpected argument 'stray_argument'"),
    (["--merge=nope"], "--merge=nope: unknown merge; available:"),
    (["--loss=nope"], "--loss=nope: unknown loss; available: bce, contrastive, mse"),
    (["--loss=contrastive", "--merge=concat"], "needs a distance merge"),
    (["--encoder=nope"], "--encoder=nope: unknown encoder; available:"),
    (["--encoder=os:path"], "neither a Layer subclass"),
    (["--encoder=mymodule:Missing"], "cannot import module 'mymodule'"),
    (["--encoder=collections:OrderedDict"], "not a keras.layers.Layer subclass"),
    (["--encoder_args={bad json"], "--encoder_args={bad json: not valid JSON"),
    (["--encoder_args=[1]"], "must be a JSON object"),
    (["--encoder_args={\"nope\": 1}"], "bad --encoder_args"),
    (["--optimizer=nope"], "--optimizer=nope: expected one of"),
    (["--share=both"], "--share=both: expected one of tied, untied"),
    (["--strategy=tpu"], "--strategy=tpu: expected one of"),
    (["--on_nonfinite=ignore"], "--on_nonfinite=ignore"),
    (["--class_weight=auto"], "--class_weight=auto"),
    (["--label_range=5"], "--label_range=5: expected two numbers"),
    (["--label_range=5,1"], "needs lo < hi"),
    (["--mixed_precision=float8"], "--mixed_precision=float8"),
    (["--mixed_precision=mixed_float16"], "--mixed_precision=mixed_float16: needs a GPU"),
    (["--validation_data=README.md"], "only with a pair file as --data"),
    (["--quoting=excel"], "--quoting=excel: expected one of auto, csv, none"),
    (["--embeddings=README.md"], "--embeddings=README.md: needs a text pair file"),
    (["--freeze_embeddings"], "--freeze_embeddings=True: needs a text pair file"),
    # k branches.
    (["--loss=triplet", "--triplets=from_pairs"], "--loss=triplet: needs a distance merge"),
    (["--loss=mnrl", "--merge=dot"], "--loss=mnrl: needs a distance merge"),
    (["--loss=triplet", "--merge=cosine"], "--loss=triplet: trains on (anchor, positive, "
                                           "negative) triplets"),
    (["--triplets=from_pairs"], "--triplets=from_pairs: forms triplets for --loss=triplet"),
    (["--triplets=all", "--loss=triplet"], "--triplets=all: expected one of none, from_pairs"),
    (["--data=random", "--loss=triplet", "--triplets=from_pairs", "--merge=euclidean"],
     "--triplets=from_pairs: needs grouped pairs"),
    (["--loss=mnrl", "--merge=cosine", "--monitor=val_loss"],
     "--monitor=val_loss: --loss=mnrl validates on pairs"),
    (["--loss=mnrl", "--merge=cosine", "--temperature=0"], "--temperature=0.0: must be > 0"),
    (["--loss=mnrl", "--merge=cosine", "--class_weight=balanced"],
     "--class_weight=balanced: weighs pairs by label"),
]


def _assert_one_line_exit_2(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: ")
    assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args,needle", FLAG_CASES, ids=[" ".join(a) for a, _ in FLAG_CASES])
def test_bad_flag(tmp_path, args, needle):
    from siamese_research.core import gpu

    if "--mixed_precision=mixed_float16" in args and gpu.gpu_visible():
        pytest.skip("with a GPU --mixed_precision=mixed_float16 is valid")
    run_dir = tmp_path / "run"
    _assert_one_line_exit_2(_Proc(*_cli(*TINY, *args, f"--run_dir={run_dir}")), needle)
    assert not run_dir.exists()  # nothing half-written


# A few of them again as real processes: exit status, stderr, no traceback
# and no TensorFlow log lines are properties of the process.
@pytest.mark.parametrize("args,needle", [FLAG_CASES[0], FLAG_CASES[14],
                                         FLAG_CASES[26]])
def test_bad_flag_in_a_real_process(tmp_path, args, needle):
    run_dir = tmp_path / "run"
    proc = run_train(*TINY, *args, f"--run_dir={run_dir}", timeout=120)
    _assert_one_line_exit_2(proc, needle)
    assert not run_dir.exists()


def test_run_dir_is_a_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    proc = _Proc(*_cli(*TINY, f"--run_dir={target}"))
    _assert_one_line_exit_2(proc, f"--run_dir={target}: exists and is not a folder")
    assert target.read_text() == "x"


def test_run_dir_below_a_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    proc = _Proc(*_cli(*TINY, f"--run_dir={target}/run"))
    _assert_one_line_exit_2(proc, "cannot write")


def test_run_dir_not_writable(tmp_path):
    # /proc refuses new folders even to root (tests run as root here, where
    # chmod would not stop a write).
    proc = _Proc(*_cli(*TINY, "--run_dir=/proc/siamese-research/run"))
    _assert_one_line_exit_2(proc, "--run_dir=/proc/siamese-research/run: cannot write")


@pytest.mark.parametrize("case", test_files.BAD)
def test_bad_pair_file(tmp_path, case):
    args, needle = test_files._bad_text_files(tmp_path)[case]
    run_dir = tmp_path / "run"
    proc = _Proc(*_cli(*args, f"--run_dir={run_dir}", "--features=8", "--units=4",
                       "--epochs=1", "--batch_size=4"))
    _assert_one_line_exit_2(proc, needle)
    assert not run_dir.exists()


def test_a_loss_the_merge_cannot_serve_is_refused_before_the_data_is_read(tmp_path):
    # A file that fails only when read (no label column): the loss and merge
    # are checked first, so their error is the one the user sees.
    data = tmp_path / "pairs.csv"
    data.write_text("x,y\n1,2\n")
    proc = _Proc(*_cli(*TINY, f"--data={data}", "--loss=contrastive", "--merge=concat",
                       f"--run_dir={tmp_path / 'run'}"))
    _assert_one_line_exit_2(proc, "--loss=contrastive: needs a distance merge")
    assert not (tmp_path / "run").exists()
