"""tf.distribute: MirroredStrategy on 2 logical CPUs, MultiWorkerMirroredStrategy
with 2 local processes. Each runs in fresh processes (device setup and
collectives must be configured before TensorFlow initialises)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "tests", "_distributed.py")


def _env(**extra):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def test_mirrored_matches_one_device(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "mirrored", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, mirrored = out["one"], out["mirrored"]
    assert mirrored["replicas"] == 2 and one["replicas"] == 1
    # Same global batch: same loss (no double division by replicas) and
    # the same updated weights.
    assert abs(one["loss"] - mirrored["loss"]) <= 1e-5
    for a, b in zip(one["weights"], mirrored["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    # A last batch too short to give every replica a row still trains.
    assert out["remainder"] == {"step": 2, "finite": True, "step_2_moved": True}
    # The accuracy a view step shows is over every replica's pairs, as the
    # metric's own read is (each replica keeps its half of the counts).
    assert mirrored["logged_accuracy"] == {"1": mirrored["accuracy"]}
    assert mirrored["accuracy"] == one["accuracy"]
    # The branch check held on each replica's own half-batch.
    assert len(mirrored["sum_errors"]) == 2
    assert all(0 <= e <= 1e-6 for e in mirrored["sum_errors"])


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_processes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run_dirs = [tmp_path / "chief", tmp_path / "worker1"]
    procs = []
    try:
        for i in range(2):
            tf_config = json.dumps({"cluster": cluster,
                                    "task": {"type": "worker", "index": i}})
            procs.append(subprocess.Popen(
                [sys.executable, SCRIPT, "worker", str(run_dirs[i])],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=_env(TF_CONFIG=tf_config)))
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r["step"] for r in results] == [7, 7]  # 51 train pairs / batch 8
    np.testing.assert_allclose(results[0]["weights"], results[1]["weights"], rtol=1e-6)
    # Only the chief (worker 0) writes the run folder.
    for name in ("train", "checkpoints", "model.keras", "config.json"):
        assert (run_dirs[0] / name).exists(), name
    assert not run_dirs[1].exists()
    # The chief wrote each view step once, calls holding several of them.
    from conftest import read_tags

    tags, _ = read_tags(str(run_dirs[0] / "train"))
    assert tags["loss"] == [1, 2, 4, 6, 7]
    assert tags["branch_gradients/sum_error"] == [1, 2, 4, 6, 7]
    assert all(len(steps) == len(set(steps)) for steps in tags.values())


def test_mirrored_on_one_device_trains_past_log_and_check_steps(tmp_path):
    """MirroredStrategy over ONE device (one GPU, or here the one CPU): its
    apply_gradients makes a merge_call, which once crashed inside the
    tf.cond of the one-replica path at the first step."""
    from siamese_research import runner as training
    from conftest import read_tags, tiny

    result = training.run(tiny(strategy="mirrored", run_dir=str(tmp_path), log_every=2,
                               grad_check_every=2, histogram_every=3,
                               projector_points=0))
    assert result["exit_code"] == 0
    assert result["step"] == 10  # 36 train pairs / 8 = 5 steps x 2 epochs
    assert result["max_sum_error"] <= 1e-6
    tags, _ = read_tags(str(tmp_path / "train"))
    assert tags["branch_gradients/sum_error"] == [1, 2, 4, 6, 8, 10]
    assert np.isfinite(result["final"]["loss"])
