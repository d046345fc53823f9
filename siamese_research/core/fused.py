"""`lstm_fused`: an LSTM for the CPU that does less work per time step.

`keras.layers.LSTM` on a CPU runs its cell once per step inside a
`tf.while_loop`: each step multiplies the step's input by the kernel, and its
automatic gradient accumulates dW per step, again inside the loop. With small
batches on a few cores the per-step op count, not the arithmetic, sets the
speed. This layer:

* projects the inputs of ALL steps with one matrix product
  (`x @ kernel + bias`, shape (time, batch, 4 units));
* runs a recurrence that only multiplies the hidden state by the recurrent
  kernel;
* has a hand-written backward pass (backpropagation through time) whose loop
  only computes the per-step gate gradients; dW of the recurrent kernel is
  ONE matrix product over all steps afterwards, and dW of the input kernel
  and bias come from the projection's own gradient.

It computes the same function as `keras.layers.LSTM(units)` with the same
weights (kernel (F, 4U), recurrent_kernel (U, 4U), bias (4U,), gates in the
order i, f, c, o; tanh / sigmoid), including a right-padded mask: where the
mask is False the state is kept, and the output is the last valid state.
"""

from __future__ import annotations

import keras
import tensorflow as tf

PACKAGE = "siamese_research"


def _unit_forget_bias(units: int):
    def init(shape, dtype=None):
        # Keras's LSTM default (unit_forget_bias=True): forget gate bias 1.
        return tf.concat([tf.zeros([units]), tf.ones([units]), tf.zeros([2 * units])],
                         0)
    return init


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedLSTM(keras.layers.Layer):
    """An LSTM returning its last valid hidden state, (batch, units).

    Args:
      units: hidden size.
      **kwargs: `keras.layers.Layer` arguments (name, dtype, ...).
    """

    gate_kind = "lstm"  # per-gate gradient summaries (encoders.rnn_kind)

    def __init__(self, units: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.supports_masking = True

    def build(self, input_shape):
        features, units = int(input_shape[-1]), self.units
        self.kernel = self.add_weight(shape=(features, 4 * units), name="kernel",
                                      initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(shape=(units, 4 * units),
                                                name="recurrent_kernel",
                                                initializer="orthogonal")
        self.bias = self.add_weight(shape=(4 * units,), name="bias",
                                    initializer=_unit_forget_bias(units))
        self.built = True

    def call(self, inputs, mask=None, training=None):
        x = tf.convert_to_tensor(inputs)
        kernel = tf.convert_to_tensor(self.kernel)
        recurrent = tf.convert_to_tensor(self.recurrent_kernel)
        bias = tf.convert_to_tensor(self.bias)
        x = tf.cast(x, kernel.dtype)
        # Time-major, then one (time * batch, F) x (F, 4U) product for all steps.
        xt = tf.transpose(x, [1, 0, 2])
        shape = tf.shape(xt)
        projected = tf.reshape(tf.matmul(tf.reshape(xt, [-1, shape[2]]), kernel) + bias,
                               [shape[0], shape[1], 4 * self.units])
        if mask is None:
            return lstm_recurrence(projected, recurrent)
        keep = tf.cast(tf.transpose(mask, [1, 0])[..., None], kernel.dtype)
        return lstm_recurrence(projected, recurrent, keep)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def lstm_recurrence(projected, recurrent_kernel, keep=None):
    """The LSTM recurrence on pre-projected inputs.

    Args:
      projected: (time, batch, 4U) = x_t @ kernel + bias, gates i, f, c, o.
      recurrent_kernel: (U, 4U).
      keep: None (every step is real), or (time, batch, 1) float: 1 where the
        step is real, 0 where it is padding (the state is kept there).

    Returns:
      (batch, U): the hidden state after the last real step (zeros for a row
      with no real step).
    """
    if keep is None:
        return _RECURRENCE[False](projected, recurrent_kernel)
    return _RECURRENCE[True](projected, recurrent_kernel, keep)


def _make_recurrence(masked: bool):
    # Two graphs rather than an all-ones mask: without padding the loops skip
    # the per-step selects (a few of the ~30 small ops per step that set the
    # speed here).
    @tf.custom_gradient
    def recurrence(projected, recurrent_kernel, *keep):
        return _recurrence(masked, projected, recurrent_kernel, *keep)

    return recurrence


def _recurrence(masked, projected, recurrent_kernel, keep=None):
    steps = tf.shape(projected)[0]
    batch = tf.shape(projected)[1]
    units = tf.shape(recurrent_kernel)[0]
    dtype = projected.dtype
    zeros = tf.zeros([batch, units], dtype)
    z_in = tf.TensorArray(dtype, size=steps).unstack(projected)
    if masked:
        keep_in = tf.TensorArray(dtype, size=steps).unstack(keep)
        real_in = tf.TensorArray(tf.bool, size=steps).unstack(keep > 0)
    # What the backward pass needs per step: the previous state and the
    # activated gates (i, f, g, o) and tanh(c).
    h_seq = tf.TensorArray(dtype, size=steps)
    c_seq = tf.TensorArray(dtype, size=steps)
    act_seq = tf.TensorArray(dtype, size=steps)
    tanh_c_seq = tf.TensorArray(dtype, size=steps)

    def forward(t, h, c, h_seq, c_seq, act_seq, tanh_c_seq):
        z = z_in.read(t) + tf.matmul(h, recurrent_kernel)
        zi, zf, zg, zo = tf.split(z, 4, axis=1)
        i, f, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.sigmoid(zo)
        g = tf.tanh(zg)
        c_new = f * c + i * g
        tanh_c = tf.tanh(c_new)
        h_new = o * tanh_c
        h_next, c_next = h_new, c_new
        if masked:  # padding keeps the state, as keras.layers.LSTM does
            real = real_in.read(t)
            h_next = tf.where(real, h_new, h)
            c_next = tf.where(real, c_new, c)
        return (t + 1, h_next, c_next, h_seq.write(t, h), c_seq.write(t, c),
                act_seq.write(t, tf.concat([i, f, g, o], 1)),
                tanh_c_seq.write(t, tanh_c))

    _, h, _, h_seq, c_seq, act_seq, tanh_c_seq = tf.while_loop(
        lambda t, *_: t < steps, forward,
        (tf.constant(0), zeros, zeros, h_seq, c_seq, act_seq, tanh_c_seq),
        maximum_iterations=steps)
    h_prev_all = h_seq.stack()  # (time, batch, U): the state entering each step
    c_prev_all = c_seq.stack()
    acts = act_seq.stack()
    tanh_cs = tanh_c_seq.stack()

    def grad(dh_final):
        acts_in = tf.TensorArray(dtype, size=steps).unstack(acts)
        tanh_c_in = tf.TensorArray(dtype, size=steps).unstack(tanh_cs)
        c_prev_in = tf.TensorArray(dtype, size=steps).unstack(c_prev_all)
        dz_seq = tf.TensorArray(dtype, size=steps)
        recurrent_t = tf.transpose(recurrent_kernel)

        def backward(t, dh, dc, dz_seq):
            s = steps - 1 - t
            i, f, g, o = tf.split(acts_in.read(s), 4, axis=1)
            tanh_c = tanh_c_in.read(s)
            dh_new, dc_in = dh, dc
            if masked:
                # Only a real step passes gradient into its gates; padding
                # passes dh, dc straight through to the previous state.
                m = keep_in.read(s)
                dh_new, dc_in = m * dh, m * dc
            do = dh_new * tanh_c
            dc_new = dc_in + dh_new * o * (1.0 - tanh_c * tanh_c)
            di, df, dg = dc_new * g, dc_new * c_prev_in.read(s), dc_new * i
            dz = tf.concat([di * i * (1.0 - i), df * f * (1.0 - f),
                            dg * (1.0 - g * g), do * o * (1.0 - o)], 1)
            dh_prev = tf.matmul(dz, recurrent_t)
            dc_prev = dc_new * f
            if masked:
                dh_prev += dh - dh_new
                dc_prev += dc - dc_in
            return t + 1, dh_prev, dc_prev, dz_seq.write(s, dz)

        _, _, _, dz_seq = tf.while_loop(
            lambda t, *_: t < steps, backward,
            (tf.constant(0), dh_final, tf.zeros_like(dh_final), dz_seq),
            maximum_iterations=steps)
        dz_all = dz_seq.stack()  # (time, batch, 4U)
        # dW of the recurrent kernel: ONE product over all steps and rows.
        d_recurrent = tf.matmul(tf.reshape(h_prev_all, [-1, units]),
                                tf.reshape(dz_all, [-1, 4 * units]), transpose_a=True)
        if masked:
            return dz_all, d_recurrent, tf.zeros_like(keep)
        return dz_all, d_recurrent

    return h, grad


_RECURRENCE = {masked: _make_recurrence(masked) for masked in (False, True)}


def fused_lstm(units: int, **kwargs) -> FusedLSTM:
    """The `lstm_fused` encoder builder (see `encoders.register_encoder`)."""
    kwargs.setdefault("name", "lstm_fused")
    return FusedLSTM(units, **kwargs)
