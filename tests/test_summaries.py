"""The view steps' writer: one raw Summary per view step, read back as the
same tags, steps, values and plugin metadata as one tf.summary write per
tag (`summaries.scalar`, `_reference.write_histogram`) gives."""

import numpy as np
import tensorflow as tf
from tensorboard.util import tensor_util

from conftest import read_tags
from siamese_research.summaries import views as summaries
import _reference as R


def _write(folder, write):
    rng = np.random.default_rng(0)
    grads = {step: rng.standard_normal(50) for step in range(1, 4)}
    with tf.summary.create_file_writer(str(folder)).as_default() as w:
        for step, g in grads.items():
            write(step, {"loss": step / 10, "branch_gradients/left_norm": np.float64(step)},
                  {"gradients/left/w": R.histogram_tensor(g)})
        write(4, {"loss": 0.4}, {})  # another set of tags
        w.flush()
    return grads


def _per_tag(step, scalars, histograms):
    for tag, x in scalars.items():
        summaries.scalar(tag, x, step)
    for tag, h in histograms.items():
        R.write_histogram(tag, h, step)


def test_write_view_writes_what_one_write_per_tag_writes(tmp_path):
    grads = _write(tmp_path / "raw", summaries.write_view)
    _write(tmp_path / "per_tag", _per_tag)
    tags, acc = read_tags(str(tmp_path / "raw"))
    ref_tags, ref = read_tags(str(tmp_path / "per_tag"))
    assert tags == ref_tags
    assert tags["loss"] == [1, 2, 3, 4]
    assert tags["branch_gradients/left_norm"] == tags["gradients/left/w"] == [1, 2, 3]
    for tag in tags:
        assert acc.SummaryMetadata(tag) == ref.SummaryMetadata(tag), tag
        for event, want in zip(acc.Tensors(tag), ref.Tensors(tag)):
            got = tensor_util.make_ndarray(event.tensor_proto)
            expected = tensor_util.make_ndarray(want.tensor_proto)
            assert got.dtype == expected.dtype and got.shape == expected.shape, tag
            np.testing.assert_array_equal(got, expected)
    for event in acc.Tensors("loss"):
        assert np.isclose(tensor_util.make_ndarray(event.tensor_proto), event.step / 10)
    for event in acc.Tensors("gradients/left/w"):
        hist = tensor_util.make_ndarray(event.tensor_proto)
        assert hist.shape == (summaries.HISTOGRAM_BUCKETS, 3)
        assert hist[:, 2].sum() == 50  # every value binned
        np.testing.assert_allclose(hist[[0, -1], [0, 1]],
                                   [grads[event.step].min(), grads[event.step].max()])
    assert acc.SummaryMetadata("gradients/left/w").plugin_data.plugin_name == "histograms"
    assert acc.SummaryMetadata("loss").plugin_data.plugin_name == "scalars"


def test_write_view_flushes_each_step_writes_nan_and_nothing_without_a_writer(tmp_path):
    import glob
    import os

    summaries.write_view(1, {"loss": 0.5})  # no default writer: nothing, and no error
    with tf.summary.create_file_writer(str(tmp_path / "off")).as_default(), \
            tf.summary.record_if(False):
        summaries.write_view(1, {"loss": 0.5})
    with tf.summary.create_file_writer(str(tmp_path / "on")).as_default():
        summaries.write_view(1, {"loss": float("nan")})
        # On disk already, before the writer is flushed or closed.
        tags, acc = read_tags(str(tmp_path / "on"))
        assert tags == {"loss": [1]}
        assert np.isnan(tensor_util.make_ndarray(acc.Tensors("loss")[0].tensor_proto))
    for path in glob.glob(str(tmp_path / "off" / "*")):
        assert os.path.getsize(path) < 100  # the file's header event only
    assert read_tags(str(tmp_path / "off"))[0] == {}
