"""GPU decisions, checked on a CPU with an injected "GPU visible" flag."""

import keras
import pytest

from siamese_research.core import gpu
from siamese_research.core import model as M
from siamese_research.config import ConfigError


def _model(encoder="lstm", **args):
    return M.build_model(encoder=encoder, units=4, features=8, encoder_args=args)


@pytest.fixture(autouse=True)
def _fresh_warnings():
    gpu._warned.clear()
    yield
    gpu._warned.clear()


def test_default_lstm_and_gru_are_cudnn_eligible():
    assert gpu.cudnn_ineligibility(keras.layers.LSTM(4)) == []
    assert gpu.cudnn_ineligibility(keras.layers.GRU(4)) == []
    assert gpu.cudnn_ineligibility(keras.layers.Bidirectional(keras.layers.LSTM(4))) == []
    assert gpu.cudnn_ineligibility(keras.layers.Dense(4)) == []


@pytest.mark.parametrize("kwargs, expected", [
    (dict(activation="relu"), "activation=relu"),
    (dict(recurrent_activation="hard_sigmoid"), "recurrent_activation=hard_sigmoid"),
    (dict(recurrent_dropout=0.2), "recurrent_dropout=0.2"),
    (dict(unroll=True), "unroll=True"),
    (dict(use_bias=False), "use_bias=False"),
    (dict(use_cudnn=False), "use_cudnn=False"),
])
def test_each_lstm_reason_is_named(kwargs, expected):
    reasons = gpu.cudnn_ineligibility(keras.layers.LSTM(4, **kwargs))
    assert len(reasons) == 1 and expected in reasons[0]


def test_gru_reset_after_false_and_bidirectional_and_left_padding():
    assert "reset_after=False" in gpu.cudnn_ineligibility(
        keras.layers.GRU(4, reset_after=False))[0]
    bi = keras.layers.Bidirectional(keras.layers.LSTM(4, recurrent_dropout=0.1))
    reasons = gpu.cudnn_ineligibility(bi)
    assert len(reasons) == 2 and all("recurrent_dropout" in r for r in reasons)
    assert "left-padded" in gpu.cudnn_ineligibility(keras.layers.LSTM(4),
                                                    left_padded=True)[0]
    # Left padding is no cuDNN question for a layer that is not an RNN.
    assert gpu.cudnn_ineligibility(keras.layers.Dense(4), left_padded=True) == []


def test_warn_cudnn_warns_once_in_one_line_and_only_on_gpu(capsys):
    model = _model(recurrent_dropout=0.1)
    assert gpu.warn_cudnn(model, gpu_visible=False) == []
    assert capsys.readouterr().err == ""
    reasons = gpu.warn_cudnn(model, gpu_visible=True)
    gpu.warn_cudnn(model, gpu_visible=True)
    err = capsys.readouterr().err
    assert reasons and err.count("\n") == 1
    assert "recurrent_dropout=0.1" in err


def test_warn_cudnn_is_silent_for_eligible_and_non_rnn_encoders(capsys):
    assert gpu.warn_cudnn(_model(), gpu_visible=True) == []
    assert gpu.warn_cudnn(_model("conv1d"), gpu_visible=True) == []
    assert gpu.warn_cudnn(_model(), gpu_visible=True, left_padded=True)
    assert capsys.readouterr().err.count("\n") == 1


def test_check_jit_refuses_xla_with_the_cudnn_kernel_on_gpu():
    with pytest.raises(ConfigError) as info:
        gpu.check_jit(True, True, _model())
    assert info.value.flag == "jit_compile" and "18456" in str(info.value)
    with pytest.raises(ConfigError):
        gpu.check_jit(True, True, _model("bilstm"))


@pytest.mark.parametrize("jit, visible, encoder, args", [
    (True, False, "lstm", {}),  # CPU: XLA works
    (False, True, "lstm", {}),
    (True, True, "lstm", {"use_cudnn": False}),  # no cuDNN kernel in the step
    (True, True, "lstm", {"recurrent_dropout": 0.1}),
    (True, True, "conv1d", {}),
])
def test_check_jit_allows_xla_without_the_cudnn_kernel(jit, visible, encoder, args):
    gpu.check_jit(jit, visible, _model(encoder, **args))


def test_mixed_precision_refused_on_cpu_and_unknown_policies():
    with pytest.raises(ConfigError) as info:
        gpu.mixed_precision_setup("mixed_float16", gpu_visible=False)
    assert info.value.flag == "mixed_precision" and "GPU" in str(info.value)
    with pytest.raises(ConfigError):
        gpu.mixed_precision_setup("float8", gpu_visible=True)
    assert gpu.mixed_precision_setup(None, gpu_visible=False) is None
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_sets_the_global_policy_on_gpu(policy):
    try:
        assert gpu.mixed_precision_setup(policy, gpu_visible=True) == policy
        assert keras.mixed_precision.global_policy().name == policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_wrap_optimizer_scales_the_loss_for_float16_only():
    opt = keras.optimizers.RMSprop(1e-3)
    wrapped = gpu.wrap_optimizer(opt, "mixed_float16")
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
    assert wrapped.inner_optimizer is opt
    assert gpu.wrap_optimizer(wrapped, "mixed_float16") is wrapped
    assert gpu.wrap_optimizer(opt, "mixed_bfloat16") is opt
    assert gpu.wrap_optimizer(opt, None) is opt


def test_threads_auto_is_one_per_op_on_a_cpu_and_a_number_is_taken():
    import subprocess
    import sys

    code = ("from siamese_research.runner import devices; import tensorflow as tf; "
            "print(devices.configure_threads({}), "
            "tf.config.threading.get_intra_op_parallelism_threads())")
    import tensorflow as tf

    auto = "0 0" if tf.config.list_physical_devices("GPU") else "1 1"
    for arg, want in ((0, auto), (3, "3 3")):
        out = subprocess.run([sys.executable, "-c", code.format(arg)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == want.split()


def test_threads_cannot_change_once_tensorflow_runs_and_say_so_by_the_result():
    import tensorflow as tf

    from siamese_research.runner import devices

    tf.constant(1.0) + 1.0  # the runtime is up in this (test) process
    current = tf.config.threading.get_intra_op_parallelism_threads()
    assert devices.configure_threads(current + 5) == current
