"""Where training runs: device and `tf.distribute` strategy selection."""

from __future__ import annotations

import tensorflow as tf

from siamese_research.core import gpu
from siamese_research.errors import ConfigError


def gpus() -> list:
    return tf.config.list_logical_devices("GPU")


def configure_threads(intra_op: int = 0) -> int:
    """Sets how many threads one TensorFlow op may use; call it before
    anything initialises TensorFlow's runtime (listing logical devices does).

    Args:
      intra_op: a thread count, or 0 = auto: 1 on a machine without a GPU,
        TensorFlow's default (every core) with one. On a CPU this model's ops
        are small: splitting one across cores costs more than it saves, while
        one thread per op lets the left and the right branch's ops run side by
        side (inter-op parallelism). Measured in docs/performance.md.

    Returns:
      The setting in force (0 = TensorFlow's default). Once TensorFlow has
      started in this process (a second run in one notebook), it cannot change
      and the current setting is kept.
    """
    want = intra_op or (0 if gpu.gpu_visible() else 1)
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if want == current:
        return current
    try:
        tf.config.threading.set_intra_op_parallelism_threads(want)
    except RuntimeError:  # "cannot be modified after initialization"
        return current
    return want


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy for `--strategy`.

    auto: mirrored over all GPUs when more than one is visible, else one
    device (the GPU when there is one, the CPU otherwise). mirrored with no
    GPU uses every logical CPU device (how it is tested on one machine).
    """
    if name == "multi_worker":
        # Before anything else touches TensorFlow's context (listing devices
        # does): collectives must be configured at program start-up.
        return tf.distribute.MultiWorkerMirroredStrategy()
    visible = gpus()
    if name == "auto":
        name = "mirrored" if len(visible) > 1 else "one_device"
    if name == "one_device":
        device = visible[0].name if visible else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    if name == "mirrored":
        if visible:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    raise ConfigError("strategy", name, "expected auto, one_device, mirrored or "
                      "multi_worker")


def describe(strategy: tf.distribute.Strategy) -> str:
    """e.g. 'CPU:0 (OneDeviceStrategy)' or '2 replicas on GPU:0, GPU:1 (...)'."""
    devices = list(getattr(strategy.extended, "worker_devices", ()) or ())
    short = [d.split("device:")[-1] if "device:" in d else d for d in devices]
    kind = type(strategy).__name__
    if strategy.num_replicas_in_sync == 1 and short:
        return f"{short[0]} ({kind})"
    return f"{strategy.num_replicas_in_sync} replicas on {', '.join(short)} ({kind})"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes summaries, checkpoints and saved models."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict())
