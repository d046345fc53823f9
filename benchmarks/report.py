"""What every benchmark table reports beside its numbers: the machine, the
load, and the Markdown block it replaces in a notes file."""

from __future__ import annotations

import datetime
import os
import platform

import keras
import tensorflow as tf

def machine(load_before=None, load_after=None) -> dict:
    """CPU model, cores, versions, date and load average."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable,
            "gpus": len(tf.config.list_physical_devices("GPU")),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"),
            "load_before": load_before, "load_after": load_after}


def loadavg():
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return None


START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def write_markdown(path: str, text: str, markers=(START, END)) -> None:
    """Writes `text` between the markers of `path`, keeping the
    hand-written notes around them; a new file gets a title and the markers.

    Args:
      path: the Markdown file.
      text: the generated table.
      markers: (start, end) comments that delimit the generated block.
    """
    START, END = markers
    block = f"{START}\n{text}\n{END}"
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if START in old and END in old and old.index(START) < old.index(END):
        new = old[:old.index(START)] + block + old[old.index(END) + len(END):]
    elif old:
        new = old.rstrip("\n") + f"\n\n{block}\n"
    else:
        new = f"# Benchmarks\n\n{block}\n"
    with open(path, "w") as f:
        f.write(new)
