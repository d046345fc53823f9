"""`python -m benchmarks.bench --startup`: what a user lives, whole
processes, start-up included.

Every job is a fresh `python` process, timed from its start to its exit
(TensorFlow's import, data, tracing, training, saving: all of it), and the
jobs run interleaved, round by round, so that load from elsewhere spreads
over all of them; each job reports its median and range, and its peak
resident memory (`/usr/bin/time`'s maximum resident set size, median).

* `train.py`, the notebook's job for one epoch: `--data=random --merge=concat
  --num_samples=1000 --timesteps=10 --epochs=1 --validation_split=0`,
  defaults otherwise (its diagnostics and TensorBoard writing included).
* `fit`, the same job: the notebook's functional model (one `LSTM(32)`
  called on both inputs, `concat`, `Dense(1, sigmoid)`, RMSprop, binary
  cross-entropy) with `model.fit`, batch 64, in a process that imports only
  numpy and Keras.
* `train.py` at its defaults (`python train.py`: 8,000 synthetic pairs of
  5-20 steps, 300 steps of batch 64, validated each epoch), and `fit` on a
  job of the same shape (6,400 random pairs of 20 steps to train, 1,600 to
  validate, 3 epochs).
* With `--whole_job`: 32,000 random pairs x 8 epochs, batch 64, T = 10,
  no validation: `train.py`, `fit` at its default `steps_per_execution`
  (1) and at 20, and, when PyTorch is installed, the same model in a plain
  PyTorch loop.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from benchmarks import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PY = os.path.join(ROOT, "train.py")

NOTEBOOK_JOB = ["--data=random", "--merge=concat", "--num_samples=1000", "--timesteps=10",
                "--epochs=1", "--validation_split=0"]
WHOLE_JOB = ["--data=random", "--merge=concat", "--num_samples=32000", "--timesteps=10",
             "--epochs=8", "--validation_split=0"]

# The notebook's model with model.fit, in a process that imports nothing of
# this project. The data is drawn as `data.builtin.random_pairs` draws it.
FIT = """
import sys
import numpy as np
import keras
n, epochs, spe = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t, split = (int(sys.argv[4]), float(sys.argv[5])) if len(sys.argv) > 5 else (10, 0.0)
keras.utils.set_random_seed(42)
rng = np.random.default_rng(42)
left = rng.random((n, t, 128), dtype=np.float32)
right = rng.random((n, t, 128), dtype=np.float32)
label = rng.integers(0, 2, n).astype(np.float32)
a = keras.Input((None, 128)); b = keras.Input((None, 128))
lstm = keras.layers.LSTM(32)
merged = keras.layers.concatenate([lstm(a), lstm(b)])
out = keras.layers.Dense(1, activation="sigmoid")(merged)
model = keras.Model([a, b], out)
model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="binary_crossentropy",
              metrics=["accuracy"], steps_per_execution=spe)
model.fit([left, right], label, batch_size=64, epochs=epochs, verbose=0,
          validation_split=split)
"""

# The same model and loop in PyTorch (RMSprop with Keras's rho and epsilon).
TORCH = """
import sys
import numpy as np
import torch
n, epochs = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(42)
rng = np.random.default_rng(42)
left = torch.from_numpy(rng.random((n, 10, 128), dtype=np.float32))
right = torch.from_numpy(rng.random((n, 10, 128), dtype=np.float32))
label = torch.from_numpy(rng.integers(0, 2, n).astype(np.float32))
lstm = torch.nn.LSTM(128, 32, batch_first=True)
head = torch.nn.Linear(64, 1)
params = list(lstm.parameters()) + list(head.parameters())
opt = torch.optim.RMSprop(params, lr=1e-3, alpha=0.9, eps=1e-7)
loss_fn = torch.nn.BCEWithLogitsLoss()
for epoch in range(epochs):
    order = torch.randperm(n)
    for i in range(0, n, 64):
        idx = order[i:i + 64]
        h_l = lstm(left[idx])[1][0][-1]
        h_r = lstm(right[idx])[1][0][-1]
        loss = loss_fn(head(torch.cat([h_l, h_r], -1)).squeeze(-1), label[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
"""


def jobs(whole_job: bool) -> Dict[str, List[str]]:
    """{name: command} of the start-up benchmark."""
    py = sys.executable
    out = {
        "notebook, 1 epoch: train.py": [py, TRAIN_PY, *NOTEBOOK_JOB],
        "notebook, 1 epoch: fit": [py, "-c", FIT, "1000", "1", "1"],
        "python train.py (defaults)": [py, TRAIN_PY],
        "defaults' job (300 steps): fit": [py, "-c", FIT, "8000", "3", "1", "20", "0.2"],
    }
    if whole_job:
        out.update({
            "32,000 x 8: train.py": [py, TRAIN_PY, *WHOLE_JOB],
            "32,000 x 8: fit (steps_per_execution=1)": [py, "-c", FIT, "32000", "8", "1"],
            "32,000 x 8: fit (steps_per_execution=20)": [py, "-c", FIT, "32000", "8", "20"],
        })
        if _has_torch():
            out["32,000 x 8: PyTorch"] = [py, "-c", TORCH, "32000", "8"]
    return out


def _has_torch() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return probe.returncode == 0


def run(*, rounds: int = 3, whole_job: bool = False, quiet: bool = False) -> dict:
    """Runs every job `rounds` times, interleaved; returns their wall times."""
    todo = jobs(whole_job)  # (once: finding PyTorch starts a process)
    times: Dict[str, List[float]] = {name: [] for name in todo}
    peaks: Dict[str, List[float]] = {name: [] for name in todo}
    timer = ["/usr/bin/time", "-f", "peak_kb=%M"] if os.path.exists("/usr/bin/time") else []
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for i, (name, command) in enumerate(todo.items()):
                if command[1] == TRAIN_PY:
                    command = command + [f"--run_dir={tmp}/{r}-{i}", "--verbose=0"]
                start = time.perf_counter()
                proc = subprocess.run(timer + command, cwd=tmp, env=env,
                                      capture_output=True, text=True)
                seconds = time.perf_counter() - start
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
                times[name].append(seconds)
                peak = [line for line in proc.stderr.splitlines() if line.startswith("peak_kb=")]
                if peak:
                    peaks[name].append(int(peak[-1].split("=")[1]) / 1024)
                if not quiet:
                    print(f"round {r + 1}/{rounds}: {name}: {seconds:.1f} s"
                          + (f", peak {peaks[name][-1]:,.0f} MB" if peak else ""), flush=True)
    return {"times": times, "peaks": peaks, "rounds": rounds}


def table(result: dict, machine: Optional[dict] = None) -> str:
    """Medians, ranges and the ratios the targets are stated in."""
    times = result["times"]
    med = {name: statistics.median(t) for name, t in times.items()}
    peaks = result.get("peaks", {})
    peak = {name: statistics.median(p) for name, p in peaks.items() if p}
    lines = ["| job (a fresh process each, start-up included) | wall s (median) | range "
             "| peak RSS MB (median) |", "| --- | ---: | ---: | ---: |"]
    for name, t in times.items():
        mb = f"{peak[name]:,.0f}" if name in peak else "-"
        lines.append(f"| {name} | {med[name]:.1f} | {min(t):.1f}-{max(t):.1f} | {mb} |")

    def ratio(a, b):
        return med[a] / med[b] if a in med and b in med else None

    lines += ["", f"- notebook job, 1 epoch: train.py / fit = "
              f"**{ratio('notebook, 1 epoch: train.py', 'notebook, 1 epoch: fit'):.2f}x** "
              f"(target <= 1.3x)",
              f"- `python train.py` at its defaults: "
              f"**{med['python train.py (defaults)']:.1f} s** (target <= 12 s)"]
    defaults, fit = "python train.py (defaults)", "defaults' job (300 steps): fit"
    if fit in med:
        lines.append(f"- `python train.py` at its defaults / `fit` on the same job: "
                     f"**{ratio(defaults, fit):.2f}x** in time (target <= 1.5x)"
                     + (f", **{peak[defaults] / peak[fit]:.2f}x** in peak memory "
                        f"(target <= 1.2x)" if defaults in peak and fit in peak else ""))
    whole = "32,000 x 8: train.py"
    if whole in med:
        for other, target in (("32,000 x 8: fit (steps_per_execution=1)", 1.5),
                              ("32,000 x 8: fit (steps_per_execution=20)", 1.10),
                              ("32,000 x 8: PyTorch", 1.10)):
            if other in med:
                speed = med[other] / med[whole]
                lines.append(f"- 32,000 x 8: train.py is **{speed:.2f}x** as fast as "
                             f"{other.split(': ')[1]} (target >= {target}x)")
    if machine:
        lines += ["", f"Machine: {machine['cpu']}, {machine['cores']} cores, "
                  f"{machine['gpus']} GPUs; TensorFlow {machine['tensorflow']}, Keras "
                  f"{machine['keras']}, Python {machine['python']}; {machine['date']}; "
                  f"load average before {machine['load_before']}, after "
                  f"{machine['load_after']}. {result['rounds']} rounds, jobs interleaved."]
    return "\n".join(lines)


def main(rounds: int, whole_job: bool, markdown: Optional[str],
         argv: Sequence[str]) -> int:
    before = report.loadavg()
    result = run(rounds=rounds, whole_job=whole_job)
    text = table(result, report.machine(before, report.loadavg()))
    print(text)
    if markdown:
        command = "python -m benchmarks.bench " + " ".join(argv)
        report.write_markdown(markdown, f"`{command.strip()}`\n\n{text}",
                             markers=("<!-- startup:start -->", "<!-- startup:end -->"))
    return 0
