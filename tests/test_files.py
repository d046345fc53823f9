"""Pair files: csv/tsv/jsonl text pairs, npz float pairs, and their bad inputs."""

import csv
import json
import os

import numpy as np
import pytest

from conftest import SHARED_DATA, run_main, run_train, tiny
from siamese_research.config import DataError
from siamese_research.data import files
from siamese_research.data import tables
from siamese_research.data import vocab

QUESTIONS = ["who wrote alpha, the book?", "where is bravo?", "when did charlie end?",
             "what is délta?"]
MARKERS = ["alpha", "bravo", "charlie", "délta"]


def qa_rows():
    """4 questions x 3 candidates; the first candidate answers (label 1).

    Each group's answers carry the group's own marker word, so a held-out
    group's marker is out of the training vocabulary.
    """
    rows = []
    for q, m in zip(QUESTIONS, MARKERS):
        rows.append({"question": q, "label": 1, "answer": f"{m} was written, in 1990"})
        rows.append({"question": q, "label": 0, "answer": f"nothing about {m} here"})
        rows.append({"question": q, "label": 0, "answer": "the weather is fine"})
    return rows


def write_csv(path, rows, columns=("question", "label", "answer"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(columns)
        for r in rows:
            w.writerow([r[c] for c in columns])
    return str(path)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return str(path)


def text_config(path, **overrides):
    base = dict(data=str(path), max_tokens=100, max_length=12, validation_split=0.25)
    base.update(overrides)
    return tiny(**base)


def test_csv_defaults_quoted_utf8_and_split_by_left_text(tmp_path):
    path = write_csv(tmp_path / "qa.csv", qa_rows())
    data = files.load(text_config(path))
    train, val = data.train, data.validation
    # Defaults: the first two text columns, and 'label'.
    assert "'question' / 'answer', label 'label'" in data.description
    # The quoted comma and the UTF-8 letter survive the parser.
    assert "who wrote alpha, the book?" in train.left_text + val.left_text
    assert "what is délta?" in train.left_text + val.left_text
    # 0.25 of 12 rows = one whole question held out, never on both sides.
    assert len(val) == 3 and len(train) == 9
    assert len(set(val.left_text)) == 1
    assert not set(val.left_text) & set(train.left_text)
    # Token ids: int32, right-padded, lengths = non-pad tokens.
    assert train.left.dtype == np.int32 and train.left.shape[1] == 12
    np.testing.assert_array_equal(train.left_length, np.count_nonzero(train.left, 1))
    for row, n in zip(train.right, train.right_length):
        assert (row[:n] > 0).all() and (row[n:] == 0).all()
    # The vocabulary comes from the training split only.
    vocab = data.vectorizer.get_vocabulary()
    held_marker = MARKERS[QUESTIONS.index(val.left_text[0])]
    assert held_marker not in vocab
    assert 1 in val.right[0]  # the marker is out of vocabulary (id 1)
    for m in MARKERS:
        if m != held_marker:
            assert m in vocab


def test_split_is_deterministic_per_seed(tmp_path):
    rows = [dict(r, question=f"{r['question']} {k}") for k in range(3) for r in qa_rows()]
    path = write_csv(tmp_path / "qa.csv", rows)
    held = {seed: tuple(sorted(set(files.load(text_config(path, seed=seed))
                                   .validation.left_text))) for seed in (1, 2, 3)}
    assert held[1] == tuple(sorted(set(files.load(text_config(path, seed=1))
                                       .validation.left_text)))
    assert len(set(held.values())) > 1  # the seed chooses the held-out questions


def test_unique_left_texts_hold_out_the_last_rows(tmp_path):
    rows = [dict(r, question=f"q{i} {r['question']}") for i, r in enumerate(qa_rows())]
    data = files.load(text_config(write_csv(tmp_path / "u.csv", rows)))
    assert data.validation.left_text == [r["question"] for r in rows[-3:]]


def test_tsv_and_jsonl_give_the_same_pairs_as_csv(tmp_path):
    rows = qa_rows()
    ref = files.load(text_config(write_csv(tmp_path / "a.csv", rows)))
    for path in (write_csv(tmp_path / "a.tsv", rows, delimiter="\t"),
                 write_jsonl(tmp_path / "a.jsonl", rows)):
        got = files.load(text_config(path))
        np.testing.assert_array_equal(got.train.left, ref.train.left)
        np.testing.assert_array_equal(got.train.right, ref.train.right)
        np.testing.assert_array_equal(got.validation.label, ref.validation.label)


def test_named_columns_label_range_and_class_weight(tmp_path):
    rows = [{"score": s, "b": f"text {i}", "a": f"other {i}", "id": i}
            for i, s in enumerate([1, 5, 3, 2, 4, 1, 5, 3])]
    path = write_csv(tmp_path / "g.csv", rows, columns=("id", "a", "score", "b"))
    data = files.load(text_config(path, left_column="b", right_column="a",
                                  label_column="score", label_range="1,5", loss="mse",
                                  validation_split=0.0))
    np.testing.assert_allclose(data.train.label, [0, 1, .5, .25, .75, 0, 1, .5])
    assert data.train.left_text[0] == "text 0"  # 'id' (numbers) is not text
    assert data.validation is None

    binary = files.load(text_config(write_csv(tmp_path / "qa.csv", qa_rows()),
                                    class_weight="balanced", validation_split=0.0))
    # 12 pairs, 4 positive: n / (2 n_class) = 1.5 and 0.75.
    np.testing.assert_allclose(np.unique(binary.train.weight), [0.75, 1.5])
    assert binary.train.weight[0] == 1.5


def test_empty_text_skipped_and_counted_or_strict_error(tmp_path):
    rows = qa_rows()
    rows[4]["answer"] = "   "
    rows[7]["answer"] = "?!"  # no words after stripping punctuation
    path = write_csv(tmp_path / "e.csv", rows)
    data = files.load(text_config(path, validation_split=0.0))
    assert len(data.train) == 10
    assert "skipped 2 pairs with an empty text" in data.description
    with pytest.raises(DataError, match=r"e\.csv line 6: empty text in column 'answer'"):
        files.load(text_config(path, strict=True))


def test_validation_data_file(tmp_path):
    rows = qa_rows()
    train = write_csv(tmp_path / "t.csv", rows[:9])
    val = write_jsonl(tmp_path / "v.jsonl", rows[9:])
    data = files.load(text_config(train, validation_data=val))
    assert len(data.train) == 9 and len(data.validation) == 3
    assert "délta" not in data.vectorizer.get_vocabulary()


def test_vectorizer_round_trip(tmp_path):
    data = files.load(text_config(write_csv(tmp_path / "qa.csv", qa_rows())))
    path = vocab.save_vectorizer(data.vectorizer, str(tmp_path))
    assert os.path.basename(path) == "vectorizer.json"
    again = vocab.load_vectorizer(str(tmp_path))
    assert again.get_vocabulary() == data.vectorizer.get_vocabulary()
    texts = data.train.right_text + ["unseen words only"]
    np.testing.assert_array_equal(np.asarray(again(np.array(texts, dtype=object))),
                                  np.asarray(data.vectorizer(np.array(texts,
                                                                      dtype=object))))
    assert vocab.load_vectorizer(str(tmp_path / "nothing")) is None


def test_oov_buckets_hash_unseen_words_the_same_on_both_sides(tmp_path):
    train = ["the cat sat", "the dog ran"]
    one = vocab.make_vectorizer(tiny(max_tokens=100, max_length=6), train)
    many = vocab.make_vectorizer(tiny(max_tokens=100, max_length=6, oov_buckets=64),
                                 train)
    # The same words are kept; the 63 extra OOV ids come on top.
    words = [w for w in one.get_vocabulary() if w not in ("", "[UNK]")]
    assert [w for w in many.get_vocabulary() if w not in ("", "[UNK]")] == words
    assert many.vocabulary_size() == one.vocabulary_size() + 63
    left, right = np.asarray(many(np.array(["thatcher the zebra", "zebra thatcher"],
                                           dtype=object)))
    thatcher, zebra = int(left[0]), int(left[2])
    # Unseen words land in 1..64, each word on its own id, the same on both
    # sides (one OOV id would make "thatcher" == "zebra").
    assert 1 <= thatcher <= 64 and 1 <= zebra <= 64 and thatcher != zebra
    assert right.tolist()[:2] == [zebra, thatcher]
    assert int(left[1]) == int(np.asarray(one(np.array(["the"], dtype=object)))[0, 0]) + 63
    np.testing.assert_array_equal(np.asarray(one(np.array(["thatcher zebra"],
                                                          dtype=object)))[0, :2], [1, 1])
    # Saved and reloaded: the identical mapping, unseen words included.
    vocab.save_vectorizer(many, str(tmp_path))
    state = json.loads((tmp_path / vocab.VECTORIZER_FILE).read_text())
    assert state["num_oov_indices"] == 64
    again = vocab.load_vectorizer(str(tmp_path))
    assert again.get_vocabulary() == many.get_vocabulary()
    assert again.vocabulary_size() == many.vocabulary_size()
    texts = np.array(["thatcher the zebra", "never seen before words", "cat"],
                     dtype=object)
    np.testing.assert_array_equal(np.asarray(again(texts)), np.asarray(many(texts)))


def test_vectorizer_file_without_oov_count_loads_with_one_oov_id(tmp_path):
    one = vocab.make_vectorizer(tiny(max_tokens=100, max_length=4), ["the cat sat"])
    vocab.save_vectorizer(one, str(tmp_path))
    path = tmp_path / vocab.VECTORIZER_FILE
    state = json.loads(path.read_text())
    del state["num_oov_indices"]  # as written before --oov_buckets
    path.write_text(json.dumps(state))
    again = vocab.load_vectorizer(str(tmp_path))
    assert again.vocabulary_size() == one.vocabulary_size()
    texts = np.array(["the zebra cat", "thatcher"], dtype=object)
    np.testing.assert_array_equal(np.asarray(again(texts)), np.asarray(one(texts)))


# -- files as shipped: BOM, CRLF, quotes ----------------------------------------
MSRP_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
# MSRP's own kinds of row: a stray opening quote never closed, a whole text in
# quotes with the other side's quote unclosed, a quote mid-text.
MSRP_ROWS = [
    ("1", "702876", "702977", 'He called "the witness", a liar.',
     'Referring to him as "the witness", he lied.'),
    ("0", "2108705", "2108831", '"We are declaring war on harassment.',
     '"We have declared war on harassment," Rosa said.'),
    ("1", "1330381", "1330521", '"Of course I want to win again."',
     '"Of course, I want to win again.'),
    ("0", "3344667", "3344648", "It's 6'2\" tall.", "The tower is tall."),
]


def write_msrp_like(path):
    """A tab-separated file as Microsoft ships MSRP: BOM, CRLF, no quoting."""
    lines = [MSRP_HEADER] + ["\t".join(r) for r in MSRP_ROWS]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    return str(path)


def test_msrp_like_tsv_with_bom_crlf_and_stray_quotes_loads_as_shipped(tmp_path):
    path = write_msrp_like(tmp_path / "msrp.tsv")
    rows = tables.read_text_rows(path, tiny(data=path, label_column="Quality"))
    # The default text columns skip the numeric ids; the BOM is not part of
    # the first column's name; a quote is text (no field spans a line).
    assert rows.columns == ("#1 String", "#2 String", "Quality")
    assert rows.left == [r[3] for r in MSRP_ROWS]
    assert rows.right == [r[4] for r in MSRP_ROWS]  # no "\r" left at the end
    np.testing.assert_array_equal(rows.label, [1, 0, 1, 0])
    np.testing.assert_array_equal(rows.lines, [2, 3, 4, 5])
    data = files.load(text_config(path, label_column="Quality", validation_split=0.0))
    assert len(data.train) == 4
    # With csv quoting the stray quote of line 3 swallows a tab: the row breaks.
    with pytest.raises(DataError, match=r"msrp\.tsv line 3: 4 fields, the header has 5 "
                                        r".*pass --quoting=none"):
        tables.read_text_rows(path, tiny(data=path, label_column="Quality",
                                        quoting="csv"))


def test_quoted_tsv_needs_quoting_csv(tmp_path):
    rows = [{"question": 'say "hi"\tthere', "label": 1, "answer": "hi, there"},
            {"question": "plain", "label": 0, "answer": "multi\nline"}]
    path = write_csv(tmp_path / "q.tsv", rows, delimiter="\t")  # csv.writer quotes
    got = tables.read_text_rows(path, tiny(data=path, quoting="csv"))
    assert got.left == ['say "hi"\tthere', "plain"]
    assert got.right == ["hi, there", "multi\nline"]
    np.testing.assert_array_equal(got.lines, [2, 3])
    # As shipped (auto = none for .tsv) the quoted tab splits the first row.
    with pytest.raises(DataError, match=r"q\.tsv line 2: 4 fields, the header has 3"):
        tables.read_text_rows(path, tiny(data=path))


def test_csv_and_jsonl_with_bom_and_crlf(tmp_path):
    csv_path = tmp_path / "b.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfquestion,label,answer\r\n"
                         b'"a, b",1,"say ""x"""\r\nc d,0,e\r\n')
    got = tables.read_text_rows(str(csv_path), tiny(data=str(csv_path)))
    assert got.left == ["a, b", "c d"] and got.right == ['say "x"', "e"]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(
        json.dumps(r).encode() for r in qa_rows()[:3]) + b"\r\n")
    got = tables.read_text_rows(str(jsonl), tiny(data=str(jsonl)))
    assert got.left == [r["question"] for r in qa_rows()[:3]]
    np.testing.assert_array_equal(got.lines, [1, 2, 3])


def test_short_row_names_file_and_line_and_trailing_tabs_pass(tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text("label\ta\tb\n1\tx y\tx\t\t\n0\tshort\n")
    with pytest.raises(DataError) as e:
        tables.read_text_rows(str(path), tiny(data=str(path)))
    assert str(e.value) == (f"{path} line 3: 2 fields, the header has 3 (label, a, b)")
    path.write_text("label\ta\tb\n1\tx y\tx\t\t\n")  # empty trailing fields only
    assert tables.read_text_rows(str(path), tiny(data=str(path))).right == ["x"]


def write_npz(path, n=8, time=5, features=8, **arrays):
    rng = np.random.default_rng(0)
    base = dict(left=rng.normal(size=(n, time, features)).astype(np.float32),
                right=rng.normal(size=(n, time, features)).astype(np.float32),
                label=(np.arange(n) % 2).astype(np.float32))
    base.update(arrays)
    np.savez(path, **base)
    return str(path)


def test_npz_lengths_zero_the_padding(tmp_path):
    rng = np.random.default_rng(1)
    left = rng.normal(size=(8, 5, 8)).astype(np.float32) + 3.0
    right = left.copy()
    right[:, 3:] = 0.0  # right padding: inferred length 3
    path = write_npz(tmp_path / "p.npz", left=left, right=right,
                     left_length=np.array([5, 4, 3, 2, 1, 5, 5, 5]))
    data = files.load(tiny(data=path, validation_split=0.25))
    assert data.vectorizer is None and not data.is_text
    np.testing.assert_array_equal(data.train.left_length, [5, 4, 3, 2, 1, 5])
    np.testing.assert_array_equal(data.train.right_length, [3] * 6)
    assert (data.train.left[1, 4:] == 0).all() and (data.train.left[1, :4] != 0).all()
    assert len(data.validation) == 2


# -- bad input through train.py: exit 2, one line, nothing written ----------------
def _bad_text_files(tmp_path):
    out = {}
    out["missing_column"] = (
        [f"--data={write_csv(tmp_path / 'm.csv', qa_rows())}", "--label_column=gold"],
        "m.csv: no column 'gold' (--label_column); the columns are question, label, "
        "answer")
    (tmp_path / "empty.csv").write_text("")
    out["empty_file"] = ([f"--data={tmp_path / 'empty.csv'}"], "empty.csv: empty file")
    (tmp_path / "head.csv").write_text("question,label,answer\n")
    out["header_only"] = ([f"--data={tmp_path / 'head.csv'}"],
                          "head.csv: header only (question, label, answer), no pairs")
    rows = qa_rows()
    rows[5]["label"] = 2
    out["bad_label"] = ([f"--data={write_csv(tmp_path / 'l.csv', rows)}"],
                        "l.csv line 7: label '2' is not 0 or 1")
    rows = qa_rows()
    rows[2]["question"] = ""
    out["empty_text_strict"] = (
        [f"--data={write_csv(tmp_path / 's.csv', rows)}", "--strict"],
        "s.csv line 4: empty text in column 'question'")
    left = np.zeros((8, 5, 8), np.float32)
    left[3, 1, 2] = np.nan
    out["nonfinite_npz"] = ([f"--data={write_npz(tmp_path / 'n.npz', left=left)}"],
                            "'left' row 3 holds a non-finite number")
    rng = np.random.default_rng(0)
    out["feature_sizes_differ"] = (
        [f"--data={write_npz(tmp_path / 'f.npz', right=rng.normal(size=(8, 5, 6)))}"],
        "left has 8 features per step, right 6")
    out["features_flag"] = ([f"--data={write_npz(tmp_path / 'g.npz', features=6)}"],
                            "pass --features=6")
    (tmp_path / "short.tsv").write_bytes(
        b"\xef\xbb\xbf" + MSRP_HEADER.encode() + b"\r\n1\t1\t2\ta b\tc d\r\n"
        b"0\t3\t4\tonly one text\r\n")
    out["short_tsv_row"] = ([f"--data={tmp_path / 'short.tsv'}", "--label_column=Quality"],
                            "short.tsv line 3: 4 fields, the header has 5 (Quality, ")
    return out


BAD = ["missing_column", "empty_file", "header_only", "bad_label", "empty_text_strict",
       "nonfinite_npz", "feature_sizes_differ", "features_flag", "short_tsv_row"]


# Through train.py's main in this process; one case again as a real process
# (exit status, stderr and no TensorFlow log lines are the process's).
@pytest.mark.parametrize("case,process", [(case, case == "bad_label") for case in BAD])
def test_bad_file_is_one_line_exit_2_nothing_written(tmp_path, case, process):
    args, needle = _bad_text_files(tmp_path)[case]
    run_dir = tmp_path / "run"
    args = [*args, f"--run_dir={run_dir}", "--features=8", "--units=4", "--epochs=1",
            "--batch_size=4"]
    proc = run_train(*args, timeout=120) if process else run_main(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists()


def test_trecqa_loads_and_splits_by_question():
    path = os.path.join(SHARED_DATA, "trecqa", "train.csv")
    if not os.path.exists(path):
        pytest.skip(f"TREC QA data not found at {path} (only in the shared workspace)")
    data = files.load(tiny(data=path, max_tokens=20000, max_length=64,
                           validation_split=0.2))
    assert "'qtext' / 'atext', label 'label'" in data.description
    assert not set(data.train.left_text) & set(data.validation.left_text)
    assert len(data.train) + len(data.validation) == 4718
    assert 0.05 < float(np.mean(data.train.label)) < 0.10  # about 7% positives


def test_token_idf_counts_distinct_texts_and_idf_init_sets_row_lengths():
    from siamese_research.core import model as M
    from siamese_research.data import Pairs

    # Texts as ids: the question [1, 2] repeats (counted once); answers
    # [2, 3], [2, 4, 4]. N = 3 distinct texts; id 2 in all, 3 and 4 in one,
    # id 5 in none (an unseen word's hashed id), 0 is padding.
    left = np.array([[1, 2, 0], [1, 2, 0]])
    right = np.array([[2, 3, 0], [2, 4, 4]])
    pairs = Pairs(left, right, np.array([2, 2]), np.array([2, 3]), np.array([1.0, 0.0]))
    idf = vocab.token_idf(pairs, vocab_size=6)
    n = 3
    np.testing.assert_allclose(idf, [0.0, np.log(n / 1), 0.0, np.log(n / 1),
                                     np.log(n / 1), np.log(n / 1)], rtol=1e-6)
    model = M.build_model(units=4, features=8, vocab_size=6)
    before = model.encoder.embedding.embeddings.numpy()
    M.scale_embeddings(model, idf)
    after = model.encoder.embedding.embeddings.numpy()
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), idf, atol=1e-6)
    # Directions are kept: each non-zero row is the old row rescaled.
    for i in (1, 3, 4, 5):
        cos = after[i] @ before[i] / (np.linalg.norm(after[i]) * np.linalg.norm(before[i]))
        assert cos == pytest.approx(1.0, abs=1e-6)


def test_idf_init_needs_text(tmp_path):
    from siamese_research import runner as training
    from siamese_research.config import ConfigError

    with pytest.raises(ConfigError, match="--embedding_init=idf: needs a text pair file"):
        training.run(tiny(run_dir=str(tmp_path / "run"), embedding_init="idf"))
    assert not os.path.exists(tmp_path / "run")
