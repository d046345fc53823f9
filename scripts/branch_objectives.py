"""Objectives and negatives on one encoder: dev measures over seeds, and
what each call's gradient did (pointwise bce, triplets and in-batch
negatives; random, mined and cached).

    python scripts/branch_objectives.py --seeds=42,1,2 --out=runs/objectives \
        -- <train.py flags shared by every objective>

Each (objective, seed) is one `python train.py` process into
<out>/<objective>_<seed> (an existing finished run is reused, not
retrained), then `evaluate` on the --validation_data file with the LAST
epoch's model (a fixed budget; no dev-picked epoch). Step 0 is the same
initialisation every objective starts from, scored the same way. The branch view
comes from the run's own event files: each branch's gradient norm and the
cosines between branches, averaged over the first and the last fifth of the
logged steps, and each branch's share of the summed norms. Prints Markdown
tables (the README's research note) and writes <out>/summary.json.

The objectives (flags added to the shared ones; --only picks some):
  bce:            --loss=bce
  triplet:        --loss=triplet --triplets=from_pairs --margin=<--margin>
  triplet_corpus: --loss=triplet --triplets=from_corpus (random negatives)
  triplet_hard:   --loss=triplet --negatives=hard (mined, --mine_range's default)
  mnrl:           --loss=mnrl --temperature=<--temperature>
  mnrl_corpus:    --loss=mnrl --triplets=from_corpus (+ a random negative per row)
  mnrl_hard:      --loss=mnrl --negatives=hard (+ a mined negative per row)
  mnrl_cached256: --loss=mnrl --batch_size=256 --mini_batch_size=32

--measures names the dev measures tabled, evaluate's keys: map, mrr,
roc_auc, average_precision, f1, accuracy (the last two at a threshold: 0.5
for step 0, the fitted one after training), pearson, ...
"""

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def objectives(margin: float, temperature: float) -> dict:
    triplet = ["--loss=triplet", f"--margin={margin}"]
    mnrl = ["--loss=mnrl", f"--temperature={temperature}"]
    return {"bce": ["--loss=bce"],
            "triplet": [*triplet, "--triplets=from_pairs"],
            "triplet_corpus": [*triplet, "--triplets=from_corpus"],
            "triplet_hard": [*triplet, "--negatives=hard"],
            "mnrl": mnrl,
            "mnrl_corpus": [*mnrl, "--triplets=from_corpus"],
            "mnrl_hard": [*mnrl, "--negatives=hard"],
            "mnrl_cached256": [*mnrl, "--batch_size=256", "--mini_batch_size=32"]}


DEFAULT = ("bce", "triplet", "mnrl")  # (without --only)


def train(run_dir: str, flags: list) -> None:
    if os.path.exists(os.path.join(run_dir, "model.keras")):
        return
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"--run_dir={run_dir}",
           "--verbose=0", *flags]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def dev_metrics(run_dir: str, dev: str) -> dict:
    from siamese_research.inference import evaluate

    return evaluate.evaluate_run(run_dir, dev, which="last")["model"]


def step_zero(flags: list, seed: int) -> dict:
    """Dev metrics of the untrained model a run with `flags` starts from (the
    same seeding and build order as `training.run`)."""
    import keras

    from siamese_research import data as data_lib
    from siamese_research.inference import evaluate
    from siamese_research.metrics.pairs import compute_metrics
    from siamese_research.tools import train as train_main
    from siamese_research import runner as training
    from siamese_research.config import Config

    fv = train_main.define_flags()
    fv(["train.py", *flags, f"--seed={seed}", "--loss=bce"])
    config = Config(**{n: fv[n].value for n in Config.field_names()})
    keras.utils.set_random_seed(seed)
    data = data_lib.load(config)
    model, _, _ = training.build(config, data)
    val = data.validation
    return compute_metrics(val.label, evaluate.predict(model, val),
                                    groups=[t.strip() for t in val.left_text])


def branch_view(run_dir: str) -> dict:
    """{tag suffix: (early mean, late mean, points)} of the branch scalars."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    import tensorflow as tf

    from siamese_research.summaries import extras as tensorboard_extras

    acc = ea.EventAccumulator(os.path.join(run_dir, "train"),
                              size_guidance={ea.TENSORS: 0})
    acc.Reload()
    # The branch-gradient charts of the custom-scalars layout: each branch's
    # norm, the total, the cosines and sum_error (not the per-gate norms).
    charts = [re.compile(regex) for category, items in tensorboard_extras.LAYOUT
              if category == "branch gradients" for _, regex in items]
    out = {}
    for tag in acc.Tags()["tensors"]:
        if not any(c.search(tag) for c in charts):
            continue
        values = np.array([float(tf.make_ndarray(e.tensor_proto))
                           for e in acc.Tensors(tag)])
        fifth = max(1, len(values) // 5)
        out[tag[len("branch_gradients/"):]] = (float(values[:fifth].mean()),
                                               float(values[-fifth:].mean()),
                                               int(len(values)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,1,2")
    parser.add_argument("--out", default="runs/objectives")
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--only", default="", help="comma-separated objectives "
                        f"(default: {','.join(DEFAULT)})")
    parser.add_argument("--measures", default="map,mrr", help="dev measures to table")
    parser.add_argument("flags", nargs="*", help="train.py flags for every run")
    args = parser.parse_args()
    dev = next((f.split("=", 1)[1] for f in args.flags
                if f.startswith("--validation_data=")), None)
    if dev is None:
        parser.error("pass --validation_data=<dev file> among the train.py flags")
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = objectives(args.margin, args.temperature)
    only = args.only.split(",") if args.only else DEFAULT
    unknown = set(only) - set(chosen)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
    chosen = {k: chosen[k] for k in only}
    summary = {f"step0_{seed}": {"dev": step_zero(args.flags, seed)} for seed in seeds}
    for name, extra in chosen.items():
        for seed in seeds:
            run_dir = os.path.join(args.out, f"{name}_{seed}")
            train(run_dir, [*args.flags, *extra, f"--seed={seed}"])
            summary[f"{name}_{seed}"] = {"dev": dev_metrics(run_dir, dev),
                                         "branches": branch_view(run_dir)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(tables(summary, chosen, seeds, args.measures.split(",")))
    return 0


def tables(summary: dict, chosen: dict, seeds: list, measures=("map", "mrr")) -> str:
    lines = ["| objective | " + " | ".join(f"dev {m}" for m in measures)
             + f" | {measures[0]} per seed |",
             "| --- |" + " ---: |" * len(measures) + " --- |"]
    for name in ["step0", *chosen]:
        runs = [summary[f"{name}_{s}"]["dev"] for s in seeds]
        cells = []
        for m in measures:
            v = np.array([r[m] for r in runs])
            cells.append(f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})")
        first = [r[measures[0]] for r in runs]
        lines.append(f"| {name} | " + " | ".join(cells) + " | "
                     + ", ".join(f"{s}: {v:.3f}" for s, v in zip(seeds, first)) + " |")
    lines += ["", "| objective | branch | norm, first fifth | norm, last fifth | "
              "share of the branches' norms (last) |", "| --- | --- | ---: | ---: | ---: |"]
    for name in chosen:
        views = [summary[f"{name}_{s}"]["branches"] for s in seeds]
        norms = [k[:-5] for k in views[0] if k.endswith("_norm") and k != "total_norm"]
        late = {b: np.mean([v[b + "_norm"][1] for v in views]) for b in norms}
        for b in norms:
            early = np.mean([v[b + "_norm"][0] for v in views])
            lines.append(f"| {name} | {b} | {early:.4g} | {late[b]:.4g} | "
                         f"{late[b] / max(sum(late.values()), 1e-30):.0%} |")
    lines += ["", "| objective | cosine | first fifth | last fifth |",
              "| --- | --- | ---: | ---: |"]
    for name in chosen:
        views = [summary[f"{name}_{s}"]["branches"] for s in seeds]
        for k in views[0]:
            if k.startswith("cosine"):
                early = np.mean([v[k][0] for v in views])
                late = np.mean([v[k][1] for v in views])
                lines.append(f"| {name} | {k} | {early:+.3f} | {late:+.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
