"""The package's quiet start: whether this process is one of its tools, and
TensorFlow imported without its start-up lines. Pure Python: the package's
`__init__` calls it before anything imports TensorFlow."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import warnings

from absl import logging as absl_logging

# The package's command-line tools: `python -m siamese_research.tools.<tool>` and
# these console scripts (setup.cfg), and the repository's train.py.
CONSOLE_SCRIPTS = ("siamese-train", "siamese-evaluate", "siamese-predict",
                   "siamese-encode", "siamese-search", "siamese-export")
PACKAGE = "siamese_research"


def started_as_tool(argv=None, orig_argv=None) -> bool:
    """Whether this process is one of the package's own command-line tools.

    Read from the command line, because the package's `__init__` (which
    imports TensorFlow) runs before any tool's module: `python -m
    siamese_research.X`, a console script named in `CONSOLE_SCRIPTS`, or the
    repository's `train.py`. A program that merely imports the package is
    none of these, and keeps its own settings.

    Args:
      argv, orig_argv: default `sys.argv`, `sys.orig_argv` (for tests).
    """
    argv = list(getattr(sys, "argv", None) or [""]) if argv is None else argv
    orig_argv = list(getattr(sys, "orig_argv", None) or []) if orig_argv is None \
        else orig_argv
    for i, arg in enumerate(orig_argv[1:], start=1):
        if arg == "-m":
            module = orig_argv[i + 1] if i + 1 < len(orig_argv) else ""
        elif arg.startswith("-m"):
            module = arg[2:]
        else:
            continue
        return module == PACKAGE or module.startswith(PACKAGE + ".")
    program = argv[0] if argv else ""
    name = os.path.basename(program)
    for suffix in ("-script.py", "-script.pyw", ".exe"):  # Windows launchers
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    if name in CONSOLE_SCRIPTS:
        return True
    repo_train = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "train.py")
    return bool(program) and os.path.abspath(program) == repo_train


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and Keras without their C++ start-up lines on the
    console. For entry points only: it changes process-wide settings.

    TF_CPP_MIN_LOG_LEVEL=3 (unless the user set it) silences TensorFlow's own
    logging; the "All log messages before absl::InitializeLog()" lines that
    the import itself prints ignore it, so stderr is closed for the import
    only. A failing import still raises its Python error, after stderr is
    restored.
    """
    if "tensorflow" in sys.modules or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        saved = os.dup(2)
    except OSError:  # no stderr file descriptor (embedded interpreters)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def skip_shutdown_collection() -> None:
    """At exit, skips Python's last garbage collection. For entry points only.

    A tool's process ends when its `main` returns, and the interpreter's
    shutdown then walks every cyclic object TensorFlow and Keras made
    (graphs, ops, traced functions), only for the OS to take the memory
    back: 0.6-0.7 s of a default `python train.py` (2-core CPU, 2026-12-02).
    An exit handler freezes them first (`gc.freeze`), so that collection
    skips them. Nothing a tool writes waits on it, because every summary
    write sits in a writer's `as_default()` (which flushes on leaving) or is
    followed by a `flush()` or `close()`, and every file is closed before
    `main` returns. A writer left unflushed in cyclic garbage would lose its
    queued events: keep that rule.
    """
    atexit.register(gc.freeze)


def quiet_python_logging() -> None:
    """No TensorFlow or Keras Python log lines or warnings on the console
    (the C++ ones are `import_tensorflow_quietly`'s). For entry points only.
    `tf.get_logger()` is the logger named "tensorflow"."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    absl_logging.set_verbosity(absl_logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
    warnings.filterwarnings("ignore", module="tensorflow")
