"""The run folder: one writer at a time, no half-written file, a write fault
is one line with an exit status of its own, and a run stopped by a fault
resumes with the same command (killed anywhere: tests/test_kill_chain.py)."""

import glob
import os
import signal
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from conftest import ROOT, run_main, write_pairs
from siamese_research import artifacts, atomic
from siamese_research.errors import EXIT_WRITE_FAULT, RunFolderBusy, WriteError

TINY = ["--num_samples=48", "--timesteps=6", "--features=8", "--units=4",
        "--batch_size=8", "--epochs=2", "--prototypes=4", "--seed=7",
        "--log_every=2", "--histogram_every=4", "--projector_points=0"]


def _snapshot(folder):
    """{relative path: (size, mtime)} of every file below `folder`."""
    out = {}
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if os.path.isfile(path):
            st = os.stat(path)
            out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def _partials(folder):
    return [p for p in glob.glob(os.path.join(folder, "**", ".*"), recursive=True)
            if atomic.PARTIAL in p or p.endswith("_temp")]


def test_a_second_writer_is_refused_and_the_first_run_is_intact(tmp_path):
    """Run A holds the folder (stopped by SIGSTOP once it said it trains, so
    it is alive whatever the machine's speed); run B, the same command, is
    refused in one line naming A, exit 2, writing nothing; A then finishes."""
    run_dir = str(tmp_path / "run")
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *TINY,
                              f"--run_dir={run_dir}"], cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in first.stdout:  # the lock is taken before this line
            if line.startswith("Training on"):
                break
        first.send_signal(signal.SIGSTOP)
        before = _snapshot(run_dir)
        second = run_main(*TINY, f"--run_dir={run_dir}")
        assert second.returncode == 2, second.stderr
        line = second.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line
        assert f"--run_dir={run_dir}: another run is writing it (pid {first.pid} on " in line
        assert _snapshot(run_dir) == before  # B wrote nothing
    finally:
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(glob.glob(os.path.join(run_dir, "train", "events.*"))) == 1
    assert keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert not _partials(run_dir)
    # Its lock died with it: the same command now resumes (nothing to train).
    again = run_main(*TINY, f"--run_dir={run_dir}", "--verbose=0")
    assert again.returncode == 0, again.stderr


def test_the_lock_is_one_writers_and_readers_ignore_it(text_run, tmp_path):
    held = atomic.FolderLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()} on "):
            atomic.FolderLock(str(tmp_path)).acquire()
    finally:
        held.release()
    atomic.FolderLock(str(tmp_path)).acquire().release()  # free again
    # A run being written can be read: load_run takes no lock.
    with atomic.FolderLock(str(text_run)):
        run = artifacts.load_run(str(text_run))
        assert run.score(["what is thing1?"], ["thing1 is a thing"]).shape == (1,)


def test_replacing_leaves_the_old_file_or_the_new_one(tmp_path):
    path = str(tmp_path / "a.json")
    atomic.write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic.replacing(path) as tmp:
            with open(tmp, "w") as f:
                f.write('{"v": 2')  # half a file, then the writer dies
            raise RuntimeError("killed")
    assert open(path).read() == '{"v": 1}\n' and os.listdir(tmp_path) == ["a.json"]
    # A temporary a killed process left is cleared by the next writer.
    left = tmp_path / f".b{atomic.PARTIAL}123.keras"
    left.write_text("part")
    assert atomic.remove_partials(str(tmp_path)) == [str(left)]
    assert os.listdir(tmp_path) == ["a.json"]


# The run's files in the order a run writes them, each failed once by an
# injected ENOSPC on its rename into place; `checkpoint` is TensorFlow's
# save. Each failed run is resumed by the next with the same command.
FAULTS = [("config.json", None), ("vectorizer.json", None), ("best.keras", None),
          ("best.json", None), ("threshold.json", None), ("checkpoint", None),
          ("model.keras", "ckpt"), ("encoder.keras", "ckpt")]


def test_a_write_fault_at_each_file_is_one_line_exit_4_and_resumable(tmp_path,
                                                                     monkeypatch):
    run_dir = str(tmp_path / "run")
    args = [*TINY, "--encoder=conv1d", f"--data={write_pairs(tmp_path / 'pairs.csv')}",
            "--max_tokens=50",
            "--max_length=8", "--validation_split=0.34", f"--run_dir={run_dir}",
            "--verbose=0"]
    replace = atomic.os.replace
    save = tf.train.CheckpointManager.save

    def full_disk(name):
        def fail_replace(src, dst):
            if os.path.basename(dst) == name:
                raise OSError(28, "No space left on device", dst)
            return replace(src, dst)

        def fail_save(self, *a, **k):
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
        monkeypatch.setattr(atomic.os, "replace", fail_replace)
        if name == "checkpoint":
            monkeypatch.setattr(tf.train.CheckpointManager, "save", fail_save)

    for name, kept in FAULTS:
        full_disk(name)
        proc = run_main(*args)
        monkeypatch.setattr(atomic.os, "replace", replace)
        monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
        assert proc.returncode == EXIT_WRITE_FAULT, (name, proc.stderr)
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert line.startswith(f"error: cannot write {run_dir}/") and name in line
        assert "No space left on device" in line
        if kept:
            latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
            assert f"the last complete checkpoint, {latest}, is kept" in line
        else:
            assert "no checkpoint was written yet" in line, line
        assert not _partials(run_dir), (name, _partials(run_dir))
        if name.endswith(".keras"):  # never a part of a model on disk
            path = os.path.join(run_dir, name)
            assert not os.path.exists(path) or keras.saving.load_model(path)
    done = run_main(*args)
    assert done.returncode == 0, done.stderr
    assert artifacts.read_threshold(run_dir) is not None  # threshold.json, whole
    assert artifacts.load_run(run_dir).model and os.path.exists(
        os.path.join(run_dir, "encoder.keras"))


def test_write_error_says_where_to_resume():
    error = WriteError("runs/x/best.keras", "Read-only file system")
    assert str(error.with_checkpoint("runs/x/checkpoints/ckpt-4")) == (
        "cannot write runs/x/best.keras (Read-only file system); the last complete "
        "checkpoint, runs/x/checkpoints/ckpt-4, is kept: run the same command to "
        "resume once there is room")



def test_tensorflows_own_write_faults_are_write_errors(tmp_path, monkeypatch):
    """A full disk under TensorFlow's writers raises its own errors, not an
    OSError: a summary writer's flush and an event file's cut say which
    files could not be written."""
    from siamese_research.core import model as M
    from siamese_research.summaries import events
    from siamese_research.train.trainer import Trainer

    class FullDisk:
        def flush(self):
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    trainer = Trainer(M.build_model(features=8, units=4),
                      loss_fn=keras.losses.BinaryCrossentropy(),
                      optimizer=keras.optimizers.SGD(0.1), verbose=0)
    trainer._writers = {"train": FullDisk()}
    with pytest.raises(WriteError, match="cannot write the train event files "
                                         r"\(No space left on device\)"):
        trainer.flush()
    from tensorboard.compat.proto import event_pb2, summary_pb2

    path = str(tmp_path / "events.out.tfevents.1.host.2.v2")
    event = event_pb2.Event(step=5, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="loss", simple_value=1.0)]))
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(event.SerializeToString())

    def refusing(*a, **k):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    monkeypatch.setattr(tf.io, "TFRecordWriter", refusing)
    with pytest.raises(WriteError, match="No space left on device"):
        events.cut_after([path], -1)  # drops step 5: the file is rewritten
    assert not atomic.remove_partials(str(tmp_path))  # nothing left behind
    assert os.path.getsize(path) > 0  # the old file, whole


def test_a_finished_run_run_again_writes_each_tag_once(tmp_path):
    """The same command on a finished run folder resumes at its end: it
    trains nothing, and what its finish writes again (the run graph) is
    written in place of the earlier copy, not beside it."""
    import collections

    from tensorboard.backend.event_processing import event_file_loader

    from conftest import tiny
    from siamese_research import runner as training

    run_dir = str(tmp_path / "run")
    first = training.run(tiny(run_dir=run_dir, projector_points=0))
    again = training.run(tiny(run_dir=run_dir, projector_points=0))
    assert again["step"] == first["step"]
    seen = collections.Counter()
    for path in glob.glob(os.path.join(run_dir, "train", "events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                seen[(value.tag, event.step)] += 1
    assert seen[("__run_graph__", 0)] == 1
    assert [k for k, n in seen.items() if n > 1] == []
