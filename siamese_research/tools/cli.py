"""What the command-line tools share: flag parsing, one-line errors, exit
status 2."""

from __future__ import annotations

import contextlib
import sys

from absl import flags

from siamese_research.errors import EXIT_WRITE_FAULT, UserError, WriteError


def fail(message: str, status: int = 2) -> None:
    """Prints `error: message` on stderr and exits with `status`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


@contextlib.contextmanager
def one_line_errors():
    """Within: a `UserError` is one line and exit status 2, a `WriteError`
    (no space, no permission) one line and exit status 4."""
    try:
        yield
    except UserError as e:
        fail(str(e))
    except WriteError as e:
        fail(str(e), EXIT_WRITE_FAULT)


def parse(fv: flags.FlagValues, argv, doc: str) -> None:
    """Parses `argv` into `fv`; --help prints `doc` and the flags and exits 0.

    A flag error or a stray argument is one line and exit status 2 (absl's
    own parser would print the usage and exit 1).
    """
    if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
        print(doc)
        print(fv.get_help())
        sys.exit(0)
    try:
        rest = fv(argv)
    except flags.Error as e:
        fail(str(e))
    if len(rest) > 1:
        fail(f"unexpected argument {rest[1]!r}; flags look like --name=value")


WHICH_HELP = ("best: best.keras, the epoch --monitor picked (model.keras if the run "
              "kept none); last: model.keras")


def define_run_flags(fv: flags.FlagValues, *, run_help: str = "a finished run folder",
                     batch_size: int = 0, batch_help: str = "") -> None:
    """The flags every tool that uses a trained run shares: --run_dir,
    --which and (with `batch_size`) --batch_size."""
    flags.DEFINE_string("run_dir", None, run_help, flag_values=fv)
    flags.DEFINE_enum("which", "best", ["best", "last"], WHICH_HELP, flag_values=fv)
    if batch_size:
        flags.DEFINE_integer("batch_size", batch_size, batch_help, flag_values=fv)


def require_positive(fv: flags.FlagValues, *names: str) -> None:
    """Fails (one line, exit 2) on the first of `names` that is not > 0."""
    for name in names:
        if fv[name].value <= 0:
            fail(f"--{name}={fv[name].value}: must be a positive integer")


def require(fv: flags.FlagValues, *names: str) -> None:
    """Fails (one line, exit 2) on the first of `names` left unset."""
    for name in names:
        if fv[name].value in (None, ""):
            fail(f"--{name} is required")
