"""An image recipe over seeds: train, evaluate against raw pixels, and the
table of the verification measures (mean and spread over the seeds).

    python scripts/image_protocols.py --flagfile=recipes/digits.flags \
        --seeds=0,1,2 --out=runs/digits
    python scripts/image_protocols.py --flagfile=recipes/digits_classes.flags \
        --seeds=0,1,2 --out=runs/digits_classes --ways=4
    python scripts/image_protocols.py --flagfile=recipes/digits_classes.flags \
        --seeds=0,1,2 --out=runs/other --ways=4 --data=my_folder   # flags for train.py

Each seed is one `python train.py --flagfile=... --seed=S` process into
<out>/seed_<S> (a finished run is reused, not retrained), timed (wall
seconds, peak resident memory of the process), then `evaluate --which=last`
(the last epoch: `best.keras` is picked on the same held-out images) with
`--baseline=pixels` on --num_pairs pairs of the held-out images and
--draws one-shot tasks. Prints Markdown tables and writes
<out>/summary.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("eer", "far_at_frr_1", "far_at_frr_5", "roc_auc", "one_shot_accuracy")


def timed(command: list) -> tuple:
    """(returncode, wall seconds, peak RSS in MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(proc.stderr.read().decode()[-3000:])
    return proc.returncode, seconds, usage.ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flagfile", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", required=True)
    parser.add_argument("--num_pairs", type=int, default=20000)
    parser.add_argument("--ways", type=int, default=10)
    parser.add_argument("--draws", type=int, default=2000)
    args, extra = parser.parse_known_args()  # the rest goes to train.py
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}
    for seed in seeds:
        run_dir = os.path.join(args.out, f"seed_{seed}")
        cost = None
        if not os.path.exists(os.path.join(run_dir, "model.keras")):
            code, seconds, rss = timed([sys.executable, "train.py",
                                        f"--flagfile={args.flagfile}", f"--seed={seed}",
                                        f"--run_dir={run_dir}", "--verbose=0", *extra])
            if code:
                sys.exit(f"seed {seed}: train.py exited {code}")
            cost = {"seconds": seconds, "peak_rss_mb": rss}
            with open(os.path.join(run_dir, "cost.json"), "w") as f:
                json.dump(cost, f)
        elif os.path.exists(os.path.join(run_dir, "cost.json")):
            with open(os.path.join(run_dir, "cost.json")) as f:
                cost = json.load(f)
        with open(os.path.join(run_dir, "config.json")) as f:
            data = json.load(f)["data"]
        subprocess.run([sys.executable, "-m", "siamese_research.tools.evaluate",
                        f"--run_dir={run_dir}", f"--data={data}", "--baseline=pixels",
                        "--which=last", f"--num_pairs={args.num_pairs}",
                        f"--ways={args.ways}", f"--draws={args.draws}"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        stem = os.path.basename(os.path.normpath(data))
        scores = {}
        for name, suffix in (("model", ""), ("pixels", "_pixels")):
            with open(os.path.join(run_dir, f"eval_{stem}{suffix}.json")) as f:
                scores[name] = json.load(f)
        rows[seed] = {"cost": cost, **scores}
    ways = rows[seeds[0]]["model"].get("one_shot_ways")
    print(f"{args.flagfile}, seeds {args.seeds}: {args.num_pairs:,} held-out pairs, "
          f"{args.draws:,} {ways}-way one-shot tasks; mean (min-max)\n")
    print("| measure | model | raw pixels |")
    print("| --- | ---: | ---: |")
    summary = {"seeds": rows, "mean": {}}
    for metric in METRICS:
        cells = []
        for name in ("model", "pixels"):
            values = np.array([rows[s][name][metric] for s in seeds])
            summary["mean"][f"{name}/{metric}"] = float(values.mean())
            cells.append(f"{values.mean():.4f} ({values.min():.4f}-{values.max():.4f})")
        print(f"| {metric} | {cells[0]} | {cells[1]} |")
    print("\n| seed | EER | one-shot | FAR@1% | FAR@5% | AUC | train s | peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in seeds:
        m, cost = rows[s]["model"], rows[s]["cost"] or {}
        print(f"| {s} | {m['eer']:.4f} | {m['one_shot_accuracy']:.4f} | "
              f"{m['far_at_frr_1']:.4f} | {m['far_at_frr_5']:.4f} | {m['roc_auc']:.4f} | "
              f"{cost.get('seconds', float('nan')):.1f} | "
              f"{cost.get('peak_rss_mb', float('nan')):.0f} |")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
