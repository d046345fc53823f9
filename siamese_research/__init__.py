"""siamese-research: weight sharing in Siamese networks, made visible.

One encoder object is called on both inputs of a pair; a compiled
`tf.GradientTape` loop shows that the gradient on its one set of weights is
the left branch's contribution plus the right branch's.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow without its C++ start-up log lines on the console.

    TF_CPP_MIN_LOG_LEVEL=3 (unless the user set it) silences TensorFlow's own
    logging; the "All log messages before absl::InitializeLog()" lines that
    the import itself prints ignore it, so stderr is closed for the import
    only. A failing import still raises its Python error, after stderr is
    restored.
    """
    if "tensorflow" in _sys.modules or "TF_CPP_MIN_LOG_LEVEL" in _os.environ:
        return
    _os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        saved = _os.dup(2)
    except OSError:  # no stderr file descriptor (embedded interpreters)
        return
    devnull = _os.open(_os.devnull, _os.O_WRONLY)
    try:
        _sys.stderr.flush()
        _os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
        import keras  # noqa: F401
    finally:
        _os.dup2(saved, 2)
        _os.close(saved)
        _os.close(devnull)


_import_tensorflow_quietly()
