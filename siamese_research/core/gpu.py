"""GPU decisions: cuDNN eligibility, XLA, mixed precision.

Every function takes whether a GPU is visible as an argument, so the logic is
tested on a CPU-only machine; the caller passes `gpu_visible()`.

* cuDNN: `keras.layers.LSTM` / `GRU` use the fused cuDNN kernel on a GPU
  only under the conditions Keras checks (`keras/src/backend/tensorflow/
  rnn.py`, `cudnn_ok`); otherwise they silently fall back to a step-by-step
  loop, several times slower. `warn_cudnn` says so, once, and why.
* XLA: the cuDNN RNN kernel cannot be XLA-compiled (keras #18456), so
  `check_jit` refuses `jit_compile` when the step would contain one.
* Mixed precision: float16/bfloat16 only pay off on a GPU; on a CPU they are
  emulated and slower, so `mixed_precision_setup` refuses there.
"""

from __future__ import annotations

import sys
from typing import List, Optional

import keras
import tensorflow as tf

from siamese_research.config import MIXED_POLICIES
from siamese_research.errors import ConfigError

_TANH_NAMES = ("tanh",)
_SIGMOID_NAMES = ("sigmoid",)
_warned: set = set()


def gpu_visible() -> bool:
    """True when TensorFlow sees at least one GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


def _is(fn, keras_fn, tf_fn, names) -> bool:
    # Keras accepts its own function, tf's and ops' (see cudnn_ok); a custom
    # function merely named "tanh" would not pass Keras's identity test, but
    # the name is what a user can act on, so both are accepted here.
    if fn in (keras_fn, tf_fn, getattr(keras.ops, keras_fn.__name__, None)):
        return True
    return getattr(fn, "__name__", None) in names


def _rnn_reasons(layer) -> List[str]:
    kind = "LSTM" if isinstance(layer, keras.layers.LSTM) else "GRU"
    reasons = []
    if not _is(layer.activation, keras.activations.tanh, tf.tanh, _TANH_NAMES):
        reasons.append(f"activation={_name(layer.activation)} (cuDNN needs tanh)")
    if not _is(layer.recurrent_activation, keras.activations.sigmoid, tf.sigmoid,
               _SIGMOID_NAMES):
        reasons.append(f"recurrent_activation={_name(layer.recurrent_activation)} "
                       "(cuDNN needs sigmoid)")
    if layer.recurrent_dropout:
        reasons.append(f"recurrent_dropout={layer.recurrent_dropout} (cuDNN needs 0)")
    if layer.unroll:
        reasons.append("unroll=True")
    if not layer.use_bias:
        reasons.append("use_bias=False")
    if kind == "GRU" and not layer.reset_after:
        reasons.append("reset_after=False (cuDNN's GRU needs True)")
    if getattr(layer, "use_cudnn", "auto") is False:
        reasons.append("use_cudnn=False")
    return [f"{kind} {layer.name}: {r}" for r in reasons]


def _name(fn) -> str:
    return getattr(fn, "__name__", repr(fn))


def cudnn_ineligibility(layer, left_padded: bool = False) -> List[str]:
    """Why a Keras LSTM/GRU (or a Bidirectional of one) cannot use cuDNN.

    Args:
      layer: a layer; anything other than LSTM, GRU, Bidirectional of them or
        a custom gated RNN (a layer with `gate_kind`) has no cuDNN question
        and gives [].
      left_padded: the data pads sequences on the left; cuDNN (through Keras)
        takes right-padded masks only. A property of the data, not the layer.

    Returns:
      Human-readable reasons, [] when the layer is eligible (or not an RNN).
    """
    reasons: List[str] = []
    is_rnn = False
    for rnn in unwrap_bidirectional(layer):
        if isinstance(rnn, (keras.layers.LSTM, keras.layers.GRU)):
            is_rnn = True
            reasons += [r for r in _rnn_reasons(rnn) if r not in reasons]
        elif getattr(rnn, "gate_kind", ""):
            is_rnn = True
            reasons.append(f"{type(rnn).__name__} {rnn.name}: a custom RNN, not "
                           "keras.layers.LSTM/GRU (no cuDNN kernel)")
    if is_rnn and left_padded:
        reasons.append(f"{layer.name}: left-padded sequences (cuDNN needs right "
                       "padding)")
    return reasons


def unwrap_bidirectional(layer) -> List[keras.layers.Layer]:
    """A Bidirectional's forward and backward layers; any other layer alone."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer]


def rnn_layers(model) -> List[keras.layers.Layer]:
    """The RNN layers of `model` (a model or a single layer), outermost first:
    a Bidirectional stands for its inner layers."""
    layers = _walk(model)
    inner = set()
    for layer in layers:
        if isinstance(layer, keras.layers.Bidirectional):
            inner.update(id(half) for half in unwrap_bidirectional(layer))
    return [layer for layer in layers if id(layer) not in inner and (
        isinstance(layer, (keras.layers.LSTM, keras.layers.GRU,
                           keras.layers.Bidirectional))
        or getattr(layer, "gate_kind", ""))]


def _walk(root) -> list:
    seen, out, stack = set(), [], [root]
    while stack:
        layer = stack.pop(0)
        if id(layer) in seen or not isinstance(layer, keras.layers.Layer):
            continue
        seen.add(id(layer))
        out.append(layer)
        # Layer._layers holds tracked sublayers in Keras 3 (models included).
        stack.extend(getattr(layer, "_layers", []) or [])
        for attr in ("forward_layer", "backward_layer", "layer", "cell"):
            child = getattr(layer, attr, None)
            if isinstance(child, keras.layers.Layer):
                stack.append(child)
    return out


def warn_cudnn(model, gpu_visible: bool, left_padded: bool = False) -> List[str]:
    """Warns once, in one line on stderr, when an RNN of `model` will not use
    cuDNN on the visible GPU.

    Args:
      model: the model (or one layer).
      gpu_visible: whether training runs on a GPU (`gpu_visible()`).
      left_padded: whether the data pads on the left.

    Returns:
      The reasons ([] on CPU or when every RNN is eligible).
    """
    if not gpu_visible:
        return []
    reasons = []
    for layer in rnn_layers(model):
        reasons += cudnn_ineligibility(layer, left_padded)
    if reasons:
        line = ("warning: no cuDNN kernel on the GPU (a step-by-step loop, several "
                "times slower): " + "; ".join(reasons))
        if line not in _warned:  # once per process, however often it is asked
            _warned.add(line)
            print(line, file=sys.stderr, flush=True)
    return reasons


def uses_cudnn(model, gpu_visible: bool, left_padded: bool = False) -> bool:
    """Whether some LSTM/GRU of `model` runs the cuDNN kernel."""
    if not gpu_visible:
        return False
    for layer in rnn_layers(model):
        inner = ([layer.forward_layer, layer.backward_layer]
                 if isinstance(layer, keras.layers.Bidirectional) else [layer])
        for rnn in inner:
            if isinstance(rnn, (keras.layers.LSTM, keras.layers.GRU)) and \
                    not cudnn_ineligibility(rnn, left_padded):
                return True
    return False


def check_jit(jit_compile: bool, gpu_visible: bool, model, strategy=None) -> None:
    """Refuses `jit_compile` where XLA cannot compile the step: the one
    place this rule lives (the run's checks and `TrainStep` both call it).

    Args:
      jit_compile: the requested setting.
      gpu_visible: whether training runs on a GPU.
      model: the model whose encoders are checked.
      strategy: the `tf.distribute.Strategy` the step runs under, or None.

    Raises:
      ConfigError: on flag "jit_compile" under a mirrored strategy (even
        over one device, the update is a cross-replica sum, which cannot sit
        in XLA), or when a GPU is visible and an encoder uses the cuDNN RNN
        kernel (keras #18456).
    """
    if not jit_compile:
        return
    # (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy.)
    kind = ("multi_worker" if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            else "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy)
            else None)
    if kind or getattr(strategy, "num_replicas_in_sync", 1) > 1:
        raise ConfigError(
            "jit_compile", True, "works with one device only (--strategy=one_device, "
            f"or auto on one device), not --strategy={kind or 'mirrored'}: "
            "the update's cross-replica sum cannot sit in XLA")
    if not uses_cudnn(model, gpu_visible):
        return
    raise ConfigError(
        "jit_compile", True,
        "the encoder's LSTM/GRU runs the cuDNN kernel on this GPU, which XLA cannot "
        "compile (keras #18456); drop --jit_compile (cuDNN is the fast path on a "
        "GPU), or pass --encoder_args='{\"use_cudnn\": false}' to trade cuDNN for XLA")


def mixed_precision_setup(policy: Optional[str], gpu_visible: bool) -> Optional[str]:
    """Sets the global Keras dtype policy for `--mixed_precision`.

    Args:
      policy: None (float32), "mixed_float16" or "mixed_bfloat16".
      gpu_visible: whether training runs on a GPU.

    Returns:
      The policy name that was set, or None when none was asked for.

    Raises:
      ConfigError: on flag "mixed_precision" for an unknown policy, or on a
        CPU, where reduced precision is emulated and slower than float32.
    """
    if policy in (None, "", "float32", "none"):
        return None
    if policy not in MIXED_POLICIES:
        raise ConfigError("mixed_precision", policy,
                          f"expected one of {', '.join(MIXED_POLICIES)}")
    if not gpu_visible:
        raise ConfigError("mixed_precision", policy,
                          "needs a GPU: TensorFlow sees none, and on a CPU float16 / "
                          "bfloat16 math runs slower than float32; drop the flag")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def wrap_optimizer(optimizer, policy: Optional[str]):
    """`LossScaleOptimizer(optimizer)` for mixed_float16 (its small exponent
    range underflows small gradients unless the loss is scaled); bfloat16 and
    float32 keep `optimizer` as it is.

    Args:
      optimizer: a Keras optimizer.
      policy: the policy from `mixed_precision_setup`.

    Returns:
      The optimizer to train with.
    """
    if policy != "mixed_float16" or isinstance(
            optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)

