"""Every documented train.py flag survives a real run.

Each row of MATRIX is one `python train.py` process (`IN_PROCESS` rows:
train.py's main in the test process) on a tiny model (a few
features, a few units) long enough to cross the first step, log steps, a
check step, a histogram step, a checkpoint, an epoch end and the last step.
A row either finishes (exit 0, a finite loss, every contract tag present,
`sum_error` <= 1e-5) or, where the combination cannot work here, is refused
up front: one line on stderr, exit 2, no run folder written.

A new flag gets a row (or its value in one): `test_every_flag_has_a_row`
fails until it does.
"""

import concurrent.futures
import gzip
import json
import os
import re
import types

import numpy as np
import pytest
import tensorflow as tf

from siamese_research.core import losses
from siamese_research.summaries import extras as tensorboard_extras
from siamese_research.core import model as model_lib
from siamese_research.config import Config
from conftest import read_tags, run_main, run_train, write_image_folder

# 64 pairs, validation 0.2: 51 train pairs in batches of 8 = 7 steps an
# epoch, 14 in all: views at 1, 2, 4, ..., 14 (log), 1, 3, 6, 9, 12, 14
# (check), 1, 4, 8, 12, 14 (histograms), checkpoints at 5 and 10 and at the
# epoch ends, 3 steps per compiled call.
BASE = {"num_samples": "64", "timesteps": "5", "features": "8", "units": "4",
        "batch_size": "8", "epochs": "2", "log_every": "2", "grad_check_every": "3",
        "histogram_every": "4", "checkpoint_every": "5", "steps_per_execution": "3",
        "projector_points": "4", "verbose": "0", "prototypes": "4"}

# name -> (flags over BASE, "ok" or the refusal's expected words). {data} and
# {dev} are a text pair file and its validation file, {tsv} a graded TSV,
# {vectors} a gzipped word-vector file, {images} a folder of 4 class
# folders of 10x9 RGB PNGs (see `files`).
MATRIX = {
    "notebook_xla": ({"data": "random", "merge": "concat", "timesteps": "6",
                      "validation_split": "0.25", "jit_compile": "true",
                      "intra_op_threads": "2", "steps_per_execution": "1",
                      "keep_checkpoints": "1", "strategy": "one_device",
                      "restart": "true", "optimizer": "adagrad", "verbose": "1"}, "ok"),
    "synthetic_untied_gru_xla": ({"encoder": "gru", "share": "untied",
                                  "optimizer": "adamw", "learning_rate": "0.003",
                                  "noise": "0.3", "seed": "3", "on_nonfinite": "skip",
                                  "deterministic": "true", "gate_gradients": "false",
                                  "prototypes": "3", "jit_compile": "true"}, "ok"),
    "text_contrastive": ({"data": "{data}", "validation_data": "{dev}",
                          "left_column": "q", "right_column": "a", "label_column": "y",
                          "max_tokens": "40", "max_length": "6", "oov_buckets": "4",
                          "bucket_by_length": "true", "strict": "true",
                          "class_weight": "balanced", "embedding_init": "idf",
                          "encoder": "bilstm", "merge": "cosine", "loss": "contrastive",
                          "margin": "0.5", "optimizer": "sgd", "monitor": "val_map",
                          "patience": "3"}, "ok"),
    "text_pairwise_ngrams": ({"data": "{data}", "left_column": "q", "right_column": "a",
                              "label_column": "y", "loss": "pairwise", "encoder": "bag",
                              "merge": "match_absdiff_product", "char_ngrams": "3,4",
                              "ngram_buckets": "64", "validation_split": "0.25"}, "ok"),
    "graded_tsv_vectors": ({"data": "{tsv}", "quoting": "none", "label_range": "1,5",
                            "loss": "mse", "embeddings": "{vectors}",
                            "freeze_embeddings": "true", "features": "128",
                            "encoder": "transformer", "encoder_args": '{"heads": 1}',
                            "merge": "dot", "validation_split": "0.25",
                            "monitor": "val_pearson"}, "ok"),
    # Three branches under a Mirrored strategy: triplets drawn from the
    # synthetic pairs' prototype groups.
    "mirrored_one_device_triplets": ({"strategy": "mirrored", "encoder": "conv1d",
                                      "merge": "manhattan", "optimizer": "nadam",
                                      "loss": "triplet", "triplets": "from_pairs",
                                      "validation_split": "0", "num_samples": "96"},
                                     "ok"),
    "text_triplet_file_mnrl": ({"data": "{triplets}", "anchor_column": "anc",
                                "positive_column": "pos", "negative_column": "neg",
                                "loss": "mnrl", "temperature": "0.1",
                                "merge": "euclidean", "validation_split": "0.25",
                                "monitor": "val_mrr"}, "ok"),
    # Images: three untied conv towers on a folder's classes, triplets
    # drawn by class, two of four classes held out whole.
    "images_classes_triplets": ({"data": "{images}", "split": "classes", "share": "untied",
                                 "validation_split": "0.5", "image_size": "8,8",
                                 "channels": "1", "encoder": "conv2d",
                                 "encoder_args": '{"filters": [4], "augment": 0.1}',
                                 "merge": "euclidean", "loss": "triplet",
                                 "triplets": "from_pairs", "monitor": "val_eer"}, "ok"),
    # Mined negatives, every second epoch, in mnrl's candidates (three
    # calls), the cached in-batch pass in chunks of 3 of the batch of 8.
    "text_mnrl_mined_cached": ({"data": "{data}", "validation_data": "{dev}",
                                "left_column": "q", "right_column": "a",
                                "label_column": "y", "encoder": "bag", "merge": "cosine",
                                "loss": "mnrl", "negatives": "hard", "mine_every": "2",
                                "mine_range": "0,4", "mine_margin": "0.0",
                                "mini_batch_size": "3"}, "ok"),
    # The online semi-hard miner on image classes, 2 images per class a block.
    "images_semi_hard": ({"data": "{images}", "validation_split": "0.5",
                          "image_size": "8,8", "encoder": "conv2d",
                          "encoder_args": '{"filters": [4]}', "merge": "euclidean",
                          "loss": "batch_semi_hard_triplet", "per_group": "2",
                          "margin": "0.3"}, "ok"),
    "hard_negatives_numbers": ({"loss": "triplet", "negatives": "hard"},
                               "mines among a text pair file's candidates"),
    "from_corpus_numbers": ({"loss": "triplet", "triplets": "from_corpus"},
                            "draws among a text pair file's candidates"),
    "per_group_pairs": ({"per_group": "2"}, "draws batches M per group"),
    "split_classes_synthetic": ({"split": "classes"}, "holds out whole classes"),
    "mixed_precision_cpu": ({"mixed_precision": "mixed_float16"}, "needs a GPU"),
    "jit_mirrored": ({"jit_compile": "true", "strategy": "mirrored"},
                     "not --strategy=mirrored"),
}

# Rows that need no process of their own (the default strategy and
# threads, no XLA, no precision policy): run in the test process, while the
# others run two at a time.
IN_PROCESS = ("text_mnrl_mined_cached", "images_semi_hard")

# Flags not in a row, and where they are covered instead.
ELSEWHERE = {
    "run_dir": "every row sets it",
    "strategy=multi_worker": "tests/test_distribute.py (2 worker processes)",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("matrix_data")
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]

    def sentence():
        return " ".join(rng.choice(words, size=rng.integers(2, 6)))

    def pairs(n):
        rows = []
        for i in range(n):
            q = sentence()
            a = q if i % 2 == 0 else sentence()
            rows.append((q, a, i % 2 == 0))
        return rows

    for name, n in (("train.csv", 64), ("dev.csv", 16)):
        with open(base / name, "w") as f:
            f.write("q,a,y\n")
            for q, a, y in pairs(n):
                f.write(f"{q},{a},{int(y)}\n")
    with open(base / "graded.tsv", "w", newline="") as f:
        f.write("\ufeffsentence_A\tsentence_B\tlabel\r\n")
        for q, a, y in pairs(64):
            f.write(f'{q} "quoted\t{a}\t{5 if y else rng.integers(1, 4)}\r\n')
    with gzip.open(base / "vectors.vec.gz", "wt") as f:
        f.write(f"{len(words)} 128\n")
        for w in words[::2]:
            f.write(w + " " + " ".join(f"{x:.3f}" for x in rng.standard_normal(128)) + "\n")
    with open(base / "triplets.csv", "w") as f:
        f.write("anc,pos,neg\n")
        for i in range(48):
            q = sentence()
            f.write(f"{q},{q} w{i % 30},{sentence()}\n")
    write_image_folder(base / "images", classes=4, per_class=5, size=(10, 9), channels=3)
    return {"images": str(base / "images"),
            "data": str(base / "train.csv"), "dev": str(base / "dev.csv"),
            "triplets": str(base / "triplets.csv"),
            "tsv": str(base / "graded.tsv"), "vectors": str(base / "vectors.vec.gz")}


def _args(row, files, run_dir):
    flags = dict(BASE, **MATRIX[row][0], run_dir=run_dir)
    for name, path in files.items():
        flags = {k: v.replace("{" + name + "}", path) for k, v in flags.items()}
    return [f"--{k}={v}" for k, v in flags.items()]


@pytest.fixture(scope="module")
def results(files, tmp_path_factory):
    """Every row, two processes at a time (the machine's two cores)."""
    base = tmp_path_factory.mktemp("matrix_runs")

    def one(row):
        run_dir = str(base / row)
        return row, run_dir, run_train(*_args(row, files, run_dir), timeout=600)

    ok = [row for row, (_, expect) in MATRIX.items() if expect == "ok"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.map(one, [row for row in ok if row not in IN_PROCESS])
        # Meanwhile, here: train.py's main in this process (conftest.run_main,
        # the command line's code path without a TensorFlow start-up).
        out = {row: (str(base / row), run_main(*_args(row, files, str(base / row))))
               for row in ok if row in IN_PROCESS}
        out.update({row: (run_dir, proc) for row, run_dir, proc in running})
    # A refusal comes before TensorFlow does any work: train.py's main in
    # this process (conftest.run_main) is the same code path, without a
    # process start per row.
    for row in MATRIX:
        if row not in out:
            run_dir = str(base / row)
            out[row] = (run_dir, run_main(*_args(row, files, run_dir)))
    return out


CONTRACT = ["loss", "accuracy", "learning_rate", "samples_per_second",
            "branch_gradients/total_norm", "branch_gradients/sum_error", "config",
            "model_summary"]
def branches(config: dict) -> tuple:
    """The encoder calls a run of `config` (its config.json) makes, by name."""
    # (Config's own rule, read off the saved settings.)
    negatives = Config.row_negatives.fget(types.SimpleNamespace(**config))
    return model_lib.BRANCHES[losses.objective(config["loss"], negatives)]


def branch_tags(config: dict) -> list:
    """Each branch's norm tag and the cosine tags between them."""
    names = branches(config)
    tags = [f"branch_gradients/{b}_norm" for b in names]
    if names == ("left", "right"):
        return tags + ["branch_gradients/cosine"]
    return tags + [f"branch_gradients/cosine/{a}_{b}"
                   for i, a in enumerate(names) for b in names[i + 1:]]


@pytest.mark.parametrize("row", list(MATRIX))
def test_row(row, results):
    run_dir, proc = results[row]
    expect = MATRIX[row][1]
    if expect != "ok":
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], proc.stderr[-2000:]
        assert not os.path.exists(run_dir)  # refused before anything was written
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    for name, value in MATRIX[row][0].items():  # every flag took effect
        if name not in ("data", "validation_data", "embeddings", "features"):
            assert _same(config[name], value), name
    tags, acc = read_tags(os.path.join(run_dir, "train"))
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    steps = int(latest.rsplit("-", 1)[1])  # the last checkpoint: the run's end
    for tag in CONTRACT + branch_tags(config):
        assert tag in tags, tag
    if config["loss"] in losses.OBJECTIVES and losses.OBJECTIVES[
            config["loss"]] == "in_batch_groups":  # the online miners' own
        for tag in losses.MINER_TAGS:
            assert tags[tag] == tags["loss"], tag
    if config["negatives"] == "hard":  # mined at epoch 1 only (every 2nd of 2)
        assert sorted(os.listdir(os.path.join(run_dir, "mined"))) == ["epoch-0000.npz"]
    assert tags["loss"][0] == 1 and tags["loss"][-1] == steps
    assert any(t.startswith("weights/") for t in tags)
    for branch in branches(config) + ("total",):
        assert any(t.startswith(f"gradients/{branch}/") for t in tags), branch
    errors = [float(tf.make_ndarray(e.tensor_proto))
              for e in acc.Tensors("branch_gradients/sum_error")]
    assert max(errors) <= 1e-5
    # The custom-scalars charts take every branch's tags, k branches too.
    charts = [re.compile(regex) for _, items in tensorboard_extras.LAYOUT
              for _, regex in items]
    for tag in branch_tags(config) + ["branch_gradients/total_norm"]:
        assert any(c.search(tag) for c in charts), tag
    values = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("loss")]
    assert np.all(np.isfinite(values))
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "checkpoint"))
    assert os.path.exists(os.path.join(run_dir, "model.keras"))


def _same(stored, flag: str) -> bool:
    try:
        return float(stored) == float(flag)
    except (TypeError, ValueError):
        return str(stored).lower() == flag.lower()


def test_every_flag_has_a_row():
    covered = {name for flags, _ in MATRIX.values() for name in flags} | set(BASE)
    covered |= {name.split("=")[0] for name in ELSEWHERE}
    defaults = Config.__dataclass_fields__
    missing = [name for name in Config.field_names() if name not in covered]
    assert not missing, f"flags with no row in MATRIX: {missing}"
    # ... and each at a value other than its default somewhere.
    for name in Config.field_names():
        values = {flags[name] for flags, _ in MATRIX.values() if name in flags}
        values |= {BASE[name]} if name in BASE else set()
        if name in ("run_dir",) or not values:
            continue
        default = defaults[name].default
        assert any(v.lower() != str(default).lower() for v in values), name
