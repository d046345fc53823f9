"""`python -m benchmarks.bench`: this trainer against `keras.Model.fit`.

One process, one set of random pairs (the notebook's data: uniform features,
random labels), the notebook's model (one `LSTM(32)` shared by two
`(None, 128)` inputs, `concat`, `Dense(1, sigmoid)`, RMSprop, binary
cross-entropy, batch 64, 10 steps). Rows, in samples (pairs) per second:

* A: `keras.Model.fit` on the notebook's functional model, at its default
  `steps_per_execution` (1) and at the other values tried; the best is A-best.
* B: this project's `Trainer` on `model.build_model(merge="concat")` with its
  defaults: summary writers on (a temp folder), branch diagnostics on, the
  default cadences (log 10, histograms 100, check 10, 20 steps per call).
* C: B with `diagnostics=False` and no writers (it still trains on
  g_left + g_right).
* D, for reference: the floor, C's model, data path, one-pass branch
  gradients and update with nothing else (no metrics, no non-finite check):
  the most B and C could reach here with the same per-step work.

Rows are measured in groups (A, B, C; the XLA and lstm_fused rows; the
breakdown; each sweep shape), one group's models alive at a time, each group
with its own reference rows. In a group every row is
warmed up (one untimed epoch, which also traces), then timed for `--repeats`
epochs, the rows interleaved round by round so that load from other
processes spreads over all of them; each row reports its median. An A
epoch is the second epoch of a two-epoch `fit` call, end of epoch to end of
epoch (fit's once-per-call set-up left out); a B/C epoch likewise, the
second epoch of a two-epoch `Trainer.fit` call. Both include what every
epoch costs in a real run: a new data iterator and the old one's teardown.

Usage::

    python -m benchmarks.bench [--quick] [--sweep] [--breakdown]
        [--markdown=PATH] [--repeats=N] [--intra_op_threads=N]
    python -m benchmarks.bench --startup [--whole_job] [--rounds=N]
        [--markdown=PATH]   # whole processes, start-up included
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from siamese_research import data as data_lib
from siamese_research.runner import devices
from siamese_research.core import encoders
from siamese_research.core import gradients as G
from siamese_research.core import model as model_lib
from siamese_research.summaries import views as summaries
from siamese_research.data import builtin
from siamese_research.train.trainer import Trainer

from benchmarks import bench_startup
from benchmarks.report import END, START, loadavg, machine, write_markdown  # noqa: F401

FEATURES, UNITS, BATCH, TIMESTEPS = 128, 32, 64, 10
LEARNING_RATE = 1e-3
# fit's steps_per_execution values tried; 1 is Keras's default.
FIT_STEPS = (1, 10, 20, 50)
SWEEP_TIMESTEPS = (10, 50, 200)
SWEEP_BATCHES = (64, 512)
# Pairs per timed epoch at 10 steps; longer sequences get proportionally
# fewer so that every timed epoch takes about the same wall time.
PAIRS_AT_10_STEPS = 12800
MIN_BATCHES_PER_EPOCH = 4


# A runner trains one more epoch and returns (wall seconds, CPU seconds).
Runner = Callable[[], Tuple[float, float]]


@dataclasses.dataclass
class Row:
    """One measured configuration: its label and the per-epoch samples/s."""

    key: str
    label: str
    timesteps: int
    batch_size: int
    pairs: int
    group: int = 0  # rows are compared within their group (see run)
    rates: List[float] = dataclasses.field(default_factory=list)
    # Pairs per CPU-second of this process: less sensitive than wall time to
    # other processes competing for the cores (though not immune: caches).
    cpu_rates: List[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_rates) if self.cpu_rates else float("nan")

    @property
    def spread(self) -> str:
        if not self.rates:
            return ""
        return f"{min(self.rates):,.0f}-{max(self.rates):,.0f}"


# -- the two ways of training the same model ----------------------------------
def notebook_model(features: int = FEATURES, units: int = UNITS,
                   steps_per_execution: int = 1, jit_compile="auto") -> keras.Model:
    """The notebook's functional model, compiled as the notebook did.

    Args:
      features: input feature size.
      units: LSTM size.
      steps_per_execution: passed to `compile` (Keras's default is 1).
      jit_compile: passed to `compile` ("auto" is False on a CPU-only machine).

    Returns:
      A compiled `keras.Model` taking `[left, right]`.
    """
    left = keras.Input((None, features), name="left")
    right = keras.Input((None, features), name="right")
    lstm = keras.layers.LSTM(units, name="lstm")  # ONE layer, two calls
    merged = keras.layers.concatenate([lstm(left), lstm(right)])
    out = keras.layers.Dense(1, activation="sigmoid", name="head")(merged)
    model = keras.Model([left, right], out, name="notebook")
    model.compile(optimizer=keras.optimizers.RMSprop(LEARNING_RATE),
                  loss="binary_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    return model


class _EpochTimer(keras.callbacks.Callback):
    """Wall time from the end of one epoch to the end of the next."""

    def on_train_begin(self, logs=None):
        self.seconds = []
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds.append((now - self.last, cpu - self.last_cpu))
        self.last, self.last_cpu = now, cpu


class FitRunner:
    """A: `model.fit` on the notebook's model.

    Each `epoch()` is one `fit` call of two epochs, and returns the second
    one's time, end of epoch 1 to end of epoch 2: what every epoch after the
    first costs in a multi-epoch `fit`, including the switch to a new
    iterator between epochs but not `fit`'s once-per-call set-up.
    """

    def __init__(self, pairs: data_lib.Pairs, batch_size: int, steps_per_execution: int,
                 seed: int, jit_compile="auto"):
        keras.utils.set_random_seed(seed)
        self.model = notebook_model(steps_per_execution=steps_per_execution,
                                    jit_compile=jit_compile)
        self.x = [pairs.left, pairs.right]
        self.y = pairs.label
        self.batch_size = batch_size
        self.timer = _EpochTimer()

    def epoch(self) -> Tuple[float, float]:
        """Returns (wall seconds, CPU seconds of this process) of one epoch."""
        self.model.fit(self.x, self.y, batch_size=self.batch_size, epochs=2,
                       shuffle=True, verbose=0, callbacks=[self.timer])
        return self.timer.seconds[-1]


def _bench_model(pairs: data_lib.Pairs, seed: int, encoder: str = "lstm"):
    """B, C and D's model: the notebook's, as a `SiameseModel` (concat),
    seeded; masked only when the data has padding, as training.build does
    (the notebook's data has none)."""
    keras.utils.set_random_seed(seed)
    return model_lib.build_model(encoder=encoder, units=UNITS, features=FEATURES,
                                 merge="concat", masked=pairs.padded)


class TrainerRunner:
    """B (diagnostics) or C (none): this project's Trainer, one more epoch
    per call.

    Args:
      pairs: the training pairs.
      batch_size: pairs per step.
      diagnostics: True = the Trainer's defaults with writers in `log_dir`;
        False = `diagnostics=False`, `writers=None`.
      log_dir: where B's event files go.
      seed: initialisation and shuffling.
      trainer_kwargs: overrides of Trainer arguments (cost breakdown rows).
    """

    def __init__(self, pairs: data_lib.Pairs, batch_size: int, *, diagnostics: bool,
                 log_dir: Optional[str], seed: int, **trainer_kwargs):
        model = _bench_model(pairs, seed, trainer_kwargs.pop("encoder", "lstm"))
        writers = summaries.create_writers(log_dir) if diagnostics else None
        kwargs = dict(trainer_kwargs)
        if not diagnostics:
            kwargs["diagnostics"] = False
        # The steady state of a long run, whose train step unrolls the RNN
        # (`encoders.UNROLL_MIN_RUN_STEPS`); the bench's own fits are short.
        kwargs.setdefault("unroll", True)
        self.trainer = Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                               optimizer=keras.optimizers.RMSprop(LEARNING_RATE),
                               writers=writers, verbose=0, **kwargs)
        self.data = data_lib.PairDataset(pairs, batch_size, seed=seed)
        self.epochs = 0

    def epoch(self) -> Tuple[float, float]:
        """Returns (wall seconds, CPU seconds of this process) of one epoch:
        as for A, the second epoch of a two-epoch `fit` call, end of epoch to
        end of epoch (a run's first and last view steps fall in each call,
        as they would once in a real run)."""
        self.epochs += 2
        timer = _EpochTimer()
        timer.on_train_begin()
        self.trainer.fit(self.data, epochs=self.epochs, callbacks=[timer])
        return timer.seconds[-1]

    def close(self) -> None:
        if self.trainer.writers is not None:
            for writer in self.trainer.writers.values():
                writer.close()


class FloorRunner:
    """D: the floor under any loop that trains this model here, for reference.

    The same model, data path (row indices, each step gathering its rows),
    one-pass branch gradients (`gradients.branch_gradients`) and update as B
    and C, 20 steps per compiled call, and nothing else: no metrics, no
    non-finite check, no step counter, no summaries. It is not a way to
    train (it checks nothing); it measures how fast B and C could be at most
    with TensorFlow's op-by-op execution on this machine.
    """

    def __init__(self, pairs: data_lib.Pairs, batch_size: int, seed: int,
                 steps_per_execution: int = 20):
        self.model = _bench_model(pairs, seed)
        self.loss_fn = keras.losses.BinaryCrossentropy()
        self.optimizer = keras.optimizers.RMSprop(LEARNING_RATE)
        self.optimizer.build(self.model.trainable_variables)
        self.data = data_lib.PairDataset(pairs, batch_size, seed=seed)
        self.steps_per_execution = steps_per_execution
        self.epochs = 0
        self._steps = tf.function(self._run)

    def _run(self, iterator, num_steps, source):
        for _ in tf.range(num_steps):
            (left, right), label, weight = data_lib.gather_batch(source[0], next(iterator),
                                                                 source[1])
            bg = G.branch_gradients(self.model, self.loss_fn, (left, right), label, weight)
            self.optimizer.apply_gradients(bg.grads_and_vars())

    def epoch(self) -> Tuple[float, float]:
        """Returns (wall seconds, CPU seconds of this process) of one epoch."""
        start, cpu = time.perf_counter(), time.process_time()
        iterator = iter(self.data.index_epoch(self.epochs))
        self.epochs += 1
        done, total = 0, self.data.steps_per_epoch
        while done < total:
            n = min(self.steps_per_execution, total - done)
            with encoders.unrolling(True):  # as B and C
                self._steps(iterator, tf.constant(n, tf.int32), self.data.source)
            done += n
        return time.perf_counter() - start, time.process_time() - cpu


# -- measuring ----------------------------------------------------------------------
def pairs_for(timesteps: int, batch_size: int, scale: float = 1.0) -> int:
    """Pairs per timed epoch: about constant work, whole batches only."""
    n = int(PAIRS_AT_10_STEPS * scale * TIMESTEPS / timesteps)
    n = max(n, MIN_BATCHES_PER_EPOCH * batch_size)
    return (n // batch_size) * batch_size


def measure(rows: Sequence[Row], runners: Dict[str, Runner],
            repeats: int, progress: bool = True) -> None:
    """Warms every runner up with one epoch, then runs `repeats` rounds of one
    timed epoch per runner, filling each row's `rates` (pairs / second)."""
    for row in rows:
        runners[row.key]()  # warm-up: tracing, optimizer slots, tf.data start
        if progress:
            print(f"  warmed up {row.label}", file=sys.stderr, flush=True)
    for r in range(repeats):
        for row in rows:
            seconds, cpu = runners[row.key]()
            row.rates.append(row.pairs / seconds)
            row.cpu_rates.append(row.pairs / max(cpu, 1e-9))
        if progress:
            print(f"  round {r + 1}/{repeats}: " + ", ".join(
                f"{row.key} {row.rates[-1]:,.0f}" for row in rows),
                file=sys.stderr, flush=True)


def run(*, quick: bool = False, sweep: bool = False, repeats: int = 5,
        seed: int = 0, progress: bool = True, fit_steps: Sequence[int] = FIT_STEPS,
        breakdown: bool = False, extras: bool = True) -> dict:
    """Runs the benchmark; returns {"rows", "ratios", "machine", "settings", ...}.

    Args:
      quick: a few seconds (CI): A at its default, B and C; 4 batches per
        epoch, 1 repeat. The numbers then mean nothing; the table is the point.
      sweep: add B and C at every timesteps x batch size of the sweep.
      repeats: timed epochs per row (the median is reported).
      seed: data, initialisation and shuffling.
      progress: per-round progress lines on stderr.
      fit_steps: fit's steps_per_execution values to try (1 = Keras's default).
      breakdown: add B variants that switch single diagnostics off, to show
        what each costs.
      extras: add fit with XLA and B/C with lstm_fused and with XLA.

    Returns:
      {"rows": [Row], "ratios": {...}, "tracing_count": B's tracing counts,
       "machine": machine(), "settings": {...}}.
    """
    if quick:
        repeats, fit_steps, sweep, breakdown = 1, (1,), False, False
    started = time.time()
    load_before = loadavg()
    log_root = tempfile.mkdtemp(prefix="siamese_bench_")
    rows: List[Row] = []
    # Rows are measured in groups: the main comparison (A at each
    # steps_per_execution, B, C), then the extra rows at the notebook's
    # shape, then each sweep shape. Only one group's models exist at a time:
    # with every row's model alive and interleaved (two dozen of them), all
    # rows ran slower and noisier than in a process of their own.
    groups: List[List[Tuple[Row, Callable[[], object]]]] = []
    tracing: Dict[str, dict] = {}

    def add(group, key, label, make, timesteps, batch, n):
        row = Row(key, label, timesteps, batch, n, group=len(groups) - 1)
        rows.append(row)
        group.append((row, make))

    def trainer(pairs, batch, key, diagnostics, **kw):
        log_dir = os.path.join(log_root, key) if diagnostics else None
        return lambda: TrainerRunner(pairs, batch, diagnostics=diagnostics, seed=seed,
                                     log_dir=log_dir, **kw)

    def add_shape(timesteps: int, batch: int, main: bool):
        n = 4 * batch if quick else pairs_for(timesteps, batch)
        pairs = builtin.random_pairs(num_samples=n, timesteps=timesteps,
                                     features=FEATURES, seed=seed)
        shape = dict(timesteps=timesteps, batch=batch, n=n)
        prefix = "" if main else f"T{timesteps}b{batch}"
        group: list = []
        groups.append(group)
        if main:
            for spe in fit_steps:
                add(group, f"A{spe}", f"A: model.fit, steps_per_execution={spe}"
                    + (" (default)" if spe == 1 else ""),
                    lambda spe=spe: FitRunner(pairs, batch, spe, seed), **shape)
        add(group, prefix + "B", "B: Trainer, defaults (diagnostics + writers)",
            trainer(pairs, batch, prefix + "B", True), **shape)
        add(group, prefix + "C", "C: Trainer, diagnostics off, no writers",
            trainer(pairs, batch, prefix + "C", False), **shape)
        if not main:
            return
        add(group, "D", "D: the floor (C without metrics, non-finite check or step "
            "counter)", lambda: FloorRunner(pairs, batch, seed), **shape)
        if quick:
            return
        # Each further group re-measures its references beside its rows:
        # only rows of one group were measured under the same conditions.
        if extras:
            group = []
            groups.append(group)
            add(group, "A1@x", "A: model.fit, default (reference for the rows below)",
                lambda: FitRunner(pairs, batch, 1, seed), **shape)
            add(group, "B@x", "B (reference for the rows below)",
                trainer(pairs, batch, "B@x", True), **shape)
            add(group, "Axla", "A: model.fit, steps_per_execution=20, jit_compile=True",
                lambda: FitRunner(pairs, batch, 20, seed, jit_compile=True), **shape)
            add(group, "BF", "B with encoder=lstm_fused",
                trainer(pairs, batch, "BF", True, encoder="lstm_fused"), **shape)
            add(group, "CF", "C with encoder=lstm_fused",
                trainer(pairs, batch, "CF", False, encoder="lstm_fused"), **shape)
            add(group, "BX", "B with jit_compile=True",
                trainer(pairs, batch, "BX", True, jit_compile=True), **shape)
            add(group, "CX", "C with jit_compile=True",
                trainer(pairs, batch, "CX", False, jit_compile=True), **shape)
        if breakdown:
            group = []
            groups.append(group)
            add(group, "B@b", "B (reference for the rows below)",
                trainer(pairs, batch, "B@b", True), **shape)
            add(group, "C@b", "C (reference for the rows below)",
                trainer(pairs, batch, "C@b", False), **shape)
            for key, label, kw in _breakdown_variants():
                add(group, key, label, trainer(pairs, batch, key, True, **kw), **shape)

    add_shape(TIMESTEPS, BATCH, main=True)
    if sweep:
        for timesteps in SWEEP_TIMESTEPS:
            for batch in SWEEP_BATCHES:
                if (timesteps, batch) != (TIMESTEPS, BATCH):
                    add_shape(timesteps, batch, main=False)
    for group in groups:
        built = {row.key: make() for row, make in group}
        try:
            measure([row for row, _ in group], {k: r.epoch for k, r in built.items()},
                    repeats, progress)
            if "B" in built:
                tracing["B"] = built["B"].trainer.tracing_count
        finally:
            for runner in built.values():
                if isinstance(runner, TrainerRunner):
                    runner.close()
        del built
        gc.collect()
    by_key = {row.key: row for row in rows}
    a_rows = [r for r in rows if r.key[1:].isdigit()]
    best = max(a_rows, key=lambda r: r.median)
    a1, b, c = by_key["A1"], by_key["B"], by_key["C"]
    ratios = {"A_best_steps": int(best.key[1:]),
              "B/A_default": b.median / a1.median, "B/A_best": b.median / best.median,
              "B/C": b.median / c.median, "C/B": c.median / b.median,
              "cpu B/A_default": b.cpu_median / a1.cpu_median,
              "cpu B/A_best": b.cpu_median / best.cpu_median,
              "cpu C/B": c.cpu_median / b.cpu_median,
              "D/A_default": by_key["D"].median / a1.median,
              "D/A_best": by_key["D"].median / best.median,
              "D/B": by_key["D"].median / b.median, "D/C": by_key["D"].median / c.median}
    if "BF" in by_key:  # within the extra rows' group
        bf, cf, bx, cx = by_key["BF"], by_key["CF"], by_key["BX"], by_key["CX"]
        a1x, bref, axla = by_key["A1@x"], by_key["B@x"], by_key["Axla"]
        ratios.update({"BF/A_default": bf.median / a1x.median,
                       "CF/BF": cf.median / bf.median,
                       "BF/B": bf.median / bref.median,
                       "B/Axla": bref.median / axla.median,
                       "BX/A_default": bx.median / a1x.median,
                       "BX/B": bx.median / bref.median,
                       "CX/BX": cx.median / bx.median})
    return {"rows": rows, "ratios": ratios, "best_fit": best.key,
            "tracing_count": tracing["B"],
            "machine": machine(load_before, loadavg()),
            "settings": {"repeats": repeats, "quick": quick, "sweep": sweep,
                         "seconds": time.time() - started, "seed": seed,
                         "intra_op_threads":
                             tf.config.threading.get_intra_op_parallelism_threads()}}


def _breakdown_variants():
    """B minus one diagnostic at a time (a huge cadence = never)."""
    never = 10 ** 9
    return [
        ("Bnocheck", "B, grad_check_every=never", dict(grad_check_every=never)),
        ("Bnohist", "B, histogram_every=never", dict(histogram_every=never)),
        ("Bnogates", "B, gate_gradients=False", dict(gate_gradients=False)),
        ("Bscalars", "B, no check, no histograms, no gate scalars",
         dict(grad_check_every=never, histogram_every=never, gate_gradients=False)),
        # The view step itself: the same scalars every 20 steps (calls of 20,
        # as C's), and no view step but the run's first and last.
        ("Bscalars20", "B, scalars only, every 20 steps",
         dict(log_every=20, grad_check_every=never, histogram_every=never,
              gate_gradients=False)),
        ("Bnoview", "B, no view step (writers on, every cadence never)",
         dict(log_every=never, grad_check_every=never, histogram_every=never)),
    ]


def table(result: dict) -> str:
    """The result as Markdown: the main table, ratios, sweep and machine."""
    rows, ratios, m = result["rows"], result["ratios"], result["machine"]
    ref = {row.key: row for row in rows}
    main = [r for r in rows if r.timesteps == TIMESTEPS and r.batch_size == BATCH]
    group_ref = {}  # group -> (A default, B) measured in that group
    for row in main:
        a, b = group_ref.get(row.group, (None, None))
        if row.key.split("@")[0] == "A1":
            a = row
        if row.key.split("@")[0] == "B":
            b = row
        group_ref[row.group] = (a, b)
    lines = [f"At the notebook's shape (T={TIMESTEPS}, batch={BATCH}, "
             f"{main[0].pairs:,} pairs per timed epoch); each group of rows was "
             f"measured on its own, so compare rows within a group:", "",
             "| group | row | samples/s (median) | range | vs A default | vs B | "
             "samples per CPU-second (median) |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in main:
        a, b = group_ref[row.group]
        best = " (best fit)" if row.key == result["best_fit"] else ""
        vs_a = f"{row.median / a.median:.2f}x" if a is not None else ""
        vs_b = f"{row.median / b.median:.2f}x" if b is not None else ""
        lines.append(f"| {row.group + 1} | {row.label}{best} | {row.median:,.0f} | "
                     f"{row.spread} | {vs_a} | {vs_b} | {row.cpu_median:,.0f} |")
    r = ratios
    lines += [
        "",
        f"- B / A (fit default, steps_per_execution=1): **{r['B/A_default']:.2f}x** "
        f"(target >= 2.0; by CPU time {r['cpu B/A_default']:.2f}x)",
        f"- B / A (fit best, steps_per_execution={r['A_best_steps']}): "
        f"**{r['B/A_best']:.2f}x** (target >= 1.3; by CPU time {r['cpu B/A_best']:.2f}x)",
        f"- B / C: **{r['B/C']:.3f}**, C / B: **{r['C/B']:.3f}** (target C / B <= 1.05; "
        f"by CPU time {r['cpu C/B']:.3f})",
        f"- D, the floor: D / A default **{r['D/A_default']:.2f}x**, D / A best "
        f"**{r['D/A_best']:.2f}x**, D / C {r['D/C']:.3f}, D / B {r['D/B']:.3f} (B and C "
        f"do all of D's work and more, so B / A stays below D / A unless that work "
        f"itself gets cheaper)",
    ]
    if "BF/A_default" in r:
        lines += [
            f"- group 2, with `lstm_fused`: B / A default **{r['BF/A_default']:.2f}x**, "
            f"C / B **{r['CF/BF']:.3f}**; B(lstm_fused) / B(lstm) {r['BF/B']:.2f}x",
            f"- group 2, with `jit_compile=True`: B / A default "
            f"**{r['BX/A_default']:.2f}x**, B(XLA) / B {r['BX/B']:.2f}x, C / B "
            f"**{r['CX/BX']:.3f}**",
            f"- group 2, B / A (fit, steps_per_execution=20, jit_compile=True): "
            f"{r['B/Axla']:.2f}x",
        ]
    lines.append(f"- B's tracing counts after all epochs: {result['tracing_count']}")
    sweep = [row for row in rows if row.key.endswith("B") and row.key[0] == "T"]
    if sweep:
        lines += ["", "Sweep: B (defaults, `lstm` encoder) and C / B at each shape; "
                  "time per sample per step should stay flat if cost is linear in T:", "",
                  "| T | batch | pairs / epoch | B samples/s | range | "
                  "B us / sample / step | C / B |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in sorted([ref["B"]] + sweep, key=lambda x: (x.batch_size, x.timesteps)):
            c = ref[row.key[:-1] + "C"]
            lines.append(f"| {row.timesteps} | {row.batch_size} | {row.pairs:,} | "
                         f"{row.median:,.0f} | {row.spread} | "
                         f"{1e6 / row.median / row.timesteps:.2f} | "
                         f"{c.median / row.median:.3f} |")
    s = result["settings"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
              f"{m['gpus']} GPUs; TensorFlow {m['tensorflow']}, Keras {m['keras']}, "
              f"Python {m['python']}; {m['date']}. Load average (1, 5, 15 min) before "
              f"{m['load_before']}, after {m['load_after']}. {s['repeats']} timed epochs "
              f"per row after one warm-up epoch, rows interleaved round by round "
              f"within their group (1: A, B, C, D; 2: XLA and lstm_fused rows; 3: the "
              f"breakdown; then one per sweep shape), "
              f"one group's models alive at a time; "
              f"{s['seconds']:.0f} s in all. One process for all rows, so all run with "
              f"intra_op_threads={s.get('intra_op_threads', 0)} (0 = TensorFlow's "
              f"default), train.py's default here."]
    if s["quick"]:
        lines.append("(--quick: tiny epochs, one repeat; these numbers mean nothing.)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `python -m benchmarks.bench`.

    Returns:
      The exit status (0).
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds: tiny epochs, one repeat (CI smoke test)")
    parser.add_argument("--sweep", action="store_true",
                        help="add B and C at timesteps 10, 50, 200 x batch 64, 512")
    parser.add_argument("--breakdown", action="store_true",
                        help="add B with single diagnostics switched off")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table here")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed epochs per row (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intra_op_threads", type=int, default=0,
                        help="threads per op for every row (0 = auto, as train.py)")
    parser.add_argument("--startup", action="store_true",
                        help="whole processes, start-up included: train.py and fit on "
                             "the notebook's job for one epoch, and train.py's default run "
                             "(bench_startup.py)")
    parser.add_argument("--whole_job", action="store_true",
                        help="with --startup: also 32,000 pairs x 8 epochs (train.py, "
                             "fit at steps_per_execution 1 and 20, PyTorch if installed)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --startup: rounds of the interleaved jobs")
    args = parser.parse_args(argv)
    if args.startup:
        if args.rounds < 1:
            parser.error("--rounds must be >= 1")
        return bench_startup.main(args.rounds, args.whole_job, args.markdown,
                                  sys.argv[1:] if argv is None else argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.intra_op_threads < 0:
        parser.error("--intra_op_threads must be >= 0")
    devices.configure_threads(args.intra_op_threads)
    tf.get_logger().setLevel("ERROR")
    result = run(quick=args.quick, sweep=args.sweep, repeats=args.repeats, seed=args.seed,
                 breakdown=args.breakdown)
    text = table(result)
    print(text)
    if args.markdown:
        command = "python -m benchmarks.bench " + " ".join(
            sys.argv[1:] if argv is None else argv)
        write_markdown(args.markdown, f"`{command.strip()}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
