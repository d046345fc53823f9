"""A run killed anywhere resumes exactly (the harness: tests/_kill_chain.py)."""

import json
import os
import signal
import subprocess
import sys

from conftest import ROOT


def test_killed_anywhere_a_run_resumes_to_the_same_weights(tmp_path):
    """tests/_kill_chain.py: one run SIGKILLed at 23 points in turn (mid-write
    of each file the run writes, before and after checkpoints and summary
    writes, after compiled calls and validation), each time resumed by a new
    process with the same command, then finished: its weights equal an
    uninterrupted run's to the bit, and every (tag, step) is written once."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_kill_chain.py"),
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["points"]) >= 20
    assert all(code == -signal.SIGKILL for _, _, code in out["points"]), out["points"]
    assert out["finished"] == 0 and out["reference"] == 0
    assert out["largest_difference"] == 0.0
    assert out["twice"] == {"train": [], "validation": []}
    assert out["missing"] == {"train": [], "validation": []}
    assert out["partials"] == []
