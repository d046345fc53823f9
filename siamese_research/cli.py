"""What the command-line entry points share: one-line errors, exit status 2."""

from __future__ import annotations

import sys

from absl import flags


def fail(message: str, status: int = 2) -> None:
    """Prints `error: message` on stderr and exits with `status`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


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
