"""Pretrained word vectors (--embeddings): reading, coverage, init, freezing."""

import gzip
import json
import os

import keras
import numpy as np
import pytest

from conftest import tiny
from siamese_research.core import model as model_lib
from siamese_research import runner as training
from siamese_research.config import ConfigError, DataError
from siamese_research.data import files
from siamese_research.text import vectors

DIM = 8
# Texts of the pair file: its vocabulary holds these words, lowercased.
TEXTS = [("the cat sat on the mat", "a cat sat"), ("London is big", "the dog ran"),
         ("the dog sat", "a mat is red"), ("red cat ran", "big dog"),
         ("the cat", "the dog"), ("a red mat", "a big cat"),
         ("london dog", "cat on mat"), ("the big red dog", "the mat"),
         ("mat on cat", "dog is red"), ("sat ran", "is on"),
         ("the the cat", "a a dog"), ("big big", "red red")]


def write_pairs(tmp_path):
    path = tmp_path / "pairs.csv"
    lines = ["left,right,label"] + [f"{a},{b},{i % 2}" for i, (a, b) in enumerate(TEXTS)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def vec(k):
    """A distinct, exactly representable vector per k."""
    return np.arange(DIM, dtype=np.float32) / 4 + k


# The file's words: 'the' twice (the first line counts), 'London' cased (the
# vocabulary's 'london' takes it), 'zebra' not in the vocabulary, 'cat' with
# its own spelling after 'Cat', and (see glove_lines) a word with a space, as
# glove.840B has, which is not 'dog'.
FILE_WORDS = [("the", 1), ("the", 99), ("London", 2), ("zebra", 3), ("Cat", 50),
              ("cat", 4), ("dog", 5)]
FOUND = {"the": 1, "london": 2, "cat": 4, "dog": 5}


def glove_lines():
    lines = [f"{w} " + " ".join(repr(float(x)) for x in vec(k)) for w, k in FILE_WORDS]
    lines.insert(6, "dog house " + " ".join(["0.5"] * DIM))
    return lines


def write_glove(path):
    path.write_text("\n".join(glove_lines()) + "\n")
    return str(path)


def write_vec_gz(path):
    """fastText's text format: a 'count dim' line, CRLF, gzip, a BOM."""
    text = "\r\n".join([f"{len(FILE_WORDS) + 1} {DIM}"] + glove_lines()) + "\r\n"
    with gzip.open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + text.encode("utf-8"))
    return str(path)


def build(config):
    """training.build on the file's data, seeded as training.run seeds it."""
    keras.utils.set_random_seed(config.seed)
    data = files.load(config)
    model, _, _ = training.build(config, data)
    return model, data


def table(model):
    return model.encoder.embedding.embeddings.numpy()


@pytest.mark.parametrize("fmt", ["glove", "vec_gz"])
def test_found_rows_are_the_files_missing_keep_init_coverage_counts(tmp_path, fmt):
    pairs = write_pairs(tmp_path)
    path = (write_glove(tmp_path / "g.txt") if fmt == "glove"
            else write_vec_gz(tmp_path / "v.vec.gz"))
    config = tiny(data=pairs, validation_split=0.0, max_tokens=100, embeddings=path)
    model, data = build(config)
    base, _ = build(tiny(data=pairs, validation_split=0.0, max_tokens=100))
    vocab = data.vectorizer.get_vocabulary()
    got, init = table(model), table(base)
    for word, k in FOUND.items():
        np.testing.assert_array_equal(got[vocab.index(word)], vec(k))
    others = [i for i, w in enumerate(vocab) if w not in FOUND]
    np.testing.assert_array_equal(got[others], init[others])  # padding, OOV, words
    cov = data.embedding_coverage
    words = len(vocab) - 2  # not padding "" nor the OOV id
    assert (cov.found, cov.vocabulary, cov.lowercased, cov.dimension) == (4, words, 1, DIM)
    assert "london" not in cov.missing and "sat" in cov.missing
    assert cov.line() == (f"Embeddings: 4 of {words} vocabulary words found in "
                          f"{os.path.basename(path)} ({4 / words:.1%}, 8 dimensions)")


def test_embedding_size_from_the_file_or_a_one_line_mismatch_error(tmp_path):
    pairs, path = write_pairs(tmp_path), write_glove(tmp_path / "g.txt")
    # --features at its default (128) takes the file's size.
    assert tiny(data=pairs, features=128, embeddings=path).features == DIM
    assert vectors.dimension(write_vec_gz(tmp_path / "v.vec.gz")) == DIM
    with pytest.raises(ConfigError) as e:
        tiny(data=pairs, features=6, embeddings=path)
    assert str(e.value) == (f"--features=6: the vectors in {path} have 8 dimensions; "
                            f"pass --features=8 or leave --features out")
    with pytest.raises(ConfigError, match="--embeddings=.*: needs a text pair file"):
        tiny(data="synthetic", embeddings=path)
    with pytest.raises(ConfigError, match="--freeze_embeddings=True: needs a text pair"):
        tiny(data="random", freeze_embeddings=True)
    with pytest.raises(ConfigError, match="--embedding_init=idf: .*use one"):
        tiny(data=pairs, embeddings=path, embedding_init="idf")
    with pytest.raises(ConfigError, match="--embeddings=.*nope.txt: no such file"):
        tiny(data=pairs, embeddings=str(tmp_path / "nope.txt"))


def test_bad_vector_files_name_file_and_line(tmp_path):
    pairs = write_pairs(tmp_path)
    short = tmp_path / "short.txt"
    short.write_text("zebra 1 2 3\ncat 1 2\n")  # only wanted lines are parsed
    config = tiny(data=pairs, validation_split=0.0, embeddings=str(short), features=3)
    with pytest.raises(DataError, match=r"short\.txt line 2: 2 numbers after the word, "
                                        r"the file's vectors have 3"):
        build(config)
    none = tmp_path / "none.txt"
    none.write_text("zebra 1 2 3\nyak 1 2 3\n")
    with pytest.raises(DataError, match=r"none\.txt: none of the \d+ vocabulary words"):
        build(config.replace(embeddings=str(none)))
    nan = tmp_path / "nan.txt"
    nan.write_text("cat 1 nan 3\n")
    with pytest.raises(DataError, match=r"nan\.txt line 1: a non-finite number"):
        build(config.replace(embeddings=str(nan)))


def test_freeze_keeps_the_table_through_training_and_out_of_trainables(tmp_path):
    pairs, path = write_pairs(tmp_path), write_glove(tmp_path / "g.txt")
    # 12 pairs in batches of 8: 2 steps; no validation, no gate views (cheaper).
    config = tiny(data=pairs, embeddings=path, freeze_embeddings=True, epochs=1,
                  run_dir=str(tmp_path / "run"), max_tokens=100, projector_points=0,
                  gate_gradients=False, validation_split=0.0)
    before, _ = build(config)
    lstm_before = [v.numpy() for v in model_lib.encoder_variables(before)]
    result = training.run(config)
    model = result["model"]
    assert result["exit_code"] == 0 and result["step"] == 2
    np.testing.assert_array_equal(table(model), table(before))
    table_var = model.encoder.embedding.embeddings
    assert all(v is not table_var for v in model.trainable_variables)
    assert all(v is not table_var for v in model_lib.encoder_variables(model))
    assert len(model_lib.encoder_variables(model)) == len(lstm_before)
    # The rest trained: the encoder's variables moved.
    assert any(not np.array_equal(a, v.numpy())
               for a, v in zip(lstm_before, model_lib.encoder_variables(model)))
    report = json.loads((tmp_path / "run" / vectors.REPORT_FILE).read_text())
    assert (report["found"], report["dimension"], report["frozen"]) == (4, DIM, True)


def test_a_run_reloads_without_its_vector_file_and_resumes_only_as_frozen(tmp_path):
    from siamese_research.train import checkpoints
    from siamese_research import artifacts

    pairs, path = write_pairs(tmp_path), write_glove(tmp_path / "g.txt")
    config = tiny(data=pairs, embeddings=path, features=128, freeze_embeddings=True,
                  run_dir=str(tmp_path))
    (tmp_path / "config.json").write_text(config.to_json())
    os.remove(path)  # evaluation reads model.keras, not the vectors
    again = artifacts.read_run_config(str(tmp_path))
    assert again.embeddings is None and again.features == DIM
    with pytest.raises(checkpoints.CheckpointError, match="freeze_embeddings=True in "
                                                          "the checkpoint, False now"):
        checkpoints.check_compatible(str(tmp_path), again.replace(freeze_embeddings=False))
