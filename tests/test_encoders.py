import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import encoders as E
from siamese_research.core import model as M
from siamese_research.summaries import views as summaries
from siamese_research.core import gradient_stats as S
from siamese_research.core import gradients as G
from conftest import ROOT, Probe, run_main, run_train

BUILTIN = ["lstm", "gru", "bilstm", "conv1d", "transformer", "bag"]


@pytest.mark.parametrize("name", BUILTIN)
def test_encoder_maps_sequences_to_vectors_and_ignores_padding(name):
    keras.utils.set_random_seed(0)
    tower = M.build_tower(encoder=name, units=4, features=8)
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype("float32")
    padded = np.concatenate([x, np.zeros((3, 4, 8), "float32")], axis=1)
    a, b = np.asarray(tower(x)), np.asarray(tower(padded))
    assert a.shape[0] == 3 and a.ndim == 2
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_registered_names():
    assert set(BUILTIN) <= set(E.available())


def test_lstm_and_gru_defaults_are_cudnn_eligible():
    for name in ("lstm", "gru"):
        layer = E.build_encoder(name, 8)
        assert layer.activation is keras.activations.tanh
        assert layer.recurrent_activation is keras.activations.sigmoid
        assert layer.recurrent_dropout == 0 and not layer.unroll and layer.use_bias


@pytest.mark.parametrize("name,needle", [
    ("nope", "unknown encoder; available: bag, bilstm, conv1d"),
    ("os:path", "neither a Layer subclass nor a function"),
    ("no_such_module_xyz:Enc", "cannot import module 'no_such_module_xyz'"),
    ("collections:Missing", "has no attribute 'Missing'"),
    ("collections:OrderedDict", "not a keras.layers.Layer subclass"),
])
def test_bad_encoder_names(name, needle):
    with pytest.raises(E.EncoderError) as e:
        E.build_encoder(name, 4)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_encoder_from_cli_is_one_line(tmp_path):
    proc = run_main("--encoder=os:path", f"--run_dir={tmp_path / 'r'}",
                    "--num_samples=16")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--encoder=os:path" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


def _readme_encoder_source():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start = text.index("# my_encoders.py")
    return text[start:text.index("```", start)]


def test_readme_user_encoder_trains_and_reloads(tmp_path):
    """The README's example encoder, by import path, through train.py; the
    saved model reloads where its module is importable."""
    source = _readme_encoder_source()
    code = [l for l in source.splitlines() if l.strip() and not l.startswith("#")]
    assert len(code) <= 15  # "a complete 15-line example encoder"
    (tmp_path / "my_encoders.py").write_text(source)
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = run_train("--encoder=my_encoders:MeanMLP", "--num_samples=32", "--timesteps=6",
                     "--features=8", "--units=4", "--epochs=1", "--batch_size=8",
                     f"--run_dir={run_dir}", env=env)
    assert proc.returncode == 0, proc.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        model = keras.saving.load_model(run_dir / "model.keras")
        assert type(model.encoder.core).__name__ == "MeanMLP"
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize("name", ["lstm", "gru", "bilstm"])
def test_gate_slices_and_norms_match_the_full_gradient(name):
    keras.utils.set_random_seed(1)
    model = M.build_model(encoder=name, units=4, features=8)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.standard_normal((4, 5, 8)), tf.float32)
    y = tf.constant([1.0, 0.0, 1.0, 0.0])
    bg = G.branch_gradients(model, keras.losses.BinaryCrossentropy(), (x, x[:, :3]), y)
    gates = summaries.gate_slices(model)
    kernels = [v for v in bg.encoder_vars if id(v) in gates]
    assert len(kernels) == (6 if name == "bilstm" else 3)
    squares = {}
    for g, v in zip(bg.left, bg.encoder_vars):
        if id(v) not in gates:
            continue
        kind, names = gates[id(v)]
        assert len(names) == (4 if name != "gru" else 3)
        parts = dict(zip(names, S.gate_parts(g, names)))
        np.testing.assert_array_equal(np.concatenate(list(parts.values()), -1),
                                      g.numpy())
        for gate, part in parts.items():
            squares[gate] = squares.get(gate, 0.0) + float(np.sum(part.numpy() ** 2))
    # The logged per-gate norms: over every gated variable, one gate's slices.
    # (In the gates' order: i, f, c, o for an LSTM; z, r, h for a GRU.)
    norms = S.branch_gate_norms([bg.left], bg.encoder_vars, gates, len(names))[0]
    np.testing.assert_allclose(norms.numpy(), [np.sqrt(squares[k]) for k in names],
                               rtol=1e-5)


def test_gate_norms_of_untied_towers_count_only_the_branch_own_weights():
    # Untied: the left branch has no gradient on the right tower (None); its
    # per-gate norms are those of the left tower's gated weights alone.
    keras.utils.set_random_seed(1)
    model = M.build_model(encoder="lstm", units=4, features=8, share="untied")
    rng = np.random.default_rng(2)
    x = tf.constant(rng.standard_normal((4, 5, 8)), tf.float32)
    bg = G.branch_gradients(model, keras.losses.BinaryCrossentropy(), (x, x[:, :3]),
                            tf.constant([1.0, 0.0, 1.0, 0.0]))
    gates = summaries.gate_slices(model)
    assert any(g is None for g in bg.left)
    own = [(g.numpy(), v) for g, v in zip(bg.left, bg.encoder_vars)
           if g is not None and id(v) in gates]
    assert len(own) == 3
    expected = [np.sqrt(sum(np.sum(np.split(g, 4, axis=-1)[k] ** 2) for g, _ in own))
                for k in range(4)]
    norms = S.branch_gate_norms([bg.left], bg.encoder_vars, gates, len(E.GATES["lstm"]))
    np.testing.assert_allclose(norms[0].numpy(), expected, rtol=1e-5)


def test_unroll_decision():
    with E.unrolling(True):
        assert E.should_unroll(10, gpu_visible=False)
        assert E.should_unroll(E.UNROLL_MAX_STEPS, gpu_visible=False)
        assert not E.should_unroll(E.UNROLL_MAX_STEPS + 1, gpu_visible=False)
        assert not E.should_unroll(None, gpu_visible=False)  # dynamic time: a loop
        assert not E.should_unroll(10, gpu_visible=True)  # cuDNN needs unroll=False
    assert not E.should_unroll(10, gpu_visible=False)  # outside a long run's step
    with E.unrolling(False):
        assert not E.should_unroll(10, gpu_visible=False)
    assert E.unroll_pays(E.UNROLL_MIN_RUN_STEPS)
    assert not E.unroll_pays(E.UNROLL_MIN_RUN_STEPS - 1)


@pytest.mark.parametrize("unroll, run_steps, unrolled", [
    (None, 4, False), (None, E.UNROLL_MIN_RUN_STEPS, True), (True, 4, True),
    (False, 10**6, False)])
def test_the_train_step_unrolls_in_long_runs_only(unroll, run_steps, unrolled,
                                                  monkeypatch):
    """The trace of the train step calls the cell once per time step of
    each branch when unrolled (6 steps here), fewer times in a loop;
    `Trainer(unroll=None)` unrolls when the run is long enough to pay for
    the longer trace."""
    from siamese_research.train.trainer import Trainer

    monkeypatch.setattr(E.gpu, "gpu_visible", lambda: False)
    keras.utils.set_random_seed(0)
    model = M.build_model(encoder="lstm", units=4, features=8, masked=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 6, 8)).astype(np.float32)
    ds = tf.data.Dataset.from_tensors(((x, x), np.ones(8, np.float32),
                                       np.ones(8, np.float32)))
    trainer = Trainer(model, loss_fn=keras.losses.BinaryCrossentropy(),
                      optimizer=keras.optimizers.SGD(0.1), verbose=0, unroll=unroll,
                      diagnostics=False)
    calls = []
    cell_call = type(model.encoder.core.cell).call
    monkeypatch.setattr(type(model.encoder.core.cell), "call",
                        lambda self, *a, **k: calls.append(1) or cell_call(self, *a, **k))
    # Shown a run of `run_steps` steps (epochs of one step); stopped after one.
    trainer.fit(ds, epochs=run_steps, callbacks=[Probe(stop=lambda: True)])
    assert trainer.global_step.numpy() == 1
    assert (len(calls) == 2 * 6) == unrolled  # two branches, one trace


@pytest.mark.parametrize("name", ["lstm", "gru", "bilstm"])
def test_unrolled_tower_computes_the_looped_function_and_keeps_its_config(name,
                                                                         monkeypatch):
    monkeypatch.setattr(E.gpu, "gpu_visible", lambda: False)  # the CPU path, anywhere
    keras.utils.set_random_seed(0)
    tower = M.build_model(encoder=name, units=4, features=8, masked=False).encoder
    x = tf.random.stateless_normal((3, 6, 8), seed=(1, 2))
    static = tf.function(lambda v: _encode_and_grad(tower, v))
    looped = tf.function(lambda v: _encode_and_grad(tower, v),
                         input_signature=[tf.TensorSpec([None, None, 8])])
    with E.unrolling(True):  # as in a long run's train step
        graph = static.get_concrete_function(x).graph
    assert not any(op.type == "While" for op in graph.get_operations())
    graph = looped.get_concrete_function().graph
    assert any(op.type == "While" for op in graph.get_operations())
    for a, b in zip(static(x), looped(x)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    assert not any(layer.unroll for layer in E.gpu.unwrap_bidirectional(tower.core))
    assert "'unroll': True" not in str(tower.get_config())


def _encode_and_grad(tower, x):
    with tf.GradientTape() as tape:
        h = tower(x)
        loss = tf.reduce_sum(h * h)
    return [h] + tape.gradient(loss, tower.trainable_variables)
