"""`run(config)`: everything `train.py` does, as one library call, in phases.

    set_up -> load_data -> assemble -> open_run -> train -> finish

The config, the data and the model are all checked before the run folder is
touched (modules `setup`, `building`); from `open_run` on, the chief writes
it, holding its lock (`session`); `fit.train` trains through the loop's one
hook system, and `outputs.finish` writes what a finished run holds.
"""

from __future__ import annotations

from typing import Optional

from siamese_research.config import Config
from siamese_research.errors import EXIT_INTERRUPTED, EXIT_NONFINITE, WriteError  # noqa: F401
from siamese_research.runner.building import assemble, build, build_optimizer  # noqa: F401
from siamese_research.runner.outputs import finish
from siamese_research.runner.fit import RunResult, train
from siamese_research.runner.session import announce, open_run
from siamese_research.runner.setup import load_data, prepare_run_dir, set_up  # noqa: F401
from siamese_research.train import checkpoints


def run(config: Config, *, argv: Optional[list] = None) -> RunResult:
    """Trains one run into `config.run_dir`; returns a `RunResult`.

    Args:
      config: the run's settings.
      argv: the command line recorded in command.txt (default `sys.argv`).

    Raises:
      UserError: bad flags, data or checkpoint (before anything is written
        when it can be known up front), or a run folder another process
        writes.
      WriteError: a file of the run could not be written; it names the
        last complete checkpoint, from which the same command resumes.
    """
    setup = set_up(config)
    data = load_data(config)
    built = assemble(config, data.pairs, setup)
    try:
        session = open_run(config, setup, data, built, argv)
    except WriteError as e:
        raise e.with_checkpoint(checkpoints.latest(config.run_dir)) from None
    try:
        announce(config, setup, data, session)
        result = train(config, setup, data, session)
        if result["exit_code"] == 0:
            finish(config, setup, data, session, result)
        return result
    except WriteError as e:
        raise e.with_checkpoint(session.checkpointer.latest) from None
    finally:
        session.close()


__all__ = ["run", "build", "RunResult"]
