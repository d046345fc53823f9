"""Opening the run folder (`open_run`): from here on the run writes, and
only its chief does, holding the folder's lock (`atomic.FolderLock`) until
the run ends. The trainer, its checkpoints (restored when the run resumes)
and its TensorBoard writers are made here; the writers first: what the
step compiles depends on whether it has writers."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional

from siamese_research import artifacts, atomic
from siamese_research.config import Config
from siamese_research.core import model as model_lib
from siamese_research.data import vocab
from siamese_research.errors import ConfigError
from siamese_research.runner import devices
from siamese_research.runner.building import Built
from siamese_research.runner.setup import Data, Setup
from siamese_research.summaries import events, extras
from siamese_research.summaries import views as summaries
from siamese_research.train.checkpoints import Checkpointer
from siamese_research.train.trainer import Trainer


@dataclasses.dataclass
class Session:
    """An open run: its trainer, checkpoints and writers (None on workers)."""

    trainer: Trainer
    checkpointer: Checkpointer
    writers: Optional[dict]
    restored: Optional[str]  # the checkpoint resumed from
    lock: Optional[atomic.FolderLock] = None  # the chief's, held until `close`

    def close(self) -> None:
        """Flushes the writers as far as they got and drops the lock."""
        try:
            self.trainer.flush()
        except Exception:  # noqa: BLE001 (a full disk: keep what was written)
            pass
        if self.lock is not None:
            self.lock.release()


def open_run(config: Config, setup: Setup, data: Data, built: Built,
             argv: Optional[list] = None) -> Session:
    """Creates (or reopens) the run folder and takes its lock, then the
    trainer and its checkpoints, restores the latest when resuming, and
    records the run's files.

    Raises:
      RunFolderBusy: another process writes the folder (nothing written).
      WriteError: a file of the run could not be written.
    """
    lock = make_folder(config) if setup.chief else None
    folders = [os.path.join(config.run_dir, sub) for sub in
               (summaries.TRAIN, summaries.VALIDATION)] if setup.chief else []
    earlier = events.event_files(*folders)
    try:
        return _open(config, setup, data, built, argv, lock, earlier)
    except BaseException:
        # Refused (a checkpoint that does not fit, a fault): the event files
        # this process opened hold nothing; they go, and so does the lock.
        for path in set(events.event_files(*folders)) - set(earlier):
            os.remove(path)
        if lock is not None:
            lock.release()
        raise


def _open(config, setup, data, built, argv, lock, earlier) -> Session:
    writers = summaries.create_writers(config.run_dir) if setup.chief else None
    trainer = Trainer(
        built.model, loss_fn=built.loss_fn, optimizer=built.optimizer,
        strategy=setup.strategy, writers=writers,
        steps_per_execution=config.steps_per_execution, log_every=config.log_every,
        histogram_every=config.histogram_every, grad_check_every=config.grad_check_every,
        gate_gradients=config.gate_gradients, on_nonfinite=config.on_nonfinite,
        jit_compile=config.jit_compile, scale_loss=built.scale_loss,
        loss_name=config.loss, verbose=config.verbose,
        mini_batch_size=config.mini_batch_size)
    with setup.strategy.scope():
        checkpointer = Checkpointer(
            os.path.join(config.run_dir, artifacts.CHECKPOINTS), model=built.model,
            optimizer=built.optimizer, global_step=trainer.global_step,
            max_to_keep=config.keep_checkpoints, every=config.checkpoint_every)
    if setup.chief:
        checkpointer.remove_partials()
    restored = checkpointer.restore_latest() if setup.resuming else None
    if setup.chief:
        # What earlier processes wrote past the step this one starts from
        # (all of it, when nothing is restored) is written again from here.
        events.cut_after(earlier, int(trainer.global_step.numpy()) if restored else -1)
        record(config, data, argv)
    return Session(trainer, checkpointer, writers, restored, lock)


def make_folder(config: Config) -> atomic.FolderLock:
    """The run folder, writable and locked for this process, cleared of what
    a killed writer left; with --restart, emptied of the old run."""
    try:
        os.makedirs(config.run_dir, exist_ok=True)
        lock = atomic.FolderLock(config.run_dir).acquire()
    except OSError as e:
        raise ConfigError("run_dir", config.run_dir,
                          f"cannot write there ({e.strerror})") from None
    for folder in (config.run_dir, os.path.join(config.run_dir, summaries.TRAIN),
                   os.path.join(config.run_dir, summaries.VALIDATION)):
        atomic.remove_partials(folder)
    if config.restart:
        artifacts.clear_run(config.run_dir)
    return lock


def record(config: Config, data: Data, argv: Optional[list]) -> None:
    """config.json, command.txt, the vectoriser and the embedding coverage."""
    artifacts.write_text(config.run_dir, artifacts.CONFIG_FILE, config.to_json())
    artifacts.write_text(config.run_dir, artifacts.COMMAND_FILE,
                         " ".join(argv if argv is not None else sys.argv))
    if data.pairs.vectorizer is not None:
        vocab.save_vectorizer(data.pairs.vectorizer, config.run_dir)
    if data.pairs.embedding_coverage is not None:
        data.pairs.embedding_coverage.save(config.run_dir)


def announce(config: Config, setup: Setup, data: Data, session: Session) -> None:
    """What the run is, on the console and (a new run) in TensorBoard's text."""
    model, pairs = session.trainer.model, data.pairs
    validation = len(pairs.validation) if pairs.validation is not None else 0
    say(config, f"Data: {pairs.description}; {len(pairs.train)} train / "
                f"{validation} validation pairs",
        f"Training on {devices.describe(setup.strategy)}",
        f"Model: {config.encoder}({config.units}) x {config.share}, "
        f"merge={config.merge}, loss={config.loss}; "
        f"{model_lib.count_params(model.trainable_variables):,} parameters")
    if pairs.embedding_coverage is not None:  # --embeddings: what the file covered
        say(config, pairs.embedding_coverage.line())
    if session.restored:
        say(config, f"Resuming from {session.restored} "
                    f"(step {int(session.trainer.global_step.numpy())})")
    if session.writers is not None and not session.restored:
        with session.writers[summaries.TRAIN].as_default():
            summaries.text("config", "```\n" + config.to_json() + "\n```")
            summaries.text("model_summary", model_lib.parameter_table(model))
            extras.write_custom_scalars_layout(session.writers[summaries.TRAIN])


def say(config: Config, *lines) -> None:
    if config.verbose:
        for line in lines:
            print(line, flush=True)
