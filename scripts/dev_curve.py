"""Dev metrics at step 0 and after every epoch, for several seeds, in one
process: how a configuration's training moves its dev numbers.

    python scripts/dev_curve.py --seeds=42,1,2 --out=runs/tune/x.jsonl \
        <train.py flags, with --validation_data=<the dev split>>

Every train.py flag is accepted (the same `Config`). Each seed trains the
configuration as `training.run` does (same seeding, data, model, optimizer,
`Trainer.fit`), without writing a run folder, and scores the validation
file after each epoch (and before the first step) with `evaluate`'s
metrics: Pearson/Spearman with --label_range, else accuracy and F1 at 0.5,
ROC AUC, and MAP/MRR per left text. One JSON line per (seed, epoch), on
stdout and appended to --out; then the mean and min-max per epoch.

It stands in for a best-epoch feature of the training loop until that lands
(picking the epoch count is a dev decision: the recipes fix `--epochs` to
what this shows). It lives outside the library on purpose.
"""

import json
import os
import sys
import time

import numpy as np

# This checkout's package, not an installed one.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METRICS = ("pearson", "spearman", "accuracy", "f1", "roc_auc", "map", "mrr")


def one_seed(config, out_path):
    import keras

    from siamese_research import data as data_lib
    from siamese_research.runner import devices
    from siamese_research import runner as training
    from siamese_research.inference import evaluate as ev
    from siamese_research.metrics.pairs import compute_metrics
    from siamese_research.train.trainer import Trainer

    devices.configure_threads(config.intra_op_threads)
    keras.utils.set_random_seed(config.seed)
    data = data_lib.load(config)
    if data.validation is None:
        raise SystemExit("dev_curve: needs --validation_data (the dev split)")
    model, loss_fn, optimizer = training.build(config, data)
    trainer = Trainer(model, loss_fn=loss_fn, optimizer=optimizer, writers=None,
                      steps_per_execution=config.steps_per_execution,
                      log_every=config.log_every, histogram_every=config.histogram_every,
                      grad_check_every=config.grad_check_every,
                      gate_gradients=config.gate_gradients, diagnostics=False,
                      on_nonfinite=config.on_nonfinite, loss_name=config.loss, verbose=0)
    dev = data.validation
    graded = config.label_bounds is not None
    groups = [t.strip() for t in dev.left_text] if dev.left_text else None
    train_ds = data_lib.train_dataset(data.train, config)
    rows = []
    t0 = time.perf_counter()

    def score(epoch):
        preds = ev.predict(model, dev)
        m = compute_metrics(dev.label, preds, groups=groups, graded=graded)
        row = {"seed": config.seed, "epoch": epoch,
               "seconds": round(time.perf_counter() - t0, 1),
               **{k: round(m[k], 4) for k in METRICS if k in m}}
        rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        if out_path:
            with open(out_path, "a") as f:
                f.write(line + "\n")

    score(0)
    trainer.fit(train_ds, None, epochs=config.epochs, callbacks=[
        keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: score(e + 1))])
    return rows


def main(argv):
    from absl import flags

    from siamese_research.tools import cli
    from siamese_research.tools import train as train_main
    from siamese_research.config import Config

    fv = train_main.define_flags()
    flags.DEFINE_string("seeds", "42,1,2", "comma-separated seeds", flag_values=fv)
    flags.DEFINE_string("out", "", "append the JSON lines here", flag_values=fv)
    cli.parse(fv, argv, __doc__)
    seeds = [int(s) for s in fv["seeds"].value.split(",") if s.strip()]
    base = Config(**{n: fv[n].value for n in Config.field_names()},)
    from siamese_research import quiet

    quiet.quiet_python_logging()
    if fv["out"].value:
        with open(fv["out"].value, "a") as f:
            f.write(json.dumps({"argv": argv[1:]}) + "\n")
    everything = []
    for seed in seeds:
        everything += one_seed(base.replace(seed=seed), fv["out"].value)
    summary = []
    for epoch in sorted({r["epoch"] for r in everything}):
        at = [r for r in everything if r["epoch"] == epoch]
        row = {"epoch": epoch, "seeds": len(at)}
        for k in METRICS:
            if k in at[0]:
                v = np.array([r[k] for r in at])
                row[k] = f"{v.mean():.4f} ({v.min():.4f}-{v.max():.4f})"
        summary.append(row)
        print("MEAN " + json.dumps(row), flush=True)
    if fv["out"].value:
        with open(fv["out"].value, "a") as f:
            for row in summary:
                f.write("MEAN " + json.dumps(row) + "\n")


if __name__ == "__main__":
    from siamese_research import quiet as _cli

    _cli.import_tensorflow_quietly()
    main(sys.argv)
