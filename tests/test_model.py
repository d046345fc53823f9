import numpy as np

from siamese_research.core import model as M


def test_notebook_parameter_counts():
    model = M.build_model(merge="concat")
    assert M.count_params(model.trainable_variables) == 20_673
    assert M.count_params(M.encoder_variables(model)) == 20_608


def test_default_parameter_count():
    model = M.build_model()
    assert M.count_params(model.trainable_variables) == 20_737
    assert M.count_params(M.encoder_variables(model)) == 20_608


def test_encoder_variables_appear_once():
    model = M.build_model(features=8, units=4)
    ids = [id(v) for v in model.trainable_variables]
    assert len(ids) == len(set(ids))
    enc = M.encoder_variables(model)
    assert len(enc) == 3  # kernel, recurrent_kernel, bias: ONE LSTM
    assert all(v.path.startswith("siamese/encoder/") for v in enc)
    assert model.towers[0] is model.towers[1]


def test_untied_doubles_encoder():
    tied = M.build_model(share="tied")
    untied = M.build_model(share="untied")
    assert M.count_params(M.encoder_variables(untied)) == 41_216
    assert M.count_params(M.encoder_variables(untied)) == \
        2 * M.count_params(M.encoder_variables(tied))
    assert untied.towers[0] is not untied.towers[1]


def test_left_and_right_lengths_may_differ():
    model = M.build_model(features=8, units=4)
    rng = np.random.default_rng(0)
    left = rng.standard_normal((3, 5, 8)).astype("float32")
    right = rng.standard_normal((3, 11, 8)).astype("float32")
    out = np.asarray(model((left, right)))
    assert out.shape == (3, 1)
    assert np.all((out >= 0) & (out <= 1))


def test_right_padding_is_masked():
    """Zero steps appended to a sequence do not change its encoding."""
    model = M.build_model(features=8, units=4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 8)).astype("float32")
    padded = np.concatenate([x, np.zeros((2, 3, 8), "float32")], axis=1)
    a = np.asarray(model.encoder(x))
    b = np.asarray(model.encoder(padded))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_parameter_table_names_every_variable():
    model = M.build_model(features=8, units=4)
    table = M.parameter_table(model)
    for v in model.trainable_variables:
        assert v.path in table
    assert "tied" in table
