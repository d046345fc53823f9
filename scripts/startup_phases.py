#!/usr/bin/env python
"""Where one `train.py` run's time goes: wall seconds per phase, in-process.

    python scripts/startup_phases.py [train.py flags]

Times, around the library functions that do them: TensorFlow's import, the
data, the model build, each compiled call (the first one holds the trace),
the diagnostics' writes, validation, saving, the graph, projector and
HParams exports; and the whole run. (For the code before the layers of
455ac70, take this script from that commit's parent.)
"""

import functools
import os
import sys
import time

T0 = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import siamese_research  # noqa: E402,F401  (TensorFlow's import)

IMPORT = time.perf_counter() - T0
TIMES = {}


def wrap(owner, name, label=None, sync=False):
    fn = getattr(owner, name, None)
    if fn is None:
        return

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
            if sync and hasattr(out, "numpy"):
                out.numpy()  # the call's work is done
            return out
        finally:
            TIMES.setdefault(label or name, []).append(time.perf_counter() - start)

    setattr(owner, name, timed)


def time_compiled_calls(cls, attr: str) -> None:
    """Times each call of the compiled function every `cls` instance keeps
    as `attr` (waiting for its result), keeping its tracing count readable."""
    init = cls.__init__

    def patched(self, *a, **k):
        init(self, *a, **k)
        fn = getattr(self, attr)
        holder = type("H", (), {})()
        setattr(holder, attr, fn)  # on the instance: no descriptor binding
        wrap(holder, attr, "compiled calls", sync=True)
        timed = getattr(holder, attr)
        timed.experimental_get_tracing_count = fn.experimental_get_tracing_count
        setattr(self, attr, timed)

    cls.__init__ = patched


def main(argv):
    from siamese_research import artifacts, data
    from siamese_research.runner import building
    from siamese_research.summaries import extras, projector
    from siamese_research.train import diagnostics, loop, trainer

    wrap(data, "load", "data")
    wrap(building, "build", "model build")
    wrap(artifacts, "save_models", "save model.keras, encoder.keras")
    wrap(extras, "write_branch_graph", "branch graph")
    wrap(extras, "write_hparams", "hparams")
    wrap(projector, "export_validation_projector", "projector")
    wrap(trainer.Trainer, "evaluate", "validation")
    wrap(trainer.Trainer, "fit", "fit (all epochs)")
    wrap(diagnostics.Diagnostics, "write", "diagnostics writes")
    time_compiled_calls(loop.StepLoop, "run")
    from siamese_research.tools.train import main as train_main

    start = time.perf_counter()
    code = train_main(["train.py", "--verbose=0"] + argv)
    run = time.perf_counter() - start
    print("| phase | calls | seconds (first call) |")
    print("| --- | ---: | ---: |")
    print(f"| import siamese_research (TensorFlow, Keras) | 1 | {IMPORT:.2f} |")
    for name, values in TIMES.items():
        first = f" ({values[0]:.2f})" if len(values) > 1 else ""
        print(f"| {name} | {len(values)} | {sum(values):.2f}{first} |")
    print(f"| train.py's main, in all | 1 | {run:.2f} |")
    print(f"| the process so far | | {time.perf_counter() - T0:.2f} |")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
