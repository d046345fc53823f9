"""Issue 14 part 3's features, each on a few examples: the `match` merge,
the bag's dropouts, character n-gram ids, the pairwise ranking loss and its
batches of one left text."""

import numpy as np
import pytest

from conftest import run_main, tiny, write_pairs
from siamese_research import data as data_lib
from siamese_research.core import encoders as E
from siamese_research.core import losses as L
from siamese_research.core import merges as Mg
from siamese_research.config import ConfigError


def test_match_merge_values():
    # u = a + b, v = a + c with orthonormal a, b, c: they share a.
    u = np.array([[1.0, 1.0, 0.0]], "float32")
    v = np.array([[1.0, 0.0, 2.0]], "float32")
    got = np.asarray(Mg.build_merge("match")([u, v]))[0]
    # u.v = 1, |u|^2 = 2, |v|^2 = 5.
    want = [1 / np.sqrt(10), 1 / 2, 1 / 5, 1 / 5, 1 / 2, np.log(2 / 5)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not Mg.get_merge_class("match").score  # a feature merge: the head weighs it


def test_bag_dropouts_only_in_training_and_word_dropout_drops_whole_words():
    x = np.arange(1, 1 + 2 * 5 * 3, dtype="float32").reshape(2, 5, 3)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    bag = E.build_encoder("bag", 4, word_dropout=0.5, dropout=0.0, seed=3)
    plain = E.build_encoder("bag", 4)
    np.testing.assert_allclose(bag(x, mask=mask, training=False), plain(x, mask=mask))
    out = np.asarray(bag(x, mask=mask, training=True))
    # Each row is the sum of a subset of its real words, whole rows of x.
    for r in range(2):
        real = x[r][mask[r]]
        sums = {tuple(real[list(s)].sum(0)) for s in _subsets(len(real))}
        assert tuple(out[r]) in sums
    assert not np.allclose(out, plain(x, mask=mask))  # seed 3 drops something
    drop = E.build_encoder("bag", 4, dropout=0.5, seed=1)
    y = np.asarray(drop(x, mask=mask, training=True))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2 * np.asarray(plain(x, mask=mask))[kept])
    assert E.BagEncoder.from_config(bag.get_config()).word_dropout == 0.5
    with pytest.raises(E.EncoderError, match="word_dropout=1.5"):
        E.build_encoder("bag", 4, word_dropout=1.5)


def _subsets(n):
    from itertools import combinations

    return [c for k in range(n + 1) for c in combinations(range(n), k)]


def test_char_ngram_ids_are_fasttext_subwords_hashed_after_the_words():
    from siamese_research.data import vocab as vocab_lib

    ids = vocab_lib.char_ngram_ids(["cat"], (3, 3), 1000, 50)
    # "<cat>": <ca, cat, at>
    assert len(ids) == 3 and all(50 <= i < 1050 for i in ids)
    import zlib

    assert ids[1] == 50 + zlib.crc32(b"cat") % 1000
    # A word and its plural share their n-grams but the last.
    cats = vocab_lib.char_ngram_ids(["cats"], (3, 3), 1000, 50)
    assert cats[:2] == ids[:2] and ids[2] not in cats


def test_char_ngrams_run_adds_rows_and_ids_and_scores_the_same_reloaded(tmp_path):
    from siamese_research import artifacts as runs
    from siamese_research import runner as training
    from siamese_research.data import vocab as vocab_lib

    config = tiny(data=write_pairs(tmp_path / "train.csv"), run_dir=str(tmp_path / "run"),
                  epochs=1, validation_split=0.34, max_tokens=50, max_length=8,
                  char_ngrams="3,4", ngram_buckets=97, encoder="bag",
                  merge="match", projector_points=0)
    data = data_lib.load(config)
    vocab = data.vectorizer.vocabulary_size()
    # "what is thing0?" -> 3 words, then the n-grams of "<what>", "<is>", "<thing0>".
    row = data.train.left[0]
    words = [w for w in row if 0 < w < vocab]
    grams = [g for g in row if g >= vocab]
    assert len(words) == 3 and len(grams) == (4 + 3) + (2 + 1) + (6 + 5)
    assert max(grams) < vocab + 97
    result = training.run(config)
    assert result["exit_code"] == 0
    table = result["model"].encoder.embedding.embeddings
    assert table.shape[0] == vocab + 97
    run = runs.load_run(config.run_dir)
    texts = ["what is thing0?", "thing0 is a thing, surely"]
    np.testing.assert_array_equal(run.token_ids(texts)[:, :len(row)][:1], row[None, :])
    np.testing.assert_array_equal(run.token_ids(texts),
                                  vocab_lib.text_ids(data.vectorizer, texts, config))
    # The exported graph tokenises words only: such a run is refused.
    from siamese_research.inference import export
    from siamese_research.config import DataError

    with pytest.raises(DataError, match="--char_ngrams"):
        export.build_module(run)


@pytest.mark.parametrize("value, why", [("5,3", "1 <= lo <= hi"), ("x", "lo,hi"),
                                        ("3", "lo,hi")])
def test_bad_char_ngrams_is_a_config_error(tmp_path, value, why):
    with pytest.raises(ConfigError, match=why):
        tiny(data=write_pairs(tmp_path / "t.csv"), char_ngrams=value)
    with pytest.raises(ConfigError, match="needs a text pair file"):
        tiny(char_ngrams="3,5")


def test_bad_char_ngrams_exits_2_in_one_line(tmp_path):
    out = run_main(f"--data={write_pairs(tmp_path / 't.csv')}", "--char_ngrams=4,2",
                   f"--run_dir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: --char_ngrams=4,2: needs 1 <= lo <= hi <= 10"]


def test_pairwise_loss_hand_computed():
    loss = L.build_loss("pairwise", merge="dot")
    s = np.array([[0.5], [0.5], [1 / (1 + np.e)]], "float32")  # logits 0, 0, -1
    y = np.array([1.0, 0.0, 0.0], "float32")
    # One positive (z = 0) against negatives z = 0 and z = -1.
    want = (np.log(2.0) + np.log(1 + np.exp(-1.0))) / 2
    np.testing.assert_allclose(float(loss(y, s)), want, rtol=1e-5)
    # Two positives: the mean of their terms.
    y2 = np.array([1.0, 1.0, 0.0], "float32")
    want2 = np.log(1 + np.exp(-1.0))
    np.testing.assert_allclose(float(loss(y2, s)), want2, rtol=1e-5)
    assert float(loss(np.zeros(3, "float32"), s)) == 0.0
    assert float(loss(np.ones(3, "float32"), s)) == 0.0


def test_group_batches_hold_one_group_each_and_cover_every_row_once():
    groups = np.array(list("aabbbbbcd"), dtype=object)
    batches = data_lib.group_batches(groups, 3, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(9))
    assert all(len(set(groups[b])) == 1 and len(b) <= 3 for b in batches)
    assert len(batches) == 5  # a: 1, b (5 rows): 2, c: 1, d: 1
    again = data_lib.group_batches(groups, 3, seed=1, epoch=0)
    assert all((x == y).all() for x, y in zip(batches, again))


def test_pairwise_run_trains_on_batches_of_one_question(tmp_path):
    from siamese_research import runner as training

    config = tiny(data=write_pairs(tmp_path / "train.csv"), run_dir=str(tmp_path / "run"),
                  epochs=1, validation_split=0.34, max_tokens=50, max_length=8,
                  encoder="bag", merge="dot", loss="pairwise", batch_size=8,
                  projector_points=0)
    data = data_lib.load(config)
    ds = data_lib.train_dataset(data.train, config)
    assert ds.steps_per_epoch == 4  # 4 training questions, 3 candidates each
    seen = []
    for idx in ds.index_epoch(0):
        texts = {data.train.left_text[i] for i in idx.numpy()}
        assert len(texts) == 1
        seen += idx.numpy().tolist()
    assert sorted(seen) == list(range(len(data.train)))
    result = training.run(config)
    assert result["exit_code"] == 0 and result["step"] == 4


def test_pairwise_needs_text(tmp_path):
    with pytest.raises(ConfigError, match="needs a text pair file"):
        data = data_lib.load(tiny(loss="pairwise"))
        data_lib.train_dataset(data.train, tiny(loss="pairwise"))


def test_dot_match_starts_as_dot_and_weighs_match_statistics():
    u = np.array([[1.0, 1.0, 0.0, 0.0]], "float32")
    v = np.array([[1.0, 0.0, 2.0, 0.0]], "float32")
    dm, dot = Mg.build_merge("dot_match"), Mg.build_merge("dot")
    np.testing.assert_allclose(dm([u, v]), dot([u, v]), rtol=1e-6)
    dm.match_weights.assign([0.0, 2.0, 0.0, 0.0, 0.0, 0.0])  # + 2 * u.v / |u|^2 = 1
    want = 1 / (1 + np.exp(-(0.5 * 1.0 + 1.0)))  # scale 1/sqrt(4), u.v = 1
    np.testing.assert_allclose(dm([u, v]), [[want]], rtol=1e-6)
    assert Mg.get_merge_class("dot_match").score
