"""`run(config)`: everything `train.py` does, as one library call.

Order matters for "nothing half-written": the config, the data and the model
are all checked before the run folder is touched.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Optional

import keras
import tensorflow as tf

from siamese_research.train import callbacks as callbacks_lib
from siamese_research.train import checkpoints as ckpt_lib
from siamese_research import data as data_lib
from siamese_research.runner import devices
from siamese_research.core import gpu
from siamese_research.core import losses
from siamese_research.summaries import views as summaries
from siamese_research.summaries import extras as tensorboard_extras
from siamese_research.core import model as model_lib
from siamese_research import artifacts
from siamese_research.config import Config
from siamese_research.data import files
from siamese_research.errors import EXIT_INTERRUPTED, EXIT_NONFINITE, ConfigError, UserError
from siamese_research.text import vectors
from siamese_research.train.trainer import NonFiniteError, Trainer

class RunResult(dict):
    """What a run returns: history, final metrics, parameter counts, paths,
    and `exit_code` (0, or 130/143 interrupted, 3 non-finite)."""


def build_optimizer(name: str, learning_rate: float):
    classes = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
               "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
               "adagrad": keras.optimizers.Adagrad, "nadam": keras.optimizers.Nadam}
    if name not in classes:
        raise ConfigError("optimizer", name, f"expected one of {', '.join(classes)}")
    return classes[name](learning_rate=learning_rate)


def prepare_run_dir(run_dir: str) -> None:
    """Checks that `run_dir` can be a run folder before anything is written."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError("run_dir", run_dir, "exists and is not a folder")
    parent = run_dir
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    parent = parent or "."
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError("run_dir", run_dir, f"cannot write in {parent}")


def build(config: Config, data: data_lib.PairData, strategy=None):
    """Builds (model, loss_fn, optimizer) in the strategy's scope.

    With `--embeddings`, the vector file is read here (before the run folder
    exists) and its coverage left in `data.embedding_coverage` for the run to
    print and record.
    """
    strategy = strategy or tf.distribute.get_strategy()
    vocab = 0
    if data.vectorizer is not None:
        vocab = files.id_count(data.vectorizer, config)
    found = None
    if config.embeddings or config.freeze_embeddings:
        if not vocab:
            flag = "embeddings" if config.embeddings else "freeze_embeddings"
            raise ConfigError(flag, getattr(config, flag), "needs a text pair file "
                              "(.csv/.tsv/.jsonl): these sequences have no embedding")
    if config.embeddings:
        found = vectors.for_vocabulary(config.embeddings, data.vectorizer,
                                       frozen=config.freeze_embeddings)
    with strategy.scope():
        # (First: it refuses a loss the merge cannot serve, in one line.)
        loss_fn = losses.build_loss(config.loss, merge=config.merge, margin=config.margin,
                                    temperature=config.temperature)
        model = model_lib.build_model(
            encoder=config.encoder, units=config.units, features=config.features,
            merge=config.merge, share=config.share, vocab_size=vocab,
            encoder_args=config.encoder_kwargs, masked=data.padded or vocab > 0,
            objective=losses.OBJECTIVES.get(config.loss, "pair"))
        if config.embedding_init == "idf":
            if not vocab:
                raise ConfigError("embedding_init", "idf", "needs a text pair file "
                                  "(.csv/.tsv/.jsonl): these sequences have no embedding")
            model_lib.scale_embeddings(model, files.token_idf(data.train, vocab))
        if found is not None:
            ids, rows, data.embedding_coverage = found
            model_lib.set_embedding_rows(model, ids, rows)
        if config.freeze_embeddings:
            model_lib.freeze_embeddings(model)
        optimizer = build_optimizer(config.optimizer, config.learning_rate)
    return model, loss_fn, optimizer


def _say(config: Config, *lines) -> None:
    if config.verbose:
        for line in lines:
            print(line, flush=True)


def run(config: Config, *, argv: Optional[list] = None) -> RunResult:
    """Trains one run into `config.run_dir`; returns a `RunResult`.

    Raises:
      UserError: bad flags, data or checkpoint (before anything is written
        when it can be known up front).
    """
    # First: the thread setting and MultiWorkerMirroredStrategy's collectives
    # must be configured before anything initialises TensorFlow's context.
    devices.configure_threads(config.intra_op_threads)
    strategy = devices.make_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    prepare_run_dir(config.run_dir)
    resuming = not config.restart and ckpt_lib.has_checkpoint(config.run_dir)
    if resuming:
        ckpt_lib.check_compatible(config.run_dir, config)
    on_gpu = gpu.gpu_visible()
    # The dtype policy must be set before the model is built.
    policy = gpu.mixed_precision_setup(config.mixed_precision, on_gpu)
    # A loss the merge cannot serve is refused before any data is read.
    losses.check_loss(config.loss, config.merge)
    data = data_lib.load(config)
    model, loss_fn, optimizer = build(config, data, strategy)
    gpu.check_jit(config.jit_compile, on_gpu, model)
    gpu.warn_cudnn(model, on_gpu)
    with strategy.scope():
        optimizer = gpu.wrap_optimizer(optimizer, policy)
    scale_loss = (optimizer.scale_loss
                  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None)
    chief = devices.is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    if config.jit_compile and config.strategy in ("mirrored", "multi_worker"):
        # A mirrored update (even over one device) is a cross-replica sum,
        # which cannot sit in the XLA-compiled step.
        raise ConfigError("jit_compile", True, f"works with --strategy=one_device or auto "
                          f"on one device only, not --strategy={config.strategy}")
    if config.jit_compile and replicas > 1:
        raise ConfigError("jit_compile", True, "works with one device only (the update's "
                          "cross-replica sum cannot sit in XLA)")
    if config.batch_size % replicas:
        raise ConfigError("batch_size", config.batch_size,
                          f"must be divisible by the {replicas} replicas")
    train_ds = data_lib.train_dataset(data.train, config)
    val_ds = (data_lib.PairDataset(data.validation, config.batch_size, shuffle=False)
              if data.validation is not None and len(data.validation) else None)

    # From here on the run folder is written (by the chief only).
    if chief:
        try:
            os.makedirs(config.run_dir, exist_ok=True)
            probe = os.path.join(config.run_dir, ".write_test")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise ConfigError("run_dir", config.run_dir,
                              f"cannot write there ({e.strerror})") from None
    if config.restart and chief:
        artifacts.clear_run(config.run_dir)
    trainer = Trainer(model, loss_fn=loss_fn, optimizer=optimizer, strategy=strategy,
                      writers=None, steps_per_execution=config.steps_per_execution,
                      log_every=config.log_every, histogram_every=config.histogram_every,
                      grad_check_every=config.grad_check_every,
                      gate_gradients=config.gate_gradients,
                      on_nonfinite=config.on_nonfinite, jit_compile=config.jit_compile,
                      scale_loss=scale_loss, loss_name=config.loss, verbose=config.verbose)
    ckpt_dir = os.path.join(config.run_dir, "checkpoints")
    with strategy.scope():
        checkpointer = ckpt_lib.Checkpointer(
            ckpt_dir, model=model, optimizer=optimizer, global_step=trainer.global_step,
            max_to_keep=config.keep_checkpoints, every=config.checkpoint_every)
    restored = checkpointer.restore_latest() if resuming else None
    writers = summaries.create_writers(config.run_dir) if chief else None
    trainer.writers = writers  # before the first trace, which reads it
    if chief:
        with open(os.path.join(config.run_dir, "config.json"), "w") as f:
            f.write(config.to_json() + "\n")
        with open(os.path.join(config.run_dir, "command.txt"), "w") as f:
            f.write(" ".join(argv if argv is not None else sys.argv) + "\n")
    if data.vectorizer is not None and chief:
        files.save_vectorizer(data.vectorizer, config.run_dir)

    enc_params = model_lib.count_params(model_lib.encoder_variables(model))
    total_params = model_lib.count_params(model.trainable_variables)
    _say(config, f"Data: {data.description}; {len(data.train)} train / "
                 f"{len(data.validation) if data.validation is not None else 0} "
                 f"validation pairs",
         f"Training on {devices.describe(strategy)}",
         f"Model: {config.encoder}({config.units}) x {config.share}, "
         f"merge={config.merge}, loss={config.loss}; {total_params:,} parameters")
    if data.embedding_coverage is not None:  # --embeddings: what the file covered
        _say(config, data.embedding_coverage.line())
        if chief:
            data.embedding_coverage.save(config.run_dir)
    if restored:
        _say(config, f"Resuming from {restored} (step {int(trainer.global_step.numpy())})")
    if writers is not None and not restored:
        with writers[summaries.TRAIN].as_default():
            summaries.text("config", "```\n" + config.to_json() + "\n```")
            summaries.text("model_summary", model_lib.parameter_table(model))
            tensorboard_extras.write_custom_scalars_layout(writers[summaries.TRAIN])

    callbacks = []
    best = None
    if val_ds is not None:
        best = callbacks_lib.BestModel(config.run_dir, config.monitor, save=chief,
                                       resume=restored is not None)
        callbacks.append(best)
        if config.patience:
            callbacks.append(callbacks_lib.Patience(
                config.monitor, config.patience, best,
                completed=int(trainer.global_step.numpy()) // train_ds.steps_per_epoch))
    stop = {"signal": None}
    previous = _install_signal_handlers(stop)
    t0 = time.perf_counter()
    result = RunResult(run_dir=config.run_dir, total_parameters=total_params,
                       encoder_parameters=enc_params, tied=model.tied, exit_code=0)
    try:
        history = trainer.fit(
            train_ds, val_ds, epochs=config.epochs,
            on_progress=checkpointer.maybe_save if chief else None,
            progress_every=config.checkpoint_every,
            should_stop=lambda: stop["signal"] is not None,
            on_epoch_end=(lambda e, logs: checkpointer.save(
                int(trainer.global_step.numpy()), e + 1)) if chief else None,
            callbacks=callbacks)
    except NonFiniteError as e:
        trainer.flush()
        last = checkpointer.latest
        if chief:
            # Nothing of the bad step was applied (on any strategy): the state
            # is step e.step - 1's, the last good one. Keep it (older stay too).
            last = checkpointer.save(e.step - 1)
        if config.verbose:
            print(file=sys.stdout, flush=True)  # end the progress bar's line
        print(f"error: {e}; stopped without applying it. Last good checkpoint: "
              f"{last or 'none'}. Lower --learning_rate, check the data, or use "
              f"--on_nonfinite=skip.", file=sys.stderr)
        result.update(exit_code=EXIT_NONFINITE, nonfinite_step=e.step, nonfinite=e.what)
        return result
    finally:
        _restore_signal_handlers(previous)
    seconds = time.perf_counter() - t0
    result.update(history=history, seconds=seconds, model=model,
                  step=int(trainer.global_step.numpy()),
                  tracing_count=trainer.tracing_count,
                  max_sum_error=trainer.max_sum_error,
                  nonfinite_steps=int(trainer.nonfinite_count.numpy()))
    if history["interrupted"]:
        step = int(trainer.global_step.numpy())
        if chief:
            checkpointer.save(step, step // train_ds.steps_per_epoch)
        trainer.flush()
        signum = stop["signal"]
        print(f"Interrupted by {signal.Signals(signum).name} at step {step}; "
              f"checkpoint saved in {ckpt_dir}. Resume with the same command "
              f"(--run_dir={config.run_dir}).", file=sys.stderr)
        result.update(exit_code=EXIT_INTERRUPTED.get(signum, 130))
        return result
    final = history["epochs"][-1] if history["epochs"] else {}
    result.update(final=final, stopped_early=history["stopped_early"])
    if best is not None and best.best_epoch is not None:
        result.update(best_epoch=best.best_epoch, best_value=best.best,
                      best_path=os.path.join(config.run_dir, "best.keras"))
    if val_ds is not None:
        # The last epoch's validation scored these weights already (no
        # callback here changes them after it); a run that trained nothing
        # here scores them now (every worker: the eval step's gather is a
        # collective).
        scored_at, preds = trainer.validation_scores
        if scored_at != result["step"]:
            _, preds = trainer.evaluate(val_ds)
        result.update(validation_predictions=preds)
    if chief:
        result.update(artifacts.save_models(model, config.run_dir))
        if history["epochs"]:  # (a finished run run again trains nothing)
            artifacts.save_threshold(config.run_dir, trainer.threshold,
                                     fitted=not trainer.fixed_threshold)
        # As the train step traced it (a run that trained no step here traces
        # it now). (A later process writes it again: one graph, the latest
        # shown.)
        tensorboard_extras.write_branch_graph(
            writers[summaries.TRAIN], trainer.step.branch_graph(train_ds.element_spec))
        if history["epochs"]:
            tensorboard_extras.write_hparams(
                None, config, dict(final, max_sum_error=result["max_sum_error"]),
                step=result["step"])
        if val_ds is not None and config.projector_points:
            tensorboard_extras.export_validation_projector(
                config.run_dir, model, val_ds, max_points=config.projector_points)
    trainer.flush()
    _say(config, *final_words(config, result, model, trainer))
    return result


def final_words(config: Config, result: dict, model, trainer) -> list:
    final = result.get("final", {})
    k = len(model.branches)
    branches = (f"{k} branches (tied: one encoder)" if model.tied else
                f"{k} branches (untied: one encoder each)")
    lines = [
        "",
        f"Parameters: {result['total_parameters']:,} total; encoder "
        f"{result['encoder_parameters']:,}, counted once, called by {branches}",
        "Final: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()
                              if k != "epoch" and isinstance(v, float)),
    ]
    err = trainer.last_sum_error
    if err is not None:
        lines.append(f"Branch check: {' + '.join(model.branches)} = total, max relative "
                     f"error "
                     f"{result['max_sum_error']:.1e} (last {err:.1e})")
    if "best_epoch" in result:
        lines.append(f"Best epoch: {result['best_epoch']} ({config.monitor} "
                     f"{result['best_value']:.4f}), saved as best.keras; model.keras is "
                     f"the last" + (" (stopped early: --patience)"
                                    if result.get("stopped_early") else ""))
    lines.append(f"Finished {result['step']} steps in {result['seconds']:.1f} s")
    lines.append(f"TensorBoard: tensorboard --logdir {config.run_dir}")
    return lines


def _install_signal_handlers(stop: dict):
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        stop["signal"] = signum

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


__all__ = ["run", "build", "RunResult", "UserError"]
