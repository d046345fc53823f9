"""`python -m benchmarks.cached_mnrl`: the cached in-batch loss
(`--mini_batch_size`, GradCache) against plain mnrl, as a user lives it.

Each row is one `python train.py` process, start-up included, run one after
another (nothing else on the machine): its wall seconds, its peak resident
memory (the child's `ru_maxrss`, what `/usr/bin/time -v` reports as
"Maximum resident set size"), the training loop's own seconds and steps
("Finished N steps in S s"), and its final train loss (cached and plain at
the same batch train the same model: the same loss to the printed digits).

Two workloads, each plain and cached (chunks of 32) at batch 256 and at
batch 1024, and plain at batch 32 (the memory a chunk of 32 approaches):

* text: MSRP's 2,407 positive pairs, a one-layer transformer(256) over
  256-wide embeddings, one epoch; short sentences, so activations are a
  small part of the process;
* long: synthetic float sequences of 200 steps x 32 features (4,000
  pairs), LSTM(256), one epoch: activations are most of a step.

Usage::

    python -m benchmarks.cached_mnrl [--workloads=text,long] [--repeats=1]
"""

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "..", "shared", "data")

WORKLOADS = {
    "text": [f"--data={DATA}/msrp/train.tsv", f"--validation_data={DATA}/msrp/dev.tsv",
             "--left_column=#1 String", "--right_column=#2 String",
             "--label_column=Quality", "--encoder=transformer", "--units=256",
             "--features=256", "--oov_buckets=20000"],
    "long": ["--data=synthetic", "--num_samples=4000", "--timesteps=200",
             "--features=32", "--encoder=lstm", "--units=256"],
}
COMMON = ["--merge=cosine", "--loss=mnrl", "--epochs=1", "--learning_rate=0.001",
          "--seed=42", "--verbose=1"]
ROWS = {"plain, batch 256": ["--batch_size=256"],
        "cached, batch 256, chunks of 32": ["--batch_size=256", "--mini_batch_size=32"],
        "plain, batch 1024": ["--batch_size=1024"],
        "cached, batch 1024, chunks of 32": ["--batch_size=1024", "--mini_batch_size=32"],
        "plain, batch 32": ["--batch_size=32"]}


def run(flags: list, run_dir: str) -> dict:
    """One train.py process: wall seconds, peak RSS (MB), loop seconds and
    steps, the final loss."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *flags,
                             f"--run_dir={run_dir}", "--restart"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"train.py failed: {' '.join(flags)}")
    done = re.search(r"Finished (\d+) steps in ([\d.]+) s", out)
    loss = re.search(r"^Final: loss ([\d.]+)", out, re.M)
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024,
            "steps": int(done.group(1)), "loop_seconds": float(done.group(2)),
            "loss": loss.group(1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="text,long")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "cached_mnrl"))
    args = parser.parse_args()
    print("| workload | row | process s | peak RSS MB | loop s | steps | ms / step | "
          "final loss |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for workload in args.workloads.split(","):
        for name, extra in ROWS.items():
            for repeat in range(args.repeats):
                slug = re.sub(r"\W+", "_", f"{workload} {name}")
                r = run(WORKLOADS[workload] + COMMON + extra, os.path.join(args.out, slug))
                print(f"| {workload} | {name} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
                      f"{r['loop_seconds']:.1f} | {r['steps']} | "
                      f"{1000 * r['loop_seconds'] / r['steps']:.0f} | {r['loss']} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
