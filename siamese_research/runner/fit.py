"""Training (`train`): the run's actions, the fit, and how it ended."""

from __future__ import annotations

import os
import signal
import sys
import time

from siamese_research import artifacts
from siamese_research.config import Config
from siamese_research.core import model as model_lib
from siamese_research.errors import EXIT_INTERRUPTED, EXIT_NONFINITE
from siamese_research.runner.setup import Data, Setup
from siamese_research.runner.session import Session
from siamese_research.train import callbacks as callbacks_lib
from siamese_research.train import mining as mining_lib
from siamese_research.train.step import NonFiniteError


class RunResult(dict):
    """What a run returns: history, final metrics, parameter counts, paths,
    and `exit_code` (0, or 130/143 interrupted, 3 non-finite)."""


def actions(config: Config, setup: Setup, data: Data, session: Session) -> list:
    """The run's hooks, in the order they see an epoch's end: the best
    epoch, patience (which reads it), the threshold and checkpoints (chief:
    an epoch's files are on disk before its checkpoint), signals; and, at
    an epoch's begin, the hard-negative mining."""
    out = []
    trainer = session.trainer
    if config.negatives == "hard":
        lo, hi = config.mine_window
        out.append(mining_lib.Mining(data.train, every=config.mine_every, lo=lo, hi=hi,
                                     margin=config.mine_margin_value,
                                     run_dir=config.run_dir, save=setup.chief,
                                     verbose=config.verbose))
    if data.validation is not None:
        best = callbacks_lib.BestModel(config.run_dir, config.monitor, save=setup.chief,
                                       resume=session.restored is not None)
        out.append(best)
        if config.patience:
            done = int(session.trainer.global_step.numpy()) // data.train.steps_per_epoch
            out.append(callbacks_lib.Patience(config.monitor, config.patience, best,
                                              completed=done))
    # Interrupt before Checkpointing: its handlers are restored at the fit's
    # end even if the interrupted run's checkpoint cannot be written.
    out.append(callbacks_lib.Interrupt())
    if setup.chief:
        out.append(callbacks_lib.AtEpochEnd(lambda epoch, logs: artifacts.save_threshold(
            config.run_dir, trainer.threshold, fitted=not trainer.fixed_threshold)))
    # On every worker: its step_interval ends the calls, which must pair
    # across workers (their reads are collectives); only the chief saves.
    out.append(callbacks_lib.Checkpointing(session.checkpointer,
                                           data.train.steps_per_epoch, save=setup.chief))
    return out


def train(config: Config, setup: Setup, data: Data, session: Session) -> RunResult:
    """Fits to `config.epochs`; a non-finite step or a signal ends the run
    with its own exit code, its last good state checkpointed."""
    trainer, model = session.trainer, session.trainer.model
    hooks = actions(config, setup, data, session)
    result = RunResult(
        run_dir=config.run_dir, tied=model.tied, exit_code=0,
        total_parameters=model_lib.count_params(model.trainable_variables),
        encoder_parameters=model_lib.count_params(model_lib.encoder_variables(model)))
    t0 = time.perf_counter()
    try:
        history = trainer.fit(data.train, data.validation, epochs=config.epochs,
                              callbacks=hooks)
    except NonFiniteError as e:
        return nonfinite(config, setup, session, result, e)
    result.update(history=history, seconds=time.perf_counter() - t0, model=model,
                  step=int(trainer.global_step.numpy()),
                  tracing_count=trainer.tracing_count,
                  max_sum_error=trainer.max_sum_error,
                  nonfinite_steps=int(trainer.nonfinite_count.numpy()))
    if history["interrupted"]:
        trainer.flush()
        signum = next(h.signal for h in hooks if isinstance(h, callbacks_lib.Interrupt)) \
            or signal.SIGINT
        print(f"Interrupted by {signal.Signals(signum).name} at step {result['step']}; "
              f"checkpoint saved in {session.checkpointer.directory}. Resume with the "
              f"same command (--run_dir={config.run_dir}).", file=sys.stderr)
        result.update(exit_code=EXIT_INTERRUPTED.get(signum, 130))
        return result
    result.update(final=history["epochs"][-1] if history["epochs"] else {},
                  stopped_early=history["stopped_early"])
    best = next((h for h in hooks if isinstance(h, callbacks_lib.BestModel)), None)
    if best is not None and best.best_epoch is not None:
        result.update(best_epoch=best.best_epoch, best_value=best.best,
                      best_path=os.path.join(config.run_dir,
                                             artifacts.MODEL_FILES["best"]))
    return result


def nonfinite(config: Config, setup: Setup, session: Session, result: RunResult,
              error: NonFiniteError) -> RunResult:
    """Keeps the last good state (nothing of the bad step was applied, on any
    strategy: the state is step `error.step - 1`'s) and says what to do."""
    session.trainer.flush()
    last = session.checkpointer.latest
    if setup.chief:
        last = session.checkpointer.save(error.step - 1)
    if config.verbose:
        print(file=sys.stdout, flush=True)  # end the progress bar's line
    print(f"error: {error}; stopped without applying it. Last good checkpoint: "
          f"{last or 'none'}. Lower --learning_rate, check the data, or use "
          f"--on_nonfinite=skip.", file=sys.stderr)
    result.update(exit_code=EXIT_NONFINITE, nonfinite_step=error.step,
                  nonfinite=error.what)
    return result
