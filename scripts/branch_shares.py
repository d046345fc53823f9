"""Each branch's share of each encoder kernel's gradient, and the cosine
between the branches, over a run's training: at step 0 (the run's seeded
initialisation) and at every checkpoint the run kept, the branch gradients
(`core.gradients.branch_gradients`) on the first batches of the run's own
training data.

    python scripts/branch_shares.py --run_dir=runs/digits_0 --batches=8

For a kernel W with total gradient g = sum_b g_b (b: left, right; or anchor,
positive, negative):

    share_b(W) = <g_b, g> / ||g||^2     (the total's part along g_b; the
                                         shares sum to 1, since g is the sum)
    cos(W)     = cos(g_b, g_c)          (each pair of branches)

each averaged over the batches. Prints a Markdown table (one row per step
and kernel) and, with --json, writes the numbers there.
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    from siamese_research import quiet

    quiet.import_tensorflow_quietly()
    import keras
    import tensorflow as tf

    from siamese_research import artifacts
    from siamese_research import data as data_lib
    from siamese_research.core import gradients as G
    from siamese_research.runner import building

    config = artifacts.read_run_config(args.run_dir)
    keras.utils.set_random_seed(config.seed)  # as the run did: step 0's weights
    data = data_lib.load(config)
    model, loss_fn, _ = building.build(config, data)
    batches = list(data_lib.train_dataset(data.train, config).epoch(0).take(args.batches))
    state = tf.train.get_checkpoint_state(os.path.join(args.run_dir, "checkpoints"))
    paths = list(state.all_model_checkpoint_paths) if state else []
    points = [(0, None)] + [(int(p.rsplit("-", 1)[1]), p) for p in paths]
    rows = []
    for step, path in points:
        if path is not None:
            tf.train.Checkpoint(model=model).restore(path).expect_partial()
        sums = {}
        for inputs, label, weight in batches:
            bg = G.branch_gradients(model, loss_fn, inputs, label, weight)
            for i, var in enumerate(bg.encoder_vars):
                if not var.path.endswith("kernel"):
                    continue
                parts = [tf.convert_to_tensor(b[i]).numpy().ravel().astype(np.float64)
                         for b in bg.branches]
                total = np.sum(parts, axis=0)
                norm2 = max(float(total @ total), 1e-30)
                shares = [float(p @ total) / norm2 for p in parts]
                cosines = [float(parts[a] @ parts[b]) / max(
                    np.linalg.norm(parts[a]) * np.linalg.norm(parts[b]), 1e-30)
                    for a in range(len(parts)) for b in range(a + 1, len(parts))]
                acc = sums.setdefault(var.path, np.zeros(len(shares) + len(cosines)))
                acc += np.array(shares + cosines) / len(batches)
        for name, values in sums.items():
            rows.append({"step": step, "kernel": name, "values": values.tolist()})
    names = model.branches
    pairs = [f"{a}_{b}" for i, a in enumerate(names) for b in names[i + 1:]]
    header = ["step", "kernel"] + [f"{b} share" for b in names] + \
        [f"cos {p}" for p in pairs]
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join(["---:", "---"] + ["---:"] * (len(header) - 2)) + " |")
    for row in rows:
        kernel = row["kernel"].split("/", 2)[-1]
        print(f"| {row['step']} | `{kernel}` | "
              + " | ".join(f"{v:.3f}" for v in row["values"]) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"branches": list(names), "pairs": pairs, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
