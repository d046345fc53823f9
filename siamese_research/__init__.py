"""siamese-research: weight sharing in Siamese networks, made visible.

One encoder object is called on both inputs of a pair; a compiled
`tf.GradientTape` loop shows that the gradient on its one set of weights is
the left branch's contribution plus the right branch's.

Importing the package registers every serialisable class with Keras, so
`keras.saving.load_model("runs/x/model.keras")` works right after it, and
changes no process-wide setting (environment, stderr, loggers). The
command-line tools quiet TensorFlow themselves (`quiet.started_as_tool`).

    import siamese_research as sr
    run = sr.load_run("runs/qa")            # best.keras, else model.keras
    run.score(["a question"], ["an answer"])
"""

__version__ = "0.1.0"

import importlib

from siamese_research import quiet as _quiet

if _quiet.started_as_tool():
    # This process is one of our tools: its console stays free of
    # TensorFlow's start-up lines. It must happen before the imports below.
    _quiet.import_tensorflow_quietly()
    _quiet.skip_shutdown_collection()

# Registration: these modules' classes are `register_keras_serializable`d
# when imported (encoders also imports fused, which registers lstm_fused).
from siamese_research.core import encoders, losses, merges  # noqa: E402,F401
from siamese_research.config import Config  # noqa: E402
from siamese_research.errors import ConfigError, DataError, UserError  # noqa: E402
from siamese_research.core.model import SiameseModel, build_model  # noqa: E402

# The rest on first use: `import siamese_research` stays as cheap as
# registration allows (no trainer, TensorBoard plugins or data pipeline).
_LAZY = {
    "Trainer": ("siamese_research.train.trainer", "Trainer"),
    "load_run": ("siamese_research.artifacts", "load_run"),
    "Run": ("siamese_research.artifacts", "Run"),
    "run": ("siamese_research.runner", "run"),
    "PairDataset": ("siamese_research.data", "PairDataset"),
    "Pairs": ("siamese_research.data", "Pairs"),
}

__all__ = ["Config", "ConfigError", "DataError", "UserError", "SiameseModel",
           "build_model", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'siamese_research' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
